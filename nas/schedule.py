"""A search's epoch plan: when progressive pruning drops ops, and how many epochs the run takes.

Pure functions of the config, shared by the search loop and by readers of finished runs
(``inspect``, the plot), which must not import the loop.
"""

from __future__ import annotations

from typing import List

from .config import Config
from .spaces import get_space


def prune_events(epochs: int, start: int, num_ops: int) -> List[int]:
    """The epoch boundaries after which progressive pruning drops one op per edge.

    ``num_ops - 1`` events spread evenly over the epochs after ``start`` (the end of warm-up,
    or ``search.prune_start``), so the last ``(epochs - start) / num_ops`` epochs train the
    decided network alone. A run with fewer epochs than ops after ``start`` holds several events
    at one boundary, none before its first architecture epoch has run.
    """
    span = epochs - start
    return [start + max(1, round((k + 1) * span / num_ops)) for k in range(num_ops - 1)]


def search_epochs(cfg: Config) -> int:
    """How many epochs a search of ``cfg`` runs: ``search.epochs``, or, when it prunes with
    ``search.stop_when_decided``, up to its last pruning event, after which every edge has one op."""
    s, sn = cfg.search, cfg.supernet
    if s.prune == "off" or not s.stop_when_decided:
        return s.epochs
    num_ops = len(sn.ops if sn.ops is not None else get_space(sn.space).default_ops)
    start = s.warmup_epochs if s.prune_start is None else s.prune_start
    return min(s.epochs, prune_events(s.epochs, start, num_ops)[-1])


def ops_to_keep(epoch: int, events: List[int], num_ops: int) -> int:
    """How many ops each edge keeps while epoch ``epoch`` (0-based) runs."""
    return num_ops - sum(b <= epoch for b in events)
