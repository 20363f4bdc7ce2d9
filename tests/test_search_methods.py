"""Search options beyond plain GDAS: progressive pruning and beta-decay regularisation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.cli import main
from nas.config import load_config
from nas.genotype import Genotype
from nas.regularisers import beta_decay_term
from nas.regularisers import linear_ramp as beta_decay_weight
from nas.report import format_text, load_report
from nas.schedule import ops_to_keep, prune_events, search_epochs
from nas.search import run_search
from nas.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "data.num_train=256",
    "data.num_test=64",
    "data.image_size=16",
    "supernet.C=4",
    "supernet.N=1",
    "search.batch_size=32",
    "search.steps_per_epoch=3",
    "run.device=cpu",
]

TINY_DARTS_SPACE = TINY + [
    "supernet.space=darts",
    "supernet.N=3",
    "search.warmup_epochs=0",
    # Measuring by loss runs one forward per (edge, op) and batch: keep those small.
    "search.prune_batches=1",
    "search.batch_size=8",
]


def quiet(_msg: str) -> None:
    pass


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---- progressive pruning ---------------------------------------------------


def test_prune_events_spread_over_the_architecture_epochs():
    # The CPU config: 60 epochs, 20 warm-up, 5 ops -> 4 events, 8 decided epochs at the end.
    assert prune_events(60, 20, 5) == [28, 36, 44, 52]
    assert [ops_to_keep(e, [28, 36, 44, 52], 5) for e in (0, 27, 28, 35, 36, 51, 52, 59)] == [5, 5, 4, 4, 3, 2, 1, 1]
    assert prune_events(5, 0, 5) == [1, 2, 3, 4]
    assert prune_events(60, 40, 5) == [44, 48, 52, 56]  # search.prune_start=40: the last third


def test_prune_weakest_removes_exactly_the_least_probable_op_per_edge():
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    ops = list(net.ops)
    with torch.no_grad():
        a = net.arch["normal"]
        a.copy_(torch.arange(a.numel(), dtype=torch.float32).view_as(a).remainder(7) / 7)
    before = net.probabilities()["normal"]
    removed = net.prune_weakest()
    expected = [ops[int(before[e].argmin())] for e in range(before.shape[0])]
    assert removed["normal"] == expected
    after = net.probabilities()["normal"]
    for e, op in enumerate(expected):
        assert after[e, ops.index(op)] == 0.0
        assert int(net.alive("normal")[e].sum()) == len(ops) - 1
    assert torch.allclose(after.sum(-1), torch.ones(after.shape[0]))
    # The surviving ops keep their relative probabilities.
    keep = net.alive("normal")
    assert torch.allclose(
        after[keep].view(6, 4), (before[keep].view(6, 4) / before[keep].view(6, 4).sum(-1, keepdim=True))
    )


def test_none_excluded_rule_drops_none_at_the_final_choice():
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3, derive_none=False)
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][:, net.ops.index("none")] = 5.0  # none is by far the most probable
    for _ in range(len(net.ops) - 1):
        net.prune_weakest(keep_none=False)
    assert net.num_alive() == 1
    assert "none" not in [op for op, _ in net.genotype().normal]
    # With GDAS's rule none survives the same pruning.
    net2 = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    net2.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("alive_")}, strict=False)
    with torch.no_grad():
        net2.alive("normal").fill_(True)
    for _ in range(len(net2.ops) - 1):
        net2.prune_weakest(keep_none=True)
    assert [op for op, _ in net2.genotype().normal] == ["none"] * 6


def test_pruned_ops_are_never_sampled_and_get_no_gradient():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    net.prune_weakest()
    net.prune_weakest()
    alive = net.alive("normal").clone()
    x = torch.randn(2, 3, 8, 8)
    for _ in range(50):
        net(x)
        chosen = [net.ops.index(op) for op in net.sampled_architecture()["normal"]]
        assert all(alive[e, k] for e, k in enumerate(chosen))
    net.zero_grad()
    net(x).sum().backward()
    grad = net.arch["normal"].grad
    assert torch.isfinite(grad).all()
    assert (grad[~alive] == 0).all()


def test_pruning_mask_travels_in_the_state_dict_and_old_checkpoints_load():
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    net.prune_weakest()
    state = net.state_dict()
    fresh = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.alive("normal"), net.alive("normal"))
    assert torch.equal(fresh.probabilities()["normal"], net.probabilities()["normal"])
    old = {k: v for k, v in state.items() if not k.startswith("alive_")}  # a checkpoint from before pruning
    fresh.load_state_dict(old)
    assert bool(fresh.alive("normal").all())


def test_prune_start_delays_the_events_to_the_last_epochs(tmp_path):
    late = ["search.epochs=11", "search.warmup_epochs=1", "search.prune=probability", "search.prune_start=6"]
    cfg = load_config(None, TINY + late + ["search.stop_when_decided=false"])
    run_search(cfg, tmp_path / "late", torch.device("cpu"), progress=False, log=quiet)
    metrics = lines(tmp_path / "late" / "metrics.jsonl")
    # prune_events(11, 6, 5) == [7, 8, 9, 10]: architecture steps from epoch 2, the first event after epoch 7
    assert [m["ops_left"] for m in metrics] == [5, 5, 5, 5, 5, 5, 5, 4, 3, 2, 1]
    assert metrics[1]["val_loss"] is not None and metrics[-1]["val_loss"] is None
    # Stopping once decided ends it at the last event, after epoch 10.
    assert search_epochs(load_config(None, TINY + late)) == 10


PRUNED = TINY + ["search.epochs=11", "search.warmup_epochs=1", "search.prune=probability"]


def test_pruned_search_ends_decided_and_resumes_exactly(tmp_path):
    cfg = load_config(None, PRUNED + ["search.stop_when_decided=false"])
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=quiet)
    assert full.epochs_done == 11 and full.finished
    metrics = lines(tmp_path / "full" / "metrics.jsonl")
    assert [m["ops_left"] for m in metrics] == [5, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert metrics[-1]["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[-1]["val_loss"] is None  # decided: no architecture step
    probs = lines(tmp_path / "full" / "arch_probs.jsonl")
    assert probs[-1]["probs"] == probs[-2]["probs"]  # the logits no longer move
    # Stopped in the middle of the pruning, then resumed: the same search.
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=4, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(resumed.genotype) == str(full.genotype)
    assert [m["train_loss"] for m in lines(tmp_path / "part" / "metrics.jsonl")] == [m["train_loss"] for m in metrics]


def test_a_snas_search_pruned_by_loss_resumes_exactly(tmp_path):
    """snas's soft weights depend on τ, and a pruning event measures before its epoch sets τ: a
    resumed run must measure at the τ the stopped one left, as the uninterrupted run does."""
    sets = PRUNED + ["supernet.mode=snas", "search.prune=loss", "search.prune_batches=1", "search.epochs=6"]
    cfg = load_config(None, sets + ["search.stop_when_decided=false"])
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=quiet)
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=2, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    full_lines, part_lines = lines(tmp_path / "full" / "metrics.jsonl"), lines(tmp_path / "part" / "metrics.jsonl")
    measured = [m["prune_losses"] for m in full_lines if "prune_losses" in m]
    assert len(measured) >= 2  # events after the stop as well as before it
    assert [m.get("prune_losses") for m in part_lines] == [m.get("prune_losses") for m in full_lines]
    assert [m["train_loss"] for m in part_lines] == [m["train_loss"] for m in full_lines]
    assert str(resumed.genotype) == str(full.genotype)
    # A finished run resumed derives again: at the τ it ended with, so the same cell it wrote.
    again = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(again.genotype) == str(full.genotype)


@pytest.mark.parametrize("epochs", [2, 3])
def test_a_run_too_short_for_its_events_still_ends_decided(tmp_path, epochs):
    """prune_events puts the last events of a short run on its last boundary; they run after the
    last epoch, so the cell is the pruning rule's, not the leftover logits'."""
    sets = TINY + [f"search.epochs={epochs}", "search.warmup_epochs=1", "search.prune=loss", "search.prune_batches=1"]
    cfg = load_config(None, sets)
    assert prune_events(epochs, 1, 5)[-1] == epochs == search_epochs(cfg)
    logged: list = []
    result = run_search(cfg, tmp_path / "r", torch.device("cpu"), progress=False, log=logged.append)
    metrics = lines(tmp_path / "r" / "metrics.jsonl")
    assert result.finished and len(metrics) == epochs
    assert metrics[-1]["ops_left"] == 1 and metrics[-1]["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert "pruned_after" in metrics[-1] and "prune_losses_after" in metrics[-1]
    assert any("decided after the last epoch" in line for line in logged)
    assert Genotype.from_json((tmp_path / "r" / "genotype.json").read_text()) == result.genotype


@pytest.mark.parametrize("rule", ["probability", "loss"])
def test_search_stops_once_decided_with_the_full_runs_genotype(tmp_path, rule):
    """The default (search.stop_when_decided) ends at the last pruning event, after epoch 9 of 11:
    the epochs it runs are the full run's, and so are the genotype and the last event's choice."""
    sets = PRUNED + [f"search.prune={rule}", "search.prune_batches=2"]
    full_cfg = load_config(None, sets + ["search.stop_when_decided=false"])
    full = run_search(full_cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=quiet)
    cfg = load_config(None, sets)
    assert search_epochs(cfg) == 9 and search_epochs(full_cfg) == 11
    logged: list = []
    short = run_search(cfg, tmp_path / "short", torch.device("cpu"), progress=False, log=logged.append)
    assert short.epochs_done == 9 and short.finished
    assert str(short.genotype) == str(full.genotype)
    assert Genotype.from_json((tmp_path / "short" / "genotype.json").read_text()) == short.genotype
    metrics, full_metrics = lines(tmp_path / "short" / "metrics.jsonl"), lines(tmp_path / "full" / "metrics.jsonl")
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in full_metrics[:9]]
    last = metrics[-1]
    assert last["ops_left"] == 1 and last["entropy"] == 0.0 and last["val_loss"] is not None
    # The last event is logged on the line of the epoch it followed, with what it read.
    assert "pruned" not in last and last["pruned_after"] == full_metrics[9]["pruned"]
    assert (rule == "loss") == ("prune_losses_after" in last)
    if rule == "loss":
        assert last["prune_losses_after"] == full_metrics[9]["prune_losses"]
    probs = lines(tmp_path / "full" / "arch_probs.jsonl")
    assert last["probs_before_pruning"] == probs[8]["probs"]
    assert any("decided after epoch 9" in line and "search.stop_when_decided=false" in line for line in logged)
    # Resuming a search that ended decided finds nothing to do.
    again = run_search(cfg, tmp_path / "short", torch.device("cpu"), resume=True, progress=False, log=logged.append)
    assert again.epochs_done == 9 and again.finished and str(again.genotype) == str(full.genotype)
    assert len(lines(tmp_path / "short" / "metrics.jsonl")) == 9
    assert "had already finished its 9 epochs" in logged[-1]
    # inspect reads it as finished, decided before the scheduled end.
    report = load_report(tmp_path / "short")
    assert report["finished"] and (report["epochs_done"], report["epochs_total"], report["epochs_scheduled"]) == (
        9,
        9,
        11,
    )
    assert "epoch 9/9 (decided at the last pruning event, of 11 scheduled)" in format_text(report)


@pytest.mark.parametrize(
    "rule, paths", [("probability", "gumbel"), ("loss", "gumbel"), ("removal", "gumbel"), ("probability", "uniform")]
)
def test_pruning_runs_on_the_darts_space(tmp_path, rule, paths):
    # Four of the space's ops: measuring every (edge, op) at each of 7 events costs minutes.
    ops = "supernet.ops=[none,skip_connect,sep_conv_3x3,max_pool_3x3]"
    cfg = load_config(
        None, TINY_DARTS_SPACE + [ops, "search.epochs=5", f"search.prune={rule}", f"search.weight_paths={paths}"]
    )
    result = run_search(cfg, tmp_path / "d", torch.device("cpu"), progress=False, log=quiet)
    metrics = lines(tmp_path / "d" / "metrics.jsonl")
    assert metrics[-1]["ops_left"] == 1
    for _cell, edges in result.genotype.cells().items():
        assert all(op != "none" for op, _ in edges)


# ---- pruning by measured validation loss -------------------------------------------


def _decided_but_edge0(net):
    """Leave edge 0 of the normal cell with every op; decide every other edge (op index 3)."""
    alive = net.alive("normal")
    alive[1:] = False
    alive[1:, 3] = True
    net._alive_cache = None


def test_edge_op_losses_measure_the_restricted_network():
    from nas.selection import edge_op_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    _decided_but_edge0(net)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    losses = edge_op_losses(net, batches)["normal"]
    assert torch.isinf(losses[1:]).all()  # decided edges are not measured
    net.train()
    for k, op in enumerate(net.ops):
        arch = [k] + [3] * 5
        with torch.no_grad(), net.forced({"normal": arch}):
            buffers = {n: b.clone() for n, b in net.named_buffers()}
            expected = sum(float(F.cross_entropy(net(x), y, reduction="sum")) for x, y in batches) / 16
            for n, b in net.named_buffers():
                b.copy_(buffers[n])
        assert losses[0, k].item() == pytest.approx(expected, rel=1e-5), op


def test_edge_op_losses_leave_the_search_untouched_and_repeat_exactly():
    from nas.selection import edge_op_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    first = edge_op_losses(net, batches, seed=3)["normal"]
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(edge_op_losses(net, batches, seed=3)["normal"], first)  # common random numbers
    assert torch.isfinite(first).all()


def test_loss_pruning_removes_the_op_with_the_highest_loss():
    from nas.selection import edge_op_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    losses = edge_op_losses(net, batches)["normal"]
    removed = net.prune_weakest(scores={"normal": -losses})["normal"]
    assert removed == [net.ops[int(losses[e].argmax())] for e in range(6)]


def test_loss_pruned_search_runs_and_records_what_it_pruned(tmp_path):
    cfg = load_config(
        None, TINY + ["search.epochs=6", "search.warmup_epochs=1", "search.prune=loss", "search.prune_batches=2"]
    )
    result = run_search(cfg, tmp_path / "l", torch.device("cpu"), progress=False, log=quiet)
    metrics = lines(tmp_path / "l" / "metrics.jsonl")
    assert metrics[-1]["ops_left"] == 1
    events = [ops for m in metrics for key in ("pruned", "pruned_after") for ops in m.get(key, {}).get("normal", [])]
    assert len(events) == 4 and all(len(ops) == 6 for ops in events)  # four events, one op per edge each
    kept = [op for op, _ in result.genotype.normal]
    for e, op in enumerate(kept):
        assert op not in [ops[e] for ops in events]


def test_removal_pruning_removes_the_op_the_supernet_needs_least():
    from nas.selection import edge_op_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3, mode="darts")
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    losses = edge_op_losses(net, batches, perturb="remove")["normal"]
    removed = net.prune_weakest(scores={"normal": losses})["normal"]
    assert removed == [net.ops[int(losses[e].argmin())] for e in range(6)]


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_a_soft_supernet_never_runs_a_pruned_op_and_computes_what_its_weights_say(space):
    torch.manual_seed(0)
    net = nas.build_supernet(space, C=4, N=1 if space == "nb201" else 3, num_classes=3, mode="darts")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for a in net.arch.values():
            a.normal_()
    drop = net.ops.index("nor_conv_3x3" if space == "nb201" else "sep_conv_3x3")
    calls = []
    mixed_edges = [m for m in net.modules() if isinstance(m, nas.OpChoice)]  # every cell's edges
    name = net.ops[drop]
    hooks = [edge.candidates[name].register_forward_hook(lambda *_: calls.append(1)) for edge in mixed_edges]
    assert hooks, "found no mixed edges to watch"
    net.eval()
    with torch.no_grad():
        for cell in net.arch:
            net.alive(cell)[:, drop] = False  # pruned: weight exactly 0 on every edge
        net._alive_cache = None
        out = net(x)
        assert not calls  # the pruned op never ran
        # The same weights without the mask (the op's weight underflows to exactly 0): it runs, same output.
        for cell in net.arch:
            net.alive(cell)[:] = True
            net.arch[cell][:, drop] = -1e4
        net._alive_cache = None
        reference = net(x)
    assert calls
    torch.testing.assert_close(out, reference)


def test_a_darts_mode_search_pruned_by_removal_ends_decided_and_logs_its_measurements(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            "supernet.mode=darts",
            "search.epochs=6",
            "search.warmup_epochs=1",
            "search.prune=removal",
            "search.prune_batches=2",
        ],
    )
    result = run_search(cfg, tmp_path / "r", torch.device("cpu"), progress=False, log=quiet)
    metrics = lines(tmp_path / "r" / "metrics.jsonl")
    assert metrics[-1]["ops_left"] == 1
    logged = [m[k] for m in metrics for k in ("prune_removal_losses", "prune_removal_losses_after") if k in m]
    assert len(logged) == 4 and not any("prune_losses" in m for m in metrics)  # one per event
    events = [ops for m in metrics for key in ("pruned", "pruned_after") for ops in m.get(key, {}).get("normal", [])]
    assert len(events) == 4
    last = logged[-1]["normal"]
    names = lines(tmp_path / "r" / "arch_probs.jsonl")[-1]["ops"]
    for e, (op, _) in enumerate(result.genotype.normal):
        assert op not in [ops[e] for ops in events]
        # The last event kept, of the two ops left, the one whose removal cost more.
        left = [k for k, v in enumerate(last[e]) if v is not None]
        assert len(left) == 2
        assert op == names[max(left, key=lambda k: last[e][k])]


# ---- uniform weight paths -------------------------------------------------------


def _weight_step_counts(uniform: bool, steps: int = 400) -> torch.Tensor:
    """How often each op of the normal cell ran in ``steps`` weight steps, per edge, with logits
    that put almost all the probability on op 1 and one op pruned on every edge."""
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][:, 1] = 6.0  # p(op 1) ~ 0.99
        net.arch["normal"][:, 4] = -6.0
    net.prune_weakest()  # op 4 goes on every edge
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)
    searcher = Searcher(net, w_opt, a_opt, epochs=1, uniform_weight_paths=uniform)
    searcher.start_epoch(0)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
    counts = torch.zeros(6, 5)
    for _ in range(steps):
        searcher.weight_step(x, y)
        for e, op in enumerate(net.sampled_architecture()["normal"]):
            counts[e, net.ops.index(op)] += 1
    return counts


def test_uniform_weight_paths_train_every_alive_op_equally_often():
    counts = _weight_step_counts(uniform=True)
    assert (counts[:, 4] == 0).all()  # a pruned op is never drawn
    share = counts[:, :4] / counts.sum(dim=1, keepdim=True)
    # 400 draws per edge from 4 ops: the share of each has std ~0.022; 0.25 +- 0.08 is > 3.5 std.
    assert ((share - 0.25).abs() < 0.08).all(), share
    gumbel = _weight_step_counts(uniform=False)  # the same logits, sampled as GDAS does
    assert (gumbel[:, 1] / gumbel.sum(dim=1) > 0.95).all()


def test_uniform_weight_paths_leave_the_architecture_step_sampling_from_the_logits():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][:, 2] = 8.0
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)
    searcher = Searcher(net, w_opt, a_opt, epochs=1, uniform_weight_paths=True)
    searcher.start_epoch(0)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))
    for _ in range(20):
        searcher.arch_step(x, y)
        assert net.sampled_architecture()["normal"] == [net.ops[2]] * 6  # p ~ 0.9987 per edge
    assert not net._uniform_paths  # the weight step's context does not leak


def test_search_with_uniform_weight_paths_runs_and_is_recorded(tmp_path):
    args = ["--out", str(tmp_path / "r"), "--quiet"] + [
        x
        for s in TINY
        + ["search.epochs=7", "search.warmup_epochs=1", "search.weight_paths=uniform"]
        + ["search.prune=probability"]
        for x in ("--set", s)
    ]
    assert main(args) == 0
    rows = lines(tmp_path / "r" / "metrics.jsonl")
    assert rows[-1]["entropy"] == 0 and rows[-1]["ops_left"] == 1
    assert load_config(tmp_path / "r" / "config.yaml").search.weight_paths == "uniform"


# ---- window weight paths --------------------------------------------------------


def _tiny_window(overrides):
    """TINY's nb201 supernet with a FLOPs target whose ±5% window holds several none-free cells:
    the supernet, its cost table, the budget, the config with ``overrides``, and the window's cells
    (op index per edge) found by brute force."""
    from nas.cost import cost_table

    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=5, derive_none=False)  # TINY's data
    table = cost_table(net, "flops", (3, 16, 16))
    budget = table.fixed + 1.5 * float(table.costs["normal"].max())
    cfg = load_config(
        None,
        TINY
        + ["supernet.mode=gdas", "supernet.derive_none=false", "search.cost.form=target", "search.cost.weight=1"]
        + [f"search.cost.budget={budget}", "search.cost.tolerance=0.05", *overrides],
    )
    window = set()
    for choice in itertools.product([k for k, o in enumerate(net.ops) if o != "none"], repeat=6):
        flops = table.fixed + sum(float(table.costs["normal"][e, k]) for e, k in enumerate(choice))
        if 0.95 * budget <= flops <= 1.05 * budget:
            window.add(choice)
    return net, table, budget, cfg, window


def _window_task(extra=()):
    """A search task on :func:`_tiny_window` with ``search.weight_paths: window``, and the window's cells."""
    from nas.search import SearchTask

    _, _, _, cfg, window = _tiny_window(["search.weight_paths=window", *extra])
    return SearchTask(cfg, torch.device("cpu"), log=quiet), window


