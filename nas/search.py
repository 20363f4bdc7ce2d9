"""The architecture search (first order, as in GDAS).

Each iteration takes one SGD step on the weights with a batch of the weights'
split, then one Adam step on the architecture logits with a batch of the
architecture's split (:class:`nas.searcher.Searcher`). tau and the weights'
learning rate are pure functions of the epoch. After every epoch the run
directory gets a metrics line, the per-edge op probabilities, the derived
genotype and an atomic checkpoint (:mod:`nas.run`), so a stopped run resumes
exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from tqdm import tqdm

from .architecture import ChoiceArchitecture
from .benchmarks import is_benchmark_cell, load_benchmark
from .config import Config, check_new_search
from .cost import (
    BUDGET_FORMS,
    UNITS,
    CostPenalty,
    CostTable,
    architectures_within,
    budget_window,
    cost_table,
    derivable_logits,
    derived_cost,
    load_latency_table,
    underivable,
    within_budget,
)
from .data import search_split, subset_indices
from .distributed import SINGLE, World
from .errors import UserError
from .genotype import Genotype
from .io import append_jsonl, atomic_write_text
from .model_supernet import ARCH_FILE, ModelSupernet, model_supernet
from .retrain import Architecture, Split
from .run import SCREEN_SETTINGS, check_run, keep_settings, lock_run, open_run, run_epochs, silent, unlock_run
from .runtime import program
from .sampler import ESTIMATORS
from .schedule import ops_to_keep, prune_events, search_epochs
from .screen import SCREEN_FILE, best_first, run_screen
from .screen import describe as describe_screen
from .searcher import Searcher
from .selection import architecture_losses, edge_op_losses, removal_scores
from .spaces import build_supernet, get_space
from .training import load_data, make_loader

CHECKPOINT_KIND = "search"
WINDOW_CELLS = 2000  # search.derive=window: the most cells it measures (each a pass over the fixed batches)
WINDOW_LOGGED = 10  # and how many of the best it logs
SCREEN_WALK = 200_000  # search.screen: the most cells, best first by the logits, tried for the budget's window
WEIGHT_WINDOW_CELLS = 200_000  # search.weight_paths=window: the most cells it draws from (held as indices)


@dataclass
class SearchResult:
    run_dir: Path
    genotype: Union[Genotype, ChoiceArchitecture]  # the latter for a custom model (supernet.model)
    epochs_done: int
    finished: bool
    last_metrics: Optional[dict]


def entropy(probs: Dict[str, torch.Tensor]) -> float:
    """Mean per-edge entropy (nats) of the op distributions."""
    rows = torch.cat([p for p in probs.values()])
    return max(0.0, float(-(rows * rows.clamp_min(1e-12).log()).sum(dim=-1).mean()))  # a decided edge: 0, not -0


def run_search(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    *,
    resume: bool = False,
    stop_after: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    world: World = SINGLE,
) -> SearchResult:
    """Run (or resume) a search into ``run_dir`` on ``device``.

    ``stop_after`` ends this invocation after that many epochs, checkpointed,
    as if the run had been stopped there. ``world``: the processes of a torchrun
    launch (:mod:`nas.distributed`); rank 0 alone writes ``run_dir``. ``device``: a
    :class:`torch.device` or its name (``"cpu"``, ``"cuda:0"``).
    """
    run_dir, device = Path(run_dir), torch.device(device)
    if not world.is_main:
        log = silent  # rank 0 alone prints
    check_run(cfg, device, world, cfg.search.batch_size, "search.batch_size", resume)
    if not resume:
        check_new_search(cfg.search)
    if cfg.run.plot:
        from .plot import require_matplotlib  # here: nas.plot reads runs through nas.report, which imports this module

        require_matplotlib()  # now, not when the search is over
    c = cfg.search.cost
    if c.weight and c.metric == "latency" and not Path(c.table).is_file():  # now, before the run directory
        what = "is a folder, not a table" if Path(c.table).is_dir() else "does not exist"
        fix = (  # a resume needs the run's own numbers: a table measured again is refused
            "put the run's table back there, or give where it is now: --set search.cost.table=PATH"
            if resume
            else f"measure it first: {program()} measure-latency --config CONFIG --device DEVICE --out FILE"
        )
        raise UserError(f"search.cost.table {c.table} {what}; {fix}")
    if resume and not cfg.search.screen.cells and (run_dir / SCREEN_FILE).exists():
        raise UserError(
            f"{run_dir} was screened ({SCREEN_FILE}), and search.screen.cells=0 would report another cell; resume "
            f"with the run's own screen settings (drop --set search.screen.*), or move {SCREEN_FILE} away to report "
            "the search's own cell"
        )
    ckpt = open_run(run_dir, cfg, CHECKPOINT_KIND, resume, world=world)
    try:
        task, done = run_epochs(
            lambda: SearchTask(cfg, device, log, world, resumed=ckpt is not None),
            cfg,
            run_dir,
            ckpt,
            desc="search",
            stop_after=stop_after,
            progress=progress,
            log=log,
            world=world,
            device=device,
        )
    except KeyboardInterrupt:  # stopped by hand: the figure of what the checkpoint holds, as when it ends
        if cfg.run.plot and world.is_main and (run_dir / "checkpoint.pt").exists():
            _write_plot(run_dir)
        raise
    if ckpt is not None and done.done == done.start:
        log(f"{run_dir} had already finished its {task.epochs} epochs")
    # The last epoch run here derived the genotype; a finished run resumed derives it again (the same).
    geno = task.geno if done.done > done.start else task.derive(final=done.finished)[0]
    if done.finished and cfg.search.screen.cells:
        geno = _screen(task, geno, run_dir, device, world, log)
    if cfg.run.plot and world.is_main:
        _write_plot(run_dir)
    return SearchResult(run_dir, geno, done.done, done.finished, done.last_metrics)


def _screen(task: "SearchTask", geno: Architecture, run_dir: Path, device, world: World, log) -> Architecture:
    """``search.screen``: train the search's first cells alone and report the best (nas.screen)."""
    candidates, how = task.screen_candidates(geno)
    if len(candidates) < 2:
        log("screen: this search can derive no other cell, so there is nothing to compare")
        return geno
    if world.is_main:
        lock_run(run_dir)  # the epochs' skeleton let it go; the screen writes the run too
    try:
        if world.is_main:  # a resume may have set the screen: the resumes after it screen alike
            keep_settings(run_dir, task.cfg, SCREEN_SETTINGS)
        chosen, record = run_screen(task.cfg, candidates, how, task.screen_split(), run_dir, device, world, log)
        log(describe_screen(record))
        if world.is_main:
            atomic_write_text(run_dir / task.arch_file, chosen.to_json())
    finally:
        if world.is_main:
            unlock_run(run_dir)
    return chosen


