"""Architecture choices in any model (issue 29): nas.OpChoice, nas.InputChoice, Supernet.from_model, nas.fix.

The properties: in gdas mode only the chosen candidate runs, forward and backward, and every logit
of its label gets a gradient; a shared label is one logit row and one draw per forward; an
InputChoice picks n_chosen inputs; export then fix gives the supernet forced to that architecture,
bitwise; the fixed weights load into a from-scratch build; the search loop (Python, command line,
resume, torchrun) takes such a model; a model without choices, a nested choice and a bad
supernet.model are refused with one clear error.
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
from choice_models import merge_net, tiny_net  # noqa: E402
from cli_util import run_cli  # noqa: E402

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


@pytest.mark.parametrize("estimator, samples", [("gumbel_rao", 4), ("reinmax", None)])
def test_the_samplers_estimators_reach_every_logit(estimator, samples):
    torch.manual_seed(0)
    net = nas.Supernet.from_model(tiny_net(), mode="gdas")
    net.estimator, net.estimator_samples = estimator, samples  # as the search sets them (search.estimator)
    counts = count_runs(net)
    x, y = batch()
    F.cross_entropy(net(x), y).backward()
    assert sum(counts.values()) == len(net.labels)  # still one candidate per label
    assert bool((net.arch_parameters()[0].grad != 0).all())


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


def test_an_unlabelled_choice_whose_path_is_another_label_is_refused():
    """Labelled by its path "0", the first choice would silently share the second's row."""
    model = nn.Sequential(
        OpChoice({"x": nn.Identity(), "y": nn.Tanh()}), OpChoice({"x": nn.Identity(), "y": nn.Tanh()}, label="0")
    )
    with pytest.raises(ValueError, match="the unlabelled choice at '0' would share the row of the choice labelled '0'"):
        nas.Supernet.from_model(model)
    alone = nas.Supernet.from_model(OpChoice({"x": nn.Identity(), "y": nn.Tanh()}))  # the model is the choice
    assert alone.labels == ("choice",)


@pytest.mark.parametrize("mode", ["snas", "darts"])
def test_soft_modes_refuse_candidates_of_different_shapes(mode):
    """A weighted sum would broadcast a [3, 1] candidate into [3, 8] without a word; gdas runs one."""
    model = nn.Sequential(OpChoice({"wide": nn.Linear(4, 8), "narrow": nn.Linear(4, 1)}))
    net = nas.Supernet.from_model(model, mode=mode)
    with pytest.raises(
        ValueError, match=r"OpChoice '0': candidate 'narrow' returns shape \(3, 1\), an earlier one \(3, 8\)"
    ):
        net(torch.randn(3, 4))


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


class InPlaceAfterChoices(nn.Module):
    """Torchvision's idioms after a choice: a ReLU(inplace=True), and ``+=`` on a chosen input."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.op = OpChoice({"k3": nn.Conv2d(c, c, 3, padding=1), "id": nn.Identity()}, label="op")
        self.act = nn.ReLU(inplace=True)
        self.branches = nn.ModuleList([nn.Conv2d(c, c, 1), nn.Identity()])
        self.pick = InputChoice(2, n_chosen=1, label="pick")
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.stem(x)
        x = self.act(self.op(x))
        out = self.pick([b(x) for b in self.branches])
        out += x
        return self.head(out.mean((2, 3)))


def test_a_choice_output_changed_in_place_trains_the_logits():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(InPlaceAfterChoices(), mode="gdas", tau=1.0)
    x, y = batch()
    for _ in range(6):  # every candidate drawn at some step
        net.zero_grad(set_to_none=True)
        out = net(x)
        F.cross_entropy(out, y).backward()
        (logits,) = net.arch_parameters()
        assert bool((logits.grad != 0).all())
        with torch.no_grad(), net.forced(net.sampled_architecture()):
            assert torch.equal(net(x), out.detach())  # the in-place ops saw the chosen outputs, unscaled


class FoldedOpsAndTwoInputs(nn.Module):
    """The library's ops, which fold the straight-through weight into their batch norm, beside
    an InputChoice that keeps two of three inputs (a Gumbel-top-k draw)."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        ops = {name: nas.build_op(name, c, c, 1, True) for name in ("nor_conv_1x1", "nor_conv_3x3")}
        self.op = OpChoice(ops, label="op")
        self.pick = InputChoice(3, n_chosen=2, reduction="sum", label="pick")
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        x = self.op(self.stem(x))
        return self.head(self.pick([x, x * 2, -x]).mean((2, 3)))


