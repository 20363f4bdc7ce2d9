"""The search's optimisation state and its step (first order, as in GDAS and DARTS-1st).

A :class:`Searcher` holds the supernet, the weights' SGD and the logits' Adam,
gradient clipping, the autocast context (built once) and the epoch's meters.
The search loop, the benchmarks and the tests all drive this one object::

    searcher = Searcher.from_config(net, cfg.search, device=device)
    for epoch in range(cfg.search.epochs):
        searcher.start_epoch(epoch)            # tau, learning rate, regularisers' weights; fresh meters
        for batch_w, batch_a in zip(loader_w, loader_a):
            searcher.step(batch_w, batch_a, arch_step=epoch >= cfg.search.warmup_epochs)
        searcher.end_epoch()                   # under torchrun: batch-norm statistics and meters agree
        train_loss, train_acc = searcher.train_meter.read()
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import SearchConfig, make_tau_schedule
from .cost import CostPenalty
from .distributed import SINGLE, World
from .regularisers import get_regulariser
from .supernet import Supernet
from .training import Meter, autocast, clip_and_step, cosine_lr, set_lr

Batch = Tuple[torch.Tensor, torch.Tensor]


class Searcher:
    """The supernet with both optimisers; :meth:`step` is one weight step then one architecture step.

    Args:
        net: the supernet (on its device already).
        weight_optimizer: over ``net.weight_parameters()``.
        arch_optimizer: over ``net.arch_parameters()``.
        epochs: the search's length, for the schedules.
        tau_at: ``(epoch, epochs) -> tau``, a pure function of the epoch.
        lr_at: ``epoch -> learning rate of the weights``; ``None`` leaves it alone.
        beta_decay_at: ``epoch -> beta-decay weight``; ``None`` is 0 throughout. The same as
            ``regularisers={"beta_decay": beta_decay_at}``.
        regularisers: name -> ``epoch -> weight`` of registered regularisers of the logits
            (:mod:`nas.regularisers`), each added to the architecture objective with its weight;
            ValueError for a name not registered.
        grad_clip: max global norm of the weights' gradient; 0 disables.
        device, bf16: bf16 autocast on CUDA when ``bf16``.
        world: the processes of a ``torchrun`` launch (:mod:`nas.distributed`). With more than
            one, the weight step runs through DistributedDataParallel (which averages the weight
            gradients), the architecture step all-reduces the logits' gradients itself, and
            :meth:`end_epoch` averages the batch-norm statistics and sums the meters. Every rank
            must draw the same noise (seed them alike), so that all run the same path.
        uniform_weight_paths: the weight step trains a uniformly drawn path among the ops still
            alive (:meth:`Supernet.uniform_paths`) instead of one sampled from the logits.
        pruning: the search prunes ops (which then never run, in any mode): under torchrun,
            DDP is told that some parameters go unused.
        arch_paths: gdas mode: the architecture step splits its batch into this many equal
            parts, each running its own sampled path, so the logits' gradient averages over that
            many paths at the cost of one step (1: one path for the whole batch, as GDAS).
        cost: the hardware cost term of the architecture loss (:class:`nas.cost.CostPenalty`,
            ``search.cost``); ``None``: none.
        score_paths: gdas mode: ``0`` (default) gives the logits the sampled path's straight-through
            gradient; ``K >= 2`` gives them the leave-one-out score-function estimate (RLOO, Kool et
            al. 2019) instead: K paths drawn from the logits each run the whole batch without a
            backward through the network, and each path's ``grad log p`` is weighted by its loss less
            the mean loss of the other K - 1. Ops are compared with each other by the loss they give.
        local: gdas mode: each architecture step picks one edge with more than one op alive and runs
            the batch through each of those ops (forward only), every other edge at the ``context``
            cell; the logits of that edge get the exact gradient of ``sum_k p_k L_k``,
            ``p_k (L_k - sum_j p_j L_j)``. Ops are compared where the derived cell would use them,
            not averaged over sampled contexts.
        context: ``() -> {cell type: [op index per edge]}``, the cell ``local`` compares in (a search
            passes the cell it derives now); ``None``: each edge's most probable op.
        weight_cells: ``() -> {cell type: [op index per edge]}``, called once per weight step: the cell
            that step trains (forced), instead of a path drawn from the logits (``search.weight_paths:
            window`` passes a uniform draw among the cells of the budget's window). Overrides
            ``uniform_weight_paths``.
    """

    def __init__(
        self,
        net: Supernet,
        weight_optimizer: torch.optim.Optimizer,
        arch_optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        tau_at: Optional[Callable[[int, int], float]] = None,
        lr_at: Optional[Callable[[int], float]] = None,
        beta_decay_at: Optional[Callable[[int], float]] = None,
        regularisers: Optional[Mapping[str, Callable[[int], float]]] = None,
        grad_clip: float = 0.0,
        device: Optional[torch.device] = None,
        bf16: bool = False,
        world: World = SINGLE,
        uniform_weight_paths: bool = False,
        pruning: bool = False,
        arch_paths: int = 1,
        cost: Optional[CostPenalty] = None,
        score_paths: int = 0,
        local: bool = False,
        context: Optional[Callable[[], Dict[str, List[int]]]] = None,
        weight_cells: Optional[Callable[[], Dict[str, List[int]]]] = None,
    ):
        self.net = net
        self.cost = cost
        self.world = world
        self.weight_optimizer = weight_optimizer
        self.arch_optimizer = arch_optimizer
        self.epochs = epochs
        self.tau_at, self.lr_at = tau_at, lr_at
        self.regulariser_at: Dict[str, Callable[[int], float]] = dict(regularisers or {})
        if beta_decay_at is not None:
            if "beta_decay" in self.regulariser_at:
                raise ValueError("give beta_decay_at or regularisers['beta_decay'], not both")
            self.regulariser_at = {"beta_decay": beta_decay_at, **self.regulariser_at}
        # Looked up once: a name unregistered later still works in this search.
        self.regularisers = {name: get_regulariser(name).term for name in self.regulariser_at}
        self.regulariser_weights: Dict[str, float] = {}  # this epoch's, set by start_epoch
        self.grad_clip = grad_clip
        self.uniform_weight_paths = uniform_weight_paths
        if arch_paths < 1:
            raise ValueError(f"arch_paths must be >= 1, got {arch_paths}")
        self.arch_paths = arch_paths if net.mode == "gdas" else 1  # soft modes run every path already
        if score_paths == 1 or score_paths < 0:
            raise ValueError(
                f"score_paths must be 0 (straight-through) or >= 2 (a leave-one-out baseline), got {score_paths}"
            )
        if score_paths and net.mode != "gdas":
            raise ValueError(f"score_paths scores sampled paths: it needs mode 'gdas', got {net.mode!r}")
        if score_paths and self.arch_paths > 1:
            raise ValueError("give arch_paths (straight-through over batch parts) or score_paths, not both")
        self.score_paths = score_paths
        if local and (net.mode != "gdas" or score_paths or self.arch_paths > 1):
            raise ValueError("local compares one edge's ops at a fixed cell: mode 'gdas', no score_paths or arch_paths")
        self.local, self.context = local, context
        self.weight_cells = weight_cells
        self.device = device if device is not None else next(net.parameters()).device
        self.weights = list(net.weight_parameters())
        self.arch = list(net.arch_parameters())
        self.autocast = autocast(self.device, bf16)  # built once, entered every step
        self.lr = weight_optimizer.param_groups[0]["lr"]
        self.train_meter, self.val_meter = Meter(self.device), Meter(self.device)
        # The logits stay outside DDP: the weight step freezes them and the arch step reduces them.
        if world.distributed:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                net, [name for name, p in net.named_parameters() if any(p is a for a in self.arch)]
            )
        # One path per step: in gdas mode most ops are unused, on every rank alike; pruned ops
        # are never run in any mode.
        self.weight_model = world.wrap(net, self.device, find_unused_parameters=net.mode == "gdas" or pruning)

    @classmethod
    def from_config(
        cls,
        net: Supernet,
        search: SearchConfig,
        *,
        device: Optional[torch.device] = None,
        bf16: bool = False,
        world: World = SINGLE,
        cost: Optional[CostPenalty] = None,
    ) -> "Searcher":
        """The optimisers and schedules of a ``search`` config section (SGD with cosine lr, Adam);
        ``cost`` is the cost term built from ``search.cost`` (it needs the data's shape)."""
        if not hasattr(search, "weights"):
            raise TypeError(f"from_config takes a config's search section (cfg.search), got {type(search).__name__}")
        w, a = search.weights, search.arch
        w_opt = torch.optim.SGD(
            net.weight_parameters(), lr=w.lr, momentum=w.momentum, nesterov=w.nesterov, weight_decay=w.weight_decay
        )
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay)
        epochs, warmup = search.epochs, search.warmup_epochs
        weights = dict(a.regularisers)
        if a.beta_decay:
            if weights.get("beta_decay"):
                raise ValueError("search.arch.beta_decay and search.arch.regularisers.beta_decay are both set")
            weights["beta_decay"] = a.beta_decay

        def weight_at(name: str, weight: float) -> Callable[[int], float]:
            regulariser = get_regulariser(name)  # ValueError naming the registered ones
            return lambda e: regulariser.weight_at(e, epochs, warmup, weight)

        return cls(
            net,
            w_opt,
            a_opt,
            epochs=epochs,
            tau_at=make_tau_schedule(search.tau),
            lr_at=lambda e: cosine_lr(e, epochs, w.lr, w.lr_min),
            regularisers={name: weight_at(name, w) for name, w in weights.items() if w},
            grad_clip=w.grad_clip,
            device=device,
            bf16=bf16,
            world=world,
            uniform_weight_paths=search.weight_paths == "uniform",
            pruning=search.prune != "off",
            arch_paths=a.paths,
            cost=cost,
            score_paths=search.score_paths(),
            local=search.estimator == "local",
        )

    def start_epoch(self, epoch: int) -> None:
        """Set tau, the weights' learning rate and the regularisers' weights for ``epoch`` (0-based); reset the meters."""
        if self.tau_at is not None:
            self.net.tau = self.tau_at(epoch, self.epochs)
        if self.lr_at is not None:
            self.lr = self.lr_at(epoch)
            set_lr(self.weight_optimizer, self.lr)
        self.regulariser_weights = {name: at(epoch) for name, at in self.regulariser_at.items()}
        self.train_meter, self.val_meter = Meter(self.device), Meter(self.device)

    @property
    def beta_decay(self) -> float:
        """This epoch's beta-decay weight (0 without it)."""
        return self.regulariser_weights.get("beta_decay", 0.0)

    def step(self, batch_w: Batch, batch_a: Optional[Batch] = None, arch_step: Optional[bool] = None) -> None:
        """One weight step on ``batch_w``, then (when ``arch_step``, as after warm-up) one
        architecture step on ``batch_a``. ``arch_step`` defaults to whether ``batch_a`` is given."""
        self.weight_step(*batch_w)
        if arch_step is None:
            arch_step = batch_a is not None
        if arch_step:
            if batch_a is None:
                raise ValueError("an architecture step needs batch_a")
            self.arch_step(*batch_a)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """SGD on the weights. The logits are frozen meanwhile, so the supernet runs the
        sampled network without the straight-through bookkeeping."""
        for a in self.arch:
            a.requires_grad_(False)
        try:
            cell = self.weight_cells() if self.weight_cells is not None else None
            paths = self.net.forced(self.net.arch_of_rows(cell)) if cell is not None else contextlib.nullcontext()
            with self.autocast, self.net.uniform_paths(self.uniform_weight_paths), paths:
                logits = self.weight_model(x)  # DDP averages the gradients in backward
                loss = F.cross_entropy(logits, y)
            self.weight_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            for a in self.arch:
                a.requires_grad_(True)
        clip_and_step(self.weights, self.weight_optimizer, self.grad_clip)
        self.train_meter.add(loss, logits, y)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Adam on the logits (first order): gradients for the logits only, none for the weights.

        Each regulariser with a weight > 0 this epoch adds ``weight * term(net)``; beta-decay's is
        beta-DARTS's ``beta_decay * mean_edges logsumexp(alpha)``, whose gradient is
        ``beta_decay * softmax(alpha) / edges``.
        With a cost term, the cross-entropy is multiplied by its factor (``mul_log``) or has its
        term added (``add_linear``, ``budget``), or, with ``step: direct``, the term's own gradient
        step follows Adam's; see :mod:`nas.cost`.
        """
        self.arch_optimizer.zero_grad(set_to_none=True)
        cost = self.cost
        if self.local:
            self._local_backward(x, y)
        elif self.score_paths:
            self._score_backward(x, y)
        else:
            self._straight_through_backward(x, y)
        if self.world.distributed:  # one process: nothing to reduce, no per-step list
            self.world.all_reduce_mean_([a.grad for a in self.arch if a.grad is not None])
        self.arch_optimizer.step()
        if cost is not None and cost.step == "direct":
            cost.direct_step(self.arch, self.arch_optimizer.param_groups[0]["lr"])

    def _logit_terms(self, objective: torch.Tensor) -> torch.Tensor:
        """``objective`` plus the terms on the logits alone (the cost's in Adam's step, the regularisers)."""
        added = self.cost.additive() if self.cost is not None and self.cost.step == "adam" else None
        if added is not None:
            objective = objective + added
        for name, weight in self.regulariser_weights.items():
            if weight:
                objective = objective + weight * self.regularisers[name](self.net)
        return objective

    def _scaled(self, surrogate: torch.Tensor, mean_loss: torch.Tensor) -> torch.Tensor:
        """``surrogate`` (whose gradient estimates grad E[L]) under ``mul_log``'s factor f:
        grad (f E[L]) = f grad E[L] + E[L] grad f, with ``mean_loss`` (detached) for E[L]."""
        factor = self.cost.multiplier() if self.cost is not None else None
        if factor is None:
            return surrogate
        return surrogate * factor.detach() + mean_loss.detach() * factor

    def _straight_through_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        cost = self.cost
        parts = list(zip(x.chunk(self.arch_paths), y.chunk(self.arch_paths)))
        for i, (xs, ys) in enumerate(parts):  # one forward draws one path (gdas); one part otherwise
            with self.autocast:
                logits = self.net(xs)
                loss = F.cross_entropy(logits.float(), ys)
            objective = loss if len(parts) == 1 else loss * (xs.shape[0] / x.shape[0])
            # mul_log scales each part's loss (recomputed per part: each backward frees its graph).
            factor = cost.multiplier() if cost is not None else None
            if factor is not None:
                objective = objective * factor
            if i == len(parts) - 1:  # the terms on the logits alone, once per step
                objective = self._logit_terms(objective)
            objective.backward(inputs=self.arch)
            self.val_meter.add(loss, logits, ys)

    def _local_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One edge's ops at the context cell: ``grad sum_k p_k L_k``, exact for this batch."""
        net = self.net
        alive = net._alive_rows
        rows = [(c, e) for c in net.arch for e, row in enumerate(alive[c]) if sum(row) > 1]
        if not rows:  # decided: nothing to compare; the logits' own terms still apply
            objective = self._logit_terms(torch.zeros((), device=self.device))
            if objective.requires_grad:
                objective.backward(inputs=self.arch)
            return
        base = self.context() if self.context is not None else net.mode_rows()
        cell, e = rows[int(torch.randint(len(rows), ()))]
        ops = [k for k, a in enumerate(alive[cell][e]) if a]
        losses = []
        for k in ops:
            arch = {c: list(r) for c, r in base.items()}
            arch[cell][e] = k
            with torch.no_grad(), self.autocast, net.forced(net.arch_of_rows(arch)):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            losses.append(loss)
            if k == base[cell][e]:  # the meter reads the context cell itself
                self.val_meter.add(loss, logits, y)
        p_row = torch.softmax(net.logits(cell)[e].float(), dim=-1)
        p = torch.stack([p_row[k] for k in ops])  # int indexing: no index list copied to the device (a sync)
        expected = (p * torch.stack(losses)).sum()  # its gradient: p_k (L_k - sum_j p_j L_j)
        self._logit_terms(self._scaled(expected, expected.detach())).backward(inputs=self.arch)

    def _score_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """RLOO: ``(1/K) sum_k (L_k - mean_{j != k} L_j) grad log p(path_k)``, unbiased for
        ``grad E_p[L]``. The paths run under ``no_grad``: K forwards, no backward through the network."""
        k = self.score_paths
        losses, log_probs = [], []
        for i in range(k):
            with torch.no_grad(), self.autocast:
                logits = self.net(x)
                loss = F.cross_entropy(logits.float(), y)
            log_probs.append(self.net.draw_log_probability())
            losses.append(loss)
            if i == 0:  # the meter reads one sampled path per image, as the straight-through step's
                self.val_meter.add(loss, logits, y)
        loss_k = torch.stack(losses)
        advantage = loss_k - (loss_k.sum() - loss_k) / (k - 1)  # each path against the others' mean
        surrogate = (advantage * torch.stack(log_probs)).mean()
        self._logit_terms(self._scaled(surrogate, loss_k.mean())).backward(inputs=self.arch)

    def end_epoch(self) -> None:
        """Make the ranks agree before the epoch's outputs: average the batch-norm statistics
        (the arch step updates them outside DDP) and sum the meters."""
        self.world.average_buffers_(self.net)
        self.train_meter.all_reduce_(self.world)
        self.val_meter.all_reduce_(self.world)

    def state_dict(self) -> Dict[str, Any]:
        """The checkpoint entries: the supernet and both optimisers."""
        return {
            "model": self.net.state_dict(),
            "w_opt": self.weight_optimizer.state_dict(),
            "a_opt": self.arch_optimizer.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["w_opt"])
        self.arch_optimizer.load_state_dict(state["a_opt"])
