"""The CPU config's searches, judged by NAS-Bench-201: one row per (variant, seed).

Runs ``python search.py --config configs/nb201_cifar10_cpu_softmax.yaml`` (the base every recorded
variant overrides) for each seed with the variant's ``--set`` overrides (as a user runs it, in a subprocess), or reads finished run
directories, and records for each run: the derived cell under both derivation rules (GDAS's,
where ``none`` may win, and the none-excluded one), its NAS-Bench-201 CIFAR-10 test accuracy
and percentile, its skip / pool / none counts, the final entropy and the wall time. Rows are
merged into ``experiments/results/nb201_cpu_search.json`` by (variant, seed), so variants
measured at different times land in one table. With matplotlib it also draws the derived
cell's benchmark accuracy over the epochs, one line per run, per variant.

    python -m experiments.nb201_cpu_search --variant loss-prune --seeds 0,1 --parallel 2 \\
        --set search.prune=loss --set search.derive=logits
    python -m experiments.nb201_cpu_search --variant baseline --collect runs/a runs/b   # finished runs
    python -m experiments.nb201_cpu_search --report                                      # table only
    python -m experiments.nb201_cpu_search --quick --variant q --out /tmp/x.json        # the test
    python -m experiments.nb201_cpu_search --merge /tmp/a.json /tmp/b.json   # concurrent invocations' copies

Both rules from one run: for a search without pruning, from its final op probabilities; for a
pruned one, from its last pruning event, where each edge chose between its last two ops: the
survivor by the measured loss (or probability) is GDAS's rule, the survivor among the ops other
than ``none`` the none-excluded rule.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

import nas
from experiments.machine import command_line, git_state, machine
from experiments.nb201_evidence import both_rules as rules_from_probs
from experiments.settings import RESULTS, ROOT, rel
from experiments.stats import mean_std
from experiments.tables import log, save_plot, table
from nas.benchmarks import cell_string
from nas.genotype import Genotype
from nas.io import atomic_write_text, read_jsonl
from nas.report import collapse_counts
from nas.runtime import find_config

NAME = "nb201_cpu_search"
# The base of every recorded variant: the softmax CPU config (configs/nb201_cifar10_cpu.yaml until
# 2026-12-06, when the one-path search became that config). GDAS_PRUNED below is that one-path config.
CONFIG = find_config("configs/nb201_cifar10_cpu_softmax.yaml").resolve()
SEARCH_SCRIPT = ROOT / "search.py"  # the command line, as a user runs it
RUNS = ROOT / "runs" / NAME
# The one-path CPU config (configs/nb201_cifar10_cpu.yaml: gdas sampling, progressive pruning by
# probability) as overrides of CONFIG: the earlier variants' base, and what rerank_study studies
# (checkpoints of a pruned search).
GDAS_PRUNED = [
    "supernet.mode=gdas",
    "search.epochs=60",
    "search.warmup_epochs=20",
    "search.prune=probability",
    "search.arch.lr=0.003",
    "search.arch.beta_decay=0",
    "search.derive=logits",
]
QUICK = [
    "data.name=synthetic",
    "data.train_subset=null",
    "data.num_train=256",
    "data.num_test=64",
    "data.image_size=16",
    "supernet.C=4",
    "supernet.N=1",
    "search.batch_size=32",
    "search.steps_per_epoch=3",
    "search.epochs=6",
    "search.warmup_epochs=1",
]


def both_rules(run_dir: Path) -> Dict[str, str]:
    """GDAS's rule and the none-excluded rule, read from one finished run."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    probs_log = read_jsonl(run_dir / "arch_probs.jsonl")
    # Each pruning: (the ops it removed, one list per event, the probabilities it read, its
    # measured losses). "pruned" ran before its line's epoch, on the previous epoch's logged
    # probabilities; "pruned_after" (the last event of a search that stops once decided) ran
    # after it, on the probabilities its line records.
    probs_at = {r["epoch"]: r["probs"]["normal"] for r in probs_log}

    def measured(m: Dict[str, Any], suffix: str) -> Optional[List[List[float]]]:
        """An event's measured scores, higher kept: minus the restricted loss (prune: loss), the
        removal loss (prune: removal); ``None`` for probability pruning."""
        for key, sign in (("prune_losses", -1.0), ("prune_removal_losses", 1.0)):
            if m.get(key + suffix):
                return [
                    [sign * x if x is not None else float("-inf") for x in row] for row in m[key + suffix]["normal"]
                ]
        return None

    events = []
    for m in metrics:
        if m.get("pruned"):
            events.append((m["pruned"]["normal"], probs_at.get(m["epoch"] - 1), measured(m, "")))
        if m.get("pruned_after"):
            events.append((m["pruned_after"]["normal"], m["probs_before_pruning"]["normal"], measured(m, "_after")))
    ops = probs_log[-1]["ops"]
    removal = metrics[-1].get("removal_losses")
    if removal:  # search.derive: removal: the op whose removal costs most (unmeasured: never)
        return rules_from_probs(
            [[x if x is not None else float("-inf") for x in row] for row in removal["normal"]], ops
        )
    if not events:
        return rules_from_probs(probs_log[-1]["probs"]["normal"], ops)
    _, probs_read, losses = events[-1]
    # The ops alive before the last event: everything, minus what the earlier events removed.
    alive = [set(ops) for _ in probs_log[-1]["probs"]["normal"]]  # one set per edge
    for removed_lists, _, _ in events[:-1]:
        for removed in removed_lists:
            for e, op in enumerate(removed):
                alive[e].discard(op)
    score = losses if losses is not None else probs_read  # probability pruning: the probabilities it read
    out = {}
    for rule, keep_none in (("gdas_rule", True), ("none_excluded", False)):
        chosen = []
        for e, left in enumerate(alive):
            # As Supernet.prune_weakest: drop the lowest score (the first op on ties), none first
            # under the none-excluded rule once two ops are left.
            cands = [op for op in ops if op in left]
            while len(cands) > 1:
                if not keep_none and len(cands) == 2 and "none" in cands:
                    cands.remove("none")
                else:
                    cands.remove(min(cands, key=lambda op: score[e][ops.index(op)]))
            chosen.append(cands[0])
        out[rule] = cell_string(chosen)
    return out


