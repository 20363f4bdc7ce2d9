"""How well does a budgeted search's supernet rank the cells its budget allows?

A study of a search's saved checkpoints, not part of the search. For a checkpoint of an nb201
search with a budget form (``search.cost.form: budget`` or ``target``), it enumerates every cell
without ``none`` whose FLOPs (the search's own cost table) lie in the budget's window
(:func:`nas.cost.budget_window`: ``search.cost.budget`` and ``tolerance``), pruned ops included
(a pruned op keeps the weights it had), forces each on the supernet and measures its loss and
accuracy on fixed batches of the architecture's split in training mode, as
:mod:`nas.selection` does. Then, for measurement only, it looks each cell up on NAS-Bench-201:
the rank correlation within the window, the benchmark accuracy of the supernet's best cell and of
the cell the search derives at that checkpoint, and how many cells of the window lie within 0.5
points of the window's best. Nothing in a search reads this.

Checkpoints of the same run at two or more seeds (run folders that differ only in their ``-sN``
suffix, at the same epoch) are also compared with each other: how far their supernets agree on
the window's order (Kendall's tau between their losses), and which cell an ensemble of them
would pick (the lowest mean of each supernet's standardised loss).

    python -m experiments.window_study CHECKPOINT.pt ... [--batches 8 --batch-size 64]
    python -m experiments.window_study --quick --out /tmp/x.json     # the test
    python -m experiments.window_study --out F.json                  # F's tables again
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F

from experiments.nb201_cost_sweep import quick_budgets
from experiments.nb201_cpu_search import CONFIG, QUICK
from experiments.rerank_study import fixed_batches, load_task, study_checkpoints, write_study
from experiments.stats import kendall_tau_b
from experiments.tables import table
from nas.benchmarks import cell_string, load_benchmark
from nas.config import load_config
from nas.cost import BUDGET_FORMS, architectures_within, budget_window
from nas.search import run_search

NAME = "window_study"
MAX_CELLS = 2000  # each costs a pass over the fixed batches
NEAR = 0.5  # the target: within this many points of the best


def window_cells(ckpt_path: Path, task) -> Tuple[str, List[str], List[Tuple[List[int], float]], List[float]]:
    """The cell's key, the op names, every cell without ``none`` in the budget's window of a
    budgeted search's task (pruned ops included) with its FLOPs by the search's cost table, and
    the window ``[floor, cap]``."""
    cfg, net, costs = task.cfg, task.net, task.cost_table
    c = cfg.search.cost
    if costs is None or c.form not in BUDGET_FORMS or c.budget is None or c.metric != "flops":
        raise SystemExit(f"{ckpt_path}: not a search under a FLOPs budget (search.cost.form budget or target)")
    cap, floor = budget_window(c.budget, c.tolerance, c.form)
    (cell,) = list(net.arch)
    ops = list(net.ops)
    use = [k for k, o in enumerate(ops) if o != "none"]
    table_c = costs.costs[cell]
    try:  # what search.derive=window ranks, pruned ops included
        archs = architectures_within(costs, {cell: [use] * table_c.shape[0]}, cap, floor, limit=MAX_CELLS)
    except ValueError as exc:
        raise SystemExit(f"{ckpt_path}: {exc}; narrow the window") from None
    cells = [(a[cell], costs.fixed + sum(float(table_c[e, k]) for e, k in enumerate(a[cell]))) for a in archs]
    if not cells:
        raise SystemExit(f"{ckpt_path}: no cell without none costs between {floor or 0:g} and {cap:g}")
    return cell, ops, cells, [floor or 0.0, cap]


@torch.no_grad()
def supernet_loss(net, cell: str, choice: List[int], fixed) -> Tuple[float, float]:
    """The mean loss and the accuracy (%) of the supernet forced to ``choice`` on the fixed
    batches, in the mode the net is in (training mode: each batch's own statistics)."""
    correct, loss, n = 0, 0.0, 0
    with net.forced({cell: choice}):
        for x, y in fixed:
            out = net(x).float()
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(-1) == y).sum())
            n += y.shape[0]
    return loss / n, 100 * correct / n


