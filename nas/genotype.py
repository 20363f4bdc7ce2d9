"""Discrete architectures (genotypes) and their text formats.

A :class:`Genotype` lists, per cell type, the kept edges as ``(op, from_node)``
pairs in node order, the way DARTS does. In the ``nb201`` space every edge is
kept, in the order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; in the ``darts`` space
each intermediate node keeps two edges. Node numbers in the ``darts`` space
count the two cell inputs as 0 and 1 and the intermediate nodes as 2..5.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import UserError

Edge = Tuple[str, int]

NB201_NODES = 4  # node 0 is the input, node 3 the output
DARTS_STEPS = 4  # intermediate nodes per DARTS cell


def nb201_edges(num_nodes: int = NB201_NODES) -> List[Tuple[int, int]]:
    """The ``(to, from)`` pairs of an NB201 cell in the official order."""
    return [(i, j) for i in range(1, num_nodes) for j in range(i)]


def darts_edges(steps: int = DARTS_STEPS) -> List[Tuple[int, int]]:
    """The ``(to, from)`` pairs of a DARTS cell: node 2+i takes every earlier state."""
    return [(2 + i, j) for i in range(steps) for j in range(2 + i)]


@dataclass
class Genotype:
    """A derived architecture.

    Attributes:
        space: ``"nb201"`` or ``"darts"``.
        normal: kept edges of the normal cell, ``(op, from_node)`` in node order.
        reduce: kept edges of the reduction cell (``darts`` space only).
        normal_concat / reduce_concat: nodes concatenated into the cell output.
        ops: the candidate op names the probabilities refer to.
        probs: per cell type, per edge (all edges, in edge order), the
            probability of each candidate op; ``None`` when unknown (parsed strings).
    """

    space: str
    normal: List[Edge]
    reduce: Optional[List[Edge]] = None
    normal_concat: List[int] = field(default_factory=list)
    reduce_concat: List[int] = field(default_factory=list)
    ops: Optional[List[str]] = None
    probs: Optional[Dict[str, List[List[float]]]] = None

    def __post_init__(self) -> None:
        self.normal = [(str(op), int(j)) for op, j in self.normal]
        if self.reduce is not None:
            self.reduce = [(str(op), int(j)) for op, j in self.reduce]
        self.normal_concat = [int(v) for v in self.normal_concat]
        self.reduce_concat = [int(v) for v in self.reduce_concat]

    # ---- structure -------------------------------------------------------
    def cells(self) -> Dict[str, List[Edge]]:
        """Cell type -> kept edges."""
        out = {"normal": self.normal}
        if self.reduce is not None:
            out["reduce"] = self.reduce
        return out

    def edge_targets(self, cell: str = "normal") -> List[int]:
        """The node each kept edge feeds, parallel to ``cells()[cell]``."""
        edges = self.cells()[cell]
        if self.space == "nb201":
            return [i for i, _ in nb201_edges(_nb201_nodes(len(edges)))]
        return [2 + k // 2 for k in range(len(edges))]

    def disconnected_cells(self) -> List[str]:
        """Cell types whose output does not depend on the cell's input(s).

        That happens when every path from an input node to the output crosses a
        ``none`` edge (searches can derive such cells when ``none`` wins); the
        network then computes the same output for every image.
        """
        out = []
        for cell, edges in self.cells().items():
            targets = self.edge_targets(cell)
            live = {0} if self.space == "nb201" else {0, 1}
            for (op, src), dst in zip(edges, targets):  # kept edges are in node order
                if op != "none" and src in live:
                    live.add(dst)
            if self.space == "nb201":
                outputs = [max(targets)] if targets else []
            else:
                outputs = self.normal_concat if cell == "normal" else self.reduce_concat
            if not any(n in live for n in outputs):
                out.append(cell)
        return out

    # ---- comparisons ignore the probabilities ----------------------------
    def same_architecture(self, other: "Genotype") -> bool:
        return (self.space, self.normal, self.reduce, self.normal_concat, self.reduce_concat) == \
               (other.space, other.normal, other.reduce, other.normal_concat, other.reduce_concat)

    # ---- JSON ------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "normal": [list(e) for e in self.normal],
            "reduce": None if self.reduce is None else [list(e) for e in self.reduce],
            "normal_concat": self.normal_concat,
            "reduce_concat": self.reduce_concat,
            "ops": self.ops,
            "probs": self.probs,
            "arch": str(self),
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        try:
            geno = cls(space=d["space"], normal=[tuple(e) for e in d["normal"]],
                       reduce=None if d.get("reduce") is None else [tuple(e) for e in d["reduce"]],
                       normal_concat=d.get("normal_concat", []), reduce_concat=d.get("reduce_concat", []),
                       ops=d.get("ops"), probs=d.get("probs"))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a genotype record ({exc}); expected the JSON that Genotype.to_json writes") from None
        geno.validate()
        return geno

    def validate(self) -> None:
        """Check the wiring: a complete NB201 cell, or DARTS nodes with two in-range inputs each."""
        if self.space == "nb201":
            try:
                num_nodes = _nb201_nodes(len(self.normal))
            except ValueError:
                raise UserError(f"an nb201 genotype needs the edges of a complete cell (e.g. 6), got {len(self.normal)}") from None
            sources = [j for _, j in nb201_edges(num_nodes)]
            if [j for _, j in self.normal] != sources or self.reduce is not None:
                raise UserError(f"nb201 genotype edges must read nodes {sources} in order; got {[j for _, j in self.normal]}")
        elif self.space == "darts":
            if self.reduce is None:
                raise UserError("a darts genotype needs both a normal and a reduce cell")
            for cell, edges, concat in (("normal", self.normal, self.normal_concat),
                                        ("reduce", self.reduce, self.reduce_concat)):
                if not edges or len(edges) % 2:
                    raise UserError(f"the darts {cell} cell needs two edges per node, got {len(edges)} edges")
                for k, (_, src) in enumerate(edges):
                    if not 0 <= src < 2 + k // 2:
                        raise UserError(f"edge {k} of the darts {cell} cell reads node {src}, but node "
                                        f"{2 + k // 2} can only read nodes 0..{1 + k // 2}")
                last = 2 + len(edges) // 2
                if not concat or not all(0 <= v < last for v in concat):
                    raise UserError(f"{cell}_concat {concat} must list nodes in 0..{last - 1}")
        else:
            raise UserError(f"unknown genotype space {self.space!r}; expected nb201 or darts")

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"genotype JSON does not parse: {exc}") from None
        if not isinstance(d, dict):
            raise UserError("genotype JSON must be an object, as Genotype.to_json writes")
        return cls.from_dict(d)

    # ---- NAS-Bench-201 strings -------------------------------------------
    def to_nb201(self) -> str:
        """The official ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` string."""
        if self.space != "nb201":
            raise ValueError(f"to_nb201 needs an nb201 genotype, this one is {self.space!r}")
        num_nodes = _nb201_nodes(len(self.normal))
        parts, k = [], 0
        for i in range(1, num_nodes):
            node = []
            for j in range(i):
                op, src = self.normal[k]
                node.append(f"{op}~{src}")
                k += 1
            parts.append("|" + "|".join(node) + "|")
        return "+".join(parts)

    @classmethod
    def from_nb201(cls, text: str) -> "Genotype":
        """Parse an official NAS-Bench-201 architecture string."""
        text = text.strip()
        nodes = text.split("+")
        edges: List[Edge] = []
        for i, node in enumerate(nodes, start=1):
            if len(node) < 2 or node[0] != "|" or node[-1] != "|":
                raise UserError(f"malformed NB201 string {text!r}: node {i} {node!r} must look like |op~0|op~1|; "
                                "expected e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|")
            items = node[1:-1].split("|")
            if len(items) != i:
                raise UserError(f"malformed NB201 string {text!r}: node {i} needs {i} inputs, got {len(items)}")
            for j, item in enumerate(items):
                m = re.fullmatch(r"([A-Za-z0-9_]+)~(\d+)", item)
                if m is None or int(m.group(2)) != j:
                    raise UserError(f"malformed NB201 string {text!r}: expected 'op~{j}' in node {i}, got {item!r}")
                edges.append((m.group(1), j))
        return cls(space="nb201", normal=edges, normal_concat=[len(nodes)])

    # ---- DARTS strings ---------------------------------------------------
    def to_darts(self) -> str:
        """DARTS's ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``."""
        if self.space != "darts":
            raise ValueError(f"to_darts needs a darts genotype, this one is {self.space!r}")
        return (f"Genotype(normal={self.normal!r}, normal_concat={self.normal_concat!r}, "
                f"reduce={self.reduce!r}, reduce_concat={self.reduce_concat!r})")

    @classmethod
    def from_darts(cls, text: str) -> "Genotype":
        """Parse DARTS's printed genotype (the call is parsed, never evaluated)."""
        text = text.strip()
        bad = (f"malformed DARTS genotype {text[:80]!r}: expected "
               "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[...])")
        try:
            call = ast.parse(text, mode="eval").body
        except SyntaxError:
            raise UserError(bad) from None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"
                and not call.args):
            raise UserError(bad)
        try:
            fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
        except ValueError:
            raise UserError(bad) from None
        if set(fields) != {"normal", "normal_concat", "reduce", "reduce_concat"}:
            raise UserError(bad)
        for key in ("normal", "reduce"):
            edges = fields[key]
            if (not isinstance(edges, list)
                    or not all(isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str)
                               and isinstance(e[1], int) for e in edges)):
                raise UserError(bad)
        for key in ("normal_concat", "reduce_concat"):
            if not isinstance(fields[key], list) or not all(isinstance(v, int) for v in fields[key]):
                raise UserError(bad)
        geno = cls(space="darts", normal=fields["normal"], reduce=fields["reduce"],
                   normal_concat=list(fields["normal_concat"]), reduce_concat=list(fields["reduce_concat"]))
        geno.validate()
        return geno

    # ---- any format ------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "Genotype":
        """Parse an NB201 string, a DARTS genotype string or genotype JSON."""
        s = text.strip()
        if s.startswith("|"):
            return cls.from_nb201(s)
        if s.startswith("Genotype("):
            return cls.from_darts(s)
        if s.startswith("{"):
            return cls.from_json(s)
        raise UserError(f"cannot read an architecture from {s[:80]!r}: give an NB201 string "
                        "(|op~0|+|op~0|op~1|+...), a DARTS Genotype(...) string, or genotype JSON")

    def __str__(self) -> str:
        return self.to_nb201() if self.space == "nb201" else self.to_darts()


def _literal(node: ast.expr):
    """A literal, or ``range(a, b)`` as DARTS's search code prints the concat lists."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 2):
        bounds = [ast.literal_eval(a) for a in node.args]
        if all(isinstance(b, int) for b in bounds):
            return list(range(*bounds))
        raise ValueError("range() takes ints")
    return ast.literal_eval(node)


def _nb201_nodes(num_edges: int) -> int:
    n = 1
    while n * (n - 1) // 2 < num_edges:
        n += 1
    if n * (n - 1) // 2 != num_edges:
        raise ValueError(f"{num_edges} edges do not form a complete NB201-style cell")
    return n


# The published DARTS (second order) cell, in DARTS's own print form.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
    "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)


def disconnected_warning(geno: Genotype) -> str:
    """One warning line naming ``geno``'s disconnected cells ("" when there are none)."""
    cells = geno.disconnected_cells()
    if not cells:
        return ""
    return (f"warning: the {' and '.join(cells)} cell ignores its input (every path from the input to the "
            "output has a none edge), so the network gives the same output for every image; search longer "
            "or train another architecture")


def derive_argmax(probs, ops: Sequence[str], include_none: bool) -> List[int]:
    """Per row of ``probs`` (edges x ops), the index of the derived op.

    With ``include_none`` false, ``none`` never wins unless it is the only op. Why a search
    may want that: ``none``'s output is zero, so its logit gets no gradient of its own and
    gains whenever the sampled ops' outputs would rather be scaled down, which says little
    about whether the edge is useful (DARTS excludes it from derivation for this reason).
    """
    # a tensor moves to the host in one transfer, not one per entry
    rows = probs.tolist() if hasattr(probs, "tolist") else [list(map(float, row)) for row in probs]
    skip = None if include_none or "none" not in ops or len(ops) == 1 else list(ops).index("none")
    return [max((k for k in range(len(row)) if k != skip), key=row.__getitem__) for row in rows]
