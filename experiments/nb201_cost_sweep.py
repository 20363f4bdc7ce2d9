"""The one-path search under a FLOPs budget, judged against NAS-Bench-201's accuracy-FLOPs front.

Runs the CPU config's one-path search (``configs/nb201_cifar10_cpu.yaml``'s method:
gdas sampling, progressive pruning by probability; ``--epochs`` long, warm-up a third of it) with
a budget on ``flops`` (``search.cost.form=budget``, a hinge, or with ``--form target`` the
two-sided ``|E - B|``), once per budget and
seed (through ``experiments.nb201_cpu_search``, each search a ``python search.py`` process). Each
searched cell is then placed against the true front of all 15,625 cells
(``experiments.nb201_cost_front``):

* its FLOPs in NAS-Bench-201's own network (C=16, N=5), where the front lives;
* its gap: the best accuracy at or below those FLOPs minus its own (targets: <= 0.5 points);
* its FLOPs in the searched supernet (C=8, N=2), the unit the budget is given in, against the
  budget (target: within 10%).

    python -m experiments.nb201_cost_sweep --budgets 4e6,6.5e6,9e6,12e6,14.5e6 --seeds 0,1 \\
        --epochs 20 --parallel 2 --threads 1          # about 70 min on 2 cores
    python -m experiments.nb201_cost_sweep --collect a.json b.json   # nb201_cpu_search --out files
    python -m experiments.nb201_cost_sweep --quick --out /tmp/x.json  # the test (synthetic data)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import nas
from experiments import nb201_cost_front as front_mod
from experiments import nb201_cpu_search as search_mod
from experiments.machine import command_line, git_state, machine, write_record
from experiments.settings import RESULTS, rel
from experiments.tables import save_plot, table
from nas.benchmarks import cell_ops
from nas.config import ESTIMATORS
from nas.cost import cost_table
from nas.io import read_jsonl
from nas.report import within_budget_cells

NAME = "nb201_cost_sweep"
DEFAULT_BUDGETS = (4e6, 6.5e6, 9e6, 12e6, 14.5e6)  # supernet FLOPs, C=8 N=2: 2.06 M fixed ... 23.3 M
SHORT = {  # the table's method column
    "budget search, pruned by probability": "hinge, pruned",
    "budget search, derived within the budget": "hinge, within",
    "budget search, direct cost steps, pruned by probability": "hinge direct, pruned",
    "budget search, direct cost steps, derived within the budget": "hinge direct, within",
    "one search, derived at each budget": "no hinge, within",
    "target search, direct cost steps, pruned by probability": "target direct, pruned",
    "target search, direct cost steps, derived within the budget": "target direct, within",
    "target search, pruned by probability": "target, pruned",
    "target search, derived within the budget": "target, within",
    "target search, direct cost steps, tolerance 0.1, pruned by probability": "target direct ±10%, pruned",
    "target search, direct cost steps, tolerance 0.1, rloo estimator, pruned by probability": "target direct ±10%, rloo",
    "target search, direct cost steps, tolerance 0.1, local estimator, pruned by probability": "target direct ±10%, local",
    "target search, direct cost steps, tolerance 0.1, local estimator, uniform weight paths, pruned by probability": (
        "target direct ±10%, local, uniform paths"
    ),
    "target search, direct cost steps, tolerance 0.1, local estimator, window weight paths, pruned by probability": (
        "target direct ±10%, local, window paths"
    ),
    "target search, direct cost steps, tolerance 0.1, ops [skip_connect,nor_conv_1x1,nor_conv_3x3,avg_pool_3x3], "
    "pruned by probability": "target direct ±10%, no none",
}
WEIGHT = 1.0  # the hinge's weight: above the budget it outweighs the cross-entropy's pull


def overrides(
    budget: float,
    epochs: int,
    weight: float,
    prune: str,
    step: str = "adam",
    form: str = "budget",
    tolerance: Optional[float] = None,
    estimator: str = "st",
    weight_paths: str = "gumbel",
    derive: str = "logits",
) -> List[str]:
    """The CPU config's one-path method at ``epochs`` (as ``--set search.epochs`` scales it) plus the
    budget; ``prune``: ``probability`` (the config's progressive pruning) or ``off``; ``step``: where
    the term is stepped (``search.cost.step``); ``form``: ``budget`` (the hinge) or ``target``;
    ``tolerance``: ``search.cost.tolerance``, the share of the budget a derived cell may leave;
    ``estimator``, ``weight_paths``, ``derive``: those ``search`` keys."""
    skip = ("search.epochs=", "search.warmup_epochs=", "search.prune=")
    method = [s for s in search_mod.GDAS_PRUNED if not s.startswith(skip)]
    return (
        method
        + [
            f"search.prune={prune}",
            f"search.epochs={epochs}",
            f"search.warmup_epochs={max(1, round(epochs / 3))}",
            "search.cost.metric=flops",
            f"search.cost.form={form}",
            f"search.cost.weight={weight:g}",
            f"search.cost.budget={budget:g}",
        ]
        + ([] if step == "adam" else [f"search.cost.step={step}"])
        + ([] if tolerance is None else [f"search.cost.tolerance={tolerance:g}"])
        + ([] if estimator == "st" else [f"search.estimator={estimator}"])
        + ([] if weight_paths == "gumbel" else [f"search.weight_paths={weight_paths}"])
        + ([] if derive == "logits" else [f"search.derive={derive}"])
    )


def variant_name(
    budget: float,
    epochs: int,
    prune: str,
    step: str = "adam",
    form: str = "budget",
    tolerance: Optional[float] = None,
    estimator: str = "st",
    weight_paths: str = "gumbel",
    derive: str = "logits",
) -> str:
    return (
        f"cost-{form}-{budget:g}-e{epochs}"
        + ("" if prune == "probability" else f"-prune-{prune}")
        + ("" if step == "adam" else f"-{step}")
        + ("" if tolerance is None else f"-tol{tolerance:g}")
        + ("" if estimator == "st" else f"-{estimator}")
        + ("" if weight_paths == "gumbel" else f"-{weight_paths}w")
        + ("" if derive == "logits" else f"-{derive}")
    )


def quick_budgets(fractions: Sequence[float] = (0.3, 0.6)) -> List[float]:
    """Budgets for ``--quick``'s tiny supernet (nb201_cpu_search's QUICK: C=4, N=1, 16x16 images),
    as fractions of its range from the fixed part to every edge at its costliest op."""
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
    t = cost_table(net, "flops", (3, 16, 16))
    top = t.fixed + float(t.costs["normal"].max(dim=1).values.sum())
    return [round(t.fixed + f * (top - t.fixed)) for f in fractions]


def run_cost(row: Dict[str, Any]) -> Dict[str, Any]:
    """The cost fields of a search row: recorded by nb201_cpu_search, or read from its run directory."""
    if row.get("cost"):
        return row["cost"]
    last = read_jsonl(Path(row["run_dir"]) / "metrics.jsonl")[-1]
    return search_mod.cost_fields(last)


def derive_at_budgets(run_dir: Path, budgets: Sequence[float], seed: int) -> List[Dict[str, Any]]:
    """Rows for one finished search derived at each budget from its final probabilities
    (:func:`nas.report.within_budget_cells`, what ``inspect --budget`` prints): one search, a cell per budget."""
    bench = nas.load_benchmark()
    return [
        {
            "variant": f"{run_dir.name}@{c['budget']:g}",
            "seed": seed,
            "genotype": c["arch"],
            "benchmark": bench.query(c["arch"]),
            "settings": ["search.prune=off"],
            "method": "one search, derived at each budget",
            "cost": {"metric": "flops", "budget": c["budget"], "derived": c["cost"]},
            "run_dir": str(run_dir),
            "epochs": c["epoch"],
        }
        for c in within_budget_cells(run_dir, budgets)
    ]


def _setting(settings: Sequence[str], key: str, default: Optional[str]) -> Optional[str]:
    """The value of ``key`` in ``--set`` overrides: the last one given, as the config reads them."""
    return next((s.split("=", 1)[1] for s in reversed(settings) if s.startswith(key + "=")), default)


def method_of(settings: Sequence[str]) -> str:
    """A budget search's method, from its overrides."""
    step = ", direct cost steps" if "search.cost.step=direct" in settings else ""
    form = "target" if "search.cost.form=target" in settings else "budget"
    tol = _setting(settings, "search.cost.tolerance", None)
    window = "" if tol is None else f", tolerance {tol}"
    estimator = _setting(settings, "search.estimator", "st")
    ops = _setting(settings, "supernet.ops", None)
    paths = _setting(settings, "search.weight_paths", "gumbel")
    derive = _setting(settings, "search.derive", "logits")
    extra = (
        ("" if estimator == "st" else f", {estimator} estimator")
        + ("" if paths == "gumbel" else f", {paths} weight paths")
        + ("" if ops is None else f", ops {ops}")
        + ("" if derive == "logits" else f", derived by {derive}")
    )
    prune = _setting(settings, "search.prune", "off")
    if prune != "off":
        return f"{form} search{step}{window}{extra}, pruned by {prune}"
    return f"{form} search{step}{window}{extra}, derived within the budget"


