"""Progressive pruning (``search.prune``) and ``search.derive: removal`` on a custom model (issue 29).

The properties: a custom model searched with each pruning rule ends decided (every label keeps
``n_chosen`` candidates) and its ``architecture.json`` is what is left; the measured losses of a
custom model are those of the networks forced by hand; ``derive: removal`` picks the candidate
whose removal raises the loss most; a pruned custom run resumes exactly; an InputChoice with
``n_chosen > 1`` refuses the rules that measure one candidate at a time, in one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import choice_models  # noqa: E402
from cli_util import run_cli, sets  # noqa: E402

import nas  # noqa: E402
from nas.config import load_config  # noqa: E402
from nas.schedule import search_epochs  # noqa: E402
from nas.search import SearchTask, run_search  # noqa: E402
from nas.selection import edge_op_losses, removal_scores  # noqa: E402

CPU = torch.device("cpu")
SEARCH = choice_models.TINY_SEARCH + [
    "search.epochs=5",
    "search.warmup_epochs=1",
    "search.prune_batches=2",
    "search.arch.lr=0.05",
]


def quiet(text: str) -> None:
    pass


def lines(path: Path):
    drop = ("epoch_seconds", "images_per_second")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()]


def searched_net(model: str, run_dir: Path):
    """The supernet of ``choice_models.<model>`` with the run's final checkpoint loaded."""
    net = nas.Supernet.from_model(getattr(choice_models, model)())
    net.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    return net


@pytest.mark.parametrize(
    "model, prune",
    [("wide_net", "probability"), ("wide_net", "loss"), ("wide_net", "removal"), ("merge_net", "probability")],
)
def test_a_pruned_custom_search_ends_decided_with_that_architecture(model, prune, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = SEARCH + [f"supernet.model=choice_models:{model}", f"search.prune={prune}"]
    code, out, err = run_cli(["--out", run_dir, "--quiet", *sets(overrides)], capsys)
    assert code == 0, err
    assert "up to 5 epochs (it ends once every label is decided" in out
    rows = lines(run_dir / "metrics.jsonl")
    # The widest choice has three candidates: two events, the last after epoch 4 of 5.
    assert len(rows) == search_epochs(load_config(None, overrides), num_ops=3) == 4
    assert rows[-1]["ops_left"] == 1  # each label decided (merge keeps its two inputs: entropy > 0)
    assert rows[-1]["entropy"] == 0 or model == "merge_net"
    assert "pruned_after" in rows[-1]
    if prune != "probability":
        assert set(rows[-1][f"prune_{'removal_' if prune == 'removal' else ''}losses_after"]) == {"choices"}
    net = searched_net(model, run_dir)
    arch = nas.load_architecture(run_dir / "architecture.json")
    for label, n, row in zip(net.labels, net.n_chosen, net.alive("choices").tolist()):
        left = [name for name, alive in zip(net.candidates[label], row) if alive]
        assert len(left) == n, label
        assert left == (arch[label] if isinstance(arch[label], list) else [arch[label]]), label
    assert net.export() == arch and rows[-1]["genotype"] == json.dumps(arch)
    code, out, err = run_cli(["inspect", run_dir], capsys)
    assert code == 0 and "epoch 4/4" in out and "not finished" not in out, out


# ---- the measured losses, by hand ------------------------------------------------------
def pair_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nas.OpChoice({"a0": nn.Conv2d(4, 4, 1), "a1": nn.Conv2d(4, 4, 3, padding=1), "a2": nn.Identity()}, label="A"),
        nas.OpChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="B"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )


def forced_loss(net, arch, batches) -> float:
    """The mean cross-entropy of the network forced to ``arch`` on ``batches``."""
    with torch.no_grad(), net.forced(arch):
        total = sum(float(F.cross_entropy(net(x), y, reduction="sum")) for x, y in batches)
    return total / sum(y.shape[0] for _, y in batches)


def test_a_custom_models_measured_losses_are_the_forced_networks():
    """A has a0, a1 alive (a2 pruned), B is decided (tanh pruned; its third entry is padding): taking
    a candidate of A out leaves the other, keeping one forces it; B is not measured."""
    net = nas.Supernet.from_model(pair_model(), mode="gdas")
    net.prune("A", "a2")
    net.prune("B", "tanh")
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)) for _ in range(2)]
    a0, a1 = (forced_loss(net, {"A": k, "B": "relu"}, batches) for k in ("a0", "a1"))
    assert a0 != a1
    inf = float("inf")
    removed = edge_op_losses(net, batches, seed=3, perturb="remove")["choices"]
    assert torch.allclose(removed, torch.tensor([[a1, a0, inf], [inf, inf, inf]]))
    kept = edge_op_losses(net, batches, seed=3, perturb="keep")["choices"]
    assert torch.allclose(kept, torch.tensor([[a0, a1, inf], [inf, inf, inf]]))
    # Derived by removal: the candidate whose removal raises the loss most; B keeps its survivor.
    arch = net.genotype(scores=removal_scores({"choices": removed}, net)).choices
    assert arch == {"A": "a0" if a1 > a0 else "a1", "B": "relu"}
    # Pruned by loss: the candidate that alone gives the higher loss goes.
    assert net.prune_weakest(scores={"choices": -kept}) == {"choices": ["a1" if a1 > a0 else "a0", ""]}


