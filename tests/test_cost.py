"""Hardware-aware search (nas.cost): cost tables, the expected cost and its gradient, the loss
forms, the latency table and the measure-latency command."""

from __future__ import annotations

import itertools
import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.cli import main
from nas.config import load_config, validate
from nas.cost import (
    CostPenalty,
    CostTable,
    architectures_within,
    budget_window,
    cost_table,
    derivable_logits,
    derived_cost,
    expected_cost,
    load_latency_table,
    measure_latency,
    save_latency_table,
    within_budget,
)
from nas.flops import count_macs, count_parameters, module_macs
from nas.report import format_text, load_report
from nas.searcher import Searcher
from tests.test_benchmark_cli import FIXTURE
from tests.test_search import TINY_NB201


def bottleneck() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 8))  # 32 multiply-adds


def wide() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8))  # 512


class Toy(nn.Module):
    """Three labels (one shared by two choices), the cheapest candidate at a different place in
    each, and an InputChoice (which costs nothing)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.c1 = nas.OpChoice({"wide": wide(), "lin": nn.Linear(8, 8), "skip": nn.Identity()}, label="c1")
        self.c2 = nas.OpChoice({"lin": nn.Linear(8, 8), "bottleneck": bottleneck(), "wide": wide()}, label="c2")
        self.s1 = nas.OpChoice({"a": nn.Linear(8, 8), "b": bottleneck()}, label="shared")
        self.s2 = nas.OpChoice({"a": nn.Linear(8, 8), "b": bottleneck()}, label="shared")
        self.pick = nas.InputChoice(2, label="pick")
        self.head = nn.Linear(8, num_classes)  # 24: the fixed part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.s2(self.s1(self.c2(self.c1(x))))
        return self.head(self.pick([h, x]))


CHEAPEST = {"c1": "skip", "c2": "bottleneck", "shared": "b"}


def toy_net(mode: str = "darts") -> nas.Supernet:
    torch.manual_seed(0)
    return nas.Supernet.from_model(Toy(), mode=mode)


def test_toy_table_counts_every_candidate_and_the_fixed_part():
    net = toy_net()
    flops = cost_table(net, "flops", (8,))
    rows = dict(zip(net.labels, flops.costs["choices"].tolist()))
    assert rows == {"c1": [512, 64, 0], "c2": [64, 32, 512], "shared": [128, 64, 0], "pick": [0, 0, 0]}
    assert flops.fixed == 24
    params = cost_table(net, "params", (8,))
    rows = dict(zip(net.labels, params.costs["choices"].tolist()))
    assert rows["c1"] == [8 * 32 + 32 + 32 * 8 + 8, 72, 0] and rows["shared"] == [144, 2 * (18 + 24) - 0 - 0, 0]
    assert params.fixed == 27
    # The derived cost is the fixed network's, by the same counter.
    arch = {"c1": "lin", "c2": "wide", "shared": "a", "pick": "0"}
    fixed = nas.fix(net, arch)
    assert derived_cost(net, flops, arch, (8,)) == module_macs(fixed, torch.zeros(1, 8)) == 24 + 64 + 512 + 128
    assert derived_cost(net, params, arch, (8,)) == count_parameters(fixed)


def test_nb201_and_darts_derived_cost_equals_the_discrete_network():
    """Forcing a genotype runs what the discrete network runs, structural zeros included."""
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
    flops, params = cost_table(net, "flops", (3, 16, 16)), cost_table(net, "params", (3, 16, 16))
    cells = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",
        "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_1x1~2|",  # 2<-1 reads a zero
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ]
    for text in cells:
        geno = nas.Genotype.from_nb201(text)
        model = net.discretize(geno)
        assert derived_cost(net, flops, geno, (3, 16, 16)) == count_macs(model, (3, 16, 16)), text
        # Parameters: those of the ops that run (the discrete network also holds the skipped ones).
        skipped = text != cells[0]
        got = derived_cost(net, params, geno, (3, 16, 16))
        assert got < count_parameters(model) if skipped else got == count_parameters(model), text
    # A cell without none: its one-hot expectation is its cost.
    geno = nas.Genotype.from_nb201(cells[0])
    onehot = {"normal": torch.full((6, 5), -1e9, dtype=torch.float64)}
    for e, k in enumerate(net.choices_from_genotype(geno)["normal"]):
        onehot["normal"][e, k] = 0.0
    assert float(flops.expected(onehot)) == pytest.approx(count_macs(net.discretize(geno), (3, 16, 16)))

    darts = nas.build_supernet("darts", mode="gdas", C=4, N=3, num_classes=10)
    table = cost_table(darts, "flops", (3, 16, 16))
    geno = darts.genotype()
    assert derived_cost(darts, table, geno, (3, 16, 16)) == count_macs(darts.discretize(geno), (3, 16, 16))


def test_gradcheck_of_the_expected_cost():
    net = toy_net()
    table = cost_table(net, "flops", (8,))
    dead = ~net.alive("choices")

    def f(a: torch.Tensor) -> torch.Tensor:
        return table.expected({"choices": a.masked_fill(dead, float("-inf"))}) / 100

    a = torch.randn(net.arch["choices"].shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (a,))
    nb = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
    t = cost_table(nb, "flops", (3, 16, 16))
    a = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: t.expected({"normal": a}) / 1e5, (a,))


@pytest.mark.parametrize("mode", nas.MODES)
def test_expected_cost_sends_a_gradient_to_the_logits_in_every_mode(mode):
    for net, size in ((toy_net(mode), (8,)), (nas.build_supernet("nb201", mode=mode, C=4, N=1), (3, 16, 16))):
        e = expected_cost(net, cost_table(net, "flops", size))
        e.backward()
        for cell, a in net.arch.items():
            assert a.grad is not None and a.grad.abs().sum() > 0, (mode, cell)


def test_expected_cost_copies_the_table_to_the_logits_once_not_at_every_step():
    """E runs at every architecture step: copying the host's float64 table to the logits' device
    and dtype each time would wait for the device each time (on CUDA)."""
    from torch.overrides import TorchFunctionMode

    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=10)
    table = cost_table(net, "flops", (3, 16, 16))
    penalty = CostPenalty(net, table, form="target", weight=1.0, budget=1e5)
    copies = []

    class CountCopies(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.to and any(args[0] is c for c in table.costs.values()):
                copies.append(args[0])
            return func(*args, **(kwargs or {}))

    values = []
    with CountCopies():
        for _ in range(3):
            e = penalty.expected()
            e.backward()
            values.append(e.item())
    assert len(copies) == len(table.costs)  # once per cell type, at the first step
    assert values[0] == values[-1]  # the copy it keeps is the table's


def _descend(net: nas.Supernet, penalty: CostPenalty, steps: int, task=None) -> None:
    """Adam on the logits only, the toy's cross-entropy on random data plus the cost term (in Adam's
    step, or after it with ``step: direct``)."""
    lr = 0.1
    opt = torch.optim.Adam(net.arch_parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        ce = F.cross_entropy(net(x), y) if task is None else task()
        opt.zero_grad()
        (penalty.objective(ce) if penalty.step == "adam" else ce).backward(inputs=net.arch_parameters())
        opt.step()
        if penalty.step == "direct":
            penalty.direct_step(net.arch_parameters(), lr)


@pytest.mark.parametrize("mode", nas.MODES)
@pytest.mark.parametrize("form, weight", [("add_linear", 1e3), ("mul_log", 50.0)])
def test_a_huge_weight_picks_every_choices_cheapest_candidate(mode, form, weight):
    net = toy_net(mode)
    penalty = CostPenalty(net, cost_table(net, "flops", (8,)), form=form, weight=weight)
    _descend(net, penalty, steps=300)
    arch = net.export()
    assert {label: arch[label] for label in CHEAPEST} == CHEAPEST
    assert penalty.expected().item() < 0.5 * penalty.reference  # the reference: all candidates equally likely


class Widths(nn.Module):
    """Six labels, each a bottleneck of width 1, 2, 4 or 8 (16, 32, 64, 128 multiply-adds)."""

    WIDTHS = (1, 2, 4, 8)

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                nas.OpChoice({f"h{h}": nn.Sequential(nn.Linear(8, h), nn.Linear(h, 8)) for h in self.WIDTHS})
                for _ in range(6)
            ]
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


# direct: Adam steps the task's logits by about lr whatever its gradient's size, the term's plain
# step is lr times its gradient, so the hinge needs a larger weight to hold the same line.
@pytest.mark.parametrize("step, weight", [("adam", 20.0), ("direct", 200.0)])
def test_budget_form_ends_within_ten_percent_of_its_target(step, weight):
    """A task whose loss falls with each block's width (log h: diminishing returns) against the
    hinge at a budget of 24 + 6 * 64: the search settles at the budget, every block at width 4
    (the best use of 64 multiply-adds a block), so the derived network meets it too."""
    torch.manual_seed(0)
    net = nas.Supernet.from_model(Widths(), mode="darts")
    table = cost_table(net, "flops", (8,))
    budget = 24.0 + 6 * 64
    penalty = CostPenalty(net, table, form="budget", weight=weight, budget=budget, step=step)
    value = torch.tensor(Widths.WIDTHS, dtype=torch.float32).log()

    def task() -> torch.Tensor:
        return -(torch.softmax(net.arch["choices"], -1) * value).sum()

    _descend(net, penalty, steps=400, task=task)
    e = penalty.expected().item()
    assert abs(e - budget) / budget < 0.1, e
    derived = derived_cost(net, table, net.export(), (8,))
    assert abs(derived - budget) / budget < 0.1, (derived, net.export())


@pytest.mark.parametrize("step, weight", [("adam", 20.0), ("direct", 200.0)])
def test_target_form_spends_the_budget_the_hinge_leaves_unused(step, weight):
    """A task whose loss rises with each block's width: the hinge (``budget``) never binds and the
    blocks stay narrow; the target form pulls E up to the budget (three quarters of the widest
    network) from below, and within 10%; the cell derived within the budget fits it."""
    value = -torch.tensor(Widths.WIDTHS, dtype=torch.float32).log()  # narrow is better
    budget = 24.0 + 6 * 96
    reached = {}
    for form in ("budget", "target"):
        torch.manual_seed(0)
        net = nas.Supernet.from_model(Widths(), mode="darts")
        table = cost_table(net, "flops", (8,))
        penalty = CostPenalty(net, table, form=form, weight=weight, budget=budget, step=step)

        def task(net=net) -> torch.Tensor:
            return -(torch.softmax(net.arch["choices"], -1) * value).sum()

        _descend(net, penalty, steps=400, task=task)
        reached[form] = penalty.expected().item()
        cell = within_budget(net.probabilities(), table, budget)["choices"].argmax(dim=1)
        assert table.fixed + sum(table.costs["choices"][r, k].item() for r, k in enumerate(cell)) <= budget
    assert reached["budget"] < 0.5 * budget, reached  # the hinge lets the task empty the blocks
    assert abs(reached["target"] - budget) / budget < 0.1, reached


@pytest.mark.parametrize("form", ["add_linear", "budget", "target"])
def test_direct_step_is_adams_step_then_a_plain_step_on_the_term(form):
    """step: direct. Adam's step sees the cross-entropy alone; then each logit moves by
    -lr * d term / d logit, so a dearer candidate moves further (Adam would move both by ~lr)."""
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    lr, logits = 0.05, []
    for step in ("direct", None):
        torch.manual_seed(0)
        net = toy_net("darts")
        table = cost_table(net, "flops", (8,))
        penalty = CostPenalty(net, table, form=form, weight=3.0, budget=table.fixed, step="direct")
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=lr)
        Searcher(net, w_opt, a_opt, epochs=1, cost=penalty if step else None).arch_step(x, y)
        logits.append(net.arch["choices"].detach().clone())
        if step is None:  # the term's gradient at the logits Adam left
            (grad,) = torch.autograd.grad(penalty.additive(), [net.arch["choices"]])
    torch.testing.assert_close(logits[0], logits[1] - lr * grad)
    alive = torch.isfinite(net.logits("choices"))
    assert grad[alive].abs().max() > 0 and len(set(grad[alive].abs().round(decimals=6).tolist())) > 2


def test_searcher_adds_the_cost_term_to_the_architecture_loss():
    """darts mode (no noise): the step's gradient is that of the objective computed by hand."""
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    grads = []
    for by_hand in (False, True):
        net = toy_net("darts")
        penalty = CostPenalty(net, cost_table(net, "flops", (8,)), form="add_linear", weight=0.5)
        if by_hand:
            penalty.objective(F.cross_entropy(net(x), y)).backward(inputs=net.arch_parameters())
            grads.append(net.arch["choices"].grad.clone())
            continue
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
        a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)  # keep the logits: compare gradients
        Searcher(net, w_opt, a_opt, epochs=1, cost=penalty).arch_step(x, y)
        grads.append(net.arch["choices"].grad.clone())
    assert torch.allclose(grads[0], grads[1])


