"""End-to-end search, resume, inspect and the command line's handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cli_util import run_cli  # noqa: E402

import nas
from nas.cli import main
from nas.config import load_config
from nas.search import run_search

ROOT = Path(__file__).resolve().parent.parent

# A tiny search: 16x16 synthetic images, a few steps per epoch.
TINY = [
    "data.num_train=256",
    "data.num_test=64",
    "data.image_size=16",
    "supernet.C=4",
    "search.batch_size=32",
    "search.steps_per_epoch=3",
    "search.epochs=2",
    "run.device=cpu",
    "search.warmup_epochs=0",  # configs/default.yaml warms up for 10 epochs
    "search.prune=off",  # and prunes, which needs more epochs
]
TINY_NB201 = TINY + ["supernet.space=nb201", "supernet.N=1"]
TINY_DARTS = TINY + ["supernet.space=darts", "supernet.N=3"]
RUN_FILES = ["config.yaml", "metrics.jsonl", "genotype.json", "checkpoint.pt", "arch_probs.jsonl"]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "nb201"
    args = ["--out", run_dir, "--quiet"] + [x for s in TINY_NB201 for x in ("--set", s)]
    assert main([str(a) for a in args]) == 0
    return run_dir


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_search_end_to_end_writes_every_output(space, tmp_path, capsys):
    run_dir = tmp_path / space
    sets = TINY_NB201 if space == "nb201" else TINY_DARTS
    code, out, err = run_cli(["--out", run_dir, "--quiet"] + [x for s in sets for x in ("--set", s)], capsys)
    assert code == 0, err
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in (
        "tau",
        "lr_weights",
        "lr_arch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "entropy",
        "genotype",
        "epoch_seconds",
        "images_per_second",
    ):
        assert key in metrics[-1], key
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in metrics)
    # tau follows the linear 10 -> 0.1 schedule over the 2 epochs.
    assert metrics[0]["tau"] == pytest.approx(10.0) and metrics[1]["tau"] == pytest.approx(0.1)
    geno = nas.Genotype.from_json((run_dir / "genotype.json").read_text())
    assert geno.space == space and str(geno) == metrics[-1]["genotype"]
    # The summary names the architecture, each edge's op and probability, and the outputs.
    assert f"derived architecture: {geno}" in out and str(run_dir) in out
    assert "probability" in out
    saved = load_config(run_dir / "config.yaml")
    assert saved.supernet.space == space and saved.search.epochs == 2
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and {"model", "w_opt", "a_opt", "rng", "config", "schedules"} <= set(ckpt)
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
    probs = [json.loads(line) for line in (run_dir / "arch_probs.jsonl").read_text().splitlines()]
    assert len(probs) == 2
    for rows in probs[-1]["probs"].values():
        assert torch.allclose(torch.tensor(rows).sum(-1), torch.ones(len(rows)), atol=1e-5)


@pytest.mark.parametrize("estimator", ["st", "rloo", "local"])  # the new ones draw paths and edges too
def test_resume_is_exact(tmp_path, estimator):
    cfg = load_config(None, TINY_NB201 + ["search.epochs=3", f"search.estimator={estimator}"])
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=lambda s: None)
    part = run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=1, progress=False, log=lambda s: None)
    assert part.epochs_done == 1 and not part.finished
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=lambda s: None)
    assert resumed.finished and resumed.epochs_done == 3
    assert str(resumed.genotype) == str(full.genotype)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The same metrics history, one line per epoch, every field but the timings; the same optimisers.
    drop = ("epoch_seconds", "images_per_second")
    ma, mb = ([{k: v for k, v in json.loads(x).items() if k not in drop} for x in (tmp_path / run / "metrics.jsonl")
               .read_text().splitlines()] for run in ("full", "part"))  # fmt: skip
    assert ma == mb and len(ma) == 3
    ca, cb = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("full", "part"))
    for opt in ("w_opt", "a_opt", "rng"):  # momentum and Adam's moments bit for bit, the generators' states
        assert _same(ca[opt], cb[opt]), opt


def _same(a, b) -> bool:
    """Nested dicts, lists and tensors, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_resume_cli_continues_a_stopped_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = [x for s in TINY_NB201 for x in ("--set", s)]
    code, _, err = run_cli(["--out", run_dir, "--quiet", "--stop-after", "1"] + sets, capsys)
    assert code == 0, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert "derived architecture" in out


