"""Writes the machine refuses (a full disk, no permission): one error line, exit 2, nothing lost,
and a resume that continues exactly once the write can succeed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_util import run_cli  # noqa: E402

from nas.errors import WriteError
from nas.io import append_jsonl

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "data.num_train=192",
    "data.num_test=32",
    "data.image_size=16",
    "supernet.C=4",
    "supernet.N=1",
    "search.batch_size=32",
    "search.steps_per_epoch=2",
    "search.epochs=3",
    "run.device=cpu",
    "search.warmup_epochs=0",
    "search.prune=off",
]
SETS = [x for s in TINY for x in ("--set", s)]


def assert_one_error_line(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def lines(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class FullDisk:
    """``os.replace`` onto a file named ``name`` fails with ENOSPC on its ``nth`` call and after,
    as on a disk that fills up; the temporary file it would have renamed is left to the writer."""

    def __init__(self, monkeypatch, name: str, nth: int = 1):
        self.real, self.name, self.nth, self.calls = os.replace, name, nth, 0
        monkeypatch.setattr(os, "replace", self)

    def __call__(self, src, dst, *args, **kwargs):
        if Path(dst).name == self.name:
            self.calls += 1
            if self.calls >= self.nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(src, dst, *args, **kwargs)


def test_full_disk_at_a_checkpoint_then_at_the_plot_resumes_exactly(tmp_path, monkeypatch, capsys, one_thread):
    pytest.importorskip("matplotlib")
    full = tmp_path / "full"
    code, _, err = run_cli(["--out", full, "--quiet", "--set", "run.plot=true"] + SETS, capsys)
    assert code == 0, err

    run_dir = tmp_path / "run"
    # 1. The disk fills up while epoch 2's checkpoint is written.
    with monkeypatch.context() as m:
        FullDisk(m, "checkpoint.pt", nth=2)
        code, _, err = run_cli(["--out", run_dir, "--quiet", "--set", "run.plot=true"] + SETS, capsys)
    checkpoint = run_dir / "checkpoint.pt"
    assert_one_error_line(code, err, str(checkpoint), "no space left on device", "free space", "--resume")
    assert f"python search.py --resume {run_dir}" in err
    # The last complete checkpoint (epoch 1) and the logs end together; no temporary file is left.
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert [m["epoch"] for m in lines(run_dir / "metrics.jsonl")] == [1]
    assert [r["epoch"] for r in lines(run_dir / "arch_probs.jsonl")] == [1]
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not (run_dir / "plot.png").exists()
    # genotype.json, rewritten with epoch 2's before the checkpoint failed, is epoch 1's again
    one = tmp_path / "one"
    code, _, err = run_cli(["--out", one, "--quiet", "--stop-after", "1"] + SETS, capsys)
    assert code == 0, err
    assert (run_dir / "genotype.json").read_text() == (one / "genotype.json").read_text()

    # 2. Space for the checkpoints, but the disk is full again when the figure is written.
    with monkeypatch.context() as m:
        FullDisk(m, "plot.png")
        code, _, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert_one_error_line(code, err, str(run_dir / "plot.png"), "no space left on device", "--resume")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3
    assert [m["epoch"] for m in lines(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert not (run_dir / "plot.png").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    # 3. Space freed: the resume writes the figure, and the run is the uninterrupted one.
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    assert (run_dir / "plot.png").stat().st_size > 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ma, mb = lines(full / "metrics.jsonl"), lines(run_dir / "metrics.jsonl")
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    assert [m["genotype"] for m in ma] == [m["genotype"] for m in mb]
    assert lines(full / "arch_probs.jsonl") == lines(run_dir / "arch_probs.jsonl")
    assert (full / "genotype.json").read_text() == (run_dir / "genotype.json").read_text()


def test_full_disk_at_the_first_checkpoint_keeps_no_epoch(tmp_path, monkeypatch, capsys, one_thread):
    """No epoch is kept, so none of its outputs is: no metrics line, no genotype.json."""
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        FullDisk(m, "checkpoint.pt", nth=1)
        code, _, err = run_cli(["--out", run_dir, "--quiet"] + SETS, capsys)
    assert_one_error_line(code, err, str(run_dir / "checkpoint.pt"), "no space left on device", "nothing to --resume")
    assert not run_dir.exists()  # the folder it made goes with it: the same command starts again
    # A folder that was there keeps only what it held, so the same --out works again too.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with monkeypatch.context() as m:
        FullDisk(m, "checkpoint.pt", nth=1)
        code, _, err = run_cli(["--out", mine, "--quiet", "--set", "run.tensorboard=false"] + SETS, capsys)
    assert_one_error_line(code, err, str(mine / "checkpoint.pt"), "nothing of this run was kept: start again once")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # A retrain whose genotype.json cannot be written (before its epochs) keeps nothing either.
    retrain = SETS + ["--set", "retrain.nb201.C=4", "--set", "retrain.nb201.N=1", "--set", "retrain.nb201.epochs=1"]
    arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    with monkeypatch.context() as m:
        FullDisk(m, "genotype.json", nth=1)
        code, _, err = run_cli(["retrain", "--genotype", arch, "--out", run_dir / "r", "--quiet"] + retrain, capsys)
    assert_one_error_line(code, err, str(run_dir / "r" / "genotype.json"), "no space left on device")
    assert not run_dir.exists()


def test_full_disk_while_a_metrics_line_is_appended(tmp_path, monkeypatch):
    """Half the line reaches the disk, then it is full: the file is as it was."""
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd, data):
        if half_then_full.calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        half_then_full.calls += 1
        return real(fd, bytes(data[: len(data) // 2]))

    half_then_full.calls = 0
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match="no space left on device"):
        append_jsonl(path, {"epoch": 2, "train_loss": 1.0})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_a_metrics_line_is_on_the_disk_before_the_checkpoint_after_it(tmp_path, monkeypatch):
    """The checkpoint is synced; its epoch's line must be too, or a power cut keeps the one and
    loses the other (a resume then never writes that line)."""
    synced, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1})
    assert synced == [(tmp_path / "metrics.jsonl").stat().st_ino]


def test_out_where_no_folder_can_be_made(capsys):
    """``--out /sys/run``: sysfs refuses new folders even to root."""
    if not sys.platform.startswith("linux") or not Path("/sys/kernel").is_dir():
        pytest.skip("needs Linux's /sys")
    code, _, err = run_cli(["--out", "/sys/run", "--quiet"] + SETS, capsys)
    assert_one_error_line(code, err, "/sys/run", "nothing to --resume")
    assert not Path("/sys/run").exists()


def test_retrain_checkpoint_on_a_full_disk(tmp_path, monkeypatch, capsys, one_thread):
    arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    retrain = SETS + [
        x
        for s in ("retrain.nb201.C=4", "retrain.nb201.N=1", "retrain.nb201.epochs=2")
        + ("retrain.nb201.batch_size=32", "retrain.nb201.steps_per_epoch=2")
        for x in ("--set", s)
    ]
    run_dir = tmp_path / "retrain"
    with monkeypatch.context() as m:
        FullDisk(m, "checkpoint.pt", nth=2)
        code, _, err = run_cli(["retrain", "--genotype", arch, "--out", run_dir, "--quiet"] + retrain, capsys)
    assert_one_error_line(code, err, str(run_dir / "checkpoint.pt"), f"python search.py retrain --resume {run_dir}")
    assert [m["epoch"] for m in lines(run_dir / "metrics.jsonl")] == [1]
    # The result is written last: a full disk there too, then the resume finishes.
    with monkeypatch.context() as m:
        FullDisk(m, "result.json")
        code, _, err = run_cli(["retrain", "--resume", run_dir, "--quiet"], capsys)
    assert_one_error_line(code, err, str(run_dir / "result.json"), "--resume")
    code, _, err = run_cli(["retrain", "--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((run_dir / "result.json").read_text())["epochs"] == 2


def test_inspect_outputs_where_writing_is_refused(tmp_path, monkeypatch, capsys, one_thread):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["--out", run_dir, "--quiet", "--stop-after", "1"] + SETS, capsys)
    assert code == 0, err
    for flag, name in (("--dot", "cell.dot"), ("--plot", "cell.png")):
        if flag == "--plot":
            pytest.importorskip("matplotlib")
        with monkeypatch.context() as m:
            FullDisk(m, name)
            code, _, err = run_cli(["inspect", run_dir, flag, tmp_path / name], capsys)
        assert_one_error_line(code, err, str(tmp_path / name), "no space left on device")
        assert "--resume" not in err  # nothing of a run to continue
        assert not (tmp_path / name).exists()
    # A folder that does not exist: named, with the fix.
    code, _, err = run_cli(["inspect", run_dir, "--dot", tmp_path / "missing" / "cell.dot"], capsys)
    assert_one_error_line(code, err, str(tmp_path / "missing" / "cell.dot"), "create its folder")


def test_tensorboard_events_on_a_full_disk(tmp_path, monkeypatch, capsys, one_thread):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(SummaryWriter, "flush", full)
        code, _, err = run_cli(["--out", run_dir, "--quiet", "--set", "run.tensorboard=true"] + SETS, capsys)
    assert_one_error_line(code, err, str(run_dir / "tensorboard"), "no space left on device", "--resume")
    # Epoch 1's events could not be written: no checkpoint, no metrics line.
    assert not (run_dir / "checkpoint.pt").exists()
    assert lines(run_dir / "metrics.jsonl") == []


def test_lookup_output_to_a_full_disk():
    """``lookup ... > file`` on a full disk: /dev/full refuses every write with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "search.py"), "lookup", "6111"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "no space left on device" in proc.stderr
