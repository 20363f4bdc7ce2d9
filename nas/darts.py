"""The DARTS CNN space: search network and NetworkCIFAR.

Each cell reads the outputs of the two previous cells (nodes 0 and 1, after a
1x1 preprocessing conv), has 4 intermediate nodes, each the sum of edges from
every earlier node (14 edges), and outputs the concatenation of its
intermediate nodes. The macro network has ``N`` cells (the paper's L), with
reduction cells at 1/3 and 2/3 of the depth; normal and reduction cells have
separate architecture logits. One cell class, :class:`DartsCell`, serves the
supernet (all 14 edges, each a :class:`nas.OpChoice`) and NetworkCIFAR (the
genotype's 8 edges, each its op).

Derivation follows DARTS: each intermediate node keeps its two incoming edges
whose strongest non-``none`` op is strongest, with that op.
"""

from __future__ import annotations

import ast
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from .choice import OpChoice
from .errors import UserError
from .genotype import Genotype
from .ops import DARTS_OPS, FactorizedReduce, ReLUConvBN, Zero, build_op, check_ops
from .spaces import SearchSpace, register_space
from .supernet import Supernet, edge_label, upgrade_edge_keys

DARTS_STEPS = 4  # intermediate nodes per DARTS cell
MULTIPLIER = 4  # intermediate nodes concatenated into the cell output
STEM_MULTIPLIER = 3

# The published DARTS (second order) cell, in DARTS's own print form.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def darts_edges(steps: int = DARTS_STEPS) -> List[Tuple[int, int]]:
    """The ``(to, from)`` pairs of a DARTS cell: node 2+i takes every earlier state."""
    return [(2 + i, j) for i in range(steps) for j in range(2 + i)]


# ---- DARTS genotype strings -----------------------------------------------------------
def to_darts(geno: Genotype) -> str:
    """DARTS's ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``."""
    if geno.space != "darts":
        raise ValueError(f"to_darts needs a darts genotype, this one is {geno.space!r}")
    return (
        f"Genotype(normal={geno.normal!r}, normal_concat={geno.normal_concat!r}, "
        f"reduce={geno.reduce!r}, reduce_concat={geno.reduce_concat!r})"
    )


def from_darts(text: str) -> Genotype:
    """Parse DARTS's printed genotype (the call is parsed, never evaluated; :class:`nas.UserError` if malformed)."""
    text = text.strip()
    bad = (
        f"malformed DARTS genotype {text[:80]!r}: expected "
        "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])"
    )
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise UserError(bad) from None
    if not (
        isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype" and not call.args
    ):
        raise UserError(bad)
    try:
        fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
    except ValueError:
        raise UserError(bad) from None
    if set(fields) != {"normal", "normal_concat", "reduce", "reduce_concat"}:
        raise UserError(bad)
    for key in ("normal", "reduce"):
        edges = fields[key]
        if not isinstance(edges, list) or not all(
            isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int) for e in edges
        ):
            raise UserError(bad)
    for key in ("normal_concat", "reduce_concat"):
        if not isinstance(fields[key], list) or not all(isinstance(v, int) for v in fields[key]):
            raise UserError(bad)
    geno = Genotype(
        space="darts",
        normal=fields["normal"],
        reduce=fields["reduce"],
        normal_concat=list(fields["normal_concat"]),
        reduce_concat=list(fields["reduce_concat"]),
    )
    geno.validate()
    return geno


