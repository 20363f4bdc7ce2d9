"""Hardware-aware search: the cost of every candidate, the expected cost of an architecture, and
the cost term of the architecture loss.

A **cost table** holds, for every choice of a supernet (an edge of a built-in space's cell type,
or a label of a custom model), the cost of each candidate at the input shape it sees there, summed
over every place the choice is used (an NB201 cell type's logits serve all 15 cells), plus the
**fixed** cost of what no choice decides (stem, reductions, head). Three metrics:

* ``flops``: multiply-adds per image, by the project's counter (:mod:`nas.flops`);
* ``params``: parameters;
* ``latency``: milliseconds per batch, from a table measured on the machine that will run the
  network (:func:`measure_latency`, ``python search.py measure-latency``).

The expected cost of the architecture the logits describe is differentiable in the logits::

    E[cost] = fixed + sum over choices sum_k p_k cost_k,    p = softmax(logits)

in every mode (gdas, snas, darts: the categorical distribution the logits define, not this
forward's sample), with pruned candidates at probability 0. It treats the choices as independent:
in the NB201 space an op reading a node all of whose inputs are ``none`` is skipped by the
network, which the expectation does not model; :func:`derived_cost`, the cost of one
architecture, runs it and counts what runs, so it is exact.

The cost term (``search.cost``), with CE the architecture step's cross-entropy, E the expected
cost, ``w`` the weight, ``ref`` the reference and ``B`` the budget:

* ``mul_log``:    CE * (log E / log ref) ** w   (FBNet, ProxylessNAS ``mul#log``; ``w`` is their beta)
* ``add_linear``: CE + w * (E - ref) / ref      (ProxylessNAS ``add#linear``; ``w`` is their lambda)
* ``budget``:     CE + w * max(0, E - B) / B    (a hinge: nothing below the budget)
* ``target``:     CE + w * |E - B| / B          (TuNAS's absolute-value reward, Bender et al., CVPR
  2020: pulled to the budget from both sides, so a search whose loss prefers cheap candidates
  still spends it)

FBNet and ProxylessNAS also multiply ``mul_log`` by an alpha (0.2): a constant factor on the whole
loss, which Adam's steps are invariant to, so it is left out.

Where the additive term is stepped (``search.cost.step``): ``adam`` adds it to the cross-entropy in
the logits' Adam step; ``direct`` leaves it out of Adam and, after Adam's step, moves the logits by
a plain gradient step on it, ``alpha -= lr * d term / d alpha`` (``lr`` the logits' learning rate).
Adam scales every logit's step to about ``lr`` whatever its gradient, so under a binding term a
1x1 convolution's logit falls as fast as a 3x3's; the direct step moves each candidate's logit in
proportion to ``p_k (cost_k - mean cost of its choice)``, and stops the moment the term does.

With the ``budget`` and ``target`` forms a search also derives within the budget (:func:`within_budget`): the most
probable architecture whose cost fits, not the per-choice argmax. A penalty on E lowers every
costly candidate's probability together, so the argmax alone lands far below the budget. With
progressive pruning, no event removes an op of that architecture, so the last event leaves it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import UserError
from .flops import count_parameters, counting_macs, inference, module_macs
from .io import atomic_write_text, read_json
from .runtime import program

METRICS = ("flops", "params", "latency")
FORMS = ("mul_log", "add_linear", "budget", "target")
BUDGET_FORMS = ("budget", "target")  # the forms with a budget B, and derivation within it
STEPS = ("adam", "direct")
UNITS = {"flops": "multiply-adds per image", "params": "parameters", "latency": "ms per batch"}
TABLE_FORMAT = "gumbel-nas latency table"
TABLE_VERSION = 1


# ---- where the choices are ------------------------------------------------------------------
@dataclass
class Site:
    """One place a choice is used: its logit row and its candidates (``None``: costs nothing, as
    ``none`` or an input of an :class:`nas.InputChoice`). ``calls`` holds the inputs it saw in the
    traced forward, one entry per call, as ``(shape, dtype)`` per tensor argument."""

    cell: str
    row: int
    candidates: List[Optional[nn.Module]]
    cacheable: bool  # built-in ops: equal reprs at equal shapes cost the same
    calls: List[Tuple[Any, ...]] = field(default_factory=list)
    name: str = ""


def _sites(net: nn.Module) -> List[Site]:
    """Every choice site of a supernet, in module order."""
    from .choice import OpChoice
    from .model_supernet import CELL, ModelSupernet

    custom = isinstance(net, ModelSupernet)
    # A built-in supernet's rows run over its cell types in order: row -> (cell type, edge).
    where = (
        [(CELL, r) for r in range(len(net.labels))]
        if custom
        else [(cell, e) for cell, a in net.arch.items() for e in range(a.shape[0])]
    )
    sites: List[Site] = []
    for name, m in (net.model if custom else net).named_modules():
        if isinstance(m, OpChoice) and m._row is not None:
            cands: List[Optional[nn.Module]] = [None if z else m.candidates[n] for n, z in zip(m.names, m._zero)]
            sites.append(Site(*where[m._row], cands, not custom, name=name))
    if not sites:
        raise ValueError(
            f"cannot find the choices of a {type(net).__name__}; cost tables know nb201, darts and custom models"
        )
    return sites


def _trace_arch(net: nn.Module) -> Any:
    """An architecture under which every choice runs: each edge's first op that is not ``none``,
    each label's first candidate(s)."""
    from .model_supernet import ModelSupernet

    if isinstance(net, ModelSupernet):
        return {
            label: list(net.candidates[label][:n]) if n > 1 else net.candidates[label][0]
            for label, n in zip(net.labels, net.n_chosen)
        }
    first = next(k for k, op in enumerate(net.ops) if op != "none")
    return {cell: [first] * a.shape[0] for cell, a in net.arch.items()}