def test_a_top_k_draw_scales_no_chosen_output():
    """With the logits' gradient on, every chosen candidate's output is as the forced network's:
    the straight-through weight is exactly 1 going forward, also where an op folds it in."""
    torch.manual_seed(0)
    net = nas.Supernet.from_model(FoldedOpsAndTwoInputs(), mode="gdas", tau=1.0)
    net.eval()  # batch norm by its running statistics: the same in both forwards
    x, _ = batch()
    for _ in range(4):
        out = net(x)
        out.sum().backward()
        assert bool((net.arch_parameters()[0].grad != 0).any())
        with torch.no_grad(), net.forced(net.sampled_architecture()):
            assert torch.allclose(net(x), out.detach(), atol=1e-6)


def test_a_state_dict_without_the_pruning_mask_keeps_a_narrow_labels_padding_dead():
    """Checkpoints from before pruning existed have no mask: nothing was pruned, and a label with
    fewer candidates than the widest still has no entries past its own."""
    model = nn.Sequential(
        OpChoice({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4), "c": nn.Identity()}, label="wide"),
        OpChoice({"x": nn.Identity(), "y": nn.Linear(4, 4)}, label="narrow"),
    )
    net = nas.Supernet.from_model(model, mode="gdas")
    built = net.alive("choices").clone()
    assert built.tolist() == [[True, True, True], [True, True, False]]
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("alive_")}
    net.prune("wide", "a")  # then loading must not keep this either
    net.load_state_dict(state)
    assert torch.equal(net.alive("choices"), built)
    with torch.no_grad():
        net.arch_parameters()[0].fill_(0.0)
        for _ in range(50):
            net(torch.randn(2, 4))
            assert net.sampled_architecture()["narrow"] in ("x", "y")


@pytest.mark.parametrize("need_grad", [False, True])
def test_a_two_of_three_draw_follows_gumbel_top_k(need_grad):
    """Gumbel-top-k keeps the 2 largest of logits + Gumbel noise: a draw of two without
    replacement from softmax(logits), P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j),
    whatever tau. Chi-square over the three pairs (2 degrees of freedom)."""
    torch.manual_seed(0)
    net = nas.Supernet.from_model(Pick("sum"), mode="gdas", tau=3.0)
    logits = torch.tensor([1.0, 0.0, -1.5])
    with torch.no_grad():
        net.arch_parameters()[0][0] = logits
    ts = [torch.ones(1, 1, requires_grad=True) for _ in range(3)]
    n, counts = 3000, {}
    with torch.set_grad_enabled(need_grad):
        for _ in range(n):
            net(ts)
            pair = tuple(sorted(net.sampled_architecture()["m"]))
            counts[pair] = counts.get(pair, 0) + 1
    p = torch.softmax(logits.double(), -1).tolist()
    want = {(str(i), str(j)): p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j]) for i, j in ((0, 1), (0, 2), (1, 2))}
    assert set(counts) <= set(want)
    chi2 = sum((counts.get(k, 0) - n * q) ** 2 / (n * q) for k, q in want.items())
    assert chi2 < 13.8, (chi2, counts, want)  # p = 0.001; a draw ignoring the logits gives thousands


class Pick(nn.Module):
    def __init__(self, reduction: str):
        super().__init__()
        self.m = InputChoice(3, n_chosen=2, reduction=reduction, label="m")

    def forward(self, xs):
        return self.m(xs)


class _FoldedAndPicked(nn.Module):
    """An op choice of built-in NB201 ops (they fold the straight-through weight into their batch
    norm, which needs the network's dtype) beside a two-of-three input choice (Gumbel-top-k)."""

    def __init__(self):
        super().__init__()
        from nas.ops import OPS

        ops = {name: OPS[name](4, 4, 1, False) for name in ("nor_conv_3x3", "nor_conv_1x1")}
        self.op = OpChoice(ops, label="op")
        self.inp = InputChoice(3, n_chosen=2, label="in")

    def forward(self, x):
        y = self.op(x)
        return self.inp([y, x, 2 * y]).mean((1, 2, 3))


