"""Regularisers of the architecture logits, by name (``search.arch.regularisers``).

A regulariser is a function ``(net: Supernet) -> scalar tensor`` of the logits, added to the
architecture step's objective with a weight that is a pure function of the epoch (so a resumed
search weighs it as the first run did). Each is registered under a name::

    import torch
    from nas.regularisers import register_regulariser

    @register_regulariser("logit_l1")
    def logit_l1(net):
        # net.logits(cell) has pruned entries at -inf: mask them (or use net.arch[cell] and net.alive(cell)).
        return torch.cat([net.arch[c].abs()[net.alive(c)] for c in net.arch]).mean()

then ``search.arch.regularisers: {logit_l1: 0.01}``. From the command line, register it in the
module ``supernet.model`` names (validation imports that module first), or from Python before
:func:`nas.search.run_search`.

A term must give pruned entries (``alive`` false, logit ``-inf``; a custom model's padding past a
label's own candidates too) no contribution and no NaN: they are never drawn again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Tuple

import torch

if TYPE_CHECKING:  # annotations only: the registry imports no supernet
    from .supernet import Supernet

Term = Callable[["Supernet"], torch.Tensor]
#: ``(epoch, epochs, warmup_epochs, weight) -> the weight for that epoch`` (0-based epoch).
Schedule = Callable[[int, int, int, float], float]


def linear_ramp(epoch: int, epochs: int, warmup_epochs: int, weight: float) -> float:
    """0 in warm-up, then linear up to ``weight`` at the last epoch (beta-DARTS's lambda)."""
    if weight == 0 or epoch < warmup_epochs:
        return 0.0
    return weight * (epoch - warmup_epochs + 1) / (epochs - warmup_epochs)


def constant_after_warmup(epoch: int, epochs: int, warmup_epochs: int, weight: float) -> float:
    """0 in warm-up (no architecture steps run then), ``weight`` after."""
    return 0.0 if epoch < warmup_epochs else weight


@dataclass(frozen=True)
class Regulariser:
    """A registered regulariser: its term and its weight's schedule."""

    name: str
    term: Term
    schedule: Schedule = linear_ramp

    def weight_at(self, epoch: int, epochs: int, warmup_epochs: int, weight: float) -> float:
        return self.schedule(epoch, epochs, warmup_epochs, weight)


REGULARISERS: Dict[str, Regulariser] = {}


def register_regulariser(name: str, schedule: Schedule = linear_ramp) -> Callable[[Term], Term]:
    """Decorator: register ``term`` under ``name`` (ValueError when the name is taken), with the
    schedule of its weight (default :func:`linear_ramp`). Returns the function unchanged."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a regulariser's name must be a non-empty string, got {name!r}")

    def add(term: Term) -> Term:
        if name in REGULARISERS:
            raise ValueError(f"a regulariser named {name!r} is registered already; pick another name")
        REGULARISERS[name] = Regulariser(name, term, schedule)
        return term

    return add


def unregister_regulariser(name: str) -> None:
    """Remove ``name`` from the registry (ValueError naming the known ones if it is not there)."""
    get_regulariser(name)
    del REGULARISERS[name]


def regulariser_names() -> Tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(REGULARISERS)


def get_regulariser(name: str) -> Regulariser:
    """The regulariser registered as ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGULARISERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown regulariser {name!r}; known: {', '.join(REGULARISERS)}") from None


# ---- the built-in ones -------------------------------------------------------------------
@register_regulariser("beta_decay")
def beta_decay_term(net: "Supernet") -> torch.Tensor:
    """beta-DARTS (Ye et al., CVPR 2022): mean over all edges of ``logsumexp(alpha_edge)``.

    Row by row, so cell types with different numbers of ops (or a custom model's labels) each
    count their own; a pruned entry is ``-inf``, which adds exp(-inf) = 0 and gets gradient 0.
    The gradient is ``softmax(alpha) / edges``. The mean is over every edge, as in beta-DARTS (which
    does not prune): with pruning, a decided edge's one logit gets a push that changes no
    probability, so the term weighs less on each undecided edge as edges are decided."""
    return torch.cat([torch.logsumexp(net.logits(c).float(), dim=-1) for c in net.arch]).mean()


@register_regulariser("logit_l2", schedule=constant_after_warmup)  # a plain penalty: on from the first arch step
def logit_l2_term(net: "Supernet") -> torch.Tensor:
    """Mean of ``alpha**2`` over the entries still alive, which pulls the logits toward 0.

    Unlike the architecture optimiser's weight decay, pruned entries (and a custom model's padding)
    are not counted. Masked with ``where`` on the raw logits: squaring the ``-inf`` of
    :meth:`Supernet.logits` would give an infinite term and NaN gradients."""
    total, count = None, None
    for c in net.arch:
        alive = net.alive(c)
        s = torch.where(alive, net.arch[c].float(), 0.0).square().sum()
        n = alive.sum()
        total, count = (s, n) if total is None else (total + s, count + n)
    return total / count
