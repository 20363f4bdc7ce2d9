"""The registry of logit regularisers (nas.regularisers, ``search.arch.regularisers``).

Every registered regulariser is finite, reaches the logits still alive and gives pruned entries
(and a custom model's padding) no gradient and no NaN, on a built-in supernet and on a custom
model; beta-decay through the registry is the old hard-wired term (its gradient's closed form);
the config form validates; a regulariser registered from outside is usable by name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choice_models import merge_net  # noqa: E402
from cli_util import run_cli, sets  # noqa: E402

import nas  # noqa: E402
from nas.config import load_config, validate  # noqa: E402
from nas.regularisers import (  # noqa: E402
    constant_after_warmup,
    get_regulariser,
    linear_ramp,
    register_regulariser,
    regulariser_names,
    unregister_regulariser,
)
from nas.search import run_search  # noqa: E402
from nas.searcher import Searcher  # noqa: E402


def builtin_net():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", "gdas", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].normal_()
    net.prune_weakest()  # one op pruned per edge: -inf entries
    return net


def custom_net():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(merge_net(), mode="gdas")  # labels of 2, 2 and 3 candidates: padding
    with torch.no_grad():
        net.arch["choices"].normal_()
    net.prune("b0.kernel", "k5")  # a decided label
    return net


NETS = {"builtin": builtin_net, "custom": custom_net}


def dead(net):
    """Per cell type, the entries that are pruned (or padding)."""
    return {c: ~net.alive(c) for c in net.arch}


@pytest.mark.parametrize("which", sorted(NETS))
@pytest.mark.parametrize("name", regulariser_names())
def test_every_regulariser_is_finite_and_reaches_only_the_live_logits(name, which):
    net = NETS[which]()
    assert any(m.any() for m in dead(net).values())  # the case under test: some entries at -inf
    value = get_regulariser(name).term(net)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    for c, mask in dead(net).items():
        grad = net.arch[c].grad
        assert grad is not None and torch.isfinite(grad).all(), (name, c)
        assert torch.equal(grad[mask], torch.zeros_like(grad[mask])), (name, c)  # pruned: nothing
        assert grad[~mask].abs().sum() > 0, (name, c)


@pytest.mark.parametrize("which", sorted(NETS))
def test_the_closed_forms_with_pruned_entries(which):
    net = NETS[which]()
    for c in net.arch:
        net.arch[c].grad = None
    (2.5 * get_regulariser("beta_decay").term(net)).backward()
    rows = sum(net.arch[c].shape[0] for c in net.arch)
    for c in net.arch:  # beta-decay: lambda * softmax(alpha) / rows, 0 where pruned
        want = 2.5 * torch.softmax(net.logits(c).detach(), -1) / rows
        assert torch.allclose(net.arch[c].grad, want, atol=1e-6)
        net.arch[c].grad = None
    (0.5 * get_regulariser("logit_l2").term(net)).backward()
    live = sum(int(net.alive(c).sum()) for c in net.arch)
    for c in net.arch:  # logit_l2: lambda * 2 alpha / (live entries), 0 where pruned
        want = torch.where(net.alive(c), 0.5 * 2 * net.arch[c].detach() / live, 0.0)
        assert torch.allclose(net.arch[c].grad, want, atol=1e-6)


def test_beta_decay_in_the_arch_step_adds_its_closed_form_to_the_gradient():
    """The registry's beta-decay in the Searcher's objective: the gradient with it minus the one
    without (same seed, same data) is ``lambda * softmax(alpha) / rows``."""
    net = custom_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))

    def grad(beta):
        net.load_state_dict(state)
        opts = torch.optim.SGD(net.weight_parameters(), lr=0.0), torch.optim.SGD(net.arch_parameters(), lr=0.0)
        searcher = Searcher(net, *opts, epochs=1, regularisers={"beta_decay": lambda e: beta} if beta else None)
        searcher.start_epoch(0)
        torch.manual_seed(3)
        searcher.arch_step(x, y)
        return net.arch["choices"].grad.clone()

    a = net.arch["choices"].detach()
    want = 4.0 * torch.softmax(net.logits("choices").detach(), -1) / a.shape[0]
    assert torch.allclose(grad(4.0) - grad(0.0), want, atol=1e-5)


def test_the_schedules_are_pure_functions_of_the_epoch():
    assert [linear_ramp(e, 10, 2, 4.0) for e in (0, 1, 2, 5, 9)] == [0.0, 0.0, 0.5, 2.0, 4.0]
    assert [constant_after_warmup(e, 10, 2, 4.0) for e in (0, 1, 2, 9)] == [0.0, 0.0, 4.0, 4.0]
    assert get_regulariser("beta_decay").schedule is linear_ramp
    assert get_regulariser("logit_l2").schedule is constant_after_warmup  # as the README says: on after warm-up


def test_the_config_form_is_the_old_key_for_beta_decay():
    old = load_config(None, ["search.epochs=6", "search.warmup_epochs=2", "search.arch.beta_decay=5"])
    new = load_config(None, ["search.epochs=6", "search.warmup_epochs=2", "search.arch.regularisers.beta_decay=5"])
    validate(old)
    validate(new)
    assert new.search.arch.regularisers == {"beta_decay": 5.0}
    weights = []
    for cfg in (old, new):
        searcher = Searcher.from_config(nas.build_supernet("nb201", C=4, N=1, num_classes=3), cfg.search)
        seen = []
        for e in range(6):
            searcher.start_epoch(e)
            seen.append((searcher.beta_decay, dict(searcher.regulariser_weights)))
        weights.append(seen)
    assert weights[0] == weights[1] and weights[0][-1][0] == 5.0 and weights[0][0][0] == 0.0


def test_the_config_forms_of_the_mapping():
    cfg = load_config(None, ["search.arch.regularisers={logit_l2: 0.1, beta_decay: 2}"])
    assert cfg.search.arch.regularisers == {"logit_l2": 0.1, "beta_decay": 2.0}
    cfg = load_config(None, ["search.arch.regularisers={logit_l2: 0.1}", "search.arch.regularisers.logit_l2=null"])
    assert cfg.search.arch.regularisers == {}
    with pytest.raises(nas.UserError, match="search.arch.regularisers.logit_l2 must be float"):
        load_config(None, ["search.arch.regularisers.logit_l2=much"])
    with pytest.raises(nas.UserError, match="must be a mapping of str to float"):
        load_config(None, ["search.arch.regularisers=3"])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["search.arch.regularisers.l1=0.1"],
            "unknown regulariser 'l1' in search.arch.regularisers; known: beta_decay, logit_l2",
        ),
        (["search.arch.regularisers.logit_l2=-1"], "search.arch.regularisers.logit_l2 must be a finite number >= 0"),
        (
            ["search.arch.beta_decay=1", "search.arch.regularisers.beta_decay=2"],
            "set the same weight; set one of them",
        ),
    ],
)
def test_bad_regularisers_are_one_line_errors(overrides, needle, tmp_path, capsys):
    code, _, err = run_cli(["--out", tmp_path / "r", "--quiet", *sets(overrides)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_the_registry_refuses_a_taken_name_and_an_unknown_one():
    with pytest.raises(ValueError, match="registered already"):
        register_regulariser("beta_decay")(lambda net: net.arch_parameters()[0].sum())
    with pytest.raises(ValueError, match="unknown regulariser 'nope'; known: beta_decay, logit_l2"):
        unregister_regulariser("nope")
    with pytest.raises(ValueError, match="unknown regulariser"):
        Searcher(*_searcher_args(), epochs=1, regularisers={"nope": lambda e: 1.0})


def _searcher_args():
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    return net, torch.optim.SGD(net.weight_parameters(), lr=0.0), torch.optim.SGD(net.arch_parameters(), lr=0.0)


TINY = [
    "data.num_train=128",
    "data.num_test=32",
    "data.image_size=16",
    "search.batch_size=16",
    "search.steps_per_epoch=2",
    "search.epochs=3",
    "search.warmup_epochs=1",
    "search.prune=off",
    "run.device=cpu",
]


def test_a_regulariser_registered_from_outside_is_usable_by_name(tmp_path):
    calls = []

    @register_regulariser("test_logit_l1", schedule=constant_after_warmup)
    def logit_l1(net):
        calls.append(1)
        return torch.cat([torch.where(net.alive(c), net.arch[c], 0.0).abs().flatten() for c in net.arch]).sum()

    try:
        assert "test_logit_l1" in regulariser_names()
        cfg = load_config(
            None, TINY + ["supernet.model=choice_models:merge_net", "search.arch.regularisers.test_logit_l1=0.5"]
        )
        validate(cfg)
        run_search(cfg, tmp_path / "run", torch.device("cpu"), progress=False, log=lambda s: None)
        rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["regularisers"] for r in rows] == [{"test_logit_l1": w} for w in (0.0, 0.5, 0.5)]
        assert len(calls) == 2 * 2  # two architecture epochs of two steps
    finally:
        unregister_regulariser("test_logit_l1")
    assert "test_logit_l1" not in regulariser_names()
    with pytest.raises(nas.UserError, match="unknown regulariser 'test_logit_l1'"):
        validate(cfg)
