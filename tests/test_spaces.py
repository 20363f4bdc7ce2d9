"""The search-space registry (nas/spaces.py): every registered space, and a third space added from outside."""

from __future__ import annotations

import functools
import random
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.darts import DARTS_V2
from nas.genotype import Genotype, derive_argmax
from nas.ops import Zero, build_op, check_ops
from nas.spaces import SearchSpace, registered_space, unregister_space
from nas.supernet import Supernet, edge_label

pytestmark = pytest.mark.usefixtures("one_thread")

NB201_TARGET = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
SIZES = {"nb201": dict(C=4, N=1), "darts": dict(C=4, N=3)}


# ---------------------------------------------------------------------------
# A toy space: a 3-node chain cell (0 -> 1 -> 2), built from the op table only
# ---------------------------------------------------------------------------
CHAIN_OPS = ("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3")
CHAIN_EDGES = [(1, 0), (2, 1)]


class ChainCell(nn.Module):
    """One cell class for both networks: each edge is a choice of every op (``arch`` is ``None``)
    or the one op ``arch`` names, as nas.op_choice builds them."""

    def __init__(self, C: int, ops: Sequence[str], affine: bool, arch: Optional[Dict[str, str]] = None):
        super().__init__()
        self.edges = nn.ModuleList(
            nas.op_choice(
                edge_label("normal", i, j),
                {op: functools.partial(build_op, op, C, C, 1, affine) for op in ops},
                arch,
                zero_as_none=True,
            )
            for i, j in CHAIN_EDGES
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: Optional[torch.Tensor] = x
        for edge in self.edges:
            h = None if h is None or isinstance(edge, Zero) else edge(h)  # None: a structural zero
        return torch.zeros_like(x) if h is None else h


class ChainNetwork(nn.Module):
    def __init__(self, C: int, N: int, num_classes: int, ops: Sequence[str], affine: bool, arch=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList(ChainCell(C, ops, affine, arch) for _ in range(N))
        self.classifier = nn.Linear(C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(x.mean(dim=(2, 3)))


def chain_arch(geno: Genotype) -> Dict[str, str]:
    return {edge_label("normal", i, j): op for (i, j), (op, _) in zip(CHAIN_EDGES, geno.normal)}


class ChainSupernet(Supernet):
    space = "chain"

    def __init__(
        self,
        C: int,
        N: int,
        num_classes: int,
        mode: str,
        ops: Sequence[str],
        affine: bool,
        tau: float,
        derive_none: bool,
    ):
        ops = check_ops(ops)
        super().__init__(mode, ops, {"normal": 2}, tau)
        self.derive_none = derive_none
        self.net = ChainNetwork(C, N, num_classes, ops, affine)
        self.bind_edges(self.net, {"normal": CHAIN_EDGES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.draw():
            return self.net(x)

    def genotype(self) -> Genotype:
        probs = self.probabilities()["normal"]
        best = derive_argmax(probs, self.ops, self.derive_none)
        return Genotype(
            "chain",
            [(self.ops[best[0]], 0), (self.ops[best[1]], 1)],
            normal_concat=[2],
            ops=list(self.ops),
            probs={"normal": probs.tolist()},
        )

    def choices_from_genotype(self, geno: Genotype) -> Dict[str, List[int]]:
        return {"normal": [self.ops.index(op) for op, _ in geno.normal]}


class ChainSpace(SearchSpace):
    """Only what a space must say; the rest (validation, targets, DOT, ...) is SearchSpace's default."""

    name = "chain"
    default_ops = CHAIN_OPS
    default_derive_none = False
    genotype_format = "a chain string (chain:op>op)"

    def edges(self) -> List[Tuple[int, int]]:
        return CHAIN_EDGES

    def parse_genotype(self, text: str) -> Optional[Genotype]:
        s = text.strip()
        if not s.startswith("chain:"):
            return None
        ops = s[len("chain:") :].split(">")
        if len(ops) != 2 or not all(ops):
            raise nas.UserError(f"malformed chain string {s!r}; expected chain:op>op")
        return Genotype("chain", [(ops[0], 0), (ops[1], 1)], normal_concat=[2])

    def format_genotype(self, geno: Genotype) -> str:
        return "chain:" + ">".join(op for op, _ in geno.normal)

    def build_supernet(self, *, mode, C, N, num_classes, ops, affine, tau, derive_none) -> Supernet:
        return ChainSupernet(C, N, num_classes, mode, ops, affine, tau, derive_none)

    def build_network(self, geno, *, C, N, num_classes, auxiliary, drop_path_prob, affine) -> nn.Module:
        arch = chain_arch(geno)
        return ChainNetwork(C, N, num_classes, sorted(set(arch.values())), affine, arch)


@pytest.fixture
def chain():
    with registered_space(ChainSpace) as space:
        yield space
    assert "chain" not in nas.SPACES


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------
def test_builtins_are_registered_in_order():
    assert nas.space_names()[:2] == ["nb201", "darts"]
    assert list(nas.SPACES)[:2] == ["nb201", "darts"]
    assert nas.get_space("nb201") is nas.nb201.NB201_SPACE and nas.get_space("darts") is nas.darts.DARTS_SPACE
    assert all(isinstance(s, nas.SearchSpace) and s.name == n for n, s in nas.SPACES.items())


def test_unknown_space_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown space 'nb999'; choose one of: nb201, darts$"):
        nas.get_space("nb999")
    with pytest.raises(ValueError, match="unknown space"):
        nas.get_space(["not", "hashable"])
    with pytest.raises(ValueError, match="no space 'nb999' is registered"):
        unregister_space("nb999")


def test_spaces_mapping_is_read_only():
    assert "nb201" in nas.SPACES and "nb999" not in nas.SPACES and [] not in nas.SPACES
    with pytest.raises(TypeError):
        nas.SPACES["x"] = nas.get_space("nb201")  # type: ignore[index]


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'nb201' is already registered"):
        nas.register_space(type(nas.get_space("nb201"))())
    with pytest.raises(ValueError, match="needs a name"):
        nas.register_space(SearchSpace())
    with pytest.raises(TypeError):
        nas.register_space(object())  # type: ignore[arg-type]


def test_register_as_decorator_and_unregister():
    @nas.register_space
    class Decorated(ChainSpace):
        name = "decorated_chain"

    try:
        assert isinstance(nas.get_space("decorated_chain"), Decorated)  # an instance of the class
        assert Decorated.__name__ == "Decorated"  # the decorator returns the class
        with pytest.raises(ValueError, match="already registered"):
            nas.register_space(Decorated)
    finally:
        assert isinstance(unregister_space("decorated_chain"), Decorated)
    assert "decorated_chain" not in nas.space_names()


def test_space_rules():
    nb201, darts = nas.get_space("nb201"), nas.get_space("darts")
    assert nb201.default_derive_none is True and darts.default_derive_none is False
    assert darts.supports_auxiliary and not nb201.supports_auxiliary
    with pytest.raises(ValueError, match="supernet.derive_none"):
        darts.check_derive_none(True)
    for value in (None, False):
        darts.check_derive_none(value)
    assert nb201.resolve_derive_none(None) is True and nb201.resolve_derive_none(False) is False
    assert darts.resolve_derive_none(None) is False
    assert nb201.edge_names() == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert len(darts.edge_names()) == 14 and darts.edge_names()[0] == "2<-0"


# ---------------------------------------------------------------------------
# Every registered space (timm-style: parametrised over the registry)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", nas.space_names())
def test_every_space_round_trips_its_derived_genotype(name):
    space = nas.get_space(name)
    torch.manual_seed(0)
    net = nas.build_supernet(name, "gdas", num_classes=3, **SIZES.get(name, dict(C=4, N=1)))
    assert net.space == name and net.ops == tuple(space.default_ops)
    geno = net.genotype()
    assert geno.space == name
    text = str(geno)
    assert text == space.format_genotype(geno)
    back = Genotype.parse(text)
    assert back.same_architecture(geno) and str(back) == text
    assert space.parse_genotype(text).same_architecture(geno)
    assert Genotype.from_json(geno.to_json()) == geno
    space.validate_genotype(geno)
    for cell, edges in geno.cells().items():
        assert len(space.edge_targets(geno, cell)) == len(edges)
    assert space.to_dot(geno).startswith("digraph cells {")
    assert nas.build_network(geno, num_classes=3, **SIZES.get(name, dict(C=4, N=1)))(torch.randn(2, 3, 8, 8)).shape == (
        2,
        3,
    )


@pytest.mark.parametrize("name", nas.space_names())
def test_every_space_declines_other_formats(name):
    space = nas.get_space(name)
    for other in ("{}", "hello", "", "genotype.json"):
        assert space.parse_genotype(other) is None and not space.recognizes(other)


def test_recognizes_malformed_text_of_its_format(chain):
    assert nas.get_space("nb201").recognizes(" |oops|") and nas.get_space("darts").recognizes("Genotype(x")
    assert chain.recognizes("chain:broken") and chain.recognizes("chain:a>b")  # the default, via parse_genotype
    assert not nas.get_space("nb201").recognizes(DARTS_V2)


def test_parse_lists_the_registered_formats(chain):
    with pytest.raises(nas.UserError) as err:
        Genotype.parse("hello")
    assert str(err.value) == (
        "cannot read an architecture from 'hello': give an NB201 string "
        "(|op~0|+|op~0|op~1|+...), a DARTS Genotype(...) string, a chain string "
        "(chain:op>op), or genotype JSON"
    )


def test_builtin_dot_drawings():
    dot = nas.get_space("nb201").to_dot(Genotype.from_nb201(NB201_TARGET))
    assert 'normal_0 [label="input"];' in dot and 'normal_3 [label="output"];' in dot
    assert 'normal_2 -> normal_3 [label="skip_connect"];' in dot
    dot = nas.get_space("darts").to_dot(Genotype.from_darts(DARTS_V2))
    assert 'reduce_0 [label="c_{k-2}"];' in dot and "reduce_5 -> reduce_out;" in dot


# ---------------------------------------------------------------------------
# The toy space
# ---------------------------------------------------------------------------
def test_toy_space_supernet_forward_backward_and_derivation(chain):
    assert nas.space_names() == ["nb201", "darts", "chain"]
    torch.manual_seed(0)
    net = nas.build_supernet("chain", "gdas", C=4, N=2, num_classes=3)
    assert isinstance(net, ChainSupernet) and net.ops == CHAIN_OPS and net.derive_none is False
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4) % 3
    F.cross_entropy(net(x), y).backward()
    assert net.arch["normal"].grad is not None and torch.isfinite(net.arch["normal"].grad).all()
    assert net.sampled_architecture()["normal"][0] in CHAIN_OPS
    with torch.no_grad():
        net.arch["normal"].copy_(torch.tensor([[5.0, 0, 1, 0], [0, 0, 0, 2.0]]))
    geno = net.genotype()  # none would win edge 0; the space's rule skips it
    assert geno.normal == [("nor_conv_3x3", 0), ("avg_pool_3x3", 1)]
    assert str(geno) == "chain:nor_conv_3x3>avg_pool_3x3"
    assert Genotype.parse(str(geno)).same_architecture(geno)
    assert Genotype.from_json(geno.to_json()) == geno
    assert geno.edge_targets() == [1, 2] and geno.disconnected_cells() == []
    assert Genotype.parse("chain:none>skip_connect").disconnected_cells() == ["normal"]
    assert chain.to_dot(geno) == (
        "digraph cells {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n  subgraph cluster_normal {\n"
        '    label="normal cell";\n    normal_0 [label="input"];\n    normal_1 [label="node 1"];\n'
        '    normal_2 [label="output"];\n    normal_0 -> normal_1 [label="nor_conv_3x3"];\n'
        '    normal_1 -> normal_2 [label="avg_pool_3x3"];\n  }\n}\n'
    )
    model = nas.build_network(geno, C=4, N=2, num_classes=3)
    assert isinstance(model, ChainNetwork) and model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="auxiliary"):
        nas.build_network(geno, C=4, N=2, num_classes=3, auxiliary=True)
    with pytest.raises(nas.UserError, match="must read nodes"):
        Genotype.from_dict({"space": "chain", "normal": [["none", 1], ["none", 1]]})


def test_toy_space_search_epoch(chain, tmp_path):
    from nas.config import load_config
    from nas.search import run_search

    cfg = load_config(
        None,
        [
            "data.num_train=64",
            "data.num_test=16",
            "data.image_size=16",
            "supernet.space=chain",
            "supernet.C=4",
            "supernet.N=1",
            "search.batch_size=16",
            "search.steps_per_epoch=2",
            "search.epochs=1",
            "search.warmup_epochs=0",
            "search.prune=off",
            "run.device=cpu",
        ],
    )
    result = run_search(cfg, tmp_path / "run", torch.device("cpu"), progress=False, log=lambda s: None)
    assert result.genotype.space == "chain" and str(result.genotype).startswith("chain:")
    saved = Genotype.from_json((tmp_path / "run" / "genotype.json").read_text())
    assert saved.same_architecture(result.genotype)


def test_random_chain_strings_round_trip(chain):
    rng = random.Random(0)
    for _ in range(20):
        text = f"chain:{rng.choice(CHAIN_OPS)}>{rng.choice(CHAIN_OPS)}"
        assert str(Genotype.parse(text)) == text
    with pytest.raises(nas.UserError, match="malformed chain"):
        Genotype.parse("chain:only_one")


def test_importing_genotype_alone_registers_the_builtins():
    import subprocess
    import sys

    code = (
        f"from nas.genotype import Genotype; from nas.spaces import space_names; D = {DARTS_V2!r}; "
        "assert space_names() == ['nb201', 'darts'], space_names(); "
        "assert str(Genotype.parse(D)) == D; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_bind_edges_refuses_a_choice_that_is_not_an_edge():
    net = ChainSupernet(4, 1, 3, "gdas", CHAIN_OPS, False, 1.0, False)
    stray = nn.Sequential(nas.OpChoice({"a": nn.Identity(), "b": nn.Identity()}, label="stray"))
    with pytest.raises(ValueError, match=r"'stray' with candidates \['a', 'b'\] is not an edge of this supernet"):
        net.bind_edges(stray, {"normal": CHAIN_EDGES})
    with pytest.raises(ValueError, match="cell type 'reduce' has no logits"):
        net.bind_edges(net.net, {"reduce": CHAIN_EDGES})