def test_derive_removal_on_a_custom_model_picks_the_candidate_whose_removal_hurts_most(tmp_path, capsys):
    overrides = SEARCH + ["supernet.model=choice_models:one_choice_net", "search.derive=removal", "search.prune=off"]
    overrides += ["search.epochs=2"]
    cfg = load_config(None, overrides)
    result = run_search(cfg, tmp_path / "run", CPU, progress=False, log=quiet)
    last = lines(tmp_path / "run" / "metrics.jsonl")[-1]
    assert last["derived_by"] == "removal" and "genotype_by_logits" in last
    # By hand: one choice of two, so removing a candidate forces the other, on the search's fixed batches.
    task = SearchTask(cfg, CPU, quiet)
    task.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))
    hand = [forced_loss(task.net, {"op": other}, task.eval_batches) for other in ("k3", "k1")]
    assert last["removal_losses"]["choices"][0] == pytest.approx(hand)
    assert result.genotype.choices == {"op": "k1" if hand[0] > hand[1] else "k3"}
    assert nas.load_architecture(tmp_path / "run" / "architecture.json") == result.genotype.choices
    # The command line says how it derived, naming the architecture the logits would give.
    code, out, err = run_cli(["--out", tmp_path / "cli", *sets(overrides)], capsys)
    assert code == 0 and "derived by removal (search.derive: removal)" in out, err


@pytest.mark.parametrize("stop_after", [2, 3])
def test_a_pruned_custom_search_resumes_exactly(stop_after, tmp_path):
    """Stopped before (2) or after (3) the first pruning event: the alive mask and the rest continue."""
    cfg = load_config(None, SEARCH + ["supernet.model=choice_models:wide_net", "search.prune=loss"])
    full = run_search(cfg, tmp_path / "full", CPU, progress=False, log=quiet)
    part = run_search(cfg, tmp_path / "part", CPU, stop_after=stop_after, progress=False, log=quiet)
    assert part.epochs_done == stop_after and not part.finished
    resumed = run_search(cfg, tmp_path / "part", CPU, resume=True, progress=False, log=quiet)
    assert full.finished and resumed.finished and resumed.genotype.choices == full.genotype.choices
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and "alive_choices" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert lines(tmp_path / "full" / "metrics.jsonl") == lines(tmp_path / "part" / "metrics.jsonl")
    for name in ("architecture.json", "arch_probs.jsonl"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "part" / name).read_text()


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["search.prune=loss"], "search.prune=loss measures one candidate per choice at a time"),
        (["search.prune=removal"], "use search.prune=probability (or off)"),
        (["search.prune=off", "search.derive=removal"], "n_chosen > 1: use search.derive=logits"),
    ],
)
def test_n_chosen_above_one_refuses_the_measuring_rules_in_one_line(overrides, needle, tmp_path, capsys):
    args = sets(SEARCH + ["supernet.model=choice_models:merge_net"] + overrides)
    code, _, err = run_cli(["--out", tmp_path / "run", "--quiet", *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    # refused once the model is built, after the run directory was prepared: it is left holding no
    # run, so the same --out is refused again for the same reason, not as "already holds a run"
    assert not (tmp_path / "run" / "config.yaml").exists()
    code, _, err = run_cli(["--out", tmp_path / "run", "--quiet", *args], capsys)
    assert code == 2 and needle in err, err


def test_a_custom_model_derives_within_a_cost_budget(tmp_path):
    cfg = load_config(
        None,
        SEARCH
        + [
            "supernet.model=choice_models:wide_net",
            "search.prune=off",
            "search.epochs=2",
            "search.cost.weight=1",
            "search.cost.form=budget",
            "search.cost.budget=3e5",
        ],
    )
    result = run_search(cfg, tmp_path / "run", CPU, progress=False, log=quiet)
    last = lines(tmp_path / "run" / "metrics.jsonl")[-1]
    assert last["cost_budget"] == 3e5 and last["genotype"] == json.dumps(result.genotype.choices)