def cost_fields(metrics_line: Dict[str, Any]) -> Dict[str, Any]:
    """A search's cost term as its last metrics line logged it ({} without ``search.cost``)."""
    if "expected_cost" not in metrics_line:
        return {}
    return {
        "metric": metrics_line["cost_metric"],
        "expected": metrics_line["expected_cost"],
        "derived": metrics_line["derived_cost"],
        "budget": metrics_line.get("cost_budget"),
        "reference": metrics_line.get("cost_reference"),
    }


def row_for(
    run_dir: Path,
    variant: str,
    seed: int,
    overrides: Sequence[str],
    minutes: Optional[float],
    parallel: int,
    threads: Optional[int],
) -> Dict[str, Any]:
    bench = nas.load_benchmark()
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    geno = Genotype.from_json((run_dir / "genotype.json").read_text())
    rules = both_rules(run_dir)
    row = {
        "variant": variant,
        "seed": seed,
        "genotype": str(geno),
        "settings": list(overrides),
        "minutes": minutes,
        "epoch_minutes": sum(m["epoch_seconds"] for m in metrics) / 60,
        "parallel_searches": parallel,
        "threads": threads,
        "run_dir": str(run_dir),
        "epochs": metrics[-1]["epoch"],
        "final_entropy": metrics[-1]["entropy"],
        "final_train_acc": metrics[-1]["train_acc"],
        "benchmark": bench.query(geno),
        "percentile": bench.percentile(geno),
        "benchmark_per_epoch": [bench.query(m["genotype"]) for m in metrics],
        "cost": cost_fields(metrics[-1]),
    }
    for rule, arch in rules.items():
        row[rule] = {
            "genotype": arch,
            "benchmark": bench.query(arch),
            "percentile": bench.percentile(arch),
            "counts": collapse_counts(Genotype.from_nb201(arch))["normal"],
        }
    return row


