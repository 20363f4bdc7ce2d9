"""The one-path Gumbel supernet: architecture parameters and sampling.

A supernet holds one logit tensor ``[edges, ops]`` per cell type (shared by all
cells of that type). Each edge of each cell is a :class:`nas.OpChoice` labelled
:func:`edge_label` (``"normal:2<-1"``): the cells of one type share its rows.
Before every forward the supernet draws one :class:`nas.choice.RowPlan` per
edge, and each choice does what its plan says. The choice of op is relaxed in
one of three ways, set per supernet:

* ``gdas`` (default): one hard Gumbel-softmax sample per edge and forward.
  Only the chosen op runs, forward and backward. Its output is scaled by the
  straight-through weight of the chosen entry, which is exactly 1 going forward
  and carries the soft sample's gradient to every logit of the edge.
* ``snas``: soft Gumbel-softmax weights over all ops.
* ``darts``: plain softmax weights over all ops.

``none`` is a structural zero in every mode: it contributes exactly zero and
receives exactly zero gradient, so it is never computed. A node whose inputs are
all structural zeros is itself a structural zero, and ops reading it are skipped
(the discrete network built by :func:`nas.build_network`, the same cell class
with one op per edge, does the same, so forcing an architecture gives the
discrete network's output exactly).

Cost: the sample of every cell type is drawn at once and the chosen indices
reach the host in one transfer per forward; there is no other host-device
synchronisation and no per-edge tensor work beyond running the chosen op.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .choice import DrawState, OpChoice, RowPlan
from .genotype import Genotype
from .sampler import ESTIMATORS, gumbel_max, gumbel_softmax

MODES = ("gdas", "snas", "darts")


def edge_label(cell: str, to: int, source: int) -> str:
    """The label of a built-in space's edge choice: ``"normal:2<-1"`` (cell type, node <- node)."""
    return f"{cell}:{to}<-{source}"


_OLD_EDGE_KEY = re.compile(r"(^|\.)edges\.(\d+)\.(\d+)\.")


