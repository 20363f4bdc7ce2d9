"""Gumbel-softmax sampling of architecture choices, and temperature schedules.

Reparameterisation
------------------
A differentiable NAS supernet keeps one vector of unnormalised logits per
edge, ``alpha`` (shape ``[..., K]`` for ``K`` candidate operations), and wants
to *sample* one operation per edge with probabilities ``p = softmax(alpha)``
while still sending a gradient back to ``alpha``. Sampling from
``Categorical(p)`` directly has no gradient. The trick is to move the
randomness into a noise tensor that does not depend on ``alpha``::

    G_k ~ Gumbel(0, 1), independent        # G = -log(E), E ~ Exp(1)
    k*  = argmax_k (alpha_k + G_k)          # an exact sample from Categorical(p)

Then replace the non-differentiable ``argmax`` by a softmax at temperature
``tau``::

    y = softmax((alpha + G) / tau)          # a point of the simplex, smooth in alpha

Why the Gumbel-max trick samples ``p``
--------------------------------------
Write ``G_k = -log E_k`` with ``E_k ~ Exp(1)``. Then
``alpha_k + G_k = -log(E_k / exp(alpha_k))`` and, since ``-log`` is
decreasing, ``argmax_k (alpha_k + G_k) = argmin_k E_k / exp(alpha_k)``.
Dividing an ``Exp(1)`` variable by ``r`` gives an ``Exp(r)`` one, so this is a
race between independent exponential clocks with rates
``r_k = exp(alpha_k)``. Clock ``k`` rings first at time ``t`` if it rings
then (density ``r_k exp(-r_k t)``) and every other clock is still silent
(probability ``exp(-r_j t)`` each), so with ``R = sum_j r_j``::

    P(k wins) = integral_0^inf r_k exp(-R t) dt = r_k / R = softmax(alpha)_k

Two consequences used below:

* Adding a constant ``c`` to every logit of a row multiplies every rate by
  ``e^c`` and changes no winner, and ``softmax`` is shift-invariant too. So
  unnormalised logits can be used as they are; taking ``log_softmax`` first
  would spend a pass over the data and change nothing. Never take
  ``log(alpha)``: the logits are already on the log scale.
* A logit of ``-inf`` is a clock with rate 0: it never wins (masking).

The temperature ``tau``
-----------------------
``softmax(z / tau)`` tends to the one-hot vector of ``argmax z`` as
``tau -> 0`` (an exact sample, but the gradient vanishes almost everywhere and
its variance grows) and to the uniform vector ``1/K`` as ``tau -> inf`` (smooth
and low-variance, but blind to ``alpha``). GDAS anneals ``tau`` linearly from
10 to 0.1 over the search; see :func:`linear_tau` and :func:`tau_schedule`.

Straight-through
----------------
With ``hard=True`` the forward value is the one-hot vector of the sampled
choice, so a supernet evaluates exactly one operation per edge, while the
backward pass uses the gradient of the soft sample::

    y = y_hard - y_soft.detach() + y_soft
    # forward: y == y_hard (exactly so in floating point, see gumbel_softmax)
    # backward: dy/dalpha == dy_soft/dalpha (y_hard and the detached copy are constants)

Estimators for the hard sample
------------------------------
``estimator`` picks the backward of ``hard=True``; the forward is always the
exact one-hot ``D`` of ``k* = argmax(alpha + G)``, the same index that
:func:`gumbel_max` draws from the same generator state. With ``g = dL/dy``:

* ``"st"`` (straight-through, Jang et al. 2017; GDAS)::

      dL/dalpha = J_tau(alpha + G)^T g,      J_tau(z) = d softmax(z / tau) / dz

* ``"gumbel_rao"`` (Paulus, Maddison & Krause, ICLR 2021): the straight-through
  Jacobian averaged over ``K = samples`` noise draws that all give the same
  ``k*`` (Rao-Blackwellisation: the same expectation as ``"st"``, lower
  variance)::

      dL/dalpha = (1/K) sum_{s=1..K} J_tau(alpha + G_s)^T g,   G_s ~ Gumbel | argmax(alpha + G_s) = k*

  ``G_1`` is the forward's own noise (so ``samples=1`` is ``"st"`` exactly). The
  others are drawn given ``k*``: the maximum ``M = logsumexp(alpha) - log E_k*``
  is independent of which entry wins, and every other entry is a Gumbel with
  location ``alpha_j`` truncated below ``M``:
  ``alpha_j + G_j = -log(exp(-M) + E_j exp(-alpha_j))``, ``E ~ Exp(1)``.

* ``"reinmax"`` (Liu et al., NeurIPS 2023): second-order accuracy (Heun's
  method) at straight-through's cost. With ``pi0 = softmax(alpha)`` and
  ``pi1 = (D + softmax(alpha / tau)) / 2``::

      dL/dalpha = 2 (diag(pi1) - pi1 pi1^T) g - 1/2 (diag(pi0) - pi0 pi0^T) g

  written as ``y = D + pi2 - stopgrad(pi2)`` with
  ``pi2 = 2 softmax(stopgrad(log pi1 - alpha) + alpha) - pi0 / 2``.
  It is derived for ``tau >= 1``: below, its mean gradient turns away from the true one
  (cosine 0.32 at ``tau = 0.1`` on a linear loss of 4 choices, 1.0 at ``tau = 1``;
  tests/test_estimators.py), so a search with it refuses a τ schedule that falls below 1.

A sample is not the mode
------------------------
``argmax(gumbel_softmax(alpha))`` is a random draw from ``p``, not the most
likely choice ``argmax(alpha)``. The two differ with probability
``1 - max_k p_k``. To read off the final architecture, use ``argmax(alpha)``.

Example
-------
>>> import torch
>>> from nas.sampler import gumbel_softmax, gumbel_max
>>> alpha = torch.zeros(6, 5, requires_grad=True)  # 6 edges, 5 candidate ops
>>> gen = torch.Generator().manual_seed(0)
>>> y = gumbel_softmax(alpha, tau=10.0, hard=True, generator=gen)
>>> y.sum(dim=-1)  # one operation per edge
tensor([1., 1., 1., 1., 1., 1.], grad_fn=<SumBackward1>)
>>> same = gumbel_max(alpha, generator=torch.Generator().manual_seed(0))
>>> bool((y.argmax(dim=-1) == same).all())  # same seed, same draw
True
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import Tensor, nn

__all__ = [
    "gumbel_softmax",
    "gumbel_max",
    "conditional_gumbel",
    "GumbelSoftmax",
    "ESTIMATORS",
    "constant_tau",
    "linear_tau",
    "exponential_tau",
    "cosine_tau",
    "tau_schedule",
    "TauSchedule",
    "SCHEDULES",
]

# Input dtype -> (dtype the noise and arithmetic use, its smallest normal number).
# Half types are computed in float32: with logits of +-1e4 and a small tau,
# (logits + G) / tau overflows float16 (max 65504) and loses all precision in
# bfloat16. Looked up once per call (cheaper than several dtype checks).
_COMPUTE = {
    torch.float16: (torch.float32, torch.finfo(torch.float32).tiny),
    torch.bfloat16: (torch.float32, torch.finfo(torch.float32).tiny),
    torch.float32: (torch.float32, torch.finfo(torch.float32).tiny),
    torch.float64: (torch.float64, torch.finfo(torch.float64).tiny),
}
# From this many elements on, gumbel_softmax divides by tau in place (see there).
_IN_PLACE_MIN_NUMEL = 1 << 16
#: The backward passes of a hard sample (see the module docstring).
ESTIMATORS = ("st", "gumbel_rao", "reinmax")
#: Gumbel-Rao's number of conditional draws when ``samples`` is not given.
GUMBEL_RAO_SAMPLES = 10


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


def _perturbed_logits(logits: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Return ``logits + G`` as a fresh float32 (float64) tensor, G ~ Gumbel(0,1).

    The one place where noise is drawn, shared by :func:`gumbel_softmax` and
    :func:`gumbel_max`, so that equal generator states give equal samples.
    The result is a new tensor that callers may overwrite in place.
    """
    try:
        dtype, tiny = _COMPUTE[logits.dtype]
    except KeyError:
        raise ValueError(f"logits must be float16, bfloat16, float32 or float64, got dtype {logits.dtype}") from None
    if generator is not None and generator.device.type != logits.device.type:
        raise ValueError(
            f"generator is on device {generator.device}, logits on {logits.device}: "
            "the generator must be on the same device type as the logits "
            "(e.g. torch.Generator(device=logits.device))"
        )
    # empty_like keeps the layout of dense logits; for expanded (stride-0)
    # logits it allocates a dense tensor, so every row gets its own noise.
    noise = torch.empty_like(logits, dtype=dtype)
    # E ~ Exp(1). Clamping at the smallest normal number makes log(0) = -inf
    # impossible without a resample-until-finite loop; the clamp moves
    # probability mass of less than 1e-37 and bounds G above by -log(tiny)
    # (87 in float32).
    noise.exponential_(generator=generator).clamp_min_(tiny)
    # log(E) ~ -Gumbel(0,1), so logits - log(E) = logits + G with G ~ Gumbel(0,1).
    # Subtracting (rather than negating in place, then adding) saves a pass, and
    # its backward hands the gradient to logits unchanged. Half logits are
    # promoted to float32 here.
    return logits - noise.log_()


