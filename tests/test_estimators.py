"""Gradient estimators of the hard Gumbel-softmax sample: straight-through, Gumbel-Rao, ReinMax.

Each property is checked against what the estimator promises: an exactly one-hot forward equal
to gumbel_max's draw, conditional noise that keeps the sampled argmax and has the right law,
Gumbel-Rao's expectation equal to straight-through's with a variance that falls with its sample
count, and ReinMax equal to its closed form. Seeds are fixed; statistical margins are several
standard errors wide.
"""

from __future__ import annotations

import math

import pytest
import torch

from nas.sampler import ESTIMATORS, GumbelSoftmax, conditional_gumbel, gumbel_max, gumbel_softmax

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
EULER_GAMMA = 0.5772156649015329


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_forward_is_one_hot_and_matches_gumbel_max(estimator, dtype, device):
    logits = (3 * torch.randn(64, 5, generator=gen(0))).to(device=device, dtype=dtype)
    logits[::3, 1] = float("-inf")  # masked choices are never drawn
    logits.requires_grad_(True)
    y = gumbel_softmax(logits, tau=0.7, hard=True, estimator=estimator, generator=gen(1, device))
    assert y.dtype == dtype and y.device.type == device
    index = gumbel_max(logits, generator=gen(1, device))
    assert torch.equal(y.detach(), torch.nn.functional.one_hot(index, 5).to(dtype))
    weights = torch.arange(5.0, device=device, dtype=dtype)
    (y * weights).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[::3, 1] == 0).all()  # no gradient to a masked choice
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_conditional_draws_keep_the_sampled_argmax(device):
    logits = 4 * torch.randn(200, 6, generator=gen(2)).to(device)
    logits[:, 0] += 12.0  # entry 0 nearly always wins: the draws given another winner are the rare ones
    logits[::5, 3] = float("-inf")
    index = torch.randint(0, 6, (200, 1), generator=gen(3)).to(device)
    index[::5] = torch.where(index[::5] == 3, torch.zeros_like(index[::5]), index[::5])  # never a masked winner
    z = conditional_gumbel(logits, index, samples=50, generator=gen(4, device))
    assert z.shape == (50, 200, 6)
    assert (z.argmax(dim=-1) == index.squeeze(-1)).all()
    assert torch.isneginf(z[:, ::5, 3]).all()


def test_conditional_draws_have_the_gumbel_law():
    """Winner drawn from softmax(logits), then noise given it: unconditional logits + Gumbel again.

    Checked on every entry's mean (logit + Euler's gamma, variance pi^2/6) and on the maximum's
    law, Gumbel at logsumexp(logits) whichever entry wins.
    """
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    n = 100_000
    index = gumbel_max(logits.expand(n, 4), generator=gen(5)).unsqueeze(-1)
    z = conditional_gumbel(logits.expand(n, 4), index, samples=1, generator=gen(6))[0]
    se = math.pi / math.sqrt(6 * n)
    assert torch.allclose(z.mean(0), logits + EULER_GAMMA, atol=5 * se)
    assert torch.allclose(z.var(0), torch.full((4,), math.pi**2 / 6), rtol=0.03)
    top = z.max(dim=-1).values
    for k in range(4):  # the maximum's mean does not depend on the winner
        mask = index.squeeze(-1) == k
        assert abs(
            float(top[mask].mean()) - (float(torch.logsumexp(logits, 0)) + EULER_GAMMA)
        ) < 6 * math.pi / math.sqrt(6 * int(mask.sum()))


def _gradients(estimator: str, samples, draws: int, tau: float = 1.0, seed: int = 0) -> torch.Tensor:
    """One gradient of <y, c> per draw, [draws, K], for fixed logits."""
    logits = torch.tensor([0.3, -0.5, 1.0, 0.0, -1.2]).expand(draws, 5).clone().requires_grad_(True)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    y = gumbel_softmax(logits, tau=tau, hard=True, estimator=estimator, samples=samples, generator=gen(seed))
    (y * c).sum().backward()
    return logits.grad


def test_gumbel_rao_has_straight_through_mean_and_less_variance():
    draws = 40_000
    st = _gradients("st", None, draws)
    rao = {k: _gradients("gumbel_rao", k, draws) for k in (1, 4, 16)}
    assert torch.equal(rao[1], st)  # one sample: the forward's own noise, straight-through exactly
    se = st.std(0) / math.sqrt(draws)
    for k in (4, 16):
        assert (rao[k].mean(0) - st.mean(0)).abs().max() < 5 * se.max()
    variance = {k: float(g.var(0).sum()) for k, g in rao.items()}
    assert variance[16] < variance[4] < variance[1]
    assert variance[16] < 0.8 * variance[1]