def upgrade_edge_keys(state_dict: Dict[str, torch.Tensor], prefix: str, ops: Sequence[str]) -> None:
    """Rename, in place, a built-in supernet's keys from the layout before its edges were
    :class:`nas.OpChoice` (``edges.<e>.<op index>.``) to ``edges.<e>.candidates.<op name>.``,
    so that checkpoints written then still load and resume."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = _OLD_EDGE_KEY.sub(lambda m: f"{m.group(1)}edges.{m.group(2)}.candidates.{ops[int(m.group(3))]}.", key)
        if new != key:
            state_dict[new] = state_dict.pop(key)


class Supernet(nn.Module):
    """Base class: architecture logits, sampling, derivation hooks.

    Subclasses build the network and implement ``forward`` and ``genotype``.
    """

    # The subclass that wraps any model (nas.model_supernet.ModelSupernet) names itself here when
    # it is defined, so that from_model does not import the module that builds on this one.
    _model_wrapper: Optional[type] = None

    def __init_subclass__(cls, wraps_models: bool = False, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if wraps_models:
            Supernet._model_wrapper = cls

    space: str = ""

    def __init__(self, mode: str, ops: Sequence[str], edges_per_cell: Dict[str, int], tau: float = 1.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
        self.mode = mode
        self.ops = tuple(ops)
        # GDAS initialises the logits with small noise: near-uniform, yet not tied.
        self.arch = nn.ParameterDict(
            {
                cell: nn.Parameter(1e-3 * torch.randn(num_edges, len(self.ops)))
                for cell, num_edges in edges_per_cell.items()
            }
        )
        # Which ops each edge may still choose (progressive pruning clears entries). A buffer,
        # so checkpoints carry it and a resumed search keeps what it pruned.
        for cell, num_edges in edges_per_cell.items():
            self.register_buffer(f"alive_{cell}", torch.ones(num_edges, len(self.ops), dtype=torch.bool))
        # Whether nothing is pruned, per cell type, kept on the host (None: recompute once).
        self._alive_cache: Optional[Dict[str, bool]] = {cell: True for cell in edges_per_cell}
        self._alive_rows_cache: Optional[Dict[str, List[List[bool]]]] = None
        self.tau = tau
        # The hard sample's backward (gdas mode): nas.sampler.ESTIMATORS, and Gumbel-Rao's draws.
        self._estimator = "st"
        self.estimator_samples: Optional[int] = None
        self._forced: Optional[Dict[str, List[int]]] = None
        self._uniform_paths = False
        self.last_sample: Optional[Dict[str, List[str]]] = None
        # The last gdas draw from the logits: per cell type, the chosen op index of each edge (on the
        # logits' device), for the score-function estimator; None after a forced or soft forward.
        self.last_index: Optional[Dict[str, torch.Tensor]] = None
        # This forward's plans, one per logit row, read by the choices bound to the rows (a plain
        # object: neither a submodule nor in the state dict).
        self._draw_state = DrawState()

    def bind_edges(self, module: nn.Module, edges: Dict[str, Sequence[Sequence[int]]]) -> None:
        """Bind every :class:`nas.OpChoice` in ``module`` to its logit row, for a space's supernet.

        ``edges`` gives per cell type its ``(to, from)`` pairs in row order; each choice's label
        must name one of them (:func:`edge_label`). Choices of several cells with one label
        share that row.
        """
        offset, start = {}, 0  # the draw's rows run over the cell types in the logits' order
        for cell, a in self.arch.items():
            offset[cell], start = start, start + a.shape[0]
        rows = {}
        for cell, pairs in edges.items():
            if cell not in self.arch or len(pairs) != self.arch[cell].shape[0]:
                raise ValueError(f"cell type {cell!r} has no logits with {len(pairs)} rows in this supernet")
            for e, (to, source) in enumerate(pairs):
                rows[edge_label(cell, to, source)] = offset[cell] + e
        for m in module.modules():
            if isinstance(m, OpChoice):
                if m.label not in rows or m.names != self.ops:
                    raise ValueError(
                        f"choice {m.label!r} with candidates {list(m.names)} is not an edge of this supernet: "
                        f"label it edge_label(cell, to, from) over the supernet's ops {list(self.ops)}"
                    )
                m._row, m._draw = rows[m.label], self._draw_state

    @contextlib.contextmanager
    def draw(self) -> Iterator[None]:
        """A space supernet's forward runs its network inside this: every bound choice gets this
        forward's plan (one draw for all, :meth:`_draw_rows`), cleared when the forward ends."""
        self._draw_state.rows = self._draw_rows()
        try:
            yield
        finally:
            self._draw_state.rows = None

    @classmethod
    def from_model(cls, model: nn.Module, mode: str = "gdas", tau: float = 1.0) -> "Supernet":
        """Any ``nn.Module`` holding :class:`nas.OpChoice` / :class:`nas.InputChoice` as a supernet
        (:class:`nas.model_supernet.ModelSupernet`): it owns the choices' logits and draws them.

        Example:
            >>> import torch, nas
            >>> from torch import nn
            >>> model = nn.Sequential(nas.OpChoice({"lin": nn.Linear(4, 4), "skip": nn.Identity()}))
            >>> net = nas.Supernet.from_model(model, mode="gdas")
            >>> sorted(net.export())  # {label: the most probable candidate}; unlabelled: the choice's path
            ['0']
        """
        assert Supernet._model_wrapper is not None, "nas.model_supernet is imported with the nas package"
        return Supernet._model_wrapper(model, mode=mode, tau=tau)

    # ---- parameters -------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture logits, one ``[edges, ops]`` tensor per cell type."""
        return list(self.arch.values())

    def named_weight_parameters(self) -> Iterator:
        for name, p in self.named_parameters():
            if not name.startswith("arch."):
                yield name, p

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter that is not an architecture logit."""
        return [p for _, p in self.named_weight_parameters()]

    @property
    def tau(self) -> float:
        """Gumbel-softmax temperature used by gdas and snas modes."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        value = float(value)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"tau must be a finite number > 0, got {value}")
        self._tau = value

    @property
    def estimator(self) -> str:
        """The hard sample's backward in gdas mode, one of :data:`nas.sampler.ESTIMATORS`."""
        # A whole supernet pickled before this was a property holds it as a plain attribute.
        return self.__dict__.get("_estimator", self.__dict__.get("estimator", "st"))

    @estimator.setter
    def estimator(self, value: str) -> None:
        if value not in ESTIMATORS:  # a search's rloo and local take no gradient through the draw
            raise ValueError(f"unknown estimator {value!r}; choose one of {', '.join(ESTIMATORS)}")
        self._estimator = value

    def alive(self, cell: str) -> torch.Tensor:
        """``[edges, ops]`` bool: the ops each edge of ``cell`` may still choose."""
        return getattr(self, f"alive_{cell}")

    def logits(self, cell: str) -> torch.Tensor:
        """The logits of ``cell`` with pruned ops at -inf (probability exactly 0)."""
        a = self.arch[cell]
        if self._all_alive[cell]:
            return a
        return a.masked_fill(~self.alive(cell), float("-inf"))

    @property
    def _all_alive(self) -> Dict[str, bool]:
        # Cached on the host: checking the mask on the device every forward would be a sync.
        if self._alive_cache is None:
            self._refresh_alive_cache()
        return self._alive_cache

    @property
    def _alive_rows(self) -> Dict[str, List[List[bool]]]:
        """The masks as host lists, refreshed with :attr:`_all_alive` (so no sync per forward)."""
        if self._alive_cache is None or self._alive_rows_cache is None:
            self._refresh_alive_cache()
        return self._alive_rows_cache

    def _refresh_alive_cache(self) -> None:
        self._alive_cache = {cell: bool(self.alive(cell).all()) for cell in self.arch}
        self._alive_rows_cache = {cell: self.alive(cell).tolist() for cell in self.arch}

    def prune_weakest(
        self, keep_none: bool = True, scores: Optional[Dict[str, torch.Tensor]] = None
    ) -> Dict[str, List[str]]:
        """On every edge with more than one op left, remove the op with the lowest score.

        ``scores`` (per cell type, ``[edges, ops]``, higher is better) defaults to the op
        probabilities; :func:`nas.selection.edge_op_losses` gives measured ones (negate them).
        With ``keep_none`` false, ``none`` goes first when only it and one other op are left,
        so the survivor is never ``none`` (the none-excluded derivation rule). Returns the
        removed op per edge, per cell type.
        """
        removed = {}
        probs = self.probabilities() if scores is None else scores
        for cell, p in probs.items():
            # Read entry by entry: one copy to the host, not a device sync per entry.
            p, alive_host = p.detach().cpu(), self.alive(cell).cpu()
            alive = self.alive(cell)
            names = []
            for e in range(p.shape[0]):
                left = alive_host[e].nonzero().flatten().tolist()
                if len(left) <= 1:
                    names.append("")
                    continue
                if not keep_none and len(left) == 2 and "none" in self.ops and self.ops.index("none") in left:
                    k = self.ops.index("none")
                else:
                    k = min(left, key=lambda j: float(p[e, j]))
                alive[e, k] = False
                names.append(self.ops[k])
            removed[cell] = names
        self._alive_cache = None
        return removed

    def num_alive(self) -> int:
        """The most ops any edge can still choose (1: the architecture is decided)."""
        return max(int(self.alive(c).sum(dim=-1).max()) for c in self.arch)

    def _unpruned(self, cell: str) -> torch.Tensor:
        """The mask of a supernet nothing was pruned from (every op alive)."""
        return torch.ones_like(self.alive(cell))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._alive_cache = None
        for cell in self.arch:  # checkpoints from before pruning existed: nothing was pruned
            state_dict.setdefault(f"{prefix}alive_{cell}", self._unpruned(cell))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def probabilities(self) -> Dict[str, torch.Tensor]:
        """softmax of the logits per cell type (pruned ops at 0), detached."""
        return {cell: torch.softmax(self.logits(cell).detach().float(), dim=-1) for cell in self.arch}

    def _scores(self, scores: Optional[Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """What :meth:`genotype` derives from: ``scores`` (one (edges, ops) tensor per cell type,
        checked, as a short row list would derive a short cell), or the probabilities."""
        if scores is None:
            return self.probabilities()
        if not isinstance(scores, Mapping) or set(scores) != set(self.arch):
            raise ValueError(f"scores must map each cell type {sorted(self.arch)} to an (edges, ops) tensor")
        for cell, a in self.arch.items():
            if tuple(getattr(scores[cell], "shape", ())) != tuple(a.shape):
                raise ValueError(
                    f"scores[{cell!r}] must have shape {tuple(a.shape)} (edges, ops), "
                    f"got {tuple(getattr(scores[cell], 'shape', ()))}"
                )
        return dict(scores)

    # ---- forcing an architecture -------------------------------------------
    def force(self, arch: Union[Genotype, Dict[str, Sequence[Union[int, str]]], None]) -> None:
        """Run every forward with this architecture (no sampling, no arch gradient).

        ``arch`` is a Genotype of this space (or its string form), or per cell type a list of op
        indices or names, one per edge; ``None`` returns to sampling.
        """
        if arch is None:
            self._forced = None
            return
        if isinstance(arch, str):  # a cell's string form
            arch = Genotype.parse(arch)
        if isinstance(arch, Genotype):
            arch = self.choices_from_genotype(arch)
        forced = {}
        for cell, a in self.arch.items():
            if cell not in arch:
                raise ValueError(f"forced architecture lacks cell type {cell!r}")
            unknown = [c for c in arch[cell] if isinstance(c, str) and c not in self.ops]
            if unknown:
                raise ValueError(
                    f"forced architecture for {cell!r} names op(s) {sorted(set(unknown))} this supernet lacks; its ops: {list(self.ops)}"
                )
            row = [self.ops.index(c) if isinstance(c, str) else int(c) for c in arch[cell]]
            if len(row) != a.shape[0] or not all(0 <= k < len(self.ops) for k in row):
                raise ValueError(
                    f"forced architecture for {cell!r} needs {a.shape[0]} op indices in 0..{len(self.ops) - 1}"
                )
            forced[cell] = row
        self._forced = forced

    @contextlib.contextmanager
    def forced(self, arch) -> Iterator[None]:
        """Context manager form of :meth:`force`."""
        previous = self._forced
        self.force(arch)
        try:
            yield
        finally:
            self._forced = previous

    def choices_from_genotype(self, geno: Genotype) -> Dict[str, List[int]]:
        raise NotImplementedError

    @contextlib.contextmanager
    def uniform_paths(self, enabled: bool = True) -> Iterator[None]:
        """gdas mode: forwards with frozen logits (a weight step) draw each edge's op uniformly
        from the ops still alive there, whatever the logits say. Forwards that need the logits'
        gradient (an architecture step) still sample from the logits."""
        previous = self._uniform_paths
        self._uniform_paths = enabled
        try:
            yield
        finally:
            self._uniform_paths = previous

    # ---- sampling -----------------------------------------------------------
    def _draw_rows(self) -> List[RowPlan]:
        """Draw this forward's architecture: one plan per logit row, cell types in order."""
        cells = list(self.arch.keys())
        if self._forced is not None:
            self.last_sample = {c: [self.ops[k] for k in self._forced[c]] for c in cells}
            self.last_index = None
            return [RowPlan([k], None) for c in cells for k in self._forced[c]]
        logits = [self.logits(c) for c in cells]
        if self.mode == "gdas":
            need_grad = torch.is_grad_enabled() and logits[0].requires_grad
            if need_grad:
                hard = [
                    gumbel_softmax(a, tau=self.tau, hard=True, estimator=self.estimator, samples=self.estimator_samples)
                    for a in logits
                ]
                index = [h.argmax(dim=-1) for h in hard]
            else:
                # Frozen logits (the weight step): only the indices are needed. gumbel_max
                # draws the same noise and returns the same index as the hard sample's argmax,
                # without building the straight-through one-hot (half the small kernels).
                hard = [None] * len(logits)
                if self._uniform_paths:  # equal logits on the alive ops: a uniform draw among them
                    logits = [torch.zeros_like(a).masked_fill(a == float("-inf"), float("-inf")) for a in logits]
                index = [gumbel_max(a) for a in logits]
            flat = torch.cat(index).tolist()  # the one host-device transfer of the forward
            rows: List[RowPlan] = []
            sample, start = {}, 0
            for c, h, idx in zip(cells, hard, index):
                choices = flat[start : start + len(idx)]
                start += len(idx)
                if need_grad:  # the chosen entry of each edge's straight-through one-hot (1.0 forward)
                    weights = h.gather(1, idx[:, None]).squeeze(1).unbind(0)
                    rows.extend(RowPlan([k], (w,)) for k, w in zip(choices, weights))
                else:
                    rows.extend(RowPlan([k], None) for k in choices)
                sample[c] = [self.ops[k] for k in choices]
            self.last_sample = sample
            self.last_index = None if self._uniform_paths and not need_grad else dict(zip(cells, index))
            return rows
        rows = []
        for c, a in zip(cells, logits):
            w = gumbel_softmax(a, tau=self.tau, hard=False) if self.mode == "snas" else torch.softmax(a, dim=-1)
            alive = None if self._all_alive[c] else self._alive_rows[c]
            rows.extend(
                RowPlan(None, row.unbind(0), None if alive is None else alive[e]) for e, row in enumerate(w.unbind(0))
            )
        self.last_sample = None
        self.last_index = None
        return rows

    def mode_rows(self) -> Dict[str, List[int]]:
        """Per cell type, each edge's most probable op still alive (ties: the first)."""
        return {cell: self.logits(cell).detach().argmax(dim=-1).tolist() for cell in self.arch}

    def arch_of_rows(self, rows: Dict[str, List[int]]) -> Dict[str, List[int]]:
        """What :meth:`force` takes for one op index per row of each cell type's logits."""
        return rows

    def rows_of(self, geno: Genotype) -> Dict[str, List[int]]:
        """Per cell type, the op index of each row of a derived genotype: :meth:`arch_of_rows`'s inverse."""
        return self.choices_from_genotype(geno)

    def draw_log_probability(self) -> torch.Tensor:
        """``log p`` of the last forward's draw under ``softmax(logits)``, differentiable in the logits.

        Gumbel-max samples exactly from that distribution whatever ``tau``, so ``(L - b) *
        grad log p`` is the score-function (REINFORCE) estimate of the loss's gradient; edges with
        one op left add 0. gdas mode, after a forward that sampled from the logits (not a forced
        or uniform one); ValueError otherwise.
        """
        if self.last_index is None:
            raise ValueError(
                "no draw from the logits to score: the last forward was forced, uniform, in a soft mode, or "
                "drew several candidates of one choice; the score-function estimator needs a gdas draw of one op"
            )
        total = None
        for cell, idx in self.last_index.items():
            logp = torch.log_softmax(self.logits(cell).float(), dim=-1).gather(1, idx[:, None]).sum()
            total = logp if total is None else total + logp
        assert total is not None
        return total

    def probability_record(self) -> Dict[str, object]:
        """What ``arch_probs.jsonl`` logs per epoch: the op names and each cell type's probabilities."""
        return {"ops": list(self.ops), "probs": {c: p.tolist() for c, p in self.probabilities().items()}}

    def sample_architecture(self) -> Optional[Dict[str, List[str]]]:
        """Draw one architecture exactly as a forward does (same noise, same one host transfer)
        without running the network; returns the op names per edge and cell type (gdas or forced;
        ``None`` in the soft modes). Benchmarks time it; every forward draws its own."""
        self._draw_rows()
        return self.last_sample

    def sampled_architecture(self) -> Optional[Dict[str, List[str]]]:
        """Op names per edge and cell type chosen by the last forward (gdas or forced)."""
        return self.last_sample

    def genotype(self, scores: Optional[Dict[str, torch.Tensor]] = None) -> Genotype:
        """The derived architecture: per edge the op ranked highest by ``scores`` (per cell type,
        ``[edges, ops]``, higher is better, ``-inf`` never chosen; default: the probabilities)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"space={self.space}, mode={self.mode}, tau={self.tau:g}, ops={list(self.ops)}"
