"""The search-space registry and the public builders.

A search space is one object, an instance of a :class:`SearchSpace` subclass, that carries
everything specific to the space: its edge order, default ops and derivation rule, its
genotype text format, checks and drawing, and how to build its supernet and its discrete
network. Each built-in space is one module and one registration (``nas/nb201.py``,
``nas/darts.py``); another space is added the same way, without touching this module::

    @nas.register_space
    class ChainSpace(nas.SearchSpace):
        name = "chain"
        ...

    net = nas.build_supernet("chain", C=8, N=2)

Nothing here is specific to a space: code that needs a space's behaviour asks
``get_space(name)`` for it instead of comparing names.
"""

from __future__ import annotations

import collections.abc
import contextlib
import numbers
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Type, TypeVar, Union

from .errors import UserError
from .genotype import bind_spaces

if TYPE_CHECKING:  # for annotations only
    from torch import nn

    from .genotype import Genotype
    from .supernet import Supernet

__all__ = [
    "SearchSpace",
    "register_space",
    "unregister_space",
    "registered_space",
    "get_space",
    "space_names",
    "SPACES",
    "build_supernet",
    "build_network",
]


class SearchSpace:
    """Everything specific to one search space; subclass it and register an instance.

    Required: ``name``, ``default_ops``, :meth:`edges`, :meth:`format_genotype`,
    :meth:`build_supernet` and :meth:`build_network`. The other members have defaults
    that fit a space with one cell type whose cells keep every edge of :meth:`edges`,
    in that order, reading one input node (the smallest source) and ending in the last node.

    A genotype's edges are ``(op, from_node)`` pairs per cell type, see :class:`nas.Genotype`.
    """

    #: The registry key, and :attr:`nas.Genotype.space` of the space's genotypes.
    name: str = ""
    #: The candidate ops a supernet gets when none are given.
    default_ops: Tuple[str, ...] = ()
    #: Whether ``none`` may win an edge at derivation when ``supernet.derive_none`` is unset.
    default_derive_none: bool = False
    #: Whether the discrete network has an auxiliary head and drop-path (retraining options).
    supports_auxiliary: bool = False
    #: The cell types of its genotypes (and the keys of its supernet's logits).
    cell_types: Tuple[str, ...] = ("normal",)
    #: How its genotype text reads, for the error of :meth:`nas.Genotype.parse` ("" if it has none).
    genotype_format: str = ""
    #: The fewest cells (``supernet.N``) its macro-architecture can be built with.
    min_cells: int = 1
    #: Whether a derived cell keeps one op on every edge of :meth:`edges` (so its cost is the sum
    #: of one candidate per logit row, what ``search.cost.form: budget`` derives within); DARTS keeps two per node.
    keeps_every_edge: bool = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # ---- derivation rule ---------------------------------------------------
    def check_derive_none(self, derive_none: Optional[bool]) -> None:
        """Refuse a ``supernet.derive_none`` value the space has no rule for (``ValueError``).

        The default accepts both rules; ``None`` (the space's own rule) is always accepted.
        """

    def resolve_derive_none(self, derive_none: Optional[bool]) -> bool:
        """The derivation rule ``derive_none`` asks for, after :meth:`check_derive_none`."""
        self.check_derive_none(derive_none)
        return self.default_derive_none if derive_none is None else bool(derive_none)

    # ---- edges -------------------------------------------------------------
    def edges(self) -> List[Tuple[int, int]]:
        """Every ``(to, from)`` pair of a supernet cell, in the space's edge order (logit rows)."""
        raise NotImplementedError

    def edge_names(self) -> List[str]:
        """``"to<-from"`` per edge of :meth:`edges`, as reports label them."""
        return [f"{i}<-{j}" for i, j in self.edges()]

    # ---- genotypes ---------------------------------------------------------
    def parse_genotype(self, text: str) -> Optional["Genotype"]:
        """The genotype ``text`` writes in this space's format; ``None`` when ``text`` is not in it.

        Text in the format but malformed raises :class:`nas.UserError` naming the fix.
        """
        return None

    def recognizes(self, text: str) -> bool:
        """Whether ``text`` is written in this space's format, well formed or not (cheap; for
        telling an architecture string from a file name). Default: :meth:`parse_genotype` succeeds or fails."""
        try:
            return self.parse_genotype(text) is not None
        except UserError:
            return True

    def format_genotype(self, geno: "Genotype") -> str:
        """The text form of ``geno`` (``str(geno)``), which :meth:`parse_genotype` reads back."""
        raise NotImplementedError

    def validate_genotype(self, geno: "Genotype") -> None:
        """Raise :class:`nas.UserError` unless ``geno`` is wired as a cell of this space can be."""
        cells = geno.cells()
        if sorted(cells) != sorted(self.cell_types):
            raise UserError(f"a {self.name} genotype has the cell types {list(self.cell_types)}, got {sorted(cells)}")
        sources = [j for _, j in self.edges()]
        for cell, edges in cells.items():
            if [j for _, j in edges] != sources:
                raise UserError(
                    f"{self.name} genotype edges must read nodes {sources} in order; "
                    f"got {[j for _, j in edges]} in the {cell} cell"
                )

    def edge_targets(self, geno: "Genotype", cell: str) -> List[int]:
        """The node each kept edge of ``geno``'s ``cell`` feeds, parallel to ``geno.cells()[cell]``."""
        return [i for i, _ in self.edges()][: len(geno.cells()[cell])]

    def input_nodes(self, geno: "Genotype", cell: str) -> Set[int]:
        """The nodes of ``cell`` that hold the cell's input(s)."""
        return {min((j for _, j in self.edges()), default=0)}

    def output_nodes(self, geno: "Genotype", cell: str) -> List[int]:
        """The nodes of ``cell`` its output is made of (a cell ignores its input unless one is reached)."""
        targets = self.edge_targets(geno, cell)
        return [max(targets)] if targets else []

    def log_text(self, geno: "Genotype") -> str:
        """What a search's per-epoch log line shows of ``geno`` (long forms may name the file instead)."""
        return self.format_genotype(geno)

    # ---- drawing -----------------------------------------------------------
    def dot_nodes(self, geno: "Genotype", cell: str) -> List[Tuple[str, str]]:
        """``(node id, label)`` of each node :meth:`to_dot` draws for ``cell``."""
        inputs, outputs = self.input_nodes(geno, cell), self.output_nodes(geno, cell)
        nodes = sorted(inputs | set(self.edge_targets(geno, cell)) | {j for _, j in geno.cells()[cell]})
        return [(str(n), "input" if n in inputs else "output" if n in outputs else f"node {n}") for n in nodes]

    def dot_edges(self, geno: "Genotype", cell: str) -> List[Tuple[str, str, Optional[str]]]:
        """``(from id, to id, label or None)`` of each arrow :meth:`to_dot` draws for ``cell``."""
        return [
            (str(src), str(dst), op)
            for (op, src), dst in zip(geno.cells()[cell], self.edge_targets(geno, cell))
            if op != "none"
        ]

    def to_dot(self, geno: "Genotype") -> str:
        """A Graphviz DOT drawing of ``geno``'s cell(s); ``none`` edges are left out."""
        out = ["digraph cells {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
        for cell in geno.cells():
            p = f"{cell}_"
            out.append(f"  subgraph cluster_{cell} {{")
            out.append(f'    label="{cell} cell";')
            out += [f'    {p}{n} [label="{label}"];' for n, label in self.dot_nodes(geno, cell)]
            for src, dst, label in self.dot_edges(geno, cell):
                out.append(
                    f'    {p}{src} -> {p}{dst} [label="{label}"];'
                    if label is not None
                    else f"    {p}{src} -> {p}{dst};"
                )
            out.append("  }")
        out.append("}")
        return "\n".join(out) + "\n"

    # ---- builders ----------------------------------------------------------
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
    ) -> "Supernet":
        """The space's supernet (a :class:`~nas.supernet.Supernet`, whose constructor checks ``mode``).
        :func:`build_supernet` has resolved ``ops`` and ``derive_none`` (a bool here) already."""
        raise NotImplementedError

    def build_network(
        self,
        geno: "Genotype",
        *,
        C: int,
        N: int,
        num_classes: int,
        auxiliary: bool,
        drop_path_prob: float,
        affine: bool,
    ) -> "nn.Module":
        """The discrete network of ``geno`` (a genotype of this space), for retraining."""
        raise NotImplementedError


