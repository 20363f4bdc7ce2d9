"""One figure of a search run: what it chose and how it got there (``inspect --plot``, ``run.plot``).

Per edge the op probabilities over the epochs (one colour per op throughout), the architecture
entropy, both splits' loss and accuracy, τ, for NAS-Bench-201 cells the derived cell's benchmark
accuracy per epoch, and the derived cell drawn as a graph. matplotlib (the ``[plot]`` extra) is
imported only when a figure is drawn, and draws with the Agg backend on a figure of its own:
no window, no global state.
"""

from __future__ import annotations

import colorsys
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import UserError
from .genotype import Genotype
from .io import atomic_write_bytes, read_jsonl
from .report import load_report, read_probs_log
from .spaces import get_space

PLOT_FILE = "plot.png"
DPI = 100
WIDTH = 15.0  # inches

# The built-in spaces' ops keep their colours from run to run; other ops take the next free one.
OP_COLOURS = {
    "none": "#b3b3b3",
    "skip_connect": "#1f77b4",
    "nor_conv_1x1": "#ff7f0e",
    "nor_conv_3x3": "#d62728",
    "avg_pool_3x3": "#2ca02c",
    "max_pool_3x3": "#9467bd",
    "sep_conv_3x3": "#8c564b",
    "sep_conv_5x5": "#e377c2",
    "dil_conv_3x3": "#17becf",
    "dil_conv_5x5": "#bcbd22",
}
SPARE_COLOURS = ["#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354"]


def require_matplotlib() -> None:
    """Raise :class:`UserError` naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(
            "plotting needs matplotlib: pip install 'gumbel-nas[plot]' (or pip install matplotlib)"
        ) from None


def op_colours(ops: List[str]) -> Dict[str, str]:
    """A colour per op name: the built-in ops' own, then the spare ones, then hues spread by the golden ratio."""
    out: Dict[str, str] = {}
    k = 0
    for op in ops:
        if op in OP_COLOURS:
            out[op] = OP_COLOURS[op]
            continue
        if k < len(SPARE_COLOURS):
            out[op] = SPARE_COLOURS[k]
        else:
            r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.8)
            out[op] = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        k += 1
    return out


