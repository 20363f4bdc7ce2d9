"""The NAS-Bench-201 space: cell, macro network, supernet and discrete network.

The cell has 4 nodes; node ``i`` is the sum of edges ``i<-j`` for all ``j < i``,
in the order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; node 3 is the output. The
macro network is a 3x3 conv + BN stem, three stages of ``N`` cells at C, 2C and
4C channels joined by ResNet reduction blocks, then BN-ReLU, global average
pooling and a linear classifier. One cell class, :class:`NB201Cell`, serves the
supernet (each edge a :class:`nas.OpChoice` over the ops) and the discrete
network (each edge its op); :func:`nas.fix` turns the one into the other.

Derivation takes the argmax over all ops per edge, as GDAS does, so ``none`` may
win an edge; with ``derive_none=False`` it takes the argmax over the other ops, as
DARTS's derivation does. A node all of whose inputs are ``none`` is a structural zero: the
ops reading it are skipped rather than run on zeros (in the official code such
a conv still adds its BN shift), which only matters for degenerate cells.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from .choice import op_choice
from .errors import UserError
from .fix import fix
from .genotype import Edge, Genotype, derive_argmax
from .ops import NB201_OPS, ReLUConvBN, Zero, build_op, check_ops
from .spaces import SearchSpace, register_space
from .supernet import Supernet, edge_label, upgrade_edge_keys

NB201_NODES = 4  # node 0 is the input, node 3 the output


def nb201_edges(num_nodes: int = NB201_NODES) -> List[Tuple[int, int]]:
    """The ``(to, from)`` pairs of an NB201 cell in the official order."""
    return [(i, j) for i in range(1, num_nodes) for j in range(i)]


def nb201_nodes(num_edges: int) -> int:
    """The node count of a complete NB201-style cell with ``num_edges`` edges (``ValueError`` if none)."""
    n = 1
    while n * (n - 1) // 2 < num_edges:
        n += 1
    if n * (n - 1) // 2 != num_edges:
        raise ValueError(f"{num_edges} edges do not form a complete NB201-style cell")
    return n


# ---- NAS-Bench-201 strings ---------------------------------------------------------
def to_nb201(geno: Genotype) -> str:
    """The official ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` string of an nb201 genotype."""
    if geno.space != "nb201":
        raise ValueError(f"to_nb201 needs an nb201 genotype, this one is {geno.space!r}")
    num_nodes = nb201_nodes(len(geno.normal))
    parts, k = [], 0
    for i in range(1, num_nodes):
        node = []
        for _j in range(i):
            op, src = geno.normal[k]
            node.append(f"{op}~{src}")
            k += 1
        parts.append("|" + "|".join(node) + "|")
    return "+".join(parts)


def from_nb201(text: str) -> Genotype:
    """Parse an official NAS-Bench-201 architecture string (:class:`nas.UserError` if malformed)."""
    text = text.strip()
    nodes = [node.strip() for node in text.split("+")]  # "|a~0| + |b~0|c~1|" as written by hand
    edges: List[Edge] = []
    for i, node in enumerate(nodes, start=1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise UserError(
                f"malformed NB201 string {text!r}: node {i} {node!r} must look like |op~0|op~1|; "
                "expected e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|"
            )
        items = node[1:-1].split("|")
        if len(items) != i:
            raise UserError(f"malformed NB201 string {text!r}: node {i} needs {i} inputs, got {len(items)}")
        for j, item in enumerate(items):
            m = re.fullmatch(r"([A-Za-z0-9_]+)~(\d+)", item)
            if m is None or int(m.group(2)) != j:
                raise UserError(f"malformed NB201 string {text!r}: expected 'op~{j}' in node {i}, got {item!r}")
            edges.append((m.group(1), j))
    return Genotype(space="nb201", normal=edges, normal_concat=[len(nodes)])


class ResNetBlock(nn.Module):
    """The residual reduction block between NB201 stages."""

    def __init__(self, C_in: int, C_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def nb201_arch(geno: Genotype) -> Dict[str, str]:
    """``{edge label: op}`` of an nb201 genotype (the labels of :class:`NB201Cell`'s choices)."""
    return {edge_label("normal", i, j): op for (i, j), (op, _) in zip(nb201_edges(), geno.normal)}


class NB201Cell(nn.Module):
    """An NB201 cell, for the search and for the discrete network alike.

    Each of the 6 edges is a :class:`nas.OpChoice` over ``ops`` labelled ``"normal:i<-j"``
    (``arch`` is ``None``: the supernet's cell), or the one op ``arch`` names for it (the
    discrete network's cell); so :func:`nas.fix` of a searched cell gives the discrete cell,
    state-dict keys and all.
    """

    def __init__(self, C: int, ops: Sequence[str], affine: bool, arch: Optional[Dict[str, str]] = None):
        super().__init__()
        self.edges = nn.ModuleList(
            op_choice(
                edge_label("normal", i, j),
                {name: functools.partial(build_op, name, C, C, 1, affine) for name in ops},
                arch,
                zero_as_none=True,
                copy_output=False,  # the cell sums the edges' outputs and changes none in place
            )
            for i, j in nb201_edges()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: List[Optional[torch.Tensor]] = [x]
        e = 0
        for i in range(1, NB201_NODES):
            out = None
            for j in range(i):
                inp, edge = nodes[j], self.edges[e]
                e += 1
                if inp is None or isinstance(edge, Zero):
                    continue  # a structural zero: nothing to add
                y = edge(inp)  # a choice gives None when it chose `none`
                if y is not None:
                    out = y if out is None else out + y
            nodes.append(out)
        # Every path was `none`: the cell outputs zeros (rare; allocates).
        return nodes[-1] if nodes[-1] is not None else torch.zeros_like(x)


class NB201Macro(nn.Module):
    """Stem, three stages of ``N`` cells joined by ResNet blocks, classifier."""

    def __init__(self, C: int, N: int, num_classes: int, make_cell: Callable[[int], nn.Module]):
        super().__init__()
        if C < 1 or N < 1 or num_classes < 1:
            raise ValueError(f"C, N and num_classes must be >= 1, got C={C}, N={N}, num_classes={num_classes}")
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: List[nn.Module] = []
        C_prev = C
        for stage, C_stage in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBlock(C_prev, C_stage, 2))
            layers.extend(make_cell(C_stage) for _ in range(N))
            C_prev = C_stage
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.flatten(1))


class NB201Network(NB201Macro):
    """The standalone NB201 network of one architecture, for retraining."""

    def __init__(self, geno: Genotype, C: int, N: int, num_classes: int, affine: bool = True):
        if geno.space != "nb201" or len(geno.normal) != len(nb201_edges()):
            raise ValueError(
                f"NB201Network needs an nb201 genotype with {len(nb201_edges())} edges, got a {geno.space!r} "
                f"genotype with {len(geno.normal)}"
            )
        arch = nb201_arch(geno)
        ops = list(dict.fromkeys(arch.values()))
        super().__init__(C, N, num_classes, lambda C_cell: NB201Cell(C_cell, ops, affine, arch))
        self.genotype = geno


class NB201Supernet(Supernet):
    """The NB201 supernet: one ``[6, len(ops)]`` logit tensor shared by all cells."""

    space = "nb201"

    def __init__(
        self,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        mode: str = "gdas",
        ops: Sequence[str] = NB201_OPS,
        affine: bool = False,
        tau: float = 10.0,
        derive_none: bool = True,
    ):
        ops = check_ops(ops)
        super().__init__(mode, ops, {"normal": len(nb201_edges())}, tau)
        self.C, self.N, self.num_classes, self.affine = C, N, num_classes, affine
        self.derive_none = derive_none
        self.net = NB201Macro(C, N, num_classes, lambda C_cell: NB201Cell(C_cell, ops, affine))
        self.bind_edges(self.net, {"normal": nb201_edges()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.draw():
            return self.net(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_edge_keys(state_dict, prefix, self.ops)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def genotype(self, scores: Optional[Dict[str, torch.Tensor]] = None) -> Genotype:
        """Argmax per edge over all ops (``none`` included, as in GDAS; excluded when
        ``derive_none`` is false, as in DARTS) of the probabilities, or of ``scores``."""
        probs = self.probabilities()["normal"]
        best = derive_argmax(self._scores(scores)["normal"], self.ops, self.derive_none)
        edges = [(self.ops[k], j) for k, (_, j) in zip(best, nb201_edges())]
        return Genotype(
            space="nb201",
            normal=edges,
            normal_concat=[NB201_NODES - 1],
            ops=list(self.ops),
            probs={"normal": probs.tolist()},
        )

    def choices_from_genotype(self, geno: Genotype) -> Dict[str, List[int]]:
        if geno.space != "nb201":
            raise ValueError(f"cannot force a {geno.space!r} genotype on an nb201 supernet")
        missing = [op for op, _ in geno.normal if op not in self.ops]
        if missing:
            raise ValueError(f"op(s) {missing} are not candidates of this supernet ({list(self.ops)})")
        return {"normal": [self.ops.index(op) for op, _ in geno.normal]}

    def discretize(self, geno: Optional[Genotype] = None) -> NB201Network:
        """The discrete network of ``geno`` (default: the derived one) with the supernet's weights:
        :func:`nas.fix` of the supernet's cells, which has the discrete network's keys."""
        geno = Genotype.parse(geno) if isinstance(geno, str) else geno or self.genotype()
        self.choices_from_genotype(geno)  # its ops are this supernet's
        model = NB201Network(geno, self.C, self.N, self.num_classes, affine=self.affine)
        model.load_state_dict(fix(self.net, nb201_arch(geno)).state_dict())
        return model.to(next(self.parameters()).device)


class NB201Space(SearchSpace):
    """The NAS-Bench-201 space: one cell type, every edge kept, GDAS's derivation rule by default.

    Its genotypes may have any complete cell (``from_nb201`` reads any node count); the
    supernet and network use the 4-node cell.
    """

    name = "nb201"
    default_ops = NB201_OPS
    default_derive_none = True  # GDAS: none may win an edge
    supports_auxiliary = False
    cell_types = ("normal",)
    genotype_format = "an NB201 string (|op~0|+|op~0|op~1|+...)"

    def edges(self) -> List[Tuple[int, int]]:
        return nb201_edges()

    def parse_genotype(self, text: str) -> Optional[Genotype]:
        s = text.strip()
        return from_nb201(s) if s.startswith("|") else None

    def recognizes(self, text: str) -> bool:
        return text.lstrip().startswith("|")

    def format_genotype(self, geno: Genotype) -> str:
        return to_nb201(geno)

    def validate_genotype(self, geno: Genotype) -> None:
        """A complete NB201 cell whose edges read their sources in the official order."""
        try:
            num_nodes = nb201_nodes(len(geno.normal))
        except ValueError:
            raise UserError(
                f"an nb201 genotype needs the edges of a complete cell (e.g. 6), got {len(geno.normal)}"
            ) from None
        if geno.reduce is not None:
            raise UserError("an nb201 genotype has one cell type; remove its reduce cell (and reduce_concat)")
        sources = [j for _, j in nb201_edges(num_nodes)]
        if [j for _, j in geno.normal] != sources:
            raise UserError(
                f"nb201 genotype edges must read nodes {sources} in order; got {[j for _, j in geno.normal]}"
            )

    def edge_targets(self, geno: Genotype, cell: str) -> List[int]:
        return [i for i, _ in nb201_edges(nb201_nodes(len(geno.cells()[cell])))]

    def input_nodes(self, geno: Genotype, cell: str) -> Set[int]:
        return {0}

    def build_supernet(
        self,
        *,
        mode: str,
        C: int,
        N: int,
        num_classes: int,
        ops: Sequence[str],
        affine: bool,
        tau: float,
        derive_none: bool,
    ) -> NB201Supernet:
        return NB201Supernet(
            C=C, N=N, num_classes=num_classes, mode=mode, ops=ops, affine=affine, tau=tau, derive_none=derive_none
        )

    def build_network(
        self, geno: Genotype, *, C: int, N: int, num_classes: int, auxiliary: bool, drop_path_prob: float, affine: bool
    ) -> NB201Network:
        return NB201Network(geno, C=C, N=N, num_classes=num_classes, affine=affine)


NB201_SPACE = register_space(NB201Space())