def _check_choices(logits: Tensor, dim: int) -> None:
    """The choices' axis exists and holds at least one choice (shapes only: no device sync)."""
    if logits.dim() == 0 or not -logits.dim() <= dim < logits.dim():
        raise ValueError(f"logits of shape {tuple(logits.shape)} have no dimension {dim} to hold the choices")
    if logits.shape[dim] == 0:
        raise ValueError(f"logits of shape {tuple(logits.shape)} hold no choices along dim {dim}")


def _check_estimator(estimator: str, samples: Optional[int], hard: bool) -> int:
    """Validate ``estimator`` and ``samples``; return the number of Jacobians averaged."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if estimator != "st" and not hard:
        raise ValueError(f"estimator {estimator!r} is a backward for hard samples; pass hard=True or estimator='st'")
    if samples is None:
        return GUMBEL_RAO_SAMPLES if estimator == "gumbel_rao" else 1
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    if samples != 1 and estimator != "gumbel_rao":
        raise ValueError(f"samples={samples} applies to estimator='gumbel_rao' only; {estimator!r} takes one sample")
    return int(samples)


def conditional_gumbel(
    logits: Tensor,
    index: Tensor,
    samples: int,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Draw ``logits + G`` given that its argmax along ``dim`` is ``index``: ``[samples, *logits.shape]``.

    ``index`` holds the winning entry (shaped like ``logits`` with ``dim`` of size 1, as
    ``argmax(keepdim=True)`` returns it). Every draw has ``index`` as its argmax, and the draws
    are distributed as ``logits + G``, ``G ~ Gumbel(0, 1)``, conditioned on that event: the
    maximum is ``logsumexp(logits) - log E_index`` (independent of which entry wins) and each
    other entry is a Gumbel located at its logit, truncated below the maximum. ``-inf`` logits
    stay ``-inf``. Not differentiable (the draws are noise); float32 for half inputs.

    Example:
        >>> logits = torch.tensor([[0.0, 1.0, 2.0]])
        >>> z = conditional_gumbel(logits, torch.tensor([[0]]), samples=100,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> z.shape, bool((z.argmax(dim=-1) == 0).all())
        (torch.Size([100, 1, 3]), True)
    """
    logits = logits.detach()
    dtype, tiny = _COMPUTE[logits.dtype]
    logits = logits.to(dtype)
    dim = dim % logits.dim()
    e = torch.empty((samples, *logits.shape), dtype=dtype, device=logits.device)
    e.exponential_(generator=generator).clamp_min_(tiny)
    index = index.unsqueeze(0).expand(samples, *index.shape)
    # The maximum: Gumbel located at logsumexp(logits), independent of the winner.
    top = torch.logsumexp(logits, dim, keepdim=True).unsqueeze(0) - e.gather(dim + 1, index).log()
    # The others: alpha_j + G_j truncated below top, -log(exp(-top) + E_j exp(-alpha_j)).
    z = -torch.logaddexp(-top, e.log() - logits)
    return z.scatter(dim + 1, index, top)


