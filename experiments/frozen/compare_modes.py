"""The three modes on the nb201 space: gdas, darts and snas.

For each mode (``supernet.mode``), searches with seeds 0..n-1 on the built-in
synthetic data set with the same budget (the gdas searches are the ones
search_vs_random.py runs, shared through the run cache), then retrains every
derived cell with the same short budget and seed. Reports, per mode, the
derived cells, their parameter-free op counts (skip + pool + none, from
nas.inspect.collapse_counts) and their retrained test accuracy. DARTS is
known to collapse to skip_connect-heavy cells on NAS-Bench-201; this shows
what happens at this (much smaller) scale.

    python experiments/compare_modes.py                         # full run
    python experiments/compare_modes.py --quick --out /tmp/x.json
    python experiments/compare_modes.py --seeds 2 --modes gdas,darts

With matplotlib installed it also saves accuracy vs parameter-free ops as a PNG
next to the JSON.
"""
from __future__ import annotations

import common as C

NAME = "compare_modes"
MODES = ("gdas", "darts", "snas")


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json")
    p.add_argument("--seeds", type=int, default=None, help="search seeds per mode (default 2)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of gdas,darts,snas")
    p.add_argument("--retrain-seed", type=int, default=0, help="run.seed of every retrain")
    args = p.parse_args()
    ctx = C.setup(args)
    seeds = args.seeds or 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    data = C.dataset_overrides(ctx)
    retrain = data + C.retrain_overrides(args.dataset, args.quick) + [f"run.seed={args.retrain_seed}"]
    rows = []
    for mode in modes:
        for seed in range(seeds):
            s = ctx.runner.search(data + C.search_overrides(args.dataset, args.quick) + [f"supernet.mode={mode}", f"run.seed={seed}"],
                                  label=f"{args.dataset} {mode} seed {seed}")
            r = ctx.runner.retrain(retrain, s["genotype"], label=f"{args.dataset} {mode} seed {seed}")
            counts = C.collapse_counts(s["genotype"])["normal"]
            last = s["metrics"][-1]
            rows.append({"mode": mode, "seed": seed, "genotype": str(s["genotype"]), "counts": counts,
                         "param_free": C.param_free(s["genotype"]), "test_acc": r["test_acc"],
                         "test_loss": r["test_loss"], "params": r["params"], "macs": r["macs"],
                         "search_val_acc": last["val_acc"], "search_entropy": last["entropy"],
                         "search_seconds": s["seconds"], "retrain_seconds": r["seconds"]})
    summary = []
    for mode in modes:
        sel = [r for r in rows if r["mode"] == mode]
        m, sd = C.mean_std(r["test_acc"] for r in sel)
        summary.append({
            "mode": mode, "n": len(sel), "test_acc_mean": m, "test_acc_std": sd,
            "param_free_mean": C.mean_std(r["param_free"] for r in sel)[0],
            "skip_mean": C.mean_std(r["counts"]["skip"] for r in sel)[0],
            "pool_mean": C.mean_std(r["counts"]["pool"] for r in sel)[0],
            "none_mean": C.mean_std(r["counts"]["none"] for r in sel)[0],
            "search_seconds_mean": C.mean_std(r["search_seconds"] for r in sel)[0],
            "cells": [r["genotype"] for r in sel],
        })

    plot = None
    if rows:
        def draw(plt):
            for mode in modes:
                sel = [r for r in rows if r["mode"] == mode]
                plt.scatter([r["param_free"] for r in sel], [r["test_acc"] for r in sel], label=mode)
            plt.xlabel("parameter-free ops in the cell (skip + pool + none)")
            plt.ylabel("retrained test accuracy (%)")
            plt.legend()
        plot = C.save_plot(draw, ctx.out.with_suffix(".png"))

    text = "\n".join([
        "Per search (derived cell retrained with the same budget and seed):",
        C.table(["mode", "seed", "test acc %", "skip", "pool", "none", "param-free", "search s", "cell"],
                [[r["mode"], r["seed"], f"{r['test_acc']:.2f}", r["counts"]["skip"], r["counts"]["pool"],
                  r["counts"]["none"], r["param_free"], f"{r['search_seconds']:.0f}", r["genotype"]] for r in rows]),
        "",
        "Per mode (mean over seeds):",
        C.table(["mode", "seeds", "test acc % (mean ± std)", "param-free ops (mean)", "skip / pool / none (mean)",
                 "search s (mean)"],
                [[s["mode"], s["n"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                  f"{s['param_free_mean']:.2f}", f"{s['skip_mean']:.2f} / {s['pool_mean']:.2f} / {s['none_mean']:.2f}",
                  f"{s['search_seconds_mean']:.0f}"] for s in summary]),
    ])
    C.finish(ctx, NAME, {"seeds": seeds, "modes": modes, "retrain_seed": args.retrain_seed,
                         "dataset": args.dataset, "budget": C.budget(args.quick), "rows": rows,
                         "summary": summary, "plot": plot}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