def test_latency_table_round_trip_and_refusals(tmp_path):
    net = toy_net()
    lut = measure_latency(net, (8,), batch_size=4, repeats=2, warmup=0)
    assert lut["version"] == 1 and lut["device"] == "cpu" and lut["statistic"] == "median"
    assert {"torch", "threads", "platform"} <= set(lut["machine"])
    path = tmp_path / "lut.json"
    save_latency_table(lut, path)
    data = load_latency_table(path, net, (8,), 4, "cpu")
    table = cost_table(net, "latency", (8,), latency=data)
    assert table.costs["choices"].tolist() == lut["costs"]["choices"] and table.fixed == lut["fixed"]
    assert all(v > 0 for v in table.costs["choices"][0].tolist()[:2])  # wide and lin take time
    refusals = [
        (dict(device="cuda"), "measured for device cpu, this search uses cuda"),
        (dict(batch_size=8), "measured for batch size 4, this search uses 8"),
        (dict(input_size=(8, 1)), "input shape"),
        (dict(bf16=True), "measured for precision float32, this search uses bf16 autocast"),
        (dict(channels_last=True), "measured for memory format contiguous, this search uses channels_last"),
    ]
    # a table from another machine's device: refused for a search, readable to study
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**lut, "device_name": "Some Other CPU"}))
    with pytest.raises(nas.UserError, match="measured on 'Some Other CPU', this search runs on"):
        load_latency_table(elsewhere, net, (8,), 4, "cpu")
    assert load_latency_table(elsewhere, net, (8,), 4, "cpu", any_machine=True)["device_name"] == "Some Other CPU"
    for change, message in refusals:
        args = dict(net=net, input_size=(8,), batch_size=4, device="cpu") | change
        with pytest.raises(nas.UserError, match=message) as err:
            load_latency_table(path, **args)
        assert "\n" not in str(err.value) and "measure-latency" in str(err.value)
    other = nas.Supernet.from_model(nn.Sequential(nas.OpChoice({"a": nn.Linear(8, 8), "b": nn.Identity()})))
    with pytest.raises(nas.UserError, match="another network"):
        load_latency_table(path, other, (8,), 4, "cpu")
    # a table written before precision and memory format were recorded was timed in float32, contiguous
    older = tmp_path / "older.json"
    older.write_text(json.dumps({k: v for k, v in lut.items() if k not in ("precision", "memory_format")}))
    assert load_latency_table(older, net, (8,), 4, "cpu")["costs"] == lut["costs"]
    with pytest.raises(nas.UserError, match="memory format contiguous"):
        load_latency_table(older, net, (8,), 4, "cpu", channels_last=True)
    stale = tmp_path / "old.json"
    stale.write_text(json.dumps({**lut, "version": 0}))
    with pytest.raises(nas.UserError, match="version 0"):
        load_latency_table(stale, net, (8,), 4, "cpu")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(nas.UserError, match="not a latency table"):
        load_latency_table(tmp_path / "junk.json", net, (8,), 4, "cpu")