def test_window_weight_paths_train_every_window_cell_and_nothing_else():
    """Each weight step forces one cell drawn uniformly from the budget's window: every cell it
    trains costs within the window, each window cell is drawn about equally often, and after a
    pruning event no cell with a pruned op is drawn."""
    torch.manual_seed(0)
    task, window = _window_task()
    net, searcher = task.net, task.searcher
    assert 3 <= len(window) <= 100 and len(task.weight_window) == len(window)
    task.start_epoch(0)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 5, (2,))
    for _ in range(20):  # the forward the weight step runs is a window cell
        searcher.weight_step(x, y)
        assert tuple(net.ops.index(o) for o in net.sampled_architecture()["normal"]) in window
    counts = {cell: 0 for cell in window}
    for _ in range(40 * len(window)):  # the draws themselves (what each weight step forces)
        counts[tuple(task._window_cell()["normal"])] += 1
    # 40 expected per cell: a count's std is ~6.3; 40 +- 26 is > 4 std.
    assert all(14 <= n <= 66 for n in counts.values()), counts
    # A pruning event: op 3 (nor_conv_3x3) goes from edge 0; the window's cells with it there do too.
    with torch.no_grad():
        net.arch["normal"][0, 3] = -10.0
    net.prune_weakest(keep_none=False)
    task.start_epoch(1)  # each epoch starts from the live cells
    live = {c for c in window if net.alive("normal")[torch.arange(6), torch.tensor(c)].all()}
    assert 0 < len(live) < len(window)
    assert {tuple(task._window_cell()["normal"]) for _ in range(20 * len(live))} == live
    for _ in range(10):
        searcher.weight_step(x, y)
        assert tuple(net.ops.index(o) for o in net.sampled_architecture()["normal"]) in live


