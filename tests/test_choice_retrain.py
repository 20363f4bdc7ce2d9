"""A custom model's search, retrained and under torchrun from the command line (issue 29, part 4).

The properties: ``retrain RUN_DIR`` on a search of ``supernet.model`` builds the network the model
function makes with ``arch=`` (or, when it takes no ``arch``, its model fixed with nas.fix), trains
and tests it under ``retrain.model``, writes its run directory, resumes exactly after
``--stop-after``, and the network it trains is the architecture of ``architecture.json``: no
choice left, each label's chosen candidate in its place. Bad input is one error line. Under
torchrun the search command line draws the same path on every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choice_models import TINY_SEARCH, merge_net, tiny_net  # noqa: E402
from cli_util import run_cli, sets  # noqa: E402

import nas  # noqa: E402
from nas.choice import Choice, ChosenInputs, InputChoice, OpChoice, choice_labels  # noqa: E402
from nas.cli import main  # noqa: E402
from nas.model_supernet import build_chosen_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEARCH = TINY_SEARCH + ["search.epochs=1", "search.warmup_epochs=0", "search.prune=off"]
RETRAIN = ["retrain.model.epochs=2", "retrain.model.batch_size=16", "retrain.model.steps_per_epoch=2"]


def lines(path: Path):
    drop = ("epoch_seconds", "images_per_second")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()]


def assert_is_the_architecture(net: nn.Module, searched: nn.Module, arch) -> None:
    """``net`` holds no choice, and in each choice's place of ``searched`` the candidate ``arch`` names."""
    assert not any(isinstance(m, Choice) for m in net.modules())
    for path, choice in searched.named_modules():
        if isinstance(choice, OpChoice):
            chosen = choice.candidates[arch[choice.label]]
            got = net.get_submodule(path)
            assert type(got) is type(chosen), path
            assert {k: v.shape for k, v in got.state_dict().items()} == {
                k: v.shape for k, v in chosen.state_dict().items()
            }, path
        elif isinstance(choice, InputChoice):
            got = net.get_submodule(path)
            assert isinstance(got, ChosenInputs) and got.indices == sorted(int(n) for n in arch[choice.label])


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """One command-line search of merge_net (kernel and skip choices, an InputChoice with n_chosen=2)."""
    run_dir = tmp_path_factory.mktemp("custom") / "search"
    code = main(["--out", str(run_dir), "--quiet", *sets(SEARCH + ["supernet.model=choice_models:merge_net"])])
    assert code == 0
    return run_dir


def test_a_custom_model_retrains_from_the_command_line_and_resumes_exactly(search_run, tmp_path, capsys):
    arch = nas.load_architecture(search_run / "architecture.json")
    code, out, err = run_cli(["retrain", search_run, "--out", tmp_path / "full", "--quiet", *sets(RETRAIN)], capsys)
    assert code == 0, err
    assert "model choice_models:merge_net" in out and "(retrain.model)" in out
    assert "network: built choice_models:merge_net(arch=...) from scratch" in out
    assert "test accuracy" in out and "after 2 epochs" in out
    full = tmp_path / "full"
    assert sorted(p.name for p in full.iterdir()) == [
        "architecture.json",
        "checkpoint.pt",
        "config.yaml",
        "metrics.jsonl",
        "result.json",
    ]
    result = json.loads((full / "result.json").read_text())
    assert result["architecture"] == arch == nas.load_architecture(full / "architecture.json")
    assert result["model"] == "choice_models:merge_net" and result["epochs"] == 2
    assert 0 <= result["test_acc"] <= 100 and result["params"] > 0 and result["macs"] > 0
    assert [m["epoch"] for m in lines(full / "metrics.jsonl")] == [1, 2]
    # The network trained is architecture.json's: the state of the function's from-scratch build.
    state = torch.load(full / "checkpoint.pt", weights_only=True)["model"]
    fresh = merge_net(arch=arch)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert result["params"] == sum(p.numel() for p in fresh.parameters())
    net, how = build_chosen_model("choice_models:merge_net", arch, num_classes=5)
    assert how == "built choice_models:merge_net(arch=...) from scratch"
    assert_is_the_architecture(net, merge_net(), arch)
    # Stopped after one epoch, then resumed: the same weights, optimiser state and metrics, bitwise.
    code, out, err = run_cli(
        ["retrain", search_run, "--out", tmp_path / "part", "--quiet", "--stop-after", 1, *sets(RETRAIN)], capsys
    )
    assert code == 0, err
    assert "continue with: python search.py retrain --resume" in out
    assert not (tmp_path / "part" / "result.json").exists()
    code, out, err = run_cli(["retrain", "--resume", tmp_path / "part", "--quiet"], capsys)
    assert code == 0, err
    assert f"resuming {tmp_path / 'part'} after epoch 1/2" in out
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert lines(full / "metrics.jsonl") == lines(tmp_path / "part" / "metrics.jsonl")
    resumed = json.loads((tmp_path / "part" / "result.json").read_text())
    assert (resumed["test_acc"], resumed["test_loss"]) == (result["test_acc"], result["test_loss"])


