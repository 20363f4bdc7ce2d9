"""Supernets (nas/supernet.py, nas/nb201.py, nas/darts.py) and the builders (nas/spaces.py; the
registry itself is tested in tests/test_spaces.py).

Conventions checked here, from the library's docstrings:

* ``none`` is a *structural zero* in every mode: it contributes exactly zero and
  gets exactly zero gradient, so its module is never called by a supernet.
* A node all of whose inputs are structural zeros is itself a structural zero,
  and the ops reading it are skipped (never called) too. The discrete networks
  do the same, so a forced supernet and its discrete network agree exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from typing import Dict, List
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
import nas.ops as ops_module
from nas.choice import _StraightThroughScale
from nas.darts import DARTS_V2, darts_edges
from nas.genotype import Genotype
from nas.nb201 import NB201Cell, nb201_edges
from nas.sampler import gumbel_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


SPACES = ("nb201", "darts")
MODES = ("gdas", "snas", "darts")
SIZES = {"nb201": dict(C=4, N=1), "darts": dict(C=4, N=3)}
NUM_CLASSES = 3
STANDARD_OPS = {"nb201": nas.NB201_OPS, "darts": nas.DARTS_OPS}
CELL_TYPES = {"nb201": ("normal",), "darts": ("normal", "reduce")}
NUM_EDGES = {"nb201": 6, "darts": 14}
EDGES = {"nb201": nb201_edges(), "darts": darts_edges()}
NUM_INPUTS = {"nb201": 1, "darts": 2}

NB201_TARGET = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"


def make(space: str, mode: str = "gdas", seed: int = 0, **kw) -> nas.Supernet:
    torch.manual_seed(seed)
    return nas.build_supernet(space, mode, num_classes=NUM_CLASSES, **SIZES[space], **kw)


def images(batch: int = 2, size: int = 16, seed: int = 1, **kw) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), **kw)


def labels(batch: int = 2) -> torch.Tensor:
    return torch.arange(batch) % NUM_CLASSES


def search_cells(net) -> List[nn.Module]:
    if net.space == "nb201":
        return [c for c in net.net.cells if isinstance(c, NB201Cell)]
    return list(net.cells)


def edge_ops(edge: nas.OpChoice) -> List[nn.Module]:
    """A searched edge's candidate op modules, in the supernet's op order."""
    return [edge.candidates[name] for name in edge.names]


def cell_type(net, cell) -> str:
    return "reduce" if getattr(cell, "reduction", False) else "normal"


def computed_edges(space: str, ops: List[str]) -> List[bool]:
    """Reference model: which edges really run an op, given one op name per edge.

    An edge runs iff its op is not ``none`` and its source node is not a
    structural zero; a node is a structural zero iff none of its edges runs.
    """
    live = {j: True for j in range(NUM_INPUTS[space])}
    runs = []
    for (i, j), op in zip(EDGES[space], ops):
        r = op != "none" and live[j]
        runs.append(r)
        live[i] = live.get(i, False) or r
    return runs


class CallCounter:
    """Forward hooks on every candidate op module of every search cell."""

    def __init__(self, net):
        self.counts: Dict[tuple, int] = {}
        self.handles = []
        for c, cell in enumerate(search_cells(net)):
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge_ops(edge)):
                    self.handles.append(op.register_forward_hook(self._hook((c, e, k))))

    def _hook(self, key):
        def hook(module, inputs, output):
            self.counts[key] = self.counts.get(key, 0) + 1

        return hook

    def pop(self) -> Dict[tuple, int]:
        counts, self.counts = self.counts, {}
        return counts

    def remove(self):
        for h in self.handles:
            h.remove()


def random_genotype(space: str, rng: random.Random, ops=None) -> Genotype:
    ops = list(ops or STANDARD_OPS[space])
    if space == "nb201":
        return Genotype("nb201", [(rng.choice(ops), j) for _, j in nb201_edges()], normal_concat=[3])
    cells = {}
    for cell in ("normal", "reduce"):
        edges = []
        for i in range(4):
            edges += [(rng.choice(ops), j) for j in rng.sample(range(2 + i), 2)]
        cells[cell] = edges
    return Genotype("darts", cells["normal"], cells["reduce"], [2, 3, 4, 5], [2, 3, 4, 5])


def sample_until(net, x, accept, tries: int = 200):
    """Forward with successive seeds until ``accept(net.sampled_architecture())``; return the output."""
    for seed in range(tries):
        torch.manual_seed(seed)
        net.zero_grad(set_to_none=True)
        y = net(x)
        if accept(net.sampled_architecture()):
            return y
    pytest.fail("no accepted sample in %d tries" % tries)


# ---------------------------------------------------------------------------
# Architecture parameters
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_arch_parameters_are_registered_and_shaped(space, mode):
    net = make(space, mode)
    expected = {"nb201": {"normal": (6, 5)}, "darts": {"normal": (14, 8), "reduce": (14, 8)}}[space]
    assert {c: tuple(a.shape) for c, a in net.arch.items()} == expected
    arch = net.arch_parameters()
    assert len(arch) == len(expected)
    assert all(isinstance(a, nn.Parameter) and a.requires_grad for a in arch)
    state = net.state_dict()
    for cell, a in net.arch.items():
        assert torch.equal(state[f"arch.{cell}"], a.detach())
    named = dict(net.named_parameters())
    assert all(named[f"arch.{c}"] is a for c, a in net.arch.items())
    # Near-uniform yet untied start.
    for a in arch:
        assert a.abs().max() < 0.1 and len(torch.unique(a)) == a.numel()
    # Disjoint and covering.
    weights = net.weight_parameters()
    ids_arch, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert not ids_arch & ids_w
    assert ids_arch | ids_w == {id(p) for p in net.parameters()}
    assert len(weights) + len(arch) == len(list(net.parameters()))
    assert len(weights) > 0
    assert net.mode == mode and net.ops == STANDARD_OPS[space]


@pytest.mark.parametrize("space", SPACES)
def test_arch_parameters_move_with_to(space):
    net = make(space)
    before = net.arch_parameters()
    net.to(torch.float64)
    after = net.arch_parameters()
    assert all(a.dtype == torch.float64 and isinstance(a, nn.Parameter) for a in after)
    assert all(p.dtype == torch.float64 for p in net.weight_parameters())
    assert all(net.state_dict()[f"arch.{c}"].dtype == torch.float64 for c in net.arch)
    assert [a.shape for a in after] == [a.shape for a in before]
    y = net(images(dtype=torch.float64))
    assert y.dtype == torch.float64
    y.sum().backward()
    assert all(a.grad is not None and a.grad.dtype == torch.float64 for a in after)
    # Optimizers built from arch_parameters() after the move see the moved tensors.
    assert all(a is net.arch[c] for a, c in zip(net.arch_parameters(), net.arch.keys()))


def test_tau():
    net = make("nb201")
    assert net.tau == 10.0
    net.tau = 5.0
    assert net.tau == 5.0 and isinstance(net.tau, float)
    net.tau = 1
    assert net.tau == 1.0
    for bad in (0, 0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            net.tau = bad
    assert net.tau == 1.0  # a rejected value leaves tau unchanged
    net(images())  # still works at tau=1
    with pytest.raises(ValueError):
        nas.build_supernet("nb201", C=4, N=1, tau=0)
    assert "tau=1" in repr(net)


def test_tau_rejects_infinity():
    net = make("nb201")
    with pytest.raises(ValueError):
        net.tau = float("inf")


# ---------------------------------------------------------------------------
# Which ops run
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("space", SPACES)
def test_gdas_calls_only_the_sampled_op_of_each_edge(space):
    net = make(space, "gdas")
    ops = net.ops
    x = images()
    counter = CallCounter(net)
    samples, skipped_live_ops = set(), 0
    try:
        for step in range(30):
            torch.manual_seed(100 + step)
            net(x)
            sample = net.sampled_architecture()
            assert set(sample) == set(CELL_TYPES[space])
            assert all(len(sample[t]) == NUM_EDGES[space] and set(sample[t]) <= set(ops) for t in sample)
            samples.add(tuple(tuple(sample[t]) for t in CELL_TYPES[space]))
            counts = counter.pop()
            for c, cell in enumerate(search_cells(net)):
                chosen = sample[cell_type(net, cell)]
                runs = computed_edges(space, chosen)
                skipped_live_ops += sum(op != "none" and not r for op, r in zip(chosen, runs))
                for e in range(NUM_EDGES[space]):
                    for k, name in enumerate(ops):
                        n = counts.get((c, e, k), 0)
                        expected = 1 if (name == chosen[e] and runs[e]) else 0
                        assert n == expected, (
                            f"step {step}, cell {c}, edge {e}, op {name}: called {n}x, "
                            f"sampled {chosen[e]!r}, edge computed: {runs[e]}"
                        )
                # The rule stated plainly: every called op is the sampled one on its edge, and
                # an edge reading the cell input(s) runs its (non-none) sampled op exactly once.
                for c2, e, k in counts:
                    if c2 == c:
                        assert ops[k] == chosen[e] and ops[k] != "none"
                for e, (_, j) in enumerate(EDGES[space]):
                    if j < NUM_INPUTS[space] and chosen[e] != "none":
                        assert counts.get((c, e, ops.index(chosen[e])), 0) == 1
    finally:
        counter.remove()
    assert len(samples) > 20  # the samples really vary
    if space == "nb201":
        assert skipped_live_ops > 0  # the structural-zero skipping was exercised


@pytest.mark.parametrize("mode", ["snas", "darts"])
@pytest.mark.parametrize("space", SPACES)
def test_soft_modes_call_every_op_except_none(space, mode):
    net = make(space, mode)
    counter = CallCounter(net)
    try:
        for step in range(2):
            net(images(seed=step))
            assert net.sampled_architecture() is None
            counts = counter.pop()
            for c, _cell in enumerate(search_cells(net)):
                for e in range(NUM_EDGES[space]):
                    for k, name in enumerate(net.ops):
                        # `none` is a structural zero: it is never computed, in any mode.
                        assert counts.get((c, e, k), 0) == (0 if name == "none" else 1)
    finally:
        counter.remove()


@pytest.mark.parametrize("space", SPACES)
def test_gdas_backward_reaches_only_sampled_ops(space):
    net = make(space, "gdas")
    x = images()
    for seed in range(3):
        torch.manual_seed(seed)
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), labels()).backward()
        sample = net.sampled_architecture()
        for cell in search_cells(net):
            chosen = sample[cell_type(net, cell)]
            runs = computed_edges(space, chosen)
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge_ops(edge)):
                    for p in op.parameters():
                        if net.ops[k] == chosen[e] and runs[e]:
                            assert p.grad is not None and torch.count_nonzero(p.grad) > 0
                        else:
                            assert p.grad is None  # unsampled ops take no part in the backward


# ---------------------------------------------------------------------------
# Gradients of the architecture logits
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_every_arch_logit_gets_a_gradient(space, mode):
    net = make(space, mode)
    x = images()
    if mode == "gdas":
        # Only a sampled, computed edge passes a gradient to its logits. Make `none`
        # unlikely and take a seed whose sample has no `none`: then every edge is computed.
        with torch.no_grad():
            for a in net.arch_parameters():
                a[:, net.ops.index("none")] = -2.0
        y = sample_until(net, x, lambda s: all("none" not in ops for ops in s.values()))
    else:
        y = net(x)
    F.cross_entropy(y, labels()).backward()
    for cell, a in net.arch.items():
        assert a.grad is not None and a.grad.shape == a.shape
        assert torch.isfinite(a.grad).all()
        assert torch.count_nonzero(a.grad) == a.numel(), f"{cell}: zero entries in\n{a.grad}"
        if mode != "darts":
            # Rows of a (Gumbel-)softmax Jacobian sum to zero.
            assert torch.allclose(a.grad.sum(-1), torch.zeros(a.shape[0]), atol=1e-6)


@pytest.mark.parametrize("space", SPACES)
def test_gdas_arch_gradient_rows_follow_computed_edges(space):
    net = make(space, "gdas")

    def mixed(sample):  # some edges computed, some not (sampled `none` or reading a structural zero)
        runs = [r for cell in sample for r in computed_edges(space, sample[cell])]
        return any(runs) and not all(runs)

    F.cross_entropy(sample_until(net, images(), mixed), labels()).backward()
    sample = net.sampled_architecture()
    for cell, a in net.arch.items():
        runs = computed_edges(space, sample[cell])
        grad = torch.zeros_like(a) if a.grad is None else a.grad
        for e, r in enumerate(runs):
            nonzero = int(torch.count_nonzero(grad[e]))
            assert nonzero == (a.shape[1] if r else 0), (cell, e, sample[cell][e], grad[e])


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_straight_through_scale_equals_explicit_product(dtype, copy):
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=dtype, requires_grad=True)
    base = torch.randn(2, 3, 5, 5, dtype=dtype, requires_grad=True)
    r = torch.randn(2, 3, 5, 5, dtype=dtype)
    results = []
    for fn in (lambda y, w: _StraightThroughScale.apply(y, w, copy), lambda y, w: y * w):
        logits.grad = base.grad = None
        hard = gumbel_softmax(logits, tau=2.0, hard=True, generator=torch.Generator().manual_seed(7))
        idx = hard.argmax(-1)
        w = hard.gather(1, idx[:, None]).squeeze(1)[2]
        assert w.item() == 1.0  # exactly one going forward
        y = torch.tanh(base)  # something with a graph behind it
        out = fn(y, w)
        (out * r).sum().backward()
        results.append((out.detach().clone(), logits.grad.clone(), base.grad.clone()))
    (o1, gl1, gb1), (o2, gl2, gb2) = results
    assert torch.equal(o1, o2)  # bit for bit
    assert torch.equal(gb1, gb2)
    torch.testing.assert_close(gl1, gl2, rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(gl1[2]) == 5 and torch.count_nonzero(gl1[[0, 1, 3]]) == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_supernet_gradients_equal_explicit_products(space, mode):
    # Every op ending in a BN takes its weight into that BN (gdas: the straight-through 1.0;
    # snas, darts: the soft weight). The reference multiplies every op's output by its weight:
    # no custom autograd function, no scale folded into a BN. Same outputs, same gradients.
    net = make(space, mode)
    ref = copy.deepcopy(net)
    x = images()
    outs, products = [], []

    def explicit_product(y, w, copy):
        products.append(w)
        return y * w

    for model, patch in ((net, False), (ref, True)):
        torch.manual_seed(11)  # the same Gumbel draws in both
        with contextlib.ExitStack() as stack:
            if patch:
                stack.enter_context(mock.patch.object(_StraightThroughScale, "apply", explicit_product))
                for m in model.modules():  # each choice notes at construction which ops fold their weight
                    if isinstance(m, nas.OpChoice):
                        stack.enter_context(mock.patch.object(m, "_scale_in", (False,) * len(m.names)))
            else:
                folded = stack.enter_context(
                    mock.patch.object(ops_module, "scaled_batch_norm", wraps=ops_module.scaled_batch_norm)
                )
            y = model(x)
        F.cross_entropy(y, labels()).backward()
        outs.append(y.detach())
    assert net.sampled_architecture() == ref.sampled_architecture()
    # A BN with a folded weight rounds like one without, up to the kernel's operation order.
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            # Equal up to float reassociation in autograd's accumulation order.
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4 if mode != "gdas" else 1e-5, atol=1e-6, msg=name)
    assert folded.call_count > 0  # the BN-folded path ran in the model under test
    if mode == "gdas":
        assert products and all(w.item() == 1.0 for w in products)  # the patched path really ran
        assert any(torch.count_nonzero(a.grad) for a in net.arch_parameters())
    else:
        assert all(torch.count_nonzero(a.grad) for a in net.arch_parameters())


# ---------------------------------------------------------------------------
# Forcing an architecture
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("space", SPACES)
def test_forced_architecture(space):
    net = make(space, "gdas")
    geno = random_genotype(space, random.Random(5))
    choices = net.choices_from_genotype(geno)
    with net.forced(geno):
        y = net(images())
        names = {c: [net.ops[k] for k in choices[c]] for c in choices}
        assert net.sampled_architecture() == names
        F.cross_entropy(y, labels()).backward()
    assert all(a.grad is None for a in net.arch_parameters())  # no arch gradient when forced
    assert net._forced is None  # the context manager restores sampling
    net.force({c: names[c] for c in names})  # op names work as well as a genotype
    net(images())
    assert net.sampled_architecture() == names
    net.force(None)
    with pytest.raises(ValueError):
        net.force({c: [0] * (NUM_EDGES[space] - 1) for c in CELL_TYPES[space]})
    with pytest.raises(ValueError):
        net.force({c: [len(net.ops)] * NUM_EDGES[space] for c in CELL_TYPES[space]})
    other = "darts" if space == "nb201" else "nb201"
    with pytest.raises(ValueError):
        net.force(random_genotype(other, random.Random(0)))


# ---------------------------------------------------------------------------
# Derivation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_nb201_pushed_logits_derive_the_target(mode):
    net = make("nb201", mode)
    target = Genotype.from_nb201(NB201_TARGET)
    idx = torch.tensor([net.ops.index(op) for op, _ in target.normal])
    with torch.no_grad():
        net.arch["normal"].zero_()
        net.arch["normal"][torch.arange(6), idx] = 10.0
    geno = net.genotype()
    assert geno.to_nb201() == NB201_TARGET and geno.same_architecture(target)
    assert geno.ops == list(net.ops)
    probs = torch.tensor(geno.probs["normal"])
    assert probs.shape == (6, 5) and torch.allclose(probs.sum(-1), torch.ones(6))
    assert (probs.argmax(-1) == idx).all()


def test_nb201_training_alphas_toward_target_derives_it():
    net = make("nb201", "gdas")
    target = Genotype.from_nb201(NB201_TARGET)
    idx = torch.tensor([net.ops.index(op) for op, _ in target.normal])
    assert net.genotype().to_nb201() != NB201_TARGET
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    for _ in range(60):
        opt.zero_grad()
        loss = -torch.log_softmax(net.arch["normal"], -1)[torch.arange(6), idx].sum()
        loss.backward()
        opt.step()
    assert net.genotype().to_nb201() == NB201_TARGET


def test_nb201_derivation_can_pick_none():
    net = make("nb201")
    with torch.no_grad():
        net.arch["normal"][:, 0] = 5.0
    assert net.genotype().to_nb201() == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.mark.parametrize("mode", MODES)
def test_darts_pushed_logits_derive_darts_v2(mode):
    net = make("darts", mode)
    target = Genotype.from_darts(DARTS_V2)
    none = net.ops.index("none")
    edge_index = {pair: e for e, pair in enumerate(darts_edges())}
    with torch.no_grad():
        for cell, kept in target.cells().items():
            a = net.arch[cell]
            a.zero_()
            a[:, none] = 15.0  # dropped edges: `none` dominates, which derivation must ignore
            for k, (op, j) in enumerate(kept):
                e = edge_index[(2 + k // 2, j)]
                a[e, none] = 12.0  # even on kept edges `none` is the largest logit
                # The first-listed edge of each node is the stronger one, as DARTS prints it.
                a[e, net.ops.index(op)] = 10.0 if k % 2 == 0 else 9.0
    geno = net.genotype()
    assert geno.same_architecture(target), str(geno)
    assert str(geno) == DARTS_V2
    assert all("none" not in [op for op, _ in edges] for edges in geno.cells().values())
    assert set(geno.probs) == {"normal", "reduce"}


# ---------------------------------------------------------------------------
# Supernet vs discrete network
# ---------------------------------------------------------------------------
DEGENERATE = {
    "nb201": [
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        # node 1 is a structural zero, so nor_conv_3x3~1 and avg_pool_3x3~1 are skipped
        "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    ],
    "darts": [
        # node 2 is a structural zero in both cells; nodes 3 and 5 read it
        "Genotype(normal=[('none', 0), ('none', 1), ('sep_conv_3x3', 2), ('skip_connect', 0), "
        "('max_pool_3x3', 1), ('dil_conv_3x3', 0), ('avg_pool_3x3', 2), ('sep_conv_5x5', 4)], "
        "normal_concat=[2, 3, 4, 5], reduce=[('none', 1), ('none', 0), ('dil_conv_5x5', 2), ('none', 1), "
        "('skip_connect', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('sep_conv_3x3', 1)], "
        "reduce_concat=[2, 3, 4, 5])",
        DARTS_V2,
    ],
}


@pytest.mark.parametrize("space", SPACES)
def test_forced_supernet_matches_discretized_network(space):
    net = make(space, "gdas")
    # darts: odd sizes after the reductions (18 -> 9 -> 5) exercise the zero-node shapes.
    # (nb201's ResNet reduction block, like the official one, needs sizes divisible by 4.)
    size = 18 if space == "darts" else 16
    x = images(batch=4, size=size)
    rng = random.Random(0)
    genos = [Genotype.parse(s) for s in DEGENERATE[space]] + [random_genotype(space, rng) for _ in range(3)]
    assert any("none" in [op for op, _ in g.normal] for g in genos)
    net.train()
    for step in range(3):  # sampled train-mode forwards: BN running stats move away from (0, 1)
        torch.manual_seed(step)
        net(images(batch=4, size=size, seed=10 + step))
    checked_stats = 0
    for geno in genos:
        net.train()
        with torch.no_grad(), net.forced(geno):
            net(images(batch=4, size=size, seed=20))  # the chosen ops' BN statistics become non-trivial
        model = net.discretize(geno)
        assert model.genotype is geno
        assert sum(p.numel() for p in model.parameters()) == sum(
            p.numel()
            for p in nas.build_network(geno, C=net.C, N=net.N, num_classes=NUM_CLASSES, affine=False).parameters()
        )
        for training in (False, True):
            net.train(training)
            model.train(training)
            with torch.no_grad(), net.forced(geno):
                a = net(x)
                b = model(x)
            torch.testing.assert_close(
                a,
                b,
                rtol=1e-5,
                atol=1e-6,
                msg=lambda m, geno=geno, training=training: f"{geno} (training={training}): {m}",
            )
        stats = [t for name, t in model.state_dict().items() if ".edges." in name and name.endswith("running_mean")]
        checked_stats += any(torch.count_nonzero(t) > 0 for t in stats)
    # BN statistics of the cells' ops really were copied (not just default-initialised).
    assert checked_stats >= 3
    net.train()


@pytest.mark.parametrize("space", SPACES)
def test_one_cell_class_for_search_and_network(space):
    net = make(space)
    geno = net.genotype()
    model = nas.build_network(geno, C=net.C, N=net.N, num_classes=NUM_CLASSES, affine=False)
    searched = {type(c) for c in search_cells(net)}
    discrete = {type(c) for c in model.cells if type(c) in searched}
    assert len(searched) == 1 and discrete == searched
    # Each searched edge is an OpChoice labelled by its cell type and edge, bound to that logit row.
    rows = [(cell, e) for cell in CELL_TYPES[space] for e in range(NUM_EDGES[space])]
    for cell in search_cells(net):
        for e, edge in enumerate(cell.edges):
            assert isinstance(edge, nas.OpChoice) and edge.names == net.ops
            to, source = EDGES[space][e]
            assert edge.label == f"{cell_type(net, cell)}:{to}<-{source}"
            assert rows[edge._row] == (cell_type(net, cell), e)
    assert not any(isinstance(m, nas.OpChoice) for m in model.modules())


def test_bind_edges_follows_the_logits_order_whatever_the_order_given():
    net = make("darts")
    rows = [m._row for m in net.modules() if isinstance(m, nas.OpChoice)]
    net.bind_edges(net.cells, {"reduce": darts_edges(), "normal": darts_edges()})
    assert [m._row for m in net.modules() if isinstance(m, nas.OpChoice)] == rows


def test_nb201_fix_of_the_searched_cells_is_the_discrete_network():
    net = make("nb201")
    geno = Genotype.from_nb201(NB201_TARGET)
    fixed = nas.fix(net.net, nas.nb201.nb201_arch(geno))
    model = nas.build_network(geno, C=net.C, N=net.N, num_classes=NUM_CLASSES, affine=False)
    assert fixed.state_dict().keys() == model.state_dict().keys()
    model.load_state_dict(fixed.state_dict())
    net.eval(), model.eval()
    with torch.no_grad(), net.forced(geno):
        torch.testing.assert_close(net(images()), model(images()), rtol=0, atol=0)


@pytest.mark.parametrize("space", SPACES)
def test_checkpoints_from_before_the_edge_choices_load(space):
    # Supernet checkpoints written before the edges were OpChoices keyed each op by its index
    # (edges.<e>.<k>.), not by its name (edges.<e>.candidates.<op>.).
    net = make(space)
    state = net.state_dict()
    old = {}
    for key, value in state.items():
        for k, op in enumerate(net.ops):
            key = key.replace(f".candidates.{op}.", f".{k}.")
        old[key] = value.clone() + (0.5 if value.is_floating_point() else 0)
    assert old.keys() != state.keys()
    fresh = make(space)
    fresh.load_state_dict(old)
    for key, value in fresh.state_dict().items():
        expected = state[key]
        assert torch.equal(value, expected + (0.5 if expected.is_floating_point() else 0)), key


@pytest.mark.parametrize("space", SPACES)
def test_discretize_defaults_to_derived_genotype(space):
    net = make(space)
    model = net.discretize()
    assert model.genotype.same_architecture(net.genotype())
    assert model(images()).shape == (2, NUM_CLASSES)


# ---------------------------------------------------------------------------
# Forward and backward in every mode, on CPU and CUDA
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_supernet_forward_backward(space, mode):
    net = make(space, mode)
    y = net(images())
    assert y.shape == (2, NUM_CLASSES) and torch.isfinite(y).all()
    F.cross_entropy(y, labels()).backward()
    assert all(torch.isfinite(a.grad).all() for a in net.arch_parameters())
    assert sum(p.grad is not None for p in net.weight_parameters()) > 0
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(images())).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("space", SPACES)
def test_supernet_on_cuda(space):
    net = make(space, "gdas").cuda()
    assert all(a.is_cuda for a in net.arch_parameters())
    x = images().cuda()
    y = net(x)
    assert y.is_cuda
    F.cross_entropy(y, labels().cuda()).backward()
    assert all(a.grad is not None and a.grad.is_cuda for a in net.arch_parameters())
    geno = net.genotype()
    model = net.discretize(geno)
    assert next(model.parameters()).is_cuda
    net.eval()
    model.eval()
    with torch.no_grad(), net.forced(geno):
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("space", SPACES)
def test_one_host_transfer_per_gdas_forward(space, mode):
    net = make(space, mode)
    x = images()
    calls = {"tolist": 0, "item": 0, "__bool__": 0, "__float__": 0, "__int__": 0, "cpu": 0, "numpy": 0}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    patches = [mock.patch.object(torch.Tensor, name, counting(name)) for name in calls]
    for p in patches:
        p.start()
    try:
        for _ in range(3):
            net(x)
        sampled = dict(calls)
        calls.update(dict.fromkeys(calls, 0))
        with net.forced(random_genotype(space, random.Random(0))):
            net(x)
        forced = dict(calls)
    finally:
        for p in patches:
            p.stop()
    assert sampled == {**dict.fromkeys(calls, 0), "tolist": 3 if mode == "gdas" else 0}
    assert forced == dict.fromkeys(calls, 0)


# ---------------------------------------------------------------------------
# Builders and discrete networks
# ---------------------------------------------------------------------------
def test_build_supernet_rejects_unknown_space_and_mode():
    # Bad arguments to the library are ValueErrors naming the choices.
    with pytest.raises(ValueError, match="unknown space 'resnet'; choose one of: nb201, darts"):
        nas.build_supernet("resnet", C=4, N=1)
    with pytest.raises(ValueError, match="unknown mode 'enas'; choose one of: gdas, snas, darts"):
        nas.build_supernet("nb201", "enas", C=4, N=1)
    with pytest.raises(ValueError, match="unknown space 'foo'"):
        nas.build_network(Genotype("foo", [("none", 0)]), C=4, N=1)
    with pytest.raises(ValueError, match="auxiliary"):
        nas.build_network(Genotype.from_nb201(NB201_TARGET), C=4, N=1, auxiliary=True)


SUPERNET_CLASSES = {"nb201": nas.nb201.NB201Supernet, "darts": nas.darts.DartsSupernet}


@pytest.mark.parametrize("space", SPACES)
def test_build_supernet_classes_and_defaults(space):
    net = make(space, tau=3.0)
    assert isinstance(net, SUPERNET_CLASSES[space]) and isinstance(net, nas.Supernet)
    assert nas.SPACES[space] is nas.get_space(space) and nas.get_space(space).name == space
    assert net.space == space and net.tau == 3.0 and net.ops == STANDARD_OPS[space]
    # Search cells do not learn BN affine parameters by default.
    for cell in search_cells(net):
        for edge in cell.edges:
            for m in edge.modules():
                if isinstance(m, nn.BatchNorm2d):
                    assert not m.affine


def test_nb201_network_forward_backward():
    geno = Genotype.from_nb201(NB201_TARGET)
    torch.manual_seed(0)
    model = nas.build_network(geno, C=4, N=1, num_classes=NUM_CLASSES)
    assert isinstance(model, nas.nb201.NB201Network)
    y = model(images())
    assert y.shape == (2, NUM_CLASSES)
    F.cross_entropy(y, labels()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_darts_network_auxiliary_and_drop_path():
    geno = Genotype.from_darts(DARTS_V2)
    torch.manual_seed(0)
    model = nas.build_network(geno, C=4, N=3, num_classes=NUM_CLASSES, auxiliary=True, drop_path_prob=0.3)
    assert isinstance(model, nas.darts.NetworkCIFAR) and model.aux_head is not None
    x = images(size=32)  # the auxiliary head expects 8x8 features: 32x32 inputs
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    logits, aux = out
    assert logits.shape == aux.shape == (2, NUM_CLASSES)
    (F.cross_entropy(logits, labels()) + 0.4 * F.cross_entropy(aux, labels())).backward()
    assert all(p.grad is not None for p in model.aux_head.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert isinstance(y, torch.Tensor) and y.shape == (2, NUM_CLASSES)
        # Drop-path acts in training only.
        model.drop_path_prob = 0.0
        assert torch.equal(model(x), y)


@pytest.mark.parametrize("size", [8, 16, 24, 32, 40, 64])  # every multiple of 4 that data.image_size allows
def test_darts_auxiliary_head_fits_any_image_size(size):
    """DARTS's pool where the maps are 8-10 px (32-40 px inputs), an adaptive one elsewhere: the
    head's 2x2 convolution always sees 2x2 maps."""
    torch.manual_seed(0)
    model = nas.build_network(Genotype.from_darts(DARTS_V2), C=4, N=3, num_classes=NUM_CLASSES, auxiliary=True)
    logits, aux = model.train()(images(size=size))
    assert logits.shape == aux.shape == (2, NUM_CLASSES)
    head = model.aux_head
    seen = []
    handle = head.features.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[-2:]))
    model(images(size=size))
    handle.remove()
    assert seen == [(2, 2)]