def test_a_top_k_draw_gives_every_choice_straight_through_weights_in_the_network_dtype():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(_FoldedAndPicked(), mode="gdas")
    out = net(torch.randn(2, 4, 8, 8))
    assert out.dtype == torch.float32
    out.sum().backward()
    (logits,) = net.arch_parameters()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_export_then_fix_equals_the_forced_supernet_bitwise(tmp_path):
    torch.manual_seed(0)
    net = nas.Supernet.from_model(merge_net(), mode="gdas")
    with torch.no_grad():
        net.arch_parameters()[0].normal_()  # an architecture other than the first candidates
    x, y = batch()
    F.cross_entropy(net(x), y).backward()  # weights and BN statistics that are not the initial ones
    arch = net.export(tmp_path / "arch.json")
    assert nas.load_architecture(tmp_path / "arch.json") == arch
    cell = nas.Genotype.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|")
    (tmp_path / "genotype.json").write_text(cell.to_json())
    with pytest.raises(nas.UserError, match=r"a cell of a built-in space .*nas.Genotype.from_json"):
        nas.load_architecture(tmp_path / "genotype.json")
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


@pytest.mark.parametrize("mode", ["gdas", "darts"])
def test_zero_as_none_never_runs_the_none_candidate(mode):
    # A nas.ops.Zero candidate (the `none` op) is a structural zero when zero_as_none is set: the
    # choice returns None when it is chosen and the soft modes skip it; without, it runs.
    def model(zero_as_none: bool) -> nn.Module:
        torch.manual_seed(0)
        cands = {"lin": nn.Conv2d(4, 4, 1), "none": nas.ops.Zero(4, 1)}
        return nn.Sequential(OpChoice(cands, label="op", zero_as_none=zero_as_none))

    x = torch.randn(2, 4, 3, 3)
    calls = []
    for zero_as_none in (True, False):
        net = nas.Supernet.from_model(model(zero_as_none), mode=mode)
        zero = net.model[0].candidates["none"]
        hook = zero.register_forward_hook(lambda *a, flag=zero_as_none: calls.append(flag))
        with net.forced({"op": "none"}):
            out = net(x)
        assert (out is None) if zero_as_none else torch.equal(out, torch.zeros(2, 4, 3, 3))
        out = net(x)  # soft: every candidate but `none` mixed; gdas: a draw
        hook.remove()
        if mode == "darts":
            w = torch.softmax(net.arch_parameters()[0].detach()[0], dim=-1)[0]
            torch.testing.assert_close(out, w * net.model[0].candidates["lin"](x))
    assert calls and all(c is False for c in calls)  # only ever run without zero_as_none


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
    with pytest.raises(RuntimeError, match="OpChoice 'op' ran outside its supernet's forward.*nas.fix"):
        choice(torch.ones(1))
    # unlabelled: named by the path its supernet gave it; wrapped twice: the first wrapper says why
    model = nn.Sequential(nn.Identity(), OpChoice({"a": nn.Identity(), "b": nn.Tanh()}))
    first = nas.Supernet.from_model(model)
    nas.Supernet.from_model(model)
    with pytest.raises(RuntimeError, match="OpChoice '1' ran outside .* wrapped twice answers to the latest"):
        first(torch.ones(1))


def test_bad_candidates_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        OpChoice({"a": nn.Identity()})
    with pytest.raises(ValueError, match="without '.'"):
        OpChoice({"a.b": nn.Identity(), "c": nn.Identity()})
    with pytest.raises(ValueError, match="n_chosen"):
        InputChoice(3, n_chosen=3)
    with pytest.raises(ValueError, match="reduction"):
        InputChoice(3, reduction="max")


# ---- the search loop ---------------------------------------------------------------
TINY = [
    "data.num_train=128",
    "data.num_test=32",
    "data.image_size=16",
    "search.batch_size=16",
    "search.steps_per_epoch=3",
    "search.epochs=3",
    "search.warmup_epochs=0",
    "search.prune=off",
    "run.device=cpu",
    "supernet.model=choice_models:merge_net",
]