# ---- the registry -------------------------------------------------------------
# The built-in spaces (nas/nb201.py, nas/darts.py) register themselves when the package loads
# them; the order of registration is the order names are listed in messages.
_REGISTRY: Dict[str, SearchSpace] = {}


SpaceT = TypeVar("SpaceT", bound=Union[SearchSpace, Type[SearchSpace]])


def register_space(space: SpaceT) -> SpaceT:
    """Register a search space under ``space.name``; returns its argument.

    ``space`` is a :class:`SearchSpace` instance, or a subclass (it may decorate the
    class), in which case an instance built with no arguments is registered. A name
    already registered is refused with ``ValueError``; :func:`unregister_space` frees it.
    """
    obj = space() if isinstance(space, type) else space
    if not isinstance(obj, SearchSpace):
        raise TypeError(f"register_space needs a SearchSpace instance or subclass, got {type(space).__name__}")
    if not isinstance(obj.name, str) or not obj.name:
        raise ValueError(f"{type(obj).__name__} needs a name (a non-empty str) to be registered")
    if obj.name in _REGISTRY:
        raise ValueError(
            f"space {obj.name!r} is already registered ({_REGISTRY[obj.name]!r}); "
            f"unregister_space({obj.name!r}) first or choose another name"
        )
    _REGISTRY[obj.name] = obj
    return space