def test_window_weight_paths_leave_the_architecture_step_to_its_estimator():
    """The window governs the weight step only: the architecture step still samples from the logits."""
    torch.manual_seed(0)
    task, window = _window_task()
    net = task.net
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][:, 4] = 9.0  # avg_pool everywhere: far below the window's FLOPs
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 5, (2,))
    for _ in range(10):
        task.searcher.arch_step(x, y)
        assert net.sampled_architecture()["normal"] == ["avg_pool_3x3"] * 6
    assert net._forced is None  # the weight step's forced cell does not leak


def test_a_search_with_window_weight_paths_resumes_exactly(tmp_path):
    """Pruned by probability, stopped and resumed: the same draws, the same weights, the same cell."""
    task, _ = _window_task(["search.epochs=6", "search.warmup_epochs=1", "search.prune=probability"])
    cfg = task.cfg
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=quiet)
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=3, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(resumed.genotype) == str(full.genotype)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = lines(tmp_path / "full" / "metrics.jsonl"), lines(tmp_path / "part" / "metrics.jsonl")
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    assert ma[-1]["ops_left"] == 1


def test_the_shipped_budget_recipe_resumes_exactly(tmp_path):
    """configs/nb201_cifar10_cpu_budget.yaml's method (the target form stepped directly, the window's
    cell protected through pruning, ``local`` architecture steps, uniform weight paths), on TINY's
    data: stopped in the middle of the pruning and resumed, it is the same search."""
    _, _, budget, _, _ = _tiny_window([])
    sets = TINY + ["data.name=synthetic", "data.train_subset=null", "supernet.N=1", "supernet.C=4"]
    sets += ["search.epochs=7", "search.warmup_epochs=1", "search.prune=probability", "search.stop_when_decided=false"]
    cfg = load_config(ROOT / "configs" / "nb201_cifar10_cpu_budget.yaml", sets + [f"search.cost.budget={budget}"])
    s = cfg.search
    assert (s.estimator, s.weight_paths, s.cost.form, s.cost.step) == ("local", "uniform", "target", "direct")
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=quiet)
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=3, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(resumed.genotype) == str(full.genotype)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ma, mb = lines(tmp_path / "full" / "metrics.jsonl"), lines(tmp_path / "part" / "metrics.jsonl")
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    assert [m["expected_cost"] for m in ma] == [m["expected_cost"] for m in mb]
    assert [m["ops_left"] for m in ma][-1] == 1 and ma[2]["ops_left"] > 1  # stopped before the cell was decided
    assert abs(ma[-1]["derived_cost"] - budget) <= 0.1 * budget  # the cell lies in the budget's window


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_the_shipped_budget_recipe_prunes_to_a_cell_in_the_window_on_each_device(device, tmp_path):
    """On CUDA the probabilities live on the GPU and the budget's cell on the host: each pruning
    event masks one by the other (a device mismatch there would stop the search at its first event)."""
    _, _, budget, _, _ = _tiny_window([])
    sets = TINY + ["data.name=synthetic", "data.train_subset=null", "supernet.N=1", "supernet.C=4"]
    sets += ["search.epochs=6", "search.warmup_epochs=1", "search.prune=probability", f"run.device={device}"]
    cfg = load_config(ROOT / "configs" / "nb201_cifar10_cpu_budget.yaml", sets + [f"search.cost.budget={budget}"])
    result = run_search(cfg, tmp_path / "r", torch.device(device), progress=False, log=quiet)
    metrics = lines(tmp_path / "r" / "metrics.jsonl")
    assert metrics[-1]["ops_left"] == 1 and len(metrics) <= 6
    assert abs(metrics[-1]["derived_cost"] - budget) <= 0.1 * budget
    assert metrics[-1]["genotype"] == str(result.genotype)


