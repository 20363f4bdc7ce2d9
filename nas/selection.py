"""Scoring the ops of a supernet's edges by its validation loss (for progressive pruning).

A one-shot supernet's logits move slowly and noisily in a short search, so ranking ops by their
probabilities says little early on. This module measures instead: for every edge and every op it
may still choose, the supernet's mean cross-entropy on fixed validation batches with that edge
restricted to that op and every other edge sampled from the current distribution. The same
batches and the same Gumbel noise serve every (edge, op) pair (common random numbers), so the
differences between ops are not drowned by sampling noise. This is the perturbation idea of
DARTS-PT (Wang et al., ICLR 2021), measured on a one-path supernet.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .supernet import Supernet

Batch = Tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def edge_op_losses(net: Supernet, batches: Sequence[Batch], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Per cell type, an ``[edges, ops]`` tensor of mean validation loss (``inf`` where pruned).

    The network runs in training mode (batch statistics, as the search trains it); its batch-norm
    buffers and the global random state are restored afterwards, so scoring leaves the search
    exactly as it found it.
    """
    if not batches:
        raise ValueError("edge_op_losses needs at least one validation batch")
    was_training = net.training
    buffers = {name: b.clone() for name, b in net.named_buffers() if not name.startswith("alive_")}
    device = batches[0][0].device
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    out: Dict[str, torch.Tensor] = {}
    net.train()
    try:
        with torch.random.fork_rng(devices=devices):
            for cell in net.arch:
                alive = net.alive(cell)
                losses = torch.full(tuple(alive.shape), float("inf"))
                for e in range(alive.shape[0]):
                    row = alive[e].clone()
                    choices: List[int] = row.nonzero().flatten().tolist()
                    if len(choices) < 2:
                        continue  # decided: nothing to compare
                    for k in choices:
                        alive[e] = False
                        alive[e, k] = True
                        net._alive_cache = None
                        losses[e, k] = _mean_loss(net, batches, seed)
                    alive[e] = row
                    net._alive_cache = None
                out[cell] = losses
    finally:
        net._alive_cache = None
        for name, b in net.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
        net.train(was_training)
    return out


def _mean_loss(net: Supernet, batches: Sequence[Batch], seed: int) -> float:
    total, count = 0.0, 0
    for b, (x, y) in enumerate(batches):
        # The same noise for batch b whatever the edge and op under test.
        torch.manual_seed(seed * 1_000_003 + b)  # seeds the CPU and every CUDA generator
        loss = F.cross_entropy(net(x).float(), y, reduction="sum")
        total += float(loss)  # one host sync per batch; scoring runs a few times per search
        count += y.shape[0]
    return total / count