def test_searcher_takes_a_custom_model_from_python():
    from nas.config import load_config
    from nas.searcher import Searcher

    torch.manual_seed(0)
    cfg = load_config(None, ["search.epochs=1", "search.arch.lr=0.05"])
    net = nas.Supernet.from_model(tiny_net(), mode="gdas")
    searcher = Searcher.from_config(net, cfg.search)
    before = net.arch_parameters()[0].detach().clone()
    weights_before = [p.detach().clone() for p in net.weight_parameters()]
    batches = [batch(8, seed=k) for k in range(4)]
    searcher.start_epoch(0)
    for batch_w, batch_a in zip(batches[:2], batches[2:]):
        searcher.step(batch_w, batch_a, arch_step=True)
    assert not torch.equal(net.arch_parameters()[0], before)  # the logits moved
    assert any(not torch.equal(p, q) for p, q in zip(net.weight_parameters(), weights_before))
    loss, acc = searcher.train_meter.read()
    assert loss == loss and 0 <= acc <= 100
    arch = net.export()
    assert set(arch) == set(net.labels)
    # beta-decay's term counts every label's own candidates (the padding is -inf, not 0).
    from nas.regularisers import beta_decay_term

    want = torch.stack(
        [
            torch.logsumexp(row[: len(net.candidates[lab])], 0)
            for lab, row in zip(net.labels, net.arch_parameters()[0].detach())
        ]
    ).mean()
    assert torch.allclose(beta_decay_term(net).detach(), want)


def _quiet(text: str) -> None:
    pass