# ---- beta-decay ---------------------------------------------------------------


def test_beta_decay_gradient_is_lambda_softmax_over_edges():
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].normal_()
    net.zero_grad()
    (2.5 * beta_decay_term(net)).backward()
    a = net.arch["normal"]
    expected = 2.5 * torch.softmax(a.detach(), -1) / a.shape[0]
    assert torch.allclose(a.grad, expected, atol=1e-6)


def test_beta_decay_ramps_linearly_after_warm_up():
    assert [beta_decay_weight(e, 10, 2, 4.0) for e in (0, 1, 2, 5, 9)] == [0.0, 0.0, 0.5, 2.0, 4.0]
    assert beta_decay_weight(9, 10, 2, 0.0) == 0.0


def test_beta_decay_pulls_the_arch_step_toward_uniform():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))

    def spread(beta: float) -> float:
        torch.manual_seed(1)
        net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
        with torch.no_grad():
            net.arch["normal"].copy_(torch.linspace(-2, 2, 30).view(6, 5))
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
        a_opt = torch.optim.SGD(net.arch_parameters(), lr=1.0)
        searcher = Searcher(net, w_opt, a_opt, epochs=1, beta_decay_at=lambda epoch: beta)
        searcher.start_epoch(0)
        searcher.step((x, y), (x, y))
        return float(net.arch["normal"].detach().std())

    # Same noise and data: only the regulariser differs, and it shrinks the spread of the logits.
    assert spread(30.0) < spread(0.0)


@pytest.mark.parametrize("space, mode", [("nb201", "darts"), ("nb201", "gdas"), ("darts", "gdas")])
def test_beta_decay_search_runs_on_both_spaces_and_keeps_the_logits_closer_to_uniform(tmp_path, space, mode):
    """The CPU config's regulariser in a whole search, in gdas mode on the darts space too: its
    weight ramps as configured, and the same search without it ends with more spread logits."""
    extra = ["supernet.N=3", "search.batch_size=8"] if space == "darts" else []

    def search(beta: float, out: str) -> torch.Tensor:
        cfg = load_config(
            None,
            TINY
            + extra
            + [
                f"supernet.space={space}",
                f"supernet.mode={mode}",
                "search.epochs=4",
                "search.warmup_epochs=1",
                "search.arch.lr=0.05",
                f"search.arch.beta_decay={beta}",
            ],
        )
        result = run_search(cfg, tmp_path / out, torch.device("cpu"), progress=False, log=quiet)
        assert result.genotype.cells()  # a derived cell per cell type
        if beta:
            ramp = [row.get("beta_decay", 0.0) for row in lines(tmp_path / out / "metrics.jsonl")]
            assert ramp == pytest.approx([0.0, beta / 3, 2 * beta / 3, beta])
        state = torch.load(tmp_path / out / "checkpoint.pt", weights_only=True)
        logits = [v for k, v in state["model"].items() if k.startswith("arch.")]
        return torch.cat([(a - a.mean(-1, keepdim=True)).flatten() for a in logits])  # softmax ignores the mean

    spread_without = search(0.0, "plain").std()
    spread_with = search(200.0, "beta").std()
    assert spread_with < spread_without


# ---- derivation by removal (DARTS-PT's selection) ---------------------------


def _loss_in_train_mode(net, batches) -> float:
    """Mean cross-entropy with batch statistics, the BN buffers left as they were."""
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    net.train()
    with torch.no_grad():
        total = sum(float(F.cross_entropy(net(x), y, reduction="sum")) for x, y in batches)
    for n, b in net.named_buffers():
        b.copy_(buffers[n])
    return total / sum(len(y) for _, y in batches)


@pytest.mark.parametrize("mode", ["darts", "snas"])
def test_removal_losses_are_the_loss_without_the_op_the_rest_renormalised(mode):
    """Removing op k from edge e is the supernet with alpha[e, k] = -inf: weight 0 for k, the
    edge's other ops renormalised; every other edge as it was (snas: the same Gumbel noise)."""
    from nas.selection import edge_op_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode=mode, C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].normal_(0, 0.5)  # unequal weights, so renormalising matters
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    losses = edge_op_losses(net, batches, seed=5, perturb="remove")["normal"]
    assert torch.isfinite(losses).all()
    for e, k in [(0, 0), (0, 3), (2, 1), (5, 4)]:
        saved = net.arch["normal"].detach().clone()
        with torch.no_grad():
            net.arch["normal"][e, k] = float("-inf")
        expected = []
        for b, batch in enumerate(batches):
            torch.manual_seed(5 * 1_000_003 + b)
            expected.append(_loss_in_train_mode(net, [batch]) * len(batch[1]))
        with torch.no_grad():
            net.arch["normal"].copy_(saved)
        assert losses[e, k].item() == pytest.approx(sum(expected) / 16, rel=1e-5), (e, net.ops[k])
    # Keep and remove measure different networks; an unknown perturbation is an error.
    assert not torch.equal(edge_op_losses(net, batches, seed=5)["normal"], losses)
    with pytest.raises(ValueError, match="perturb must be"):
        edge_op_losses(net, batches, perturb="swap")