def _by_epoch(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per epoch, in order; a repeated epoch (a run resumed before its logs were cut) keeps the last."""
    out = {}
    for r in records:
        if isinstance(r.get("epoch"), int):
            out[r["epoch"]] = r
    return [out[e] for e in sorted(out)]


def _values(metrics: List[Dict[str, Any]], key: str) -> List[float]:
    return [math.nan if m.get(key) is None else float(m[key]) for m in metrics]


def _probability_series(report: Dict[str, Any], arch: List[Dict[str, Any]], geno: Optional[Genotype]):
    """``(axes label, title, candidates, [{candidate: p} per epoch])`` per edge of each cell, or per
    label of a custom model's choices."""
    out = []
    if report.get("kind") == "choices":
        chosen = report["architecture"]
        for label in arch[-1]["choices"] if arch else report["final_probs"]:
            series = [r["choices"].get(label, {}) for r in arch]
            names = list(series[-1]) if series else list(report["final_probs"].get(label, {}))
            pick = chosen.get(label)
            pick = ", ".join(pick) if isinstance(pick, list) else pick
            out.append((f"probs {label}", f"{label}: {pick}" if pick else label, names, series))
        return out
    edges, ops = report["edges"], list(report["ops"])
    pairs = get_space(geno.space).edges()
    cells = list(arch[-1]["probs"]) if arch else list(geno.cells())
    for cell in cells:
        kept = geno.cells().get(cell, [])
        chosen = {(dst, src): op for (op, src), dst in zip(kept, geno.edge_targets(cell))} if kept else {}
        for e in range(len(arch[-1]["probs"][cell]) if arch else 0):
            name = edges[e] if e < len(edges) else str(e)
            series = [dict(zip(r["ops"], r["probs"][cell][e])) for r in arch]
            op = chosen.get(pairs[e]) if e < len(pairs) else None
            title = f"{cell + ' ' if len(cells) > 1 else ''}{name}" + (f": {op}" if op else "")
            out.append((f"probs {cell} {name}", title, ops, series))
    return out


def run_figure(run_dir: Path):
    """The figure of the search in ``run_dir`` (finished, stopped or still running), unsaved.

    Its axes carry labels (``Axes.get_label()``): ``probs <cell> <edge>`` per edge (``probs <label>``
    per choice of a custom model), ``loss``, ``accuracy``, ``entropy``, ``tau``, ``nb201``
    (NAS-Bench-201 cells only), ``ops`` (the legend of the colours), and ``cell <cell>`` per cell
    type (``chosen`` for a custom model).
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    report = load_report(run_dir)
    choices = report.get("kind") == "choices"
    metrics = _by_epoch(read_jsonl(run_dir / "metrics.jsonl"))
    arch = _by_epoch(read_probs_log(run_dir / "arch_probs.jsonl", None if choices else report["space"]))
    geno = None if choices else Genotype.from_dict(report["genotype_record"])
    panels = _probability_series(report, arch, geno)
    names = list(dict.fromkeys(n for _, _, candidates, _ in panels for n in candidates))
    colours = op_colours(names)
    if choices:
        ncols = min(max(len(panels), 1), 6)
        rows_per_group, groups = math.ceil(len(panels) / ncols), 1
    else:
        per_cell = max(1, len(panels) // max(len(geno.cells()), 1))
        ncols = min(per_cell, 7)
        rows_per_group, groups = math.ceil(per_cell / ncols), len(geno.cells())
    edge_rows = max(1, rows_per_group * groups)
    nb201 = bool(report.get("benchmark_per_epoch"))
    bottom = 0.45 * len(report["architecture"]) + 0.8 if choices else 2.8 * len(geno.cells())

    heights = [1.7 * edge_rows, 5.4, bottom]
    fig = Figure(figsize=(WIDTH, sum(heights) + 0.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    done, total = report["epochs_done"], report["epochs_total"]
    state = "" if report["finished"] else " (not finished)"
    what = f"model {report['model']}" if choices else f"{report['space']} space"
    fig.suptitle(f"{run_dir}: {what}, {report['mode']} mode, epoch {done}/{total}{state}")
    outer = fig.add_gridspec(3, 1, height_ratios=heights)

    # Per edge (or label), the probabilities: epoch k fills [k-1, k], so one epoch shows too.
    grid = outer[0].subgridspec(edge_rows, ncols)
    x = [r["epoch"] - 1 for r in arch] + [arch[-1]["epoch"]] if arch else [0, 1]
    per_group = len(panels) // groups if panels else 0
    for k, (label, title, candidates, series) in enumerate(panels):
        group, i = (k // per_group, k % per_group) if per_group else (0, k)
        row, col = group * rows_per_group + i // ncols, i % ncols
        ax = fig.add_subplot(grid[row, col])
        ax.set_label(label)
        ys = [[p.get(n, 0.0) for p in series] for n in candidates]
        ax.stackplot(x, [y + y[-1:] for y in ys], colors=[colours[n] for n in candidates], step="post", linewidth=0)
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if col:
            ax.set_yticklabels([])
        else:
            ax.set_ylabel("probability", fontsize=7)
    epochs = [m["epoch"] for m in metrics]
    marker = "." if len(epochs) < 40 else None
    curves = outer[1].subgridspec(2, 3)

    def panel(slot, label: str, title: str):
        ax = fig.add_subplot(slot)
        ax.set_label(label)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return ax

    for slot, label, unit in ((curves[0, 0], "loss", "loss"), (curves[0, 1], "accuracy", "accuracy (%)")):
        ax = panel(slot, label, unit)
        key = "loss" if label == "loss" else "acc"
        ax.plot(epochs, _values(metrics, f"train_{key}"), marker=marker, label="train (weights' split)")
        ax.plot(epochs, _values(metrics, f"val_{key}"), marker=marker, label="validation (architecture's split)")
        ax.legend(fontsize=7)
    ax = panel(curves[0, 2], "entropy", f"architecture entropy (nats per {'label' if choices else 'edge'})")
    entropy = _values(metrics, "entropy")
    ax.plot(epochs, entropy, marker=marker, color="black")
    # Uniform logits: the mean over the edges (labels) of log(candidates), as the entropy is averaged.
    widths = [len(c) for _, _, c, _ in panels]
    uniform = sum(map(math.log, widths)) / len(widths) if widths else 0.0
    if uniform > 0:
        same = len(set(widths)) == 1
        ax.axhline(uniform, color="grey", linestyle=":", label=f"uniform over {widths[0]}" if same else "uniform")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_ylim(0, 1.1 * max([max(uniform, math.log(2))] + [h for h in entropy if math.isfinite(h)]))
    ax = panel(curves[1, 0], "tau", "τ (Gumbel-softmax temperature)")
    ax.plot(epochs, _values(metrics, "tau"), marker=marker, color="purple")
    if nb201:
        from .benchmarks import load_benchmark

        bench = load_benchmark()
        ax = panel(curves[1, 1], "nb201", "derived cell's NAS-Bench-201 CIFAR-10 test accuracy (%)")
        rec = report["benchmark_per_epoch"]
        ax.plot([r["epoch"] for r in rec], [r["cifar10_test"] for r in rec], marker=marker, color="black")
        best = bench.best().accuracy
        ax.axhline(best, color="green", linestyle="--", label=f"space's best {best:.2f}")
        ax.axhline(bench.mean(), color="grey", linestyle="--", label=f"random cell's mean {bench.mean():.2f}")
        ax.legend(fontsize=7, loc="lower right")
    legend = fig.add_subplot(curves[1, 2] if nb201 else curves[1, 1:])
    legend.set_label("ops")
    legend.axis("off")
    legend.legend(
        handles=[Patch(color=colours[n], label=n) for n in names],
        loc="center",
        title="candidate (probability panels)" if choices else "op (probability panels and cell graph)",
        fontsize=8,
        title_fontsize=8,
        ncol=2 if len(names) > 5 else 1,
    )

    if choices:
        ax = fig.add_subplot(outer[2])
        ax.set_label("chosen")
        draw_choices(ax, report, colours)
        return fig
    graphs = outer[2].subgridspec(len(geno.cells()), 1)  # one above the other: each as wide as it can be
    for k, cell in enumerate(geno.cells()):
        ax = fig.add_subplot(graphs[k, 0])
        ax.set_label(f"cell {cell}")
        draw_cell(ax, geno, cell, colours)
    return fig


def draw_choices(ax, report: Dict[str, Any], colours: Dict[str, str]) -> None:
    """A custom model's derived architecture: one line per label, its chosen candidate(s) and probability."""
    ax.axis("off")
    ax.set_title("derived architecture (chosen candidate per label)", fontsize=9)
    rows = list(report["architecture"].items())
    for k, (label, chosen) in enumerate(rows):
        names = chosen if isinstance(chosen, list) else [chosen]
        probs = report["final_probs"].get(label, {})
        y = 1 - (k + 0.5) / max(len(rows), 1)
        ax.text(0.35, y, label, ha="right", va="center", fontsize=9, transform=ax.transAxes)
        text = ",  ".join(f"{n} ({probs[n]:.2f})" if n in probs else n for n in names)
        ax.text(0.37, y, text, ha="left", va="center", fontsize=9, transform=ax.transAxes, color=colours.get(names[0]))


def draw_cell(ax, geno: Genotype, cell: str, colours: Optional[Dict[str, str]] = None) -> None:
    """Draw ``geno``'s ``cell`` on ``ax`` with matplotlib alone: the space's nodes in a row, each kept
    edge an arrow labelled with its op (``none`` edges left out, as in the DOT drawing)."""
    from matplotlib.patches import FancyArrowPatch

    space = get_space(geno.space)
    nodes = space.dot_nodes(geno, cell)
    arrows = space.dot_edges(geno, cell)
    colours = colours or op_colours(sorted({op for op, _ in geno.cells()[cell]}))
    where = {node: i for i, (node, _) in enumerate(nodes)}
    box = dict(boxstyle="round,pad=0.35", facecolor="white", edgecolor="black")
    for n, (_, label) in enumerate(nodes):
        ax.text(n, 0, label, ha="center", va="center", fontsize=8, zorder=3, bbox=box)

    # Neighbours get a straight arrow (its label just above it); a longer one an arc whose height
    # grows with its span, above the row from an even node and below it from an odd one, so arcs
    # and labels overlap less. With equal aspect an arc3 of rad r over a span s peaks r * s / 2 off the row.
    def peak(span: int) -> float:
        return 0.0 if span <= 1 else 0.35 + 0.15 * (span - 2)

    for src, dst, op in arrows:
        a, b = where[src], where[dst]
        span = b - a
        side = 0 if abs(span) <= 1 else (1 if a % 2 == 0 else -1)
        rad = 2 * peak(abs(span)) / abs(span) if span else 0.0
        colour = colours.get(op, "black") if op else "#888888"
        ax.add_patch(
            FancyArrowPatch(
                (a, 0),
                (b, 0),
                connectionstyle=f"arc3,rad={-side * rad * (1 if span > 0 else -1)}",
                arrowstyle="-|>",
                mutation_scale=10,
                shrinkA=13,
                shrinkB=13,
                color=colour,
                linewidth=1.6 if op else 0.8,
                zorder=2,
            )
        )
        if op:
            label = dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85)
            y = side * peak(abs(span)) if side else 0.12
            ax.text((a + b) / 2, y, op, ha="center", va="center", fontsize=7, color=colour, zorder=4, bbox=label)
    reach = peak(max([abs(where[b] - where[a]) for a, b, _ in arrows] + [1])) + 0.3
    ax.set_xlim(-0.6, len(nodes) - 0.4)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal", adjustable="box")
    ax.axis("off")
    ax.set_title(f"derived {cell} cell", fontsize=9)


def write_plot(run_dir: Path, path: Path, dpi: int = DPI) -> Path:
    """Draw :func:`run_figure` of ``run_dir`` and write it to ``path`` as a PNG, atomically."""
    fig = run_figure(run_dir)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
