"""The project's search evidence, judged by NAS-Bench-201 lookup instead of CPU retrains.

Four parts, one JSON (``experiments/results/nb201_evidence.json``):

1. **Recorded runs.** Every NB201 cell a recorded search derived (``experiments/results/``,
   any JSON row with a ``genotype`` that a search produced), with its benchmark CIFAR-10 test
   accuracy and percentile.
2. **Search against random.** The CPU-config searches (``results/cifar_cpu_config/``) against the
   exact distribution of uniformly random cells, which is the whole table: each seed's
   percentile, and the chance that k random cells average at least as well as the k searches.
3. **Calibration of the CPU retrains.** Kendall's tau-b between the short-retrain accuracies
   recorded by earlier experiments and the benchmark's, per experiment file: what that
   evidence could and could not rank.
4. **Modes and derivation rules** (``--modes``, runs searches): gdas, snas and darts on
   NB201 CIFAR-10 at a CPU budget (``experiments.settings.SEARCH`` on the fixed 5000-image CIFAR-10
   subset),
   ``--seeds`` seeds each. Both derivation rules are read from the same search's final op
   probabilities: GDAS's (``none`` may win) and the none-excluded one. For each, the cell, its
   accuracy and its skip / pool / none counts.

With matplotlib, a PNG per search: the derived cell's benchmark accuracy over the epochs beside
the op probabilities (or the entropy, for runs that did not record them).

    python -m experiments.nb201_evidence --out /tmp/e.json     # parts 1-3 (seconds)
    python -m experiments.nb201_evidence --modes --seeds 3     # and part 4 (about 25 min, 2 cores)
    python -m experiments.nb201_evidence --quick --modes --out /tmp/x.json
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import nas
from experiments import study
from experiments.cifar_subset import cifar_available
from experiments.settings import DEFAULT_CIFAR_ROOT, RESULTS, budget, search_overrides
from experiments.stats import kendall_tau_b
from experiments.tables import fmt_pm, save_plot, table
from nas.benchmarks import cell_string, is_benchmark_cell
from nas.genotype import Genotype, derive_argmax
from nas.io import read_jsonl
from nas.report import collapse_counts

NAME = "nb201_evidence"
MODES = ("gdas", "snas", "darts")
CPU_CONFIG_RUNS = RESULTS / "cifar_cpu_config"
PLOTS = RESULTS / "nb201_evidence_plots"


def walk(obj: Any, path: str = "") -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Every dict inside a JSON value, with its path."""
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")


def result_files() -> List[Path]:
    out = []
    for p in sorted(RESULTS.rglob("*.json")):
        if p.name.startswith("quick_") or p.name.startswith(NAME) or p.name == "nb201_cpu_search.json":
            continue
        out.append(p)
    return out


def is_search_row(experiment: str, rel: str, where: str, row: Dict[str, Any]) -> bool:
    """Whether a recorded row holds a cell a search derived (not a random or reference cell)."""
    if rel.startswith("cifar_cpu_config/"):
        return where == ""  # an inspect report: the run's own derived cell
    if experiment == "cpu_config_cells":
        return str(row.get("run", "")).startswith("runs/")
    if experiment == "search_vs_random":
        return row.get("method") == "search"
    return experiment in ("compare_modes", "seed_variance") and where.startswith("rows[")


def row_dataset(experiment: str, record: Dict[str, Any], row: Dict[str, Any]) -> str:
    """The data the row's retrain (or search) used."""
    if experiment == "cpu_config_cells" or record.get("kind") == "search":
        return "cifar10"  # CIFAR-10 searches; their cells retrained on the 5000-image CIFAR-10 subset
    return row.get("dataset") or record.get("dataset") or "synthetic"