def test_removal_scores_pick_the_costliest_removal_and_respect_pruned_and_decided_edges():
    from nas.selection import removal_scores

    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    ops = list(net.ops)
    inf = float("inf")
    losses = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0, 1.5],  # none costs most, then nor_conv_3x3
            [1.0, 1.0, 4.0, 3.0, 2.0],
            [1.0, inf, 4.0, 3.0, 5.0],  # skip_connect pruned: never chosen
            [inf, inf, inf, inf, inf],  # decided on avg_pool_3x3
            [1.0, 2.0, 3.0, 4.0, 5.0],
            [1.0, 6.0, 3.0, 4.0, 5.0],
        ]
    )
    alive = net.alive("normal")
    alive[2, 1] = False
    alive[3] = False
    alive[3, ops.index("avg_pool_3x3")] = True
    net._alive_cache = None
    scores = removal_scores({"normal": losses}, net)["normal"]
    assert scores[2, 1] == -inf and scores[3].tolist() == [-inf, -inf, -inf, -inf, 0.0]
    net.derive_none = True  # GDAS's rule: none may win
    assert [op for op, _ in net.genotype(scores={"normal": scores}).normal] == [
        "none",
        "nor_conv_1x1",
        "avg_pool_3x3",
        "avg_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ]
    net.derive_none = False
    geno = net.genotype(scores={"normal": scores})
    assert [op for op, _ in geno.normal] == [
        "nor_conv_3x3",
        "nor_conv_1x1",
        "avg_pool_3x3",
        "avg_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ]
    assert geno.probs == {"normal": net.probabilities()["normal"].tolist()}  # the logits stay on record


def test_darts_space_genotype_ranks_edges_by_the_given_scores():
    """DARTS's rule on scores: per node the two incoming edges whose best op other than none
    scores highest (scores may be negative; none never counts)."""
    net = nas.build_supernet("darts", mode="darts", C=4, N=3, num_classes=3)
    ops = list(net.ops)
    none, sep = ops.index("none"), ops.index("sep_conv_3x3")
    scores = {}
    for cell in net.arch:
        t = torch.full(tuple(net.arch[cell].shape), -5.0)
        t[:, none] = 100.0  # ignored
        t[1, sep] = -1.0  # node 2: edges 0 and 1 (its only two)
        t[2 + 2, sep] = -0.5  # node 3 (edges 2-4): input 2 and input 0 win
        t[2 + 0, ops.index("max_pool_3x3")] = -2.0
        scores[cell] = t
    geno = net.genotype(scores=scores)
    assert geno.normal[2:4] == [("sep_conv_3x3", 2), ("max_pool_3x3", 0)]
    assert all(op != "none" for op, _ in geno.normal + geno.reduce)


def test_search_derives_by_removal_at_the_end_and_resumes_to_the_same_cell(tmp_path):
    """search.derive=removal: every epoch but the last derives from the logits; the last derives
    from the removal losses it records, and says so. Stopped and resumed, the run ends on the
    same cell; a finished run resumed returns it again."""
    cfg = load_config(
        None,
        TINY
        + [
            "supernet.mode=darts",
            "supernet.derive_none=false",
            "search.epochs=3",
            "search.derive=removal",
            "search.prune_batches=2",
        ],
    )
    out = []
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=out.append)
    metrics = lines(tmp_path / "full" / "metrics.jsonl")
    assert ["derived_by" in m for m in metrics] == [False, False, True]
    last = metrics[-1]
    ops = lines(tmp_path / "full" / "arch_probs.jsonl")[-1]["ops"]
    losses = last["removal_losses"]["normal"]
    expected = [
        max((k for k in range(len(ops)) if ops[k] != "none"), key=lambda k: losses[e][k]) for e in range(len(losses))
    ]
    assert [op for op, _ in full.genotype.normal] == [ops[k] for k in expected]
    assert Genotype.from_json((tmp_path / "full" / "genotype.json").read_text()) == full.genotype
    assert last["genotype"] == str(full.genotype) and "genotype_by_logits" in last
    assert any("derived by removal (search.derive: removal)" in line for line in out)
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=2, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(resumed.genotype) == str(full.genotype)
    assert lines(tmp_path / "part" / "metrics.jsonl")[-1]["removal_losses"] == last["removal_losses"]
    again = run_search(cfg, tmp_path / "full", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(again.genotype) == str(full.genotype)


def test_search_derives_the_window_cell_with_the_lowest_loss_and_resumes_to_it(tmp_path):
    """search.derive=window: the last epoch measures every none-free cell whose FLOPs lie in the
    budget's window on the fixed batches and reports the one with the lowest loss (the logged loss
    is that cell's, measured again on the final supernet); the earlier epochs derive by the logits
    within the budget. Stopped and resumed, the run ends on the same cell and the same losses."""
    from nas.cost import derived_cost
    from nas.search import SearchTask
    from nas.selection import architecture_losses

    net, table, budget, cfg, window = _tiny_window(
        ["search.epochs=3", "search.derive=window", "search.prune_batches=2"]
    )
    out = []
    full = run_search(cfg, tmp_path / "full", torch.device("cpu"), progress=False, log=out.append)
    metrics = lines(tmp_path / "full" / "metrics.jsonl")
    assert ["derived_by" in m for m in metrics] == [False, False, True]
    last = metrics[-1]
    assert last["derived_by"] == "window" and last["window_cells"] == len(window) > 1
    losses = [loss for _, loss in last["window_losses"]]
    assert losses == sorted(losses) and len(losses) == min(10, len(window))
    assert last["genotype"] == str(full.genotype) == last["window_losses"][0][0]
    assert 0.95 * budget <= derived_cost(net, table, full.genotype, (3, 16, 16)) <= 1.05 * budget
    assert any("derived by the window (search.derive: window)" in line for line in out)
    # The logged loss is the chosen cell's on the final supernet and the search's fixed batches.
    ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    task = SearchTask(cfg, torch.device("cpu"), log=quiet)
    task.load_state_dict(ckpt)
    forced = {"normal": task.net.choices_from_genotype(full.genotype)["normal"]}
    (again,) = architecture_losses(task.net, task.eval_batches, [forced], seed=cfg.run.seed)
    assert again == pytest.approx(losses[0], rel=1e-6)
    run_search(cfg, tmp_path / "part", torch.device("cpu"), stop_after=2, progress=False, log=quiet)
    resumed = run_search(cfg, tmp_path / "part", torch.device("cpu"), resume=True, progress=False, log=quiet)
    assert str(resumed.genotype) == str(full.genotype)
    assert lines(tmp_path / "part" / "metrics.jsonl")[-1]["window_losses"] == last["window_losses"]


def test_window_derivation_ranks_a_cell_whose_loss_is_not_finite_last(monkeypatch):
    """NaN compares false both ways: sorted plainly, a diverged cell could come first."""
    import nas.search
    from nas.search import SearchTask

    _, _, _, cfg, window = _tiny_window(["search.epochs=2", "search.derive=window", "search.prune_batches=1"])
    task = SearchTask(cfg, torch.device("cpu"), log=quiet)
    n = len(task.window_archs)
    assert n == len(window) > 2
    fake = [float("nan"), 3.0, float("inf")] + [5.0 + i for i in range(n - 3)]
    monkeypatch.setattr(nas.search, "architecture_losses", lambda net, batches, archs, seed: fake)
    geno, record = task.derive(final=True)
    expected = task.net.genotype(scores=task._one_hot(task.window_archs[1]))
    assert str(geno) == str(expected) and record["window_losses"][0] == [str(expected), 3.0]
    if n <= 10:  # the two that are not finite come last, logged as null (JSON has no NaN)
        assert [loss for _, loss in record["window_losses"][-2:]] == [None, None]


def test_a_window_whose_losses_are_all_not_finite_is_said_so(tmp_path, monkeypatch):
    import nas.search

    _, _, _, cfg, _ = _tiny_window(["search.epochs=2", "search.derive=window", "search.prune_batches=1"])
    monkeypatch.setattr(nas.search, "architecture_losses", lambda net, b, archs, seed: [float("nan")] * len(archs))
    out = []
    run_search(cfg, tmp_path / "r", torch.device("cpu"), progress=False, log=out.append)
    assert any("the lowest validation loss (not finite)" in line for line in out)
    assert lines(tmp_path / "r" / "metrics.jsonl")[-1]["window_losses"][0][1] is None


def test_architecture_losses_leave_the_search_untouched_and_match_a_forced_forward():
    from nas.selection import architecture_losses

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", C=4, N=1, num_classes=3)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(2)]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    archs = [{"normal": [3, 1, 2, 3, 4, 1]}, {"normal": [1] * 6}]
    losses = architecture_losses(net, batches, archs)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    net.train()
    for arch, loss in zip(archs, losses):
        with torch.no_grad(), net.forced(arch):
            expected = sum(float(F.cross_entropy(net(x), y, reduction="sum")) for x, y in batches) / 16
        net.load_state_dict(state)  # the forward moved the batch-norm statistics
        assert loss == pytest.approx(expected, rel=1e-5)
    assert losses[0] != losses[1]


def test_derive_by_removal_runs_on_the_darts_space_in_gdas_mode(tmp_path):
    """The same derivation on the darts space's two cell types, in gdas mode: both cells' removal
    losses are measured and logged, and the cell is DARTS's rule applied to them."""
    cfg = load_config(None, TINY_DARTS_SPACE + ["supernet.mode=gdas", "search.epochs=2", "search.derive=removal"])
    result = run_search(cfg, tmp_path / "d", torch.device("cpu"), progress=False, log=quiet)
    last = lines(tmp_path / "d" / "metrics.jsonl")[-1]
    assert last["derived_by"] == "removal" and set(last["removal_losses"]) == {"normal", "reduce"}
    net = nas.build_supernet("darts", mode="gdas", C=4, N=3, num_classes=10)
    scores = {
        cell: torch.tensor([[float("-inf") if v is None else v for v in row] for row in rows])
        for cell, rows in last["removal_losses"].items()
    }
    assert all(torch.isfinite(s).all() for s in scores.values())  # nothing pruned: every op measured
    assert result.genotype.cells() == net.genotype(scores=scores).cells()
    assert last["genotype"] == str(result.genotype) and "genotype_by_logits" in last


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["search.prune=maybe"], "choose one of: off, probability, loss, removal"),
        (["search.derive=vote"], "unknown search.derive 'vote'; choose one of: logits, removal, window"),
        (["search.derive=window"], "search.derive=window ranks the cells of the budget's window: it needs"),
        (
            ["search.derive=removal", "search.prune=probability", "search.epochs=6"],
            "search.derive=removal measures the final supernet's ops, but a pruned search ends with one op per edge",
        ),
        (["search.prune=loss", "search.prune_batches=0", "search.epochs=6"], "search.prune_batches must be > 0"),
        (["search.arch.beta_decay=-1"], "search.arch.beta_decay must be a finite number >= 0"),
        (
            ["search.derive=removal", "search.prune=removal", "search.epochs=6"],
            "search.derive=removal measures the final supernet's ops, but a pruned search ends with one op per edge",
        ),
        (["data.image_size=14"], "data.image_size must be a multiple of 4 (the network halves it twice), got 14"),
        (["data.name=imagenet"], "unknown data set 'imagenet': valid names are cifar10, cifar100, synthetic"),
        (  # the name in another spelling, as the loader reads it
            ["data.name=Synthetic", "data.image_size=30"],
            "data.image_size must be a multiple of 4 (the network halves it twice), got 30",
        ),
        (["search.weight_paths=fair"], "unknown search.weight_paths 'fair'; choose one of: gumbel, uniform, window"),
        (["search.weight_paths=uniform", "supernet.mode=snas"], "search.weight_paths=uniform needs supernet.mode=gdas"),
        (
            ["search.weight_paths=window", "supernet.mode=gdas"],
            "search.weight_paths=window trains the cells of the budget's window: it needs search.cost.form=budget",
        ),
        (
            ["search.prune=probability", "search.epochs=10", "search.prune_start=10"],
            "search.prune_start must be in [search.warmup_epochs, search.epochs - 1] = [0, 9]",
        ),
        (["search.estimator=rloo", "search.estimator_samples=1"], "needs >= 2 paths per step"),
        (["search.estimator=rloo", "search.arch.paths=2"], "leave search.arch.paths=1"),
        (["search.estimator=rloo", "supernet.mode=darts"], "search.estimator=rloo scores sampled paths"),
        (["search.estimator=reinmax", "search.estimator_samples=2"], "needs search.estimator=gumbel_rao (or rloo)"),
        (["search.estimator=local", "search.estimator_samples=2"], "search.estimator=local runs one op per edge"),
        (["search.estimator=local", "supernet.mode=snas"], "search.estimator=local runs one op per edge"),
        (["search.estimator=reinmax", "supernet.mode=darts"], "search.estimator=reinmax is a backward for gdas's"),
        (["search.estimator=reinmax"], "but search.tau falls to 0.1: set search.tau.min=1 or higher"),
        (
            ["search.estimator=reinmax", "search.tau.schedule=constant", "search.tau.max=0.5"],
            "falls to 0.5: set search.tau.max=1 or higher",
        ),
        (
            ["search.estimator=gumbel_rao", "supernet.mode=snas"],
            "supernet.mode=snas draws none: set search.estimator=st",
        ),
        (["search.arch.paths=2", "supernet.mode=darts"], "supernet.mode=darts runs every op already"),
    ],
)
def test_bad_method_options_are_clear_errors(overrides, needle, tmp_path, capsys):
    args = ["--out", str(tmp_path / "r"), "--quiet"] + [
        x for s in TINY + ["search.epochs=2", "search.warmup_epochs=0"] + overrides for x in ("--set", s)
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


WINDOW = ["search.derive=window", "search.cost.form=target", "search.cost.weight=1"]
WINDOW_PATHS = ["supernet.mode=gdas", "search.weight_paths=window", "search.cost.form=target", "search.cost.weight=1"]


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (  # a cap at the dearest cell: every cell fits
            WINDOW + ["search.cost.form=budget", "search.cost.budget=805968"],
            "search.derive=window enumerates the cells of the budget's window, and 4096 architectures cost up to "
            "805968, more than 2000 (at most 2000): narrow the window (set search.cost.tolerance",
        ),
        (  # the cells cost 216144 (six 1x1 convolutions), then 253008 (one 3x3)
            WINDOW + ["search.cost.budget=2.34e5", "search.cost.tolerance=0.05"],
            "search.derive=window: no cell costs between 222300 and 245700 flops",
        ),
        (
            WINDOW + ["supernet.space=darts", "supernet.N=3", "search.cost.budget=1e6"],
            "search.derive=window works on whole cells, and a darts cell drops edges",
        ),
        (
            WINDOW_PATHS + ["search.cost.budget=2.34e5", "search.cost.tolerance=0.05"],
            "search.weight_paths=window: no cell costs between 222300 and 245700 flops",
        ),
        (
            WINDOW_PATHS + ["supernet.space=darts", "supernet.N=3", "search.cost.budget=1e6"],
            "search.weight_paths=window works on whole cells, and a darts cell drops edges",
        ),
    ],
)
def test_a_window_the_search_cannot_use_is_refused_before_it_runs(overrides, needle, tmp_path, capsys):
    """What the cost table decides (the window's cells) is checked when the search is built: a
    clear error, nothing of a run written."""
    args = ["--out", str(tmp_path / "r"), "--quiet"] + [
        x for s in TINY + ["search.epochs=2", "search.warmup_epochs=0"] + overrides for x in ("--set", s)
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not list((tmp_path / "r").glob("*"))


# ---- several sampled paths per architecture step (search.arch.paths) -------


def _paths_searcher(mode: str, paths: int):
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode=mode, C=4, N=1, num_classes=3)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)  # lr 0: the step leaves the gradient to read
    return net, Searcher(net, w_opt, a_opt, epochs=1, arch_paths=paths)