def softmax_jvp(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(diag(p) - p p^T) g, row by row: the softmax's Jacobian at p applied to g."""
    return p * g - p * (p * g).sum(-1, keepdim=True)


def test_reinmax_matches_its_closed_form():
    torch.manual_seed(0)
    for tau in (0.5, 1.0, 3.0):
        logits = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
        g = torch.randn(8, 5, dtype=torch.float64)
        y = gumbel_softmax(logits, tau=tau, hard=True, estimator="reinmax", generator=gen(7))
        (y * g).sum().backward()
        d = y.detach()
        pi0 = logits.detach().softmax(-1)
        pi1 = 0.5 * (d + (logits.detach() / tau).softmax(-1))

        expected = 2 * softmax_jvp(pi1, g) - 0.5 * softmax_jvp(pi0, g)
        assert torch.allclose(logits.grad, expected, atol=1e-12)


def test_bad_estimator_arguments_are_refused():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown estimator 'rao'"):
        gumbel_softmax(logits, hard=True, estimator="rao")
    with pytest.raises(ValueError, match="pass hard=True"):
        gumbel_softmax(logits, hard=False, estimator="reinmax")
    with pytest.raises(ValueError, match="gumbel_rao"):
        gumbel_softmax(logits, hard=True, estimator="st", samples=4)
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        gumbel_softmax(logits, hard=True, estimator="gumbel_rao", samples=0)
    with pytest.raises(ValueError, match="unknown estimator"):
        GumbelSoftmax(hard=True, estimator="nope")


def test_module_carries_the_estimator():
    module = GumbelSoftmax(tau=0.5, hard=True, estimator="gumbel_rao", samples=3)
    fresh = GumbelSoftmax()
    fresh.load_state_dict(module.state_dict())
    assert (fresh.estimator, fresh.samples) == ("gumbel_rao", 3)
    assert "gumbel_rao" in repr(fresh)
    logits = torch.randn(4, 5, requires_grad=True)
    y = fresh(logits, generator=gen(8))
    expected = gumbel_softmax(logits, 0.5, True, generator=gen(8), estimator="gumbel_rao", samples=3)
    assert torch.equal(y, expected)


def test_reinmax_is_exact_for_a_quadratic_at_tau_one():
    """ReinMax's claim: second-order accurate, so on f(D) = ||D - c||^2 at tau = 1 its mean is the
    exact gradient of E[f(D)], where straight-through's is far off (experiments/bench_estimators.py)."""
    alpha = torch.tensor([1.0, 0.2, -0.4, -1.0], dtype=torch.float64)
    c = torch.tensor([0.9, 0.6, 0.1, 0.3], dtype=torch.float64)
    p = alpha.softmax(-1)
    eye = torch.eye(4, dtype=torch.float64)
    exact = (((eye - c) ** 2).sum(-1)[:, None] * p[:, None] * (eye - p)).sum(0)
    draws = 200_000
    bias = {}
    for estimator in ("st", "reinmax"):
        a = alpha.expand(draws, 4).clone().requires_grad_(True)
        y = gumbel_softmax(a, tau=1.0, hard=True, estimator=estimator, generator=gen(9))
        ((y - c) ** 2).sum().backward()
        se = a.grad.std(0) / math.sqrt(draws)
        bias[estimator] = (a.grad.mean(0) - exact).abs() / se  # in standard errors
    assert bias["reinmax"].max() < 5
    assert bias["st"].max() > 50


def _reinmax_mean_gradient(alpha: torch.Tensor, c: torch.Tensor, tau: float) -> torch.Tensor:
    """E over the draw of ReinMax's d<c, y>/d alpha, exactly: its gradient depends on the drawn
    index alone (no noise enters it), so one draw per index, weighted by its probability, is the mean."""
    seen = {}
    for seed in range(1000):
        a = alpha.clone().requires_grad_(True)
        y = gumbel_softmax(a, tau=tau, hard=True, estimator="reinmax", generator=gen(seed))
        (y * c).sum().backward()
        seen.setdefault(int(y.argmax()), a.grad)
        if len(seen) == len(alpha):
            break
    p = alpha.softmax(-1)
    return sum(p[k] * g for k, g in seen.items())


def test_reinmax_turns_away_from_the_true_gradient_below_tau_one():
    """Why a search refuses ReinMax with τ < 1 (nas.config): its mean gradient on a linear loss is
    the true one at τ = 1 and points elsewhere at τ = 0.1."""
    alpha = torch.tensor([0.5, -0.3, 1.2, 0.0], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    p = alpha.softmax(-1)
    exact = (torch.diag(p) - torch.outer(p, p)) @ c  # d E[<c, D>] / d alpha

    def cosine(tau: float) -> float:
        g = _reinmax_mean_gradient(alpha, c, tau)
        return float(g @ exact / (g.norm() * exact.norm()))

    assert cosine(1.0) > 0.9999
    assert cosine(2.0) > 0.95
    assert cosine(0.1) < 0.5