def judge(rows: Sequence[Dict[str, Any]], front: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each searched cell against the front: FLOPs in the benchmark's network, gap, budget error."""
    out = []
    for r in rows:
        cost = run_cost(r)
        ops = cell_ops(r["genotype"])
        flops = front_mod.cell_flops(ops, front["table"], front["op_names"])
        budget, derived = cost.get("budget"), cost["derived"]
        # how the search ranked the cells it could have had at this cost: those of the same FLOPs
        peers = [row[1] for row in front["rows"] if row[0] == flops]
        out.append(
            {
                "variant": r["variant"],
                "seed": r["seed"],
                "prune": next((x.split("=", 1)[1] for x in r["settings"] if x.startswith("search.prune=")), "off"),
                "method": r.get("method") or method_of(r["settings"]),
                "genotype": r["genotype"],
                "cifar10_test": r["benchmark"],
                "bench_flops": flops,
                "gap_to_front": front_mod.gap_to_front(front["points"], flops, r["benchmark"]),
                "cells_at_flops": len(peers),
                "better_at_flops": sum(a > r["benchmark"] for a in peers),
                "budget": budget,
                "supernet_flops": derived,
                "expected_flops": cost.get("expected"),
                "budget_error": None if not budget else (derived - budget) / budget,
                "gdas_rule": r.get("gdas_rule", {}).get("benchmark"),
                "minutes": r.get("minutes"),
                "epochs": r.get("epochs"),
            }
        )
    return out


def plot(points: List[Dict[str, Any]], front: Dict[str, Any], path: Path) -> Optional[str]:
    def draw(plt) -> None:
        rows = front["rows"]
        plt.gcf().set_size_inches(10, 4.8)
        plt.scatter([r[0] / 1e6 for r in rows], [r[1] for r in rows], s=2, alpha=0.25, color="tab:gray", label="cell")
        xs = [p[0] / 1e6 for p in front["points"]]
        ys = [p[1] for p in front["points"]]
        plt.step(xs, ys, where="post", color="tab:red", linewidth=1, label="Pareto front")
        budgets = sorted({p["budget"] for p in points})
        cmap = plt.get_cmap("viridis")
        methods = list(dict.fromkeys(p["method"] for p in points))
        for m, method in enumerate(methods):
            marker = "oDs^v"[m % 5]
            for k, b in enumerate(budgets):
                sel = [p for p in points if p["budget"] == b and p["method"] == method]
                if not sel:
                    continue
                plt.scatter(
                    [p["bench_flops"] / 1e6 for p in sel],
                    [max(p["cifar10_test"], front_mod.FLOOR + 0.2) for p in sel],  # below the axis: at its foot
                    s=40,
                    marker=marker,
                    edgecolor="black",
                    color=cmap(k / max(1, len(budgets) - 1)),
                    zorder=3,
                )
        for m, method in enumerate(methods):  # legend: the markers (methods), then the colours (budgets)
            plt.scatter([], [], s=40, marker="oDs^v"[m % 5], color="white", edgecolor="black", label=method)
        for k, b in enumerate(budgets):
            plt.scatter(
                [], [], s=40, color=cmap(k / max(1, len(budgets) - 1)), label=f"budget {b / 1e6:g} M (supernet)"
            )
        low = sum(p["cifar10_test"] < front_mod.FLOOR for p in points)
        if low:
            plt.text(
                0.98,
                0.03,
                f"{low} searched cells below {front_mod.FLOOR:g}% drawn at the foot",
                ha="right",
                transform=plt.gca().transAxes,
                fontsize=7,
            )
        plt.ylim(front_mod.FLOOR, 95)
        plt.xlabel("multiply-adds (M) in NAS-Bench-201's network (C=16, N=5)")
        plt.ylabel("CIFAR-10 test accuracy (%), NAS-Bench-201")
        plt.title("One-path search under a FLOPs budget against the true front", fontsize=10)
        plt.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    return save_plot(draw, path)


def front_data() -> Dict[str, Any]:
    """The front and the cost table of NAS-Bench-201's network (no cells re-checked here)."""
    res = front_mod.run(check=0, seed=0)
    return {
        "table": res["table"],
        "rows": res["rows"],
        "points": [(p["flops"], p["cifar10_test"], p["index"]) for p in res["front"]],
        "op_names": list(nas.NB201_OPS),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", help="comma-separated FLOPs budgets of the searched supernet (default: the recorded 5)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=20, help="search epochs (the CPU config has 60)")
    p.add_argument("--weight", type=float, default=WEIGHT, help="search.cost.weight of the hinge")
    p.add_argument(
        "--prune",
        choices=("off", "probability"),
        default="off",
        help="off (default): the budget derivation picks the cell at the end; probability: the CPU config's "
        "pruning, whose events keep the most probable cell within the budget (since commit 44be8c1)",
    )
    p.add_argument(
        "--cost-step",
        choices=("adam", "direct"),
        default="adam",
        help="search.cost.step: the hinge in the logits' Adam step (adam, the recorded rows) or its own plain step after it",
    )
    p.add_argument(
        "--form",
        choices=("budget", "target"),
        default="budget",
        help="search.cost.form: budget (a hinge above the budget, the recorded rows) or target (|E - B|, "
        "pulled to the budget from both sides)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="search.cost.tolerance: derive within [budget (1 - tolerance), budget], or up to budget (1 + tolerance) "
        "with --form target (default: anything up to the budget)",
    )
    p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="st",
        help="search.estimator: the architecture step's gradient (default st, the recorded rows)",
    )
    p.add_argument(
        "--weight-paths",
        choices=("gumbel", "uniform", "window"),
        default="gumbel",
        help="search.weight_paths: the paths the weight step trains (default gumbel, the recorded rows)",
    )
    p.add_argument(
        "--derive",
        choices=("logits", "window"),
        default="logits",
        help="search.derive: the final cell by the logits within the budget (default, the recorded rows) or, "
        "of the budget window's cells, the one with the final supernet's lowest loss",
    )
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--collect", nargs="+", metavar="JSON", help="judge the rows of nb201_cpu_search --out files")
    p.add_argument(
        "--derive-from",
        nargs="+",
        default=[],
        metavar="RUN_DIR:SEED",
        help="finished searches to derive at every --budgets after the fact (their final probabilities)",
    )
    p.add_argument("--quick", action="store_true", help="2 budgets, 1 seed, tiny synthetic searches")
    default_out = RESULTS / f"{NAME}.json"
    p.add_argument("--out", default=None, help=f"the result JSON (default {default_out}, if it does not exist yet)")
    args = p.parse_args(argv)
    if args.out is None and default_out.exists():  # section 15's first sweep: a record, not a scratch file
        p.error(f"{default_out} holds a recorded sweep; give --out FILE (that path itself to replace it)")
    out = Path(args.out) if args.out is not None else default_out
    here = machine()
    if args.collect or args.derive_from:
        rows = []
        for f in args.collect or []:
            try:
                rows += json.loads(Path(f).read_text())["runs"]
            except (OSError, ValueError, KeyError) as exc:
                p.error(f"{f} is not a result file of nb201_cpu_search ({exc})")
    else:
        try:
            seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s.strip()]
            budgets = (
                quick_budgets()
                if args.quick
                else [float(b) for b in args.budgets.split(",")]
                if args.budgets
                else list(DEFAULT_BUDGETS)
            )
        except ValueError:
            p.error("--seeds and --budgets take comma-separated numbers")
        epochs = 4 if args.quick else args.epochs
        runs_dir = Path(tempfile.mkdtemp(prefix="nas-cost-sweep-")) if args.quick else search_mod.RUNS
        runs_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for b in budgets:
            rows += search_mod.launch(
                variant_name(
                    b,
                    epochs,
                    args.prune,
                    args.cost_step,
                    args.form,
                    args.tolerance,
                    args.estimator,
                    args.weight_paths,
                    args.derive,
                ),
                seeds,
                overrides(
                    b,
                    epochs,
                    args.weight,
                    args.prune,
                    args.cost_step,
                    args.form,
                    args.tolerance,
                    args.estimator,
                    args.weight_paths,
                    args.derive,
                ),
                args.parallel,
                args.threads,
                args.quick,
                runs_dir,
            )
        for r in rows:
            r["machine"], r["code"], r["command"] = here, git_state(), command_line()
    for item in args.derive_from:
        run_dir, _, seed = item.rpartition(":")
        budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else list(DEFAULT_BUDGETS)
        rows += derive_at_budgets(Path(run_dir), budgets, int(seed))
    front = front_data()
    points = judge(rows, front)
    png = plot(points, front, out.with_suffix(".png"))
    gaps = [p["gap_to_front"] for p in points]
    errors = [abs(p["budget_error"]) for p in points if p["budget_error"] is not None]
    text = table(
        [
            "budget (M)",
            "method",
            "seed",
            "supernet FLOPs (M)",
            "vs budget",
            "NB201 FLOPs (M)",
            "CIFAR-10 %",
            "gap to front",
            "min",
            "cell",
        ],
        [
            [
                f"{q['budget'] / 1e6:g}",
                SHORT.get(q["method"], q["method"]),
                q["seed"],
                f"{q['supernet_flops'] / 1e6:.2f}",
                f"{100 * q['budget_error']:+.0f}%",
                f"{q['bench_flops'] / 1e6:.2f}",
                f"{q['cifar10_test']:.2f}",
                f"{q['gap_to_front']:.2f}",
                "-" if q["minutes"] is None else f"{q['minutes']:.1f}",
                q["genotype"],
            ]
            for q in sorted(points, key=lambda q: (q["budget"], q["method"], q["seed"]))
        ],
    )
    summary = {
        "points": len(points),
        "gap_median": statistics.median(gaps) if gaps else None,
        "gap_max": max(gaps) if gaps else None,
        "within_0.5": sum(g <= 0.5 for g in gaps),
        "budget_error_max": max(errors) if errors else None,
        "within_10pct": sum(e <= 0.10 for e in errors),
        # the share of the cells of its own FLOPs that beat each searched cell (0: the best of them)
        "beaten_share_median": statistics.median(p["better_at_flops"] / p["cells_at_flops"] for p in points)
        if points
        else None,
    }
    record = {
        "experiment": NAME,
        "quick": args.quick,
        "method": "configs/nb201_cifar10_cpu.yaml's one-path search + search.cost (budget or target form, flops)",
        "runs": rows,
        "points": points,
        "summary": summary,
        "figure": rel(png) if png else None,
        "table": text,
    }
    write_record(out, record, here, figures=[png])
    print(
        f"{summary['points']} searched cells: gap to the front median {summary['gap_median']:.2f}, "
        f"max {summary['gap_max']:.2f} points ({summary['within_0.5']} within 0.5); supernet FLOPs within 10% "
        f"of the budget: {summary['within_10pct']} of {len(errors)}"
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