def test_arch_paths_draw_one_path_per_part_and_average_the_gradient():
    net, searcher = _paths_searcher("gdas", 4)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    draws = []
    plans = net._draw_rows

    def recording_plans():
        out = plans()
        draws.append(net.sampled_architecture()["normal"])
        return out

    net._draw_rows = recording_plans
    torch.manual_seed(1)
    searcher.arch_step(x, y)
    assert len(draws) == 4  # one sampled path per part of the batch
    grad = net.arch["normal"].grad.clone()
    # The same draws by hand: each part's loss gradient, weighted by its share of the batch.
    net._draw_rows = plans
    torch.manual_seed(1)
    expected = torch.zeros_like(grad)
    for xs, ys in zip(x.chunk(4), y.chunk(4)):
        loss = F.cross_entropy(net(xs), ys) * (xs.shape[0] / x.shape[0])
        (g,) = torch.autograd.grad(loss, net.arch["normal"], allow_unused=True)  # None: every path was `none`
        expected += 0 if g is None else g
    assert torch.allclose(grad, expected, atol=1e-7)
    assert len({tuple(d) for d in draws}) > 1  # near-uniform logits: the parts ran different paths
    assert searcher.val_meter.count == 8


def test_arch_paths_are_one_forward_in_the_soft_modes():
    net, searcher = _paths_searcher("darts", 4)
    assert searcher.arch_paths == 1  # a soft supernet runs every path in one forward already
    with pytest.raises(ValueError, match="arch_paths must be >= 1"):
        _paths_searcher("gdas", 0)