class _Layout(nn.Module):
    """Records the memory format of what it is given."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.seen: set = set()

    def forward(self, x):
        self.seen.add(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.conv(x)


def test_measure_latency_times_channels_last_inputs_when_asked_and_refuses_bf16_off_cuda():
    layout = _Layout()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nas.OpChoice({"a": layout, "b": nn.Identity()}, label="c"))
    net = nas.Supernet.from_model(model, mode="gdas").to(memory_format=torch.channels_last)
    layout.seen.clear()
    lut = measure_latency(net, (3, 4, 4), batch_size=2, repeats=1, warmup=0, channels_last=True)
    assert lut["memory_format"] == "channels_last" and lut["precision"] == "float32" and layout.seen == {True}
    layout.seen.clear()
    assert measure_latency(net, (3, 4, 4), batch_size=2, repeats=1, warmup=0)["memory_format"] == "contiguous"
    assert False in layout.seen
    with pytest.raises(ValueError, match="bf16 timing needs the network on a CUDA device"):
        measure_latency(net, (3, 4, 4), batch_size=2, repeats=1, warmup=0, bf16=True)


def test_measure_latency_command_and_a_search_with_its_table(tmp_path, capsys):
    sets = [x for s in TINY_NB201 + ["run.threads=1"] for x in ("--set", s)]
    lut = tmp_path / "lut.json"
    start = time.perf_counter()
    assert main(["measure-latency", *sets, "--out", str(lut), "--repeats", "3", "--warmup", "1"]) == 0
    assert time.perf_counter() - start < 30
    data = json.loads(lut.read_text())
    assert data["batch_size"] == 32 and data["input_size"] == [3, 16, 16] and data["repeats"] == 3
    capsys.readouterr()
    assert main(["measure-latency", *sets, "--out", str(tmp_path / "no" / "lut.json")]) == 2
    assert capsys.readouterr().err.startswith("error: --out ")  # refused before any timing
    cost = ["--set", "search.cost.metric=latency", "--set", f"search.cost.table={lut}", "--set", "search.cost.weight=1"]
    run_dir = tmp_path / "run"
    assert main(["--out", str(run_dir), "--quiet", *sets, *cost, "--set", "search.cost.form=add_linear"]) == 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        assert m["cost_metric"] == "latency" and m["expected_cost"] > 0 and m["derived_cost"] > 0
    capsys.readouterr()
    code = main(["inspect", str(run_dir), "--budget", "5"])  # inspect does not read the measured table
    assert code == 2 and "this run searched under latency" in capsys.readouterr().err
    assert main(["inspect", str(run_dir), "--budget", "1e9", "--metric", "flops"]) == 0
    assert "most probable cell within flops" in capsys.readouterr().out
    # measure-latency takes a config already set for the latency search it measures for
    ready = ["--set", "search.cost.metric=latency", "--set", "search.cost.weight=1"]
    again = tmp_path / "again.json"
    assert main(["measure-latency", *sets, *ready, "--out", str(again), "--repeats", "1", "--warmup", "0"]) == 0
    assert json.loads(again.read_text())["metric"] == "latency"
    capsys.readouterr()
    missing = ["--set", "search.cost.table=/nonexistent/lut.json"]
    assert main(["--out", str(tmp_path / "r3"), "--quiet", *sets, *cost, *missing]) == 2
    assert "does not exist; measure it first" in capsys.readouterr().err and not (tmp_path / "r3").exists()
    code = main(["--out", str(tmp_path / "r2"), "--quiet", *sets, *cost, "--set", "search.batch_size=16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: latency table") and "Traceback" not in err
    # a folder for --out or for the table: refused, before any timing for measure-latency
    assert main(["measure-latency", *sets, "--out", str(tmp_path), "--repeats", "1000"]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err
    folder = ["--set", f"search.cost.table={tmp_path}"]
    assert main(["--out", str(tmp_path / "r4"), "--quiet", *sets, *cost, *folder]) == 2
    assert "is a folder, not a table" in capsys.readouterr().err
    # measure-latency times as the config's run section says; a search in another memory format is refused
    cl = tmp_path / "cl.json"
    assert main(["measure-latency", *sets, "--set", "run.channels_last=true", "--out", str(cl), "--repeats", "1"]) == 0
    assert json.loads(cl.read_text())["memory_format"] == "channels_last"
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "r5"), "--quiet", *sets, *cost, "--set", f"search.cost.table={cl}"]) == 2
    err = capsys.readouterr().err
    assert "memory format channels_last, this search uses contiguous" in err and "run.channels_last" in err
    assert main(["measure-latency", *sets, "--set", "run.bf16=true", "--device", "cpu", "--out", str(cl)]) == 2
    assert "bf16 needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, found",
    [
        (lambda d: d.pop("fixed"), "its fixed part is None"),
        (lambda d: d.update(fixed="abc"), "its fixed part is 'abc'"),
        (lambda d: d.update(site_costs=d["site_costs"][:3]), "it has 3 rows of site costs for 18 choice sites"),
        (lambda d: d["site_costs"][2].pop(), "site 2 "),
        (lambda d: d["site_costs"][0].__setitem__(3, -1.0), "site 0 "),
        (lambda d: d["site_costs"][1].__setitem__(2, float("nan")), "site 1 "),
        # "costs" sums "site_costs" per edge and op: edited alone, or gone, the two disagree
        (lambda d: d["costs"]["normal"][0].__setitem__(3, 0.0), "its costs do not add up from its site_costs"),
        (lambda d: d["costs"]["normal"][0].__setitem__(3, "x"), "its costs do not add up from its site_costs"),
        (lambda d: d.pop("costs"), "its costs do not add up from its site_costs"),
    ],
    ids=["no-fixed", "text-fixed", "rows-cut", "row-cut", "negative", "nan", "costs-edited", "costs-text", "no-costs"],
)
def test_a_damaged_latency_table_is_refused_and_the_out_folder_stays_free(tmp_path, capsys, damage, found):
    """A cut or edited table would cost its missing candidates nothing: one error line, and the
    same --out then starts the search with a sound table."""
    sets = [x for s in TINY_NB201 + ["run.threads=1"] for x in ("--set", s)]
    lut = tmp_path / "lut.json"
    assert main(["measure-latency", *sets, "--out", str(lut), "--repeats", "1", "--warmup", "0"]) == 0
    data = json.loads(lut.read_text())
    damage(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    cost = [
        "--set",
        "search.cost.metric=latency",
        "--set",
        "search.cost.weight=1",
        "--set",
        "search.cost.form=add_linear",
    ]
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["--out", str(out), "--quiet", *sets, *cost, "--set", f"search.cost.table={bad}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: latency table {bad} is damaged: {found}") and err.count("\n") == 1
    assert main(["--out", str(out), "--quiet", *sets, *cost, "--set", f"search.cost.table={lut}"]) == 0


def test_mul_log_is_refused_where_a_network_can_cost_1_or_less():
    """log(E) <= 0 there: clamped, it would scale the cross-entropy toward 0 and stop the search."""
    import dataclasses

    from nas.search import _check_cost_reachable

    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    _check_cost_reachable(net, table, None, "mul_log")  # millions of flops: fine
    tiny = dataclasses.replace(table, fixed=table.fixed / 1e7, costs={c: v / 1e7 for c, v in table.costs.items()})
    with pytest.raises(nas.UserError, match="mul_log takes the log of the expected cost, which must stay above 1"):
        _check_cost_reachable(net, tiny, None, "mul_log")
    _check_cost_reachable(net, tiny, None, "add_linear")  # the form it names works there


def test_a_search_resumes_on_another_machine_with_its_own_table(tmp_path, capsys):
    """The checkpoint's hash of the costs decides a resume: a table whose recorded device model
    (or, from before they were recorded, precision and memory format) would refuse a new search
    resumes the search it started."""
    sets = [x for s in TINY_NB201 + ["run.threads=1", "search.epochs=2"] for x in ("--set", s)]
    lut = tmp_path / "lut.json"
    assert main(["measure-latency", *sets, "--out", str(lut), "--repeats", "1", "--warmup", "0"]) == 0
    cost = ["--set", "search.cost.metric=latency", "--set", f"search.cost.table={lut}", "--set", "search.cost.weight=1"]
    cost += ["--set", "search.cost.form=add_linear"]
    run_dir = tmp_path / "run"
    assert main(["--out", str(run_dir), "--quiet", *sets, *cost, "--stop-after", "1"]) == 0
    data = json.loads(lut.read_text())
    data["device_name"] = "the machine the search started on"
    del data["precision"], data["memory_format"]  # as a table written before they were recorded
    lut.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "new"), "--quiet", *sets, *cost]) == 2
    assert "was measured on 'the machine the search started on'" in capsys.readouterr().err
    assert main(["--resume", str(run_dir), "--quiet"]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_table_measured_again_since_the_search_started(tmp_path, capsys):
    """The config names the table's file; a resume with other costs there would not be exact."""
    sets = [x for s in TINY_NB201 + ["run.threads=1", "search.epochs=2"] for x in ("--set", s)]
    lut = tmp_path / "lut.json"
    assert main(["measure-latency", *sets, "--out", str(lut), "--repeats", "1", "--warmup", "0"]) == 0
    good = lut.read_text()
    cost = ["--set", "search.cost.metric=latency", "--set", f"search.cost.table={lut}", "--set", "search.cost.weight=1"]
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--out",
                str(run_dir),
                "--quiet",
                *sets,
                *cost,
                "--set",
                "search.cost.form=add_linear",
                "--stop-after",
                "1",
            ]
        )
        == 0
    )
    data = json.loads(good)
    data["site_costs"] = [[10 * v for v in row] for row in data["site_costs"]]  # as if measured again
    data["costs"] = {cell: [[10 * v for v in row] for row in rows] for cell, rows in data["costs"].items()}
    lut.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no longer holds the costs this search started with" in err and err.count("\n") == 1
    assert (run_dir / "checkpoint.pt").exists()  # the run is kept
    lut.write_text(good)
    moved = tmp_path / "moved.json"
    lut.rename(moved)
    assert main(["--resume", str(run_dir), "--quiet"]) == 2  # the fix is where it went, not measuring again
    assert "put the run's table back there, or give where it is now" in capsys.readouterr().err
    assert main(["--resume", str(run_dir), "--quiet", "--set", f"search.cost.table={moved}"]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["--resume", str(run_dir), "--quiet"]) == 0  # the run's config.yaml keeps where it is now
    assert f"table: {moved}" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize(
    "sets, message",
    [
        (["search.cost.form=budget", "search.cost.budget=100"], "below the cheapest network this search can derive"),
        (["search.cost.form=target", "search.cost.budget=100"], "below the cheapest network this search can derive"),
        (["search.cost.form=target", "search.cost.budget=1e12"], "above the dearest network"),
    ],
)
def test_a_budget_no_network_meets_is_refused(tmp_path, capsys, sets, message):
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    low = table.fixed + float(table.costs["normal"][:, 1:].min(dim=1).values.sum())
    high = table.fixed + float(table.costs["normal"].max(dim=1).values.sum())
    all_sets = TINY_NB201 + ["supernet.derive_none=false", "search.cost.weight=1", *sets]
    out = tmp_path / "run"
    assert main(["--out", str(out), "--quiet", *[x for s in all_sets for x in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{low if 'below' in message else high:g}" in err and err.count("\n") == 1
    assert not (out / "config.yaml").exists()


def test_budget_search_logs_expected_and_derived_flops(tmp_path):
    run_dir = tmp_path / "run"
    cost = ["search.cost.form=budget", "search.cost.budget=2e5", "search.cost.weight=1"]
    assert main(["--out", str(run_dir), "--quiet", *[x for s in TINY_NB201 + cost for x in ("--set", s)]]) == 0
    m = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert m["cost_metric"] == "flops" and m["cost_budget"] == 2e5 and m["expected_cost"] > 0
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5)
    geno = nas.Genotype.from_nb201(m["genotype"])
    assert m["derived_cost"] == count_macs(net.discretize(geno), (3, 16, 16))
    # inspect shows the cost history: every epoch's E and derived cost, as logged
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    report = load_report(run_dir)
    assert report["cost"]["metric"] == "flops" and report["cost"]["budget"] == 2e5
    assert report["cost"]["per_epoch"] == [
        {"epoch": x["epoch"], "expected": x["expected_cost"], "derived": x["derived_cost"]} for x in metrics
    ]
    text = format_text(report)
    assert "flops per epoch, expected / derived, budget 2e+05" in text
    assert f"{m['epoch']}:{m['expected_cost']:.4g}/{m['derived_cost']:.4g}" in text


def _brute_force(probs, costs, fixed, budget, floor=-math.inf):
    """Every combination of one live candidate per row: the best log-probability that fits (or None)."""
    import itertools
    import math

    best = None
    rows = [[k for k, q in enumerate(row) if q > 0] for row in probs]
    for combo in itertools.product(*rows):
        c = fixed + sum(costs[r][k] for r, k in enumerate(combo))
        lp = sum(math.log(probs[r][k]) for r, k in enumerate(combo))
        if floor <= c <= budget and (best is None or lp > best[0] + 1e-12):
            best = (lp, combo)
    return best


@pytest.mark.parametrize("exact_limit", [200_000, 0], ids=["exact", "lagrangian"])
def test_within_budget_is_the_most_probable_cell_that_fits(exact_limit):
    """Against brute force over NB201-sized rows (6 x 5, some candidates pruned): the exact search
    finds the best that fits; the Lagrangian one fits and is the best at the cost it reaches."""
    g = torch.Generator().manual_seed(0)
    costs = torch.tensor([[0.0, 0.0, 1.0, 9.0, 0.0]] * 6, dtype=torch.float64) * (1 + torch.rand(6, 1, generator=g))
    for trial in range(12):
        probs = torch.softmax(3 * torch.randn(6, 5, generator=g), dim=1)
        probs[trial % 6, trial % 5] = 0.0  # a pruned candidate is never chosen
        table = CostTable("flops", 2.0, {"normal": costs}, [], [])
        budget = 2.0 + float(torch.rand(1, generator=g)) * 40
        pick = within_budget({"normal": probs}, table, budget, exact_limit=exact_limit)["normal"].argmax(dim=1).tolist()
        used = 2.0 + sum(costs[r, k].item() for r, k in enumerate(pick))
        lp = sum(math.log(probs[r, k].item()) for r, k in enumerate(pick))
        assert used <= budget + 1e-9 and all(probs[r, k] > 0 for r, k in enumerate(pick))
        best = _brute_force(probs.tolist(), costs.tolist(), 2.0, budget if exact_limit else used)
        assert lp == pytest.approx(best[0], abs=1e-9), (trial, pick, best)


@pytest.mark.parametrize("exact_limit", [200_000, 0], ids=["exact", "lagrangian"])
def test_within_budget_with_a_floor_is_the_most_probable_cell_in_the_window(exact_limit):
    """With ``floor`` the cell must also cost at least that much: against brute force over the
    window [floor, budget] (exact); by Lagrangian relaxation, the window when the path reaches it
    (it may step over a narrow one), never over the budget."""
    g = torch.Generator().manual_seed(1)
    costs = torch.tensor([[0.0, 0.0, 1.0, 9.0, 0.0]] * 6, dtype=torch.float64) * (1 + torch.rand(6, 1, generator=g))
    table = CostTable("flops", 2.0, {"normal": costs}, [], [])
    landed = 0
    for _ in range(12):
        probs = torch.softmax(3 * torch.randn(6, 5, generator=g), dim=1)
        budget = 12.0 + float(torch.rand(1, generator=g)) * 30
        floor = 0.8 * budget
        pick = within_budget({"normal": probs}, table, budget, exact_limit=exact_limit, floor=floor)
        pick = pick["normal"].argmax(dim=1).tolist()
        used = 2.0 + sum(costs[r, k].item() for r, k in enumerate(pick))
        assert used <= budget + 1e-9
        best = _brute_force(probs.tolist(), costs.tolist(), 2.0, budget, floor=floor)
        assert best is not None  # these budgets always leave a cell in the window
        landed += used >= floor - 1e-9
        if exact_limit:
            lp = sum(math.log(probs[r, k].item()) for r, k in enumerate(pick))
            assert used >= floor - 1e-9 and lp == pytest.approx(best[0], abs=1e-9)
    assert landed >= (12 if exact_limit else 9), landed


def test_architectures_within_are_every_cell_in_the_window():
    """Against brute force over NB201-sized rows, some candidates left out: every combination whose
    cost lies in [floor, cap], once each; over the limit, a clear ValueError."""
    g = torch.Generator().manual_seed(2)
    costs = torch.tensor([[0.0, 0.0, 1.0, 9.0, 0.0]] * 6, dtype=torch.float64) * (1 + torch.rand(6, 1, generator=g))
    table = CostTable("flops", 2.0, {"normal": costs}, [], [])
    candidates = {"normal": [[1, 2, 3, 4]] * 5 + [[2, 3]]}  # none (0) left out; the last row decided between two
    for cap, floor in ((20.0, 15.0), (12.0, None), (2.5, 2.0), (1.0, None)):
        got = architectures_within(table, candidates, cap, floor)
        expected = [
            list(pick)
            for pick in itertools.product(*candidates["normal"])
            if (floor or -math.inf) <= 2.0 + sum(costs[r, k].item() for r, k in enumerate(pick)) <= cap
        ]
        assert [a["normal"] for a in got] == expected  # the same cells, in the same order
    assert architectures_within(table, candidates, 1.0) == []  # under the fixed part: nothing
    with pytest.raises(ValueError, match=r"architectures cost up to 100, more than 10"):
        architectures_within(table, candidates, 100.0, limit=10)
    with pytest.raises(ValueError, match=r"architectures cost between 3 and 100, more than 10"):
        architectures_within(table, candidates, 100.0, 3.0, limit=10)


def test_within_budget_excludes_a_column_and_falls_back_to_the_cheapest():
    costs = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, 5.0]], dtype=torch.float64)
    table = CostTable("flops", 10.0, {"c": costs}, [], [])
    probs = {"c": torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.1, 0.4]])}
    assert within_budget(probs, table, 100.0, exclude=0)["c"].argmax(dim=1).tolist() == [1, 2]
    assert within_budget(probs, table, 15.0, exclude=0)["c"].argmax(dim=1).tolist() == [1, 1]  # 1 + 5 > 5
    assert within_budget(probs, table, 15.0)["c"].argmax(dim=1).tolist() == [0, 0]  # none allowed: 0.6 * 0.5
    assert within_budget(probs, table, 5.0)["c"].argmax(dim=1).tolist() == [0, 0]  # nothing fits: the cheapest


