"""How much a GDAS search depends on its seed: per-edge op frequencies over search seeds.

Runs (or reuses from the run cache) n GDAS searches with seeds 0..n-1 on the
built-in synthetic data set, with the settings search_vs_random.py and
compare_modes.py use, and summarises: per edge of the NB201 cell, how often
each op is the derived one (a 6 x 5 frequency table), the mean final
probability of each op per edge, and the distinct derived cells with their
counts. No retraining.

    python experiments/seed_variance.py                       # full run (4 seeds)
    python experiments/seed_variance.py --quick --out /tmp/x.json
    python experiments/seed_variance.py --seeds 8

With matplotlib installed it also saves the op probabilities over epochs of
seed 0 (from its arch_probs.jsonl) as a PNG next to the JSON.
"""
from __future__ import annotations

from collections import Counter

import common as C
from nas.io import read_jsonl

NAME = "seed_variance"


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json")
    p.add_argument("--seeds", type=int, default=None, help="number of search seeds (default 4; quick 3)")
    p.add_argument("--mode", default="gdas", choices=["gdas", "darts", "snas"])
    args = p.parse_args()
    ctx = C.setup(args)
    n = args.seeds or (3 if args.quick else 4)
    data = C.dataset_overrides(ctx)
    searches = []
    for seed in range(n):
        overrides = data + C.search_overrides(args.dataset, args.quick) + [f"supernet.mode={args.mode}", f"run.seed={seed}"]
        s = ctx.runner.search(overrides,
                              label=f"{args.dataset} {args.mode} seed {seed}")
        probs = s["genotype"].probs["normal"]
        searches.append({"seed": seed, "genotype": str(s["genotype"]), "ops": C.cell_ops(s["genotype"]),
                         "final_probs": probs, "param_free": C.param_free(s["genotype"]),
                         "search_val_acc": s["metrics"][-1]["val_acc"], "run_dir": str(s["run_dir"]),
                         "cached": s["cached"]})
    ops = list(C.NB201_OPS)
    freq = [[sum(s["ops"][e] == op for s in searches) for op in ops] for e in range(len(C.EDGES))]
    mean_probs = [[C.mean_std(s["final_probs"][e][i] for s in searches)[0] for i in range(len(ops))]
                  for e in range(len(C.EDGES))]
    distinct = Counter(s["genotype"] for s in searches)
    agreement = [max(row) / n for row in freq]  # share of seeds agreeing with the most common op, per edge

    plot = None
    if searches:
        history = read_jsonl(f"{searches[0]['run_dir']}/arch_probs.jsonl")

        def draw(plt):
            epochs = [h["epoch"] for h in history]
            fig = plt.gcf()
            fig.set_size_inches(10, 6)
            for e, name in enumerate(C.EDGES):
                ax = fig.add_subplot(2, 3, e + 1)
                for i, op in enumerate(history[0]["ops"]):
                    ax.plot(epochs, [h["probs"]["normal"][e][i] for h in history], label=op)
                ax.set_title(f"edge {name}")
                ax.set_xlabel("epoch")
                ax.set_ylim(0, 1)
                if e == 0:
                    ax.set_ylabel("op probability")
            fig.axes[-1].legend(fontsize=7)
        if history:
            plot = C.save_plot(draw, ctx.out.with_suffix(".png"))

    text = "\n".join([
        f"Derived op per edge over {n} {args.mode} search seeds: count of seeds (mean final probability)",
        C.table(["edge", *ops, "agreement"],
                [[C.EDGES[e], *[f"{freq[e][i]} ({mean_probs[e][i]:.2f})" for i in range(len(ops))],
                  f"{agreement[e]:.2f}"] for e in range(len(C.EDGES))]),
        "",
        f"Distinct derived cells: {len(distinct)} of {n} seeds",
        C.table(["seeds", "param-free ops", "cell"],
                [[count, C.param_free(C.Genotype.from_nb201(cell)), cell] for cell, count in distinct.most_common()]),
    ])
    C.finish(ctx, NAME, {"seeds": n, "mode": args.mode, "dataset": args.dataset, "budget": C.budget(args.quick),
                         "edges": C.EDGES,
                         "ops": ops, "frequency": freq, "mean_final_probs": mean_probs, "agreement": agreement,
                         "distinct_cells": [{"cell": c, "seeds": k} for c, k in distinct.most_common()],
                         "rows": searches, "plot": plot}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
