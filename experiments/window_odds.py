"""How hard is the front target at each budget? What a random cell of the budget's window scores.

Issue 30 asks two things of every cell a budgeted search derives: its FLOPs within 10% of the
budget, and its accuracy within 0.5 points of the accuracy-FLOPs front at its own FLOPs. The
searched cells are judged in ``experiments.nb201_cost_sweep``; this script gives the baseline
they are judged against. For each budget it takes the cells a search can derive there (no
``none``, the searched supernet's FLOPs in ``[B (1 - tol), B (1 + tol)]``, as
``search.cost.form: target`` with ``tolerance`` derives; :func:`nas.cost.budget_window`) and,
looking each up on NAS-Bench-201 afterwards, counts how many meet the front target: the chance
that a cell drawn uniformly from the window does, and whether any cell meets both targets at
that budget. Given a collected sweep (``--against``), it sets each method's searched cells
against those odds: the cells within 0.5 points that random picks from the same windows would
give on average, against the search's.

A measurement of the benchmark, not of a search: nothing in a search reads it.

    python -m experiments.window_odds --against experiments/results/nb201_cost_sweep_recipe_vs_st.json
    python -m experiments.window_odds --budgets 4e6,12e6 --out /tmp/odds.json
    python -m experiments.window_odds --quick --out /tmp/odds.json     # the test: 4 and 8 M
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import nas
from experiments import nb201_cost_front as front_mod
from experiments.machine import write_record
from experiments.nb201_cost_sweep import SHORT, front_data
from experiments.settings import RESULTS, rel
from experiments.tables import log, table
from nas.benchmarks import cell_string, load_benchmark
from nas.cost import CostTable, architectures_within, budget_window, cost_table

NAME = "window_odds"
NEAR = 0.5  # the target: within this many points of the front
TOLERANCE = 0.1  # the budget recipe's search.cost.tolerance
SEARCHED = dict(C=8, N=2, num_classes=10)  # the searched supernet (configs/nb201_cifar10_cpu_budget.yaml)
BUDGETS = (3e6, 4e6, 6e6, 6.5e6, 8e6, 9e6, 10.5e6, 12e6, 14.5e6)  # the budgets section 15 searched
QUICK = (4e6, 8e6)  # the smallest windows: 72 and 6 cells
MAX_CELLS = 15625


@functools.lru_cache(maxsize=1)
def searched_costs() -> Tuple[CostTable, Tuple[str, ...]]:
    """The searched supernet's FLOPs table and op names (counted once for every budget)."""
    net = nas.build_supernet("nb201", mode="gdas", **SEARCHED)
    return cost_table(net, "flops", front_mod.INPUT), tuple(net.ops)


@functools.lru_cache(maxsize=1)
def _benchmark():
    """The packaged table, read once for every budget."""
    return load_benchmark()