def _literal(node: ast.expr):
    """A literal, or ``range(a, b)`` as DARTS's search code prints the concat lists."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and not node.keywords
        and 1 <= len(node.args) <= 2
    ):
        bounds = [ast.literal_eval(a) for a in node.args]
        if all(isinstance(b, int) for b in bounds):
            return list(range(*bounds))
        raise ValueError("range() takes ints")
    return ast.literal_eval(node)


def reduction_layers(num_cells: int) -> Tuple[int, int]:
    return num_cells // 3, 2 * num_cells // 3


def _stem(C: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, STEM_MULTIPLIER * C, 3, padding=1, bias=False), nn.BatchNorm2d(STEM_MULTIPLIER * C)
    )


def _build_cells(C: int, N: int, make_cell: Callable[..., nn.Module]) -> Tuple[nn.ModuleList, List[int]]:
    """The macro network's cells, built by ``make_cell(C_pp, C_p, C, reduction, reduction_prev)``.

    Returns the cells and each cell's output channels.
    """
    C_pp = C_p = STEM_MULTIPLIER * C
    C_curr, reduction_prev = C, False
    cells, widths = nn.ModuleList(), []
    for i in range(N):
        reduction = i in reduction_layers(N)
        if reduction:
            C_curr *= 2
        cell = make_cell(C_pp, C_p, C_curr, reduction, reduction_prev)
        cells.append(cell)
        reduction_prev = reduction
        C_pp, C_p = C_p, MULTIPLIER * C_curr
        widths.append(C_p)
    return cells, widths


def _preprocess(C_pp: int, C_p: int, C: int, reduction_prev: bool, affine: bool) -> Tuple[nn.Module, nn.Module]:
    pre0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
    return pre0, ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)


def _concat(states: List[Optional[torch.Tensor]], like: torch.Tensor, C: int, reduction: bool) -> torch.Tensor:
    if any(s is None for s in states):
        # An intermediate node whose edges were all `none` contributes zeros.
        H, W = like.shape[2:]
        if reduction:
            H, W = (H + 1) // 2, (W + 1) // 2
        zero = like.new_zeros(like.shape[0], C, H, W)
        states = [zero if s is None else s for s in states]
    return torch.cat(states, dim=1)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob``, rescaling the rest."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # ~Bernoulli(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """A DARTS cell, for the search and for the discrete network (NetworkCIFAR's) alike.

    ``edges`` lists ``(op, to, from)`` per edge, grouped by target node in node order. ``op`` is
    a list of op names for a searched edge (a :class:`nas.OpChoice` labelled
    ``"normal:to<-from"`` or ``"reduce:..."``), or one op name for a discrete edge. The supernet's
    cell has all 14 edges as choices; the discrete cell the genotype's two edges per node, and
    drop-path on each of them that is not an identity.
    """

    def __init__(
        self,
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        edges: Sequence[Tuple[Union[str, Sequence[str]], int, int]],
        concat: Sequence[int],
        affine: bool,
    ):
        super().__init__()
        self.reduction, self.C, self.concat = reduction, C, list(concat)
        self.preprocess0, self.preprocess1 = _preprocess(C_pp, C_p, C, reduction_prev, affine)
        cell = "reduce" if reduction else "normal"
        modules = []
        for op, to, j in edges:
            stride = 2 if reduction and j < 2 else 1
            if isinstance(op, str):
                modules.append(build_op(op, C, C, stride, affine))
            else:
                candidates = {name: build_op(name, C, C, stride, affine) for name in op}
                # The cell sums the edges' outputs (after drop-path, out of place) and changes none in place.
                choice = OpChoice(candidates, label=edge_label(cell, to, j), zero_as_none=True, copy_output=False)
                modules.append(choice)
        self.edges = nn.ModuleList(modules)
        self.targets = [to for _, to, _ in edges]
        self.sources = [j for _, _, j in edges]
        self._droppable = [not isinstance(m, (Zero, nn.Identity, OpChoice)) for m in modules]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: List[Optional[torch.Tensor]] = [self.preprocess0(s0), self.preprocess1(s1)]
        drop = self.training and drop_prob > 0
        e, num_edges = 0, len(self.edges)
        for node in range(2, 2 + DARTS_STEPS):
            out = None
            while e < num_edges and self.targets[e] == node:
                x, edge = states[self.sources[e]], self.edges[e]
                e += 1
                if x is None or isinstance(edge, Zero):
                    continue  # a structural zero: nothing to add
                h = edge(x)  # a choice gives None when it chose `none`
                if h is None:
                    continue
                if drop and self._droppable[e - 1]:
                    h = drop_path(h, drop_prob)
                out = h if out is None else out + h
            states.append(out)
        return _concat([states[i] for i in self.concat], states[1], self.C, self.reduction)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS's auxiliary classifier, on the 8x8 features after the second reduction."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        # DARTS's pool takes the 8x8 maps of 32 px inputs (8 to 10 px) to 2x2; other sizes pool
        # adaptively to the same 2x2, which the 2x2 convolution and the classifier expect.
        x = self.pool(x) if 8 <= x.shape[-1] <= 10 else nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


def _check_macro(C: int, N: int, num_classes: int) -> None:
    if C < 1 or N < DartsSpace.min_cells or num_classes < 1:
        raise ValueError(
            f"the darts space needs C >= 1, N >= 3 cells and num_classes >= 1; "
            f"got C={C}, N={N}, num_classes={num_classes}"
        )


class NetworkCIFAR(nn.Module):
    """DARTS's evaluation network for 32x32 inputs.

    In training with ``auxiliary=True`` the forward returns ``(logits, aux_logits)``;
    otherwise the logits. Set ``drop_path_prob`` (usually ramped over epochs).
    """

    def __init__(
        self,
        geno: Genotype,
        C: int = 36,
        N: int = 20,
        num_classes: int = 10,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
        affine: bool = True,
    ):
        super().__init__()
        if geno.space != "darts":
            raise ValueError(f"NetworkCIFAR needs a darts genotype, got {geno.space!r}")
        _check_macro(C, N, num_classes)
        if not 0 <= drop_path_prob < 1:  # 1 drops every path (NaN); above, torch's bernoulli_ fails
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        if len(geno.normal_concat) != MULTIPLIER or len(geno.reduce_concat) != MULTIPLIER:
            raise ValueError(
                f"NetworkCIFAR concatenates {MULTIPLIER} nodes per cell; the genotype asks for "
                f"{len(geno.normal_concat)} and {len(geno.reduce_concat)}: give cells of {MULTIPLIER} "
                "intermediate nodes, as a darts search derives"
            )
        self.genotype, self.drop_path_prob, self.auxiliary = geno, drop_path_prob, auxiliary
        self.stem = _stem(C)

        def make_cell(C_pp: int, C_p: int, C_cell: int, red: bool, red_prev: bool) -> DartsCell:
            edges = geno.reduce if red else geno.normal
            concat = geno.reduce_concat if red else geno.normal_concat
            spec = [(op, 2 + k // 2, j) for k, (op, j) in enumerate(edges)]
            return DartsCell(C_pp, C_p, C_cell, red, red_prev, spec, concat, affine)

        self.cells, widths = _build_cells(C, N, make_cell)
        self.aux_index = reduction_layers(N)[1]
        self.aux_head = AuxiliaryHeadCIFAR(widths[self.aux_index], num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor):
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if self.aux_head is not None and i == self.aux_index and self.training:
                aux = self.aux_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


class DartsSupernet(Supernet):
    """The DARTS-space supernet: ``normal`` and ``reduce`` logits, each ``[14, len(ops)]``."""

    space = "darts"

    def __init__(
        self,
        C: int = 16,
        N: int = 8,
        num_classes: int = 10,
        mode: str = "gdas",
        ops: Sequence[str] = DARTS_OPS,
        affine: bool = False,
        tau: float = 10.0,
    ):
        ops = check_ops(ops)
        _check_macro(C, N, num_classes)
        num_edges = len(darts_edges())
        super().__init__(mode, ops, {"normal": num_edges, "reduce": num_edges}, tau)
        self.C, self.N, self.num_classes, self.affine = C, N, num_classes, affine
        self.stem = _stem(C)
        spec = [(list(ops), to, j) for to, j in darts_edges()]
        concat = list(range(2, 2 + DARTS_STEPS))
        self.cells, widths = _build_cells(
            C,
            N,
            lambda C_pp, C_p, C_cell, red, red_prev: DartsCell(C_pp, C_p, C_cell, red, red_prev, spec, concat, affine),
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.bind_edges(self.cells, {"normal": darts_edges(), "reduce": darts_edges()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.draw():
            s0 = s1 = self.stem(x)
            for cell in self.cells:
                s0, s1 = s1, cell(s0, s1)
            return self.classifier(self.global_pooling(s1).flatten(1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_edge_keys(state_dict, prefix, self.ops)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def genotype(self, scores: Optional[Dict[str, torch.Tensor]] = None) -> Genotype:
        """DARTS's rule on the probabilities, or on ``scores``: per node the two incoming edges
        whose best op other than ``none`` ranks highest, each with that op."""
        probs = self.probabilities()
        none = self.ops.index("none") if "none" in self.ops else None
        kept = {}
        for cell, W in (probs if scores is None else self._scores(scores)).items():
            W = W.clone().float()
            if none is not None:
                W[:, none] = float("-inf")  # never ranked, never chosen
            gene, start = [], 0
            for i in range(DARTS_STEPS):
                rows = W[start : start + 2 + i]
                strength = rows.max(dim=-1).values
                # Strongest first, ties by lower node, as DARTS's sort does.
                best_edges = sorted(range(2 + i), key=lambda j: -float(strength[j]))[:2]
                gene.extend((self.ops[int(rows[j].argmax())], j) for j in best_edges)
                start += 2 + i
            kept[cell] = gene
        concat = list(range(2, 2 + DARTS_STEPS))
        return Genotype(
            space="darts",
            normal=kept["normal"],
            reduce=kept["reduce"],
            normal_concat=concat,
            reduce_concat=concat,
            ops=list(self.ops),
            probs={c: p.tolist() for c, p in probs.items()},
        )

    def choices_from_genotype(self, geno: Genotype) -> Dict[str, List[int]]:
        if geno.space != "darts":
            raise ValueError(f"cannot force a {geno.space!r} genotype on a darts supernet")
        if "none" not in self.ops:
            raise ValueError("forcing a darts genotype needs 'none' among the ops, for the edges it drops")
        concat = list(range(2, 2 + DARTS_STEPS))
        if geno.normal_concat != concat or geno.reduce_concat != concat:
            raise ValueError(f"the supernet concatenates nodes {concat}; the genotype asks for others")
        edge_index = {pair: e for e, pair in enumerate(darts_edges())}
        out = {}
        for cell, edges in geno.cells().items():
            choices = [self.ops.index("none")] * len(edge_index)
            for k, (op, j) in enumerate(edges):
                if op not in self.ops:
                    raise ValueError(f"op {op!r} is not a candidate of this supernet ({list(self.ops)})")
                e = edge_index[(2 + k // 2, j)]
                if choices[e] != self.ops.index("none"):
                    raise ValueError(
                        f"the genotype uses edge {2 + k // 2}<-{j} twice; the supernet has one op per edge"
                    )
                choices[e] = self.ops.index(op)
            out[cell] = choices
        return out

    def discretize(self, geno: Optional[Genotype] = None) -> NetworkCIFAR:
        """NetworkCIFAR of ``geno`` (default: the derived one) with the supernet's weights."""
        geno = Genotype.parse(geno) if isinstance(geno, str) else geno or self.genotype()
        choices = self.choices_from_genotype(geno)
        model = NetworkCIFAR(geno, self.C, self.N, self.num_classes, affine=self.affine)
        # The discrete cell keeps 8 of the 14 edges: its edge k is the supernet's edge e, fixed to
        # its op (nas.fix keeps all 14, so the kept ones are taken by position).
        edge_index = {pair: e for e, pair in enumerate(darts_edges())}
        source = self.state_dict()
        target = {}
        for key in model.state_dict():
            parts = key.split(".")
            if parts[0] == "cells" and parts[2] == "edges":
                cell = model.cells[int(parts[1])]
                k = int(parts[3])
                e = edge_index[(cell.targets[k], cell.sources[k])]
                op = self.ops[choices["reduce" if cell.reduction else "normal"][e]]
                parts[3:4] = [str(e), "candidates", op]
            target[key] = source[".".join(parts)]
        model.load_state_dict(target)
        return model.to(next(self.parameters()).device)


class DartsSpace(SearchSpace):
    """The DARTS CNN space: normal and reduction cells, two kept edges per node, DARTS's derivation."""

    name = "darts"
    default_ops = DARTS_OPS
    default_derive_none = False  # DARTS: none never wins an edge
    supports_auxiliary = True
    keeps_every_edge = False  # each node keeps its two strongest inputs
    cell_types = ("normal", "reduce")
    genotype_format = "a DARTS Genotype(...) string"
    min_cells = 3  # a normal cell and the two reduction cells at N/3 and 2N/3

    def check_derive_none(self, derive_none: Optional[bool]) -> None:
        """The darts space has one derivation rule (no ``none`` edges); refuse asking it for another."""
        if derive_none:
            raise ValueError(
                "supernet.derive_none: the darts space never derives none edges (it keeps each "
                "node's two strongest non-none edges); leave it unset (null) for darts"
            )

    def edges(self) -> List[Tuple[int, int]]:
        return darts_edges()

    def parse_genotype(self, text: str) -> Optional[Genotype]:
        s = text.strip()
        return from_darts(s) if s.startswith("Genotype(") else None

    def recognizes(self, text: str) -> bool:
        return text.lstrip().startswith("Genotype(")

    def format_genotype(self, geno: Genotype) -> str:
        return to_darts(geno)

    def log_text(self, geno: Genotype) -> str:
        return "genotype.json updated"  # two cells of DARTS's print form do not fit a log line

    def validate_genotype(self, geno: Genotype) -> None:
        """Both cells, each node with two in-range inputs, concat lists naming existing nodes."""
        if geno.reduce is None:
            raise UserError("a darts genotype needs both a normal and a reduce cell")
        for cell, edges, concat in (
            ("normal", geno.normal, geno.normal_concat),
            ("reduce", geno.reduce, geno.reduce_concat),
        ):
            if len(edges) != 2 * DARTS_STEPS:
                raise UserError(
                    f"the darts {cell} cell has {DARTS_STEPS} nodes of two edges each: it needs "
                    f"{2 * DARTS_STEPS} edges, got {len(edges)}"
                )
            for k, (_, src) in enumerate(edges):
                if not 0 <= src < 2 + k // 2:
                    raise UserError(
                        f"edge {k} of the darts {cell} cell reads node {src}, but node "
                        f"{2 + k // 2} can only read nodes 0..{1 + k // 2}"
                    )
            # The cell's output joins intermediate nodes: the inputs (0, 1) have another resolution
            # in a reduce cell, and the networks expect DARTS's four.
            if len(concat) != DARTS_STEPS or not all(2 <= v < 2 + DARTS_STEPS for v in concat):
                raise UserError(
                    f"{cell}_concat {concat} must list {DARTS_STEPS} of the intermediate nodes "
                    f"2..{1 + DARTS_STEPS} (DARTS's own: {list(range(2, 2 + DARTS_STEPS))})"
                )

    def edge_targets(self, geno: Genotype, cell: str) -> List[int]:
        return [2 + k // 2 for k in range(len(geno.cells()[cell]))]  # two kept edges per node

    def input_nodes(self, geno: Genotype, cell: str) -> Set[int]:
        return {0, 1}  # the outputs of the two previous cells

    def output_nodes(self, geno: Genotype, cell: str) -> List[int]:
        return geno.reduce_concat if cell == "reduce" else geno.normal_concat

    def dot_nodes(self, geno: Genotype, cell: str) -> List[Tuple[str, str]]:
        nodes = [("0", "c_{k-2}"), ("1", "c_{k-1}")]
        nodes += [(str(n), str(n - 2)) for n in range(2, 2 + len(geno.cells()[cell]) // 2)]
        return nodes + [("out", "c_{k}")]

    def dot_edges(self, geno: Genotype, cell: str) -> List[Tuple[str, str, Optional[str]]]:
        return super().dot_edges(geno, cell) + [(str(n), "out", None) for n in self.output_nodes(geno, cell)]

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
    ) -> DartsSupernet:
        # derive_none is False here: check_derive_none refused anything else
        return DartsSupernet(C=C, N=N, num_classes=num_classes, mode=mode, ops=ops, affine=affine, tau=tau)

    def build_network(
        self, geno: Genotype, *, C: int, N: int, num_classes: int, auxiliary: bool, drop_path_prob: float, affine: bool
    ) -> NetworkCIFAR:
        return NetworkCIFAR(
            geno, C=C, N=N, num_classes=num_classes, auxiliary=auxiliary, drop_path_prob=drop_path_prob, affine=affine
        )


DARTS_SPACE = register_space(DartsSpace())
