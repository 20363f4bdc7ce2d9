"""Properties of nas.sampler: distributions, gradients, numerics, schedules.

Every random test uses a fixed seed, so each run draws the same numbers; the
statistical thresholds are set at p = 0.001 (or wider) for a fresh seed.
"""

from __future__ import annotations

import doctest
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas.sampler as sampler
from nas.sampler import (
    GumbelSoftmax,
    constant_tau,
    cosine_tau,
    exponential_tau,
    gumbel_max,
    gumbel_softmax,
    linear_tau,
    tau_schedule,
)

ROOT = Path(__file__).resolve().parents[1]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]

# Upper 0.1% points of the chi-square distribution, chi2.ppf(0.999, df), from
# standard tables (scipy is not a dependency). df = K - 1 for K choices.
CHI2_CRIT_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}

P3 = (0.2, 0.3, 0.5)
P5 = (0.05, 0.1, 0.15, 0.3, 0.4)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def rows(p, n: int, device: str = "cpu", dtype=torch.float32) -> torch.Tensor:
    """n identical rows of logits log(p) + 3: unnormalised on purpose."""
    logits = torch.tensor(p, dtype=torch.float64).log() + 3.0
    return logits.to(device=device, dtype=dtype).expand(n, len(p))


def chi2_stat(counts: torch.Tensor, p) -> float:
    counts = counts.double().cpu()
    expected = counts.sum() * torch.tensor(p, dtype=torch.float64)
    return float(((counts - expected) ** 2 / expected).sum())


