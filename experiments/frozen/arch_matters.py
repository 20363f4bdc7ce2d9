"""On the built-in synthetic data set the choice of architecture matters.

Retrains fixed NB201 cells with the same short budget over several seeds:
all nor_conv_3x3, all skip_connect, all avg_pool_3x3 and, with ``--mixed``, a
mixed cell (the NAS-Bench-201 ResNet-like cell: two 3x3 convs with a skip). The
conv-heavy cell should clearly beat the all-skip and all-pool cells. ``run.seed`` seeds the
weights, the data order and augmentation, and the synthetic data set itself.

    python experiments/arch_matters.py                       # full run (3 seeds)
    python experiments/arch_matters.py --quick --out /tmp/x.json
"""
from __future__ import annotations

import common as C

NAME = "arch_matters"
MIXED = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"  # NB201's ResNet cell
CELLS = {
    "all nor_conv_3x3": C.uniform_cell("nor_conv_3x3"),
    "all skip_connect": C.uniform_cell("skip_connect"),
    "all avg_pool_3x3": C.uniform_cell("avg_pool_3x3"),
}


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json")
    p.add_argument("--seeds", type=int, default=None, help="retraining seeds (default 3; quick 2)")
    p.add_argument("--mixed", action="store_true", help=f"also retrain the mixed cell {MIXED}")
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="retraining epochs (default: the shared budget of experiments/common.py). The glyph "
                        "task sits on a chance plateau for a while, so a longer budget shows the "
                        "architecture's effect without the plateau lottery")
    args = p.parse_args()
    if args.retrain_epochs is not None and args.retrain_epochs < 1:
        p.error("--retrain-epochs must be >= 1")
    ctx = C.setup(args)
    cells = dict(CELLS)
    if args.mixed:
        cells["mixed (ResNet cell)"] = C.Genotype.from_nb201(MIXED)
    seeds = args.seeds or (2 if args.quick else 3)
    data = C.dataset_overrides(ctx)
    retrain = C.retrain_overrides(args.dataset, args.quick)
    if args.retrain_epochs is not None:
        retrain.append(f"retrain.nb201.epochs={args.retrain_epochs}")
    rows = []
    for name, geno in cells.items():
        for seed in range(seeds):
            r = ctx.runner.retrain(data + retrain + [f"run.seed={seed}"], geno,
                                   label=f"{name} seed {seed}")
            rows.append({"cell_name": name, "seed": seed, "genotype": str(geno), "param_free": C.param_free(geno),
                         "test_acc": r["test_acc"], "test_loss": r["test_loss"], "params": r["params"],
                         "macs": r["macs"], "retrain_seconds": r["seconds"]})
    summary = []
    for name, geno in cells.items():
        sel = [r for r in rows if r["cell_name"] == name]
        m, sd = C.mean_std(r["test_acc"] for r in sel)
        summary.append({"cell_name": name, "genotype": str(geno), "n": len(sel), "test_acc_mean": m,
                        "test_acc_std": sd, "per_seed": [r["test_acc"] for r in sel], "params": sel[0]["params"],
                        "macs": sel[0]["macs"]})
    by = {s["cell_name"]: s for s in summary}
    conv = by["all nor_conv_3x3"]
    others = [by["all skip_connect"], by["all avg_pool_3x3"]]
    # "Clearly": the worst conv seed beats the best seed of either parameter-free cell.
    clear = min(conv["per_seed"]) > max(v for o in others for v in o["per_seed"])
    gap = conv["test_acc_mean"] - max(o["test_acc_mean"] for o in others)
    verdict = (f"all nor_conv_3x3 beats all skip_connect and all avg_pool_3x3 by {gap:.2f} points (mean); "
               f"every conv seed above every skip/pool seed: {'yes' if clear else 'NO'}")
    text = "\n".join([
        f"Fixed cells retrained with the same budget ({' '.join(retrain)}), {seeds} seeds each:",
        C.table(["cell", "test acc % (mean ± std)", "per seed", "params", "MACs", "genotype"],
                [[s["cell_name"], f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                  " ".join(f"{v:.1f}" for v in s["per_seed"]), f"{s['params']:,}", f"{s['macs']:,}", s["genotype"]]
                 for s in summary]),
        verdict,
    ])
    C.finish(ctx, NAME, {"seeds": seeds, "dataset": args.dataset, "budget": C.budget(args.quick),
                         "retrain_overrides": retrain, "rows": rows,
                         "summary": summary,
                         "gap_conv_vs_best_param_free": gap, "clear_win": clear, "verdict": verdict}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
