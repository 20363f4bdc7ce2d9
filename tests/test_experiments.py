"""The experiment scripts, run as ``python -m experiments.NAME`` from the repository root.

Each study's ``--quick`` mode runs in its own process (as a user would run it), with a tiny
budget and a temporary run cache, exits 0 and writes the expected JSON. The shared modules
(``experiments.stats``, ``experiments.runs``) are tested in-process. The finished studies in
``experiments/frozen/`` are records, not maintained against the current API, and not run here
(``experiments/frozen/README.md``).
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300  # a guard against a hung script, not a speed limit: loaded CI cores run these slowly
ACTIVE = [
    "bench_choice",
    "bench_distributed",
    "bench_estimators",
    "bench_pruned_soft",
    "bench_sampler",
    "bench_search",
    "build_benchmark_table",
    "context_study",
    "finetune_study",
    "module_map",
    "nb201_cost_front",
    "nb201_cost_sweep",
    "nb201_cpu_search",
    "nb201_evidence",
    "removal_study",
    "rerank_study",
    "screen_study",
    "synthetic_proxy_check",
    "window_odds",
    "window_study",
]


def run_module(name: str, *args: str, timeout: int = TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m experiments.NAME ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def run_quick(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "x.json"
    proc = run_module(script, "--quick", "--out", str(out), *extra)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    record = json.loads(out.read_text())
    assert record["experiment"] == script and record["quick"] is True
    assert record["command"].startswith(f"python -m experiments.{script} --quick")
    for key in ("platform", "cpu_model", "nproc", "torch"):
        assert key in record["machine"]
    assert record["table"] and record["table"].splitlines()[-1] in proc.stdout  # the table is printed last
    return record


@pytest.fixture
def experiments(monkeypatch):
    """The ``experiments`` package, imported as ``python -m`` from the repository root imports it."""
    monkeypatch.syspath_prepend(str(ROOT))
    return lambda name: importlib.import_module(f"experiments.{name}")


def test_no_common_module_and_no_frozen_imports():
    assert not (ROOT / "experiments" / "common.py").exists()
    for path in (ROOT / "experiments").glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text and "experiments.frozen" not in text, path


def main_here(monkeypatch, capsys, script: str, *args: str):
    """``python -m experiments.SCRIPT ARGS`` run in this process (a child would spend seconds
    importing torch): its exit status, stdout and stderr. Torch's thread count is restored."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setattr(sys, "argv", [f"experiments/{script}.py", *map(str, args)])
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        code = importlib.import_module(f"experiments.{script}").main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    err = out.err
    if code is None:
        code = 0
    elif not isinstance(code, int):  # SystemExit("message"): Python prints it and exits 1
        err, code = err + str(code), 1
    return code, out.out, err


def test_every_script_is_listed():
    # the scripts (a main()); the rest are the modules they share
    scripts = {p.stem for p in (ROOT / "experiments").glob("*.py") if "\ndef main(" in p.read_text()}
    assert scripts == set(ACTIVE)


@pytest.mark.parametrize("script", ACTIVE)
def test_help(script, monkeypatch, capsys):
    code, out, err = main_here(monkeypatch, capsys, script, "--help")
    assert code == 0 and "usage:" in out, err


def test_scripts_refuse_what_would_fail_or_overwrite_a_record(tmp_path, monkeypatch, capsys, experiments):
    code, _, err = main_here(monkeypatch, capsys, "bench_pruned_soft", "--steps", "4")
    assert code == 2 and "--steps must be at least 6" in err
    # parts 1-3 alone would write nb201_evidence.json again without part 4's recorded searches
    evidence = experiments("nb201_evidence")
    monkeypatch.setattr(evidence, "RESULTS", tmp_path)
    (tmp_path / "nb201_evidence.json").write_text(json.dumps({"modes": [{"mode": "gdas"}]}))
    code, _, err = main_here(monkeypatch, capsys, "nb201_evidence")
    assert code == 2 and "holds part 4's recorded searches; give --out FILE" in err
    assert json.loads((tmp_path / "nb201_evidence.json").read_text()) == {"modes": [{"mode": "gdas"}]}


def test_pairwise_win_share(experiments):
    pairwise_win_share = experiments("stats").pairwise_win_share
    assert pairwise_win_share([90.0, 95.0], [80.0, 85.0, 70.0]) == 1.0
    assert pairwise_win_share([50.0], [80.0, 85.0]) == 0.0
    assert pairwise_win_share([80.0, 60.0], [80.0, 70.0]) == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert math.isnan(pairwise_win_share([], [1.0]))


def test_win_share_p_value(experiments):
    p_value = experiments("stats").win_share_p_value
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


