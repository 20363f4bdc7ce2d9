"""The in-memory container that every data set loader returns (:class:`ImageData`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageData"]


@dataclass
class ImageData:
    """A labelled image data set held in memory as uint8.

    ``train_x``/``test_x``: uint8 N x 3 x H x W; ``train_y``/``test_y``: int64 N;
    ``mean``/``std``: per-channel statistics on the 0..1 scale, for normalisation.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
