"""Architecture choices in any model (issue 29): nas.OpChoice, nas.InputChoice, Supernet.from_model, nas.fix.

The properties: in gdas mode only the chosen candidate runs, forward and backward, and every logit
of its label gets a gradient; a shared label is one logit row and one draw per forward; an
InputChoice picks n_chosen inputs; export then fix gives the supernet forced to that architecture,
bitwise; the fixed weights load into a from-scratch build; the search loop (Python, command line,
resume, torchrun) takes such a model; a model without choices, a nested choice and a bad
supernet.model are refused with one clear error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choice_models import merge_net, tiny_net  # noqa: E402

import nas  # noqa: E402
import nas.model_supernet as model_supernet  # noqa: E402
from nas.choice import ChosenInputs, InputChoice, OpChoice  # noqa: E402


def batch(n: int = 4, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def count_runs(model: nn.Module):
    """Forward calls per candidate module of every OpChoice, by (label, name)."""
    counts = {}
    for choice in model.modules():
        if isinstance(choice, OpChoice):
            for name, cand in choice.candidates.items():
                key = (choice.label, name)
                counts[key] = 0

                def hook(module, args, output, key=key):
                    counts[key] += 1

                cand.register_forward_hook(hook)
    return counts


def test_gdas_runs_only_the_chosen_candidate_and_every_logit_gets_a_gradient():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(tiny_net(), mode="gdas", tau=1.0)
    counts = count_runs(net)
    x, y = batch()
    for step in range(3):
        for c in counts:
            counts[c] = 0
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        sample = net.sampled_architecture()
        assert set(sample) == set(net.labels) == {"b0.kernel", "b0.skip", "b1.kernel", "b1.skip"}
        for (label, name), n in counts.items():
            assert n == (1 if sample[label] == name else 0), (step, label, name)
        # Backward too: the candidates not drawn get no gradient at all.
        for choice in net.modules():
            if isinstance(choice, OpChoice):
                for name, cand in choice.candidates.items():
                    grads = [p.grad for p in cand.parameters()]
                    if name == sample[choice.label]:
                        assert all(g is not None for g in grads)
                    else:
                        assert all(g is None for g in grads), (choice.label, name)
        (logits,) = net.arch_parameters()
        assert logits.shape == (4, 2)
        assert bool((logits.grad != 0).all()), logits.grad  # every logit of every label


def test_weight_step_with_frozen_logits_runs_the_sampled_path_only():
    net = nas.Supernet.from_model(tiny_net(), mode="gdas")
    counts = count_runs(net)
    for a in net.arch_parameters():
        a.requires_grad_(False)
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    sample = net.sampled_architecture()
    assert sum(counts.values()) == len(net.labels)
    assert all(counts[(label, name)] == 1 for label, name in sample.items())
    assert set(net.weight_parameters()).isdisjoint(net.arch_parameters())
    assert {id(p) for p in net.parameters()} == {id(p) for p in net.weight_parameters() + net.arch_parameters()}


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = OpChoice({"lin": nn.Linear(4, 4), "tanh": nn.Tanh(), "skip": nn.Identity()}, label="shared")
        self.b = OpChoice({"lin": nn.Linear(4, 4), "tanh": nn.Tanh(), "skip": nn.Identity()}, label="shared")
        self.c = OpChoice([nn.Linear(4, 4), nn.Identity()])

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_a_shared_label_is_one_logit_row_and_one_draw_per_forward(monkeypatch):
    net = nas.Supernet.from_model(Shared(), mode="gdas")
    assert net.labels == ("shared", "c")  # an unlabelled choice is labelled by its path
    (logits,) = net.arch_parameters()
    assert logits.shape == (2, 3)
    calls = {"sampler": 0, "tolist": 0}
    real_softmax, real_max = model_supernet.gumbel_softmax, model_supernet.gumbel_max

    def softmax(*args, **kwargs):
        calls["sampler"] += 1
        return real_softmax(*args, **kwargs)

    def gmax(*args, **kwargs):
        calls["sampler"] += 1
        return real_max(*args, **kwargs)

    monkeypatch.setattr(model_supernet, "gumbel_softmax", softmax)
    monkeypatch.setattr(model_supernet, "gumbel_max", gmax)
    real_tolist = torch.Tensor.tolist

    def tolist(self):
        calls["tolist"] += 1
        return real_tolist(self)

    counts = count_runs(net)
    seen = set()
    for _ in range(20):
        for c in counts:
            counts[c] = 0
        calls.update(sampler=0, tolist=0)
        monkeypatch.setattr(torch.Tensor, "tolist", tolist)
        out = net(torch.randn(2, 4))
        monkeypatch.setattr(torch.Tensor, "tolist", real_tolist)
        assert calls == {"sampler": 1, "tolist": 1}  # every label drawn at once, one host transfer
        out.sum().backward()
        chosen = net.sampled_architecture()["shared"]
        seen.add(chosen)
        assert counts[("shared", chosen)] == 2  # both choices ran the one drawn candidate
        assert sum(n for (label, _), n in counts.items() if label == "shared") == 2
    assert len(seen) > 1  # and the draw changes between forwards
    assert bool((logits.grad[0] != 0).all()) and bool((logits.grad[1, :2] != 0).all())
    assert logits.grad[1, 2] == 0  # "c" has two candidates: its row's third entry is padding


def test_choices_sharing_a_label_must_agree():
    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = OpChoice({"x": nn.Identity(), "y": nn.Tanh()}, label="op")
            self.b = OpChoice({"x": nn.Identity(), "z": nn.Tanh()}, label="op")

    with pytest.raises(ValueError, match="same candidates"):
        nas.Supernet.from_model(Clash())


def test_input_choice_with_two_chosen():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(merge_net(), mode="gdas", tau=1.0)
    x, y = batch()
    picks = set()
    for _ in range(10):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        chosen = net.sampled_architecture()["merge"]
        assert isinstance(chosen, list) and len(chosen) == 2 and len(set(chosen)) == 2
        picks.add(tuple(chosen))
        row = net.labels.index("merge")
        assert bool((net.arch_parameters()[0].grad[row] != 0).all())  # all three inputs' logits
        # The one branch not chosen gets no gradient.
        (merge,) = [m for m in net.modules() if m.__class__.__name__ == "Merge"]
        for k, branch in enumerate(merge.branches):
            grads = [p.grad for p in branch.parameters()]
            assert all((g is None) == (str(k) not in chosen) for g in grads)
    assert len(picks) > 1
    # Forced: the chosen inputs, reduced in input order; fix keeps the same indices.
    ts = [torch.full((1, 1), float(v)) for v in (1, 10, 100)]
    for reduction, want in (("sum", [[101.0]]), ("mean", [[50.5]]), ("concat", [[1.0, 100.0]])):
        pick = nas.Supernet.from_model(Pick(reduction))
        with pick.forced({"m": ["2", "0"]}):
            assert pick(ts).tolist() == want, reduction
        assert nas.fix(pick, {"m": ["2", "0"]})(ts).tolist() == want
    fixed = nas.fix(merge_net(), {"b0.kernel": "k3", "b0.skip": "conv", "merge": ["2", "0"]})
    assert fixed[2].pick.indices == [0, 2]


class Pick(nn.Module):
    def __init__(self, reduction: str):
        super().__init__()
        self.m = InputChoice(3, n_chosen=2, reduction=reduction, label="m")

    def forward(self, xs):
        return self.m(xs)


def test_export_then_fix_equals_the_forced_supernet_bitwise(tmp_path):
    torch.manual_seed(0)
    net = nas.Supernet.from_model(merge_net(), mode="gdas")
    with torch.no_grad():
        net.arch_parameters()[0].normal_()  # an architecture other than the first candidates
    x, y = batch()
    F.cross_entropy(net(x), y).backward()  # weights and BN statistics that are not the initial ones
    arch = net.export(tmp_path / "arch.json")
    assert nas.load_architecture(tmp_path / "arch.json") == arch
    probs = net.choice_probabilities()
    for label, chosen in arch.items():
        names = chosen if isinstance(chosen, list) else [chosen]
        others = [p for n, p in probs[label].items() if n not in names]
        assert min(probs[label][n] for n in names) >= max(others)
    fixed = nas.fix(net, arch)
    assert not any(isinstance(m, (OpChoice, InputChoice)) for m in fixed.modules())
    assert not any("arch" in name for name, _ in fixed.named_parameters())
    assert any(isinstance(m, ChosenInputs) for m in fixed.modules())
    for train in (False, True):
        net.train(train)
        fixed.train(train)
        with net.forced(arch):
            want = net(x)
        assert torch.equal(fixed(x), want), train
    # The fixed copy is independent of the supernet, which still samples.
    assert any(isinstance(m, OpChoice) for m in net.modules())


def test_fixed_weights_load_into_a_from_scratch_build():
    net = nas.Supernet.from_model(merge_net(), mode="gdas")
    arch = {"b0.kernel": "k5", "b0.skip": "conv", "merge": ["1", "2"]}
    fixed = nas.fix(net, arch)
    scratch = merge_net(arch=arch)
    assert not any(isinstance(m, (OpChoice, InputChoice)) for m in scratch.modules())
    assert fixed.state_dict().keys() == scratch.state_dict().keys()
    scratch.load_state_dict(fixed.state_dict())  # strict
    x, _ = batch()
    fixed.eval()
    scratch.eval()
    assert torch.equal(scratch(x), fixed(x))


@pytest.mark.parametrize("mode", ["snas", "darts"])
def test_soft_modes_run_every_candidate_and_train_every_logit(mode):
    net = nas.Supernet.from_model(tiny_net(), mode=mode)
    counts = count_runs(net)
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    assert all(n == 1 for n in counts.values())
    assert net.sampled_architecture() is None
    assert bool((net.arch_parameters()[0].grad != 0).all())


def test_soft_modes_refuse_concat():
    model = nn.ModuleDict({"m": InputChoice(3, reduction="concat")})
    with pytest.raises(ValueError, match="mode='gdas'"):
        nas.Supernet.from_model(model, mode="darts")


def test_pruned_candidates_are_never_drawn_and_tau_is_validated():
    net = nas.Supernet.from_model(tiny_net(), mode="gdas")
    net.prune("b0.kernel", "k3")
    for _ in range(20):
        assert net.sample_architecture()["b0.kernel"] == "k5"
    assert net.choice_probabilities()["b0.kernel"]["k3"] == 0.0
    assert net.export()["b0.kernel"] == "k5"
    with pytest.raises(ValueError, match="keeps 1"):
        net.prune("b0.kernel", "k5")
    with pytest.raises(ValueError, match="tau"):
        net.tau = 0.0
    removed = net.prune_weakest()
    assert removed["choices"][net.labels.index("b0.kernel")] == ""  # already decided
    assert net.num_alive() == 1


def test_forced_validates_the_architecture():
    net = nas.Supernet.from_model(tiny_net(), mode="gdas")
    with pytest.raises(ValueError, match="missing labels"):
        net.force({"b0.kernel": "k3"})
    good = {label: names[0] for label, names in net.candidates.items()}
    with pytest.raises(ValueError, match="choose from"):
        net.force({**good, "b0.kernel": "k7"})
    with net.forced(good):
        net(batch()[0])
        assert net.sampled_architecture() == good
    assert net._forced is None


def test_a_model_without_choices_is_refused():
    with pytest.raises(ValueError, match="holds no nas.OpChoice or nas.InputChoice"):
        nas.Supernet.from_model(nn.Sequential(nn.Linear(2, 2)))


def test_a_nested_choice_is_refused():
    inner = OpChoice({"a": nn.Identity(), "b": nn.Tanh()}, label="inner")
    outer = OpChoice({"x": nn.Sequential(inner), "y": nn.Identity()}, label="outer")
    with pytest.raises(ValueError, match="nested choices are not supported"):
        nas.Supernet.from_model(nn.Sequential(outer))


def test_a_choice_outside_a_supernet_says_what_to_do():
    choice = OpChoice({"a": nn.Identity(), "b": nn.Tanh()}, label="op")
    with pytest.raises(RuntimeError, match="nas.fix"):
        choice(torch.ones(1))


def test_bad_candidates_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        OpChoice({"a": nn.Identity()})
    with pytest.raises(ValueError, match="without '.'"):
        OpChoice({"a.b": nn.Identity(), "c": nn.Identity()})
    with pytest.raises(ValueError, match="n_chosen"):
        InputChoice(3, n_chosen=3)
    with pytest.raises(ValueError, match="reduction"):
        InputChoice(3, reduction="max")
