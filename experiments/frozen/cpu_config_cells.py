"""The CPU CIFAR-10 config's searches against uniformly random cells, retrained with the same budget.

Search: ``configs/nb201_cifar10_cpu.yaml`` as shipped (GDAS on 20k CIFAR-10 training images,
C=8, N=2, 60 epochs with 20 warm-up), one search per seed, or finished search run
directories of that config given on the command line (e.g. made with ``python search.py
--config configs/nb201_cifar10_cpu.yaml --set run.seed=1 --out runs/cpu_config/s1``, which lets
the searches run side by side in separate processes).

For each search the derived cell is taken twice from the run's final op probabilities: with
``none`` allowed to win an edge (GDAS's rule) and without (``supernet.derive_none: false``,
DARTS's rule, the config's setting). Both, and k uniformly random NB201 cells, are retrained
with the shared short CIFAR-10 budget of ``experiments/common.py`` (the fixed 5000/2000
subset, the same seed and settings as ``search_vs_random``, whose random cells are the same:
the first k of ``random.Random(0)``). The last lines give, per rule, the share of (searched,
random) pairs in which the searched cell retrains better (0.5: no better than random
sampling) and its one-sided permutation p-value. With matplotlib installed, a PNG next to the
JSON shows each search's op probabilities over the epochs.

Calibration rows: the three cells that the GDAS authors' code derives on CIFAR-10 at full
budget, and the all-``skip_connect`` cell their DARTS searches collapse to (as published in
NATS-Bench), retrained with the same budget. If the budget does not put those GDAS cells above
random cells and the collapsed cell below them, it cannot rank cells as a full retrain does.

    python experiments/cpu_config_cells.py --seeds 0,1,2                     # runs the searches (28-31 min each on one core)
    python experiments/cpu_config_cells.py RUN_DIR [RUN_DIR ...]             # finished searches
    python experiments/cpu_config_cells.py RUN_DIR ... --retrain-epochs 20   # longer retrains
    python experiments/cpu_config_cells.py --quick --out /tmp/x.json         # smoke test: tiny synthetic searches
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import common as C
from nas.genotype import Genotype, derive_argmax
from nas.nb201 import nb201_edges
from nas.io import read_jsonl

NAME = "cpu_config_cells"
CPU_CONFIG = C.ROOT / "configs" / "nb201_cifar10_cpu.yaml"
RANDOM_RULE = "uniform random"
# Calibration cells, as published by the GDAS/NAS-Bench-201 authors (NATS-Bench's algos-v2 README,
# CIFAR-10, full 250-epoch searches on a GPU): their GDAS code's three derived cells, and the cell
# their DARTS V1 and V2 searches collapse to on every seed (all skip_connect). Retrained with the
# same budget, they show whether that budget ranks cells the way a full-scale search does.
REFERENCE_CELLS = {
    "GDAS, authors' code, full budget": [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    ],
    "DARTS collapse (all skip_connect)": [
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    ],
}


def cells_of(geno: Genotype):
    """(rule, cell) for GDAS's rule and for the rule without none, from ``geno``'s probabilities."""
    probs, ops = geno.probs["normal"], geno.ops
    out = []
    for rule, include_none in (("with none (GDAS)", True), ("without none (derive_none: false)", False)):
        best = derive_argmax(probs, ops, include_none)
        out.append((rule, Genotype("nb201", [(ops[k], j) for k, (_, j) in zip(best, nb201_edges())],
                                   normal_concat=geno.normal_concat)))
    return out


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ValueError naming the expected form."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ValueError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}")
    return seeds


def mean_probs_per_epoch(run: Path) -> Optional[Dict[str, list]]:
    """``{epochs, ops, probs[op][epoch]}``: each op's probability averaged over the edges, from arch_probs.jsonl."""
    lines = read_jsonl(Path(run) / "arch_probs.jsonl")
    if not lines:
        return None
    ops = lines[0]["ops"]
    per_op = {op: [] for op in ops}
    for line in lines:
        rows = line["probs"]["normal"]
        for k, op in enumerate(ops):
            per_op[op].append(sum(r[k] for r in rows) / len(rows))
    return {"epochs": [line["epoch"] for line in lines], "ops": ops, "probs": per_op}


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json", dataset_option=False)
    p.add_argument("runs", nargs="*", type=Path, help="finished nb201_cifar10_cpu search run directories")
    p.add_argument("--seeds", default=None,
                   help="run the config's searches for these seeds (comma-separated) instead of reading run "
                        "directories; cached under --cache")
    p.add_argument("-k", "--k", type=int, default=None, help="random cells (default 10; quick 2)")
    p.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py/ (default: data/)")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="longer retrains: this many full passes over the subset (default: the shared budget, "
                        "6 epochs of 40 steps)")
    args = p.parse_args()
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        p.error("--retrain-epochs must be >= 1")
    k = args.k if args.k is not None else (2 if args.quick else 10)
    if k < 1:
        p.error("--k must be >= 1")
    seeds = None
    if args.seeds is not None:
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as exc:
            p.error(str(exc))
    if args.runs and seeds:
        p.error("give run directories or --seeds, not both")
    if not args.quick and not args.runs and not seeds:
        p.error("give search run directories, or --seeds 0,1,2 to run the searches (or --quick)")
    for run in args.runs:
        if not (run / "genotype.json").is_file():
            p.error(f"{run} has no genotype.json: is it a search run directory?")
    ctx = C.setup(args)
    if args.quick:  # tiny synthetic searches stand in for the CIFAR-10 runs
        data = C.data_overrides("synthetic", True)
        runs = [ctx.runner.search(data + C.search_overrides("cifar10", True) + [f"run.seed={s}"], label=f"quick search {s}")["run_dir"]
                for s in range(2)]
        retrain = data + C.retrain_overrides("synthetic", True) + ["run.seed=0"]
    else:
        source = Path(args.cifar_root) if args.cifar_root else C.DEFAULT_CIFAR_ROOT
        root = C.cifar_data(ctx, args.cifar_root)
        if root is None:
            ctx.close()
            return 2
        if seeds:
            search = [f"data.root={source}", "data.verify_md5=false"]
            runs = [ctx.runner.search(search + [f"run.seed={s}"], label=f"cpu config seed {s}", base=CPU_CONFIG)["run_dir"]
                    for s in seeds]
        else:
            runs = args.runs
        retrain = C.data_overrides("cifar10", False, root) + C.retrain_overrides("cifar10", False) + ["run.seed=0"]
    if args.retrain_epochs is not None:
        retrain += [f"retrain.nb201.epochs={args.retrain_epochs}", "retrain.nb201.steps_per_epoch=null"]
    def retrain_row(source: str, rule: str, cell: Genotype, label: str) -> dict:
        r = ctx.runner.retrain(retrain, cell, label=label)
        return {"run": source, "rule": rule, "genotype": str(cell), "param_free": C.param_free(cell),
                "none": sum(op == "none" for op, _ in cell.normal), "test_acc": r["test_acc"],
                "params": r["params"], "macs": r["macs"]}

    rows = []
    for run in runs:
        geno = Genotype.from_json((Path(run) / "genotype.json").read_text())
        for rule, cell in cells_of(geno):
            rows.append(retrain_row(str(run), rule, cell, label=f"{Path(run).name} {rule}"))
    for rule, cells in REFERENCE_CELLS.items():
        for i, text in enumerate(cells):
            cell = Genotype.from_nb201(text)
            rows.append(retrain_row(f"reference {i}", rule, cell, label=f"{rule} {i}"))
    for i, cell in enumerate(C.random_nb201_cells(k, 0)):
        rows.append(retrain_row(f"random {i}", RANDOM_RULE, cell, label=f"random {i}"))
    summary = []
    drawn = [r["test_acc"] for r in rows if r["rule"] == RANDOM_RULE]
    for rule in dict.fromkeys(r["rule"] for r in rows):
        sel = [r for r in rows if r["rule"] == rule]
        m, sd = C.mean_std(r["test_acc"] for r in sel)
        found = [r["test_acc"] for r in sel]
        searched = rule != RANDOM_RULE
        summary.append({"rule": rule, "n": len(sel), "test_acc_mean": m, "test_acc_std": sd,
                        "param_free_mean": sum(r["param_free"] for r in sel) / len(sel),
                        "win_share_vs_random": C.pairwise_win_share(found, drawn) if searched else None,
                        "win_share_p_value": C.win_share_p_value(found, drawn) if searched else None})

    trajectories = {Path(run).name: mean_probs_per_epoch(run) for run in runs}
    plot = C.save_plot(lambda plt: draw_trajectories(plt, trajectories), ctx.out.with_suffix(".png"))
    text = "\n".join([
        f"Cells retrained with the same budget and seed ({' '.join(o for o in retrain if o.startswith('retrain.'))}):",
        C.table(["source", "cell from", "test acc %", "param-free ops", "params", "cell"],
                [[Path(r["run"]).name, r["rule"], f"{r['test_acc']:.2f}", r["param_free"], f"{r['params']:,}",
                  r["genotype"]] for r in rows]),
        "",
        C.table(["cell from", "n", "test acc % (mean ± std)", "mean param-free ops", "win share vs random",
                 "p (one-sided)"],
                [[s["rule"], s["n"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                  f"{s['param_free_mean']:.1f}",
                  "-" if s["win_share_vs_random"] is None else f"{s['win_share_vs_random']:.2f}",
                  "-" if s["win_share_p_value"] is None else f"{s['win_share_p_value']:.3f}"] for s in summary]),
        "win share: the share of (searched, random) pairs in which the searched cell retrains better, ties "
        "counting half (0.5: no better than random sampling)",
    ])
    C.finish(ctx, NAME, {"runs": [str(r) for r in runs], "retrain_overrides": retrain, "rows": rows,
                         "summary": summary, "op_probabilities": trajectories, "plot": plot,
                         "budget": C.budget(args.quick)}, text)
    return 0


def draw_trajectories(plt, trajectories: Dict[str, Optional[dict]]) -> None:
    """One panel per search: each op's probability, averaged over the 6 edges, against the epoch."""
    shown = {name: t for name, t in trajectories.items() if t is not None}
    plt.gcf().set_size_inches(3.6 * max(1, len(shown)), 3.4)
    for i, (name, t) in enumerate(shown.items()):
        ax = plt.subplot(1, len(shown), i + 1, sharey=plt.gcf().axes[0] if i else None)
        for op in t["ops"]:
            ax.plot(t["epochs"], t["probs"][op], label=op)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch")
        if i == 0:
            ax.set_ylabel("op probability (mean over edges)")
            ax.legend(fontsize=7)


if __name__ == "__main__":
    raise SystemExit(main())
