"""experiments.bench_search: the quick run works, and its pairings compare equal work.

The benchmark times a weight step of the gdas supernet forced to (or sampling with
certainty) an architecture against the same step of the discrete network
``build_network(geno, affine=False)``. That comparison is fair only if both run the
same network: same outputs, same parameters, same parameters trained.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas.genotype import Genotype
from nas.ops import NB201_OPS
from nas.spaces import build_network, build_supernet

ROOT = Path(__file__).resolve().parents[1]
MODULE = [sys.executable, "-m", "experiments.bench_search"]  # run from the repository root
C, N, CLASSES = 4, 1, 10


@pytest.fixture
def bench(monkeypatch):
    """experiments.bench_search, imported as ``python -m`` from the repository root imports it."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("experiments.bench_search")


def _geno(ops) -> Genotype:
    a, b, c, d, e, f = ops
    return Genotype.from_nb201(f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|")


def _archs():
    rng = random.Random(1234)
    archs = [_geno([rng.choice(NB201_OPS) for _ in range(6)]) for _ in range(4)]
    # Structural zeros: node 1 is `none`, so the conv on 2<-1 reads nothing and is skipped.
    archs.append(_geno(["none", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"]))
    archs.append(_geno(["nor_conv_3x3"] * 6))
    return archs


ARCHS = _archs()

# Tiny models: one intra-op thread is faster, and far steadier on shared cores (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# The quick run
# ---------------------------------------------------------------------------------------------


def test_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(
        MODULE + ["--quick", "--out", str(out)], cwd=str(ROOT), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())

    machine = res["machine"]
    for key in ("platform", "cpu_count", "torch", "torch_threads", "device", "device_name"):
        assert key in machine
    assert "commit" in res and "library_fingerprint" in res and res["command"].startswith("python -m")

    steps = res["step"]["rows"]
    assert len(steps) == 2  # --quick: one random architecture and all nor_conv_3x3
    assert len({r["arch"] for r in steps}) == len(steps)
    for r in steps:
        Genotype.from_nb201(r["arch"])  # a valid NB201 string
        for key in ("ratio", "ratio_sampled", "forced_ms", "sampled_ms", "discrete_ms"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["sample_mismatches"] == 0  # the +30 logits sampled the architecture every time

    modes = {r["mode"]: r for r in res["modes"]["rows"]}
    assert {"gdas", "darts", "snas", "gdas+rloo", "gdas+local", "gdas+cost"} <= set(modes)
    for r in modes.values():
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0
    assert res["modes"]["summary"]["gdas_speedup_vs_darts"] > 0

    pool = {r["case"]: r for r in res["pool"]["rows"]}
    assert len(pool) == 3 + 2 * 2  # three stage shapes; darts and gdas at two sizes
    for r in pool.values():
        for key in ("torch_ms", "ours_ms", "speedup_paired"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)

    memory = {r["case"]: r for r in res["memory"]["rows"]}
    assert {"discrete", "gdas", "darts", "snas"} <= set(memory)
    for r in memory.values():
        assert r["peak_bytes"] > 0
    assert res["memory"]["summary"]["gdas_over_discrete"] > 0
    if res["device"] == "cpu":  # --quick: the fixed mmap threshold only, every case
        assert {(r["allocator"], r["case"]) for r in res["memory"]["rows"]} == {
            ("mmap_threshold_128k", c) for c in memory
        }
        assert res["memory"]["summary"]["allocator"] == "mmap_threshold_128k"

    tp = res["throughput"]
    assert tp["images_per_second"] > 0 and tp["estimated_full_search_s"] > 0
    assert "summary" in res
    last = proc.stdout.rstrip().splitlines()[-1]  # the table comes last
    assert last.startswith("full nb201_cifar10_gdas search estimate"), last


def test_bad_section_is_refused():
    proc = subprocess.run(
        MODULE + ["--quick", "--only", "nonsense"], cwd=str(ROOT), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "--only" in proc.stderr


# ---------------------------------------------------------------------------------------------
# The pairing: forced supernet == discrete network
# ---------------------------------------------------------------------------------------------


def _trained_supernet(seed: int = 0):
    """A gdas supernet whose weights and BN running statistics have moved from their initial values."""
    torch.manual_seed(seed)
    net = build_supernet("nb201", "gdas", C=C, N=N, num_classes=CLASSES)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    net.train()
    for arch in ARCHS + [None, None]:  # forced forwards and random samples
        x, y = torch.randn(6, 3, 8, 8), torch.randint(0, CLASSES, (6,))
        with net.forced(arch):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("geno", ARCHS, ids=[g.to_nb201() for g in ARCHS])
def test_forced_supernet_equals_discretized_network(geno):
    net = _trained_supernet()
    x = torch.randn(5, 3, 8, 8)
    disc = net.discretize(geno)
    net.eval()
    disc.eval()
    with torch.no_grad(), net.forced(geno):
        out_forced = net(x)
    with torch.no_grad():
        out_disc = disc(x)
    assert torch.allclose(out_forced, out_disc, rtol=0, atol=1e-6), (out_forced - out_disc).abs().max()
    # In train mode too (batch statistics), which is what the benchmark times.
    net.train()
    disc.train()
    with torch.no_grad(), net.forced(geno):
        out_forced = net(x)
    with torch.no_grad():
        out_disc = disc(x)
    assert torch.allclose(out_forced, out_disc, rtol=0, atol=1e-6)


@pytest.mark.parametrize("geno", ARCHS, ids=[g.to_nb201() for g in ARCHS])
def test_benchmark_discrete_network_has_the_discretized_parameters(geno):
    """The benchmark's build_network(geno, affine=False) holds exactly the parameters of the forced path."""
    net = build_supernet("nb201", "gdas", C=C, N=N, num_classes=CLASSES)
    fresh = build_network(geno, C=C, N=N, num_classes=CLASSES, affine=False)
    discretized = net.discretize(geno)
    assert [tuple(p.shape) for p in fresh.parameters()] == [tuple(p.shape) for p in discretized.parameters()]
    assert [n for n, _ in fresh.named_parameters()] == [n for n, _ in discretized.named_parameters()]
    assert [(n, tuple(b.shape)) for n, b in fresh.named_buffers()] == [
        (n, tuple(b.shape)) for n, b in discretized.named_buffers()
    ]


@pytest.mark.parametrize("geno", ARCHS, ids=[g.to_nb201() for g in ARCHS])
def test_forced_step_trains_what_the_discrete_step_trains(geno):
    """One forced weight step gives gradients to exactly the parameters the discrete step does, equal."""
    torch.manual_seed(0)
    net = build_supernet("nb201", "gdas", C=C, N=N, num_classes=CLASSES)
    for a in net.arch_parameters():
        a.requires_grad_(False)
    disc = net.discretize(geno)  # same weights
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, CLASSES, (6,))
    with net.forced(geno):
        F.cross_entropy(net(x), y).backward()
    F.cross_entropy(disc(x), y).backward()
    super_grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
    disc_grads = [p.grad for p in disc.parameters() if p.grad is not None]
    assert [tuple(g.shape) for g in super_grads] == [tuple(g.shape) for g in disc_grads]
    for gs, gd in zip(super_grads, disc_grads):
        assert torch.allclose(gs, gd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("geno", ARCHS[:3] + ARCHS[-1:], ids=[g.to_nb201() for g in ARCHS[:3] + ARCHS[-1:]])
def test_biased_logits_sample_the_architecture(geno, bench):
    """The benchmark's 'sampled' variant: +30 on the chosen ops samples exactly that architecture."""
    torch.manual_seed(0)
    net = build_supernet("nb201", "gdas", C=C, N=N, num_classes=CLASSES)
    bench.bias_logits(net, geno)
    net.arch["normal"].requires_grad_(False)
    expected = [op for op, _ in geno.normal]
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad(), net.forced(geno):
        forced = net(x)
    for _ in range(50):
        with torch.no_grad():
            sampled = net(x)
        assert net.sampled_architecture()["normal"] == expected
    assert torch.equal(sampled, forced)


def test_benchmark_architectures(bench):
    quick = bench.benchmark_archs(bench.settings_for(True, None))
    full = bench.benchmark_archs(bench.settings_for(False, None))
    assert len(quick) == 2 and len(full) == 10
    assert [g.to_nb201() for g in full] == [g.to_nb201() for g in bench.benchmark_archs(bench.settings_for(False, 3))]
    assert full[-2].to_nb201().count("nor_conv_3x3") == 6 and full[-1].to_nb201().count("skip_connect") == 6
    for g in full:
        assert g.space == "nb201" and len(g.normal) == 6


def test_search_iteration_is_one_searcher_step(bench):
    """The modes, memory and throughput sections time Searcher.step with the nb201_cifar10_gdas config's
    optimisers: one weight step (SGD, clip 5) then one architecture step (Adam)."""
    assert (bench.GRAD_CLIP, bench.W_OPT["lr"], bench.SEARCH.arch.lr) == (5.0, 0.025, 3e-4)
    cpu = torch.device("cpu")
    s = bench.settings_for(True, None)
    net = bench.supernet(s, "gdas", cpu)
    weights = [p.detach().clone() for p in net.weight_parameters()]
    logits = [a.detach().clone() for a in net.arch_parameters()]
    step = bench.search_step_fn(net, cpu, *bench.make_batch(s, cpu, seed=1), *bench.make_batch(s, cpu, seed=2))
    step()
    assert any(not torch.equal(p, q) for p, q in zip(net.weight_parameters(), weights))
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), logits))
    # The cost variant: the budget recipe's term, stepped directly after Adam's step.
    searcher = bench.searcher_for(bench.supernet(s, "gdas", cpu), cpu, cost=(3, s.size, s.size))
    assert searcher.cost is not None and searcher.cost.form == "target" and searcher.cost.step == "direct"
