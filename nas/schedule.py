"""A search's epoch plan: when progressive pruning drops ops, and how many epochs the run takes.

Pure functions of the config, shared by the search loop and by readers of finished runs
(``inspect``, the plot), which must not import the loop.
"""

from __future__ import annotations

from typing import List, Optional

from .config import Config
from .spaces import get_space


def prune_events(epochs: int, start: int, num_ops: int) -> List[int]:
    """The epoch boundaries after which progressive pruning drops one op per edge.

    ``num_ops - 1`` events spread evenly over the epochs after ``start`` (the end of warm-up,
    or ``search.prune_start``), so the last ``(epochs - start) / num_ops`` epochs train the
    decided network alone. A run with fewer epochs than ops after ``start`` holds several events
    at one boundary, none before its first architecture epoch has run; those that fall on
    ``epochs`` itself are applied after the last epoch, so the run still ends with one op per edge.
    """
    span = epochs - start
    return [start + max(1, round((k + 1) * span / num_ops)) for k in range(num_ops - 1)]


def search_epochs(cfg: Config, num_ops: Optional[int] = None) -> int:
    """How many epochs a search of ``cfg`` runs: ``search.epochs``, or, when it prunes with
    ``search.stop_when_decided``, up to its last pruning event, after which every edge has one op.

    ``num_ops``: the most ops (candidates) any edge (label) has; default: ``supernet.ops`` or the
    space's. A custom model's (``supernet.model``) depends on its function, so a pruned search of
    one needs it given (ValueError otherwise; :attr:`nas.Supernet.ops` of the built model).
    """
    s, sn = cfg.search, cfg.supernet
    if s.prune == "off" or not s.stop_when_decided:
        return s.epochs
    if num_ops is None:
        if sn.model is not None:
            raise ValueError("a pruned search of a custom model (supernet.model) needs num_ops, its widest choice")
        num_ops = len(sn.ops if sn.ops is not None else get_space(sn.space).default_ops)
    start = s.warmup_epochs if s.prune_start is None else s.prune_start
    return min(s.epochs, prune_events(s.epochs, start, num_ops)[-1])


def ops_to_keep(epoch: int, events: List[int], num_ops: int) -> int:
    """How many ops each edge keeps while epoch ``epoch`` (0-based) runs."""
    return num_ops - sum(b <= epoch for b in events)