def recorded_cells(bench) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(searched cells, calibration pairs of retrain and benchmark accuracy) in the recorded results."""
    searched, pairs = [], []
    for path in result_files():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        rel = str(path.relative_to(RESULTS))
        experiment = record.get("experiment") or ""
        for where, row in walk(record):
            arch = row.get("genotype")
            if not isinstance(arch, str) or not is_benchmark_cell(arch):
                continue
            entry = {
                "file": rel,
                "where": where,
                "genotype": arch,
                "benchmark": bench.query(arch),
                "percentile": bench.percentile(arch),
                "dataset": row_dataset(experiment, record, row),
                "rule": row.get("rule"),
                "mode": row.get("mode"),
                "seed": row.get("seed"),
            }
            if is_search_row(experiment, rel, where, row):
                searched.append(entry)
            if isinstance(row.get("test_acc"), (int, float)):
                pairs.append({**entry, "retrain_acc": float(row["test_acc"])})
    return dedupe(searched), dedupe_pairs(pairs)


def dedupe(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    seen, out = set(), []
    for r in rows:
        key = (r["file"], r["where"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def dedupe_pairs(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    # The same cell and retrain can appear in a row and in a summary list; keep one per file.
    seen, out = set(), []
    for r in rows:
        key = (r["file"], r["genotype"], r["retrain_acc"], r.get("rule"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def calibration(pairs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    by_file: Dict[str, List[Dict[str, Any]]] = {}
    for p in pairs:
        by_file.setdefault(p["file"], []).append(p)
    for f, rows in by_file.items():
        # one retrain figure per distinct cell (the same cell under two labels is one point)
        cells: Dict[str, Tuple[float, float]] = {}
        for r in rows:
            cells.setdefault(r["genotype"], (r["retrain_acc"], r["benchmark"]))
        if len(cells) < 3:
            continue
        x = [v[0] for v in cells.values()]
        y = [v[1] for v in cells.values()]
        top = [v for v in cells.values() if v[1] >= 90.0]
        out.append(
            {
                "file": f,
                "dataset": rows[0]["dataset"],
                "cells": len(cells),
                "kendall_tau": kendall_tau_b(x, y),
                "cells_at_90_plus": len(top),
                "kendall_tau_90_plus": kendall_tau_b([v[0] for v in top], [v[1] for v in top])
                if len(top) >= 3
                else None,
            }
        )
    return out


def search_vs_random(bench, runs: List[Dict[str, Any]], draws: int, seed: int = 0) -> Dict[str, Any]:
    """Searched cells against uniformly random cells: the table is the exact random distribution."""
    space = [bench.query(i) for i in range(len(bench))]
    accs = [r["benchmark"] for r in runs]
    k = len(accs)
    mean = sum(accs) / k if k else float("nan")
    rng = random.Random(seed)
    at_least = sum(sum(rng.choice(space) for _ in range(k)) / k >= mean for _ in range(draws)) if k else 0
    return {
        "searches": k,
        "mean": mean,
        "space_mean": sum(space) / len(space),
        "space_median": sorted(space)[len(space) // 2],
        "percentiles": [r["percentile"] for r in runs],
        "p_random_mean_at_least": (at_least + 1) / (draws + 1),
        "draws": draws,
    }


def per_epoch_benchmark(bench, metrics: List[Dict[str, Any]]) -> List[Tuple[int, float]]:
    return [(m["epoch"], bench.query(m["genotype"])) for m in metrics if is_benchmark_cell(m.get("genotype") or "")]


def plot_run(
    bench, title: str, metrics: List[Dict[str, Any]], probs_log: Optional[List[Dict[str, Any]]], path: Path
) -> Optional[str]:
    curve = per_epoch_benchmark(bench, metrics)

    def draw(plt):
        fig = plt.gcf()
        fig.set_size_inches(10, 3.6)
        ax1 = fig.add_subplot(1, 2, 1)
        ax1.plot([e for e, _ in curve], [a for _, a in curve], marker=".")
        ax1.axhline(bench.best().accuracy, color="grey", ls=":", lw=1, label="space best")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("NB201 CIFAR-10 test acc (%)")
        ax1.set_title(title, fontsize=9)
        ax1.legend(fontsize=7)
        ax2 = fig.add_subplot(1, 2, 2)
        if probs_log:
            ops = probs_log[-1]["ops"]
            epochs = [r["epoch"] for r in probs_log]
            for k, op in enumerate(ops):
                mean = [sum(row[k] for row in r["probs"]["normal"]) / len(r["probs"]["normal"]) for r in probs_log]
                ax2.plot(epochs, mean, label=op)
            ax2.set_ylabel("op probability, mean over edges")
            ax2.legend(fontsize=7)
        else:
            ax2.plot([m["epoch"] for m in metrics], [m.get("entropy") for m in metrics])
            ax2.set_ylabel("mean edge entropy (nats)")
            ax2.set_title("op probabilities not recorded for this run", fontsize=8)
        ax2.set_xlabel("epoch")

    return save_plot(draw, path)


def counts(arch: str) -> Dict[str, int]:
    return collapse_counts(Genotype.from_nb201(arch))["normal"]


def both_rules(probs: List[List[float]], ops: Sequence[str]) -> Dict[str, str]:
    """The cells GDAS's rule and the none-excluded rule derive from the same probabilities."""
    out = {}
    for rule, include_none in (("gdas_rule", True), ("none_excluded", False)):
        out[rule] = cell_string([ops[k] for k in derive_argmax(probs, ops, include_none)])
    return out