def study(ckpt_path: Path, batches: int, batch_size: int) -> Dict[str, Any]:
    ckpt, task = load_task(ckpt_path)
    epoch = ckpt["epoch"]
    cfg, net = task.cfg, task.net
    cell, ops, cells, window = window_cells(ckpt_path, task)
    fixed = fixed_batches(cfg, batches, batch_size)
    bench = load_benchmark()
    net.train()  # batch statistics, as the search's own measurements
    rows = []
    for choice, flops in cells:
        loss, acc = supernet_loss(net, cell, choice, fixed)
        arch = cell_string([ops[k] for k in choice])
        rows.append(
            {"cell": arch, "flops": flops, "supernet_loss": loss, "supernet_acc": acc, "benchmark": bench.query(arch)}
        )
    values = [r["benchmark"] for r in rows]
    best = max(values)
    by_loss = min(rows, key=lambda r: r["supernet_loss"])
    derived = cell_string([ops[k] for k in task._derived_rows()[cell]])
    derived_bench = bench.query(derived)
    return {
        "epoch": epoch,
        "seed": cfg.run.seed,
        "estimator": cfg.search.estimator,
        "weight_paths": cfg.search.weight_paths,
        "window": window,
        "cells": len(rows),
        "tau_neg_loss": kendall_tau_b([-r["supernet_loss"] for r in rows], values),
        "tau_acc": kendall_tau_b([r["supernet_acc"] for r in rows], values),
        "best_by_supernet_loss": {k: by_loss[k] for k in ("cell", "supernet_loss", "benchmark")},
        "derived": {"cell": derived, "benchmark": derived_bench, "beaten_by": sum(v > derived_bench for v in values)},
        "best_in_window": best,
        "median_in_window": sorted(values)[len(values) // 2],
        "near_best": sum(v >= best - NEAR for v in values),
        "rows": rows,
    }


def quick_checkpoint(run_dir: Path, tolerance: float = 0.05) -> Path:
    """A tiny budgeted search on synthetic data (the cost sweep's quick budget, a wide window)."""
    budget = quick_budgets((0.4,))[0]
    overrides = [
        "supernet.mode=gdas",
        "search.prune=off",
        "search.cost.metric=flops",
        "search.cost.form=target",
        "search.cost.weight=1",
        f"search.cost.budget={budget}",
        f"search.cost.tolerance={tolerance}",
    ]
    cfg = load_config(CONFIG, overrides + QUICK)
    run_search(cfg, run_dir, torch.device("cpu"), stop_after=3, progress=False, log=lambda s: None)
    return run_dir / "checkpoint.pt"


def render(results: List[Dict[str, Any]]) -> str:
    """The study's table, one row per checkpoint."""
    return table(
        [
            "checkpoint",
            "epoch",
            "cells",
            "tau(-loss)",
            "tau(acc)",
            "derived %",
            "beaten by",
            "best by loss %",
            "best %",
            f"within {NEAR}",
        ],
        [
            [
                r["checkpoint"],
                r["epoch"],
                r["cells"],
                f"{r['tau_neg_loss']:.2f}",
                f"{r['tau_acc']:.2f}",
                f"{r['derived']['benchmark']:.2f}",
                r["derived"]["beaten_by"],
                f"{r['best_by_supernet_loss']['benchmark']:.2f}",
                f"{r['best_in_window']:.2f}",
                r["near_best"],
            ]
            for r in results
        ],
    )


def _run_name(r: Dict[str, Any]) -> str:
    """The checkpoint's run folder without its seed suffix: what seeds of one run share."""
    return re.sub(r"-s\d+$", "", Path(r["checkpoint"]).parent.name)


def seed_agreement(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """For each run studied at two or more seeds (same run name, window and epoch): Kendall's
    tau between the seeds' supernet losses over the cells they share, averaged over seed pairs,
    and the benchmark accuracy of each seed's lowest-loss cell and of the ensemble's (the lowest
    sum of the seeds' losses, each standardised over the shared cells)."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((_run_name(r), tuple(r["window"]), r["epoch"]), []).append(r)
    rows = []
    for (run, _, epoch), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        if len({r["seed"] for r in rs}) < 2:
            continue
        losses = [{row["cell"]: row["supernet_loss"] for row in r["rows"]} for r in rs]
        bench = {row["cell"]: row["benchmark"] for r in rs for row in r["rows"]}
        cells = sorted(set.intersection(*(set(d) for d in losses)))
        if len(cells) < 2:
            continue
        vectors = [[d[c] for c in cells] for d in losses]
        taus = [kendall_tau_b(a, b) for i, a in enumerate(vectors) for b in vectors[i + 1 :]]
        z = [[(v - statistics.fmean(vec)) / (statistics.pstdev(vec) or 1.0) for v in vec] for vec in vectors]
        ensemble = [sum(col) for col in zip(*z)]
        pick = cells[min(range(len(cells)), key=ensemble.__getitem__)]
        rows.append(
            {
                "run": run,
                "epoch": epoch,
                "seeds": [r["seed"] for r in rs],
                "cells": len(cells),
                "tau_between_seeds": statistics.fmean(taus),
                "best_by_loss": [r["best_by_supernet_loss"]["benchmark"] for r in rs],
                "ensemble": {
                    "cell": pick,
                    "benchmark": bench[pick],
                    "tau_neg_loss": kendall_tau_b([-v for v in ensemble], [bench[c] for c in cells]),
                },
                "best_in_window": max(bench[c] for c in cells),
            }
        )
    return rows


def render_agreement(rows: List[Dict[str, Any]]) -> str:
    return table(
        ["run", "epoch", "seeds", "cells", "tau(seeds)", "best by loss %", "ensemble %", "ensemble tau", "best %"],
        [
            [
                r["run"],
                r["epoch"],
                ",".join(map(str, r["seeds"])),
                r["cells"],
                f"{r['tau_between_seeds']:.2f}",
                " / ".join(f"{v:.2f}" for v in r["best_by_loss"]),
                f"{r['ensemble']['benchmark']:.2f}",
                f"{r['ensemble']['tau_neg_loss']:.2f}",
                f"{r['best_in_window']:.2f}",
            ]
            for r in rows
        ],
    )


def main() -> int:
    args, out, studied, tmp = study_checkpoints(
        NAME,
        __doc__,
        study,
        quick_checkpoint,
        lambda r: (
            f"seed {r['seed']} epoch {r['epoch']} ({r['estimator']}, {r['weight_paths']} paths): {r['cells']} cells, "
            f"tau(-loss) {r['tau_neg_loss']:.2f}; derived {r['derived']['benchmark']:.2f}, best by loss "
            f"{r['best_by_supernet_loss']['benchmark']:.2f}, best in window {r['best_in_window']:.2f}"
        ),
        checkpoints_help="checkpoints of nb201 searches under a FLOPs budget",
        batches=8,
        batch_size=64,
    )
    results = sorted(studied, key=lambda r: (r["seed"], r["epoch"], r["checkpoint"]))
    agreement = seed_agreement(results)
    text = render(results) + ("\n\n" + render_agreement(agreement) if agreement else "")
    write_study(
        NAME, args, out, results, text, tmp, batches=args.batches, batch_size=args.batch_size, seed_agreement=agreement
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