def test_budget_search_derives_the_most_probable_cell_within_the_budget(tmp_path):
    """Every epoch's cell is within_budget's on that epoch's probabilities (none excluded, the
    config's rule), and fits the budget."""
    run_dir = tmp_path / "run"
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    budget = table.fixed + 1.5 * float(table.costs["normal"].max())  # one 3x3 conv and some 1x1
    cost = ["search.cost.form=budget", f"search.cost.budget={budget}", "search.cost.weight=1", "search.epochs=3"]
    assert main(["--out", str(run_dir), "--quiet", *[x for s in TINY_NB201 + cost for x in ("--set", s)]]) == 0
    probs = [json.loads(line) for line in (run_dir / "arch_probs.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m, p in zip(metrics, probs):
        pn = torch.tensor(p["probs"]["normal"] if "probs" in p else p["normal"])
        want = within_budget({"normal": pn}, table, budget, exclude=0)["normal"].argmax(dim=1).tolist()
        assert m["genotype"] == str(net.genotype(scores={"normal": F.one_hot(torch.tensor(want), 5).float()}))
        assert m["derived_cost"] <= budget


def test_inspect_budget_derives_the_most_probable_cell_that_fits(tmp_path, capsys, monkeypatch):
    """``inspect RUN --budget``: from a search without a cost term, the cell within_budget picks on
    its last probabilities; a budget above the argmax's cost gives the argmax; bad uses are refused."""
    from tests.cli_util import run_cli
    from tests.test_search import TINY_DARTS

    run_dir = tmp_path / "run"
    assert main(["--out", str(run_dir), "--quiet", *[x for s in TINY_NB201 for x in ("--set", s)]]) == 0
    capsys.readouterr()
    report = load_report(run_dir)  # no cost term: no cost history in inspect
    assert report["cost"] is None and "per epoch, expected / derived" not in format_text(report)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    last = json.loads((run_dir / "arch_probs.jsonl").read_text().splitlines()[-1])
    probs = torch.tensor(last["probs"]["normal"], dtype=torch.float64)
    argmax = net.genotype(scores={"normal": probs})
    top = derived_cost(net, table, argmax, (3, 16, 16))
    for budget in (table.fixed + 0.5 * float(table.costs["normal"].max()), 2 * top):
        code, out, _ = run_cli(["inspect", str(run_dir), "--budget", str(budget), "--json"], capsys)
        assert code == 0
        w = json.loads(out)["within_budget"]
        want = net.genotype(scores=within_budget({"normal": probs}, table, budget, exclude=0))
        assert w["arch"] == str(want) and w["cost"] == derived_cost(net, table, want, (3, 16, 16)) <= budget
        assert w["argmax_cost"] == top
    assert w["arch"] == str(argmax)  # room for the argmax: the argmax
    code, out, _ = run_cli(["inspect", str(run_dir), "--budget", "1e9"], capsys)
    assert code == 0 and f"most probable cell within flops 1e+09: {argmax}" in out
    code, _, err = run_cli(["inspect", str(run_dir), "--budget", "0"], capsys)
    assert code == 2 and "--budget must be a finite number > 0" in err
    # --tolerance: the window search.cost.tolerance derives in; near the dearest cell, so it excludes the argmax
    budget = table.fixed + float(table.costs["normal"].max(dim=1).values.sum())
    for form, tol in (("budget", 0.3), ("target", 0.05)):
        cap, floor = budget_window(budget, tol, form)
        code, out, _ = run_cli(
            ["inspect", str(run_dir), "--budget", str(budget), "--tolerance", str(tol), "--form", form, "--json"],
            capsys,
        )
        assert code == 0
        w = json.loads(out)["within_budget"]
        want = net.genotype(scores=within_budget({"normal": probs}, table, cap, exclude=0, floor=floor))
        assert w["arch"] == str(want) and w["window"] == [floor, cap]
        assert floor <= w["cost"] <= cap and top < floor  # without the window: the argmax, below it
    code, out, _ = run_cli(["inspect", str(run_dir), "--budget", str(budget), "--tolerance", "0.3"], capsys)
    assert code == 0 and f"most probable cell within flops [{budget * 0.7:g}, {budget:g}]" in out
    # below the cheapest cell: the cheapest, said so (in the JSON too)
    code, out, _ = run_cli(["inspect", str(run_dir), "--budget", str(table.fixed / 2)], capsys)
    assert code == 0 and "most probable cell within" not in out
    assert (
        f"no cell the search can still derive has flops within {table.fixed / 2:g}; the cheapest, on every edge" in out
    )
    code, out, _ = run_cli(["inspect", str(run_dir), "--budget", str(table.fixed / 2), "--json"], capsys)
    assert json.loads(out)["within_budget"]["fits"] is False
    for args, message in (
        (["--tolerance", "0.1"], "--tolerance applies to --budget's derivation; give --budget too"),
        (["--metric", "params"], "--metric applies to --budget's derivation; give --budget too"),
        (["--budget", "1e6", "--form", "target"], "--form chooses the side of --tolerance's window"),
        (["--budget", "inf"], "--budget must be a finite number > 0"),
        (["--budget", "1e6", "--tolerance", "1"], "--tolerance must be in (0, 1)"),
    ):
        code, _, err = run_cli(["inspect", str(run_dir), *args], capsys)
        assert code == 2 and message in err and "Traceback" not in err
    darts_dir = tmp_path / "darts"
    assert main(["--out", str(darts_dir), "--quiet", *[x for s in TINY_DARTS for x in ("--set", s)]]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["inspect", str(darts_dir), "--budget", "1e6"], capsys)
    assert code == 2 and "keep one op per edge" in err and "Traceback" not in err
    code, _, err = run_cli(["inspect", str(darts_dir), "--benchmark", str(FIXTURE)], capsys)
    assert code == 2 and "--benchmark looks up NAS-Bench-201 cells; this run searched the darts space" in err
    # The budget's cell gets the figures of --benchmark, as the run's own cell does.
    from nas import report as report_module

    given = []
    monkeypatch.setattr(report_module, "cell_report", lambda geno, bench, epochs: given.append(bench) or {})
    bench = object()
    (w,) = report_module.within_budget_cells(run_dir, [1e9], benchmark=bench)
    assert given == [bench] and w["benchmark"] == {}


@pytest.mark.parametrize(
    "sets, message",
    [
        (["search.cost.metric=energy"], "unknown search.cost.metric 'energy'"),
        (["search.cost.form=exp"], "unknown search.cost.form 'exp'"),
        (["search.cost.weight=-1"], "search.cost.weight must be"),
        (["search.cost.weight=1", "search.cost.form=budget"], "form=budget needs search.cost.budget"),
        (["search.cost.weight=1", "search.cost.form=target"], "form=target needs search.cost.budget"),
        (["search.cost.weight=1", "search.cost.metric=latency"], "needs search.cost.table"),
        (["search.cost.weight=1", "search.cost.reference=0.5"], "needs reference > 1"),
        (["search.cost.budget=0"], "search.cost.budget must be a finite number > 0"),
        (["search.cost.step=sgd"], "unknown search.cost.step 'sgd'"),
        (["search.cost.step=direct"], "search.cost.step=direct steps an additive term"),
        (["search.cost.tolerance=1.5"], "search.cost.tolerance must be in"),
        (["search.cost.weight=1", "search.cost.tolerance=0.1"], "applies to the budget and target forms"),
        (
            ["search.cost.weight=1", "search.cost.budget=1e6"],
            "budget is read by the budget and target forms, not mul_log",
        ),
    ],
)
def test_cost_config_is_checked(sets, message):
    cfg = load_config(None, sets)
    with pytest.raises(nas.UserError, match=message) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("form", ["mul_log", "add_linear"])
def test_arch_step_over_several_paths_takes_the_cost_term(form):
    """gdas with search.arch.paths=2: mul_log scales each part's loss, add_linear adds its term once."""
    torch.manual_seed(0)
    net = toy_net("gdas")
    penalty = CostPenalty(net, cost_table(net, "flops", (8,)), form=form, weight=1.0)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)
    Searcher(net, w_opt, a_opt, epochs=1, cost=penalty, arch_paths=2).arch_step(
        torch.randn(8, 8), torch.randint(0, 3, (8,))
    )
    grad = net.arch["choices"].grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_custom_model_search_logs_its_costs(tmp_path):
    sets = [
        "data.num_train=128",
        "data.num_test=32",
        "data.image_size=16",
        "search.batch_size=16",
        "search.steps_per_epoch=2",
        "search.epochs=2",
        "search.prune=off",
        "run.device=cpu",
        "supernet.model=tests.choice_models:merge_net",
        "search.cost.metric=params",
        "search.cost.form=add_linear",
        "search.cost.weight=1",
    ]
    run_dir = tmp_path / "run"
    assert main(["--out", str(run_dir), "--quiet", *[x for s in sets for x in ("--set", s)]]) == 0
    m = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert m["cost_metric"] == "params" and m["expected_cost"] > 0 and m["derived_cost"] > 0
    from tests.choice_models import merge_net

    arch = json.loads((run_dir / "architecture.json").read_text())
    arch = arch.get("choices", arch)
    assert m["derived_cost"] == count_parameters(merge_net(arch=arch))
    report = load_report(run_dir)  # a custom model's report carries the cost history too
    assert report["cost"]["per_epoch"][-1] == {
        "epoch": m["epoch"],
        "expected": m["expected_cost"],
        "derived": m["derived_cost"],
    }
    assert "params per epoch, expected / derived" in format_text(report)


def test_the_docstring_examples_run():
    import doctest

    import nas.cost
    import nas.flops

    for module in (nas.cost, nas.flops):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("form", ["budget", "target"])
def test_budget_search_prunes_down_to_the_most_probable_cell_within_the_budget(tmp_path, form):
    """With pruning, no event removes an op of within_budget's cell on the probabilities it read,
    so the last event leaves a cell that fits. A near-zero weight leaves the logits free to prefer
    convolutions (this seed's most probable ops keep four 1x1 convolutions); the budget has room
    for one."""
    run_dir = tmp_path / "run"
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    conv1x1 = float(table.costs["normal"][0, nas.NB201_OPS.index("nor_conv_1x1")])
    budget = table.fixed + conv1x1
    sets = [f"search.cost.form={form}", f"search.cost.budget={budget}", "search.cost.weight=1e-9"]
    sets += ["search.epochs=6", "search.warmup_epochs=1", "search.prune=probability", "search.arch.lr=0.05"]
    assert main(["--out", str(run_dir), "--quiet", *[x for s in TINY_NB201 + sets for x in ("--set", s)]]) == 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    probs = [json.loads(line) for line in (run_dir / "arch_probs.jsonl").read_text().splitlines()]
    events = [(m["pruned"], probs[i - 1]) for i, m in enumerate(metrics) if "pruned" in m]
    events += [
        (m["pruned_after"], {"normal": m["probs_before_pruning"]["normal"]}) for m in metrics if "pruned_after" in m
    ]
    assert sum(len(removed["normal"]) for removed, _ in events) == len(nas.NB201_OPS) - 1  # down to one op
    for removed, p in events:
        pn = torch.tensor(p["probs"]["normal"] if "probs" in p else p["normal"])
        keep = within_budget({"normal": pn}, table, budget, exclude=0)["normal"].argmax(dim=1).tolist()
        for ops in removed["normal"]:  # the event's removals: one op name (or "") per edge
            assert all(op != nas.NB201_OPS[k] for op, k in zip(ops, keep)), (ops, keep)
    assert metrics[-1]["ops_left"] == 1 and metrics[-1]["derived_cost"] <= budget
    # inspect's per-epoch table shows the cells the run derived, which here are not the argmax
    report = load_report(run_dir)
    derived = [[op for op, _ in nas.Genotype.parse(m["genotype"]).normal] for m in metrics]
    assert [rec["normal"] for rec in report["chosen_per_epoch"]] == derived
    argmax = [[nas.NB201_OPS[1:][k] for k in torch.tensor(p["probs"]["normal"])[:, 1:].argmax(1)] for p in probs]
    assert argmax != derived


@pytest.mark.parametrize("derive_none", [True, False])
def test_expected_cost_is_over_the_candidates_the_rule_can_derive(derive_none):
    """Under DARTS's rule (none never derives) E is over the other ops, renormalised: a rising none
    moves neither E nor gets a gradient from it. Where none may win, it counts at its probability."""
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=derive_none)
    table = cost_table(net, "flops", (3, 16, 16))
    none = net.ops.index("none")
    with torch.no_grad():
        net.arch["normal"].normal_()
    before = expected_cost(net, table)
    logits = net.arch["normal"].detach().double()
    p = torch.softmax(logits, dim=1) if derive_none else torch.softmax(logits[:, 1:], dim=1)
    by_hand = table.fixed + (p * (table.costs["normal"] if derive_none else table.costs["normal"][:, 1:])).sum()
    assert before.item() == pytest.approx(by_hand.item(), rel=1e-6)
    before.backward()
    grad = net.arch["normal"].grad
    assert (grad[:, none].abs().max() > 0) == derive_none
    with torch.no_grad():
        net.arch["normal"][:, none] += 5.0  # none rises on every edge
    after = expected_cost(net, table).item()
    if derive_none:  # the ops' share of E mostly gone
        assert after - table.fixed < 0.25 * (before.item() - table.fixed)
    else:
        assert after == pytest.approx(before.item(), rel=1e-6)