def _write_plot(run_dir: Path) -> None:
    from .plot import PLOT_FILE, write_plot

    write_plot(run_dir, run_dir / PLOT_FILE)


def search_supernet(cfg: Config, num_classes: int):
    """The supernet a search of ``cfg`` builds: ``supernet.model``'s, else ``supernet.space``'s (on the CPU)."""
    sn, s = cfg.supernet, cfg.search
    if sn.model is not None:  # a custom model with choices (nas.model_supernet)
        return model_supernet(sn.model, sn.mode, num_classes=num_classes, tau=s.tau.max)
    return build_supernet(
        sn.space,
        sn.mode,
        C=sn.C,
        N=sn.N,
        num_classes=num_classes,
        ops=sn.ops,
        affine=sn.affine,
        tau=s.tau.max,
        derive_none=sn.derive_none,
    )


def _check_cost_reachable(net, table: CostTable, budget: Optional[float], form: str) -> None:
    """Refuse a budget no derivable network meets: below the cheapest (every form), or, for
    ``target``, which spends the budget, above the dearest; and ``mul_log`` where a network can
    cost 1 or less (its log, clamped there, would scale the loss toward 0 and stop the search)."""
    low, high = table.span({c: net.alive(c) for c in net.arch}, underivable(net))
    unit = f"{table.metric} ({UNITS[table.metric]})"
    if form == "mul_log" and not low > 1:
        raise UserError(
            f"search.cost.form=mul_log takes the log of the expected cost, which must stay above 1, but the cheapest "
            f"network this search can derive costs {low:g} {unit}; use search.cost.form=add_linear (or budget, target)"
        )
    if budget is None:
        return
    if budget < low:
        raise UserError(
            f"search.cost.budget {budget:g} is below the cheapest network this search can derive, {low:g} {unit}; "
            f"raise it to at least {low:g}"
        )
    if form == "target" and budget > high:
        raise UserError(
            f"search.cost.budget {budget:g} is above the dearest network this search can derive, {high:g} {unit}, "
            "and the target form spends the budget; lower it, or use search.cost.form=budget for a cap"
        )


def _split_rows(pick: List[int], sizes: List[int]) -> List[List[int]]:
    """One flat pick over every cell type's rows, as one list per cell type."""
    out, start = [], 0
    for n in sizes:
        out.append(pick[start : start + n])
        start += n
    return out


def _finite_or_inf(x: float) -> float:
    return x if math.isfinite(x) else math.inf


