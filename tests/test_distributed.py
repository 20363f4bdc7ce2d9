"""Searching under torchrun: 2 CPU processes with gloo (what CI can run).

The properties: every rank runs the same path and ends bitwise equal; a 2-rank run equals one
process that takes the two per-rank halves as micro-batches and averages their gradients; an op no
rank ran is untouched; the command line writes one run directory, resumes exactly, refuses another
world size, and a killed rank leaves the last checkpoint and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_worker import build, global_batches  # noqa: E402

import nas  # noqa: E402
from nas.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
STEPS = 4
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
    "run.threads=1",
    "run.dist_timeout=60",
]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def torchrun(*args, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=["gdas", "darts"])
def ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ranks-{request.param}")
    done = torchrun(WORKER, "steps", "--mode", request.param, "--steps", STEPS, "--dump", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _equal(a, b, path="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_ranks_agree_bitwise_on_everything(ranks):
    mode, (r0, r1) = ranks
    _equal(r0["state"], r1["state"], "state")  # weights, logits and batch-norm buffers
    _equal(r0["w_opt"], r1["w_opt"], "w_opt")
    _equal(r0["a_opt"], r1["a_opt"], "a_opt")
    _equal(r0["archs"], r1["archs"], "archs")  # the same sampled path at every forward
    assert r0["train"] == r1["train"] and r0["val"] == r1["val"]  # the reduced meters
    assert r0["losses"] != r1["losses"]  # yet each rank saw its own half of the data
    if mode == "gdas":
        assert all(a is not None for a in r0["archs"])
        assert len({json.dumps(a) for a in r0["archs"]}) > 1  # the path changes from step to step


def reference(mode: str):
    """One process: the same steps, each batch as two micro-batches with the same noise, gradients averaged."""
    torch.set_num_threads(1)
    net, w_opt, a_opt = build(mode)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    losses = []
    for (x_w, y_w), (x_a, y_a) in global_batches(STEPS):
        halves_w = [(x_w[:4], y_w[:4]), (x_w[4:], y_w[4:])]
        halves_a = [(x_a[:4], y_a[:4]), (x_a[4:], y_a[4:])]
        for a in arch:
            a.requires_grad_(False)
        w_opt.zero_grad(set_to_none=True)
        rng, step_losses = torch.get_rng_state(), []
        for x, y in halves_w:
            torch.set_rng_state(rng)  # each rank draws the same noise
            loss = F.cross_entropy(net(x), y)
            (loss / 2).backward()
            step_losses.append(loss.item())
        for a in arch:
            a.requires_grad_(True)
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
        a_opt.zero_grad(set_to_none=True)
        rng, arch_losses = torch.get_rng_state(), []
        for x, y in halves_a:
            torch.set_rng_state(rng)
            loss = F.cross_entropy(net(x).float(), y)
            (loss / 2).backward(inputs=arch)
            arch_losses.append(loss.item())
        a_opt.step()
        losses.append((step_losses, arch_losses))
    return net, losses


def test_two_ranks_equal_one_process_with_two_micro_batches(ranks):
    mode, rank_results = ranks
    net, losses = reference(mode)
    for r, res in enumerate(rank_results):
        got = res["losses"]  # per step: weight-step loss, arch-step loss, on this rank's half
        for k, (w_losses, a_losses) in enumerate(losses):
            assert got[2 * k] == pytest.approx(w_losses[r], rel=1e-4, abs=1e-5), (r, k)
            assert got[2 * k + 1] == pytest.approx(a_losses[r], rel=1e-4, abs=1e-5), (r, k)
    state = rank_results[0]["state"]
    for name, value in net.state_dict().items():
        if "running" in name or "num_batches" in name:
            continue  # per-micro-batch statistics in one process, averaged over the ranks in two
        assert torch.allclose(state[name].float(), value.float(), rtol=1e-4, atol=1e-5), name


def test_an_op_no_rank_ran_is_untouched(ranks):
    mode, (r0, _) = ranks
    if mode != "gdas":
        pytest.skip("every op runs in darts mode")
    sampled = {(e, op) for arch in r0["archs"] for e, op in enumerate(arch["normal"])}
    net, _, _ = build("gdas")
    untouched = 0
    for name, _ in net.named_parameters():
        m = re.fullmatch(r"net\.cells\.\d+\.edges\.(\d+)\.candidates\.(\w+)\..*", name)  # edge e, op
        if m is None or (int(m.group(1)), m.group(2)) in sampled:
            continue
        assert torch.equal(r0["state"][name], r0["initial"][name]), name  # no weight decay either
        untouched += 1
    assert untouched > 0
    # No momentum buffer was ever made for them: SGD skipped them, as in one process.
    states = r0["w_opt"]["state"]
    assert 0 < len(states) < len(list(net.weight_parameters()))


def test_the_command_line_under_torchrun_writes_one_run_and_resumes_exactly(tmp_path, capsys):
    sets = [x for s in TINY for x in ("--set", s)]
    whole = torchrun("search.py", "--out", tmp_path / "whole", "--quiet", *sets)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert whole.stdout.count("derived architecture") == 1  # rank 0 alone prints
    assert whole.stdout.count("epoch 1/3") == 1
    part = torchrun("search.py", "--out", tmp_path / "part", "--quiet", "--stop-after", "1", *sets)
    assert part.returncode == 0, part.stderr[-3000:]
    rest = torchrun("search.py", "--resume", tmp_path / "part", "--quiet")
    assert rest.returncode == 0, rest.stderr[-3000:]
    lines = {
        name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("whole", "part")
    }
    assert [m["epoch"] for m in lines["part"]] == [1, 2, 3] and all(m["world_size"] == 2 for m in lines["part"])
    for a, b in zip(lines["whole"], lines["part"]):
        assert (a["train_loss"], a["val_loss"], a["genotype"]) == (b["train_loss"], b["val_loss"], b["genotype"])
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == [
        "arch_probs.jsonl",
        "checkpoint.pt",
        "config.yaml",
        "genotype.json",
        "metrics.jsonl",
    ]
    assert main(["inspect", str(tmp_path / "part"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_done"] == 3
    # A damaged log line stops every rank alike, on one line (rank 0 alone reads the logs).
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "part", damaged)
    text = (damaged / "metrics.jsonl").read_text().splitlines()
    (damaged / "metrics.jsonl").write_text("\n".join(["garbage", *text[1:]]) + "\n")
    done = torchrun("search.py", "--resume", damaged, "--quiet")
    assert done.returncode != 0 and done.stderr.count("error:") == 1, done.stderr[-3000:]
    assert f"{damaged / 'metrics.jsonl'} line 1 is not JSON" in done.stderr and str(ROOT / "nas") not in done.stderr
    # Another world size is refused, clearly, with the fix.
    assert main(["--resume", str(tmp_path / "whole"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "ran with 2 process(es), this resume has 1; resume with the same number (torchrun --nproc_per_node=2)" in err
        and "Traceback" not in err
    )


def test_a_batch_that_does_not_split_is_refused(tmp_path):
    sets = [x for s in TINY + ["search.batch_size=33"] for x in ("--set", s)]
    done = torchrun("search.py", "--out", tmp_path / "r", "--quiet", *sets)
    assert done.returncode != 0
    assert "error: search.batch_size=33 does not split over 2 processes; use a multiple of 2" in done.stderr
    assert str(ROOT / "nas") not in done.stderr  # no traceback of ours (torchrun prints its own summary)
    # One line for the job, not one a rank: rank 0 reports what every rank met alike, after the
    # processes joined (above) and before (an unknown key, below).
    assert done.stderr.count("error:") == 1 and "[rank" not in done.stderr, done.stderr
    done = torchrun("search.py", "--out", tmp_path / "r", "--quiet", *sets, "--set", "search.bogus=1")
    assert done.returncode != 0 and done.stderr.count("error: unknown config key 'search.bogus'") == 1, done.stderr
    assert done.stderr.count("error:") == 1 and not (tmp_path / "r").exists()


def test_a_killed_rank_leaves_the_checkpoint_and_the_job_exits(tmp_path):
    sets = [x for s in TINY for x in ("--set", s)]
    t0 = time.monotonic()
    # 3 steps an epoch: rank 1 dies at its 5th step, inside epoch 2.
    done = torchrun(WORKER, "fault", "--kill-at", "5", "--out", tmp_path / "r", "--quiet", *sets, timeout=200)
    assert done.returncode != 0
    assert time.monotonic() - t0 < 150
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["world_size"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = torchrun("search.py", "--resume", tmp_path / "r", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert nas.Genotype.from_json((tmp_path / "r" / "genotype.json").read_text()).space == "nb201"


def test_retrain_under_torchrun_writes_one_result_and_resumes(tmp_path):
    # Node 2 feeds only a none edge, so its ops never run: DDP must expect unused parameters.
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    sets = [
        x
        for s in [
            "data.num_train=192",
            "data.num_test=64",
            "data.image_size=16",
            "run.device=cpu",
            "run.threads=1",
            "retrain.nb201.C=4",
            "retrain.nb201.N=1",
            "retrain.nb201.epochs=2",
            "retrain.nb201.batch_size=32",
            "retrain.nb201.steps_per_epoch=3",
        ]
        for x in ("--set", s)
    ]
    part = torchrun(
        "search.py", "retrain", "--genotype", cell, "--out", tmp_path / "r", "--quiet", "--stop-after", "1", *sets
    )
    assert part.returncode == 0, part.stderr[-3000:]
    assert part.stdout.count("test accuracy") == 1  # rank 0 alone prints
    assert not (tmp_path / "r" / "result.json").exists()
    rest = torchrun("search.py", "retrain", "--resume", tmp_path / "r", "--quiet")
    assert rest.returncode == 0, rest.stderr[-3000:]
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert result["epochs"] == 2 and result["genotype"] == cell
    assert [m["world_size"] for m in metrics] == [2, 2] and 0 <= result["test_acc"] <= 100


def test_a_soft_search_pruned_by_removal_runs_under_torchrun(tmp_path):
    """Pruned ops stop running in the soft modes too: DDP must expect unused parameters there."""
    overrides = [x for x in TINY if not x.startswith(("search.epochs", "search.prune"))]
    overrides += ["supernet.mode=darts", "search.epochs=6", "search.prune=removal", "search.prune_batches=1"]
    sets = [x for s in overrides for x in ("--set", s)]
    done = torchrun("search.py", "--out", tmp_path / "r", "--quiet", *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["ops_left"] == 1 and metrics[-1]["world_size"] == 2
    assert sum("prune_removal_losses" in m for m in metrics) + ("prune_removal_losses_after" in metrics[-1]) == 4


def test_the_window_derivation_and_the_screen_run_under_torchrun(tmp_path):
    """search.derive=window under torchrun (each rank measures its share of the fixed batches, and
    the losses are averaged across ranks): the run ends, and reports the window cell with the
    lowest loss, within the budget's window. The screen then trains the first two window cells
    alone in DDP, and the reported cell is the one its record chose."""
    from nas.cost import cost_table, derived_cost

    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)  # TINY's data
    table = cost_table(net, "flops", (3, 16, 16))
    budget = table.fixed + 1.5 * float(table.costs["normal"].max())
    overrides = [x for x in TINY if not x.startswith("search.epochs")] + [
        "supernet.mode=gdas",
        "supernet.derive_none=false",
        "search.epochs=2",
        "search.derive=window",
        "search.prune_batches=2",
        "search.cost.form=target",
        "search.cost.weight=1",
        f"search.cost.budget={budget}",
        "search.cost.tolerance=0.05",
        "search.screen.cells=2",
        "search.screen.epochs=1",
    ]
    sets = [x for s in overrides for x in ("--set", s)]
    done = torchrun("search.py", "--out", tmp_path / "r", "--quiet", *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    last = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["derived_by"] == "window" and last["world_size"] == 2 and last["window_cells"] > 1
    losses = [loss for _, loss in last["window_losses"]]
    assert losses == sorted(losses) and last["genotype"] == last["window_losses"][0][0]
    cell = nas.Genotype.parse(last["genotype"])
    assert 0.95 * budget <= derived_cost(net, table, cell, (3, 16, 16)) <= 1.05 * budget
    screen = json.loads((tmp_path / "r" / "screen.json").read_text())
    assert screen["candidates"] == [c for c, _ in last["window_losses"][:2]] and len(screen["rows"]) == 2
    assert all(0 <= r["held_out_acc"] <= 100 for r in screen["rows"])
    chosen = nas.Genotype.from_json((tmp_path / "r" / "genotype.json").read_text())
    assert str(chosen) == screen["chosen"]