def _spec(args: Sequence[Any]) -> Tuple[Any, ...]:
    """Tensor arguments as ``(shape, dtype)``; lists of tensors likewise; anything else as is."""

    def one(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return ("tensor", tuple(a.shape), a.dtype)
        if isinstance(a, (list, tuple)):
            return ("list", tuple(one(x) for x in a))
        return ("value", a)

    return tuple(one(a) for a in args)


def _zeros(
    spec: Tuple[Any, ...], device: torch.device, batch: Optional[int] = None, channels_last: bool = False
) -> List[Any]:
    """Inputs of ``spec``, as zeros (new tensors on each call: a candidate may work in place);
    4-d ones in channels-last memory format when asked, as such a network's activations are."""

    def one(s: Any) -> Any:
        if s[0] == "tensor":
            shape = s[1] if batch is None or not s[1] else (batch, *s[1][1:])
            t = torch.zeros(shape, dtype=s[2], device=device)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t
        if s[0] == "list":
            return [one(x) for x in s[1]]
        return s[1]

    return [one(s) for s in spec]


def _shape_text(spec: Tuple[Any, ...]) -> List[Any]:
    """A call's spec as JSON (shapes only)."""

    def one(s: Any) -> Any:
        if s[0] == "tensor":
            return list(s[1])
        if s[0] == "list":
            return [one(x) for x in s[1]]
        return repr(s[1])

    return [one(s) for s in spec]


@contextlib.contextmanager
def _forced(net: nn.Module, arch: Any) -> Iterator[None]:
    previous = net._forced
    net.force(arch)
    try:
        yield
    finally:
        net._forced = previous


def trace(
    net: nn.Module, input_size: Sequence[int], batch_size: int = 1, arch: Any = None
) -> Tuple[List[Site], Dict[nn.Module, int], List[nn.Module]]:
    """Run ``net`` once on a zero batch of ``batch_size`` at ``input_size`` with ``arch`` forced
    (default: one under which every choice runs), in eval mode without gradient.

    Returns the sites with the inputs each saw, the multiply-adds counted per layer, and the
    candidate modules that ran.

    Example:
        >>> import nas
        >>> net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
        >>> sites, counts, ran = trace(net, (3, 16, 16))
        >>> len(sites), sites[0].cell, sites[0].calls[0][0][1]  # 3 cells x 6 edges; the first edge's input
        (18, 'normal', (1, 4, 16, 16))
    """
    sites = _sites(net)
    ran: List[nn.Module] = []
    handles = []
    for site in sites:
        for cand in site.candidates:
            if cand is None:
                continue

            def pre_hook(module: nn.Module, args: Tuple[Any, ...], site: Site = site) -> None:
                site.calls.append(_spec(args))
                ran.append(module)

            handles.append(cand.register_forward_pre_hook(pre_hook))
    device = next(net.parameters()).device
    try:
        with _forced(net, arch if arch is not None else _trace_arch(net)), counting_macs(net) as counts, inference(net):
            net(torch.zeros(batch_size, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return sites, counts, ran


def _check_ran(sites: Sequence[Site]) -> None:
    missed = [s.name for s in sites if not s.calls and any(c is not None for c in s.candidates)]
    if missed:
        raise ValueError(
            f"choice(s) {missed[:3]} did not run in a forward of a zero batch, so their input shape is unknown; "
            "a cost table needs every choice to run in every forward"
        )


# ---- the table ------------------------------------------------------------------------------
@dataclass
class CostTable:
    """The cost of every candidate of every choice of one supernet, and of its fixed parts.

    ``costs[cell]`` is ``[rows, width]`` (float64): row ``r``, entry ``k`` is candidate ``k``'s cost
    summed over every site of that row (0 where it costs nothing or does not exist).
    ``site_costs`` holds each site's own costs (what :func:`derived_cost` adds up).

    Example:
        >>> import torch, nas
        >>> from torch import nn
        >>> model = nn.Sequential(nas.OpChoice({"wide": nn.Linear(4, 8), "narrow": nn.Linear(4, 2)}, label="fc"))
        >>> table = cost_table(nas.Supernet.from_model(model), "flops", input_size=(4,))
        >>> table.costs["choices"].tolist(), table.fixed
        ([[32.0, 8.0]], 0.0)
    """

    metric: str
    fixed: float
    costs: Dict[str, torch.Tensor]
    sites: List[Site]
    site_costs: List[List[float]]
    # The costs copied to the logits' device and dtype, once: a search computes E at every
    # architecture step, and a copy from the host each time would wait for the device each time.
    _placed: Dict[Tuple[str, torch.device, torch.dtype], torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _costs_like(self, cell: str, p: torch.Tensor) -> torch.Tensor:
        key = (cell, p.device, p.dtype)
        if key not in self._placed:
            self._placed[key] = self.costs[cell].to(device=p.device, dtype=p.dtype)
        return self._placed[key]

    def expected(self, logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``fixed + sum over cells of sum(softmax(logits) * costs)``, differentiable in ``logits``
        (a ``[rows, width]`` tensor per cell type; ``-inf`` entries have probability 0)."""
        total: Optional[torch.Tensor] = None
        for cell in self.costs:
            a = logits[cell]
            p = torch.softmax(a if a.dtype == torch.float64 else a.float(), dim=-1)
            term = (p * self._costs_like(cell, p)).sum()
            total = term if total is None else total + term
        assert total is not None
        return total + self.fixed

    def uniform(self, alive: Mapping[str, torch.Tensor], exclude: Optional[int] = None) -> float:
        """The expected cost when every candidate still alive (other than column ``exclude``, as
        :func:`expected_cost` leaves it out) is equally likely: the default reference."""
        logits = {
            cell: derivable_logits(
                torch.zeros(a.shape, dtype=torch.float64).masked_fill(~a.cpu(), float("-inf")), exclude
            )
            for cell, a in alive.items()
        }
        return float(self.expected(logits))

    def span(self, alive: Mapping[str, torch.Tensor], exclude: Optional[int] = None) -> Tuple[float, float]:
        """The cheapest and the dearest whole network: each row at its cheapest, then its dearest,
        candidate still alive (column ``exclude`` left out where the row has another)."""
        low = high = self.fixed
        for cell, c in self.costs.items():
            ok = alive[cell].cpu()
            if exclude is not None:
                keep = ok.clone()
                keep[:, exclude] = False
                ok = torch.where(keep.any(dim=1, keepdim=True), keep, ok)
            low += float(c.masked_fill(~ok, math.inf).min(dim=1).values.sum())
            high += float(c.masked_fill(~ok, -math.inf).max(dim=1).values.sum())
        return low, high

    def cheapest(self) -> Dict[str, List[int]]:
        """Per cell type and row, the index of the cheapest candidate (ties: the first)."""
        return {cell: c.argmin(dim=-1).tolist() for cell, c in self.costs.items()}


def cost_table(
    net: nn.Module,
    metric: str,
    input_size: Sequence[int],
    latency: Optional[Mapping[str, Any]] = None,
) -> CostTable:
    """The cost table of ``net`` for ``metric`` (``flops`` or ``params`` counted here; ``latency``
    read from a measured table, see :func:`load_latency_table`).

    ``input_size`` is one sample's shape (``(3, 32, 32)`` for CIFAR). Counting runs one forward at
    batch 1 on the device ``net`` is on, plus one small forward per candidate and input shape.

    Example:
        >>> import nas
        >>> net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
        >>> t = cost_table(net, "flops", (3, 16, 16))
        >>> t.costs["normal"].shape, t.costs["normal"][0].tolist()  # none, skip, 1x1, 3x3, avg pool at 3 stages
        (torch.Size([6, 5]), [0.0, 0.0, 12288.0, 110592.0, 0.0])
    """
    if metric not in METRICS:
        raise ValueError(f"unknown cost metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if metric == "latency":
        if latency is None:
            raise ValueError("the latency metric reads a measured table: pass latency=load_latency_table(...)")
        return _latency_cost_table(net, latency)
    sites, counts, ran = trace(net, input_size)
    _check_ran(sites)
    device = next(net.parameters()).device
    cache: Dict[Tuple[str, Any], float] = {}
    site_costs: List[List[float]] = []
    for site in sites:
        row = []
        for cand in site.candidates:
            if cand is None:
                row.append(0.0)
            elif metric == "params":
                row.append(float(count_parameters(cand)))
            else:
                total = 0.0
                for spec in site.calls:
                    key = (repr(cand), spec)
                    if not site.cacheable or key not in cache:
                        cache[key] = float(module_macs(cand, *_zeros(spec, device)))
                    total += cache[key]
                row.append(total)
        site_costs.append(row)
    if metric == "params":
        inside = {id(p) for s in sites for c in s.candidates if c is not None for p in c.parameters()}
        arch = {id(p) for p in net.arch_parameters()}
        fixed = float(sum(p.numel() for p in net.parameters() if id(p) not in inside and id(p) not in arch))
    else:
        chosen = sum(_macs_inside(m, counts) for m in _unique(ran))
        fixed = float(sum(counts.values()) - chosen)
    return _assemble(net, metric, fixed, sites, site_costs)


def _unique(modules: Sequence[nn.Module]) -> List[nn.Module]:
    seen, out = set(), []
    for m in modules:
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def _macs_inside(module: nn.Module, counts: Mapping[nn.Module, int]) -> int:
    return sum(counts.get(m, 0) for m in module.modules())


def _assemble(net: nn.Module, metric: str, fixed: float, sites: List[Site], site_costs: List[List[float]]) -> CostTable:
    costs = {cell: torch.zeros(a.shape, dtype=torch.float64) for cell, a in net.arch.items()}
    for site, row in zip(sites, site_costs):
        costs[site.cell][site.row, : len(row)] += torch.tensor(row, dtype=torch.float64)
    return CostTable(metric, fixed, costs, sites, site_costs)


def underivable(net: nn.Module) -> Optional[int]:
    """The column no derivation of ``net`` picks: ``none`` under DARTS's rule
    (``derive_none=False``), else ``None``."""
    ops = getattr(net, "ops", ())
    return ops.index("none") if not getattr(net, "derive_none", True) and "none" in ops else None


def derivable_logits(logits: torch.Tensor, exclude: Optional[int]) -> torch.Tensor:
    """``logits`` with column ``exclude`` at ``-inf`` on every row where another candidate is alive:
    their softmax is the distribution renormalised over what can be derived."""
    if exclude is None:
        return logits
    others = torch.isfinite(torch.cat([logits[:, :exclude], logits[:, exclude + 1 :]], dim=1)).any(dim=1)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[:, exclude] = others
    return logits.masked_fill(mask, float("-inf"))


def expected_cost(net: nn.Module, table: CostTable) -> torch.Tensor:
    """E[cost] of the architecture ``net``'s logits describe (pruned candidates excluded),
    differentiable in the logits. Under DARTS's rule (``derive_none=False``) ``none`` is never
    derived, so E is over the other candidates (the distribution renormalised without it): the
    expected cost of the network the search derives. Counting ``none`` at its probability would
    let a rising ``none`` lower E while the derived cell's cost stays where it was.

    Example:
        >>> import nas
        >>> net = nas.build_supernet("nb201", mode="darts", C=4, N=1, num_classes=10)
        >>> e = expected_cost(net, cost_table(net, "flops", (3, 16, 16)))
        >>> e.backward(); net.arch["normal"].grad.abs().sum() > 0
        tensor(True)
    """
    exclude = underivable(net)
    return table.expected({cell: derivable_logits(net.logits(cell), exclude) for cell in net.arch})


def derived_cost(net: nn.Module, table: CostTable, arch: Any, input_size: Sequence[int]) -> float:
    """The cost of one architecture (a genotype, or ``{label: name}`` for a custom model): the
    fixed part plus each candidate that runs when it is forced, so an NB201 op reading a node
    whose inputs are all ``none`` (which the network skips) costs nothing."""
    from .genotype import Genotype
    from .model_supernet import ModelSupernet

    if isinstance(arch, Genotype) and not isinstance(net, ModelSupernet):
        arch = net.choices_from_genotype(arch)
    elif hasattr(arch, "choices") and isinstance(net, ModelSupernet):
        arch = arch.choices
    sites, _, ran = trace(net, input_size, arch=arch)
    ran_ids = {id(m) for m in ran}
    total = table.fixed
    for site, row in zip(table.sites, table.site_costs):
        total += sum(c for cand, c in zip(site.candidates, row) if cand is not None and id(cand) in ran_ids)
    return float(total)


# ---- the loss ---------------------------------------------------------------------------------
def budget_window(budget: float, tolerance: Optional[float], form: str = "budget") -> Tuple[float, Optional[float]]:
    """``(cap, floor)``: the costs a derived network may have under ``search.cost.budget`` and
    ``tolerance`` (:func:`within_budget`'s ``budget`` and ``floor``). ``budget`` is a cap:
    ``[B (1 - tol), B]``; ``target`` is reached from either side, ``[B (1 - tol), B (1 + tol)]``,
    since a space's costs are discrete and the window below B may hold no network. Without a
    tolerance, anything up to B.

    Example:
        >>> budget_window(10.0, 0.1, "target")
        (11.0, 9.0)
    """
    if tolerance is None:
        return budget, None
    return (budget * (1 + tolerance) if form == "target" else budget), budget * (1 - tolerance)


def within_budget(
    probs: Mapping[str, torch.Tensor],
    table: CostTable,
    budget: float,
    exclude: Optional[int] = None,
    exact_limit: int = 200_000,
    floor: Optional[float] = None,
) -> Dict[str, torch.Tensor]:
    """Scores (per cell type, ``[rows, width]``: 0 on the chosen candidate, ``-inf`` elsewhere) of
    the most probable architecture whose cost, ``fixed + sum of the chosen candidates' costs``,
    fits ``budget``: argmax of ``sum log p`` subject to the cost, one candidate per row. With
    ``floor``, the cost must also be at least ``floor`` (``search.cost.tolerance``: a network that
    spends its budget); when no architecture lies in that window, the budget alone applies.

    Why: an expected-cost penalty lowers every costly candidate's probability together, so the
    per-row argmax lands far below the budget; the budget is a constraint on the derived network.
    Candidates at probability 0 (pruned) and column ``exclude`` (``none`` under DARTS's rule) are
    never chosen. Exact when the rows' combinations number at most ``exact_limit`` (NB201's cell:
    5^6); otherwise by Lagrangian relaxation (argmax of ``log p - lam * cost`` per row, ``lam``
    bisected to the smallest that fits), exact for the cost it reaches; below a floor, ``lam < 0``
    up to the window, then single rows moved to dearer candidates (greedy) where the path steps
    over it. When nothing fits, every row takes its cheapest candidate.

    Example:
        >>> import torch
        >>> t = CostTable("flops", 1.0, {"c": torch.tensor([[0.0, 5.0], [0.0, 5.0]], dtype=torch.float64)}, [], [])
        >>> p = {"c": torch.tensor([[0.2, 0.8], [0.4, 0.6]])}
        >>> within_budget(p, t, budget=7.0)["c"].argmax(dim=1).tolist()  # room for one 5: the surer row
        [1, 0]
    """
    rows: List[Tuple[str, int, List[int], List[float], List[float]]] = []
    for cell, pc in probs.items():
        c = table.costs[cell]
        for r, (prow, crow) in enumerate(zip(pc.double().cpu().tolist(), c.tolist())):
            cands = [k for k, q in enumerate(prow) if q > 0 and k != exclude] or [
                k for k, q in enumerate(prow) if q > 0
            ]
            rows.append((cell, r, cands, [math.log(prow[k]) for k in cands], [crow[k] for k in cands]))
    room = budget - table.fixed
    least = -math.inf if floor is None else floor - table.fixed
    n = math.prod(len(r[2]) for r in rows)
    if n <= exact_limit:
        logp = _every_sum([r[3] for r in rows])
        cost = _every_sum([r[4] for r in rows])
        fits = cost <= room * (1 + 1e-12)
        window = fits & (cost >= least - 1e-12 * abs(least))
        if bool(window.any()):
            fits = window
        if bool(fits.any()):
            best = int(torch.where(fits, logp, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
            picks = _unflatten(best, [len(r[2]) for r in rows])
        else:
            picks = [min(range(len(cs)), key=cs.__getitem__) for _, _, _, _, cs in rows]
    else:

        def pick(lam: float) -> Tuple[List[int], float]:
            ks = [max(range(len(cs)), key=lambda k: (lp[k] - lam * cs[k], -k)) for _, _, _, lp, cs in rows]
            return ks, sum(r[4][k] for r, k in zip(rows, ks))

        picks, used = pick(0.0)
        if used > room:
            lo, hi = 0.0, 1e-12
            while pick(hi)[1] > room and hi < 1e30:
                lo, hi = hi, hi * 2
            for _ in range(100):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if pick(mid)[1] > room else (lo, mid)
            picks, used = pick(hi)
            if used > room:
                picks = [min(range(len(cs)), key=cs.__getitem__) for _, _, _, _, cs in rows]
        elif used < least:  # below the window: the least negative lam whose pick reaches it
            lo, hi = -1e-12, 0.0
            while pick(lo)[1] < least and lo > -1e30:
                lo, hi = lo * 2, lo
            if pick(lo)[1] >= least:
                for _ in range(100):
                    mid = (lo + hi) / 2
                    lo, hi = (lo, mid) if pick(mid)[1] < least else (mid, hi)
                (up, c_up), (below, c_below) = pick(lo), pick(hi)
                picks, used = (up, c_up) if c_up <= room else (below, c_below)
                # The path can step over the window (several rows switch at one lam): from below
                # it, move one row at a time to a dearer candidate, the least log-probability lost
                # per unit of cost first, while the budget holds.
                while used < least:
                    moves = [
                        ((lp[picks[r]] - lp[k]) / (cs[k] - cs[picks[r]]), r, k)
                        for r, (_, _, _, lp, cs) in enumerate(rows)
                        for k in range(len(cs))
                        if cs[picks[r]] < cs[k] <= cs[picks[r]] + room - used
                    ]
                    if not moves:
                        break
                    _, r, k = min(moves)
                    used += rows[r][4][k] - rows[r][4][picks[r]]
                    picks[r] = k
    out = {cell: torch.full(pc.shape, -math.inf) for cell, pc in probs.items()}
    for (cell, r, cands, _, _), k in zip(rows, picks):
        out[cell][r, cands[k]] = 0.0
    return out


def _every_sum(values: Sequence[Sequence[float]]) -> torch.Tensor:
    """For every combination of one value per row (rows in order, the last varying fastest), their sum."""
    total = torch.zeros(1, dtype=torch.float64)
    for row in values:
        total = (total[:, None] + torch.tensor(row, dtype=torch.float64)).flatten()
    return total


def _unflatten(index: int, sizes: Sequence[int]) -> List[int]:
    """The per-row picks of combination ``index`` in :func:`_every_sum`'s order."""
    picks = []
    for size in reversed(sizes):
        index, k = divmod(index, size)
        picks.append(k)
    return picks[::-1]


def architectures_within(
    table: CostTable,
    candidates: Mapping[str, Sequence[Sequence[int]]],
    cap: float,
    floor: Optional[float] = None,
    limit: int = 2000,
) -> List[Dict[str, List[int]]]:
    """Every architecture, one of ``candidates[cell][row]`` per row, whose cost
    (``fixed + the chosen candidates' costs``) lies in ``[floor, cap]``: per cell type, the
    candidate index of each row, in :func:`_every_sum`'s order. ValueError when more than ``limit``
    fit, or when the combinations are too many to enumerate.

    Example:
        >>> import torch
        >>> t = CostTable("flops", 1.0, {"c": torch.tensor([[0.0, 5.0], [0.0, 5.0]], dtype=torch.float64)}, [], [])
        >>> architectures_within(t, {"c": [[0, 1], [0, 1]]}, cap=7.0, floor=5.0)  # one 5 fits
        [{'c': [0, 1]}, {'c': [1, 0]}]
    """
    rows = [(cell, r, list(cands)) for cell, per_row in candidates.items() for r, cands in enumerate(per_row)]
    sizes = [len(cands) for _, _, cands in rows]
    if math.prod(sizes) > 10_000_000:  # the sums alone would take gigabytes
        raise ValueError(f"{math.prod(sizes)} architectures are too many to enumerate")
    cost = table.fixed + _every_sum([[float(table.costs[cell][r, k]) for k in cands] for cell, r, cands in rows])
    low = -math.inf if floor is None else floor
    inside = ((cost >= low - 1e-12 * abs(low)) & (cost <= cap * (1 + 1e-12))).nonzero().flatten().tolist()
    if len(inside) > limit:
        span = f"up to {cap:g}" if floor is None else f"between {low:g} and {cap:g}"
        raise ValueError(f"{len(inside)} architectures cost {span}, more than {limit}")
    out = []
    for index in inside:
        arch: Dict[str, List[int]] = {cell: [] for cell in candidates}
        for (cell, _, cands), k in zip(rows, _unflatten(index, sizes)):
            arch[cell].append(cands[k])
        out.append(arch)
    return out


class CostPenalty:
    """The cost term of the architecture loss (see the module's docstring for the forms).

    :meth:`multiplier` is the factor the cross-entropy is multiplied by (``mul_log``; ``None``
    for the additive forms), :meth:`additive` the term added to it (``None`` for ``mul_log``), so a
    step that splits its batch multiplies each part and adds the term once.

    Example:
        >>> import torch, nas
        >>> from torch import nn
        >>> model = nn.Sequential(nas.OpChoice({"wide": nn.Linear(4, 8), "narrow": nn.Linear(4, 2)}, label="fc"))
        >>> net = nas.Supernet.from_model(model, mode="darts")
        >>> pen = CostPenalty(net, cost_table(net, "flops", (4,)), form="budget", weight=1.0, budget=10.0)
        >>> round(pen.additive().item(), 2)  # E ~ (32 + 8) / 2 = 20, twice the budget: (20 - 10) / 10
        1.0
    """

    def __init__(
        self,
        net: nn.Module,
        table: CostTable,
        form: str,
        weight: float,
        reference: Optional[float] = None,
        budget: Optional[float] = None,
        step: str = "adam",
    ):
        if form not in FORMS:
            raise ValueError(f"unknown cost form {form!r}; choose one of: {', '.join(FORMS)}")
        if step not in STEPS:
            raise ValueError(f"unknown cost step {step!r}; choose one of: {', '.join(STEPS)}")
        if step == "direct" and form == "mul_log":
            raise ValueError("the direct step applies an additive term; mul_log multiplies the cross-entropy")
        self.step = step
        self.net, self.table, self.form, self.weight = net, table, form, float(weight)
        # Default reference: the cost when every live candidate is equally likely, a function of
        # the table alone, so a resumed search uses the same one.
        self.reference = (
            float(reference)
            if reference is not None
            else table.uniform({cell: net.alive(cell) for cell in net.arch}, exclude=underivable(net))
        )
        self.budget = None if budget is None else float(budget)
        if form in BUDGET_FORMS and not (self.budget is not None and self.budget > 0):
            raise ValueError(f"the {form} form needs budget > 0")
        if form == "mul_log" and not self.reference > 1:
            raise ValueError(f"mul_log divides by log(reference), which needs reference > 1, got {self.reference:g}")
        if form == "add_linear" and not self.reference > 0:
            raise ValueError(f"add_linear divides by the reference, which needs reference > 0, got {self.reference:g}")

    def expected(self) -> torch.Tensor:
        return expected_cost(self.net, self.table)

    def multiplier(self) -> Optional[torch.Tensor]:
        if self.form != "mul_log":
            return None
        # Clamped just above 1: log E <= 0 would make the power undefined (costs below 1 unit).
        e = self.expected().clamp(min=1.0 + 1e-6)
        return (torch.log(e) / math.log(self.reference)) ** self.weight

    def additive(self) -> Optional[torch.Tensor]:
        if self.form == "add_linear":
            return self.weight * (self.expected() - self.reference) / self.reference
        if self.form == "budget":
            assert self.budget is not None
            return self.weight * torch.relu(self.expected() - self.budget) / self.budget
        if self.form == "target":
            assert self.budget is not None
            return self.weight * (self.expected() - self.budget).abs() / self.budget
        return None

    def direct_step(self, logits: Sequence[torch.Tensor], lr: float) -> None:
        """``step: direct``: ``alpha -= lr * d term / d alpha`` on the logits, after Adam's step. The
        term depends on the logits alone, so every rank of a torchrun job takes the same step."""
        term = self.additive()
        assert term is not None, "the direct step needs an additive form"
        grads = torch.autograd.grad(term, list(logits), allow_unused=True)
        with torch.no_grad():
            for a, g in zip(logits, grads):
                if g is not None:
                    a.sub_(g, alpha=lr)

    def objective(self, ce: torch.Tensor) -> torch.Tensor:
        """The architecture loss with the cost term (in Adam's step), for a step on one batch."""
        m, a = self.multiplier(), self.additive()
        out = ce * m if m is not None else ce
        return out + a if a is not None else out


# ---- latency ------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # the CPU's model name, as lscpu shows it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _structure(net: nn.Module, sites: Sequence[Site]) -> Dict[str, Any]:
    """What a table must match: the choices (names, rows, candidate counts) and their input shapes."""
    from .model_supernet import ModelSupernet

    names = {label: list(c) for label, c in net.candidates.items()} if isinstance(net, ModelSupernet) else list(net.ops)
    return {
        "space": getattr(net, "space", ""),
        "candidates": names,
        "sites": [{"cell": s.cell, "row": s.row, "shapes": [_shape_text(c) for c in s.calls]} for s in sites],
    }


def measure_latency(
    net: nn.Module,
    input_size: Sequence[int],
    batch_size: int,
    repeats: int = 20,
    warmup: int = 3,
    log: Optional[Callable[[str], None]] = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> Dict[str, Any]:
    """Time every candidate of every choice at its input shape and ``batch_size`` on the device
    ``net`` is on (eval mode, no gradient: the deployed network's forward); median of
    ``repeats`` runs after ``warmup``, in ms. Returns the latency table as a JSON-able dict
    (:func:`save_latency_table` writes it).

    ``bf16`` times under bf16 autocast (CUDA only) and ``channels_last`` feeds channels-last
    inputs (put ``net`` in that format first: ``net.to(memory_format=torch.channels_last)``), as a
    search with ``run.bf16`` / ``run.channels_last`` runs; the table records both, and
    :func:`load_latency_table` refuses it for a search that runs otherwise (they change which op
    is fast).

    The fixed part is the median of the whole network's forward (each choice at its first
    candidate) minus the medians of the candidates that ran, floored at 0. Built-in ops of equal
    form at equal shapes are timed once.

    Example:
        >>> import nas
        >>> net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
        >>> lut = measure_latency(net, (3, 16, 16), batch_size=2, repeats=2, warmup=0)
        >>> lut["unit"], len(lut["costs"]["normal"])
        ('ms', 6)
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    device = next(net.parameters()).device
    if bf16 and device.type != "cuda":
        raise ValueError(f"bf16 timing needs the network on a CUDA device, it is on {device.type}")

    def amp() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    with amp():  # under autocast each candidate's recorded input is what it sees in a bf16 search
        sites, _, ran = trace(net, input_size, batch_size)
    _check_ran(sites)
    cache: Dict[Tuple[str, Any], float] = {}
    site_costs: List[List[float]] = []
    with inference(net), amp():
        for i, site in enumerate(sites):
            row = []
            for cand in site.candidates:
                total = 0.0
                for spec in site.calls if cand is not None else ():
                    key = (repr(cand), spec)
                    if not site.cacheable or key not in cache:
                        inputs = _zeros(spec, device, channels_last=channels_last)
                        cache[key] = _median_ms(functools.partial(cand, *inputs), device, repeats, warmup)
                    total += cache[key]
                row.append(total)
            site_costs.append(row)
            if log is not None and (i + 1) % 10 == 0:
                log(f"timed {i + 1}/{len(sites)} choice sites")
        (x,) = _zeros((("tensor", (batch_size, *input_size), torch.float32),), device, channels_last=channels_last)
        with _forced(net, _trace_arch(net)):
            whole = _median_ms(functools.partial(net, x), device, repeats, warmup)
    ran_ids = {id(m) for m in ran}
    chosen = sum(
        c
        for s, row in zip(sites, site_costs)
        for cand, c in zip(s.candidates, row)
        if cand is not None and id(cand) in ran_ids
    )
    table = _assemble(net, "latency", max(0.0, whole - chosen), sites, site_costs)
    return {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "metric": "latency",
        "unit": "ms",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device.type,
        "device_name": _device_name(device),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "batch_size": int(batch_size),
        "input_size": [int(v) for v in input_size],
        "precision": _precision(bf16),
        "memory_format": _memory_format(channels_last),
        "repeats": int(repeats),
        "warmup": int(warmup),
        "statistic": "median",
        "structure": _structure(net, sites),
        "fixed": table.fixed,
        "whole_network": whole,
        "costs": {cell: c.tolist() for cell, c in table.costs.items()},
        "site_costs": site_costs,
    }


def _precision(bf16: bool) -> str:
    return "bf16 autocast" if bf16 else "float32"


def _memory_format(channels_last: bool) -> str:
    return "channels_last" if channels_last else "contiguous"


def save_latency_table(table: Mapping[str, Any], path: Union[str, Path]) -> None:
    """Write a latency table as JSON, atomically (:func:`load_latency_table` reads it back).

    Example:
        >>> import tempfile, nas
        >>> net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
        >>> path = tempfile.mkdtemp() + "/lut.json"
        >>> save_latency_table(measure_latency(net, (3, 16, 16), batch_size=2, repeats=1, warmup=0), path)
        >>> load_latency_table(path, net, (3, 16, 16), batch_size=2, device="cpu")["batch_size"]
        2
    """
    atomic_write_text(path, json.dumps(table, indent=1) + "\n")


def load_latency_table(
    path: Union[str, Path],
    net: nn.Module,
    input_size: Sequence[int],
    batch_size: int,
    device: Union[str, torch.device],
    bf16: bool = False,
    channels_last: bool = False,
    any_machine: bool = False,
    resumed: bool = False,
) -> Dict[str, Any]:
    """Read a latency table and check it was measured for this network, input shape, batch size,
    device, precision and memory format; :class:`nas.UserError` (one line, with the command that
    measures the right one) if not. The device is the model this process runs on (the GPU's or the
    CPU's name: an H100's table does not rank ops for an H200); ``any_machine=True`` reads a table
    measured elsewhere, to study it, checking the device type only. ``resumed=True``: the table of
    a search being resumed, whose checkpoint holds the hash of the costs it started with; that hash
    decides, so the device model, precision and memory format are not checked again (a run moved to
    another machine, or started before tables recorded them, resumes)."""
    path = Path(path)
    fix = f"measure one for this search: {program()} measure-latency --config CONFIG --device DEVICE --out FILE"
    data = read_json(path, "latency table", fix)
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise UserError(f"{path} is not a latency table written by measure-latency; {fix}")
    if data.get("version") != TABLE_VERSION:
        raise UserError(
            f"latency table {path} has version {data.get('version')!r}; this library reads version {TABLE_VERSION}; {fix}"
        )
    dev = torch.device(device).type
    checks = [
        ("device", data.get("device"), dev),
        ("batch size", data.get("batch_size"), int(batch_size)),
        ("input shape", data.get("input_size"), [int(v) for v in input_size]),
    ]
    if not resumed:  # tables of format version 1 written before these two fields were timed in float32, contiguous
        checks += [
            ("precision", data.get("precision", _precision(False)), _precision(bf16)),
            ("memory format", data.get("memory_format", _memory_format(False)), _memory_format(channels_last)),
        ]
    for what, theirs, ours in checks:
        if theirs != ours:
            if what in ("precision", "memory format"):  # measure-latency follows the config's run section
                fix = fix.replace("DEVICE", "DEVICE --set run.bf16=B --set run.channels_last=C", 1) + (
                    ", with the search's run.bf16 and run.channels_last"
                )
            raise UserError(f"latency table {path} was measured for {what} {theirs}, this search uses {ours}; {fix}")
    here = _device_name(torch.device(device))  # after the type check: naming a GPU needs one
    if not (any_machine or resumed) and data.get("device_name") != here:
        raise UserError(
            f"latency table {path} was measured on {data.get('device_name')!r}, this search runs on {here!r} "
            f"(op times differ from one device model to another); {fix}"
        )
    sites, _, _ = trace(net, input_size, batch_size)
    if data.get("structure") != json.loads(json.dumps(_structure(net, sites))):
        raise UserError(
            f"latency table {path} was measured on another network (its choices, candidates or their input shapes "
            f"differ from this search's); {fix}"
        )
    _check_costs(path, data, sites, fix)
    # "costs" (per cell type, edge and op) is what the search reads, summed from "site_costs": an edit
    # of one and not the other would leave the table saying two things.
    summed = _assemble(net, "latency", float(data["fixed"]), sites, [list(map(float, r)) for r in data["site_costs"]])
    written = data.get("costs")
    agree = isinstance(written, dict) and set(written) == set(summed.costs)
    for cell, c in summed.costs.items() if agree else ():
        try:
            agree = agree and torch.allclose(torch.tensor(written[cell], dtype=torch.float64), c, rtol=1e-6, atol=1e-9)
        except (TypeError, ValueError, RuntimeError):  # not a table of numbers of the right shape
            agree = False
    if not agree:
        raise UserError(
            f"latency table {path} is damaged: its costs do not add up from its site_costs (each choice "
            f"site's times, which the costs sum per edge and op); edit both alike, or {fix}"
        )
    return data


def _check_costs(path: Path, data: Mapping[str, Any], sites: Sequence[Site], fix: str) -> None:
    """A table's numbers: a finite, non-negative ``fixed``, and one such cost per candidate of every
    site (a cut or edited table would otherwise cost the missing candidates nothing)."""

    def cost(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    rows = data.get("site_costs")
    bad = None
    if not cost(data.get("fixed")):
        bad = f"its fixed part is {data.get('fixed')!r}"
    elif not isinstance(rows, list) or len(rows) != len(sites):
        bad = f"it has {len(rows) if isinstance(rows, list) else 'no'} rows of site costs for {len(sites)} choice sites"
    else:
        for i, (row, site) in enumerate(zip(rows, sites)):
            if not isinstance(row, list) or len(row) != len(site.candidates) or not all(map(cost, row)):
                bad = f"site {i} ({site.name or site.cell}) has costs {row!r} for {len(site.candidates)} candidates"
                break
    if bad is not None:
        raise UserError(f"latency table {path} is damaged: {bad}, each a number >= 0 in ms; {fix}")


def _latency_cost_table(net: nn.Module, data: Mapping[str, Any]) -> CostTable:
    sites = _sites(net)
    site_costs = [list(map(float, row)) for row in data["site_costs"]]
    return _assemble(net, "latency", float(data["fixed"]), sites, site_costs)
