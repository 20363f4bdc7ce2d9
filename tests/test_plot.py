"""The figure of a run (``inspect --plot``, ``run.plot``) and TensorBoard logging (``run.tensorboard``)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")  # the [test] extra installs it

import matplotlib.image  # noqa: E402
from cli_util import run_cli, sets  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

import nas  # noqa: E402
from nas.cli import main  # noqa: E402
from nas.plot import DPI, run_figure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "data.num_train=192",
    "data.num_test=32",
    "data.image_size=16",
    "supernet.C=4",
    "search.batch_size=32",
    "search.steps_per_epoch=2",
    "search.epochs=2",
    "run.device=cpu",
    "search.warmup_epochs=0",
    "search.prune=off",
]
TINY_NB201 = TINY + ["supernet.space=nb201", "supernet.N=1"]
TINY_DARTS = TINY + ["supernet.space=darts", "supernet.N=3"]


def search(run_dir: Path, items, *extra) -> None:
    assert main([str(a) for a in ["--out", run_dir, "--quiet", *extra, *sets(items)]]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """An nb201 run, a darts run (both finished) and an nb201 run stopped after its first epoch."""
    root = tmp_path_factory.mktemp("plot_runs")
    search(root / "nb201", TINY_NB201)
    search(root / "darts", TINY_DARTS)
    search(root / "stopped", TINY_NB201 + ["run.plot=true"], "--stop-after", "1")
    return root


def labels(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def metrics_of(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_probability_panels(axes, geno, run_dir: Path) -> None:
    """One panel per edge; its stacked areas are one per op and add up to 1 at every epoch."""
    space = nas.get_space(geno.space)
    names = space.edge_names()
    ops = geno.ops
    epochs = len(metrics_of(run_dir))
    for cell in geno.cells():
        for name in names:
            ax = axes[f"probs {cell} {name}"]
            assert len(ax.collections) == len(ops)
            assert ax.get_xlim() == (0, epochs)
            top = ax.collections[-1].get_paths()[0].vertices[:, 1].max()
            assert top == pytest.approx(1.0, abs=1e-4)


def test_nb201_figure_has_every_panel(runs):
    run_dir = runs / "nb201"
    fig = run_figure(run_dir)
    axes = labels(fig)
    geno = nas.Genotype.from_json((run_dir / "genotype.json").read_text())
    check_probability_panels(axes, geno, run_dir)
    for name in ("loss", "accuracy", "entropy", "tau", "nb201", "ops", "cell normal"):
        assert name in axes, name
    metrics = metrics_of(run_dir)
    # Both splits' curves, one point per epoch.
    for name, key in (("loss", "loss"), ("accuracy", "acc")):
        lines = axes[name].get_lines()
        assert [list(line.get_xdata()) for line in lines] == [[1, 2], [1, 2]]
        assert list(lines[0].get_ydata()) == [m[f"train_{key}"] for m in metrics]
        assert list(lines[1].get_ydata()) == [m[f"val_{key}"] for m in metrics]
    assert list(axes["tau"].get_lines()[0].get_ydata()) == [m["tau"] for m in metrics]
    assert list(axes["entropy"].get_lines()[0].get_ydata()) == [m["entropy"] for m in metrics]
    # The benchmark accuracy per epoch, with the random-cell mean and the space's best as references.
    bench = nas.load_benchmark()
    ys = [list(line.get_ydata()) for line in axes["nb201"].get_lines()]
    assert ys[0] == [m["benchmark"]["cifar10_test"] for m in metrics]
    flat = sorted(y[0] for y in ys[1:] if len(set(y)) == 1)
    assert flat == pytest.approx(sorted([bench.best().accuracy, bench.mean()]))
    # The op legend names every op; the cell graph draws one arrow per edge other than none.
    legend_text = [t.get_text() for t in axes["ops"].get_legend().get_texts()]
    assert legend_text == geno.ops
    graph = axes["cell normal"]
    kept = [op for op, _ in geno.normal if op != "none"]
    assert sum(isinstance(p, FancyArrowPatch) for p in graph.patches) == len(kept)
    assert sorted(t.get_text() for t in graph.texts if t.get_text() in nas.NB201_OPS) == sorted(kept)


def test_darts_figure_has_both_cells(runs):
    run_dir = runs / "darts"
    fig = run_figure(run_dir)
    axes = labels(fig)
    geno = nas.Genotype.from_json((run_dir / "genotype.json").read_text())
    assert geno.space == "darts"
    check_probability_panels(axes, geno, run_dir)
    assert "nb201" not in axes  # no benchmark for darts cells
    space = nas.get_space("darts")
    for cell in ("normal", "reduce"):
        arrows = [p for p in axes[f"cell {cell}"].patches if isinstance(p, FancyArrowPatch)]
        assert len(arrows) == len(space.dot_edges(geno, cell))
    # The derived op is named over its edge's panel; edges the cell dropped name none.
    titled = [ax.get_title() for label, ax in axes.items() if label.startswith("probs normal")]
    assert sum(":" in t for t in titled) == len(geno.normal)


def test_custom_model_figure_has_a_panel_per_label(tmp_path, one_thread):
    """A search of a custom model (supernet.model): a probability panel per choice label, and the
    chosen candidates in place of a cell graph."""
    run_dir = tmp_path / "custom"
    search(run_dir, TINY + ["supernet.model=choice_models:merge_net"])
    fig = run_figure(run_dir)
    axes = labels(fig)
    arch = nas.load_architecture(run_dir / "architecture.json")
    records = [json.loads(line) for line in (run_dir / "arch_probs.jsonl").read_text().splitlines()]
    for label, probs in records[-1]["choices"].items():
        ax = axes[f"probs {label}"]
        assert len(ax.collections) == len(probs)
        assert ax.get_xlim() == (0, len(records))
    assert {"loss", "accuracy", "entropy", "tau", "ops", "chosen"} <= set(axes)
    assert "nb201" not in axes and not any(name.startswith("cell ") for name in axes)
    text = " ".join(t.get_text() for t in axes["chosen"].texts)
    for label, chosen in arch.items():
        assert label in text
        for name in chosen if isinstance(chosen, list) else [chosen]:
            assert name in text
    # The entropy is averaged per label, so uniform logits give the mean of log(candidates), which
    # is where the first epoch (warm-up: uniform logits) sits when the labels' widths differ.
    widths = [len(p) for p in records[-1]["choices"].values()]
    assert len(set(widths)) > 1
    uniform = [line for line in axes["entropy"].get_lines() if line.get_label() == "uniform"]
    assert len(uniform) == 1 and uniform[0].get_ydata()[0] == pytest.approx(sum(map(math.log, widths)) / len(widths))


def test_run_stopped_after_its_first_epoch_and_then_resumed(runs, tmp_path, capsys):
    stopped = runs / "stopped"
    # run.plot wrote the figure when the invocation stopped.
    image = matplotlib.image.imread(stopped / "plot.png")
    assert image.ndim == 3 and image.shape[0] > 100
    fig = run_figure(stopped)
    axes = labels(fig)
    assert [list(line.get_xdata()) for line in axes["loss"].get_lines()] == [[1], [1]]
    assert axes["probs normal 1<-0"].get_xlim() == (0, 1)
    assert "epoch 1/2 (not finished)" in fig.get_suptitle()
    # Resumed: the figure at the end has both epochs, once each.
    run_dir = tmp_path / "resumed"
    shutil.copytree(stopped, run_dir)
    before = (run_dir / "plot.png").read_bytes()
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    assert "plot.png" in out and (run_dir / "plot.png").read_bytes() != before
    fig = run_figure(run_dir)
    axes = labels(fig)
    assert [list(line.get_xdata()) for line in axes["loss"].get_lines()] == [[1, 2], [1, 2]]
    assert "not finished" not in fig.get_suptitle()


def test_a_running_run_with_a_torn_last_line(runs, tmp_path):
    """A search still writing: the metrics line of the next epoch is half written, its op
    probabilities not yet; the figure shows what is complete."""
    run_dir = tmp_path / "running"
    shutil.copytree(runs / "nb201", run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "tau": 0.1, "train_lo')
    lines = (run_dir / "arch_probs.jsonl").read_text().splitlines()
    (run_dir / "arch_probs.jsonl").write_text(lines[0] + "\n")
    axes = labels(run_figure(run_dir))
    assert [list(line.get_xdata()) for line in axes["loss"].get_lines()] == [[1, 2], [1, 2]]
    assert axes["probs normal 1<-0"].get_xlim() == (0, 1)


def test_inspect_plot_writes_a_png_of_the_figure_size(runs, tmp_path, capsys):
    path = tmp_path / "figure.png"
    code, out, err = run_cli(["inspect", runs / "nb201", "--plot", path], capsys)
    assert code == 0, err
    assert f"wrote {path}" in out
    width, height = run_figure(runs / "nb201").get_size_inches() * DPI
    image = matplotlib.image.imread(path)  # decodes
    assert image.shape[:2] == (round(height), round(width))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_missing_matplotlib_exits_2_naming_the_extra(runs, tmp_path):
    """As a user without the [plot] extra runs it: the real entry point, matplotlib unimportable."""
    path = tmp_path / "figure.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.argv[0] = 'search.py'; "
        "from nas.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for args in (
        ["inspect", str(runs / "nb201"), "--plot", str(path)],
        ["--out", str(tmp_path / "run"), "--quiet", *sets(TINY_NB201 + ["run.plot=true"])],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
        assert "gumbel-nas[plot]" in proc.stderr
    assert not path.exists()
    assert not (tmp_path / "run").exists()  # refused before the search started


def test_importing_nas_imports_neither_matplotlib_nor_tensorboard():
    code = (
        "import sys, nas, nas.plot, nas.tensorboard_log, nas.search, nas.run, nas.cli; "
        "assert 'matplotlib' not in sys.modules and 'tensorboard' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('matplotlib', 'tensorboard'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_missing_tensorboard_exits_2_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    code, _, err = run_cli(["--out", tmp_path / "run", "--quiet", *sets(TINY_NB201 + ["run.tensorboard=true"])], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "gumbel-nas[tensorboard]" in err
    assert not (tmp_path / "run").exists()


def test_a_tensorboard_torch_cannot_load_exits_2_naming_the_fix(tmp_path, monkeypatch, capsys):
    # installed (the package imports) but broken for torch: an old version, a protobuf it cannot use
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, _, err = run_cli(["--out", tmp_path / "run", "--quiet", *sets(TINY_NB201 + ["run.tensorboard=true"])], capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("error: run.tensorboard: the installed tensorboard does not load in torch (")
    assert "pip install -U tensorboard, or set run.tensorboard=false" in err
    assert not (tmp_path / "run").exists()


def test_tensorboard_events_read_back(tmp_path, capsys, one_thread):
    pytest.importorskip("tensorboard")
    # TensorBoard's own reader (its server's), which applies the purge of a resumed run's replayed steps.
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    run_dir = tmp_path / "tb"
    items = TINY_NB201 + ["run.tensorboard=true", "search.epochs=3"]
    code, _, err = run_cli(["--out", run_dir, "--quiet", "--stop-after", "1", *sets(items)], capsys)
    assert code == 0, err
    first = (run_dir / "checkpoint.pt").read_bytes()
    code, _, err = run_cli(["--resume", run_dir, "--quiet", "--stop-after", "1"], capsys)
    assert code == 0, err
    # As if epoch 2's checkpoint had not been written after its events were: the resume replays
    # epoch 2, and TensorBoard must not show it twice.
    (run_dir / "checkpoint.pt").write_bytes(first)
    code, _, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    metrics = metrics_of(run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()

    def series(tag):
        got = events.Tensors(tag)
        return [e.step for e in got], [make_ndarray(e.tensor_proto).item() for e in got]

    steps, loss = series("train_loss")
    assert steps == [1, 2, 3]
    assert loss == pytest.approx([m["train_loss"] for m in metrics])
    assert series("tau")[1] == pytest.approx([m["tau"] for m in metrics])
    assert series("benchmark/cifar10_test")[1] == pytest.approx([m["benchmark"]["cifar10_test"] for m in metrics])
    probs = [json.loads(line) for line in (run_dir / "arch_probs.jsonl").read_text().splitlines()]
    ops = probs[-1]["ops"]
    for e, name in enumerate(nas.get_space("nb201").edge_names()):
        for k, op in enumerate(ops):
            steps, got = series(f"probs/normal/{name}/{op}")
            assert steps == [1, 2, 3]
            assert got == pytest.approx([p["probs"]["normal"][e][k] for p in probs], abs=1e-6)
    steps, texts = series("genotype/text_summary")
    assert steps == [1, 2, 3]
    assert [t.decode() for t in texts] == [f"`{m['genotype']}`" for m in metrics]
    # The Custom Scalars tab: each edge's ops on one chart, whose regex matches exactly that edge's tags.
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    config = events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1]
    charts = {
        c.title: c.multiline.tag
        for category in layout_pb2.Layout.FromString(make_ndarray(config.tensor_proto).item()).category
        for c in category.chart
    }
    tags = events.Tags()["tensors"]
    for name in nas.get_space("nb201").edge_names():
        (pattern,) = charts[name]
        assert sorted(t for t in tags if re.search(pattern, t)) == sorted(f"probs/normal/{name}/{op}" for op in ops)
    assert sorted(t for t in tags if re.search(charts["loss"][0], t)) == ["train_loss", "val_loss"]


def test_each_op_keeps_one_colour():
    from nas.plot import OP_COLOURS, op_colours

    many = [f"candidate{k}" for k in range(30)]
    colours = op_colours(list(nas.NB201_OPS) + many)
    assert len(set(colours.values())) == len(colours)  # no two ops share a colour
    # A built-in op has its colour in every run, whatever else the run searched.
    assert op_colours(["nor_conv_3x3"]) == {"nor_conv_3x3": OP_COLOURS["nor_conv_3x3"]}
    assert all(colours[op] == OP_COLOURS[op] for op in nas.NB201_OPS)


def test_run_plot_is_written_when_the_search_is_stopped_by_hand(tmp_path, capsys, monkeypatch):
    """Ctrl-C in epoch 2: the figure of the checkpoint's epoch, as --stop-after leaves it."""
    from nas.search import SearchTask

    step, calls = SearchTask.step, []

    def interrupted(self, batch):
        calls.append(1)
        if len(calls) > 2:  # epoch 2's first step (2 steps an epoch)
            raise KeyboardInterrupt
        step(self, batch)

    monkeypatch.setattr(SearchTask, "step", interrupted)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        ["--out", run_dir, "--quiet", *sets(TINY_NB201 + ["run.plot=true", "search.epochs=3"])], capsys
    )
    assert code == 130 and "the last checkpoint in" in err
    assert matplotlib.image.imread(run_dir / "plot.png").shape[0] > 0