def chi2_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chi-square statistic of the 2 x K table [a; b] (homogeneity, df = K - 1)."""
    table = torch.stack([a, b]).double().cpu()
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum())


def within_binomial(hits: int, n: int, q: float, z: float = 4.0) -> bool:
    return abs(hits / n - q) <= z * math.sqrt(q * (1 - q) / n)


# --------------------------------------------------------------------------
# Distribution
# --------------------------------------------------------------------------


def test_noise_is_standard_gumbel():
    # logits + G at logits = 0 is G: mean 0.5772 (Euler-Mascheroni), var pi^2/6.
    g = sampler._perturbed_logits(torch.zeros(200_000), gen(0))
    n = g.numel()
    assert abs(g.mean().item() - 0.5772156649) < 4 * math.sqrt(math.pi**2 / 6 / n)
    assert abs(g.var().item() - math.pi**2 / 6) < 0.05
    # Gumbel CDF exp(-exp(-x)) at a few points.
    for x in (-1.0, 0.0, 1.0, 3.0):
        q = math.exp(-math.exp(-x))
        assert within_binomial(int((g <= x).sum()), n, q)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [P3, P5], ids=["K3", "K5"])
def test_gumbel_max_frequencies_match_softmax(device, p):
    n = 40_000
    idx = gumbel_max(rows(p, n, device), generator=gen(1, device))
    counts = torch.bincount(idx, minlength=len(p))
    assert chi2_stat(counts, p) < CHI2_CRIT_999[len(p) - 1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [P3, P5], ids=["K3", "K5"])
def test_hard_sample_frequencies_match_softmax(device, p):
    n = 40_000
    y = gumbel_softmax(rows(p, n, device), tau=0.7, hard=True, generator=gen(2, device))
    assert chi2_stat(y.sum(0), p) < CHI2_CRIT_999[len(p) - 1]


def test_frequencies_along_dim0():
    n = 40_000
    y = gumbel_softmax(rows(P3, n).t(), tau=2.0, hard=True, dim=0, generator=gen(3))
    assert torch.equal(y.sum(0), torch.ones(n))
    assert chi2_stat(y.sum(1), P3) < CHI2_CRIT_999[2]


def test_shift_invariance_no_log_of_logits():
    # Unnormalised logits are used as they are: adding a per-row constant (or
    # normalising with log_softmax) gives the same sample from the same noise.
    logits = torch.randn(1000, 5)
    shifted = logits + torch.randn(1000, 1) * 5
    for hard in (False, True):
        a = gumbel_softmax(logits, tau=0.5, hard=hard, generator=gen(4))
        b = gumbel_softmax(shifted, tau=0.5, hard=hard, generator=gen(4))
        c = gumbel_softmax(logits.log_softmax(-1), tau=0.5, hard=hard, generator=gen(4))
        for other in (b, c):
            torch.testing.assert_close(other, a, rtol=0, atol=1e-4)


def test_sample_is_not_the_mode():
    # argmax of a sample differs from argmax(softmax) with probability 1 - max p.
    n = 40_000
    for p in (P3, P5):
        logits = rows(p, n)
        sample = gumbel_softmax(logits, tau=1.0, generator=gen(5)).argmax(-1)
        mode = logits.softmax(-1).argmax(-1)
        mismatches = int((sample != mode).sum())
        assert within_binomial(mismatches, n, 1 - max(p))


def test_matches_torch_gumbel_softmax_statistically():
    n = 40_000
    logits = rows(P5, n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        theirs_hard = F.gumbel_softmax(logits, tau=0.5, hard=True)
        theirs_soft = F.gumbel_softmax(logits, tau=0.5)
    ours_hard = gumbel_softmax(logits, tau=0.5, hard=True, generator=gen(7))
    ours_soft = gumbel_softmax(logits, tau=0.5, generator=gen(8))
    # Both hard-sample frequencies match p, and each other (2 x K table).
    assert chi2_stat(theirs_hard.sum(0), P5) < CHI2_CRIT_999[4]
    assert chi2_stat(ours_hard.sum(0), P5) < CHI2_CRIT_999[4]
    assert chi2_two_sample(ours_hard.sum(0), theirs_hard.sum(0)) < CHI2_CRIT_999[4]
    # Soft samples: per-choice means agree within 4 standard errors.
    se = (ours_soft.var(0) / n + theirs_soft.var(0) / n).sqrt()
    assert ((ours_soft.mean(0) - theirs_soft.mean(0)).abs() <= 4 * se).all()
    # ...and their spread is the same too (a different tau would show here).
    torch.testing.assert_close(ours_soft.std(0), theirs_soft.std(0), rtol=0.03, atol=0)


# --------------------------------------------------------------------------
# Hard samples and straight-through gradients
# --------------------------------------------------------------------------


# Both sizes: gumbel_softmax divides by tau in place from 2**16 elements on.
SIZES = [pytest.param(2000, id="small"), pytest.param(14_000, id="large")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", SIZES)
def test_hard_is_exactly_one_hot(device, dtype, n):
    logits = (torch.randn(n, 7, generator=gen(9)) * 3).to(device, dtype)
    for tau in (1e-3, 0.5, 1.0, 10.0, 1e4):
        y = gumbel_softmax(logits, tau=tau, hard=True, generator=gen(10, device))
        assert y.dtype == dtype and y.device.type == device
        assert bool(((y == 0) | (y == 1)).all())
        assert torch.equal(y.sum(-1), torch.ones(n, device=device, dtype=dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("n", SIZES)
def test_hard_argmax_equals_gumbel_max_same_seed(device, tau, n):
    logits = torch.randn(n, 5, generator=gen(11), dtype=torch.float32).to(device)
    y = gumbel_softmax(logits, tau=tau, hard=True, generator=gen(12, device))
    assert torch.equal(y.argmax(-1), gumbel_max(logits, generator=gen(12, device)))
    soft = gumbel_softmax(logits, tau=tau, generator=gen(12, device))
    assert torch.equal(soft.argmax(-1), y.argmax(-1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_straight_through_gradient_equals_soft_gradient(device, n):
    logits = torch.randn(n, 5, generator=gen(13)).to(device).requires_grad_()
    upstream = torch.randn(n, 5, generator=gen(14)).to(device)
    hard = gumbel_softmax(logits, tau=0.7, hard=True, generator=gen(15, device))
    soft = gumbel_softmax(logits, tau=0.7, hard=False, generator=gen(15, device))
    (g_hard,) = torch.autograd.grad(hard, logits, upstream)
    (g_soft,) = torch.autograd.grad(soft, logits, upstream)
    assert g_hard.abs().sum() > 0
    torch.testing.assert_close(g_hard, g_soft, rtol=1e-6, atol=1e-7)
    # The soft gradient is the Jacobian of softmax(z / tau): y (u - <u, y>) / tau.
    expected = soft * (upstream - (upstream * soft).sum(-1, keepdim=True)) / 0.7
    torch.testing.assert_close(g_soft, expected.detach(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Temperature limits and reproducibility
# --------------------------------------------------------------------------


def test_small_tau_approaches_one_hot():
    y = gumbel_softmax(rows(P5, 10_000), tau=1e-3, generator=gen(16))
    assert (y.max(-1).values >= 0.99).float().mean() >= 0.99
    torch.testing.assert_close(y.sum(-1), torch.ones(10_000))


def test_large_tau_approaches_uniform():
    y = gumbel_softmax(rows(P5, 10_000), tau=1e4, generator=gen(17))
    assert (y - 0.2).abs().max() < 5e-3


def test_same_seed_same_sample_different_seed_different():
    logits = torch.randn(64, 5)
    for hard in (False, True):
        a = gumbel_softmax(logits, hard=hard, generator=gen(18))
        b = gumbel_softmax(logits, hard=hard, generator=gen(18))
        c = gumbel_softmax(logits, hard=hard, generator=gen(19))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
    assert torch.equal(gumbel_max(logits, generator=gen(20)), gumbel_max(logits, generator=gen(20)))
    assert not torch.equal(gumbel_max(logits, generator=gen(20)), gumbel_max(logits, generator=gen(21)))


def test_global_generator_is_used_without_generator():
    logits = torch.randn(64, 5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(22)
        a = gumbel_softmax(logits)
        torch.manual_seed(22)
        b = gumbel_softmax(logits)
    assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_rows_get_independent_noise(device):
    # Identical rows (here even a stride-0 view of one row) must not share noise.
    logits = torch.zeros(1, 5, device=device).expand(2000, 5)
    idx = gumbel_max(logits, generator=gen(23, device))
    assert (idx[0::2] != idx[1::2]).any()
    assert chi2_stat(torch.bincount(idx, minlength=5), [0.2] * 5) < CHI2_CRIT_999[4]
    # Pairs of identical rows agree at chance level (1/5), not always.
    agree = int((idx[0::2] == idx[1::2]).sum())
    assert within_binomial(agree, 1000, 0.2)
    y = gumbel_softmax(logits, generator=gen(24, device))
    assert not torch.equal(y[0], y[1])


# --------------------------------------------------------------------------
# Numerics: extreme and masked logits, dtypes, devices
# --------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard", [False, True])
def test_extreme_logits_stay_finite(device, dtype, hard):
    base = torch.tensor([[1e4, -1e4, 0.0, 5e3, -5e3], [-1e4, -1e4, -1e4, -1e4, 1e4], [1e4, 1e4, -1e4, 0.0, 1.0]])
    logits = base.repeat(100, 1).to(device, dtype).requires_grad_()
    upstream = torch.randn(logits.shape, generator=gen(25)).to(device, dtype)
    for tau in (1e-3, 0.1, 1.0, 1e4):
        y = gumbel_softmax(logits, tau=tau, hard=hard, generator=gen(26, device))
        assert y.dtype == dtype
        assert bool(torch.isfinite(y).all())
        (g,) = torch.autograd.grad(y, logits, upstream)
        assert g.dtype == dtype
        assert bool(torch.isfinite(g).all())
        if tau <= 1.0:  # a gap of 1e4 decides the draw (noise is below ~90)
            win = y.float().argmax(-1).view(100, 3)
            assert bool((win[:, 0] == 0).all()) and bool((win[:, 1] == 4).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard", [False, True])
def test_masked_choices_never_win_and_stay_finite(device, dtype, hard):
    inf = float("inf")
    base = torch.tensor([[0.0, -inf, 2.0, -inf, -1.0], [-inf, -inf, -inf, 3.0, -inf]])
    logits = base.repeat(5000, 1).to(device, dtype).requires_grad_()
    upstream = torch.randn(logits.shape, generator=gen(27)).to(device, dtype)
    masked = base.repeat(5000, 1).isinf().to(device)
    y = gumbel_softmax(logits, tau=0.5, hard=hard, generator=gen(28, device))
    assert bool(torch.isfinite(y).all())
    assert bool((y[masked] == 0).all())
    (g,) = torch.autograd.grad(y, logits, upstream)
    assert bool(torch.isfinite(g).all())
    assert bool((g[masked] == 0).all())
    idx = gumbel_max(logits, generator=gen(29, device)).view(5000, 2)
    assert set(idx[:, 0].unique().tolist()) == {0, 2, 4}  # every unmasked one wins sometimes
    assert bool((idx[:, 1] == 3).all())


def test_float64_stays_float64():
    logits = torch.randn(10, 5, dtype=torch.float64)
    assert gumbel_softmax(logits, generator=gen(30)).dtype == torch.float64
    assert gumbel_softmax(logits, hard=True, generator=gen(30)).dtype == torch.float64


def test_invalid_arguments():
    with pytest.raises(ValueError, match="tau must be a finite number > 0, got 0"):
        gumbel_softmax(torch.zeros(3), tau=0.0)
    with pytest.raises(ValueError, match="tau must be .* got nan"):
        gumbel_softmax(torch.zeros(3), tau=float("nan"))
    with pytest.raises(ValueError, match="logits must be float16, .* got dtype torch.int64"):
        gumbel_max(torch.zeros(3, dtype=torch.long))
    # A generator on another device type (meta tensors: no CUDA needed).
    with pytest.raises(ValueError, match="same device type"):
        gumbel_softmax(torch.zeros(3, device="meta"), generator=gen(0))
    # No axis of choices, or an empty one: named, not torch's argmax error (or a modulo by zero).
    for estimator in sampler.ESTIMATORS:
        with pytest.raises(ValueError, match=r"logits of shape \(\) have no dimension -1"):
            gumbel_softmax(torch.tensor(1.0), hard=True, estimator=estimator)
    with pytest.raises(ValueError, match=r"logits of shape \(3, 0\) hold no choices along dim -1"):
        gumbel_max(torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"logits of shape \(3,\) have no dimension 1"):
        gumbel_softmax(torch.zeros(3), dim=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_logits_with_cpu_generator_raise():
    with pytest.raises(ValueError, match="same device type"):
        gumbel_max(torch.zeros(3, device="cuda"), generator=gen(0, "cpu"))


# --------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------


def test_module_state_dict_round_trip():
    module = GumbelSoftmax(tau=0.37, hard=True, dim=0)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = GumbelSoftmax()
    assert (fresh.tau, fresh.hard, fresh.dim) == (1.0, False, -1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert (fresh.tau, fresh.hard, fresh.dim) == (0.37, True, 0)
    assert repr(fresh) == "GumbelSoftmax(tau=0.37, hard=True, dim=0)"


def test_module_in_sequential_matches_function_and_trains():
    torch.manual_seed(31)
    net = nn.Sequential(nn.Linear(4, 5), GumbelSoftmax(tau=0.5, hard=True))
    x = torch.randn(8, 4)
    with torch.random.fork_rng(devices=[]):
        y = net(x)
    with torch.random.fork_rng(devices=[]):
        expected = gumbel_softmax(net[0](x), tau=0.5, hard=True)
    assert torch.equal(y, expected)
    assert torch.equal(y.sum(-1), torch.ones(8))
    (y * torch.randn(8, 5)).sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    # Nested state dict carries the sampler's settings.
    state = net.state_dict()
    assert state["1._extra_state"] == {"tau": 0.5, "hard": True, "dim": -1, "estimator": "st", "samples": None}
    other = nn.Sequential(nn.Linear(4, 5), GumbelSoftmax())
    other.load_state_dict(state)
    assert other[1].tau == 0.5 and other[1].hard is True


def test_module_forward_with_generator_and_validation():
    module = GumbelSoftmax(tau=2.0)
    logits = torch.randn(4, 5)
    assert torch.equal(module(logits, generator=gen(32)), gumbel_softmax(logits, tau=2.0, generator=gen(32)))
    with pytest.raises(ValueError, match="tau must be a finite number > 0, got -1"):
        module.tau = -1
    with pytest.raises(ValueError, match="hard must be True or False"):
        GumbelSoftmax(hard="yes")
    with pytest.raises(ValueError, match="extra state"):
        module.set_extra_state({"tau": 1.0})
    # estimator and samples are checked when set, not at the next forward
    with pytest.raises(ValueError, match="unknown estimator 'local'"):
        module.estimator = "local"
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        module.samples = 0
    assert module.estimator == "st" and module.samples is None
    module.hard, module.estimator, module.samples = True, "gumbel_rao", 3
    assert module(logits).sum(dim=-1).tolist() == [1.0] * 4
    # a module pickled before they were properties holds them as plain attributes
    old = GumbelSoftmax(hard=True)
    old.__dict__["estimator"], old.__dict__["samples"] = old.__dict__.pop("_estimator"), old.__dict__.pop("_samples")
    assert (old.estimator, old.samples) == ("st", None) and old(logits).sum(dim=-1).tolist() == [1.0] * 4


# --------------------------------------------------------------------------
# Temperature schedules
# --------------------------------------------------------------------------


def test_schedule_endpoints():
    assert linear_tau(0.0) == 10.0 and linear_tau(1.0) == 0.1
    assert cosine_tau(0.0) == 10.0 and cosine_tau(1.0) == 0.1
    assert linear_tau(0.5, tau_max=4.0, tau_min=2.0) == 3.0
    assert math.isclose(cosine_tau(0.5, tau_max=4.0, tau_min=2.0), 3.0)
    assert constant_tau(0.3, 0.7) == 0.7
    assert exponential_tau(0, 5.0, 0.9) == 5.0
    assert math.isclose(exponential_tau(7, 5.0, 0.9), 5.0 * 0.9**7)
    assert exponential_tau(100, 2.0, 1.0) == 2.0


def test_schedules_monotone_non_increasing():
    grid = [i / 1000 for i in range(1001)]
    for fn in (linear_tau, cosine_tau):
        for hi, lo in ((10.0, 0.1), (5.0, 5.0), (1.0, 0.3333)):
            values = [fn(p, hi, lo) for p in grid]
            assert all(a >= b for a, b in zip(values, values[1:]))
            assert all(lo <= v <= hi for v in values)
    values = [exponential_tau(e, 5.0, 0.956) for e in range(200)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_tau_schedule_factory():
    gdas = tau_schedule("linear", tau_max=10.0, tau_min=0.1)
    assert gdas(0, 250) == 10.0 and gdas(249, 250) == 0.1
    assert math.isclose(gdas(1, 3), 5.05)
    assert tau_schedule("linear")(0, 1) == 10.0  # one epoch: the start value
    assert tau_schedule("cosine", tau_max=2.0, tau_min=1.0)(4, 5) == 1.0
    assert tau_schedule("constant", tau=3.0)(7, 10) == 3.0
    assert math.isclose(tau_schedule("exponential", tau0=5.0, decay=0.5)(3, 10), 0.625)
    taus = [gdas(e, 50) for e in range(50)]
    assert all(a > b for a, b in zip(taus, taus[1:]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: linear_tau(1.5), r"progress must be in \[0, 1\].*got 1.5"),
        (lambda: linear_tau(-0.1), r"progress must be in \[0, 1\].*got -0.1"),
        (lambda: cosine_tau(float("nan")), r"progress must be a real number, got nan"),
        (lambda: linear_tau(0.5, tau_max=1.0, tau_min=2.0), r"tau_min must be <= tau_max"),
        (lambda: linear_tau(0.5, tau_max=1.0, tau_min=0.0), r"tau_min must be a finite number > 0, got 0"),
        (lambda: constant_tau(0.5, tau=-2.0), r"tau must be a finite number > 0, got -2.0"),
        (lambda: constant_tau(0.5, tau="fast"), r"tau must be a real number, got 'fast'"),
        (lambda: exponential_tau(1, 5.0, 1.5), r"decay must be in \(0, 1\], got 1.5"),
        (lambda: exponential_tau(1, 5.0, 0.0), r"decay must be in \(0, 1\], got 0.0"),
        (lambda: exponential_tau(-1, 5.0, 0.9), r"epoch must be a finite number >= 0, got -1"),
        (lambda: exponential_tau(1, 0.0, 0.9), r"tau0 must be a finite number > 0, got 0.0"),
        (
            lambda: tau_schedule("step"),
            r"unknown tau schedule 'step'; choose one of \['constant', 'cosine', 'exponential', 'linear'\]",
        ),
        (
            lambda: tau_schedule("linear", tau0=5.0),
            r"takes the keyword arguments \['tau_max', 'tau_min'\], got unexpected \['tau0'\]",
        ),
        (lambda: tau_schedule("linear", tau_max=0.1, tau_min=10.0), r"tau_min must be <= tau_max"),
        (lambda: tau_schedule("exponential", decay=2.0), r"decay must be in \(0, 1\], got 2.0"),
        (lambda: tau_schedule("linear")(0, 0), r"total_epochs must be >= 1, got 0"),
        (lambda: tau_schedule("linear")(10, 10), r"epoch must be in \[0, total_epochs - 1\] = \[0, 9\].*got 10"),
        (lambda: tau_schedule("linear")(-1, 10), r"epoch must be in .*got -1"),
        (lambda: tau_schedule("linear")(1.5, 10), r"epoch must be an int, got 1.5"),
    ],
)
def test_schedule_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------
# Documentation and benchmark smoke test
# --------------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(sampler, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_bench_sampler_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bench_sampler",
            "--quick",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    got = {(tuple(row["shape"]), row["mode"]) for row in result["rows"]}
    assert got == {(shape, mode) for shape in [(6, 5), (4096, 1000)] for mode in ["forward", "forward+backward"]}
    for row in result["rows"]:
        for key in ("ours_median_us", "torch_median_us", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0
    assert result["machine"]["torch"] == torch.__version__
    # what a recorded figure needs besides the machine: the code and the command
    assert "commit" in result and "library_fingerprint" in result
    assert result["command"].startswith("python -m experiments.bench_sampler --quick")