def test_runner_caches_searches_and_retrains(experiments, tmp_path):
    """A second request for the same run reads it from the cache; another library source runs it again."""
    settings, runs = experiments("settings"), experiments("runs")
    runner = runs.Runner(tmp_path)
    overrides = settings.data_overrides("synthetic", True) + settings.search_overrides("synthetic", True)
    first = runner.search(overrides + ["run.device=cpu"], label="a")
    again = runner.search(overrides + ["run.device=cpu"], label="b")
    assert not first["cached"] and again["cached"] and again["run_dir"] == first["run_dir"]
    assert str(again["genotype"]) == str(first["genotype"]) and len(again["metrics"]) == 2
    retrain = settings.data_overrides("synthetic", True) + settings.retrain_overrides("synthetic", True)
    r1 = runner.retrain(retrain + ["run.device=cpu"], first["genotype"])
    r2 = runner.retrain(retrain + ["run.device=cpu"], first["genotype"])
    assert not r1["cached"] and r2["cached"] and r2["test_acc"] == r1["test_acc"] and 0 <= r1["test_acc"] <= 100
    assert [t["cached"] for t in runner.timings] == [False, True, False, True]
    other = runs.Runner(tmp_path, fingerprint="another-library")
    assert other.done_record(first["run_dir"]) is None


def test_build_benchmark_table_rebuilds_the_packaged_table(tmp_path):
    """From a CSV of the packaged values, the script writes the packaged files byte for byte, and
    checks the order against the official sample directory's meta file."""
    import nas
    from nas import benchmarks as B

    bench = nas.load_benchmark()
    src = tmp_path / "cifar10.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", "cifar10_test_accuracy"])
        for i in range(len(bench)):
            w.writerow([i, bench.arch_string(i), f"{bench.query(i):.4f}"])
    out = tmp_path / "table"
    meta = ROOT / "tests" / "fixtures" / "nats-tss-sample" / "meta.pickle.pbz2"
    proc = run_module("build_benchmark_table", str(src), "--out", str(out), "--meta", str(meta))
    assert proc.returncode == 0, proc.stderr
    assert f"arch order matches {meta}" in proc.stdout
    for name in (B.ACC_FILE, B.ARCH_FILE):
        assert np.array_equal(np.load(out / name), np.load(B.DATA_DIR / name)), name
    # a CSV whose order differs from the official one is refused
    rows = list(csv.reader(open(src)))
    rows[1][1], rows[2][1] = rows[2][1], rows[1][1]
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    bad = run_module("build_benchmark_table", str(src), "--out", str(out), "--meta", str(meta))
    assert bad.returncode == 2 and "differs from" in bad.stderr and "Traceback" not in bad.stderr


def test_synthetic_proxy_check_tiny_run(tmp_path):
    out = tmp_path / "p.json"
    proc = run_module(
        "synthetic_proxy_check",
        "--num-train",
        "64",
        "--num-test",
        "32",
        "--epochs",
        "1",
        "--C",
        "4",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    assert len(results) == 3 and all(0 <= acc <= 100 for accs in results.values() for acc in accs)


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


def test_kendall_tau_b_against_hand_values(experiments):
    kendall_tau_b = experiments("stats").kendall_tau_b
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,2) C, (1,3) D, (2,3) D -> (1 - 2) / 3
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # a tie in x: tau-b = (C - D) / sqrt((C + D + Tx) (C + D + Ty)); here C=2, D=0, Tx=1, Ty=0
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / (3 * 2) ** 0.5)


def test_context_study(tmp_path):
    rec = run_quick("context_study", tmp_path)
    (res,) = rec["results"]
    assert (res["edge"], res["ops"]) == ("3<-0", ["skip_connect", "nor_conv_3x3"])
    for context in ("random", "chain"):
        r = res[context]
        assert r["pairs"] == 3 and math.isfinite(r["mean"]) and r["stderr"] > 0  # the pairs differ


