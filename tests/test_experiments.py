"""The experiment scripts' --quick modes: each runs, exits 0 and writes the expected JSON.

Each script runs in its own process (as a user would run it) from the
repository root, with a tiny budget and a temporary run cache. All four take
well under two minutes together on two CPU cores.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 110


def run_quick(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, f"experiments/{script}.py", "--quick", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    record = json.loads(out.read_text())
    assert record["experiment"] == script and record["quick"] is True
    assert record["command"].startswith(f"python experiments/{script}.py --quick")
    for key in ("platform", "cpu_model", "nproc", "torch"):
        assert key in record["machine"]
    assert record["table"] and record["table"].splitlines()[-1] in proc.stdout  # the table is printed last
    return record


def finite_acc(row: dict) -> bool:
    return isinstance(row["test_acc"], float) and math.isfinite(row["test_acc"]) and 0 <= row["test_acc"] <= 100


def test_search_vs_random(tmp_path):
    rec = run_quick("search_vs_random", tmp_path, "--k-random", "3")
    k = rec["k"]
    assert rec["k_random"] == 3
    datasets = ["synthetic"] + ([] if "cifar10" in rec["skipped"] else ["cifar10"])
    for dataset in datasets:
        for method, n in (("search", k), ("random", 3)):
            rows = [r for r in rec["rows"] if r["dataset"] == dataset and r["method"] == method]
            assert len(rows) == n and k >= 2
            assert all(finite_acc(r) for r in rows)
            assert all(r["genotype"].startswith("|") and 0 <= r["param_free"] <= 6 for r in rows)
        found = [r["test_acc"] for r in rec["rows"] if r["dataset"] == dataset and r["method"] == "search"]
        drawn = [r["test_acc"] for r in rec["rows"] if r["dataset"] == dataset and r["method"] == "random"]
        expected = sum((a > b) + 0.5 * (a == b) for a in found for b in drawn) / (len(found) * len(drawn))
        assert rec["pairwise_win_share"][dataset] == pytest.approx(expected)
    assert {(s["dataset"], s["method"]) for s in rec["summary"]} == {(d, m) for d in datasets
                                                                      for m in ("search", "random")}
    assert all(math.isfinite(s["test_acc_mean"]) for s in rec["summary"])


def _common():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import common
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    return common


def test_pairwise_win_share():
    pairwise_win_share = _common().pairwise_win_share
    assert pairwise_win_share([90.0, 95.0], [80.0, 85.0, 70.0]) == 1.0
    assert pairwise_win_share([50.0], [80.0, 85.0]) == 0.0
    assert pairwise_win_share([80.0, 60.0], [80.0, 70.0]) == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert math.isnan(pairwise_win_share([], [1.0]))


def test_win_share_p_value():
    p_value = _common().win_share_p_value
    # 3 searched cells above all 10 random ones: only 1 of the C(13, 3) = 286 splits does that well
    found, drawn = [50.0, 51.0, 52.0], [float(v) for v in range(40, 50)]
    assert p_value(found, drawn) == pytest.approx(1 / 286)
    # the sampled version (forced by max_exact=0) agrees with the exact one
    assert p_value(found, drawn, max_exact=0, samples=20_000) == pytest.approx(1 / 286, abs=0.002)
    # the lowest cell wins nothing: every split does at least as well
    assert p_value([1.0], [2.0, 3.0]) == 1.0
    # a tie counts half: 5 against (5, 1) has share 0.75, and 2 of the 3 splits reach it (p counts >=)
    assert p_value([5.0], [5.0, 1.0]) == pytest.approx(2 / 3)
    assert math.isnan(p_value([], [1.0]))


def test_search_vs_random_skips_missing_cifar(tmp_path):
    rec = run_quick("search_vs_random", tmp_path, "--datasets", "cifar10", "--cifar-root", str(tmp_path / "none"))
    assert "cifar10" in rec["skipped"] and rec["rows"] == []


def test_compare_modes(tmp_path):
    rec = run_quick("compare_modes", tmp_path)
    assert [s["mode"] for s in rec["summary"]] == ["gdas", "darts", "snas"]
    for mode in ("gdas", "darts", "snas"):
        rows = [r for r in rec["rows"] if r["mode"] == mode]
        assert len(rows) == rec["seeds"] >= 2
        assert all(finite_acc(r) for r in rows)
        for r in rows:
            c = r["counts"]
            assert r["param_free"] == c["skip"] + c["pool"] + c["none"] and c["parametric"] + r["param_free"] == 6
    assert all(math.isfinite(s["test_acc_mean"]) and len(s["cells"]) == rec["seeds"] for s in rec["summary"])


def test_seed_variance(tmp_path):
    rec = run_quick("seed_variance", tmp_path)
    n = rec["seeds"]
    assert n >= 3 and len(rec["rows"]) == n
    assert len(rec["frequency"]) == 6 and all(len(row) == 5 and sum(row) == n for row in rec["frequency"])
    assert sum(c["seeds"] for c in rec["distinct_cells"]) == n
    for row in rec["mean_final_probs"]:
        assert math.isclose(sum(row), 1.0, abs_tol=1e-4)


def test_arch_matters(tmp_path):
    rec = run_quick("arch_matters", tmp_path)
    names = [s["cell_name"] for s in rec["summary"]]
    assert names[:3] == ["all nor_conv_3x3", "all skip_connect", "all avg_pool_3x3"]
    assert len(rec["rows"]) == len(names) * rec["seeds"] and rec["seeds"] >= 2
    assert all(finite_acc(r) for r in rec["rows"])
    assert isinstance(rec["clear_win"], bool)


def test_synthetic_variants(tmp_path):
    rec = run_quick("synthetic_variants", tmp_path, "--variant", "2,light,0,30,10", "--variant", "1,either,0.08,10,0")
    assert [(r["scale"], r["polarity"], r["field"]) for r in rec["rows"]] == [(2, "light", 0.0), (1, "either", 0.08)]
    for r in rec["rows"]:
        assert all(finite_acc({"test_acc": r[f"all_{op}"]}) for op in ("nor_conv_3x3", "skip_connect", "avg_pool_3x3"))
        assert r["genotype"].startswith("|") and 0 <= r["search_train_acc"] <= 100


def test_synthetic_variant_generator_matches_the_library():
    """With the shipped knobs the experiment's generator draws exactly the library's images."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from synthetic_variants import variant_images
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    import nas.data as data_module

    ours = variant_images(2, "light", 0.0)(64, 32, 5, np.random.default_rng(3))
    lib = data_module._synthetic_images(64, 32, 5, np.random.default_rng(3))
    assert np.array_equal(ours[0], lib[0]) and np.array_equal(ours[1], lib[1])
    other = variant_images(1, "either", 0.08)(64, 32, 5, np.random.default_rng(3))
    assert not np.array_equal(other[0], lib[0])