def test_derivable_logits_keeps_none_where_it_is_the_only_candidate_left():
    inf = float("-inf")
    logits = torch.tensor([[0.5, 1.0, inf], [0.5, inf, inf]])
    out = derivable_logits(logits, exclude=0)
    assert out[0].tolist() == [inf, 1.0, inf] and out[1].tolist() == [0.5, inf, inf]
    assert derivable_logits(logits, exclude=None) is logits


def test_tolerance_is_the_floor_of_every_budget_derivation(tmp_path, monkeypatch):
    """search.cost.tolerance reaches nas.cost.within_budget as the window budget * (1 -+ tolerance)
    of the target form, on every derivation and pruning event, and the derived cells land in it."""
    import nas.search

    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs.get("floor"), args[2]))
        return within_budget(*args, **kwargs)

    monkeypatch.setattr(nas.search, "within_budget", spy)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)
    table = cost_table(net, "flops", (3, 16, 16))
    conv1x1 = float(table.costs["normal"][0, nas.NB201_OPS.index("nor_conv_1x1")])
    budget = table.fixed + 2 * conv1x1
    tolerance = 0.5 * conv1x1 / budget  # the window: two 1x1 convolutions, nothing else costly
    sets = ["search.cost.form=target", f"search.cost.budget={budget}", "search.cost.weight=1"]
    sets += [f"search.cost.tolerance={tolerance}", "search.epochs=4", "search.prune=probability"]
    run_dir = tmp_path / "run"
    assert main(["--out", str(run_dir), "--quiet", *[x for s in TINY_NB201 + sets for x in ("--set", s)]]) == 0
    assert len(seen) >= 4 and all(f == pytest.approx(budget * (1 - tolerance)) for f, _ in seen)
    assert all(cap == pytest.approx(budget * (1 + tolerance)) for _, cap in seen)  # target: either side
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        assert budget * (1 - tolerance) <= json.loads(line)["derived_cost"] <= budget * (1 + tolerance)


def test_span_is_the_cheapest_and_dearest_network_of_the_alive_candidates():
    """Padding (a label with fewer candidates) and pruned candidates are not alive; the excluded
    column (none under DARTS's rule) counts only where a row has nothing else left."""
    costs = torch.tensor([[1.0, 5.0, 9.0], [0.5, 2.0, 0.0], [3.0, 7.0, 8.0]], dtype=torch.float64)
    table = CostTable("flops", 10.0, {"c": costs}, [], [])
    alive = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    assert table.span({"c": alive}) == (10.0 + 1.0 + 0.5 + 3.0, 10.0 + 9.0 + 2.0 + 3.0)
    assert table.span({"c": alive}, exclude=0) == (10.0 + 5.0 + 2.0 + 3.0, 10.0 + 9.0 + 2.0 + 3.0)