def test_window_study(tmp_path):
    import nas
    from nas.benchmarks import cell_string
    from nas.cost import cost_table, derived_cost

    rec = run_quick("window_study", tmp_path)
    (res,) = rec["results"]
    floor, cap = res["window"]
    assert 0 < floor < cap and res["cells"] == len(res["rows"]) > 0
    # Every none-free cell of the quick supernet whose FLOPs (counted by tracing it) fit the window.
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
    table = cost_table(net, "flops", (3, 16, 16))
    ops = [o for o in net.ops if o != "none"]
    expected = set()
    for i, choice in enumerate(itertools.product(ops, repeat=6)):
        cell = cell_string(list(choice))
        by_table = table.fixed + sum(float(table.costs["normal"][e, net.ops.index(o)]) for e, o in enumerate(choice))
        if i % 1000 == 0:  # the table's sum is the traced network's count
            assert derived_cost(net, table, nas.Genotype.parse(cell), (3, 16, 16)) == pytest.approx(by_table)
        if floor <= by_table <= cap:
            expected.add(cell)
    assert {r["cell"] for r in res["rows"]} == expected
    bench = nas.load_benchmark()
    values = [r["benchmark"] for r in res["rows"]]
    assert all(r["benchmark"] == bench.query(r["cell"]) for r in res["rows"])
    assert res["best_in_window"] == max(values) and res["near_best"] == sum(v >= max(values) - 0.5 for v in values)
    lowest = min(res["rows"], key=lambda r: r["supernet_loss"])
    assert res["best_by_supernet_loss"]["cell"] == lowest["cell"] and -1 <= res["tau_neg_loss"] <= 1
    # The search's derived cell is within its window, and its rank is counted against the window's cells.
    assert res["derived"]["cell"] in expected
    assert res["derived"]["beaten_by"] == sum(v > res["derived"]["benchmark"] for v in values)


def test_finetune_study(tmp_path, monkeypatch, capsys, experiments):
    import re

    import nas

    ft = experiments("finetune_study")
    ckpt = ft.quick_checkpoint(tmp_path / "run")
    out = tmp_path / "ft.json"
    args = ["--out", out, "--top", "2", "--steps", "3", "--batches", "2", "--batch-size", "32", "--eval-batches", "2"]
    code, stdout, err = main_here(monkeypatch, capsys, "finetune_study", ckpt, *args)
    assert code == 0, err
    (res,) = json.loads(out.read_text())["results"]
    rows = res["rows"]
    # Two candidates from each ranking (they may share cells), and the search's own cell.
    assert 2 <= len(rows) == res["candidates"] <= 5 and sum(r["derived"] for r in rows) == 1
    assert sum("loss" in r["source"] for r in rows) == 2 and sum("probability" in r["source"] for r in rows) == 2
    floor, cap = res["window"]
    assert all(floor <= r["flops"] <= cap for r in rows) and res["steps"] == 3
    bench = nas.load_benchmark()
    assert all(r["benchmark"] == bench.query(r["cell"]) for r in rows)
    assert res["best_by_finetuned_loss"]["cell"] == min(rows, key=lambda r: r["finetuned_loss"])["cell"]
    assert res["best_in_candidates"] == max(r["benchmark"] for r in rows) <= res["best_in_window"]
    assert all(-1 <= res[k] <= 1 for k in ("tau_supernet", "tau_finetuned"))
    assert "lowest after training %" in stdout

    # The training runs the candidate's path only: its ops move, the other ops and the logits do not.
    _, task = experiments("rerank_study").load_task(ckpt)
    net = task.net
    (cell,) = list(net.arch)
    choice = task._derived_rows()[cell]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ft.finetune(task, cell, choice, steps=3, lr=0.05)
    after = net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(a.requires_grad for a in net.arch_parameters()) and "arch.normal" not in moved
    for name in before:
        m = re.search(r"edges\.(\d+)\.candidates\.(\w+)\.", name)
        if m and name.endswith("weight"):
            assert (name in moved) == (net.ops.index(m.group(2)) == choice[int(m.group(1))]), name
    assert any(k.startswith("net.stem") for k in moved)
    # The same candidate from the same weights trains to the same weights (the same batches).
    trained = {k: v.clone() for k, v in after.items()}
    net.load_state_dict(before)
    ft.finetune(task, cell, choice, steps=3, lr=0.05)
    assert all(torch.equal(trained[k], v) for k, v in net.state_dict().items())


