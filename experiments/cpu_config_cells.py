"""Cells of finished ``configs/nb201_cifar10_cpu.yaml`` searches, retrained against random cells.

For each search run directory given, the derived cell is taken twice from the run's
final op probabilities: with ``none`` allowed to win an edge (GDAS's rule) and without
(``supernet.derive_none: false``, DARTS's rule, the config's setting). Both, and k
uniformly random NB201 cells, are retrained with the shared short CIFAR-10 budget of
``experiments/common.py`` (the same subset, seed and settings as ``search_vs_random``,
whose random-cell retrains it shares through the run cache).

    python experiments/cpu_config_cells.py RUN_DIR [RUN_DIR ...]
    python experiments/cpu_config_cells.py --quick --out /tmp/x.json   # smoke test: tiny synthetic searches
"""
from __future__ import annotations

from pathlib import Path

import common as C
from nas.genotype import Genotype, derive_argmax, nb201_edges

NAME = "cpu_config_cells"


def cells_of(geno: Genotype):
    """(rule, cell) for GDAS's rule and for the rule without none, from ``geno``'s probabilities."""
    probs, ops = geno.probs["normal"], geno.ops
    out = []
    for rule, include_none in (("with none (GDAS)", True), ("without none (derive_none: false)", False)):
        best = derive_argmax(probs, ops, include_none)
        out.append((rule, Genotype("nb201", [(ops[k], j) for k, (_, j) in zip(best, nb201_edges())],
                                   normal_concat=geno.normal_concat)))
    return out


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json", dataset_option=False)
    p.add_argument("runs", nargs="*", type=Path, help="finished nb201_cifar10_cpu search run directories")
    p.add_argument("-k", "--k", type=int, default=3, help="random cells (default 3)")
    p.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py/ (default: data/)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="longer retrains: this many full passes over the subset (default: the shared budget, "
                        "6 epochs of 40 steps)")
    args = p.parse_args()
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        p.error("--retrain-epochs must be >= 1")
    if not args.quick and not args.runs:
        p.error("give at least one search run directory (or --quick)")
    ctx = C.setup(args)
    if args.quick:  # tiny synthetic searches stand in for the CIFAR-10 runs
        data = C.data_overrides("synthetic", True)
        runs = [ctx.runner.search(data + C.search_overrides("cifar10", True) + [f"run.seed={s}"], label=f"quick search {s}")["run_dir"]
                for s in range(2)]
        retrain = data + C.retrain_overrides("synthetic", True) + ["run.seed=0"]
    else:
        root = C.cifar_data(ctx, args.cifar_root)
        if root is None:
            ctx.close()
            return 2
        runs = args.runs
        retrain = C.data_overrides("cifar10", False, root) + C.retrain_overrides("cifar10", False) + ["run.seed=0"]
    if args.retrain_epochs is not None:
        retrain += [f"retrain.nb201.epochs={args.retrain_epochs}", "retrain.nb201.steps_per_epoch=null"]
    rows = []
    for run in runs:
        geno = Genotype.from_json((Path(run) / "genotype.json").read_text())
        for rule, cell in cells_of(geno):
            r = ctx.runner.retrain(retrain, cell, label=f"{Path(run).name} {rule}")
            rows.append({"run": str(run), "rule": rule, "genotype": str(cell), "param_free": C.param_free(cell),
                         "none": sum(op == "none" for op, _ in cell.normal), "test_acc": r["test_acc"],
                         "params": r["params"], "macs": r["macs"]})
    for i, cell in enumerate(C.random_nb201_cells(args.k, 0)):
        r = ctx.runner.retrain(retrain, cell, label=f"random {i}")
        rows.append({"run": f"random {i}", "rule": "uniform random", "genotype": str(cell),
                     "param_free": C.param_free(cell), "none": sum(op == "none" for op, _ in cell.normal),
                     "test_acc": r["test_acc"], "params": r["params"], "macs": r["macs"]})
    summary = []
    for rule in dict.fromkeys(r["rule"] for r in rows):
        sel = [r for r in rows if r["rule"] == rule]
        m, sd = C.mean_std(r["test_acc"] for r in sel)
        summary.append({"rule": rule, "n": len(sel), "test_acc_mean": m, "test_acc_std": sd,
                        "param_free_mean": sum(r["param_free"] for r in sel) / len(sel)})
    text = "\n".join([
        f"Cells retrained with the same budget and seed ({' '.join(o for o in retrain if o.startswith('retrain.'))}):",
        C.table(["source", "cell from", "test acc %", "param-free ops", "params", "cell"],
                [[Path(r["run"]).name, r["rule"], f"{r['test_acc']:.2f}", r["param_free"], f"{r['params']:,}",
                  r["genotype"]] for r in rows]),
        "",
        C.table(["cell from", "n", "test acc % (mean ± std)", "mean param-free ops"],
                [[s["rule"], s["n"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                  f"{s['param_free_mean']:.1f}"] for s in summary]),
    ])
    C.finish(ctx, NAME, {"runs": [str(r) for r in runs], "retrain_overrides": retrain, "rows": rows,
                         "summary": summary,
                         "budget": C.budget(args.quick)}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