def test_drop_path_changes_training_output_only_through_dropped_paths():
    geno = Genotype.from_darts(DARTS_V2)
    torch.manual_seed(0)
    model = nas.build_network(geno, C=4, N=3, num_classes=NUM_CLASSES, drop_path_prob=0.0)
    x = images(batch=4)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        assert torch.equal(a, b)  # no randomness without drop-path
        model.drop_path_prob = 0.5
        torch.manual_seed(1)
        c = model(x)
        torch.manual_seed(2)
        d = model(x)
    assert not torch.equal(c, d)
    assert torch.isfinite(c).all() and torch.isfinite(d).all()


def test_drop_path_is_unbiased():
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 1, 1)
    y = nas.darts.drop_path(x, 0.3)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert math.isclose(kept.float().mean().item(), 0.7, abs_tol=0.02)
    assert math.isclose(y.mean().item(), 1.0, abs_tol=0.03)


# ---------------------------------------------------------------------------
# Derivation rule for none (supernet.derive_none)
# ---------------------------------------------------------------------------
def test_nb201_derive_none_rule():
    with_none, without_none = make("nb201"), make("nb201", derive_none=False)
    assert with_none.derive_none is True and without_none.derive_none is False
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, 0.5]] * 3 + [[0.0, 1.0, 2.0, 3.0, 0.5]] * 3)  # none first
    for net in (with_none, without_none):
        with torch.no_grad():
            net.arch["normal"].copy_(logits)
    assert [op for op, _ in with_none.genotype().normal] == ["none"] * 3 + ["nor_conv_3x3"] * 3
    # none would win the first three edges; the rule takes the strongest other op there
    assert [op for op, _ in without_none.genotype().normal] == ["nor_conv_1x1"] * 3 + ["nor_conv_3x3"] * 3
    # the probabilities keep every op
    assert without_none.genotype().probs == with_none.genotype().probs


def test_darts_space_refuses_derive_none():
    with pytest.raises(ValueError, match="supernet.derive_none"):
        nas.build_supernet("darts", derive_none=True, **SIZES["darts"])
    assert make("darts", derive_none=False).genotype().space == "darts"  # DARTS's own rule: accepted