class SearchTask:
    """The search's part of the run skeleton: data splits, the :class:`Searcher`, pruning, outputs."""

    kind = CHECKPOINT_KIND
    logs = ("metrics.jsonl", "arch_probs.jsonl")
    nan_hint = "lower search.weights.lr or enable gradient clipping (search.weights.grad_clip)"

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        log: Callable[[str], None],
        world: World = SINGLE,
        resumed: bool = False,  # restored from a checkpoint next: its latency table's hash decides
    ):
        s, sn = cfg.search, cfg.supernet
        self.cfg, self.search, self.log, self.epochs, self.world = cfg, s, log, s.epochs, world
        self.device = device
        seed = cfg.run.seed
        data = load_data(cfg, world)
        keep = subset_indices(data.train_x.shape[0], cfg.data.train_subset, seed)
        idx_w, idx_a = search_split(len(keep), cfg.data.weight_fraction, seed)
        idx_w, idx_a = keep[idx_w], keep[idx_a]
        loader_kw = dict(
            train=True,
            augment=cfg.data.augment,
            device=device,
            channels_last=cfg.run.channels_last,
            world=world,
            key="search.batch_size",
        )
        self.loader_w = make_loader(
            data, data.train_x[idx_w], data.train_y[idx_w], s.batch_size, seed=seed, **loader_kw
        )
        self.loader_a = make_loader(
            data, data.train_x[idx_a], data.train_y[idx_a], s.batch_size, seed=seed + 1, **loader_kw
        )
        net = search_supernet(cfg, data.num_classes)
        self.arch_file = ARCH_FILE if sn.model is not None else "genotype.json"
        self.outputs = (self.arch_file,)  # rewritten whole each epoch (nas.run restores it on a failed write)
        if s.estimator in ESTIMATORS:  # the sampler's backwards; rloo and local take no gradient through the draw
            net.estimator, net.estimator_samples = s.estimator, s.estimator_samples
        if cfg.run.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net.to(device)
        if cfg.run.channels_last:
            net.to(memory_format=torch.channels_last)
        self.net = net
        self.input_size = tuple(data.train_x.shape[1:])
        self.cost_table, cost = self._cost(cfg, net, device, resumed)
        self.searcher = Searcher.from_config(net, s, device=device, bf16=cfg.run.bf16, world=world, cost=cost)
        if self.searcher.local:  # compare an edge's ops in the cell the search derives now
            self.searcher.context = self._derived_rows
        steps = min(len(self.loader_w), len(self.loader_a))
        self.steps = steps if s.steps_per_epoch is None else min(steps, s.steps_per_epoch)
        if self.steps < 1:
            raise UserError("an epoch has no full batch; lower search.batch_size or use more data")
        self.pruning = s.prune != "off"
        # The measured losses of each pruning event, logged under a key that says how to read them.
        self.prune_key = "prune_removal_losses" if s.prune == "removal" else "prune_losses"
        start = s.warmup_epochs if s.prune_start is None else s.prune_start
        self.events = prune_events(s.epochs, start, len(net.ops)) if self.pruning else []
        # After the last event every edge has one op: the epochs left would train the chosen
        # network only and cannot change the genotype. The schedules still run over search.epochs,
        # so the epochs that do run are the same as in a full run.
        self.epochs = search_epochs(cfg, num_ops=len(net.ops))
        self.stops_early = self.epochs < s.epochs
        self.eval_batches: List[Any] = []
        measures = s.prune in ("loss", "removal") or s.derive in ("removal", "window")
        if measures and any(n != 1 for n in getattr(net, "n_chosen", ())):
            key = f"search.prune={s.prune}" if s.prune in ("loss", "removal") else f"search.derive={s.derive}"
            fix = "search.prune=probability (or off)" if s.prune in ("loss", "removal") else "search.derive=logits"
            raise UserError(
                f"{key} measures one candidate per choice at a time; this model has an InputChoice with "
                f"n_chosen > 1: use {fix}"
            )
        if measures:
            # Fixed batches of the architecture's split, no augmentation: the same for every measurement.
            loader_eval = make_loader(
                data,
                data.train_x[idx_a],
                data.train_y[idx_a],
                s.batch_size,
                train=False,
                augment=False,
                seed=seed,
                device=device,
                channels_last=cfg.run.channels_last,
                world=world,
            )
            count = s.prune_batches
            if world.distributed:  # full global batches only, so every rank measures as many
                count = min(count, max(1, len(idx_a) // s.batch_size))
            self.eval_batches = [b for _, b in zip(range(count), loader_eval)]
        # search.derive=window: the cells measured at the end, enumerated now so a window too wide fails at once.
        self.window_archs = (
            self._window_architectures("search.derive=window", WINDOW_CELLS, "search.derive=logits")
            if s.derive == "window"
            else []
        )
        self.window_order: List[Dict[str, List[int]]] = []  # derive=window: the window, best loss first
        if s.screen.cells:
            self._prepare_screen(data, idx_w, idx_a)
        if s.weight_paths == "window":  # the weight step trains the window's cells only
            self.weight_window = self._weight_window()
            self.window_alive = self.weight_window
            self.searcher.weight_cells = self._window_cell
        self.keep_none = getattr(net, "derive_none", False)  # darts space: none never derives
        self.arch_epoch = False

    def _cost(
        self, cfg: Config, net, device: torch.device, resumed: bool = False
    ) -> Tuple[Optional[CostTable], Optional[CostPenalty]]:
        """``search.cost``: the table and the loss term (none at weight 0, the search unchanged)."""
        c = cfg.search.cost
        if c.weight == 0:
            return None, None
        if c.form in BUDGET_FORMS and any(n != 1 for n in getattr(net, "n_chosen", ())):
            raise UserError(
                f"search.cost.form={c.form} derives the most probable network within the budget, one candidate per "
                "choice; this model has an InputChoice with n_chosen > 1: use search.cost.form=add_linear or mul_log"
            )
        latency = None
        if c.metric == "latency":
            latency = load_latency_table(
                c.table,
                net,
                self.input_size,
                cfg.search.batch_size,
                device,
                bf16=cfg.run.bf16,
                channels_last=cfg.run.channels_last,
                resumed=resumed,
            )
        table = cost_table(net, c.metric, self.input_size, latency=latency)
        if c.form in BUDGET_FORMS or c.form == "mul_log":
            _check_cost_reachable(net, table, c.budget, c.form)
        try:
            return table, CostPenalty(net, table, c.form, c.weight, reference=c.reference, budget=c.budget, step=c.step)
        except ValueError as exc:  # a reference the form cannot divide by
            raise UserError(f"search.cost: {exc}; set search.cost.reference (or another form)") from None

    # ---- checkpoint ------------------------------------------------------
    def _table_digest(self) -> Optional[str]:
        """A measured table's numbers, hashed: the config names its file, not what the file held."""
        t = self.cost_table
        if t is None or t.metric != "latency":
            return None
        numbers = [t.fixed, {c: v.tolist() for c, v in sorted(t.costs.items())}]
        return hashlib.sha256(json.dumps(numbers).encode()).hexdigest()

    def state_dict(self) -> Dict[str, Any]:
        # The schedules are pure functions of the epoch; their settings live in the config.
        return {
            **self.searcher.state_dict(),
            "schedules": {"tau": self.net.tau, "lr_weights": self.searcher.weight_optimizer.param_groups[0]["lr"]},
            "cost_table_sha256": self._table_digest(),
        }

    def load_state_dict(self, ckpt: Dict[str, Any]) -> None:
        saved = ckpt.get("cost_table_sha256")
        if saved is not None and saved != self._table_digest():
            raise UserError(
                f"search.cost.table {self.search.cost.table} no longer holds the costs this search started with "
                "(measured again or edited since); put that table back to resume exactly, or start a new search "
                "with another --out"
            )
        self.searcher.load_state_dict(ckpt)
        # τ as the last epoch left it: a measurement before the next epoch sets τ (a pruning event,
        # a finished run's derivation) reads it in snas mode, as the uninterrupted run did.
        tau = ckpt.get("schedules", {}).get("tau")
        if tau is not None:
            self.net.tau = float(tau)

    def _measure(self, perturb: str, seed: int) -> Dict[str, torch.Tensor]:
        """:func:`nas.selection.edge_op_losses` on the fixed batches, the same on every rank."""
        losses = edge_op_losses(self.net, self.eval_batches, seed=seed, perturb=perturb)
        # Each rank measured its share of the batches: average, so all decide alike.
        if self.world.distributed:  # on the device: NCCL reduces no CPU tensors
            on_device = {c: v.to(self.device) for c, v in losses.items()}
            self.world.all_reduce_mean_(on_device.values())  # unmeasured ops: inf everywhere, inf after
            losses = {c: v.cpu() for c, v in on_device.items()}
        return losses

    def _budget_cell(self) -> Optional[Dict[str, torch.Tensor]]:
        """With ``search.cost.form: budget`` or ``target``, :func:`nas.cost.within_budget`'s scores: the most
        probable cell among the ops still alive that fits the budget (with ``search.cost.tolerance``:
        costs within that share of it, below it for ``budget``, on either side for ``target``;
        ``none`` excluded under DARTS's rule). ``None`` without a budget, or where a cell does not
        keep every edge."""
        penalty, net = self.searcher.cost, self.net
        if not (
            penalty is not None
            and penalty.form in BUDGET_FORMS
            and (isinstance(net, ModelSupernet) or not net.space or get_space(net.space).keeps_every_edge)
        ):
            return None
        assert self.cost_table is not None and penalty.budget is not None
        cap, floor = budget_window(penalty.budget, self.search.cost.tolerance, penalty.form)
        return within_budget(net.probabilities(), self.cost_table, cap, exclude=underivable(net), floor=floor)

    def _derived_rows(self) -> Dict[str, List[int]]:
        """Per cell type, the op index of each edge in the cell :meth:`derive` reports now (by the
        logits: within the budget with a budget form; ``none`` excluded under DARTS's rule). In the
        darts space, whose derived cell drops edges, each edge's most probable op."""
        scores = self._budget_cell()
        if scores is None:
            exclude = underivable(self.net)
            scores = {c: derivable_logits(self.net.logits(c).detach(), exclude) for c in self.net.arch}
        return {c: v.argmax(dim=-1).tolist() for c, v in scores.items()}

    def _window_architectures(self, key: str, limit: int, fix: str) -> List[Dict[str, List[int]]]:
        """Every cell whose cost lies in the budget's window (:func:`nas.cost.budget_window`), one
        derivable candidate per row (``none`` excluded under DARTS's rule), per cell type the
        candidate of each row: what ``search.derive: window`` ranks and ``search.weight_paths:
        window`` trains. ``key`` (the setting that asks) and ``fix`` (what else to set) name them in
        the errors; at most ``limit`` cells."""
        net, penalty = self.net, self.searcher.cost
        if not (isinstance(net, ModelSupernet) or not net.space or get_space(net.space).keeps_every_edge):
            raise UserError(f"{key} works on whole cells, and a {net.space} cell drops edges when derived: use {fix}")
        assert penalty is not None and penalty.budget is not None and self.cost_table is not None
        cap, floor = budget_window(penalty.budget, self.search.cost.tolerance, penalty.form)
        exclude = underivable(net)
        candidates = {
            c: [[k for k in row.nonzero().flatten().tolist() if k != exclude] for row in net.alive(c)] for c in net.arch
        }
        span = f"between {floor:g} and {cap:g}" if floor is not None else f"up to {cap:g}"
        narrow = (
            "a smaller search.cost.tolerance"
            if floor is not None
            else "set search.cost.tolerance, e.g. 0.1, for a window around the budget"
        )
        try:
            archs = architectures_within(self.cost_table, candidates, cap, floor, limit=limit)
        except ValueError as exc:
            raise UserError(
                f"{key} enumerates the cells of the budget's window, and {exc} (at most {limit}): narrow the "
                f"window ({narrow}) or use {fix}"
            ) from None
        if not archs:
            raise UserError(
                f"{key}: no cell costs {span} {self.cost_table.metric}; widen search.cost.tolerance, "
                f"move search.cost.budget, or use {fix}"
            )
        return archs

    def _weight_window(self) -> torch.Tensor:
        """``search.weight_paths: window``: the window's cells as ``[cells, rows]`` op indices (cell
        types in order, their rows in order), the weight step's draws."""
        archs = self._window_architectures(
            "search.weight_paths=window", WEIGHT_WINDOW_CELLS, "search.weight_paths=uniform"
        )
        return torch.tensor([[k for c in self.net.arch for k in a[c]] for a in archs], dtype=torch.long)

    def _window_alive(self) -> None:
        """After a pruning event: the window's cells whose every op is still alive (the budget's
        cell always is, since no event removes its ops)."""
        alive = torch.cat([self.net.alive(c).cpu() for c in self.net.arch])  # [rows, ops]
        rows = torch.arange(alive.shape[0])
        self.window_alive = self.weight_window[alive[rows, self.weight_window].all(dim=1)]

    def _window_cell(self) -> Dict[str, List[int]]:
        """One cell drawn uniformly from the window's live cells (the global generator, checkpointed,
        so a resumed run draws the same; every rank draws alike)."""
        pick = self.window_alive[int(torch.randint(len(self.window_alive), ()))].tolist()
        cells = list(self.net.arch)
        return dict(zip(cells, _split_rows(pick, [self.net.arch[c].shape[0] for c in cells])))

    def derive(self, final: bool) -> Tuple[Genotype, Dict[str, Any]]:
        """The genotype to report, and what to log of how it was derived (empty: by the logits).
        Every epoch derives from the logits (within the budget with a budget form); the final one,
        with ``search.derive: removal``, measures each op's removal from its edge on the final
        supernet, and with ``search.derive: window`` the final supernet's loss of each cell of the
        budget's window. Both are deterministic (the fixed batches, common random numbers), so a
        resumed run derives the same cell."""
        scores = self._budget_cell()  # None: by the logits (a space's genotype() may take no scores)
        by_logits = self.net.genotype() if scores is None else self.net.genotype(scores=scores)
        rule = self.search.derive if final else "logits"
        if rule == "logits":
            return by_logits, {}
        record: Dict[str, Any] = {"derived_by": rule, "genotype_by_logits": str(by_logits)}
        if rule == "removal":
            losses = self._measure("remove", seed=self.cfg.run.seed)
            record["removal_losses"] = {
                c: [[x if x != float("inf") else None for x in row] for row in v.tolist()] for c, v in losses.items()
            }
            return self.net.genotype(scores=removal_scores(losses, self.net)), record
        archs = self.window_archs
        losses = torch.tensor(
            architecture_losses(
                self.net, self.eval_batches, [self.net.arch_of_rows(a) for a in archs], seed=self.cfg.run.seed
            )
        )
        if self.world.distributed:  # each rank measured its share of the batches: average, so all pick alike
            on_device = losses.to(self.device)
            self.world.all_reduce_mean_([on_device])
            losses = on_device.cpu()
        # A cell whose loss is not finite ranks last (NaN compares false both ways and could sort first).
        order = sorted(range(len(archs)), key=lambda i: (_finite_or_inf(float(losses[i])), i))
        self.window_order = [archs[i] for i in order]
        genos = {i: self.net.genotype(scores=self._one_hot(archs[i])) for i in order[:WINDOW_LOGGED]}
        record["window_cells"] = len(archs)
        record["window_losses"] = [
            [str(genos[i]), float(losses[i]) if math.isfinite(losses[i]) else None] for i in order[:WINDOW_LOGGED]
        ]
        return genos[order[0]], record

    # ---- search.screen ---------------------------------------------------
    def _prepare_screen(self, data, idx_w: torch.Tensor, idx_a: torch.Tensor) -> None:
        """Check that the screen can rank this search's cells, and keep what it needs: the two
        splits and the candidates each row has (pruning hides them later)."""
        net = self.net
        if not (isinstance(net, ModelSupernet) or not net.space or get_space(net.space).keeps_every_edge):
            raise UserError(
                f"search.screen trains whole cells, one candidate per edge, and a {net.space} cell drops edges "
                "when derived: set search.screen.cells=0"
            )
        if any(n != 1 for n in getattr(net, "n_chosen", ())):
            raise UserError(
                "search.screen ranks one candidate per choice, and this model has an InputChoice with "
                "n_chosen > 1: set search.screen.cells=0"
            )
        self.screen_data = (data, idx_w, idx_a)
        self.screen_rows = {c: net.alive(c).detach().cpu().clone() for c in net.arch}

    def screen_candidates(self, derived: Architecture) -> Tuple[List[Architecture], str]:
        """``derived`` and the runners-up, ``search.screen.cells`` in all, and what ranked them: with
        ``search.derive: window`` the final supernet's loss over the budget's window; else the
        logits (pruned candidates included, at the logits they had when pruned; ``none`` left out
        under DARTS's rule), within the budget's window with a budget form. At most
        :data:`SCREEN_WALK` cells are tried for a place in the window."""
        net, k = self.net, self.search.screen.cells
        if self.search.derive == "window":
            archs: Iterable[Dict[str, List[int]]] = self.window_order
            how = "the final supernet's validation loss over the budget's window"
        else:
            exclude, cells = underivable(net), list(net.arch)
            logp = [
                torch.log_softmax(
                    derivable_logits(net.arch[c].detach().cpu().masked_fill(~self.screen_rows[c], -math.inf), exclude),
                    dim=-1,
                )
                for c in cells
            ]
            sizes = [x.shape[0] for x in logp]
            picks = itertools.islice(best_first([row for x in logp for row in x.tolist()]), SCREEN_WALK)
            penalty, how = self.searcher.cost, "the logits"
            if penalty is not None and penalty.form in BUDGET_FORMS:
                assert self.cost_table is not None and penalty.budget is not None
                cap, floor = budget_window(penalty.budget, self.search.cost.tolerance, penalty.form)
                low = -math.inf if floor is None else floor
                row_costs = [row for c in cells for row in self.cost_table.costs[c].tolist()]
                fixed = self.cost_table.fixed
                # The window's bounds as nas.cost.architectures_within reads them.
                picks = (
                    pick
                    for pick in picks
                    if low - 1e-12 * abs(low)
                    <= fixed + sum(row_costs[r][j] for r, j in enumerate(pick))
                    <= cap * (1 + 1e-12)
                )
                how = "the logits within the budget's window"
            archs = (dict(zip(cells, _split_rows(pick, sizes))) for pick in picks)
        distance = self.search.screen.distance
        out, taken = [derived], [self._choice_indices(derived)]
        for a in archs:
            if len(out) == k:
                break
            rows = [j for c in net.arch for j in a[c]]
            if all(sum(x != y for x, y in zip(rows, other)) >= distance for other in taken):
                taken.append(rows)
                out.append(net.genotype(scores=self._one_hot(a)))
        if distance > 1:
            how += f", each differing from the earlier ones in at least {distance} choices"
        return out, how

    def _choice_indices(self, arch: Architecture) -> List[int]:
        """The candidate index of each row (cell types in order) of a derived architecture."""
        rows = self.net.rows_of(arch)  # one candidate per row: the screen refuses n_chosen > 1
        return [j for c in self.net.arch for j in rows[c]]

    def screen_split(self) -> Split:
        """The data, the weights' split (to train each screened cell on) and the architecture's split
        (to measure it on)."""
        data, idx_w, idx_a = self.screen_data
        return data, (data.train_x[idx_w], data.train_y[idx_w]), (data.train_x[idx_a], data.train_y[idx_a])

    def _one_hot(self, arch: Dict[str, List[int]]) -> Dict[str, torch.Tensor]:
        """Derivation scores that pick ``arch``: 0 on its candidate of each row, ``-inf`` elsewhere."""
        out = {}
        for c, rows in arch.items():
            scores = torch.full(tuple(self.net.arch[c].shape), float("-inf"))
            scores[torch.arange(len(rows)), torch.tensor(rows)] = 0.0
            out[c] = scores
        return out

    # ---- one epoch -------------------------------------------------------
    def start_epoch(self, epoch: int) -> int:
        s, net = self.search, self.net
        self.pruned, self.prune_scores = self._prune(epoch) if self.pruning else ({}, None)
        if self.searcher.weight_cells is not None:
            self._window_alive()
        # Once every edge has one op left, the logits get no gradient: skip the arch step.
        self.arch_epoch = epoch >= s.warmup_epochs and (not self.pruning or net.num_alive() > 1)
        self.searcher.start_epoch(epoch)
        self.loader_w.set_epoch(epoch)
        self.loader_a.set_epoch(epoch)
        net.train()
        return self.steps

    def _prune(self, epoch: int) -> Tuple[Dict[str, List[List[Optional[str]]]], Optional[dict]]:
        """Drop ops until each edge keeps as many as the schedule says before epoch ``epoch``
        (0-based) runs. Idempotent: a resumed run's mask (in the checkpoint) already has the
        earlier events. Returns the ops removed per cell (one list per event) and, for
        ``prune: loss``, the last event's measured losses."""
        net, s = self.net, self.search
        pruned: Dict[str, List[List[Optional[str]]]] = {}
        prune_scores = None
        while net.num_alive() > ops_to_keep(epoch, self.events, len(net.ops)):
            scores = None
            if s.prune in ("loss", "removal"):
                # loss: the edge restricted to the op (a high loss, a weak op); removal: the op
                # taken out of the edge (a low loss, an op the supernet does not need).
                perturb = "keep" if s.prune == "loss" else "remove"
                losses = self._measure(perturb, seed=self.cfg.run.seed + epoch)
                scores = {c: -v for c, v in losses.items()} if s.prune == "loss" else losses
                # Logged so that both derivation rules can be read off the last event.
                prune_scores = {
                    c: [[x if x != float("inf") else None for x in row] for row in v.tolist()]
                    for c, v in losses.items()
                }
            budget_cell = self._budget_cell()
            if budget_cell is not None:
                # No event removes an op of the most probable cell within the budget, so the last
                # event leaves that cell, not each edge's most probable op whatever it costs.
                # On the host, as the budget's cell and the measured scores are (the probabilities live
                # on the logits' device; prune_weakest reads the scores entry by entry anyway).
                base = net.probabilities() if scores is None else scores
                scores = {c: v.detach().cpu().masked_fill(budget_cell[c] == 0, math.inf) for c, v in base.items()}
            removed = net.prune_weakest(keep_none=self.keep_none, scores=scores)
            for cell, ops in removed.items():
                pruned.setdefault(cell, []).append(ops)
            labels = getattr(net, "labels", None)  # a custom model: one row per label, named
            if labels is not None:
                text = "; ".join(f"{label} {op}" for label, op in zip(labels, removed["choices"]) if op)
            else:
                text = "; ".join(f"{cell} " + " ".join(op or "-" for op in ops) for cell, ops in removed.items())
            self.log(f"pruned after epoch {epoch}: {text}")
        return pruned, prune_scores

    def batches(self):
        return zip(self.loader_w, self.loader_a)

    def step(self, batch) -> None:
        batch_w, batch_a = batch
        self.searcher.step(batch_w, batch_a, arch_step=self.arch_epoch)

    def postfix(self) -> Dict[str, str]:
        return {"tau": f"{self.net.tau:.2f}", "acc": f"{self.searcher.train_meter.read()[1]:.1f}"}

    def end_epoch(self, epoch: int, seconds: float) -> Dict[str, Any]:
        searcher, net = self.searcher, self.net
        searcher.end_epoch()  # under torchrun: the ranks agree on buffers and meters
        train_meter, val_meter = searcher.train_meter, searcher.val_meter
        train_loss, train_acc = train_meter.read()  # the epoch's one read of the device counters
        val_loss, val_acc = val_meter.read()
        # A NaN logit hides from the losses (the straight-through scale passes values through) while
        # the draws it makes differ with and without gradients: refuse it before it is checkpointed.
        if not all(bool(torch.isfinite(a).all()) for a in net.arch_parameters()):
            raise UserError(
                f"the architecture logits became nan or inf in epoch {epoch + 1}; lower search.arch.lr "
                "(or search.cost.weight)"
            )
        # The events at the run's last boundary: the one that ends a search stopping once decided, or
        # those a run too short for its ops holds there (prune_events). Applied after the last epoch,
        # so the run ends with the op per edge its rule chose; logged apart from what was pruned before.
        final = epoch + 1 == self.epochs
        pruned_after, scores_after, probs_before = {}, None, None
        if self.pruning and final and net.num_alive() > ops_to_keep(self.epochs, self.events, len(net.ops)):
            probs_before = {c: p.tolist() for c, p in net.probabilities().items()}  # what the last event read
            pruned_after, scores_after = self._prune(self.epochs)
        self.geno, derived_by = self.derive(final)
        self.probs = net.probabilities()
        # Logged like the GDAS authors' code logs it: an output only, never read back by the search.
        benchmark = benchmark_fields(self.geno)
        cost: Dict[str, Any] = {}
        if self.cost_table is not None:
            penalty = self.searcher.cost
            with torch.no_grad():
                expected = float(penalty.expected())
            cost = {
                "cost_metric": self.cost_table.metric,
                "expected_cost": expected,
                "derived_cost": derived_cost(net, self.cost_table, self.geno, self.input_size),
                "cost_reference": penalty.reference,
                **({"cost_budget": penalty.budget} if penalty.budget is not None else {}),
            }
        return {
            "epoch": epoch + 1,
            "tau": net.tau,
            "lr_weights": searcher.lr,
            "lr_arch": searcher.arch_optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss if val_meter.count else None,
            "val_acc": val_acc if val_meter.count else None,
            "entropy": entropy(self.probs),
            "genotype": str(self.geno),
            **cost,
            **({"ops_left": net.num_alive()} if self.pruning else {}),
            **({"pruned": self.pruned} if self.pruned else {}),
            **({self.prune_key: self.prune_scores} if self.prune_scores else {}),
            **({"pruned_after": pruned_after} if pruned_after else {}),
            **({self.prune_key + "_after": scores_after} if scores_after else {}),
            **({"probs_before_pruning": probs_before} if pruned_after else {}),
            **({"beta_decay": searcher.beta_decay} if self.search.arch.beta_decay else {}),
            **(
                {"regularisers": {n: searcher.regulariser_weights.get(n, 0.0) for n in self.search.arch.regularisers}}
                if self.search.arch.regularisers
                else {}
            ),
            **derived_by,
            **({"benchmark": benchmark} if benchmark else {}),
            "epoch_seconds": seconds,
            "images_per_second": (train_meter.count + val_meter.count) / seconds,
            "world_size": self.world.world_size,
        }

    def write_outputs(self, run_dir: Path, epoch: int, metrics: Dict[str, Any]) -> None:
        append_jsonl(run_dir / "arch_probs.jsonl", {"epoch": epoch, **self.net.probability_record()})
        atomic_write_text(run_dir / self.arch_file, self.geno.to_json())

    def edge_probabilities(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        """This epoch's op probabilities, per cell, edge name and op (for TensorBoard)."""
        if isinstance(self.geno, ChoiceArchitecture):  # a custom model: per label, per candidate
            return {"choices": self.net.choice_probabilities()}
        names = get_space(self.geno.space).edge_names()
        out = {}
        for cell, p in self.probs.items():
            rows = p.tolist()
            out[cell] = {names[e] if e < len(names) else str(e): dict(zip(self.net.ops, r)) for e, r in enumerate(rows)}
        return out

    def describe(self, epoch: int, m: Dict[str, Any]) -> str:
        arch_text = log_text(self.geno)
        if m.get("derived_by") == "removal":
            arch_text += (
                f"\nderived by removal (search.derive: removal): on each edge the op whose removal raises the "
                f"validation loss most; by the logits it would be {m['genotype_by_logits']}"
            )
        elif m.get("derived_by") == "window":
            best = m["window_losses"][0][1]  # None: no cell's loss was finite
            arch_text += (
                f"\nderived by the window (search.derive: window): of the {m['window_cells']} cells the budget "
                f"allows, the lowest validation loss ({'not finite' if best is None else f'{best:.4f}'}); by the "
                f"logits it would be {m['genotype_by_logits']}"
            )
        phase = (
            f"val {m['val_loss']:.3f}/{m['val_acc']:.1f}%"
            if m["val_loss"] is not None
            else "warm-up (no arch step)"
            if epoch < self.search.warmup_epochs
            else "decided (weights only)"
        )
        bench = m.get("benchmark")
        bench_text = f"NB201 {bench['cifar10_test']:.2f}%  " if bench else ""
        if "expected_cost" in m:
            bench_text += f"{m['cost_metric']} E {m['expected_cost']:.4g} derived {m['derived_cost']:.4g}  "
        decided = ""
        if "pruned_after" in m:
            left = (
                "every label has only its chosen candidate(s) left"
                if isinstance(self.geno, ChoiceArchitecture)
                else "every edge has one op left"
            )
            decided = (
                f"\ndecided after epoch {epoch + 1}: {left}, so the search ends; the other "
                f"{self.search.epochs - epoch - 1} of search.epochs would train the chosen network only "
                "(search.stop_when_decided=false runs them)"
                if self.stops_early
                else f"\ndecided after the last epoch: {left} (its last pruning events fell at the end of "
                "search.epochs, which left no epoch after them)"
            )
        return (
            f"epoch {epoch + 1}/{self.epochs}  tau {m['tau']:.3f}  train {m['train_loss']:.3f}/"
            f"{m['train_acc']:.1f}%  {phase}  H {m['entropy']:.3f}  {m['images_per_second']:.0f} img/s  "
            f"{bench_text}{arch_text}{decided}"
        )


def log_text(geno: Union[Genotype, ChoiceArchitecture]) -> str:
    """The derived architecture as the search log shows it."""
    return geno.log_text() if isinstance(geno, ChoiceArchitecture) else get_space(geno.space).log_text(geno)


def benchmark_fields(geno: Union[Genotype, ChoiceArchitecture]) -> Optional[dict]:
    """The derived cell's NAS-Bench-201 CIFAR-10 test accuracy and percentile (None off the benchmark)."""
    if not isinstance(geno, Genotype) or not is_benchmark_cell(geno):
        return None
    try:
        bench = load_benchmark()
    except UserError as exc:  # the lookup is for reading a search, never an input: the search goes on without it
        warnings.warn(f"the metrics go without the NAS-Bench-201 lookup: {exc}", stacklevel=2)
        return None
    return {"cifar10_test": bench.query(geno), "percentile": round(bench.percentile(geno), 2)}