def test_arch_paths_come_from_the_config():
    cfg = load_config(None, ["search.arch.paths=3"])
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    assert Searcher.from_config(net, cfg.search).arch_paths == 3


@pytest.mark.parametrize("estimator, samples", [("gumbel_rao", 4), ("reinmax", None)])
def test_supernet_estimators_change_the_backward_only(estimator, samples):
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    net.alive("normal")[:, net.ops.index("none")] = False  # no path whose output ignores the logits
    net._alive_cache = None
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    outputs, grads = [], []
    for est, k in (("st", None), (estimator, samples)):
        net.estimator, net.estimator_samples = est, k
        net.arch["normal"].grad = None
        torch.manual_seed(1)
        out = net(x)
        F.cross_entropy(out, y).backward()
        outputs.append(out.detach())
        grads.append(net.arch["normal"].grad.clone())
    assert torch.equal(outputs[0], outputs[1])  # the same noise, the same path, the same forward
    assert torch.isfinite(grads[1]).all() and grads[1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])


def test_a_reinmax_run_an_earlier_version_started_below_tau_one_resumes_and_retrains(tmp_path, monkeypatch, capsys):
    """The τ >= 1 rule applies to new searches: a run begun before it resumes as it began."""
    import nas.search

    sets = [x for s in TINY + ["search.epochs=2", "search.estimator=reinmax"] for x in ("--set", s)]
    run_dir = tmp_path / "r"
    assert main(["--out", str(run_dir), "--quiet", *sets]) == 2  # refused now, as a new search
    assert "reinmax is derived for τ >= 1" in capsys.readouterr().err and not run_dir.exists()
    monkeypatch.setattr(nas.search, "check_new_search", lambda s: None)  # as the earlier version started it
    assert main(["--out", str(run_dir), "--quiet", "--stop-after", "1", *sets]) == 0
    monkeypatch.undo()
    assert main(["--resume", str(run_dir), "--quiet"]) == 0
    assert len(lines(run_dir / "metrics.jsonl")) == 2
    retrain = ["--set", "retrain.nb201.epochs=1", "--set", "retrain.nb201.steps_per_epoch=1"]
    assert main(["retrain", str(run_dir), "--out", str(tmp_path / "rt"), "--quiet", *retrain]) == 0


@pytest.mark.parametrize(
    "sets, expected",
    [
        (["search.estimator=gumbel_rao", "search.estimator_samples=3"], ("gumbel_rao", 3)),
        (["search.estimator=reinmax", "search.tau.min=1"], ("reinmax", None)),  # τ >= 1 throughout
        (["search.estimator=local"], ("st", None)),  # rloo and local take no gradient through the draw
        (["search.estimator=rloo"], ("st", None)),
    ],
)
def test_search_passes_the_configured_estimator_to_the_supernet(sets, expected):
    cfg = load_config(None, TINY + ["search.epochs=1", *sets])
    from nas.search import SearchTask

    task = SearchTask(cfg, torch.device("cpu"), quiet)
    assert (task.net.estimator, task.net.estimator_samples) == expected
    if expected[0] == "st":  # a forward that takes the logits' gradient still works
        x = torch.randn(2, 3, 16, 16)
        task.net(x).sum().backward()
        assert task.net.arch["normal"].grad is not None


# ---- the score-function architecture step (search.estimator=rloo) ----------------


class _Constant(torch.nn.Module):
    """Fixed class scores whatever the input: each candidate's loss is known exactly."""

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("scores", torch.tensor(scores))

    def forward(self, x):
        return self.scores.expand(x.shape[0], -1)


class _TwoChoices(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nas.OpChoice(
            {f"a{k}": _Constant(s) for k, s in enumerate([[4.0, 0, 0], [0, 3.0, 0], [0, 0, 0.5]])}, label="a"
        )
        self.b = nas.OpChoice({f"b{k}": _Constant(s) for k, s in enumerate([[0.0, 0, 3], [2.5, 0, 0]])}, label="b")

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_rloo_is_unbiased_for_the_expected_loss_gradient():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(_TwoChoices())
    with torch.no_grad():
        net.arch_parameters()[0].copy_(torch.tensor([[0.3, -0.2, 0.1], [0.5, -0.4, 0.0]]))
    alpha = net.arch_parameters()[0]
    x, y = torch.zeros(4, 1), torch.tensor([0, 0, 1, 2])
    # The exact gradient of E_p[L]: every (a, b) pair's loss weighted by its probability.
    p = torch.softmax(net.logits("choices"), dim=-1)
    exact = 0
    for i, sa in enumerate(net.model.a.candidates.values()):
        for j, sb in enumerate(net.model.b.candidates.values()):
            loss = F.cross_entropy((sa.scores + sb.scores).expand(4, -1), y)
            exact = exact + p[0, i] * p[1, j] * loss
    (exact_grad,) = torch.autograd.grad(exact, alpha)
    searcher = Searcher(
        net,
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0),
        torch.optim.SGD([alpha], lr=0.0),
        epochs=1,
        score_paths=3,
    )
    n, total, sq = 2000, torch.zeros_like(alpha), torch.zeros_like(alpha)
    for _ in range(n):
        searcher.arch_step(x, y)
        total += alpha.grad
        sq += alpha.grad**2
    mean = total / n
    stderr = ((sq / n - mean**2) / n).sqrt()
    live = torch.isfinite(net.logits("choices"))  # b's padding entry never draws and gets no gradient
    assert (alpha.grad[~live] == 0).all()
    # Within 4 standard errors of the exact gradient, entry by entry, and far from zero.
    assert ((mean - exact_grad).abs()[live] < 4 * stderr[live] + 1e-6).all(), (mean, exact_grad)
    assert exact_grad.abs()[live].max() > 10 * stderr[live].max()


def test_rloo_runs_only_the_sampled_ops_and_no_backward_through_the_network():
    torch.manual_seed(0)
    calls = []
    model = torch.nn.Sequential(
        nas.OpChoice({"wide": torch.nn.Linear(4, 4), "id": torch.nn.Identity(), "neg": torch.nn.Tanh()}, label="op"),
        torch.nn.Linear(4, 3),
    )
    for name, m in model[0].candidates.items():
        m.register_forward_hook(lambda *_a, _n=name: calls.append(_n))
    net = nas.Supernet.from_model(model)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    searcher = Searcher(net, w_opt, a_opt, epochs=1, score_paths=4)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    before = net.arch_parameters()[0].detach().clone()
    searcher.arch_step(x, y)
    assert len(calls) == 4  # one candidate per path, four paths
    assert all(p.grad is None for p in net.weight_parameters())  # the paths ran without a graph
    assert not torch.equal(before, net.arch_parameters()[0])
    assert searcher.val_meter.count == 8  # one path per image in the epoch's meter (and its img/s)


