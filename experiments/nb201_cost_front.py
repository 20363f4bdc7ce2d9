"""The true accuracy–FLOPs Pareto front of NAS-Bench-201 (issue 30, part 4's computable half).

Every one of the 15,625 cells' multiply-adds ("FLOPs") in the benchmark's own network (C = 16,
N = 5, 32x32 CIFAR-10 inputs), counted by the project's cost table (``nas.cost``, the counter of
``nas.flops``): the fixed part (stem, reductions, head) plus, per edge, its op's cost summed over
the 15 cells, where an op reading a node all of whose inputs are ``none`` costs nothing (the network
skips it). A sample of cells is checked against :func:`nas.cost.derived_cost`, which forces each
cell on the supernet and counts what runs. With the packaged CIFAR-10 test accuracies this gives
the Pareto front: the cells no other cell beats at equal or lower FLOPs. A searched cell's gap to
the front is the best accuracy at or below its FLOPs minus its own (:func:`gap_to_front`).

    python -m experiments.nb201_cost_front                        # about 10 s
    python -m experiments.nb201_cost_front --quick --out /tmp/f.json

With ``--latency TABLE`` (a ``measure-latency`` table of the same network) it also gives every
cell's latency on the machine that measured it, the accuracy-latency front, and a check of the
table's sum against timing whole forced networks::

    python search.py measure-latency --config nb201_cifar10_cpu --set supernet.C=16 \
        --set supernet.N=5 --device cpu --batch-size 64 --out nb201_latency_cpu.json
    python -m experiments.nb201_cost_front --latency nb201_latency_cpu.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

import nas
from experiments.machine import set_threads, write_record
from experiments.settings import RESULTS, rel
from experiments.tables import log, save_plot, table
from nas.benchmarks import cell_ops
from nas.cost import CostTable, cost_table, derived_cost, load_latency_table
from nas.flops import inference
from nas.nb201 import nb201_edges

DEFAULT_OUT = RESULTS / "nb201_cost_front.json"
BENCH_NET = dict(C=16, N=5, num_classes=10)  # NAS-Bench-201's network
INPUT = (3, 32, 32)
FLOOR = 84.0  # the figure's lowest accuracy


def cell_flops(ops: Sequence[str], table: CostTable, op_names: Sequence[str], skip_zeros: bool = True) -> float:
    """A cell's network cost from the table: the fixed part plus each edge that runs.

    An edge runs when its op is not ``none`` and its source node is not a structural zero (node 0
    never is; a later node is one when no edge into it runs). ``skip_zeros=False`` counts every op
    that is not ``none``, as NAS-Bench-201's own network runs them (on zeros)."""
    costs = table.costs["normal"]
    live = [True]
    total = table.fixed
    edges = nb201_edges()
    for node in range(1, 4):
        runs = False
        for e, (i, j) in enumerate(edges):
            if i != node or ops[e] == "none" or (skip_zeros and not live[j]):
                continue
            runs = True
            total += float(costs[e, op_names.index(ops[e])])
        live.append(runs)
    return total


def pareto_front(points: Sequence[Tuple[float, float, int]]) -> List[Tuple[float, float, int]]:
    """The ``(flops, accuracy, index)`` points that no other point matches or beats in accuracy at
    equal or lower flops; ascending flops (and accuracy). Ties go to the lowest index."""
    front: List[Tuple[float, float, int]] = []
    for f, a, i in sorted(points, key=lambda p: (p[0], -p[1], p[2])):
        if not front or a > front[-1][1]:
            front.append((f, a, i))
    return front


def gap_to_front(front: Sequence[Tuple[float, float, int]], flops: float, accuracy: float) -> float:
    """The best accuracy at or below ``flops`` on the front, minus ``accuracy`` (points; >= 0 for a benchmark cell)."""
    k = bisect.bisect_right([p[0] for p in front], flops)
    return (front[k - 1][1] if k else float("nan")) - accuracy