def unregister_space(name: str) -> SearchSpace:
    """Remove the space registered as ``name`` and return it (``ValueError`` when there is none)."""
    if name not in _REGISTRY:
        raise ValueError(f"no space {name!r} is registered; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY.pop(name)


@contextlib.contextmanager
def registered_space(space: Union[SearchSpace, Type[SearchSpace]]) -> Iterator[SearchSpace]:
    """Register ``space`` for the ``with`` block only (tests, experiments); yields the instance."""
    obj = space() if isinstance(space, type) else space
    register_space(obj)
    try:
        yield obj
    finally:
        if _REGISTRY.get(obj.name) is obj:
            del _REGISTRY[obj.name]


def get_space(name: str) -> SearchSpace:
    """The space registered as ``name``; ``ValueError`` listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise ValueError(f"unknown space {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def space_names() -> List[str]:
    """The registered space names, built-ins first, in registration order."""
    return list(_REGISTRY)


class _RegistryView(collections.abc.Mapping):
    """A read-only live view of the registry."""

    def _get(self, space: SearchSpace):
        return space

    def __getitem__(self, name: str):
        return self._get(_REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        try:
            return name in _REGISTRY
        except TypeError:
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


#: Read-only mapping: space name -> registered :class:`SearchSpace`.
SPACES: Mapping[str, SearchSpace] = _RegistryView()
bind_spaces(SPACES)  # genotypes reach their space through this view (nas.genotype imports no registry)


# ---- public builders ------------------------------------------------------------
def build_supernet(
    space: str,
    mode: str = "gdas",
    *,
    C: int = 16,
    N: int = 5,
    num_classes: int = 10,
    ops: Optional[Sequence[str]] = None,
    affine: bool = False,
    tau: float = 10.0,
    derive_none: Optional[bool] = None,
) -> "Supernet":
    """A supernet of the registered space ``space`` ("nb201", "darts", ...).

    Args:
        mode: "gdas" (hard one-path Gumbel sample), "snas" (soft Gumbel) or "darts" (softmax).
        C: initial channels. N: cells per stage (nb201) or total cells (darts).
        ops: candidate op names (default: the space's standard list).
        affine: learn BN scale and shift in the cells' ops (searches usually do not).
        tau: initial Gumbel-softmax temperature; set ``net.tau`` as it anneals.
        derive_none: whether ``none`` may win an edge in :meth:`genotype`. ``None``: the
            space's rule (nb201: yes, as in GDAS; darts: no, as in DARTS). nb201 with
            ``False`` takes each edge's argmax over the other ops, DARTS's rule.

    Raises ``ValueError`` for an unknown space or mode, sizes that are not positive ints, and a
    ``derive_none`` the space refuses.

    Example::

        net = nas.build_supernet("nb201", mode="gdas", C=16, N=5, num_classes=10)
        logits = net(images)
        print(net.genotype())
    """
    sp = get_space(space)  # the mode is checked by the Supernet constructor
    for name, value in (("C", C), ("N", N), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(ops, str):  # a string is a sequence too: its letters would be read as op names
        raise ValueError(f"ops must be a list of op names, got the string {ops!r}; write [{ops!r}, ...]")
    return sp.build_supernet(
        mode=mode,
        C=C,
        N=N,
        num_classes=num_classes,
        ops=sp.default_ops if ops is None else ops,
        affine=affine,
        tau=tau,
        derive_none=sp.resolve_derive_none(derive_none),
    )


def build_network(
    geno: "Genotype",
    *,
    C: int = 16,
    N: int = 5,
    num_classes: int = 10,
    auxiliary: bool = False,
    drop_path_prob: float = 0.0,
    affine: bool = True,
) -> "nn.Module":
    """The standalone discrete network of ``geno``, for retraining (its space builds it).

    nb201: NAS-Bench-201's evaluation network (``N`` cells per stage).
    darts: DARTS's NetworkCIFAR with ``N`` cells, optional auxiliary head and drop-path.
    ``ValueError`` for an unknown space, or an auxiliary head or drop-path the space lacks.
    """
    if not hasattr(geno, "space"):
        raise TypeError(
            f"build_network takes a nas.Genotype, got {type(geno).__name__}; "
            "read a cell's string with nas.Genotype.parse(text)"
        )
    sp = get_space(geno.space)
    if (auxiliary or drop_path_prob) and not sp.supports_auxiliary:
        raise ValueError(f"the {sp.name} network has no auxiliary head or drop-path; unset them")
    return sp.build_network(
        geno, C=C, N=N, num_classes=num_classes, auxiliary=auxiliary, drop_path_prob=drop_path_prob, affine=affine
    )
