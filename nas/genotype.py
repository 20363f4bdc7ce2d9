"""Discrete architectures (genotypes) and their text formats.

A :class:`Genotype` lists, per cell type, the kept edges as ``(op, from_node)``
pairs in node order, the way DARTS does. What the edges mean belongs to the
genotype's search space (``nas.spaces.get_space(geno.space)``), which parses,
prints, checks and draws it. In the ``nb201`` space every edge is kept, in the
order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; in the ``darts`` space each
intermediate node keeps two edges. Node numbers in the ``darts`` space count the
two cell inputs as 0 and 1 and the intermediate nodes as 2..5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import UserError

Edge = Tuple[str, int]

# A genotype names its space; what the edges mean (text form, checks, wiring) is the space's. The
# registry (nas.spaces) hands its read-only view here when it loads, so that this value type
# imports none of it and no space module imports back into it.
_spaces: Mapping[str, Any] = {}


def bind_spaces(spaces: Mapping[str, Any]) -> None:
    """Called by :mod:`nas.spaces` with its registry view: space name -> space object."""
    global _spaces
    _spaces = spaces


def _space(name: str) -> Any:
    try:
        return _spaces[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown space {name!r}; choose one of: {', '.join(_spaces)}") from None


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise UserError(f"an architecture's text must be a string, got {type(text).__name__}: {text!r}"[:200])


@dataclass
class Genotype:
    """A derived architecture.

    Attributes:
        space: the name of its registered search space (``"nb201"``, ``"darts"``, ...).
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
        return _space(self.space).edge_targets(self, cell)

    def disconnected_cells(self) -> List[str]:
        """Cell types whose output does not depend on the cell's input(s).

        That happens when every path from an input node to the output crosses a
        ``none`` edge (searches can derive such cells when ``none`` wins); the
        network then computes the same output for every image.
        """
        space = _space(self.space)
        out = []
        for cell, edges in self.cells().items():
            live = set(space.input_nodes(self, cell))
            for (op, src), dst in zip(edges, space.edge_targets(self, cell)):  # kept edges are in node order
                if op != "none" and src in live:
                    live.add(dst)
            if not any(n in live for n in space.output_nodes(self, cell)):
                out.append(cell)
        return out

    # ---- comparisons ignore the probabilities ----------------------------
    def same_architecture(self, other: "Genotype") -> bool:
        return (self.space, self.normal, self.reduce, self.normal_concat, self.reduce_concat) == (
            other.space,
            other.normal,
            other.reduce,
            other.normal_concat,
            other.reduce_concat,
        )

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
            geno = cls(
                space=d["space"],
                normal=[tuple(e) for e in d["normal"]],
                reduce=None if d.get("reduce") is None else [tuple(e) for e in d["reduce"]],
                normal_concat=d.get("normal_concat", []),
                reduce_concat=d.get("reduce_concat", []),
                ops=d.get("ops"),
                probs=d.get("probs"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a genotype record ({exc}); expected the JSON that Genotype.to_json writes") from None
        geno.validate()
        return geno

    def validate(self) -> None:
        """Check the wiring with the genotype's space (a complete NB201 cell, DARTS nodes with
        two in-range inputs each, ...); :class:`nas.UserError` names the problem."""
        if self.space not in _spaces:
            raise UserError(f"unknown genotype space {self.space!r}; expected one of: {', '.join(_spaces)}")
        _space(self.space).validate_genotype(self)

    @classmethod
    def from_json(cls, text: str) -> "Genotype":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"genotype JSON does not parse: {exc}") from None
        if not isinstance(d, dict):
            raise UserError("genotype JSON must be an object, as Genotype.to_json writes")
        return cls.from_dict(d)

    # ---- the built-in spaces' formats, by name (each space writes and reads its own) --
    def to_nb201(self) -> str:
        """The official ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` string (``ValueError`` unless nb201)."""
        return self._text_of("nb201")

    @classmethod
    def from_nb201(cls, text: str) -> "Genotype":
        """Parse an official NAS-Bench-201 architecture string."""
        return cls._parse_as("nb201", text, "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|")

    def to_darts(self) -> str:
        """DARTS's ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])``."""
        return self._text_of("darts")

    @classmethod
    def from_darts(cls, text: str) -> "Genotype":
        """Parse DARTS's printed genotype (the call is parsed, never evaluated)."""
        return cls._parse_as("darts", text, "Genotype(normal=[('sep_conv_3x3', 0), ...], ...)")

    def _text_of(self, space: str) -> str:
        if self.space != space:
            raise ValueError(f"to_{space} needs a {space} genotype, this one is {self.space!r}")
        return _space(space).format_genotype(self)

    @classmethod
    def _parse_as(cls, space: str, text: str, example: str) -> "Genotype":
        _check_text(text)
        geno = _space(space).parse_genotype(text)
        if geno is None:
            raise UserError(f"not a {space} architecture: {text.strip()[:80]!r}; expected e.g. {example}")
        return geno

    # ---- any format ------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "Genotype":
        """Parse genotype JSON or the text form of any registered space (an NB201 string,
        a DARTS genotype string, ...)."""
        _check_text(text)
        s = text.strip()
        if s.startswith("{"):
            return cls.from_json(s)
        for space in _spaces.values():
            geno = space.parse_genotype(s)
            if geno is not None:
                return geno
        formats = [space.genotype_format for space in _spaces.values() if space.genotype_format]
        raise UserError(
            f"cannot read an architecture from {s[:80]!r}: give " + ", ".join(formats + ["or genotype JSON"])
        )

    def __str__(self) -> str:
        """The text form its space writes (``ValueError`` for an unknown space)."""
        return _space(self.space).format_genotype(self)


def disconnected_warning(geno: Genotype) -> str:
    """One warning line naming ``geno``'s disconnected cells ("" when there are none)."""
    cells = geno.disconnected_cells()
    if not cells:
        return ""
    return (
        f"warning: the {' and '.join(cells)} cell ignores its input (every path from the input to the "
        "output has a none edge), so the network gives the same output for every image; search longer "
        "or train another architecture"
    )


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
