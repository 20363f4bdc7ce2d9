"""``search.screen`` against NAS-Bench-201: did training the first cells alone pick a better cell?

For each screened search (a run folder whose ``screen.json`` has every row), read only after the
screen has ended: the search's own cell (the screen's first candidate) and the screened cell, with
their benchmark accuracy and gap to the accuracy-FLOPs front at their NB201 FLOPs; every
candidate's held-out accuracy beside its benchmark accuracy; and Kendall's tau between the two
over each run's candidates. Nothing here feeds back into a search.

    python -m experiments.screen_study RUN [RUN ...] --out experiments/results/screen_study.json
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from experiments import nb201_cost_front as front_mod
from experiments.machine import write_record
from experiments.nb201_cost_sweep import front_data
from experiments.stats import kendall_tau_b
from experiments.window_odds import searched_costs
from nas.benchmarks import cell_ops, load_benchmark
from nas.config import load_config
from nas.screen import load_record


def judge(cell: str, bench, front: Dict[str, Any], searched) -> Dict[str, Any]:
    """A cell's benchmark accuracy, its FLOPs in the searched supernet and in NB201's network, and its gap."""
    ops = list(cell_ops(cell))
    table, names = searched
    acc = bench.query(cell)
    flops = front_mod.cell_flops(ops, front["table"], front["op_names"])
    return {
        "cell": cell,
        "benchmark": acc,
        "supernet_flops": front_mod.cell_flops(ops, table, names),
        "nb201_flops": flops,
        "gap": front_mod.gap_to_front(front["points"], flops, acc),
    }


def study(run: Path, bench, front, searched) -> Dict[str, Any]:
    record = load_record(run)
    if record is None or len(record["rows"]) != len(record["candidates"]):
        raise SystemExit(f"{run}: no finished screen.json")
    cfg = load_config(run / "config.yaml")
    rows = [{**judge(r["cell"], bench, front, searched), "held_out_acc": r["held_out_acc"]} for r in record["rows"]]
    for r, raw in zip(rows, record["rows"]):
        r["minutes"] = raw["seconds"] / 60
    chosen = next(r for r in rows if r["cell"] == record["chosen"])
    held = [r["held_out_acc"] for r in rows]
    return {
        "run": str(run),
        "budget": cfg.search.cost.budget,
        "seed": cfg.run.seed,
        "ranked_by": record["ranked_by"],
        "epochs": record["epochs"],
        "searched": rows[0],
        "screened": chosen,
        "best_candidate": max(rows, key=lambda r: r["benchmark"]),
        "kendall_tau": kendall_tau_b(held, [r["benchmark"] for r in rows]),
        "candidates": rows,
        "screen_minutes": sum(r["minutes"] for r in rows),
    }


def summary(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    def mean(key: str, what: str) -> float:
        return statistics.mean(r[key][what] for r in results)

    return {
        "runs": len(results),
        "searched_mean": mean("searched", "benchmark"),
        "screened_mean": mean("screened", "benchmark"),
        "searched_median_gap": statistics.median(r["searched"]["gap"] for r in results),
        "screened_median_gap": statistics.median(r["screened"]["gap"] for r in results),
        "searched_within_half": sum(r["searched"]["gap"] <= 0.5 for r in results),
        "screened_within_half": sum(r["screened"]["gap"] <= 0.5 for r in results),
        "screened_is_best_candidate": sum(r["screened"]["cell"] == r["best_candidate"]["cell"] for r in results),
        "median_kendall_tau": statistics.median(r["kendall_tau"] for r in results),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="screened search run folders")
    p.add_argument("--out", type=Path, default=None, help="write the record here (JSON)")
    args = p.parse_args(argv)
    bench, front, searched = load_benchmark(), front_data(), searched_costs()
    results = [study(run, bench, front, searched) for run in args.runs]
    for r in results:
        s, c = r["searched"], r["screened"]
        print(
            f"{r['run']}: budget {r['budget']:.3g} seed {r['seed']}: searched {s['benchmark']:.2f} (gap {s['gap']:.2f}) "
            f"-> screened {c['benchmark']:.2f} (gap {c['gap']:.2f}); candidates' best {r['best_candidate']['benchmark']:.2f}; "
            f"tau {r['kendall_tau']:.2f}; {r['screen_minutes']:.0f} min"
        )
    total = summary(results)
    print(total)
    if args.out:
        write_record(args.out, {"experiment": "screen_study", "summary": total, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