def test_a_resume_may_change_what_the_run_shows_not_what_it_computes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = [x for s in TINY_NB201 + ["search.epochs=3"] for x in ("--set", s)]
    assert run_cli(["--out", run_dir, "--quiet", "--stop-after", "1"] + sets, capsys)[0] == 0
    shown = ["--set", "run.log_every=7", "--set", "run.dist_timeout=60"]
    shown += ["--set", f"data.root={tmp_path / 'moved'}", "--set", "data.download=true"]  # where the data is
    code, _, err = run_cli(["--resume", run_dir, "--quiet", "--stop-after", "1"] + shown, capsys)
    assert code == 0, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    before = snapshot(run_dir)
    code, _, err = run_cli(["--resume", run_dir, "--quiet", "--set", "run.seed=1"] + shown, capsys)
    assert_user_error(code, err, "does not match", "run.seed")
    assert "run.log_every" not in err and snapshot(run_dir) == before
    code, _, err = run_cli(["--resume", run_dir, "--quiet"], capsys)  # the run's own settings again
    assert code == 0, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_inspect_text_json_and_dot(nb201_run, tmp_path, capsys):
    code, out, err = run_cli(["inspect", nb201_run], capsys)
    assert code == 0, err
    geno = nas.Genotype.from_json((nb201_run / "genotype.json").read_text())
    assert str(geno) in out
    for op in nas.NB201_OPS:
        assert op in out
    for edge in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"):
        assert edge in out
    assert "entropy" in out and "collapse" in out

    dot = tmp_path / "cell.dot"
    code, out, err = run_cli(["inspect", nb201_run, "--json", "--dot", dot], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["genotype"] == str(geno)
    assert report["epochs_done"] == 2 and report["finished"] is True
    assert [r["epoch"] for r in report["chosen_per_epoch"]] == [1, 2]
    assert len(report["chosen_per_epoch"][-1]["normal"]) == 6
    rows = report["final_probs"]["normal"]
    assert len(rows) == 6 and all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in rows)
    assert [r["argmax"] for r in rows] == [op for op, _ in geno.normal]
    counts = report["collapse"]["normal"]
    ops = [op for op, _ in geno.normal]
    assert counts["skip"] == ops.count("skip_connect") and counts["none"] == ops.count("none")
    assert counts["pool"] == ops.count("avg_pool_3x3")
    assert report["disconnected_cells"] == geno.disconnected_cells()
    text = dot.read_text()
    assert text.startswith("digraph")
    assert text.count("->") == sum(op != "none" for op in ops)


