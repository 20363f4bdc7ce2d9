"""NAS-Bench-201 figures in the search log, ``inspect`` and ``lookup``; the benchmark is never an input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nas
import nas.search
from nas.cli import main
from nas.config import load_config
from nas.search import run_search

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nats-tss-sample"
TINY = [
    "data.num_train=256",
    "data.num_test=64",
    "data.image_size=16",
    "supernet.C=4",
    "supernet.N=1",
    "search.batch_size=32",
    "search.steps_per_epoch=3",
    "search.epochs=3",
    "search.warmup_epochs=0",
    "search.prune=off",
    "run.device=cpu",
]
CELL_1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def quiet(_msg: str) -> None:
    pass


def lines(path: Path) -> list:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run"
    run_search(load_config(None, TINY), out, torch.device("cpu"), progress=False, log=quiet)
    return out


def test_every_metrics_line_has_the_derived_cells_benchmark_accuracy(run_dir):
    bench = nas.load_benchmark()
    metrics = lines(run_dir / "metrics.jsonl")
    assert len(metrics) == 3
    for m in metrics:
        assert m["benchmark"]["cifar10_test"] == bench.query(m["genotype"])
        assert m["benchmark"]["percentile"] == pytest.approx(bench.percentile(m["genotype"]), abs=0.01)


def test_inspect_json_and_text_report_the_benchmark(run_dir, capsys):
    assert main(["inspect", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bench = nas.load_benchmark()
    geno = report["genotype"]
    assert report["benchmark"]["cifar10_test"] == bench.query(geno)
    assert report["benchmark"]["index"] == bench.index(geno)
    assert report["benchmark"]["arch"] == geno
    assert [r["epoch"] for r in report["benchmark_per_epoch"]] == [1, 2, 3]
    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"NAS-Bench-201 CIFAR-10 test accuracy {bench.query(geno):.2f}%" in out
    assert "whatever data the search ran on" in out


def test_lookup_takes_index_string_genotype_file_and_run_dir(run_dir, tmp_path, capsys):
    geno = nas.Genotype.from_json((run_dir / "genotype.json").read_text())
    index = nas.load_benchmark().index(geno)
    (tmp_path / "g.json").write_text(geno.to_json())
    (tmp_path / "g.txt").write_text(str(geno))
    assert (
        main(
            ["lookup", str(index), str(geno), str(tmp_path / "g.json"), str(tmp_path / "g.txt"), str(run_dir), "--json"]
        )
        == 0
    )
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == 5
    assert {r["index"] for r in reports} == {index}
    assert len({r["cifar10_test"] for r in reports}) == 1


def test_lookup_with_official_files_gives_every_dataset(capsys):
    assert main(["lookup", "11", "--benchmark", str(FIXTURE), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cifar10_test"] == pytest.approx(91.5833, abs=1e-3)
    assert r["epochs"]["200"]["cifar10"]["test"] == pytest.approx(91.5833, abs=1e-3)
    assert r["epochs"]["200"]["cifar100"]["test"] == pytest.approx(67.61, abs=0.01)
    assert set(r["epochs"]["200"]) == {"cifar10", "cifar10-valid", "cifar100", "ImageNet16-120"}
    assert set(r["epochs"]) == {"200", "12"}
    assert main(["lookup", CELL_1]) == 0
    assert "93.66%" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["lookup", "|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "not a NAS-Bench-201 op"),
        (["lookup", nas.darts.DARTS_V2], "not a NAS-Bench-201 cell"),
        (["lookup", "15625"], "out of range"),
        (["lookup", "--", "-1"], "out of range"),
        (["lookup", "nonsense"], "neither a file"),
        (["lookup", "1", "--benchmark", "/no/such/dir"], "does not exist"),
    ],
)
def test_bad_lookups_exit_2_without_traceback(args, needle, capsys):
    # search.py's entry point returns main's status (tests/test_search.py runs it as a process).
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupted_benchmark_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bench"
    bad.mkdir()
    for f in FIXTURE.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = (bad / "000011.pickle.pbz2").read_bytes()
    (bad / "000011.pickle.pbz2").write_bytes(data[: len(data) // 2])  # truncated
    assert main(["lookup", "11", "--benchmark", str(bad)]) == 2
    assert "000011.pickle.pbz2" in capsys.readouterr().err


def test_the_search_never_reads_the_benchmark(tmp_path, monkeypatch):
    """A different ruler changes the logged figures and nothing else."""
    cfg = load_config(None, TINY)
    run_search(cfg, tmp_path / "a", torch.device("cpu"), progress=False, log=quiet)

    class Reversed:
        def query(self, arch):
            return 100.0 - nas.load_benchmark().query(arch)

        def percentile(self, arch):
            return 100.0 - nas.load_benchmark().percentile(arch)

    monkeypatch.setattr(nas.search, "load_benchmark", lambda path=None: Reversed())
    run_search(cfg, tmp_path / "b", torch.device("cpu"), progress=False, log=quiet)
    a, b = lines(tmp_path / "a" / "metrics.jsonl"), lines(tmp_path / "b" / "metrics.jsonl")
    assert [m["benchmark"] for m in a] != [m["benchmark"] for m in b]
    for ma, mb in zip(a, b):
        for key in ("train_loss", "val_loss", "genotype", "entropy"):
            assert ma[key] == mb[key], key
    ca = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    cb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_darts_runs_have_no_benchmark_field(tmp_path, capsys):
    out = tmp_path / "d"
    cfg = load_config(None, TINY + ["supernet.space=darts", "supernet.N=3", "search.epochs=1"])
    run_search(cfg, out, torch.device("cpu"), progress=False, log=quiet)
    assert "benchmark" not in lines(out / "metrics.jsonl")[0]
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["benchmark"] is None