def modes_study(ctx, bench, seeds: int, plot: bool) -> List[Dict[str, Any]]:
    data = study.dataset_overrides(ctx)
    rows = []
    for mode in MODES:
        for seed in range(seeds):
            s = ctx.runner.search(
                data
                + search_overrides(ctx.args.dataset, ctx.args.quick)
                + [f"supernet.mode={mode}", f"run.seed={seed}"],
                label=f"{ctx.args.dataset} {mode} seed {seed}",
            )
            probs_log = read_jsonl(s["run_dir"] / "arch_probs.jsonl")
            final = probs_log[-1]
            cells = both_rules(final["probs"]["normal"], final["ops"])
            row = {
                "mode": mode,
                "seed": seed,
                "search_seconds": s["seconds"],
                "final_entropy": s["metrics"][-1]["entropy"],
            }
            for rule, arch in cells.items():
                row[rule] = {
                    "genotype": arch,
                    "benchmark": bench.query(arch),
                    "percentile": bench.percentile(arch),
                    "counts": counts(arch),
                }
            if plot:
                row["plot"] = (
                    plot_run(
                        bench,
                        f"{mode} seed {seed} ({ctx.args.dataset}, CPU budget)",
                        s["metrics"],
                        probs_log,
                        PLOTS / f"modes_{mode}_s{seed}.png",
                    )
                    if not ctx.args.quick
                    else None
                )
            rows.append(row)
    return rows


