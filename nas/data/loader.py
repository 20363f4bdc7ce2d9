"""Augmentation (padded random crop and horizontal flip) and the device-resident :class:`BatchLoader`.

:class:`BatchLoader` keeps the whole uint8 data set on the device and builds each batch there
(gather, random crop with 4-pixel zero padding, horizontal flip, normalisation). The order and
the augmentation of an epoch are a pure function of ``(seed, epoch)``. Nothing here picks a
device: the caller passes it.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from nas.errors import UserError

__all__ = ["crop_flip", "random_crop_flip", "BatchLoader"]


def crop_flip(
    x: torch.Tensor,
    offsets_y: torch.Tensor,
    offsets_x: torch.Tensor,
    flip: torch.Tensor,
    padding: int = 4,
) -> torch.Tensor:
    """Padded crop then horizontal flip, vectorised over the batch.

    ``x`` (B x C x H x W, any dtype) is zero-padded by ``padding`` on every side; image ``b`` is
    cropped to ``H x W`` starting at row ``offsets_y[b]`` and column ``offsets_x[b]`` of the padded
    image (each in ``0..2*padding``), then mirrored left-right where ``flip[b]`` is true.
    """
    b, _, h, w = x.shape
    dev = x.device
    oy = offsets_y.to(dev, torch.long).view(b, 1)
    ox = offsets_x.to(dev, torch.long).view(b, 1)
    fl = flip.to(dev, torch.bool).view(b, 1)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy + ar_h  # B x H
    cols = ox + torch.where(fl, (w - 1) - ar_w, ar_w)  # B x W
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
    return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """:func:`crop_flip` with offsets and flips drawn from ``generator`` (a CPU generator)."""
    b = x.shape[0]
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    fl = torch.randint(0, 2, (b,), generator=generator).bool()
    return crop_flip(x, oy, ox, fl, padding)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixing (seed, epoch) with SplitMix64, so nearby pairs give unrelated streams."""
    mask = (1 << 64) - 1
    z = ((int(seed) & mask) * 0x9E3779B97F4A7C15 + (int(epoch) & mask) + 0x632BE59BD9B4E019) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1


class BatchLoader:
    """Batches of normalised (and optionally augmented) images built on the device.

    The uint8 images and the labels move to ``device`` once, at construction. Each epoch draws its
    order and augmentation on the CPU from a generator seeded by ``(seed, epoch)`` (see
    :meth:`set_epoch`) and moves them to the device in one transfer; each batch is then gathered,
    cropped/flipped, converted to float and normalised on the device with no host-device sync.
    Yields ``(x, y)``: float32 B x 3 x H x W and int64 B.

    Under several processes (``world_size`` > 1), ``batch_size`` is each rank's share: every
    rank draws the same order, takes consecutive global batches of ``batch_size * world_size``
    and keeps its own slice of each, so an epoch uses each image once, as one process does.
    """

    padding = 4

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if int(batch_size) < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}. Fix: set a positive batch size")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self.epoch = 0
        self.rank, self.world_size = int(rank), int(world_size)
        self._images = images.contiguous().to(self.device)
        self._labels = labels.to(self.device, torch.long)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        # (x / 255 - mean) / std  ==  x * scale - shift
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1).to(self.device)

    @property
    def num_samples(self) -> int:
        """Number of images in the data set (an epoch yields fewer when ``drop_last`` cuts a batch)."""
        return int(self._images.shape[0])

    def __len__(self) -> int:
        n, per_step = self.num_samples, self.batch_size * self.world_size
        return n // per_step if self.drop_last else math.ceil(n / per_step)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def _plan(self) -> torch.Tensor:
        """4 x N int64 on the device: order, crop row, crop column, flip (a function of seed, epoch)."""
        n = self.num_samples
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        plan = torch.zeros(4, n, dtype=torch.long)
        plan[0] = order
        if self.augment:
            plan[1] = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
            plan[2] = torch.randint(0, 2 * self.padding + 1, (n,), generator=g)
            plan[3] = torch.randint(0, 2, (n,), generator=g)
        if self.device.type == "cuda":
            plan = plan.pin_memory()
        return plan.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self._plan()
        bs = self.batch_size
        first = self.rank * bs  # this rank's slice of each global batch
        for i in range(len(self)):
            start = i * bs * self.world_size + first
            part = plan[:, start : start + bs]
            if part.shape[1] == 0:  # the last, partial global batch left nothing for this rank
                break
            idx = part[0]
            x = self._images.index_select(0, idx)
            if self.augment:
                x = crop_flip(x, part[1], part[2], part[3], self.padding)
            x = x.float().mul_(self._scale).sub_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self._labels.index_select(0, idx)