def launch(
    variant: str,
    seeds: Sequence[int],
    overrides: Sequence[str],
    parallel: int,
    threads: Optional[int],
    quick: bool,
    runs_dir: Path,
) -> List[Dict[str, Any]]:
    """Run the searches, ``parallel`` at a time, each in its own process; returns their rows."""
    pending = list(seeds)
    active: List[Any] = []
    rows = []
    while pending or active:
        while pending and len(active) < parallel:
            seed = pending.pop(0)
            out = runs_dir / f"{variant}-s{seed}"
            sets = (QUICK if quick else ["data.verify_md5=false"]) + [f"run.seed={seed}"] + list(overrides)
            if threads is not None:
                sets.append(f"run.threads={threads}")
            cmd = [sys.executable, str(SEARCH_SCRIPT), "--config", str(CONFIG), "--out", str(out), "--quiet"]
            for s in sets:
                cmd += ["--set", s]
            log_file = open(runs_dir / f"{variant}-s{seed}.log", "w")
            log(f"start {variant} seed {seed}: {' '.join(cmd[1:])}")
            active.append(
                (
                    seed,
                    out,
                    subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT),
                    time.perf_counter(),
                    log_file,
                )
            )
        time.sleep(0.2 if quick else 5)
        for item in list(active):
            seed, out, proc, t0, log_file = item
            if proc.poll() is None:
                continue
            active.remove(item)
            log_file.close()
            if proc.returncode != 0:
                raise SystemExit(f"{variant} seed {seed} failed (exit {proc.returncode}); see {log_file.name}")
            minutes = (time.perf_counter() - t0) / 60
            rows.append(row_for(out, variant, seed, overrides, minutes, parallel, threads))
            log(f"done {variant} seed {seed}: {minutes:.1f} min, {rows[-1]['benchmark']:.2f}%  {rows[-1]['genotype']}")
    return rows


def summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        rec = {"variant": variant, "seeds": [r["seed"] for r in sel], "settings": sel[0]["settings"]}
        for key in ("gdas_rule", "none_excluded"):
            accs = [r[key]["benchmark"] for r in sel]
            rec[key] = {
                "mean": mean_std(accs)[0],
                "std": mean_std(accs)[1],
                "min": min(accs),
                "none_mean": sum(r[key]["counts"]["none"] for r in sel) / len(sel),
            }
        rec["derived_mean"] = mean_std(r["benchmark"] for r in sel)[0]
        rec["minutes_mean"] = (
            mean_std(r["minutes"] for r in sel if r["minutes"] is not None)[0]
            if any(r["minutes"] is not None for r in sel)
            else None
        )
        out.append(rec)
    return out


# The config's method now (softmax relaxation, beta-decay, 10 epochs, C=8, N=2), and how each of
# these variants derived its cell at the end: the first ran while the config derived by the logits.
FINAL_VARIANTS = {"darts-beta25-10ep": "logits", "darts-beta25-10ep-removal": "removal"}


def recorded_before(bench: Any) -> List[Dict[str, Any]]:
    """The config as it was before this study (gdas, 60 epochs), as recorded: per-epoch cells."""
    out = []
    for f in sorted((RESULTS / "cifar_cpu_config").glob("run_xeon_s*_metrics.jsonl")):
        out.append(
            {
                "variant": "shipped before (recorded)",
                "seed": int(f.stem.split("_s")[1][0]),
                "benchmark_per_epoch": [bench.query(m["genotype"]) for m in read_jsonl(f)],
            }
        )
    return out