def test_draw_log_probability_scores_the_last_sampled_draw():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].normal_()
        net(torch.randn(2, 3, 8, 8))
    chosen = [net.ops.index(o) for o in net.sampled_architecture()["normal"]]
    logp = torch.log_softmax(net.arch["normal"], dim=-1)[range(6), chosen].sum()
    assert torch.allclose(net.draw_log_probability(), logp)
    net.draw_log_probability().backward()  # differentiable in the logits
    assert net.arch["normal"].grad.abs().sum() > 0
    with torch.no_grad(), net.forced({"normal": [0] * 6}):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="no draw from the logits to score"):
        net.draw_log_probability()


def test_rloo_comes_from_the_config_and_a_search_runs(tmp_path):
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    assert Searcher.from_config(net, load_config(None, ["search.estimator=rloo"]).search).score_paths == 4
    cfg = load_config(None, ["search.estimator=rloo", "search.estimator_samples=2"])
    assert Searcher.from_config(net, cfg.search).score_paths == 2
    assert Searcher.from_config(net, load_config(None, []).search).score_paths == 0
    _assert_the_arch_steps_moved_the_logits(tmp_path, "rloo")


def _assert_the_arch_steps_moved_the_logits(tmp_path, estimator):
    """A search of two architecture epochs, nothing pruned: the logits start at 0, so the last
    probabilities are uniform unless the estimator's gradient moved them (a zero one does not)."""
    sets = TINY + ["search.epochs=3", "search.warmup_epochs=1", "search.prune=off", f"search.estimator={estimator}"]
    assert main(["--out", str(tmp_path / "r"), "--quiet"] + [x for s in sets for x in ("--set", s)]) == 0
    probs = torch.tensor(lines(tmp_path / "r" / "arch_probs.jsonl")[-1]["probs"]["normal"])
    assert (probs - 0.2).abs().max() > 1e-4, probs  # about 2e-3 when the estimator works; 0 exactly when not


# ---- the local architecture step (search.estimator=local) -------------------------


def _local_searcher(net, context=None):
    w_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)  # lr 0: the step leaves the gradient to read
    return Searcher(net, w_opt, a_opt, epochs=1, local=True, context=context)


def test_local_gives_one_edge_the_exact_gradient_at_the_context_cell():
    torch.manual_seed(0)
    net = nas.Supernet.from_model(_TwoChoices())
    alpha = net.arch_parameters()[0]
    with torch.no_grad():
        alpha.copy_(torch.tensor([[0.3, -0.2, 0.1], [0.5, -0.4, 0.0]]))
    x, y = torch.zeros(4, 1), torch.tensor([0, 0, 1, 2])
    context = {"choices": [2, 1]}  # a2 and b1: neither is the most probable
    searcher = _local_searcher(net, context=lambda: context)
    a = list(net.model.a.candidates.values())
    b = list(net.model.b.candidates.values())
    seen = set()
    for _ in range(12):
        searcher.arch_step(x, y)
        row = int(alpha.grad.abs().sum(dim=1).argmax())
        assert alpha.grad[1 - row].abs().sum() == 0  # one edge per step
        seen.add(row)
        p = torch.softmax(net.logits("choices")[row], dim=-1)
        # The exact gradient of sum_k p_k L_k for that row, the other row at the context's op.
        if row == 0:
            losses = [F.cross_entropy((c.scores + b[1].scores).expand(4, -1), y) for c in a]
        else:
            losses = [F.cross_entropy((a[2].scores + c.scores).expand(4, -1), y) for c in b]
        k = len(losses)
        expected_loss = (p[:k] * torch.stack(losses)).sum()
        (exact,) = torch.autograd.grad(expected_loss, alpha)
        assert torch.allclose(alpha.grad, exact, atol=1e-6)
    assert seen == {0, 1}  # both edges are compared over the steps


def test_local_runs_each_alive_op_once_and_skips_decided_edges():
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    alive = net.alive("normal")
    alive[:5] = False
    alive[:5, 2] = True  # five edges decided on op 2
    alive[5, 0] = False  # edge 5 keeps ops 1-4
    net._alive_cache = None
    runs = []
    for name, module in net.named_modules():
        if isinstance(module, nas.OpChoice):
            for op, cand in module.candidates.items():
                cand.register_forward_hook(lambda *_a, _k=(name, op): runs.append(_k))
    searcher = _local_searcher(net)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    searcher.arch_step(x, y)
    per_edge = {}
    for edge, op in runs:
        per_edge.setdefault(edge.split(".")[-1] if "." in edge else edge, set()).add(op)
    last = [e for e in per_edge if per_edge[e] and len(per_edge[e]) > 1]
    assert last and all(len(per_edge[e]) == 4 for e in last)  # edge 5's four ops, one per forward
    grad = net.arch["normal"].grad
    assert (grad[:5] == 0).all() and grad[5, 1:].abs().sum() > 0 and grad[5, 0] == 0
    assert all(p.grad is None for p in net.weight_parameters())
    alive[5] = False
    alive[5, 3] = True
    net._alive_cache = None
    searcher.arch_step(x, y)  # every edge decided: nothing to compare, no error
    assert net.arch["normal"].grad is None or (net.arch["normal"].grad == 0).all()


def test_local_search_compares_in_the_derived_cell(tmp_path):
    cfg = load_config(None, TINY + ["search.epochs=3", "search.warmup_epochs=1", "search.estimator=local"])
    from nas.search import SearchTask

    task = SearchTask(cfg, torch.device("cpu"), quiet)
    assert task.searcher.local and task.searcher.context == task._derived_rows
    with torch.no_grad():
        task.net.arch["normal"].normal_()
    geno = task.derive(final=False)[0]
    derived = task._derived_rows()["normal"]
    assert task.net.genotype(scores={"normal": F.one_hot(torch.tensor(derived), 5).float()}) == geno
    _assert_the_arch_steps_moved_the_logits(tmp_path, "local")


def test_local_scales_by_the_mul_log_factor_with_its_product_rule():
    from nas.cost import CostPenalty, cost_table

    torch.manual_seed(0)
    net = nas.build_supernet("nb201", mode="gdas", C=4, N=1, num_classes=3)
    with torch.no_grad():
        net.arch["normal"].normal_()
    table = cost_table(net, "flops", (3, 8, 8))
    cost = CostPenalty(net, table, form="mul_log", weight=0.6)
    context = {"normal": [3] * 6}
    w_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    a_opt = torch.optim.SGD(net.arch_parameters(), lr=0.0)
    searcher = Searcher(net, w_opt, a_opt, epochs=1, local=True, context=lambda: context, cost=cost)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    torch.manual_seed(1)
    searcher.arch_step(x, y)
    torch.manual_seed(1)
    e = int(torch.randint(6, ()))  # the edge the step drew: every edge has all five ops alive
    losses = []
    for k in range(5):
        arch = {"normal": [3] * 6}
        arch["normal"][e] = k
        with torch.no_grad(), net.forced(arch):
            losses.append(F.cross_entropy(net(x), y))
    p = torch.softmax(net.arch["normal"][e], dim=-1)
    expected = (p * torch.stack(losses)).sum()
    (exact,) = torch.autograd.grad(cost.multiplier() * expected, net.arch["normal"])
    assert torch.allclose(net.arch["normal"].grad, exact, atol=1e-6)
    assert (net.arch["normal"].grad.abs().sum(dim=1) > 0).sum() > 1  # the factor reaches every edge


def test_nan_logits_stop_the_search_before_their_checkpoint(tmp_path, monkeypatch):
    """A NaN logit leaves the losses finite (the straight-through scale passes values through) while
    its draws differ with and without gradients: the epoch's end refuses it, and nothing is saved."""
    from nas.search import SearchTask

    step = SearchTask.step

    def poisoned(self, batch):
        step(self, batch)
        with torch.no_grad():
            self.net.arch_parameters()[0][0, 1] = float("nan")

    monkeypatch.setattr(SearchTask, "step", poisoned)
    cfg = load_config(None, TINY + ["search.epochs=1", "search.warmup_epochs=0", "search.prune=off"])
    with pytest.raises(
        nas.UserError, match="the architecture logits became nan or inf in epoch 1; lower search.arch.lr"
    ):
        run_search(cfg, tmp_path / "run", torch.device("cpu"), progress=False, log=quiet)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
