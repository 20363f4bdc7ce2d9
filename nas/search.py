"""The architecture search loop (first-order, as in GDAS).

Each iteration takes one SGD step on the weights with a batch of the weights'
split, then one Adam step on the architecture logits with a batch of the
architecture's split. tau and the weights' learning rate are pure functions of
the epoch. After every epoch the run directory gets a metrics line, the
per-edge op probabilities, the derived genotype and an atomic checkpoint, so a
stopped run resumes exactly.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import config as config_mod
from .benchmarks import is_benchmark_cell, load_benchmark
from .config import Config
from .data import search_split
from .errors import UserError
from .genotype import Genotype
from .io import (append_jsonl, atomic_torch_save, atomic_write_text, capture_rng_state, restore_rng_state,
                 seed_everything, truncate_jsonl)
from .ops import check_ops
from .sampler import tau_schedule
from .selection import edge_op_losses
from .spaces import DEFAULT_OPS, SPACES, build_supernet, check_derive_none
from .supernet import MODES, Supernet
from .training import (Meter, autocast, check_positive, clip_and_step, cosine_lr, load_data, load_for_resume,
                       make_loader, prepare_run_dir, set_lr, subset_indices)

CHECKPOINT_KIND = "search"
PRUNE_RULES = ("off", "probability", "loss")


@dataclass
class SearchResult:
    run_dir: Path
    genotype: Genotype
    epochs_done: int
    finished: bool
    last_metrics: Optional[dict]


def make_tau_schedule(cfg: Config):
    t = cfg.search.tau
    try:
        if t.schedule == "constant":
            return tau_schedule("constant", tau=t.max)
        if t.schedule == "exponential":
            return tau_schedule("exponential", tau0=t.max, decay=t.decay)
        return tau_schedule(t.schedule, tau_max=t.max, tau_min=t.min)
    except ValueError as exc:
        raise UserError(f"search.tau: {exc}") from None


def validate(cfg: Config) -> None:
    """Semantic checks that types alone cannot catch; each names the key to fix."""
    s, sn = cfg.search, cfg.supernet
    if sn.space not in SPACES:
        raise UserError(f"unknown space {sn.space!r} (supernet.space); choose one of: {', '.join(SPACES)}")
    if sn.mode not in MODES:
        raise UserError(f"unknown mode {sn.mode!r} (supernet.mode); choose one of: {', '.join(MODES)}")
    check_ops(sn.ops if sn.ops is not None else DEFAULT_OPS[sn.space])
    check_derive_none(sn.space, sn.derive_none)
    check_positive(**{"search.epochs": s.epochs, "search.batch_size": s.batch_size, "supernet.C": sn.C,
                      "supernet.N": sn.N, "search.steps_per_epoch": s.steps_per_epoch,
                      "search.weights.lr": s.weights.lr, "search.arch.lr": s.arch.lr})
    if not 0 <= s.warmup_epochs < s.epochs:
        raise UserError(f"search.warmup_epochs must be in [0, search.epochs), got {s.warmup_epochs} with "
                        f"search.epochs={s.epochs}. Fix: lower it, e.g. --set search.warmup_epochs=0")
    if cfg.run.log_every < 0:
        raise UserError(f"run.log_every must be >= 0 (0 turns the progress-bar postfix off), got {cfg.run.log_every}")
    if not 0 < cfg.data.weight_fraction < 1:
        raise UserError(f"data.weight_fraction must be in (0, 1), got {cfg.data.weight_fraction}")
    if not (s.arch.beta_decay >= 0 and math.isfinite(s.arch.beta_decay)):
        raise UserError(f"search.arch.beta_decay must be a finite number >= 0 (0 disables), got {s.arch.beta_decay}")
    if s.prune not in PRUNE_RULES:
        raise UserError(f"unknown search.prune {s.prune!r}; choose one of: {', '.join(PRUNE_RULES)}")
    pruning = s.prune != "off"
    if pruning and sn.mode != "gdas":
        raise UserError(f"search.prune needs supernet.mode=gdas (it is a one-path search), got {sn.mode}; "
                        "set search.prune=off")
    num_ops = len(sn.ops if sn.ops is not None else DEFAULT_OPS[sn.space])
    if pruning and s.epochs - s.warmup_epochs < num_ops:
        raise UserError(f"search.prune needs at least one architecture epoch per op ({num_ops}); got "
                        f"{s.epochs - s.warmup_epochs}. Raise search.epochs or lower search.warmup_epochs")
    check_positive(**{"search.prune_batches": s.prune_batches})
    if len(s.arch.betas) != 2 or not all(0 <= b < 1 for b in s.arch.betas):
        raise UserError(f"search.arch.betas must be two numbers in [0, 1), got {s.arch.betas}")
    make_tau_schedule(cfg)


def prune_events(epochs: int, warmup_epochs: int, num_ops: int) -> List[int]:
    """The epoch boundaries after which progressive pruning drops one op per edge.

    ``num_ops - 1`` events spread evenly over the architecture epochs, so the last
    ``(epochs - warmup_epochs) / num_ops`` epochs train the decided network alone.
    """
    span = epochs - warmup_epochs
    return [warmup_epochs + round((k + 1) * span / num_ops) for k in range(num_ops - 1)]


def ops_to_keep(epoch: int, events: List[int], num_ops: int) -> int:
    """How many ops each edge keeps while epoch ``epoch`` (0-based) runs."""
    return num_ops - sum(b <= epoch for b in events)


def beta_decay_weight(epoch: int, epochs: int, warmup_epochs: int, beta_decay: float) -> float:
    """beta-DARTS's lambda for epoch ``epoch``: 0 in warm-up, then linear up to ``beta_decay``."""
    if beta_decay == 0 or epoch < warmup_epochs:
        return 0.0
    return beta_decay * (epoch - warmup_epochs + 1) / (epochs - warmup_epochs)


