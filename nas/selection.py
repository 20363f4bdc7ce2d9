"""Scoring the ops of a supernet's edges by its validation loss (for progressive pruning).

A one-shot supernet's logits move slowly and noisily in a short search, so ranking ops by their
probabilities says little early on. This module measures instead: for every edge and every op it
may still choose, the supernet's mean cross-entropy on fixed validation batches with that edge
restricted to that op (``perturb="keep"``) or with that op removed from it (``perturb="remove"``,
as DARTS-PT's selection does), every other edge as the supernet runs it (sampled from the current
distribution in gdas mode, mixed in the soft modes). The same batches and the same Gumbel noise
serve every (edge, op) pair (common random numbers), so the differences between ops are not
drowned by sampling noise. This is the perturbation idea of DARTS-PT (Wang et al., ICLR 2021).
:func:`architecture_losses` measures whole architectures the same way (``search.derive: window``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .supernet import Supernet

Batch = Tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def edge_op_losses(
    net: Supernet, batches: Sequence[Batch], seed: int = 0, perturb: str = "keep"
) -> Dict[str, torch.Tensor]:
    """Per cell type, an ``[edges, ops]`` tensor of mean validation loss (``inf`` where pruned).

    ``perturb="keep"``: the loss with the edge restricted to that op (low: a good op).
    ``perturb="remove"``: the loss with that op removed from the edge, the others renormalised
    (high: an op the supernet needs).

    The network runs in training mode (batch statistics, as the search trains it); its batch-norm
    buffers and the global random state are restored afterwards, so scoring leaves the search
    exactly as it found it.
    """
    if not batches:
        raise ValueError("edge_op_losses needs at least one validation batch")
    if perturb not in ("keep", "remove"):
        raise ValueError(f"perturb must be 'keep' or 'remove', got {perturb!r}")
    out: Dict[str, torch.Tensor] = {}
    with _measuring(net, batches):
        try:
            for cell in net.arch:
                alive = net.alive(cell)
                losses = torch.full(tuple(alive.shape), float("inf"))
                for e in range(alive.shape[0]):
                    row = alive[e].clone()
                    choices: List[int] = row.nonzero().flatten().tolist()
                    if len(choices) < 2:
                        continue  # decided: nothing to compare
                    for k in choices:
                        if perturb == "keep":
                            alive[e] = False
                            alive[e, k] = True
                        else:
                            alive[e] = row
                            alive[e, k] = False
                        net._alive_cache = None
                        losses[e, k] = _mean_loss(net, batches, seed)
                    alive[e] = row
                    net._alive_cache = None
                out[cell] = losses
        finally:
            net._alive_cache = None
    return out


@torch.no_grad()
def architecture_losses(net: Supernet, batches: Sequence[Batch], archs: Sequence[Any], seed: int = 0) -> List[float]:
    """The supernet's mean validation loss with each architecture of ``archs`` forced (what
    :meth:`Supernet.force` takes), on the same batches, in training mode as :func:`edge_op_losses`;
    the network and the global random state are left as they were."""
    if not batches:
        raise ValueError("architecture_losses needs at least one validation batch")
    out = []
    with _measuring(net, batches):
        for arch in archs:
            with net.forced(arch):
                out.append(_mean_loss(net, batches, seed))
    return out


@contextlib.contextmanager
def _measuring(net: Supernet, batches: Sequence[Batch]) -> Iterator[None]:
    """Training mode (batch statistics, as the search trains), with the batch-norm buffers and the
    global random state restored afterwards, so measuring leaves the search as it found it."""
    was_training = net.training
    buffers = {name: b.clone() for name, b in net.named_buffers() if not name.startswith("alive_")}
    device = batches[0][0].device
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    net.train()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for name, b in net.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
        net.train(was_training)


def _mean_loss(net: Supernet, batches: Sequence[Batch], seed: int) -> float:
    total: Union[torch.Tensor, float] = 0.0
    count = 0
    for b, (x, y) in enumerate(batches):
        # The same noise for batch b whatever the edge and op under test.
        torch.manual_seed(seed * 1_000_003 + b)  # seeds the CPU and every CUDA generator
        loss = F.cross_entropy(net(x).float(), y, reduction="sum")
        total = total + loss.double()  # summed on the device in float64: one host read per call, not per batch
        count += y.shape[0]
    return float(total) / count


def removal_scores(losses: Dict[str, torch.Tensor], net: Supernet) -> Dict[str, torch.Tensor]:
    """Derivation scores from ``edge_op_losses(..., perturb="remove")``: per edge, the loss with
    each op removed (higher: the supernet needs the op more), ``-inf`` for pruned ops, and 0 for
    the one op of a decided edge. For :meth:`Supernet.genotype`'s ``scores``."""
    out = {}
    for cell, loss in losses.items():
        alive = net.alive(cell).to(loss.device)
        scores = loss.masked_fill(~alive | torch.isinf(loss), float("-inf"))
        decided = alive.sum(-1) == 1
        scores[decided] = torch.where(alive[decided], 0.0, float("-inf"))
        out[cell] = scores
    return out