# ---- bad input: exit 2, one clear line, no traceback, nothing lost -----------
def assert_user_error(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, (needle, err)


def test_missing_and_unparsable_yaml(tmp_path, capsys):
    code, _, err = run_cli(["--config", tmp_path / "nope.yaml"], capsys)
    assert_user_error(code, err, "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  epochs: [1,\n")
    code, _, err = run_cli(["--config", bad], capsys)
    assert_user_error(code, err, "not valid YAML", "line")


def test_unknown_keys_and_wrong_types(tmp_path, capsys):
    code, _, err = run_cli(["--set", "search.epoch=3"], capsys)
    assert_user_error(code, err, "unknown config key", "search.epochs")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("search:\n  epochs: 2\n  bogus: 1\n")
    code, _, err = run_cli(["--config", cfg], capsys)
    assert_user_error(code, err, "search.bogus", "epochs")
    code, _, err = run_cli(["--set", "search.epochs=three"], capsys)
    assert_user_error(code, err, "search.epochs must be int")
    code, _, err = run_cli(["--set", "search.weights.nesterov=5"], capsys)
    assert_user_error(code, err, "search.weights.nesterov must be bool")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("search.epochs=0", "search.epochs must be > 0"),
        ("search.warmup_epochs=2", "Fix: lower it, e.g. --set search.warmup_epochs=0"),
        ("run.log_every=-1", "run.log_every must be >= 0"),
        ("data.weight_fraction=1.0", "data.weight_fraction"),
        ("run.threads=0", "run.threads must be >= 1"),
    ],
)
def test_out_of_range_values(override, needle, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "--out",
            tmp_path / "r",
            "--set",
            "search.epochs=2",
            "--set",
            "search.warmup_epochs=0",
            "--set",
            "search.prune=off",
            "--set",
            override,
        ],
        capsys,
    )
    assert_user_error(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_run_threads_sets_torch_threads(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        args = ["--out", tmp_path / "r", "--quiet", "--set", "run.threads=1"] + [
            x for s in TINY_NB201 for x in ("--set", s)
        ]
        assert run_cli(args, capsys)[0] == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_derive_none_false_keeps_none_out_of_the_genotype(tmp_path, capsys):
    run_dir = tmp_path / "r"
    args = ["--out", run_dir, "--quiet", "--set", "supernet.derive_none=false"] + [
        x for s in TINY_NB201 for x in ("--set", s)
    ]
    assert run_cli(args, capsys)[0] == 0
    geno = nas.Genotype.from_json((run_dir / "genotype.json").read_text())
    assert "none" not in [op for op, _ in geno.normal]
    code, out, _ = run_cli(["inspect", run_dir, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["derive_none"] is False
    assert [r["argmax"] for r in report["final_probs"]["normal"]] == [op for op, _ in geno.normal]
    assert all("none" not in rec["normal"] for rec in report["chosen_per_epoch"])
    code, _, err = run_cli(
        ["--out", tmp_path / "d", "--set", "supernet.space=darts", "--set", "supernet.derive_none=true"], capsys
    )
    assert_user_error(code, err, "derive_none")
    assert not (tmp_path / "d").exists()
    # The default N=1 is too few cells for the darts space: a clear error, not a traceback.
    code, _, err = run_cli(["--out", tmp_path / "e", "--set", "supernet.space=darts"], capsys)
    assert_user_error(code, err, "supernet.N >= 3", "--set supernet.N=3")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("log_every, per_epoch", [(0, 0), (1, 3), (2, 1)])
def test_log_every_sets_how_often_the_bar_reads_the_meters(log_every, per_epoch, tmp_path, capsys, monkeypatch):
    """The progress bar's postfix reads the device's meters (a host sync): every log_every steps of
    an epoch's 3, never with 0."""
    from nas.search import SearchTask

    calls = []
    real = SearchTask.postfix
    monkeypatch.setattr(SearchTask, "postfix", lambda self: calls.append(1) or real(self))
    args = ["--out", tmp_path / "r", "--set", f"run.log_every={log_every}"]
    assert run_cli(args + [x for s in TINY_NB201 for x in ("--set", s)], capsys)[0] == 0
    assert len(calls) == 2 * per_epoch  # 2 epochs


def test_unknown_op_and_space(tmp_path, capsys):
    code, _, err = run_cli(["--out", tmp_path / "a", "--set", "supernet.ops=[none, conv_99x99]"], capsys)
    assert_user_error(code, err, "conv_99x99", "registered ops")
    code, _, err = run_cli(["--out", tmp_path / "b", "--set", "supernet.space=nb999"], capsys)
    assert_user_error(code, err, "nb999", "nb201", "darts")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_data_root(tmp_path, capsys):
    code, _, err = run_cli(
        ["--out", tmp_path / "r", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'no_such_dir'}"],
        capsys,
    )
    assert_user_error(code, err, str(tmp_path / "no_such_dir"))


def test_out_pointing_at_existing_run_is_refused(nb201_run, capsys):
    before = snapshot(nb201_run)
    code, _, err = run_cli(["--out", nb201_run] + [x for s in TINY_NB201 for x in ("--set", s)], capsys)
    assert_user_error(code, err, "already holds a run", "--resume")
    assert snapshot(nb201_run) == before


def test_corrupted_checkpoint(tmp_path, capsys, nb201_run):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(nb201_run, run_dir)
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = snapshot(run_dir)
    code, _, err = run_cli(["--resume", run_dir, "--set", "search.epochs=2"], capsys)
    assert_user_error(code, err, "checkpoint", "corrupted")
    assert snapshot(run_dir) == before


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 3-epoch search stopped after its second epoch: a run to resume, two lines in each log."""
    run_dir = tmp_path_factory.mktemp("runs") / "stopped"
    sets = [x for s in TINY_NB201 + ["search.epochs=3"] for x in ("--set", s)]
    assert main([str(a) for a in ["--out", run_dir, "--quiet", "--stop-after", "2", *sets]]) == 0
    return run_dir


def _edit_checkpoint(change):
    def edit(path):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)

    return edit


def _wrong_alive(ckpt):
    ckpt["model"] = {**ckpt["model"], "alive_normal": torch.ones(3, 3, dtype=torch.bool)}


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda p: p.write_text("hello\n"), ["is corrupted or not a checkpoint of this tool"]),
        (lambda p: p.write_bytes(bytes(range(256)) * 8), ["is corrupted or not a checkpoint of this tool"]),
        (_edit_checkpoint(lambda c: c.pop("model")), ["does not fit this run (KeyError: 'model')"]),
        (_edit_checkpoint(lambda c: c.pop("rng")), ["does not fit this run (KeyError: 'rng')"]),
        (_edit_checkpoint(lambda c: c.update(epoch="x")), ["says it ended epoch 'x' of a 3-epoch run"]),
        (_edit_checkpoint(lambda c: c.update(epoch=-1)), ["says it ended epoch -1 of a 3-epoch run"]),
        (_edit_checkpoint(lambda c: c.update(epoch=99)), ["says it ended epoch 99 of a 3-epoch run"]),
        (_edit_checkpoint(_wrong_alive), ["does not fit this run", "size mismatch for alive_normal"]),
        (_edit_checkpoint(lambda c: c.update(config=5)), ["holds no readable config"]),
    ],
    ids=[
        "text",
        "bytes",
        "no-model",
        "no-rng",
        "text-epoch",
        "epoch-1",
        "epoch-99",
        "wrong-shape",
        "config-not-a-mapping",
    ],
)
def test_a_damaged_checkpoint_is_one_error_line_and_the_run_is_left_as_it_was(
    damage, needles, tmp_path, capsys, stopped_run
):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(stopped_run, run_dir)
    damage(run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    code, _, err = run_cli(["--resume", run_dir], capsys)
    assert_user_error(code, err, *needles)
    assert err.count("\n") == 1 and snapshot(run_dir) == before


@pytest.mark.parametrize(
    "line, needle",
    [
        ("garbage", "line 1 is not JSON"),
        ("[1, 2]", 'line 1 is not an epoch record (a JSON object with an integer "epoch")'),
        ('{"foo": 1}', "line 1 is not an epoch record"),
        ('{"epoch": "1"}', "line 1 is not an epoch record"),
    ],
)
def test_a_damaged_log_line_is_refused_by_inspect_and_resume_and_not_dropped(
    line, needle, tmp_path, capsys, stopped_run
):
    """Only a last line may be torn (a crash mid-write); any other bad line is damage that a
    resume would otherwise drop when it rewrites the log."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(stopped_run, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    (run_dir / "metrics.jsonl").write_text("\n".join([line, *lines[1:]]) + "\n")
    before = snapshot(run_dir)
    for args in (["inspect", run_dir], ["--resume", run_dir]):
        code, _, err = run_cli(args, capsys)
        assert_user_error(code, err, f"{run_dir / 'metrics.jsonl'} {needle}", "restore it from a backup")
    assert snapshot(run_dir) == before


def test_a_probability_record_of_another_shape_is_refused(tmp_path, capsys, nb201_run):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(nb201_run, run_dir)
    lines = (run_dir / "arch_probs.jsonl").read_text().splitlines()
    ops = json.loads(lines[0])["ops"]
    row = json.dumps([1 / len(ops)] * len(ops))
    damaged = [
        '{"epoch": 1, "probs": 5}',
        '{"epoch": 1, "ops": ["a"], "probs": {"normal": [[0.5, 0.5]]}}',  # a row of another width
        '{"epoch": 1, "choices": {"a": {"x": 1.0}}}',  # a custom model's record in a space's run
        f'{{"epoch": 1, "ops": {json.dumps(ops)}, "probs": {{"reduce": [{row}]}}}}',  # another cell type
        f'{{"epoch": 1, "ops": {json.dumps(ops)}, "probs": {{"normal": [{row}]}}}}',  # one edge of six
    ]
    for bad in damaged:
        (run_dir / "arch_probs.jsonl").write_text("\n".join([bad, *lines[1:]]) + "\n")
        for args in (["inspect", run_dir], ["inspect", run_dir, "--budget", "1e9"]):
            code, _, err = run_cli(args, capsys)
            assert_user_error(code, err, "the record of epoch 1 is not a record of nb201's op probabilities")
    (run_dir / "arch_probs.jsonl").unlink()  # a search's log gone: not taken for a retrain run
    code, _, err = run_cli(["inspect", run_dir], capsys)
    assert_user_error(code, err, "is a search run whose arch_probs.jsonl is missing")


def test_resume_with_mismatched_config(nb201_run, capsys):
    before = snapshot(nb201_run)
    code, _, err = run_cli(["--resume", nb201_run, "--set", "search.batch_size=16"], capsys)
    assert_user_error(code, err, "does not match", "search.batch_size")
    assert snapshot(nb201_run) == before


def test_entry_point_exit_status_and_no_traceback(tmp_path):
    """The real entry point, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), "--set", "search.nonsense=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "search.nonsense" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), "inspect", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`search.py lookup ... | head -1`: the broken pipe ends the command quietly."""
    script = f"{sys.executable} {ROOT / 'search.py'} lookup {' '.join(map(str, range(40)))} | head -1"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_stop_after_takes_at_least_one_epoch(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "r"), "--stop-after", value] + [x for s in TINY_NB201 for x in ("--set", s)])
    assert info.value.code == 2 and "takes a whole number of epochs >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_files_that_are_not_utf8_are_one_clear_error(nb201_run, tmp_path, capsys):
    bad_config = tmp_path / "latin1.yaml"
    bad_config.write_bytes(b"data:\n  root: caf\xe9\n")
    code, _, err = run_cli(["--config", bad_config, "--out", tmp_path / "r"], capsys)
    assert_user_error(code, err, f"config file {bad_config} is not UTF-8 text")
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(nb201_run, damaged)
    with open(damaged / "metrics.jsonl", "ab") as f:  # a stray byte: its line is skipped, as a torn one
        f.write(b"\xff\n")
    code, out, err = run_cli(["inspect", damaged], capsys)
    assert code == 0, err
    (damaged / "genotype.json").write_bytes(b"\xff\xfe{}")
    for args in (["inspect", damaged], ["lookup", damaged], ["retrain", damaged, "--out", tmp_path / "rt"]):
        code, _, err = run_cli(args, capsys)
        assert_user_error(code, err, f"genotype file {damaged / 'genotype.json'} is not UTF-8 text")
    (damaged / "genotype.json").write_text('{"space": "nb201", "nor')  # cut short
    for args in (["inspect", damaged], ["lookup", damaged], ["retrain", damaged, "--out", tmp_path / "rt"]):
        code, _, err = run_cli(args, capsys)
        assert_user_error(code, err, f"genotype file {damaged / 'genotype.json'}: genotype JSON does not parse")
        assert "the file is damaged" in err
    shutil.copy(nb201_run / "genotype.json", damaged / "genotype.json")
    (damaged / "config.yaml").write_text("")  # emptied: not read as the defaults
    for args in (["inspect", damaged], ["--resume", damaged], ["retrain", damaged, "--out", tmp_path / "rt"]):
        code, _, err = run_cli(args, capsys)  # not read as the defaults
        assert_user_error(code, err, f"{damaged / 'config.yaml'} holds no config; the run directory is damaged")
    shutil.copy(nb201_run / "config.yaml", damaged / "config.yaml")
    (damaged / "arch_probs.jsonl").write_text("")
    code, _, err = run_cli(["inspect", damaged, "--budget", "1e9"], capsys)
    assert_user_error(code, err, f"{damaged / 'arch_probs.jsonl'} holds no epoch yet")


def test_inspect_refuses_a_retrain_run_and_checks_before_writing(nb201_run, tmp_path, capsys):
    retrain = tmp_path / "retrain"
    sets = [x for s in TINY_NB201 + ["retrain.nb201.epochs=1", "retrain.nb201.steps_per_epoch=1"] for x in ("--set", s)]
    code, _, err = run_cli(["retrain", nb201_run, "--out", retrain, "--quiet", *sets], capsys)
    assert code == 0, err
    code, _, err = run_cli(["inspect", retrain], capsys)
    assert_user_error(code, err, f"{retrain} is a retrain run", "inspect shows searches")
    (retrain / "metrics.jsonl").unlink()  # a retrain in its first epoch: config.yaml and genotype.json only
    (retrain / "checkpoint.pt").unlink()
    code, _, err = run_cli(["inspect", retrain], capsys)
    assert_user_error(code, err, f"{retrain} is a retrain run", "inspect shows searches")
    dot, png = tmp_path / "cell.dot", tmp_path / "cell.png"
    code, _, err = run_cli(["inspect", nb201_run, "--budget", "inf", "--dot", dot], capsys)
    assert_user_error(code, err, "--budget must be a finite number > 0")
    assert not dot.exists()  # the failed check came before any file was written
    code, _, err = run_cli(["inspect", nb201_run, "--plot", tmp_path / "cell.pdf"], capsys)
    assert_user_error(code, err, "--plot writes a PNG image; give a path ending in .png")
    assert not png.exists() and not (tmp_path / "cell.pdf").exists()
    code, _, err = run_cli(["inspect", nb201_run, "--plot", png, "--dot", tmp_path / "nowhere" / "x.dot"], capsys)
    assert_user_error(code, err, f"--dot {tmp_path / 'nowhere' / 'x.dot'}: the folder {tmp_path / 'nowhere'} does not")
    assert not png.exists()  # neither output, though the plot's own path was fine
    code, _, err = run_cli(["inspect", nb201_run, "--plot", png, "--dot", tmp_path], capsys)
    assert_user_error(code, err, f"--dot {tmp_path} is a folder; give a file path in it")
    assert not png.exists()


def test_retrain_refuses_an_nb201_cell_without_six_edges(tmp_path, capsys):
    code, _, err = run_cli(["retrain", "--genotype", "|nor_conv_3x3~0|", "--out", tmp_path / "r"], capsys)
    assert_user_error(code, err, "has 1 edge(s); an NB201 cell has 6")
    assert not (tmp_path / "r").exists()


def test_default_config_is_the_builtin_nb201_search():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.data.name == "synthetic" and cfg.supernet.space == "nb201" and cfg.supernet.mode == "gdas"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_and_validates(name):
    from nas.config import validate

    cfg = load_config(ROOT / "configs" / name)
    validate(cfg)
    raw = yaml.safe_load((ROOT / "configs" / name).read_text())
    assert raw, name


def test_gdas_nb201_config_matches_the_paper():
    cfg = load_config(ROOT / "configs" / "nb201_cifar10_gdas.yaml")
    s = cfg.search
    assert (s.epochs, s.batch_size, cfg.supernet.C, cfg.supernet.N) == (250, 64, 16, 5)
    assert (s.weights.lr, s.weights.lr_min, s.weights.momentum, s.weights.nesterov, s.weights.weight_decay) == (
        0.025,
        0.001,
        0.9,
        True,
        0.0005,
    )
    assert (s.arch.lr, s.arch.betas, s.arch.weight_decay) == (0.0003, [0.5, 0.999], 0.001)
    assert (s.tau.schedule, s.tau.max, s.tau.min, s.weights.grad_clip) == ("linear", 10.0, 0.1, 5.0)
    assert cfg.data.name == "cifar10" and cfg.data.weight_fraction == 0.5


def test_warmup_epochs_train_the_weights_only(tmp_path):
    from nas.io import seed_everything

    cfg = load_config(None, TINY_NB201 + ["search.warmup_epochs=1"])
    run_search(cfg, tmp_path / "w", torch.device("cpu"), progress=False, log=lambda s: None)
    seed_everything(cfg.run.seed)
    initial = nas.build_supernet("nb201", C=4, N=1, num_classes=cfg.data.num_classes).probabilities()["normal"]
    probs = [json.loads(x)["probs"]["normal"] for x in (tmp_path / "w" / "arch_probs.jsonl").read_text().splitlines()]
    assert torch.equal(torch.tensor(probs[0]), initial)  # warm-up: logits untouched
    assert not torch.equal(torch.tensor(probs[1]), initial)  # then the architecture moves
    metrics = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["val_loss"] is None and metrics[1]["val_loss"] is not None


def test_hints_name_the_command_the_user_ran(tmp_path, capsys, monkeypatch):
    """Run as the installed `gumbel-nas`, the hints say `gumbel-nas`, not `python search.py`."""
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/gumbel-nas"])
    args = ["--out", tmp_path / "r", "--quiet", "--stop-after", "1"] + [x for s in TINY_NB201 for x in ("--set", s)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"inspect with: gumbel-nas inspect {tmp_path / 'r'}" in out
    assert f"continue with: gumbel-nas --resume {tmp_path / 'r'}" in out and "search.py" not in out


@pytest.mark.parametrize(
    "argv0, program, torchrun",
    [
        ("/usr/local/bin/gumbel-nas", "gumbel-nas", "torchrun --standalone --nproc_per_node=2 --no-python gumbel-nas"),
        ("/site-packages/nas/__main__.py", "python -m nas", "torchrun --standalone --nproc_per_node=2 -m nas"),
        ("search.py", "python search.py", "torchrun --standalone --nproc_per_node=2 search.py"),
        (
            "/venv/lib/python3/site-packages/pytest/__main__.py",
            "python search.py",
            "torchrun --standalone --nproc_per_node=2 search.py",
        ),
    ],
)
def test_usage_help_and_torchrun_hints_name_the_program_as_it_was_started(
    argv0, program, torchrun, monkeypatch, capsys
):
    from nas.runtime import torchrun_program

    monkeypatch.setattr(sys, "argv", [argv0])
    assert nas.runtime.program() == program and torchrun_program(2) == torchrun
    several = torchrun_program(16, 8)  # two machines: their rendezvous options are the job's own
    assert several.startswith("torchrun --nnodes=2 --nproc_per_node=8 RENDEZVOUS_OPTIONS ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {program} ")
    cfg = ["--set", "search.cost.metric=latency", "--set", "search.cost.weight=1"]
    code, _, err = run_cli(cfg, capsys)  # a hint that names a command to run
    assert_user_error(code, err, f"measured with {program} measure-latency")


def test_python_m_nas_runs_the_program():
    proc = subprocess.run([sys.executable, "-m", "nas", "inspect", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m nas inspect")


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["inpsect", "runs/x"], ["unknown command 'inpsect'; did you mean inspect?"]),
        (["runs/x"], ["unknown command 'runs/x'; the commands are search, inspect"]),
        (["--config", "nb201_cifar10_cpux"], ["(did you mean nb201_cifar10_cpu?)", "default, nb201_cifar10"]),
        (["--config", "NB201_cifar10_cpu.yaml"], ["(did you mean nb201_cifar10_cpu?)"]),
        (["--config", "zzz"], ["config file zzz does not exist and is not a shipped config; give a YAML"]),
        (["retrain", "/no/such/run"], ["/no/such/run does not exist; give a search's run directory"]),
        (["retrain", "--genotype", "15625"], ["cell index 15625 is out of range; NB201 indices are 0..15624"]),
        (["retrain", "--genotype", "²"], ["is neither an architecture string", "or a NAS-Bench-201 cell index"]),
        (["lookup", "²"], ["is neither a file, a run directory, an index nor an arch string"]),
        (["measure-latency", "--repeats", "0", "--out", "lut.json"], ["--repeats must be >= 1, got 0"]),
        (["measure-latency", "--warmup", "-1", "--out", "lut.json"], ["--warmup must be >= 0, got -1"]),
    ],
)
def test_mistyped_commands_and_names_get_a_suggestion(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, *needles)
    assert err.count("\n") == 1 and not (tmp_path / "lut.json").exists()


def test_retrain_takes_a_benchmark_index_and_names_a_genotype_file_it_cannot_parse(tmp_path, capsys):
    from nas.cli import read_genotype

    assert str(read_genotype("6111")) == str(nas.load_benchmark().genotype(6111))
    bad = tmp_path / "cut.json"
    bad.write_text('{"space": "nb2')
    code, _, err = run_cli(["retrain", "--genotype", bad, "--out", tmp_path / "r"], capsys)
    assert_user_error(code, err, f"--genotype file {bad}: genotype JSON does not parse")


def test_a_search_from_python_takes_a_device_name_and_goes_on_without_the_benchmark(tmp_path, monkeypatch):
    """The NAS-Bench-201 lookup is for reading a search, never an input: an install without its
    table searches all the same, with a warning and no ``benchmark`` field."""
    import nas.search

    def missing():
        raise nas.UserError("the packaged benchmark file x.npy is missing; reinstall gumbel-nas")

    monkeypatch.setattr(nas.search, "load_benchmark", missing)
    cfg = load_config(None, TINY_NB201)
    with pytest.warns(UserWarning, match="without the NAS-Bench-201 lookup: the packaged benchmark file"):
        result = run_search(cfg, tmp_path / "run", "cpu", progress=False, log=lambda s: None)
    assert result.finished
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and not any("benchmark" in m for m in metrics)
