"""Index splits of a training set: the search's weight/architecture split and seeded subsets."""

from __future__ import annotations

import torch

from nas.errors import UserError

__all__ = ["search_split", "subset_indices"]


def search_split(num: int, weight_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(num)`` into (weight indices, architecture indices), each sorted.

    The split is a pure function of ``(num, weight_fraction, seed)``; the two parts are disjoint
    and together cover every index. GDAS on CIFAR-10 uses ``weight_fraction=0.5``.
    """
    if not 0.0 < float(weight_fraction) < 1.0:
        raise UserError(
            f"search split fraction must lie strictly between 0 and 1, got {weight_fraction}. "
            "Fix: set it to e.g. 0.5 (half the training set for weights, half for the architecture)"
        )
    if num < 2:
        raise UserError(f"cannot split {num} training images into two parts. Fix: use a larger training set")
    k = min(max(int(round(num * float(weight_fraction))), 1), num - 1)
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:k].sort().values, perm[k:].sort().values


def subset_indices(num: int, subset: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of ``range(num)`` (all of it when ``subset`` is None)."""
    if subset is None:
        return torch.arange(num)
    if not 1 <= subset <= num:
        raise UserError(f"data.train_subset={subset} must be between 1 and the training-set size {num}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num, generator=g)[:subset].sort().values