def gumbel_softmax(
    logits: Tensor,
    tau: float = 1.0,
    hard: bool = False,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
    estimator: str = "st",
    samples: Optional[int] = None,
) -> Tensor:
    """Sample from the Gumbel-softmax (Concrete) distribution over ``dim``.

    Same meaning and result as :func:`torch.nn.functional.gumbel_softmax`,
    plus a ``generator`` for reproducible draws, float32 arithmetic for
    float16/bfloat16 inputs, noise that can never be infinite, and a choice of
    gradient estimator for hard samples.

    Args:
        logits: unnormalised log-probabilities ``[..., K, ...]``; finite or
            ``-inf`` (a masked choice: never sampled). Each row along ``dim``
            needs at least one finite entry. float16, bfloat16, float32 or
            float64, on any device.
        tau: temperature, ``> 0``. Small: near one-hot; large: near uniform.
        hard: if ``True``, return the exact one-hot vector of the sampled
            choice, with the gradient that ``estimator`` gives.
        dim: the dimension holding the ``K`` choices.
        generator: a ``torch.Generator`` on the same device as ``logits``
            (``torch.Generator(device="cuda")`` for CUDA logits); ``None``
            uses the global generator of that device. The forward's noise is
            drawn first, so the sample equals :func:`gumbel_max`'s for the same
            generator state whatever the estimator.
        estimator: the backward of a hard sample: ``"st"`` (straight-through),
            ``"gumbel_rao"`` (straight-through averaged over noise conditioned
            on the sample) or ``"reinmax"`` (second order); formulas in the
            module docstring. Soft samples take ``"st"`` only (their exact
            gradient).
        samples: ``"gumbel_rao"``'s number of Jacobians averaged (the forward's
            own and ``samples - 1`` conditional draws); default 10. Other
            estimators take 1.

    Returns:
        A tensor shaped and typed like ``logits`` that sums to 1 along ``dim``:
        the soft sample ``softmax((logits + G) / tau)``, or its one-hot
        ``argmax`` if ``hard``. Batched rows get independent noise.

    Example:
        >>> alpha = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
        >>> y = gumbel_softmax(alpha, tau=0.5, hard=True,
        ...                    generator=torch.Generator().manual_seed(1))
        >>> sorted(y.detach().flatten().tolist())
        [0.0, 0.0, 1.0]
        >>> (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()  # grads flow
        >>> bool(torch.isfinite(alpha.grad).all())
        True
        >>> y = gumbel_softmax(alpha, tau=0.5, hard=True, estimator="gumbel_rao", samples=8)
        >>> y.detach().sum().item()
        1.0
    """
    if not (tau > 0.0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    k_samples = _check_estimator(estimator, samples, hard)
    _check_choices(logits, dim)
    z = _perturbed_logits(logits, generator)  # logits + G, G ~ Gumbel(0,1)
    if hard:
        # The argmax is taken before the division by tau so that it matches
        # gumbel_max bit for bit (dividing could round two close values into a
        # tie). It is the exact categorical sample; tau does not change it.
        index = z.argmax(dim, keepdim=True)
        y_hard = torch.zeros_like(z).scatter_(dim, index, 1.0)
        if estimator == "reinmax":
            y = y_hard + _reinmax_surrogate(logits.to(z.dtype), y_hard, tau, dim)
            return y if y.dtype == logits.dtype else y.to(logits.dtype)
    # (logits + G) / tau ~ Gumbel(logits / tau, 1 / tau). z is our own buffer,
    # so big tensors are divided in place (one allocation and one pass of
    # memory traffic fewer); for small ones autograd's in-place bookkeeping
    # costs more than the allocation it saves.
    z = z.div_(tau) if z.numel() >= _IN_PLACE_MIN_NUMEL else z / tau
    y_soft = z.softmax(dim)
    if hard:
        if k_samples > 1:  # Gumbel-Rao: average the Jacobian over draws with the same argmax
            y_soft = _gumbel_rao_soft(logits.to(z.dtype), y_soft, index, k_samples, tau, dim, generator)
        # Straight-through. The forward value is exactly one-hot: 0 - s + s == 0,
        # and for s in [0, 1] the rounded (1 - s) + s is exactly 1 in binary
        # floating point (1 - s is exact for s >= 1/2; otherwise it lies in
        # (1/2, 1) and its rounding error is at most half the float spacing
        # just below 1, which rounding the sum to nearest-even removes).
        y = y_hard - y_soft.detach() + y_soft
    else:
        y = y_soft
    return y if y.dtype == logits.dtype else y.to(logits.dtype)


def _gumbel_rao_soft(
    logits: Tensor,
    y_soft: Tensor,
    index: Tensor,
    samples: int,
    tau: float,
    dim: int,
    generator: Optional[torch.Generator],
) -> Tensor:
    """Mean of the forward's soft sample and ``samples - 1`` soft samples whose noise is drawn
    given ``index``: a differentiable function of ``logits`` whose Jacobian is Gumbel-Rao's."""
    dim = dim % logits.dim()
    z = conditional_gumbel(logits, index, samples - 1, dim=dim, generator=generator)
    # The noise G = z - logits, held fixed; -inf logits keep no noise (and stay -inf).
    noise = torch.where(torch.isfinite(z), z - logits.detach(), torch.zeros_like(z))
    soft = ((logits + noise) / tau).softmax(dim + 1)
    return (y_soft + soft.sum(0)) / samples


def _reinmax_surrogate(logits: Tensor, y_hard: Tensor, tau: float, dim: int) -> Tensor:
    """``pi2 - stopgrad(pi2)``: exactly 0 going forward, ReinMax's gradient going back."""
    pi0 = logits.softmax(dim)
    pi1 = 0.5 * (y_hard + (logits.detach() / tau).softmax(dim))
    # softmax(c + alpha) with c = log(pi1) - alpha held fixed: value pi1, Jacobian the softmax's at
    # pi1. Masked (-inf) logits have pi1 = 0; c = 0 there keeps them at -inf without a nan.
    c = torch.where(torch.isfinite(logits), pi1.log() - logits.detach(), torch.zeros_like(pi1))
    pi2 = 2.0 * (c + logits).softmax(dim) - 0.5 * pi0
    return pi2 - pi2.detach()


def gumbel_max(
    logits: Tensor,
    dim: int = -1,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Draw exact samples from ``Categorical(softmax(logits))`` along ``dim``.

    Returns ``argmax(logits + G, dim)`` with ``G ~ Gumbel(0, 1)``: a LongTensor
    of indices, shaped like ``logits`` without ``dim``. Not differentiable.
    With the same generator state it draws the same noise as
    :func:`gumbel_softmax`, so ``gumbel_softmax(..., hard=True).argmax(dim)``
    equals this for any ``tau``. ``-inf`` logits are never drawn; see
    :func:`gumbel_softmax` for ``generator`` and devices.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> idx = gumbel_max(torch.tensor([0.0, -float("inf"), 0.0]).expand(1000, 3),
        ...                  generator=gen)
        >>> bool((idx != 1).all())  # the masked choice never wins
        True
    """
    _check_choices(logits, dim)
    return _perturbed_logits(logits.detach(), generator).argmax(dim)


class GumbelSoftmax(nn.Module):
    """Module form of :func:`gumbel_softmax`, with ``tau``, ``hard``, ``dim``, ``estimator`` and ``samples``.

    The settings are plain Python attributes (so reading ``tau`` never waits
    for a GPU) and travel in ``state_dict()`` as extra state: loading the state
    dict into a fresh module restores them. Set ``module.tau`` every epoch from
    a :func:`tau_schedule`.

    Args:
        tau: temperature, ``> 0``.
        hard: one-hot forward with straight-through gradient.
        dim: the dimension holding the choices.
        estimator: the hard sample's backward, ``"st"``, ``"gumbel_rao"`` or ``"reinmax"``.
        samples: Gumbel-Rao's number of averaged Jacobians (``None``: its default).

    Example:
        >>> sampler = GumbelSoftmax(tau=10.0, hard=True)
        >>> schedule = tau_schedule("linear", tau_max=10.0, tau_min=0.1)
        >>> sampler.tau = schedule(epoch=49, total_epochs=50)
        >>> sampler.tau
        0.1
        >>> fresh = GumbelSoftmax()
        >>> _ = fresh.load_state_dict(sampler.state_dict())
        >>> fresh
        GumbelSoftmax(tau=0.1, hard=True, dim=-1)
        >>> weights = nn.Sequential(nn.Linear(4, 5), fresh)(torch.randn(6, 4))
        >>> weights.sum(dim=-1).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        tau: float = 1.0,
        hard: bool = False,
        dim: int = -1,
        estimator: str = "st",
        samples: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.tau = tau
        self.hard = hard
        self.dim = dim
        _check_estimator(estimator, samples, hard=True)
        self._estimator, self._samples = estimator, samples

    @property
    def tau(self) -> float:
        return self._tau

    # Checked when set, as tau is (their pairing, e.g. samples with gumbel_rao only, at the next call).
    # A module pickled before these were properties holds them as plain attributes.
    @property
    def estimator(self) -> str:
        return self.__dict__.get("_estimator", self.__dict__.get("estimator", "st"))

    @estimator.setter
    def estimator(self, value: str) -> None:
        _check_estimator(value, None, hard=True)
        self._estimator = value

    @property
    def samples(self) -> Optional[int]:
        return self.__dict__.get("_samples", self.__dict__.get("samples"))

    @samples.setter
    def samples(self, value: Optional[int]) -> None:
        if value is not None:
            _check_estimator("gumbel_rao", value, hard=True)
        self._samples = value

    @tau.setter
    def tau(self, value: float) -> None:
        self._tau = _positive("tau", value)

    @property
    def hard(self) -> bool:
        return self._hard

    @hard.setter
    def hard(self, value: bool) -> None:
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ValueError(f"hard must be True or False, got {value!r}")
        self._hard = bool(value)

    @property
    def dim(self) -> int:
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"dim must be an int, got {value!r}")
        self._dim = int(value)

    def forward(self, logits: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return gumbel_softmax(
            logits,
            tau=self._tau,
            hard=self._hard,
            dim=self._dim,
            generator=generator,
            estimator=self.estimator if self._hard else "st",
            samples=self.samples if self._hard else None,
        )

    def get_extra_state(self) -> Dict[str, Any]:
        return {
            "tau": self._tau,
            "hard": self._hard,
            "dim": self._dim,
            "estimator": self.estimator,
            "samples": self.samples,
        }

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or not {"tau", "hard", "dim"} <= set(state):
            raise ValueError(
                f"GumbelSoftmax extra state must be a dict with keys 'tau', 'hard' and 'dim', got {state!r}"
            )
        estimator, samples = state.get("estimator", "st"), state.get("samples")  # older states: "st"
        _check_estimator(estimator, samples, hard=True)
        self.tau = state["tau"]
        self.hard = state["hard"]
        self.dim = state["dim"]
        self._estimator, self._samples = estimator, samples

    def extra_repr(self) -> str:
        text = f"tau={self._tau!r}, hard={self._hard}, dim={self._dim}"
        if self.estimator != "st":
            text += f", estimator={self.estimator!r}, samples={self.samples!r}"
        return text


# --------------------------------------------------------------------------
# Temperature schedules
# --------------------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return number


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if not (number > 0.0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _progress(progress: Any) -> float:
    number = _number("progress", progress)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"progress must be in [0, 1] (epoch / (total_epochs - 1)), got {progress!r}")
    return number


def _tau_range(tau_max: Any, tau_min: Any) -> tuple[float, float]:
    hi = _positive("tau_max", tau_max)
    lo = _positive("tau_min", tau_min)
    if lo > hi:
        raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min!r} > tau_max={tau_max!r}")
    return hi, lo


def _lerp(start: float, end: float, t: float) -> float:
    """``start + t * (end - start)``, exactly ``end`` at ``t == 1``, monotone in t.

    The plain formula can miss ``end`` by an ulp (10 - 9.9 != 0.1), and the
    symmetric ``(1 - t) * start + t * end`` is not monotone; this is the
    C++20 ``std::lerp`` recipe restricted to ``t`` in [0, 1] and ``end <= start``.
    """
    if t == 1.0:
        return end
    return max(end, start + t * (end - start))


def constant_tau(progress: float, tau: float = 1.0) -> float:
    """``tau`` at every point of the search (``progress`` is only validated)."""
    _progress(progress)
    return _positive("tau", tau)


def linear_tau(progress: float, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """Linear decay from ``tau_max`` (progress 0) to ``tau_min`` (progress 1), as GDAS.

    >>> linear_tau(0.0), linear_tau(0.5), linear_tau(1.0)
    (10.0, 5.05, 0.1)
    """
    p = _progress(progress)
    hi, lo = _tau_range(tau_max, tau_min)
    return _lerp(hi, lo, p)


def cosine_tau(progress: float, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """Half-cosine decay from ``tau_max`` (progress 0) to ``tau_min`` (progress 1).

    Flat at both ends, steepest in the middle of the search.
    """
    p = _progress(progress)
    hi, lo = _tau_range(tau_max, tau_min)
    # Weight of tau_min: 0 at p = 0, exactly 1 at p = 1 (cos(pi) == -1.0).
    return _lerp(hi, lo, 0.5 * (1.0 - math.cos(math.pi * p)))


def exponential_tau(epoch: float, tau0: float = 5.0, decay: float = 0.956) -> float:
    """``tau0 * decay ** epoch``: FBNet's schedule (tau0 = 5, decay = exp(-0.045)).

    Unlike the other schedules this takes the epoch (``>= 0``), not the progress.

    >>> exponential_tau(0, 5.0, 0.5), exponential_tau(3, 5.0, 0.5)
    (5.0, 0.625)
    """
    e = _number("epoch", epoch)
    if not (0.0 <= e < math.inf):
        raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
    t0 = _positive("tau0", tau0)
    d = _number("decay", decay)
    if not 0.0 < d <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    return t0 * d**e


#: Schedule name -> pure function (progress, or epoch for "exponential", **kwargs).
SCHEDULES: Dict[str, Callable[..., float]] = {
    "constant": constant_tau,
    "linear": linear_tau,
    "exponential": exponential_tau,
    "cosine": cosine_tau,
}
_SCHEDULE_KWARGS: Dict[str, tuple[str, ...]] = {
    "constant": ("tau",),
    "linear": ("tau_max", "tau_min"),
    "exponential": ("tau0", "decay"),
    "cosine": ("tau_max", "tau_min"),
}


def _epoch_args(epoch: Any, total_epochs: Any) -> tuple[int, int]:
    for name, value in (("epoch", epoch), ("total_epochs", total_epochs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs!r}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(
            f"epoch must be in [0, total_epochs - 1] = [0, {int(total_epochs) - 1}] "
            f"(epochs count from 0), got {epoch!r}"
        )
    return int(epoch), int(total_epochs)


@dataclass(frozen=True)
class TauSchedule:
    """``tau`` as a function of ``(epoch, total_epochs)``; build with :func:`tau_schedule`.

    Epochs count from 0. Progress is ``epoch / (total_epochs - 1)`` (0 when
    ``total_epochs == 1``), so the first epoch uses the start value and the
    last epoch the end value (GDAS: 10 at epoch 0, 0.1 at the last epoch).
    The exponential schedule uses the epoch itself.
    """

    name: str
    kwargs: Mapping[str, float] = field(default_factory=dict)

    def __call__(self, epoch: int, total_epochs: int) -> float:
        epoch, total_epochs = _epoch_args(epoch, total_epochs)
        if self.name == "exponential":
            return exponential_tau(epoch, **self.kwargs)
        progress = epoch / (total_epochs - 1) if total_epochs > 1 else 0.0
        return SCHEDULES[self.name](progress, **self.kwargs)


def tau_schedule(name: str, **kwargs: float) -> TauSchedule:
    """Return the schedule ``name`` as a callable ``(epoch, total_epochs) -> tau``.

    Names and keyword arguments (defaults in brackets):
    ``"constant"``: tau [1.0]; ``"linear"`` and ``"cosine"``: tau_max [10.0],
    tau_min [0.1]; ``"exponential"``: tau0 [5.0], decay [0.956].
    Arguments are checked here, not at the first call.

    >>> schedule = tau_schedule("linear", tau_max=10.0, tau_min=0.1)
    >>> [round(schedule(epoch, 5), 4) for epoch in range(5)]
    [10.0, 7.525, 5.05, 2.575, 0.1]
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown tau schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    allowed = _SCHEDULE_KWARGS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"tau schedule {name!r} takes the keyword arguments {list(allowed)}, got unexpected {unknown}")
    # Validate now (at the start of the schedule) so that a bad config fails
    # before the search runs, and store plain floats.
    if name == "exponential":
        exponential_tau(0, **kwargs)
    else:
        SCHEDULES[name](0.0, **kwargs)
    return TauSchedule(name, {key: float(value) for key, value in kwargs.items()})