def test_window_study_compares_the_seeds_of_one_run_and_renders_again(tmp_path, monkeypatch, capsys):
    from experiments.window_study import seed_agreement

    def result(run, seed, losses, epoch=17):
        rows = [{"cell": c, "supernet_loss": v, "benchmark": bench} for c, (v, bench) in losses.items()]
        best = min(rows, key=lambda r: r["supernet_loss"])
        return {
            "checkpoint": f"runs/x/{run}-s{seed}/checkpoint.pt",
            "seed": seed,
            "epoch": epoch,
            "window": [1.0, 2.0],
            "rows": rows,
            "best_by_supernet_loss": {"cell": best["cell"], "benchmark": best["benchmark"]},
        }

    # Seed 0 orders a < b < c by loss, seed 1 c < a < b; only cells both measured are compared.
    s0 = result("run", 0, {"a": (1.0, 90.0), "b": (2.0, 91.0), "c": (3.0, 93.0), "d": (0.5, 80.0)})
    s1 = result("run", 1, {"a": (1.2, 90.0), "b": (1.3, 91.0), "c": (1.1, 93.0)})
    other = result("other", 0, {"a": (1.0, 90.0), "b": (2.0, 91.0)})  # one seed: no row
    later = result("run", 1, {"a": (1.0, 90.0), "b": (2.0, 91.0)}, epoch=35)  # another epoch: no pair
    (row,) = seed_agreement([s0, s1, other, later])
    assert (row["run"], row["epoch"], row["seeds"], row["cells"]) == ("run", 17, [0, 1], 3)
    assert row["tau_between_seeds"] == pytest.approx(-1 / 3)  # a-b agree, a-c and b-c disagree
    assert row["best_by_loss"] == [80.0, 93.0]
    # Standardised losses summed: a (-1.22 + 0) is lowest, ahead of c (1.22 - 1.22).
    assert row["ensemble"]["cell"] == "a" and row["ensemble"]["benchmark"] == 90.0
    assert row["best_in_window"] == 93.0

    # --out alone renders a study's JSON again with its own settings, adding nothing.
    out = tmp_path / "w.json"
    for r in (s0, s1):
        r.update(estimator="st", weight_paths="uniform", cells=3, tau_neg_loss=0.0, tau_acc=0.0)
        r.update(derived={"cell": "a", "benchmark": 90.0, "beaten_by": 2}, best_in_window=93.0, near_best=1)
    studied = {"command": "python -m experiments.window_study a.pt b.pt", "machine": {"cpu_model": "X"}}
    out.write_text(json.dumps({**studied, "batches": 32, "batch_size": 64, "results": [s0, s1]}))
    code, _out, err = main_here(monkeypatch, capsys, "window_study", "--out", out)
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert (rec["batches"], rec["batch_size"], len(rec["results"])) == (32, 64, 2)
    assert (rec["command"], rec["machine"]) == (studied["command"], studied["machine"])
    assert rec["seed_agreement"][0]["ensemble"]["cell"] == "a" and "tau(seeds)" in rec["table"]


def test_rerank_study(tmp_path):
    rec = run_quick("rerank_study", tmp_path)
    bench = __import__("nas").load_benchmark()
    (res,) = rec["results"]
    allowed = res["ops_per_edge"]
    assert all(len(ops) >= 2 and "none" not in ops for ops in allowed)  # three left, none at most one
    # Every cell the surviving ops allow, once each, with its own benchmark accuracy.
    assert res["cells"] == len(res["rows"]) == math.prod(len(ops) for ops in allowed)
    cells = [r["cell"] for r in res["rows"]]
    assert len(set(cells)) == len(cells)
    for r in res["rows"]:
        ops = [part.split("~")[0] for part in r["cell"].split("|") if part not in ("", "+")]
        assert len(ops) == len(allowed) and all(op in allowed[e] for e, op in enumerate(ops))
        assert r["benchmark"] == bench.query(r["cell"]) and 0 <= r["supernet_acc"] <= 100
    best = max(res["rows"], key=lambda r: r["supernet_acc"])
    assert res["best_by_supernet_acc"]["benchmark"] == best["benchmark"]
    lowest_loss = min(res["rows"], key=lambda r: r["supernet_loss"])
    assert res["best_by_supernet_loss"]["benchmark"] == lowest_loss["benchmark"]
    assert res["best_in_candidates"] == max(r["benchmark"] for r in res["rows"])
    # The cell derived by probability is the most probable candidate: per-edge argmaxes maximise
    # the joint log-probability.
    derived = next(r for r in res["rows"] if r["cell"] == res["derived_by_probability"]["cell"])
    assert derived["log_prob"] == pytest.approx(max(r["log_prob"] for r in res["rows"]))
    assert res["derived_by_probability"]["benchmark"] == derived["benchmark"]


def test_removal_study(tmp_path):
    """Each edge's op by removal is the costliest removal among the measured ops; the logits'
    cells are the probabilities' argmax; every cell is looked up as it is."""
    rec = run_quick("removal_study", tmp_path)
    bench = __import__("nas").load_benchmark()
    (res,) = rec["results"]
    ops, losses = res["ops"], res["removal_losses"]
    assert len(losses) == 6 and all(x is not None for row in losses for x in row)  # every op alive

    def cell_ops(key):
        cell = res["cells"][key]
        assert cell["benchmark"] == bench.query(cell["cell"])
        return [part.split("~")[0] for part in cell["cell"].split("|") if part not in ("", "+")]

    for key, with_none in (("removal_none_excluded", False), ("removal_gdas_rule", True)):
        chosen = cell_ops(key)
        for e, row in enumerate(losses):
            allowed = [k for k in range(len(ops)) if with_none or ops[k] != "none"]
            assert row[ops.index(chosen[e])] == max(row[k] for k in allowed), (key, e)
    assert "none" not in cell_ops("removal_none_excluded") and "none" not in cell_ops("logits_none_excluded")
    # Edge by edge: every edge decided once, the cell is the decisions, and the first decision
    # is the one-shot measurement's most decisive edge, with its costliest removal.
    decisions = res["edge_by_edge_decisions"]
    assert sorted(e for e, _, _ in decisions) == list(range(6))
    chosen = cell_ops("edge_by_edge")
    assert all(chosen[e] == op != "none" for e, op, _ in decisions)
    margins = []
    for row in losses:
        top = sorted((x for k, x in enumerate(row) if ops[k] != "none"), reverse=True)
        margins.append(top[0] - top[1])
    e0, op0, _ = decisions[0]
    assert e0 == max(range(6), key=lambda e: margins[e]) and op0 == cell_ops("removal_none_excluded")[e0]
    assert rec["table"].splitlines()[-1].startswith("| mean ± std")


