"""Pieces shared by the search and the retraining loops."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Tuple

import torch
from torch import nn

from .config import Config
from .data import BatchLoader, ImageData, load_dataset
from .distributed import SINGLE, World
from .errors import UserError


def cosine_lr(epoch: int, total_epochs: int, lr_max: float, lr_min: float) -> float:
    """Cosine annealing from ``lr_max`` at epoch 0 towards ``lr_min`` at ``total_epochs``."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * epoch / total_epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Meter:
    """Sums loss and correct predictions on the device; read once per epoch (no per-step sync)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.loss += loss.detach().double() * n
        self.correct += (logits.detach().argmax(dim=1) == target).sum()
        self.count += n

    def all_reduce_(self, world: World) -> None:
        """Sum the counters over the ranks (in place): afterwards every rank reads the global figures."""
        if not world.distributed:
            return
        count = torch.tensor([float(self.count)], device=self.loss.device, dtype=torch.float64)
        world.all_reduce_sum_([self.loss, self.correct, count])
        self.count = int(count.item())

    def read(self) -> Tuple[float, float]:
        """(mean loss, accuracy in %); NaN when empty."""
        if self.count == 0:
            return float("nan"), float("nan")
        return float(self.loss) / self.count, 100.0 * float(self.correct) / self.count


def load_data(cfg: Config, world: World = SINGLE) -> ImageData:
    """The config's data set. Under several processes with ``data.download``, rank 0 fetches it
    while the others wait, so one rank's failed download ends the job on rank 0's clear error."""
    d = cfg.data

    def load() -> ImageData:
        return load_dataset(
            d.name,
            d.root,
            download=d.download,
            verify_md5=d.verify_md5,
            num_train=d.num_train,
            num_test=d.num_test,
            image_size=d.image_size,
            num_classes=d.num_classes,
            seed=cfg.run.seed,
        )

    if not world.distributed:
        return load()
    data, error = None, None
    if world.is_main or not d.download:  # a download is rank 0's alone; the others read what it wrote
        try:
            data = load()
        except UserError as exc:
            error = exc
    world.raise_agreed(error)  # one rank's failure stops all, and rank 0 alone reports it
    return data if data is not None else load()


def make_loader(
    data: ImageData,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    train: bool,
    augment: bool,
    seed: int,
    device: torch.device,
    channels_last: bool,
    world: World = SINGLE,
    key: str = "the batch size",
) -> BatchLoader:
    """A loader of global batches of ``batch_size``; under several processes each rank gets its share.
    ``key``: the setting an error names (e.g. ``search.batch_size``)."""
    if batch_size > images.shape[0] and train:
        raise UserError(
            f"{key} {batch_size} exceeds the {images.shape[0]} images available; lower {key} or use more data"
        )
    return BatchLoader(
        images,
        labels,
        max(1, batch_size // world.world_size),
        mean=data.mean,
        std=data.std,
        augment=augment and train,
        shuffle=train,
        drop_last=train,
        seed=seed,
        device=device,
        channels_last=channels_last,
        rank=world.rank,
        world_size=world.world_size,
    )


def check_batch_split(batch_size: int, key: str, world: World) -> None:
    """The global batch must split evenly over the processes (each rank takes batch / N)."""
    if batch_size % world.world_size:
        raise UserError(
            f"{key}={batch_size} does not split over {world.world_size} processes; "
            f"use a multiple of {world.world_size}, e.g. {key}="
            f"{max(1, round(batch_size / world.world_size)) * world.world_size}"
        )


def clip_and_step(params: Iterable[nn.Parameter], optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip the global gradient norm of ``params`` to ``grad_clip`` (0: no clipping), then step."""
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    optimizer.step()