@pytest.mark.parametrize("script", ["search_vs_random", "compare_modes", "seed_variance", "arch_matters",
                                    "cpu_config_cells", "synthetic_variants"])
def test_help(script):
    proc = subprocess.run([sys.executable, f"experiments/{script}.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout


def test_scale_gradients_on_a_tiny_search(tmp_path):
    from nas.cli import main
    run_dir = tmp_path / "run"
    tiny = ["data.num_train=128", "data.num_test=64", "data.image_size=16", "supernet.C=4", "supernet.N=1",
            "search.batch_size=32", "search.steps_per_epoch=2", "search.epochs=1", "search.warmup_epochs=0", "search.prune=off",
            "run.device=cpu"]
    assert main(["--out", str(run_dir), "--quiet"] + [x for s in tiny for x in ("--set", s)]) == 0
    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, "experiments/scale_gradients.py", str(run_dir), "--batches", "4",
                           "--batch-size", "16", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    rows = {r["op"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["none"]["n"] == 0  # a structural zero: never a gradient
    assert sum(r["n"] for r in rows.values()) > 0
    assert all(math.isfinite(r["mean_G"]) for r in rows.values() if r["n"])
    assert "share G>0" in proc.stdout
    bad = subprocess.run([sys.executable, "experiments/scale_gradients.py", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    assert bad.returncode == 2 and "no checkpoint.pt" in bad.stderr


def test_cpu_config_cells(tmp_path):
    rec = run_quick("cpu_config_cells", tmp_path)
    rules = [s["rule"] for s in rec["summary"]]
    assert rules == ["with none (GDAS)", "without none (derive_none: false)", "GDAS, authors' code, full budget",
                     "DARTS collapse (all skip_connect)", "uniform random"]
    assert all(finite_acc(r) for r in rec["rows"])
    assert all(r["none"] == 0 for r in rec["rows"] if r["rule"].startswith("without none"))
    # per run, the two rules differ exactly on the edges where none wins
    runs = {r["run"] for r in rec["rows"] if r["rule"] in rules[:2]}
    assert len(runs) == 2
    for run in runs:
        with_none, without = (next(r["genotype"] for r in rec["rows"] if r["run"] == run and r["rule"] == rule)
                              for rule in rules[:2])
        for a, b in zip(with_none.strip("|").split("|"), without.strip("|").split("|")):
            assert a == b or a.startswith("none~"), (with_none, without)
    searched = [s for s in rec["summary"] if s["rule"] != "uniform random"]
    for s in searched:
        found = [r["test_acc"] for r in rec["rows"] if r["rule"] == s["rule"]]
        drawn = [r["test_acc"] for r in rec["rows"] if r["rule"] == "uniform random"]
        assert s["win_share_vs_random"] == pytest.approx(_common().pairwise_win_share(found, drawn))
        assert s["win_share_p_value"] == pytest.approx(_common().win_share_p_value(found, drawn))
    # each search's op probabilities over the epochs (the plot's data): rows sum to 1
    for name, t in rec["op_probabilities"].items():
        assert t["epochs"] == list(range(1, len(t["epochs"]) + 1))
        assert all(sum(t["probs"][op][e] for op in t["ops"]) == pytest.approx(1.0) for e in range(len(t["epochs"])))


@pytest.mark.parametrize("args, message", [
    (["--seeds", "a,b"], "--seeds takes comma-separated integers"),
    (["--seeds", "0", "runs/x"], "not both"),
    ([], "give search run directories"),
    (["experiments"], "has no genotype.json"),
])
def test_cpu_config_cells_bad_arguments(args, message):
    proc = subprocess.run([sys.executable, "experiments/cpu_config_cells.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_nb201_evidence(tmp_path):
    rec = run_quick("nb201_evidence", tmp_path, "--modes")
    bench = __import__("nas").load_benchmark()
    # Part 1-2: the recorded CPU-config searches, looked up (values from the packaged table).
    runs = {r["run"]: r for r in rec["cpu_config_runs"]}
    assert runs["run_xeon_s1"]["benchmark"] == bench.query(runs["run_xeon_s1"]["genotype"]) == 93.8967
    assert rec["search_vs_random"]["space_mean"] == pytest.approx(87.06, abs=0.01)
    assert 0 < rec["search_vs_random"]["p_random_mean_at_least"] <= 1
    # Part 3: Kendall's tau per file is a rank correlation.
    assert rec["calibration"] and all(-1 <= c["kendall_tau"] <= 1 for c in rec["calibration"])
    # Part 4: every mode, both rules, read from the same search.
    assert {r["mode"] for r in rec["modes"]} == {"gdas", "snas", "darts"}
    for r in rec["modes"]:
        for rule in ("gdas_rule", "none_excluded"):
            assert r[rule]["benchmark"] == bench.query(r[rule]["genotype"])
        assert r["none_excluded"]["counts"]["none"] == 0
        # the rules differ only on edges where none wins
        a = r["gdas_rule"]["genotype"].replace("+", "").strip("|").split("|")
        b = r["none_excluded"]["genotype"].replace("+", "").strip("|").split("|")
        assert all(x == y or x.startswith("none~") for x, y in zip(a, b))


def test_kendall_tau_b_against_hand_values():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from nb201_evidence import kendall_tau_b
    finally:
        sys.path.pop(0)
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,2) C, (1,3) D, (2,3) D -> (1 - 2) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in x: tau-b = (C - D) / sqrt((C + D + Tx) (C + D + Ty)); here C=2, D=0, Tx=1, Ty=0
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / (3 * 2) ** 0.5)


def test_nb201_cpu_search(tmp_path):
    out = tmp_path / "x.json"
    cmd = [sys.executable, "experiments/nb201_cpu_search.py", "--quick", "--out", str(out), "--variant", "q",
           "--seeds", "0", "--set", "search.prune=loss", "--set", "search.prune_batches=2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    bench = __import__("nas").load_benchmark()
    (row,) = rec["runs"]
    assert row["seed"] == 0 and row["settings"] == ["search.prune=loss", "search.prune_batches=2"]
    assert row["minutes"] > 0 and row["final_entropy"] == pytest.approx(0.0, abs=1e-6)
    # The CPU config derives with the none-excluded rule, and that rule never keeps none.
    assert row["genotype"] == row["none_excluded"]["genotype"]
    assert row["none_excluded"]["counts"]["none"] == 0
    for rule in ("gdas_rule", "none_excluded"):
        assert row[rule]["benchmark"] == bench.query(row[rule]["genotype"])
    a = row["gdas_rule"]["genotype"].replace("+", "").strip("|").split("|")
    b = row["none_excluded"]["genotype"].replace("+", "").strip("|").split("|")
    assert all(x == y or x.startswith("none~") for x, y in zip(a, b))
    assert len(row["benchmark_per_epoch"]) == row["epochs"] == 6
    # A second variant merges into the same file.
    proc = subprocess.run(cmd[:6] + ["p", "--seeds", "0", "--set", "search.prune=probability"], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    assert [(r["variant"], r["seed"]) for r in rec["runs"]] == [("q", 0), ("p", 0)]
    assert {s["variant"] for s in rec["summary"]} == {"q", "p"}
