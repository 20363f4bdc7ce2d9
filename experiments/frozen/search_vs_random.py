"""Search vs random: GDAS-searched NB201 cells against uniformly random ones, same retraining budget.

On the built-in synthetic data set and on a fixed CIFAR-10 subset, k GDAS
searches (seeds 0..k-1) each give a derived cell; k cells are drawn uniformly
from the 5^6 NB201 cells (seeded; ``--k-random`` draws more). Every cell is retrained from scratch with
the same short budget and the same retraining seed, so the only difference
between rows is the architecture. Prints mean ± std test accuracy per method
and the per-architecture rows, and for each data set the share of (search, random) pairs in which
the searched cell retrains better (ties count half): 0.5 is what a search no better than random
sampling gives on average, 1.0 means every searched cell beat every random one.

    python experiments/search_vs_random.py                       # full run (settings in experiments/common.py)
    python experiments/search_vs_random.py --quick --out /tmp/x.json
    python experiments/search_vs_random.py --cifar-root data      # folder holding cifar-10-batches-py/

The CIFAR-10 part is skipped, with a message, when the data is not there.
"""
from __future__ import annotations

from pathlib import Path

import common as C

NAME = "search_vs_random"


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json", dataset_option=False)
    p.add_argument("-k", "--k", type=int, default=None,
                   help="searches and random cells per data set (default 3; quick 2)")
    p.add_argument("--k-random", type=int, default=None,
                   help="random cells per data set (default: k). The first k are the same cells for any value")
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random-cell sampler")
    p.add_argument("--retrain-seed", type=int, default=0, help="run.seed of every retrain")
    p.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py/ (default: data/)")
    p.add_argument("--datasets", default="synthetic,cifar10", help="comma-separated: synthetic, cifar10")
    args = p.parse_args()
    ctx = C.setup(args)
    k = args.k or (2 if args.quick else 3)
    k_random = args.k_random or k
    rows, skipped = [], {}
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if dataset == "cifar10":
            root = C.cifar_data(ctx, args.cifar_root)
            if root is None:
                skipped[dataset] = "CIFAR-10 not found; pass --cifar-root"
                continue
        else:
            root = None
        data = C.data_overrides(dataset, args.quick, root)
        retrain = data + C.retrain_overrides(dataset, args.quick) + [f"run.seed={args.retrain_seed}"]
        for seed in range(k):
            s = ctx.runner.search(data + C.search_overrides(dataset, args.quick) + [f"run.seed={seed}"],
                                  label=f"{dataset} gdas seed {seed}")
            r = ctx.runner.retrain(retrain, s["genotype"], label=f"{dataset} searched seed {seed}")
            last = s["metrics"][-1]
            rows.append({"dataset": dataset, "method": "search", "index": seed, "genotype": str(s["genotype"]),
                         "param_free": C.param_free(s["genotype"]), "test_acc": r["test_acc"],
                         "test_loss": r["test_loss"], "params": r["params"], "macs": r["macs"],
                         "search_val_acc": last["val_acc"], "search_seconds": s["seconds"],
                         "retrain_seconds": r["seconds"]})
        for i, geno in enumerate(C.random_nb201_cells(k_random, args.random_seed)):
            r = ctx.runner.retrain(retrain, geno, label=f"{dataset} random {i}")
            rows.append({"dataset": dataset, "method": "random", "index": i, "genotype": str(geno),
                         "param_free": C.param_free(geno), "test_acc": r["test_acc"], "test_loss": r["test_loss"],
                         "params": r["params"], "macs": r["macs"], "retrain_seconds": r["seconds"]})

    summary = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in ("search", "random"):
            sel = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            m, sd = C.mean_std(r["test_acc"] for r in sel)
            summary.append({"dataset": dataset, "method": method, "n": len(sel), "test_acc_mean": m,
                            "test_acc_std": sd, "param_free_mean": C.mean_std(r["param_free"] for r in sel)[0]})
    wins, p_values = {}, {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        found = [r["test_acc"] for r in rows if r["dataset"] == dataset and r["method"] == "search"]
        drawn = [r["test_acc"] for r in rows if r["dataset"] == dataset and r["method"] == "random"]
        wins[dataset] = C.pairwise_win_share(found, drawn)
        p_values[dataset] = C.win_share_p_value(found, drawn)
    text = "\n".join([
        "Per architecture (retrained with the same budget and seed):",
        C.table(["data", "method", "#", "test acc %", "param-free ops", "params", "cell"],
                [[r["dataset"], r["method"], r["index"], f"{r['test_acc']:.2f}", r["param_free"],
                  f"{r['params']:,}", r["genotype"]] for r in rows]),
        "",
        "Search vs random (mean ± std over the k cells):",
        C.table(["data", "method", "k", "test acc % (mean ± std)", "mean param-free ops"],
                [[s["dataset"], s["method"], s["n"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                  f"{s['param_free_mean']:.1f}"] for s in summary]),
        "",
        *[f"{d}: searched cell better than random cell in {w:.2f} of the search x random pairs (0.5: no better; "
          f"one-sided permutation p = {p_values[d]:.3f})" for d, w in wins.items()],
        *[f"skipped {d}: {why}" for d, why in skipped.items()],
    ])
    C.finish(ctx, NAME, {"k": k, "k_random": k_random, "pairwise_win_share": wins,
                         "win_share_p_value": p_values, "random_seed": args.random_seed, "retrain_seed": args.retrain_seed,
                         "budget": C.budget(args.quick), "skipped": skipped, "rows": rows, "summary": summary}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