def entropy(probs: Dict[str, torch.Tensor]) -> float:
    """Mean per-edge entropy (nats) of the op distributions."""
    rows = torch.cat([p for p in probs.values()])
    return float(-(rows * rows.clamp_min(1e-12).log()).sum(dim=-1).mean())


def run_search(cfg: Config, run_dir: Path, device: torch.device, *, resume: bool = False,
               stop_after: Optional[int] = None, progress: bool = True,
               log: Callable[[str], None] = tqdm.write) -> SearchResult:
    """Run (or resume) a search into ``run_dir`` on ``device``.

    ``stop_after`` ends this invocation after that many epochs, checkpointed,
    as if the run had been stopped there.
    """
    run_dir = Path(run_dir)
    validate(cfg)
    if cfg.run.bf16 and device.type != "cuda":
        raise UserError("run.bf16 needs a CUDA device; set run.bf16=false or run.device=cuda")
    ckpt = load_for_resume(run_dir, cfg, CHECKPOINT_KIND) if resume else None
    if not resume:
        prepare_run_dir(run_dir)
        config_mod.save_config(cfg, run_dir / "config.yaml")

    seed = cfg.run.seed
    seed_everything(seed)
    data = load_data(cfg)
    keep = subset_indices(data.train_x.shape[0], cfg.data.train_subset, seed)
    idx_w, idx_a = search_split(len(keep), cfg.data.weight_fraction, seed)
    idx_w, idx_a = keep[idx_w], keep[idx_a]
    loader_kw = dict(train=True, augment=cfg.data.augment, device=device, channels_last=cfg.run.channels_last)
    loader_w = make_loader(data, data.train_x[idx_w], data.train_y[idx_w], cfg.search.batch_size, seed=seed, **loader_kw)
    loader_a = make_loader(data, data.train_x[idx_a], data.train_y[idx_a], cfg.search.batch_size, seed=seed + 1,
                           **loader_kw)

    sn = cfg.supernet
    net = build_supernet(sn.space, sn.mode, C=sn.C, N=sn.N, num_classes=data.num_classes, ops=sn.ops,
                         affine=sn.affine, tau=cfg.search.tau.max, derive_none=sn.derive_none)
    net.to(device)
    if cfg.run.channels_last:
        net.to(memory_format=torch.channels_last)
    s = cfg.search
    weights, arch = net.weight_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=s.weights.lr, momentum=s.weights.momentum, nesterov=s.weights.nesterov,
                            weight_decay=s.weights.weight_decay)
    a_opt = torch.optim.Adam(arch, lr=s.arch.lr, betas=tuple(s.arch.betas), weight_decay=s.arch.weight_decay)
    tau_at = make_tau_schedule(cfg)

    start = 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        w_opt.load_state_dict(ckpt["w_opt"])
        a_opt.load_state_dict(ckpt["a_opt"])
        start = int(ckpt["epoch"])
        restore_rng_state(ckpt["rng"])
        # Drop lines an interrupted epoch may have left after the checkpoint.
        for name in ("metrics.jsonl", "arch_probs.jsonl"):
            truncate_jsonl(run_dir / name, lambda r: r.get("epoch", 0) <= start)
        log(f"resuming {run_dir} after epoch {start}/{s.epochs}")

    steps = min(len(loader_w), len(loader_a))
    if s.steps_per_epoch is not None:
        steps = min(steps, s.steps_per_epoch)
    if steps < 1:
        raise UserError("an epoch has no full batch; lower search.batch_size or use more data")

    pruning = s.prune != "off"
    events = prune_events(s.epochs, s.warmup_epochs, len(net.ops)) if pruning else []
    if s.prune == "loss":
        # Fixed batches of the architecture's split, no augmentation: the same for every measurement.
        loader_eval = make_loader(data, data.train_x[idx_a], data.train_y[idx_a], cfg.search.batch_size,
                                  train=False, augment=False, seed=seed, device=device,
                                  channels_last=cfg.run.channels_last)
        eval_batches = [b for _, b in zip(range(s.prune_batches), loader_eval)]
    keep_none = getattr(net, "derive_none", False)  # darts space: none never derives
    last = None
    done = start
    for epoch in range(start, s.epochs):
        pruned, prune_scores = {}, None
        if pruning:
            # Idempotent: a resumed run's mask (in the checkpoint) already has the earlier events.
            while net.num_alive() > ops_to_keep(epoch, events, len(net.ops)):
                scores = None
                if s.prune == "loss":
                    losses = edge_op_losses(net, eval_batches, seed=seed + epoch)
                    scores = {c: -v for c, v in losses.items()}
                    # Logged so that both derivation rules can be read off the last event.
                    prune_scores = {c: [[x if x != float("inf") else None for x in row] for row in v.tolist()]
                                    for c, v in losses.items()}
                removed = net.prune_weakest(keep_none=keep_none, scores=scores)
                for cell, ops in removed.items():
                    pruned.setdefault(cell, []).append(ops)
                log(f"pruned before epoch {epoch + 1}: " + "; ".join(
                    f"{cell} " + " ".join(op or "-" for op in ops) for cell, ops in removed.items()))
        beta = beta_decay_weight(epoch, s.epochs, s.warmup_epochs, s.arch.beta_decay)
        # Once every edge has one op left, the logits get no gradient: skip the arch step.
        arch_epoch = epoch >= s.warmup_epochs and (not pruning or net.num_alive() > 1)
        net.tau = tau_at(epoch, s.epochs)
        lr = cosine_lr(epoch, s.epochs, s.weights.lr, s.weights.lr_min)
        set_lr(w_opt, lr)
        loader_w.set_epoch(epoch)
        loader_a.set_epoch(epoch)
        train_meter, val_meter = Meter(device), Meter(device)
        t0 = time.perf_counter()
        bar = tqdm(total=steps, desc=f"search {epoch + 1}/{s.epochs}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        net.train()
        for step, ((x_w, y_w), (x_a, y_a)) in enumerate(zip(loader_w, loader_a)):
            if step >= steps:
                break
            search_step(net, weights, arch, w_opt, a_opt, x_w, y_w, x_a, y_a, s.weights.grad_clip, device,
                        cfg.run.bf16, train_meter, val_meter, arch_step=arch_epoch, beta_decay=beta)
            bar.update(1)
            if progress and cfg.run.log_every > 0 and (step + 1) % cfg.run.log_every == 0:
                bar.set_postfix(tau=f"{net.tau:.2f}", acc=f"{train_meter.read()[1]:.1f}")
        bar.close()
        train_loss, train_acc = train_meter.read()  # the epoch's one read of the device counters
        val_loss, val_acc = val_meter.read()
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise UserError(f"the training loss became {train_loss} in epoch {epoch + 1}; lower "
                            "search.weights.lr or enable gradient clipping (search.weights.grad_clip)")
        geno = net.genotype()
        probs = net.probabilities()
        # Logged like the GDAS authors' code logs it: an output only, never read back by the search.
        benchmark = benchmark_fields(geno)
        last = {
            "epoch": epoch + 1, "tau": net.tau, "lr_weights": lr, "lr_arch": a_opt.param_groups[0]["lr"],
            "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss if val_meter.count else None, "val_acc": val_acc if val_meter.count else None,
            "entropy": entropy(probs), "genotype": str(geno),
            **({"ops_left": net.num_alive()} if pruning else {}),
            **({"pruned": pruned} if pruned else {}),
            **({"prune_losses": prune_scores} if prune_scores else {}),
            **({"beta_decay": beta} if s.arch.beta_decay else {}),
            **({"benchmark": benchmark} if benchmark else {}),
            "epoch_seconds": seconds, "images_per_second": (train_meter.count + val_meter.count) / seconds,
        }
        write_epoch(run_dir, net, w_opt, a_opt, cfg, epoch + 1, last, geno, probs)
        done = epoch + 1
        arch_text = str(geno) if geno.space == "nb201" else "genotype.json updated"
        phase = (f"val {val_loss:.3f}/{val_acc:.1f}%" if val_meter.count
                 else "warm-up (no arch step)" if epoch < s.warmup_epochs else "decided (weights only)")
        bench_text = f"NB201 {benchmark['cifar10_test']:.2f}%  " if benchmark else ""
        log(f"epoch {epoch + 1}/{s.epochs}  tau {net.tau:.3f}  train {train_loss:.3f}/{train_acc:.1f}%  {phase}  "
            f"H {last['entropy']:.3f}  {last['images_per_second']:.0f} img/s  {bench_text}{arch_text}")
        if stop_after is not None and done - start >= stop_after:
            break
    if ckpt is not None and done == start:
        log(f"{run_dir} had already finished its {s.epochs} epochs")
    return SearchResult(run_dir, net.genotype(), done, done >= s.epochs, last)


def search_step(net: Supernet, weights: List[torch.nn.Parameter], arch: List[torch.nn.Parameter],
                w_opt: torch.optim.Optimizer, a_opt: torch.optim.Optimizer, x_w: torch.Tensor, y_w: torch.Tensor,
                x_a: torch.Tensor, y_a: torch.Tensor, grad_clip: float, device: torch.device, bf16: bool,
                train_meter: Optional[Meter] = None, val_meter: Optional[Meter] = None,
                arch_step: bool = True, beta_decay: float = 0.0) -> None:
    """One weight step then (unless ``arch_step`` is false, as in warm-up) one architecture step.

    ``beta_decay`` > 0 adds beta-DARTS's ``beta_decay * mean_edges logsumexp(alpha)`` to the
    architecture loss; its gradient is ``beta_decay * softmax(alpha) / edges``.
    """
    # Weight step: the logits are frozen, so the supernet runs the sampled
    # network without the straight-through bookkeeping.
    for a in arch:
        a.requires_grad_(False)
    try:
        with autocast(device, bf16):
            logits = net(x_w)
            loss = F.cross_entropy(logits, y_w)
        w_opt.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        for a in arch:
            a.requires_grad_(True)
    clip_and_step(weights, w_opt, grad_clip)
    if train_meter is not None:
        train_meter.add(loss, logits, y_w)
    if not arch_step:
        return
    # Architecture step (first order): gradients for the logits only, so no
    # weight gradients are computed.
    with autocast(device, bf16):
        logits = net(x_a)
        loss = F.cross_entropy(logits.float(), y_a)
    objective = loss
    if beta_decay:
        objective = loss + beta_decay * beta_decay_term(net)
    a_opt.zero_grad(set_to_none=True)
    objective.backward(inputs=arch)
    a_opt.step()
    if val_meter is not None:
        val_meter.add(loss, logits, y_a)


def benchmark_fields(geno: Genotype) -> Optional[dict]:
    """The derived cell's NAS-Bench-201 CIFAR-10 test accuracy and percentile (None off the benchmark)."""
    if not is_benchmark_cell(geno):
        return None
    bench = load_benchmark()
    return {"cifar10_test": bench.query(geno), "percentile": round(bench.percentile(geno), 2)}


def beta_decay_term(net: Supernet) -> torch.Tensor:
    """mean over all edges of ``logsumexp(alpha_edge)`` (pruned ops excluded)."""
    rows = torch.cat([net.logits(c).float() for c in net.arch])
    return torch.logsumexp(rows, dim=-1).mean()


def write_epoch(run_dir: Path, net: Supernet, w_opt, a_opt, cfg: Config, epoch: int, metrics: dict,
                geno: Genotype, probs: Dict[str, torch.Tensor]) -> None:
    """The epoch's outputs; the checkpoint last, so it never runs ahead of the logs."""
    append_jsonl(run_dir / "metrics.jsonl", metrics)
    append_jsonl(run_dir / "arch_probs.jsonl", {"epoch": epoch, "ops": list(net.ops),
                                                "probs": {c: p.tolist() for c, p in probs.items()}})
    atomic_write_text(run_dir / "genotype.json", geno.to_json())
    atomic_torch_save({
        "kind": CHECKPOINT_KIND,
        "epoch": epoch,
        "model": net.state_dict(),
        "w_opt": w_opt.state_dict(),
        "a_opt": a_opt.state_dict(),
        # The schedules are pure functions of the epoch; their settings live in the config.
        "schedules": {"tau": net.tau, "lr_weights": w_opt.param_groups[0]["lr"]},
        "rng": capture_rng_state(),
        "config": config_mod.to_dict(cfg),
    }, run_dir / "checkpoint.pt")