def test_a_model_function_without_arch_is_fixed_with_nas_fix(tmp_path, capsys):
    from nas.config import load_config
    from nas.retrain import run_retrain

    arch = {"b0.kernel": "k5", "b0.skip": "conv", "b1.kernel": "k3", "b1.skip": "identity"}
    cfg = load_config(None, SEARCH + RETRAIN + ["supernet.model=choice_models:tiny_net_without_arch"])
    said = []
    result = run_retrain(
        cfg, nas.ChoiceArchitecture(arch), tmp_path / "r", torch.device("cpu"), progress=False, log=said.append
    )
    assert result.finished and result.genotype.choices == arch
    assert said[0] == (
        "network: choice_models:tiny_net_without_arch takes no arch: built its model afresh and fixed it with "
        "nas.fix (fresh weights)"
    )
    net, _ = build_chosen_model("choice_models:tiny_net_without_arch", arch, num_classes=5)
    assert_is_the_architecture(net, tiny_net(), arch)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in tiny_net(arch=arch).state_dict().items()}


def test_choices_a_function_given_arch_still_returns_are_fixed():
    arch = {"b0.kernel": "k3", "b0.skip": "conv", "b1.kernel": "k5", "b1.skip": "conv"}
    net, how = build_chosen_model("choice_models:ignores_arch", arch, num_classes=5)
    assert "still held the choices ['b0.kernel', 'b0.skip', 'b1.kernel', 'b1.skip']" in how and "nas.fix" in how
    assert_is_the_architecture(net, tiny_net(), arch)
    net, how = build_chosen_model("choice_models:recording_net", arch, num_classes=5)  # builds tiny_net(arch=arch)
    assert how.endswith("from scratch") and not choice_labels(net)
    assert_is_the_architecture(net, tiny_net(), arch)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["retrain.model.auxiliary=true"], "set retrain.model.auxiliary=false"),
        (["retrain.model.drop_path_prob=0.2"], "retrain.model.drop_path_prob=0"),
        (["supernet.model=choice_models:tiny_net"], "the architecture does not fit supernet.model"),
    ],
)
def test_bad_input_is_one_error_line(search_run, extra, needle, tmp_path, capsys):
    code, _, err = run_cli(["retrain", search_run, "--out", tmp_path / "r", "--quiet", *sets(RETRAIN + extra)], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_genotype_names_an_architecture_file_with_supernet_model(tmp_path, capsys):
    arch = {"b0.kernel": "k3", "b0.skip": "conv", "merge": ["0", "2"]}
    f = tmp_path / "arch.json"
    nas.save_architecture(arch, f)  # as net.export(path) writes it
    items = SEARCH + RETRAIN + ["supernet.model=choice_models:merge_net"]
    code, out, err = run_cli(
        ["retrain", "--genotype", f, "--out", tmp_path / "r", "--quiet", "--stop-after", 1, *sets(items)], capsys
    )
    assert code == 0, err
    assert nas.load_architecture(tmp_path / "r" / "architecture.json") == arch
    other = tmp_path / "other.json"
    nas.save_architecture({**arch, "b0.kernel": "k5"}, other)
    code, _, err = run_cli(["retrain", "--resume", tmp_path / "r", "--genotype", other, "--quiet"], capsys)
    assert code == 2 and "resume it without a different --genotype" in err
    code, out, err = run_cli(["retrain", "--resume", tmp_path / "r", "--genotype", f, "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "result.json").read_text())["architecture"] == arch


# ---- torchrun ----------------------------------------------------------------------
needs_gloo = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


@needs_gloo
def test_the_search_command_line_draws_the_same_path_on_every_rank(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CHOICE_RECORD": str(record),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    items = SEARCH + ["search.epochs=2", "supernet.model=choice_models:recording_net", "run.dist_timeout=60"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "search.py"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run"), "--quiet", *sets(items)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("derived architecture") == 1  # rank 0 alone prints
    r0, r1 = ([json.loads(x) for x in (record / f"rank{r}.jsonl").read_text().splitlines()] for r in range(2))
    train = [r["ran"] for r in r0 if r["training"]]
    assert len(train) >= 2 * 2 * 2  # 2 epochs of 2 steps, each a weight and an architecture forward
    assert r0 == r1  # every forward ran the same candidates on both ranks, training and evaluation alike
    assert all(set(ran) == {"b0.kernel", "b0.skip", "b1.kernel", "b1.skip"} for ran in train)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["world_size"] for m in metrics] == [2, 2]
    assert set(nas.load_architecture(tmp_path / "run" / "architecture.json")) == set(train[0])


@needs_gloo
def test_retrain_under_torchrun_with_a_branch_left_out(tmp_path):
    # merge ["0", "2"]: the 3x3 branch still runs but feeds nothing, so DDP must expect unused parameters.
    arch = {"b0.kernel": "k5", "b0.skip": "identity", "merge": ["0", "2"]}
    f = tmp_path / "arch.json"
    nas.save_architecture(arch, f)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    items = SEARCH + RETRAIN + ["supernet.model=choice_models:merge_net", "run.dist_timeout=60"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "search.py"]
    done = subprocess.run(
        [*cmd, "retrain", "--genotype", str(f), "--out", str(tmp_path / "r"), "--quiet", *sets(items)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 alone prints
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [m["world_size"] for m in metrics] == [2, 2]
    assert json.loads((tmp_path / "r" / "result.json").read_text())["architecture"] == arch