def main() -> int:
    p = study.parser(__doc__, f"{NAME}.json")
    p.set_defaults(dataset="cifar10")
    p.add_argument("--modes", action="store_true", help="run part 4 (searches in three modes)")
    p.add_argument("--seeds", type=int, default=3, help="search seeds per mode in part 4 (default 3)")
    p.add_argument("--draws", type=int, default=100_000, help="random draws for the search-vs-random p-value")
    args = p.parse_args()
    if args.seeds < 1 or args.draws < 1:
        p.error("--seeds and --draws must be >= 1")
    recorded = RESULTS / f"{NAME}.json"
    if not args.modes and not args.quick and args.out is None and recorded.exists():
        try:
            has_modes = bool(json.loads(recorded.read_text()).get("modes"))
        except (OSError, ValueError):
            has_modes = False
        if has_modes:  # parts 1-3 alone would write the record again without part 4's searches
            p.error(f"{recorded} holds part 4's recorded searches; give --out FILE for parts 1-3 alone, or add --modes")
    if args.quick and args.dataset == "cifar10" and not cifar_available(Path(args.cifar_root or DEFAULT_CIFAR_ROOT)):
        args.dataset = "synthetic"  # the quick test runs without CIFAR-10
    ctx = study.setup(args)
    bench = nas.load_benchmark()

    searched, pairs = recorded_cells(bench)
    cpu_runs = []
    for report in sorted(CPU_CONFIG_RUNS.glob("run_*.json")):
        rep = json.loads(report.read_text())
        metrics = read_jsonl(report.with_name(report.stem + "_metrics.jsonl"))
        ops = rep["ops"]
        rules = both_rules([[r["probs"][op] for op in ops] for r in rep["final_probs"]["normal"]], ops)
        arch = rules["none_excluded"]  # the shipped config's rule, whatever rule the run itself used
        row = {
            "run": report.stem,
            "genotype": arch,
            "benchmark": bench.query(arch),
            "gdas_rule": {
                "genotype": rules["gdas_rule"],
                "benchmark": bench.query(rules["gdas_rule"]),
                "none": counts(rules["gdas_rule"])["none"],
            },
            "percentile": bench.percentile(arch),
            "counts": counts(arch),
            "derive_none": rep.get("derive_none"),
            "epochs": rep.get("epochs_done"),
            "final_entropy": metrics[-1]["entropy"] if metrics else None,
        }
        if not args.quick:
            row["plot"] = plot_run(
                bench,
                f"{report.stem} (configs/nb201_cifar10_cpu.yaml, recorded)",
                metrics,
                None,
                PLOTS / f"{report.stem}.png",
            )
        cpu_runs.append(row)
    # The finished 60-epoch runs of the shipped CPU config are the L and xeon runs (A and B are
    # 50-epoch trials of an earlier setting).
    shipped = [r for r in cpu_runs if r["epochs"] == 60]
    vs_random = search_vs_random(bench, shipped, 1000 if args.quick else args.draws)
    calib = calibration(pairs)
    modes = modes_study(ctx, bench, 1 if args.quick else args.seeds, plot=True) if args.modes else []

    lines = [
        "Recorded CPU-config searches (configs/nb201_cifar10_cpu.yaml; cell: the none-excluded rule):",
        table(
            [
                "run",
                "epochs",
                "NB201 acc %",
                "percentile",
                "skip",
                "pool",
                "GDAS rule %",
                "its none",
                "H final",
                "cell",
            ],
            [
                [
                    r["run"],
                    r["epochs"],
                    f"{r['benchmark']:.2f}",
                    f"{r['percentile']:.1f}",
                    r["counts"]["skip"],
                    r["counts"]["pool"],
                    f"{r['gdas_rule']['benchmark']:.2f}",
                    r["gdas_rule"]["none"],
                    f"{r['final_entropy']:.3f}" if r["final_entropy"] is not None else "-",
                    r["genotype"],
                ]
                for r in cpu_runs
            ],
        ),
        "",
        f"Search against random: {vs_random['searches']} finished 60-epoch CPU-config searches average "
        f"{vs_random['mean']:.2f}% against the space's mean {vs_random['space_mean']:.2f}% (median "
        f"{vs_random['space_median']:.2f}%); percentiles "
        + ", ".join(f"{x:.1f}" for x in vs_random["percentiles"])
        + f"; P(mean of {vs_random['searches']} random cells >= theirs) = "
        f"{vs_random['p_random_mean_at_least']:.2g}",
        "",
        "Every searched cell in the recorded results:",
        table(
            ["file", "row", "NB201 acc %", "percentile", "cell"],
            [
                [r["file"], r["where"] or "-", f"{r['benchmark']:.2f}", f"{r['percentile']:.1f}", r["genotype"]]
                for r in searched
            ],
        ),
        "",
        "Calibration: Kendall's tau-b between recorded CPU-retrain accuracy and NB201 accuracy, per file:",
        table(
            ["file", "data", "cells", "tau (all)", "cells >= 90% NB201", "tau (those)"],
            [
                [
                    c["file"],
                    c["dataset"],
                    c["cells"],
                    f"{c['kendall_tau']:.2f}",
                    c["cells_at_90_plus"],
                    "-" if c["kendall_tau_90_plus"] is None else f"{c['kendall_tau_90_plus']:.2f}",
                ]
                for c in calib
            ],
        ),
    ]
    if modes:
        budget_text = " ".join(search_overrides(args.dataset, args.quick))
        lines += [
            "",
            f"Modes and derivation rules ({args.dataset}, CPU budget: {budget_text}):",
            table(
                ["mode", "seed", "rule", "NB201 acc %", "percentile", "skip", "pool", "none", "cell"],
                [
                    [
                        r["mode"],
                        r["seed"],
                        rule,
                        f"{r[rule]['benchmark']:.2f}",
                        f"{r[rule]['percentile']:.1f}",
                        r[rule]["counts"]["skip"],
                        r[rule]["counts"]["pool"],
                        r[rule]["counts"]["none"],
                        r[rule]["genotype"],
                    ]
                    for r in modes
                    for rule in ("gdas_rule", "none_excluded")
                ],
            ),
        ]
        summary = []
        for mode in MODES:
            for rule in ("gdas_rule", "none_excluded"):
                sel = [r[rule] for r in modes if r["mode"] == mode]
                summary.append(
                    [
                        mode,
                        rule,
                        fmt_pm(s["benchmark"] for s in sel),
                        f"{sum(s['counts']['none'] for s in sel) / len(sel):.1f}",
                        f"{sum(s['counts']['skip'] for s in sel) / len(sel):.1f}",
                        f"{sum(s['counts']['pool'] for s in sel) / len(sel):.1f}",
                        f"{sum(r['search_seconds'] for r in modes if r['mode'] == mode) / len(sel):.0f}",
                    ]
                )
        lines += [
            "",
            "Per mode and rule (mean over seeds):",
            table(["mode", "rule", "NB201 acc % (mean ± std)", "none", "skip", "pool", "search s"], summary),
        ]
    study.finish(
        ctx,
        NAME,
        {
            "dataset": args.dataset,
            "cpu_config_runs": cpu_runs,
            "search_vs_random": vs_random,
            "searched_cells": searched,
            "calibration": calib,
            "calibration_pairs": pairs,
            "modes": modes,
            "budget": budget(args.quick),
        },
        "\n".join(lines),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