def run(check: int, seed: int) -> Dict[str, Any]:
    bench = nas.load_benchmark()
    net = nas.build_supernet("nb201", mode="gdas", **BENCH_NET)
    log("counting every candidate's multiply-adds at its input shape")
    table = cost_table(net, "flops", INPUT)
    params = cost_table(net, "params", INPUT)
    rows = []
    for i in range(len(bench)):
        ops = cell_ops(bench.arch_string(i))
        f = cell_flops(ops, table, net.ops)
        rows.append((f, bench.query(i), i, cell_flops(ops, params, net.ops), cell_flops(ops, table, net.ops, False)))
    log(f"checking {check} cells against the forced supernet")
    sample = random.Random(seed).sample(range(len(bench)), check)
    for i in sample:
        forced = derived_cost(net, table, bench.genotype(i), INPUT)
        if forced != rows[i][0]:
            raise SystemExit(
                f"cell {i}: the table says {rows[i][0]:.0f} multiply-adds, the forced supernet {forced:.0f}"
            )
    front = pareto_front([(r[0], r[1], r[2]) for r in rows])
    front_all = pareto_front([(r[4], r[1], r[2]) for r in rows])
    flops = sorted(r[0] for r in rows)
    best = max(rows, key=lambda r: (r[1], -r[2]))
    return {
        "table": table,
        "rows": rows,
        "checked": sample,
        "front": [
            {
                "index": i,
                "arch": bench.arch_string(i),
                "flops": f,
                "params": rows[i][3],
                "cifar10_test": a,
                "skips_ops": rows[i][4] != f,  # some op reads an all-none node: the network skips it
            }
            for f, a, i in front
        ],
        "front_counting_skipped_ops": [{"index": i, "flops": f, "cifar10_test": a} for f, a, i in front_all],
        "summary": {
            "cells": len(rows),
            "distinct_flops": len(set(flops)),
            "flops_min": flops[0],
            "flops_median": flops[len(flops) // 2],
            "flops_max": flops[-1],
            "fixed_flops": table.fixed,
            "best_cell": {"index": best[2], "flops": best[0], "cifar10_test": best[1]},
            "front_size": len(front),
            "front_cells_skipping_ops": sum(rows[i][4] != f for f, _, i in front),
            "front_size_counting_skipped_ops": len(front_all),
        },
    }


def timed_ms(net: Any, geno: Any, batch: int, repeats: int = 15) -> float:
    """Median wall time (ms) of the forced network's forward at ``batch`` (eval, no gradient)."""
    x = torch.zeros(batch, *INPUT)
    with inference(net), net.forced(geno):
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def latency(path: str, rows: List[Tuple[float, ...]], check: int, seed: int) -> Dict[str, Any]:
    """Every cell's latency from a measured table, the accuracy-latency front, and the table's sum
    against whole forced networks timed here (``check`` cells drawn at random)."""
    bench = nas.load_benchmark()
    net = nas.build_supernet("nb201", mode="gdas", **BENCH_NET)
    raw = json.loads(Path(path).read_text())
    data = load_latency_table(path, net, INPUT, batch_size=raw.get("batch_size", 0), device="cpu", any_machine=True)
    lut = cost_table(net, "latency", INPUT, latency=data)
    lat = [cell_flops(cell_ops(bench.arch_string(i)), lut, net.ops) for i in range(len(bench))]
    front = pareto_front([(lat[i], r[1], i) for i, r in enumerate(rows)])
    torch.set_num_threads(int(data["machine"]["threads"]))  # as measured
    sample = random.Random(seed + 1).sample(range(len(bench)), check)
    timed = [(i, lat[i], timed_ms(net, bench.genotype(i), int(data["batch_size"]))) for i in sample]
    ranks = spearman([r[0] for r in rows], lat)
    return {
        "table": {k: data[k] for k in ("device_name", "machine", "batch_size", "created", "whole_network")},
        "cells_ms": lat,
        "front": [{"index": i, "latency_ms": t, "cifar10_test": a, "flops": rows[i][0]} for t, a, i in front],
        "checked": [{"index": i, "table_ms": t, "timed_ms": m} for i, t, m in timed],
        "summary": {
            "min_ms": min(lat),
            "median_ms": statistics.median(lat),
            "max_ms": max(lat),
            "spearman_flops_latency": ranks,
            "table_over_timed_median": statistics.median(t / m for _, t, m in timed) if timed else None,
        },
    }


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(v: Sequence[float]) -> List[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def plot(rows: List[Tuple[float, ...]], front: List[Dict[str, Any]], path: Path) -> Optional[str]:
    def draw(plt) -> None:
        plt.scatter([r[0] / 1e6 for r in rows], [r[1] for r in rows], s=2, alpha=0.3, color="tab:gray", label="cell")
        xs, ys = [p["flops"] / 1e6 for p in front], [p["cifar10_test"] for p in front]
        plt.step(xs, ys, where="post", color="tab:red", linewidth=1)
        plt.scatter(xs, ys, s=12, color="tab:red", label=f"Pareto front ({len(front)} cells)")
        low = sum(r[1] < FLOOR for r in rows)
        plt.ylim(FLOOR, 95)  # the front spans 87-94.4%: most of the space's spread would hide it
        plt.text(0.98, 0.03, f"{low} cells below {FLOOR:g}% not shown", transform=plt.gca().transAxes, ha="right")
        plt.xlabel("multiply-adds (M), C=16 N=5, 32x32")
        plt.ylabel("CIFAR-10 test accuracy (%), NAS-Bench-201")
        plt.title("NAS-Bench-201: accuracy against FLOPs, all 15,625 cells")
        plt.legend(loc="center right")

    return save_plot(draw, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", type=int, default=100, help="cells checked against the forced supernet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: 1 on a busy machine)")
    p.add_argument("--latency", metavar="TABLE", help="a measure-latency table of C=16 N=5 at 32x32 (see above)")
    p.add_argument("--latency-check", type=int, default=8, help="cells timed whole against the table's sum")
    p.add_argument("--quick", action="store_true", help="check 3 cells, for the tests")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    set_threads(args.threads)
    check = 3 if args.quick else args.check
    result = run(check, args.seed)
    lat = latency(args.latency, result["rows"], args.latency_check, args.seed) if args.latency else None
    out = Path(args.out)
    png = out.with_suffix(".png")
    figure = plot(result["rows"], result["front"], png)
    s = result["summary"]
    text = table(
        ["FLOPs (M)", "CIFAR-10 test %", "index", "skips ops", "cell"],
        [
            [
                f"{q['flops'] / 1e6:.2f}",
                f"{q['cifar10_test']:.2f}",
                q["index"],
                "yes" if q["skips_ops"] else "",
                q["arch"],
            ]
            for q in result["front"]
        ],
    )
    record = {
        "experiment": "nb201_cost_front",
        "quick": args.quick,
        "benchmark": "NAS-Bench-201 cells' multiply-adds (nas.cost, C=16 N=5 32x32) and the accuracy-FLOPs Pareto front",
        "network": {**BENCH_NET, "input": list(INPUT)},
        "counting": "conv and linear multiply-adds per image (nas.flops); ops reading an all-none node are skipped",
        "checked_cells": result["checked"],
        "summary": s,
        "front": result["front"],
        "front_counting_skipped_ops": result["front_counting_skipped_ops"],
        **({"latency": {k: v for k, v in lat.items() if k != "cells_ms"}} if lat else {}),
        "figure": rel(figure) if figure else None,
        "table": text,
    }
    write_record(out, record, figures=[figure])
    print(
        f"{s['cells']} cells, {s['distinct_flops']} distinct FLOPs, {s['flops_min'] / 1e6:.2f}-{s['flops_max'] / 1e6:.2f} M "
        f"(fixed part {s['fixed_flops'] / 1e6:.2f} M); best cell {s['best_cell']['index']} at "
        f"{s['best_cell']['cifar10_test']:.2f}% and {s['best_cell']['flops'] / 1e6:.2f} M; front of {s['front_size']} cells"
    )
    if lat:
        ls = lat["summary"]
        print(
            f"latency at batch {lat['table']['batch_size']} on {lat['table']['device_name']}: "
            f"{ls['min_ms']:.1f}-{ls['max_ms']:.1f} ms (median {ls['median_ms']:.1f}); Spearman with FLOPs "
            f"{ls['spearman_flops_latency']:.3f}; latency front of {len(lat['front'])} cells"
            + (
                f"; table sum / whole network timed: median {ls['table_over_timed_median']:.2f} over "
                f"{len(lat['checked'])} cells"
                if lat["checked"]
                else ""
            )
        )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