def plot(rows: List[Dict[str, Any]], path: Path) -> Optional[str]:
    bench = nas.load_benchmark()
    rows = recorded_before(bench) + list(rows)  # the comparison panel first
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    cols = min(4, len(variants))  # wrapped into rows, so that many variants stay readable
    rows_n = -(-len(variants) // cols)

    def draw(plt):
        fig = plt.gcf()
        fig.set_size_inches(4.2 * cols, 3.4 * rows_n)
        for i, variant in enumerate(variants):
            ax = fig.add_subplot(rows_n, cols, i + 1)
            for r in rows:
                if r["variant"] == variant:
                    ax.plot(
                        range(1, len(r["benchmark_per_epoch"]) + 1), r["benchmark_per_epoch"], label=f"seed {r['seed']}"
                    )
            ax.axhline(bench.best().accuracy, color="grey", ls=":", lw=1)
            ax.set_ylim(80, 95)
            ax.set_title(variant, fontsize=9)
            ax.set_xlabel("epoch")
            if i % cols == 0:
                ax.set_ylabel("NB201 CIFAR-10 test acc of derived cell (%)")
            ax.legend(fontsize=7)

    return save_plot(draw, path)


def removal_cells(path: Path) -> Dict[str, float]:
    """Run directory name -> benchmark accuracy of the cell removal derives from its final
    checkpoint, as `experiments/removal_study.py` recorded it (none-excluded rule)."""
    try:
        results = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return {}
    return {Path(r["checkpoint"]).parent.name: r["cells"]["removal_none_excluded"]["benchmark"] for r in results}


def plot_final(rows: List[Dict[str, Any]], path: Path) -> Optional[str]:
    """Before and after, side by side: the derived cell's accuracy over the epochs for the config
    when this study began and for the config's method now. Curves are the cell the logits derive
    at each epoch; a marker is the cell removal derives at the end (the config's derivation)."""
    bench = nas.load_benchmark()
    before = recorded_before(bench)
    now = [r for r in rows if r["variant"] in FINAL_VARIANTS]
    if not before or not now:
        return None
    by_removal = removal_cells(RESULTS / "removal_study.json")

    def end_marker(r: Dict[str, Any]) -> Optional[float]:
        if FINAL_VARIANTS[r["variant"]] == "removal":
            return r["benchmark"]
        return by_removal.get(Path(r["run_dir"]).name)

    def draw(plt):
        fig = plt.gcf()
        fig.set_size_inches(11, 4.2)
        panels = [
            ("before: gdas, 60 epochs, none-excluded argmax", before),
            ("now: darts + beta-decay, 10 epochs; marker = derived by removal", now),
        ]
        for i, (title, sel) in enumerate(panels):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more runs than the default 10 colours
            finals = []
            for k, r in enumerate(sel):
                accs = r["benchmark_per_epoch"]
                end_to_end = i == 1 and FINAL_VARIANTS[r["variant"]] == "removal"
                (line,) = ax.plot(
                    range(1, len(accs) + 1),
                    accs,
                    lw=1.2,
                    ls="--" if end_to_end else "-",
                    label=f"seed {r['seed']}" + (", the config end to end" if end_to_end else ""),
                )
                final = end_marker(r) if i == 1 else None
                if final is not None:  # spread sideways so that equal accuracies stay visible
                    ax.plot([len(accs) + 0.2 + 0.05 * k], [final], marker="o", ms=4, color=line.get_color())
                    finals.append(final)
            if finals:
                m, sd = mean_std(finals)
                title += f"\n(markers: mean {m:.2f} +- {sd:.2f} over {len(finals)} runs, worst {min(finals):.2f})"
            ax.axhline(bench.best().accuracy, color="grey", ls=":", lw=1, label="space's best")
            ax.axhline(94.0, color="black", ls="--", lw=0.8, label="target mean 94.0")
            ax.axhline(93.5, color="red", ls="--", lw=0.8, label="target floor 93.5")
            ax.set_ylim(86, 95)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch")
            if i == 0:
                ax.set_ylabel("NB201 CIFAR-10 test acc of derived cell (%)")
            ax.legend(fontsize=6, ncol=2, loc="lower right")

    return save_plot(draw, path)


# The methods the README's table compares: the one-path CPU config's nine recorded runs (section 8
# of experiments/README.md) under both derivation rules, the softmax baseline (removal, seeds 0-6,
# removal_study.json).
ONE_PATH_RUNS = ("prob-prune-40k", "prob-prune-40k-solo", "gpu-prob-prune-40k")
BASELINE_RUNS = "darts-beta25-10ep"
GDAS_PUBLISHED = 93.61  # NAS-Bench-201 paper, GDAS on CIFAR-10 (test), 250 epochs


def plot_methods(rows: List[Dict[str, Any]], path: Path) -> Optional[str]:
    """One column per method: each run's derived cell (a dot) and the mean (a bar)."""
    bench = nas.load_benchmark()
    by_removal = removal_cells(RESULTS / "removal_study.json")
    groups = [
        ("one-path config\n(9 runs)", [r["benchmark"] for r in rows if r["variant"] in ONE_PATH_RUNS]),
        (
            "one-path config,\nGDAS's rule",
            [r["gdas_rule"]["benchmark"] for r in rows if r["variant"] in ONE_PATH_RUNS],
        ),
        (
            "softmax + beta-decay,\nremoval (baseline)",
            [
                by_removal[Path(r["run_dir"]).name]
                for r in rows
                if r["variant"] == BASELINE_RUNS and Path(r["run_dir"]).name in by_removal
            ],
        ),
    ]
    groups = [(name, accs) for name, accs in groups if accs]
    if not groups:
        return None

    def draw(plt):
        fig = plt.gcf()
        fig.set_size_inches(7.5, 4.2)
        ax = plt.gca()
        for i, (_name, accs) in enumerate(groups):
            xs = [i + 0.08 * ((k % 5) - 2) for k in range(len(accs))]  # spread so that equal values show
            ax.scatter(xs, accs, s=18, zorder=3)
            m, sd = mean_std(accs)
            ax.hlines(m, i - 0.3, i + 0.3, color="black", lw=1.5)
            ax.text(i, 88.9, f"{len(accs)} runs\n{m:.2f} ± {sd:.2f}\nworst {min(accs):.2f}", ha="center", fontsize=7)
        ax.axhline(bench.best().accuracy, color="grey", ls=":", lw=1, label=f"space's best {bench.best().accuracy:.2f}")
        ax.axhline(94.0, color="black", ls="--", lw=0.8, label="target mean 94.0")
        ax.axhline(GDAS_PUBLISHED, color="tab:red", ls="-.", lw=0.8, label=f"GDAS published {GDAS_PUBLISHED}")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g[0] for g in groups], fontsize=7)
        ax.set_ylim(88.5, 95)
        ax.set_ylabel("NB201 CIFAR-10 test acc of derived cell (%)")
        ax.set_title("The CPU budget's searches: one-path against the softmax baseline", fontsize=9)
        ax.legend(fontsize=7, loc="center left")

    return save_plot(draw, path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", help="name of the method variant (a row label)")
    p.add_argument("--seeds", default="0", help="comma-separated search seeds (default 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override of this variant (repeatable)",
    )
    p.add_argument("--collect", nargs="+", metavar="RUN_DIR", help="finished run directories to record instead")
    p.add_argument("--parallel", type=int, default=1, help="searches at once (default 1, as a user runs it)")
    p.add_argument("--threads", type=int, default=None, help="run.threads of each search (default: the config's)")
    p.add_argument("--report", action="store_true", help="only rebuild the table and plot from the JSON")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="add the runs of other result files (written with --out by concurrent invocations)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny search on synthetic data, for the tests")
    p.add_argument("--out", default=None, help=f"JSON (default experiments/results/{NAME}.json)")
    args = p.parse_args()
    out = Path(args.out) if args.out else RESULTS / f"{NAME}.json"
    if not args.report and not args.merge and not args.variant:
        p.error("--variant is required (or --report, or --merge)")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.parallel < 1:
        p.error("--parallel must be >= 1")
    record = json.loads(out.read_text()) if out.exists() else {"experiment": NAME, "runs": []}
    here = machine()  # before the searches, so its load average is the one they started under
    new: List[Dict[str, Any]] = []
    if args.collect:
        for d in args.collect:
            run_dir = Path(d)
            if not (run_dir / "genotype.json").exists():
                p.error(f"{run_dir} is not a finished search run directory")
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            new.append(
                row_for(
                    run_dir,
                    args.variant,
                    int(cfg["run"]["seed"]),
                    args.overrides,
                    None,
                    args.parallel,
                    cfg["run"].get("threads"),
                )
            )
    elif args.merge:
        for f in args.merge:
            try:
                new += json.loads(Path(f).read_text())["runs"]
            except (OSError, ValueError, KeyError) as e:
                p.error(f"{f} is not a result file of this script ({e})")
    elif not args.report:
        runs_dir = Path(tempfile.mkdtemp(prefix="nas-cpu-search-")) if args.quick else RUNS
        runs_dir.mkdir(parents=True, exist_ok=True)
        new = launch(args.variant, seeds, args.overrides, args.parallel, args.threads, args.quick, runs_dir)
    keys = {(r["variant"], r["seed"]) for r in new}
    runs = [r for r in record["runs"] if (r["variant"], r["seed"]) not in keys] + new
    order = {v: i for i, v in enumerate(dict.fromkeys(r["variant"] for r in runs))}
    runs.sort(key=lambda r: (order[r["variant"]], r["seed"]))
    for r in new:
        if not args.merge:  # merged rows keep the stamps of the invocation that ran them
            r["machine"], r["code"], r["command"] = here, git_state(), command_line()
    summ = summary(runs) if runs else []
    png = None if args.quick or not runs else plot(runs, out.with_suffix(".png"))
    png_final = None if args.quick or not runs else plot_final(runs, out.with_name(out.stem + "_final.png"))
    png_methods = None if args.quick or not runs else plot_methods(runs, out.with_name("nb201_methods.png"))
    text = "\n".join(
        [
            "Per run (NAS-Bench-201 CIFAR-10 test accuracy of the derived cell, both derivation rules; min: wall "
            "minutes, ~ the sum of epoch times for collected runs):",
            table(
                [
                    "variant",
                    "seed",
                    "GDAS rule %",
                    "pct",
                    "none",
                    "none-excluded %",
                    "pct",
                    "skip",
                    "pool",
                    "H final",
                    "min",
                    "cell (none-excluded)",
                ],
                [
                    [
                        r["variant"],
                        r["seed"],
                        f"{r['gdas_rule']['benchmark']:.2f}",
                        f"{r['gdas_rule']['percentile']:.1f}",
                        r["gdas_rule"]["counts"]["none"],
                        f"{r['none_excluded']['benchmark']:.2f}",
                        f"{r['none_excluded']['percentile']:.1f}",
                        r["none_excluded"]["counts"]["skip"],
                        r["none_excluded"]["counts"]["pool"],
                        f"{r['final_entropy']:.3f}",
                        f"~{r['epoch_minutes']:.1f}" if r["minutes"] is None else f"{r['minutes']:.1f}",
                        r["none_excluded"]["genotype"],
                    ]
                    for r in runs
                ],
            ),
            "",
            "Per variant (mean ± std over seeds):",
            table(
                ["variant", "seeds", "GDAS rule %", "none edges", "none-excluded %", "worst seed %", "min/run"],
                [
                    [
                        s["variant"],
                        ",".join(map(str, s["seeds"])),
                        f"{s['gdas_rule']['mean']:.2f} ± {s['gdas_rule']['std']:.2f}",
                        f"{s['gdas_rule']['none_mean']:.1f}",
                        f"{s['none_excluded']['mean']:.2f} ± {s['none_excluded']['std']:.2f}",
                        f"{s['none_excluded']['min']:.2f}",
                        "-" if s["minutes_mean"] is None else f"{s['minutes_mean']:.1f}",
                    ]
                    for s in summ
                ],
            ),
        ]
    )
    record.update(
        {
            "experiment": NAME,
            "quick": args.quick,
            "config": rel(CONFIG),
            "runs": runs,
            "summary": summ,
            "plot": rel(png) if png else None,
            "plot_final": rel(png_final) if png_final else None,
            "plot_methods": rel(png_methods) if png_methods else None,
            "table": text,
            "command": command_line(),
            "machine": here,
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