def test_nb201_cpu_search(tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.json"
    cmd = [
        sys.executable,
        "-m",
        "experiments.nb201_cpu_search",
        "--quick",
        "--out",
        str(out),
        "--variant",
        "q",
        "--seeds",
        "0",
        "--set",
        "supernet.mode=gdas",
        "--set",
        "search.prune=loss",
        "--set",
        "search.prune_batches=2",
        "--set",
        "search.derive=logits",  # the config derives by removal, which a pruned search cannot
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    bench = __import__("nas").load_benchmark()
    (row,) = rec["runs"]
    assert row["seed"] == 0 and row["settings"] == [
        "supernet.mode=gdas",
        "search.prune=loss",
        "search.prune_batches=2",
        "search.derive=logits",
    ]
    assert row["minutes"] > 0 and row["final_entropy"] == pytest.approx(0.0, abs=1e-6)
    # The CPU config derives with the none-excluded rule, and that rule never keeps none.
    assert row["genotype"] == row["none_excluded"]["genotype"]
    assert row["none_excluded"]["counts"]["none"] == 0
    for rule in ("gdas_rule", "none_excluded"):
        assert row[rule]["benchmark"] == bench.query(row[rule]["genotype"])
    a = row["gdas_rule"]["genotype"].replace("+", "").strip("|").split("|")
    b = row["none_excluded"]["genotype"].replace("+", "").strip("|").split("|")
    assert all(x == y or x.startswith("none~") for x, y in zip(a, b))
    assert len(row["benchmark_per_epoch"]) == row["epochs"] == 5  # of 6: decided at the last pruning event
    # A second variant, the shipped config's own method (no pruning: both rules from the final
    # probabilities), merges into the same file.
    proc = subprocess.run(
        cmd[:7] + ["p", "--seeds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.read_text())
    assert [(r["variant"], r["seed"]) for r in rec["runs"]] == [("q", 0), ("p", 0)]
    assert {s["variant"] for s in rec["summary"]} == {"q", "p"}
    p_row = rec["runs"][1]
    assert p_row["settings"] == [] and p_row["epochs"] == 6 and p_row["final_entropy"] > 0
    for rule in ("gdas_rule", "none_excluded"):
        assert p_row[rule]["benchmark"] == bench.query(p_row[rule]["genotype"])
    assert p_row["none_excluded"]["counts"]["none"] == 0
    # Copies written by concurrent invocations merge into one file, keeping each run's own stamps.
    merged = tmp_path / "merged.json"
    merge = ["--out", merged, "--merge"]
    for _ in range(2):  # merging the same runs twice replaces them, by (variant, seed)
        code, _out, err = main_here(monkeypatch, capsys, "nb201_cpu_search", *merge, out)
        assert code == 0, err
    got = json.loads(merged.read_text())
    assert got["runs"] == rec["runs"] and got["summary"] == rec["summary"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, _out, err = main_here(monkeypatch, capsys, "nb201_cpu_search", *merge, bad)
    assert code != 0 and "is not a result file" in err


def test_bench_pruned_soft_times_both_forms():
    proc = run_module("bench_pruned_soft", "--steps", "6")
    assert proc.returncode == 0, proc.stderr
    import re

    skipped, computed = map(
        float, re.search(r"skipped: (\d+) ms; computed at weight 0: (\d+) ms", proc.stdout).groups()
    )
    ratio = float(re.search(r"ratio ([\d.]+)x", proc.stdout).group(1))
    assert ratio == pytest.approx(computed / skipped, abs=0.02 + 0.5 * ratio / min(skipped, computed))  # ms rounded


def test_bench_estimators_quick(tmp_path):
    rec = run_quick("bench_estimators", tmp_path)
    names = {r["estimator"] for r in rec["rows"]}
    assert names == {"st", "gumbel_rao K=4", "gumbel_rao K=16", "reinmax"}
    for r in rec["rows"]:
        assert r["relative_variance"] > 0 and math.isfinite(r["relative_bias"])


def test_nb201_cost_front_quick(tmp_path, experiments):
    rec = run_quick("nb201_cost_front", tmp_path)
    s, front = rec["summary"], rec["front"]
    assert s["cells"] == 15625 and s["flops_min"] == s["fixed_flops"] < s["flops_max"]
    assert len(rec["checked_cells"]) == 3 and s["front_size"] == len(front)
    flops, accs = [p["flops"] for p in front], [p["cifar10_test"] for p in front]
    assert flops == sorted(set(flops)) and accs == sorted(set(accs))  # both strictly increasing
    assert front[-1]["index"] == s["best_cell"]["index"]  # the best cell ends the front
    if rec["figure"]:
        assert (tmp_path / "x.png").stat().st_size > 0
    m = experiments("nb201_cost_front")
    points = [(1.0, 80.0, 0), (2.0, 85.0, 1), (2.0, 90.0, 2), (3.0, 88.0, 3), (4.0, 90.0, 4)]
    assert m.pareto_front(points) == [(1.0, 80.0, 0), (2.0, 90.0, 2)]
    assert m.gap_to_front(m.pareto_front(points), 3.5, 88.0) == 2.0
    assert math.isnan(m.gap_to_front(m.pareto_front(points), 0.5, 88.0))


def test_window_odds_quick(tmp_path):
    # two searched cells of one method: 4 M within 0.5 points of the front, 8 M not
    points = [
        {"method": "m", "budget": 4e6, "gap_to_front": 0.3, "cifar10_test": 91.0},
        {"method": "m", "budget": 8e6, "gap_to_front": 1.0, "cifar10_test": 92.0},
    ]
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"points": points}))
    rec = run_quick("window_odds", tmp_path, "--against", str(sweep))
    windows = {w["budget"]: w for w in rec["windows"]}
    assert set(windows) == {4e6, 8e6}
    for w in windows.values():
        assert 0 < w["cells"] and 0 <= w["near_front"] <= w["cells"]
        assert w["chance"] == w["near_front"] / w["cells"]
        assert 0 <= w["best_gap"] <= w["median_gap"]  # a benchmark cell is never above the front
        assert (w["near_front"] > 0) == (w["best_gap"] <= 0.5)
    (m,) = rec["methods"]
    assert m["cells"] == 2 and m["near_front"] == 1
    assert m["median_gap"] == pytest.approx(0.65) and m["mean_benchmark"] == pytest.approx(91.5)
    assert m["mean_benchmark_random"] == pytest.approx(
        (windows[4e6]["mean_benchmark"] + windows[8e6]["mean_benchmark"]) / 2
    )
    assert m["near_front_random"] == pytest.approx(windows[4e6]["chance"] + windows[8e6]["chance"])
    assert m["impossible"] == sum(w["near_front"] == 0 for w in windows.values())


def test_window_odds_windows_hold_what_a_search_may_derive(experiments):
    m = experiments("window_odds")
    front = experiments("nb201_cost_sweep").front_data()
    import nas
    from nas.cost import cost_table

    net = nas.build_supernet("nb201", mode="gdas", **m.SEARCHED)
    costs = cost_table(net, "flops", (3, 32, 32))
    (cell,) = list(costs.costs)
    from nas.benchmarks import cell_string

    def flops(ops):
        return costs.fixed + sum(float(costs.costs[cell][e, net.ops.index(o)]) for e, o in enumerate(ops))

    # every cell without none whose searched-supernet FLOPs lie within 10% of 4 M, found by brute force
    derivable = [o for o in net.ops if o != "none"]
    expected = {cell_string(ops) for ops in itertools.product(derivable, repeat=6) if 3.6e6 <= flops(ops) <= 4.4e6}
    rows = m.window_rows(4e6, 0.1, front)
    assert expected and sorted(r["cell"] for r in rows) == sorted(expected)


def test_nb201_cost_front_latency(tmp_path):
    """With a measured table of the benchmark's network: every cell's latency, its front, and the
    table's sum set beside a whole network timed."""
    lut = tmp_path / "lut.json"
    measure = [sys.executable, "search.py", "measure-latency", "--config", "nb201_cifar10_cpu"]
    measure += ["--set", "supernet.C=16", "--set", "supernet.N=5", "--device", "cpu", "--batch-size", "1"]
    measure += ["--repeats", "1", "--warmup", "1", "--out", str(lut)]
    proc = subprocess.run(measure, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    rec = run_quick("nb201_cost_front", tmp_path, "--latency", str(lut), "--latency-check", "1")
    lat = rec["latency"]
    front, s = lat["front"], lat["summary"]
    times, accs = [p["latency_ms"] for p in front], [p["cifar10_test"] for p in front]
    assert times == sorted(set(times)) and accs == sorted(set(accs))
    assert front[-1]["index"] == rec["summary"]["best_cell"]["index"]
    # Its sign is the machine's: one timing a candidate at batch 1 on a busy CPU can rank them any way.
    assert 0 < s["min_ms"] <= s["median_ms"] <= s["max_ms"] and -1 <= s["spearman_flops_latency"] <= 1
    (checked,) = lat["checked"]
    assert checked["table_ms"] > 0 and checked["timed_ms"] > 0
    assert lat["table"]["batch_size"] == 1


def test_nb201_cost_sweep_quick(tmp_path, monkeypatch, capsys):
    """Two tiny budgeted searches, each judged against the front: its cell, FLOPs and gap agree
    with the front script's own counting, and its supernet FLOPs with its budget's record."""
    rec = run_quick("nb201_cost_sweep", tmp_path)
    assert len(rec["runs"]) == len(rec["points"]) == 2
    budgets = [p["budget"] for p in rec["points"]]
    assert budgets[0] < budgets[1]
    for run, pt in zip(rec["runs"], rec["points"]):
        assert run["cost"]["metric"] == "flops" and run["cost"]["budget"] == pt["budget"]
        assert "search.cost.form=budget" in run["settings"]
        assert pt["genotype"] == run["genotype"] and pt["cifar10_test"] == run["benchmark"]
        assert pt["gap_to_front"] >= 0  # a benchmark cell is never above the front
        assert 0 <= pt["better_at_flops"] < pt["cells_at_flops"]  # its own FLOPs' cells include it
        assert pt["budget_error"] == pytest.approx((pt["supernet_flops"] - pt["budget"]) / pt["budget"])
        assert pt["prune"] == "off" and pt["supernet_flops"] <= pt["budget"]  # the budget derivation fits it
    assert rec["summary"]["points"] == 2
    # One finished search derived at two more budgets after the fact: each cell fits its budget.
    run_dir, budgets = rec["runs"][0]["run_dir"], [rec["points"][0]["budget"] * 0.8, 1e12]
    out = tmp_path / "y.json"
    args = ["--derive-from", f"{run_dir}:0", "--budgets", ",".join(map(str, budgets)), "--out", str(out)]
    code, _out, err = main_here(monkeypatch, capsys, "nb201_cost_sweep", *args)
    assert code == 0, err
    derived = json.loads(out.read_text())["points"]
    assert [p["budget"] for p in derived] == budgets and {p["method"] for p in derived} == {
        "one search, derived at each budget"
    }
    assert all(p["supernet_flops"] <= p["budget"] for p in derived)
    # Without --out it would overwrite the recorded sweep: refused, nothing run.
    recorded = ROOT / "experiments" / "results" / "nb201_cost_sweep.json"
    before = recorded.read_bytes()
    code, _out, err = main_here(monkeypatch, capsys, "nb201_cost_sweep", "--derive-from", f"{run_dir}:0")
    assert code == 2 and "holds a recorded sweep; give --out FILE" in err and recorded.read_bytes() == before


def test_nb201_cost_sweep_direct_step_settings():
    """--cost-step direct: the overrides carry search.cost.step and validate on the sweep's base
    config; the method label says so; the recorded (adam) rows' settings are unchanged."""
    from experiments import nb201_cost_sweep as sweep
    from experiments.nb201_cpu_search import CONFIG
    from nas.config import load_config, validate

    sets = sweep.overrides(6.5e6, 20, 10.0, "probability", "direct")
    assert "search.cost.step=direct" in sets and "search.cost.weight=10" in sets
    validate(load_config(str(CONFIG), sets))
    assert sweep.method_of(sets) == "budget search, direct cost steps, pruned by probability"
    assert sweep.variant_name(6.5e6, 20, "probability", "direct") == "cost-budget-6.5e+06-e20-direct"
    adam = sweep.overrides(6.5e6, 20, 1.0, "off")
    assert not any(s.startswith("search.cost.step") for s in adam)
    assert sweep.method_of(adam) == "budget search, derived within the budget"
    target = sweep.overrides(6.5e6, 20, 10.0, "probability", "direct", form="target")
    assert "search.cost.form=target" in target and "search.cost.form=budget" not in target
    validate(load_config(str(CONFIG), target))
    assert sweep.method_of(target) == "target search, direct cost steps, pruned by probability"
    assert sweep.SHORT[sweep.method_of(target)] == "target direct, pruned"
    assert sweep.variant_name(6.5e6, 20, "probability", "direct", "target") == "cost-target-6.5e+06-e20-direct"
    window = sweep.overrides(6.5e6, 20, 10.0, "probability", "direct", "target", tolerance=0.1)
    assert "search.cost.tolerance=0.1" in window
    validate(load_config(str(CONFIG), window))
    assert sweep.SHORT[sweep.method_of(window)] == "target direct ±10%, pruned"
    rloo = window + ["search.estimator=rloo"]  # a changed estimator or op list is named in the label
    validate(load_config(str(CONFIG), rloo))
    assert sweep.SHORT[sweep.method_of(rloo)] == "target direct ±10%, rloo"
    local = sweep.overrides(6.5e6, 20, 10.0, "probability", "direct", "target", tolerance=0.1, estimator="local")
    validate(load_config(str(CONFIG), local))
    assert sweep.SHORT[sweep.method_of(local)] == "target direct ±10%, local"
    assert sweep.variant_name(6.5e6, 20, "probability", "direct", "target", 0.1, "local").endswith("-tol0.1-local")
    uniform = sweep.overrides(
        12e6, 20, 10.0, "probability", "direct", "target", 0.1, "local", weight_paths="uniform", derive="window"
    )
    assert {"search.weight_paths=uniform", "search.derive=window", "search.estimator=local"} <= set(uniform)
    validate(load_config(str(CONFIG), uniform))
    assert sweep.method_of(uniform).endswith(
        "local estimator, uniform weight paths, derived by window, pruned by probability"
    )
    name = sweep.variant_name(12e6, 20, "probability", "direct", "target", 0.1, "local", "uniform", "window")
    assert name == "cost-target-1.2e+07-e20-direct-tol0.1-local-uniformw-window"
    no_none = window + ["supernet.ops=[skip_connect,nor_conv_1x1,nor_conv_3x3,avg_pool_3x3]"]
    assert sweep.SHORT[sweep.method_of(no_none)] == "target direct ±10%, no none"
    assert sweep.variant_name(6.5e6, 20, "probability", "direct", "target", 0.1).endswith("-direct-tol0.1")


def test_the_budget_config_is_the_recorded_sweep_recipe():
    """configs/nb201_cifar10_cpu_budget.yaml is, setting for setting, the sweep's recorded method
    (local estimator, uniform weight paths, target form within 10%, direct steps, weight 10, 20
    epochs) at 12 M: what its header reports is what it runs."""
    import dataclasses

    from experiments import nb201_cost_sweep as sweep
    from experiments.nb201_cpu_search import CONFIG
    from nas.config import load_config

    shipped = load_config(str(ROOT / "configs" / "nb201_cifar10_cpu_budget.yaml"))
    recipe = sweep.overrides(12e6, 20, 10.0, "probability", "direct", "target", 0.1, "local", weight_paths="uniform")
    recipe.append("search.screen.distance=3")  # the config's screen setting; the screen itself is off
    assert dataclasses.asdict(shipped) == dataclasses.asdict(load_config(str(CONFIG), recipe))


def test_screen_study_judges_the_searched_and_the_screened_cell(tmp_path, experiments):
    """One screened run of three NB201 cells: the screened one is the record's choice, tau compares
    the held-out accuracies with the benchmark's, and the gaps are the front's."""
    m = experiments("screen_study")
    from nas.config import Config, save_config

    cells = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
        "|avg_pool_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|skip_connect~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ]
    run = tmp_path / "run"
    run.mkdir()
    cfg = Config()
    cfg.search.cost.budget, cfg.run.seed = 12e6, 3
    save_config(cfg, run / "config.yaml")
    rows = [
        {"cell": c, "held_out_acc": a, "held_out_loss": 1.0, "train_loss": 1.0, "seconds": 60.0}
        for c, a in zip(cells, [66, 60, 68])
    ]
    record = {"version": 1, "epochs": 6, "ranked_by": "the logits", "candidates": cells, "rows": rows}
    (run / "screen.json").write_text(json.dumps({**record, "chosen": cells[2]}))
    out = tmp_path / "s.json"
    assert m.main([str(run), "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    bench = {c: q for c, q in zip(cells, (93.97, 91.675, 93.35))}  # the packaged table's accuracies
    assert r["searched"]["cell"] == cells[0] and r["screened"]["cell"] == cells[2]
    assert r["screened"]["benchmark"] == pytest.approx(bench[cells[2]])
    assert r["kendall_tau"] == pytest.approx(1 / 3)  # held-out order 2,0,1 against the benchmark's 0,2,1
    assert r["budget"] == 12e6 and r["seed"] == 3 and r["screen_minutes"] == pytest.approx(3.0)
    for cell in (r["searched"], r["screened"]):
        assert cell["gap"] >= 0 and 7e6 < cell["supernet_flops"] < 24e6
    del record["rows"][2]
    (run / "screen.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="no finished screen.json"):
        m.main([str(run)])
