"""Does a short training of each candidate from the supernet's weights rank a budget's window better?

A study of a budgeted search's saved checkpoints, not part of the search. The window study
(:mod:`experiments.window_study`) found that the supernet ranks the cells of a budget's window
weakly (Kendall's tau about 0.2): weights shared by every path are biased toward none of them.
Here each candidate is trained alone for a short while, starting from the supernet's weights, so
its ops can adapt to the cell they are in, and the candidates are ranked by the loss after it.

For each checkpoint of an nb201 search with a budget form, the candidates are the ``--top``
cells of the window with the lowest supernet loss on ``--batches`` fixed batches of the
architecture split (what ``search.derive: window`` picks among) and the ``--top`` most probable
cells of the window by the final logits (the first of them is what the search derives). Each is
trained alone from a copy of the checkpoint's weights for ``--steps`` SGD steps on the search's
weight split (the same batches for every candidate; the search's momentum, weight decay and
clipping; the learning rate cosine from ``--lr`` to the search's ``lr_min``), then measured on
``--eval-batches`` fixed batches of the architecture split. Then, for measurement only, each
candidate is looked up on NAS-Bench-201: the rank correlation among the candidates before and
after, and the benchmark accuracy of the cell each rule picks. Nothing in a search reads this.

    python -m experiments.finetune_study CHECKPOINT.pt ... [--top 8 --steps 312 --lr 0.05]
    python -m experiments.finetune_study --quick --out /tmp/x.json     # the test
    python -m experiments.finetune_study --out F.json                  # F's table again
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from experiments.rerank_study import fixed_batches, load_task, study_checkpoints, write_study
from experiments.stats import kendall_tau_b
from experiments.tables import table
from experiments.window_study import NEAR, supernet_loss, window_cells
from experiments.window_study import quick_checkpoint as window_checkpoint
from nas.benchmarks import cell_string, load_benchmark
from nas.training import clip_and_step, set_lr

NAME = "finetune_study"


def options(p: argparse.ArgumentParser) -> List[str]:
    p.add_argument("--top", type=int, default=8, help="candidates from each ranking: supernet loss and probability")
    p.add_argument(
        "--steps", type=int, default=None, help="SGD steps per candidate (default: one epoch of the weight split)"
    )
    p.add_argument(
        "--lr", type=float, default=None, help="first learning rate (default: the search's search.weights.lr)"
    )
    p.add_argument("--eval-batches", type=int, default=32, help="fixed batches that rank the trained candidates")
    return ["top", "steps", "lr", "eval_batches"]


def finetune(task, cell: str, choice: List[int], steps: int, lr: float) -> None:
    """Train the supernet forced to ``choice`` for ``steps`` SGD steps on the search's weight
    split, from epoch 0's order and augmentation, with the search's weight optimiser settings
    and a cosine learning rate from ``lr`` to the search's ``lr_min``."""
    net, w = task.net, task.cfg.search.weights
    params = net.weight_parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=w.momentum, nesterov=w.nesterov, weight_decay=w.weight_decay)
    arch = net.arch_parameters()
    for a in arch:  # frozen logits: the forced path runs without the sampler's bookkeeping
        a.requires_grad_(False)
    net.train()
    done, epoch = 0, 0
    try:
        with net.forced({cell: choice}):
            while done < steps:
                task.loader_w.set_epoch(epoch)
                for x, y in task.loader_w:
                    if done == steps:
                        break
                    set_lr(opt, w.lr_min + (lr - w.lr_min) * (1 + math.cos(math.pi * done / steps)) / 2)
                    loss = F.cross_entropy(net(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    clip_and_step(params, opt, w.grad_clip)
                    done += 1
                epoch += 1
    finally:
        for a in arch:
            a.requires_grad_(True)


def study(
    ckpt_path: Path,
    batches: int,
    batch_size: int,
    *,
    top: int,
    steps: Optional[int],
    lr: Optional[float],
    eval_batches: int,
) -> Dict[str, Any]:
    ckpt, task = load_task(ckpt_path)
    cfg, net = task.cfg, task.net
    cell, ops, cells, window = window_cells(ckpt_path, task)
    steps = len(task.loader_w) if steps is None else steps
    lr = cfg.search.weights.lr if lr is None else lr
    fixed = fixed_batches(cfg, batches, batch_size)
    net.train()  # batch statistics, as the search's own measurements
    before = [supernet_loss(net, cell, choice, fixed)[0] for choice, _ in cells]
    probs = net.probabilities()[cell]
    log_p = [sum(math.log(max(float(probs[e, k]), 1e-30)) for e, k in enumerate(choice)) for choice, _ in cells]
    by_loss = sorted(range(len(cells)), key=before.__getitem__)[:top]
    by_prob = sorted(range(len(cells)), key=lambda i: -log_p[i])[:top]
    derived = task._derived_rows()[cell]
    picked = list(dict.fromkeys(by_loss + by_prob))
    if derived not in [cells[i][0] for i in picked]:  # the search's own cell is always a candidate
        picked.append(next(i for i, (c, _) in enumerate(cells) if c == derived))
    evaluation = fixed_batches(cfg, eval_batches, batch_size)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    bench = load_benchmark()
    rows, start = [], time.perf_counter()
    for i in picked:
        choice, flops = cells[i]
        net.load_state_dict(state)
        finetune(task, cell, choice, steps, lr)  # leaves the net in training mode
        loss, acc = supernet_loss(net, cell, choice, evaluation)
        arch = cell_string([ops[k] for k in choice])
        rows.append(
            {
                "cell": arch,
                "flops": flops,
                "source": "+".join(n for n, ids in (("loss", by_loss), ("probability", by_prob)) if i in ids)
                or "derived",
                "derived": choice == derived,
                "supernet_loss": before[i],
                "finetuned_loss": loss,
                "finetuned_acc": acc,
                "benchmark": bench.query(arch),
            }
        )
    seconds = time.perf_counter() - start
    net.load_state_dict(state)
    window_bench = [bench.query(cell_string([ops[k] for k in c])) for c, _ in cells]
    values = [r["benchmark"] for r in rows]

    def pick(key: str) -> Dict[str, Any]:
        r = min(rows, key=lambda r: r[key])
        return {"cell": r["cell"], "benchmark": r["benchmark"]}

    derived_row = next(r for r in rows if r["derived"])
    return {
        "epoch": ckpt["epoch"],
        "seed": cfg.run.seed,
        "estimator": cfg.search.estimator,
        "weight_paths": cfg.search.weight_paths,
        "window": window,
        "cells": len(cells),
        "candidates": len(rows),
        "steps": steps,
        "lr": lr,
        "eval_batches": eval_batches,
        "seconds": seconds,
        "tau_supernet": kendall_tau_b([-r["supernet_loss"] for r in rows], values),
        "tau_finetuned": kendall_tau_b([-r["finetuned_loss"] for r in rows], values),
        "derived": {"cell": derived_row["cell"], "benchmark": derived_row["benchmark"]},
        "best_by_supernet_loss": pick("supernet_loss"),
        "best_by_finetuned_loss": pick("finetuned_loss"),
        "best_in_candidates": max(values),
        "best_in_window": max(window_bench),
        "near_best_in_candidates": sum(v >= max(window_bench) - NEAR for v in values),
        "rows": rows,
    }


def render(results: List[Dict[str, Any]]) -> str:
    """One row per checkpoint, then the means over them."""
    head = [
        "checkpoint",
        "candidates",
        "steps",
        "tau before",
        "tau after",
        "derived %",
        "lowest loss %",
        "lowest after training %",
        "best candidate %",
        "best in window %",
    ]
    body = [
        [
            r["checkpoint"],
            r["candidates"],
            r["steps"],
            f"{r['tau_supernet']:.2f}",
            f"{r['tau_finetuned']:.2f}",
            f"{r['derived']['benchmark']:.2f}",
            f"{r['best_by_supernet_loss']['benchmark']:.2f}",
            f"{r['best_by_finetuned_loss']['benchmark']:.2f}",
            f"{r['best_in_candidates']:.2f}",
            f"{r['best_in_window']:.2f}",
        ]
        for r in results
    ]
    if len(results) > 1:
        mean = lambda f: f"{statistics.fmean(f(r) for r in results):.2f}"  # noqa: E731
        body.append(
            [
                "mean",
                "",
                "",
                mean(lambda r: r["tau_supernet"]),
                mean(lambda r: r["tau_finetuned"]),
                mean(lambda r: r["derived"]["benchmark"]),
                mean(lambda r: r["best_by_supernet_loss"]["benchmark"]),
                mean(lambda r: r["best_by_finetuned_loss"]["benchmark"]),
                mean(lambda r: r["best_in_candidates"]),
                mean(lambda r: r["best_in_window"]),
            ]
        )
    return table(head, body)


def quick_checkpoint(run_dir: Path) -> Path:
    """The window study's tiny budgeted search with a narrow window (fewer cells to measure)."""
    return window_checkpoint(run_dir, tolerance=0.02)


def main() -> int:
    args, out, studied, tmp = study_checkpoints(
        NAME,
        __doc__,
        study,
        quick_checkpoint,
        lambda r: (
            f"seed {r['seed']} epoch {r['epoch']}: {r['candidates']} candidates of {r['cells']}, {r['steps']} steps "
            f"each ({r['seconds']:.0f} s); tau {r['tau_supernet']:.2f} -> {r['tau_finetuned']:.2f}; derived "
            f"{r['derived']['benchmark']:.2f}, lowest loss {r['best_by_supernet_loss']['benchmark']:.2f}, after "
            f"training {r['best_by_finetuned_loss']['benchmark']:.2f}, best in window {r['best_in_window']:.2f}"
        ),
        checkpoints_help="checkpoints of nb201 searches under a FLOPs budget",
        batches=8,
        batch_size=64,
        options=options,
    )
    results = sorted(studied, key=lambda r: (r["checkpoint"], r["seed"], r["epoch"]))
    write_study(NAME, args, out, results, render(results), tmp, batches=args.batches, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