def window_rows(budget: float, tolerance: float, front: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every cell without ``none`` that a search at ``budget`` may derive, with its benchmark
    FLOPs, accuracy and gap to the front."""
    costs, ops = searched_costs()
    (cell,) = list(costs.costs)
    use = [k for k, o in enumerate(ops) if o != "none"]
    cap, floor = budget_window(budget, tolerance, "target")
    archs = architectures_within(costs, {cell: [use] * costs.costs[cell].shape[0]}, cap, floor, limit=MAX_CELLS)
    bench = _benchmark()
    rows = []
    for a in archs:
        names = [ops[k] for k in a[cell]]
        acc = bench.query(cell_string(names))
        flops = front_mod.cell_flops(names, front["table"], front["op_names"])
        rows.append(
            {"cell": cell_string(names), "benchmark": acc, "gap": front_mod.gap_to_front(front["points"], flops, acc)}
        )
    return rows


def odds(budget: float, tolerance: float, front: Dict[str, Any]) -> Dict[str, Any]:
    rows = window_rows(budget, tolerance, front)
    gaps = sorted(r["gap"] for r in rows)
    near = sum(g <= NEAR for g in gaps)
    return {
        "budget": budget,
        "cells": len(rows),
        "near_front": near,
        "chance": near / len(rows) if rows else None,
        "mean_benchmark": statistics.mean(r["benchmark"] for r in rows) if rows else None,
        "median_gap": statistics.median(gaps) if gaps else None,
        "best_gap": gaps[0] if gaps else None,
    }


def against(points: Sequence[Dict[str, Any]], by_budget: Dict[float, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per method: its cells within ``NEAR`` of the front, against what random picks from the same
    windows give on average; its median gap against the windows' median gaps."""
    methods: Dict[str, List[Dict[str, Any]]] = {}
    for p in points:
        methods.setdefault(p["method"], []).append(p)
    out = []
    for method, ps in methods.items():
        ws = [by_budget[p["budget"]] for p in ps]
        out.append(
            {
                "method": method,
                "cells": len(ps),
                "near_front": sum(p["gap_to_front"] <= NEAR for p in ps),
                "near_front_random": sum(w["chance"] or 0.0 for w in ws),
                "mean_benchmark": statistics.mean(p["cifar10_test"] for p in ps),
                "mean_benchmark_random": statistics.mean(w["mean_benchmark"] for w in ws),
                "median_gap": statistics.median(p["gap_to_front"] for p in ps),
                "median_gap_random": statistics.median(w["median_gap"] for w in ws if w["median_gap"] is not None),
                "impossible": sum(w["near_front"] == 0 for w in ws),
            }
        )
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", help="comma-separated supernet FLOPs budgets (default: section 15's, or --against's)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    p.add_argument("--against", metavar="JSON", help="a collected nb201_cost_sweep result: its points by method")
    p.add_argument("--quick", action="store_true", help=f"budgets {QUICK[0]:g} and {QUICK[1]:g} only, for the tests")
    p.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    args = p.parse_args(argv)
    points: List[Dict[str, Any]] = []
    if args.against:
        try:
            points = json.loads(Path(args.against).read_text())["points"]
        except (OSError, ValueError, KeyError) as exc:
            p.error(f"{args.against} is not a result file of nb201_cost_sweep ({exc})")
    try:
        budgets = (
            list(QUICK)
            if args.quick
            else [float(b) for b in args.budgets.split(",")]
            if args.budgets
            else sorted({p["budget"] for p in points})
            if points
            else list(BUDGETS)
        )
    except ValueError:
        p.error("--budgets takes comma-separated numbers")
    if any(pt.get("budget") is None for pt in points):
        p.error(f"{args.against} has cells searched without a budget; give a sweep of budgeted searches")
    log("the front of NAS-Bench-201's network")
    front = front_data()
    windows = []
    for b in sorted(set(budgets) | {pt["budget"] for pt in points}):
        log(f"the window at {b / 1e6:g} M")
        windows.append(odds(b, args.tolerance, front))
    by_budget = {w["budget"]: w for w in windows}
    methods = against(points, by_budget) if points else []
    text = table(
        [
            "budget (M)",
            "cells in the window",
            "mean %",
            f"within {NEAR} of the front",
            "chance",
            "median gap",
            "best gap",
        ],
        [
            [
                f"{w['budget'] / 1e6:g}",
                w["cells"],
                "-" if w["mean_benchmark"] is None else f"{w['mean_benchmark']:.2f}",
                w["near_front"],
                "-" if w["chance"] is None else f"{100 * w['chance']:.1f}%",
                "-" if w["median_gap"] is None else f"{w['median_gap']:.2f}",
                "-" if w["best_gap"] is None else f"{w['best_gap']:.2f}",
            ]
            for w in windows
        ],
    )
    if methods:
        text += "\n\n" + table(
            [
                "method",
                "cells",
                "mean %",
                "random (mean)",
                f"within {NEAR}",
                "random picks (mean)",
                "median gap",
                "random (median)",
                "searched where none can",
            ],
            [
                [
                    SHORT.get(m["method"], m["method"]),
                    m["cells"],
                    f"{m['mean_benchmark']:.2f}",
                    f"{m['mean_benchmark_random']:.2f}",
                    m["near_front"],
                    f"{m['near_front_random']:.2f}",
                    f"{m['median_gap']:.2f}",
                    f"{m['median_gap_random']:.2f}",
                    m["impossible"],
                ]
                for m in methods
            ],
        )
    record = {
        "experiment": NAME,
        "quick": args.quick,
        "benchmark": "cells a budgeted search may derive (no none, within the tolerance of the budget), looked up "
        "afterwards on NAS-Bench-201 against the accuracy-FLOPs front",
        "searched_supernet": SEARCHED,
        "tolerance": args.tolerance,
        "near": NEAR,
        "against": rel(Path(args.against)) if args.against else None,
        "windows": windows,
        "methods": methods,
        "table": text,
    }
    write_record(Path(args.out), record)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