def test_custom_model_searches_resumes_exactly_and_inspects(tmp_path):
    from nas.config import load_config
    from nas.search import run_search

    cfg = load_config(None, TINY)
    cpu = torch.device("cpu")
    full = run_search(cfg, tmp_path / "full", cpu, progress=False, log=_quiet)
    part = run_search(cfg, tmp_path / "part", cpu, stop_after=1, progress=False, log=_quiet)
    assert part.epochs_done == 1 and not part.finished
    resumed = run_search(cfg, tmp_path / "part", cpu, resume=True, progress=False, log=_quiet)
    assert resumed.finished and resumed.genotype.choices == full.genotype.choices
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys() and "arch.choices" in a["model"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ma = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    drop = ("epoch_seconds", "images_per_second")
    assert [{k: v for k, v in m.items() if k not in drop} for m in ma] == [
        {k: v for k, v in m.items() if k not in drop} for m in mb
    ]
    assert [m["epoch"] for m in ma] == [1, 2, 3] and ma[-1]["genotype"] == str(full.genotype)
    assert ma[-1]["val_loss"] is not None and "benchmark" not in ma[-1]
    # The run directory: the architecture (labels -> names) and per-epoch probabilities.
    saved = nas.load_architecture(tmp_path / "full" / "architecture.json")
    assert saved == full.genotype.choices and not (tmp_path / "full" / "genotype.json").exists()
    probs = [json.loads(x) for x in (tmp_path / "full" / "arch_probs.jsonl").read_text().splitlines()]
    assert len(probs) == 3 and set(probs[-1]["choices"]) == set(saved)
    for p in probs[-1]["choices"].values():
        assert sum(p.values()) == pytest.approx(1.0)
    # What the search found builds: fixed from the checkpoint's supernet, and from scratch.
    net = nas.Supernet.from_model(merge_net())
    net.load_state_dict(a["model"])
    assert net.export() == saved
    fresh = merge_net(arch=saved)
    fresh.load_state_dict(nas.fix(net, saved).state_dict())


def test_custom_model_from_the_command_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = [x for s in TINY for x in ("--set", s)]
    code, out, err = run_cli(["--out", run_dir, "--quiet", "--stop-after", "2", *sets], capsys)
    assert code == 0, err
    assert "model choice_models:merge_net" in out and "label, chosen candidate, probability" in out
    assert "stopped after epoch 2" in out
    code, out, err = run_cli(["--resume", run_dir, "--quiet"], capsys)
    assert code == 0, err
    arch = nas.load_architecture(run_dir / "architecture.json")
    assert f"derived architecture: {json.dumps(arch)}" in out
    code, out, err = run_cli(["inspect", run_dir], capsys)
    assert code == 0, err
    assert "model    choice_models:merge_net (gdas mode), epoch 3/3" in out
    for label in arch:
        assert f"  {label}: " in out
    code, out, err = run_cli(["inspect", run_dir, "--json"], capsys)
    assert code == 0 and json.loads(out)["architecture"] == arch
    code, _, err = run_cli(["inspect", run_dir, "--dot", tmp_path / "x.dot"], capsys)
    assert code == 2 and "has none" in err
    copied = tmp_path / "best.json"
    copied.write_text((run_dir / "architecture.json").read_text())  # known by its content, not its name
    for target in (run_dir, run_dir / "architecture.json", copied, json.dumps(arch)):  # not a benchmark cell
        code, _, err = run_cli(["lookup", target], capsys)
        assert code == 2 and "a custom model's architecture is not a NAS-Bench-201 cell" in err, err
    # retrain RUN_DIR builds and trains the searched network: tests/test_choice_retrain.py


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("no_such_module_xyz:net", "cannot import 'no_such_module_xyz'"),
        ("choice_models:nowhere", "has no 'nowhere'"),
        ("choice_models:NOT_A_FUNCTION", "not a function"),
        ("choice_models", "must look like package.module:function"),
        ("choice_models:no_choices", "holds no nas.OpChoice or nas.InputChoice"),
    ],
)
def test_a_bad_supernet_model_is_one_clear_error(spec, needle, tmp_path, capsys):
    sets = [x for s in TINY + [f"supernet.model={spec}"] for x in ("--set", s)]
    code, _, err = run_cli(["--out", tmp_path / "run", "--quiet", *sets], capsys)
    assert code == 2
    assert needle in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_a_model_module_in_the_current_folder_is_found_however_the_program_started(tmp_path, monkeypatch):
    # the installed gumbel-nas command puts no folder on sys.path; python search.py puts its own
    from nas.model_supernet import load_model_factory

    (tmp_path / "model_here_xyz.py").write_text("import torch\n\ndef net():\n    return torch.nn.Linear(2, 3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "model_here_xyz", raising=False)
    with pytest.raises(nas.UserError, match="cannot import 'not_here_xyz'"):
        load_model_factory("not_here_xyz:net")
    assert str(tmp_path) not in sys.path  # not found there: the path is left as it was
    assert load_model_factory("model_here_xyz:net")().out_features == 3
    sys.modules.pop("model_here_xyz", None)


# ---- torchrun ----------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
needs_gloo = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def torchrun(*args, nproc: int = 2, timeout: float = 240):
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@needs_gloo
def test_two_ranks_sample_the_same_path_of_a_custom_model(tmp_path):
    worker = ROOT / "tests" / "distributed_worker.py"
    done = torchrun(worker, "steps", "--mode", "gdas", "--model", "choices", "--steps", 4, "--dump", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["archs"] == r1["archs"]  # every forward, weight and arch step alike
    assert all(set(a) == {"b0.kernel", "b0.skip", "b1.kernel", "b1.skip"} for a in r0["archs"])
    assert len({json.dumps(a, sort_keys=True) for a in r0["archs"]}) > 1  # the path changes between steps
    for key in r0["state"]:  # weights, logits and batch-norm buffers end bitwise equal
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    assert r0["losses"] != r1["losses"]  # yet each rank saw its own half of the data


# ---- the README's example ------------------------------------------------------------
def readme_example() -> str:
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("### Choices in your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_searches_and_fixes():
    torch.manual_seed(0)
    code = readme_example()
    assert 25 <= len([line for line in code.splitlines() if line.strip()]) <= 40  # about 30 lines
    scope: dict = {}
    exec(compile(code, "README.md: Choices in your own model", "exec"), scope)
    net, arch, fixed, retrain = scope["net"], scope["arch"], scope["fixed"], scope["retrain"]
    assert set(arch) == {f"block{i}.{c}" for i in range(3) for c in ("kernel", "skip")}
    assert all(v in ("k3", "k5", "identity", "conv") for v in arch.values())
    for model in (fixed, retrain):
        assert not any(isinstance(m, (OpChoice, InputChoice)) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    fixed.eval()
    retrain.eval()
    with net.forced(arch):
        want = net(x)
    assert torch.equal(fixed(x), want) and torch.equal(retrain(x), want)
