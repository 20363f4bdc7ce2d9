"""Pieces shared by the search and the retraining loops."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import config as config_mod
from .config import Config
from .data import BatchLoader, ImageData, load_dataset
from .errors import UserError
from .io import load_checkpoint

RUN_FILES = ("config.yaml", "checkpoint.pt", "metrics.jsonl")


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

    def read(self) -> Tuple[float, float]:
        """(mean loss, accuracy in %); NaN when empty."""
        if self.count == 0:
            return float("nan"), float("nan")
        return float(self.loss) / self.count, 100.0 * float(self.correct) / self.count


def load_data(cfg: Config) -> ImageData:
    d = cfg.data
    return load_dataset(d.name, d.root, download=d.download, verify_md5=d.verify_md5, num_train=d.num_train,
                        num_test=d.num_test, image_size=d.image_size, num_classes=d.num_classes, seed=cfg.run.seed)


def subset_indices(num: int, subset: Optional[int], seed: int) -> torch.Tensor:
    """A seeded random subset of ``range(num)`` (all of it when ``subset`` is None)."""
    if subset is None:
        return torch.arange(num)
    if not 1 <= subset <= num:
        raise UserError(f"data.train_subset={subset} must be between 1 and the training-set size {num}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num, generator=g)[:subset].sort().values


def make_loader(data: ImageData, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool,
                augment: bool, seed: int, device: torch.device, channels_last: bool) -> BatchLoader:
    if batch_size > images.shape[0] and train:
        raise UserError(f"batch size {batch_size} exceeds the {images.shape[0]} images available; "
                        "lower the batch size or use more data")
    return BatchLoader(images, labels, batch_size, mean=data.mean, std=data.std, augment=augment and train,
                       shuffle=train, drop_last=train, seed=seed, device=device, channels_last=channels_last)


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` for a new run; refuse one that already holds a run."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise UserError(f"--out {run_dir} is a file; choose a folder")
        present = [name for name in RUN_FILES if (run_dir / name).exists()]
        if present:
            raise UserError(f"{run_dir} already holds a run ({', '.join(present)}); continue it with "
                            f"--resume {run_dir}, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)


def load_for_resume(run_dir: Path, cfg: Config, kind: str) -> Dict[str, Any]:
    """The run's checkpoint, after checking it belongs to ``kind`` and matches ``cfg``."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    if ckpt.get("kind") != kind:
        raise UserError(f"{run_dir}/checkpoint.pt is a {ckpt.get('kind')!r} checkpoint, not a {kind!r} one")
    changed = config_mod.diff(ckpt["config"], config_mod.to_dict(cfg))
    if changed:
        raise UserError(f"the config does not match the run in {run_dir}: {'; '.join(changed)}. "
                        "Resume with the run's own config (drop --config/--set) or start a new run with --out")
    return ckpt


def check_positive(**values: Any) -> None:
    for key, value in values.items():
        if value is not None and not value > 0:
            raise UserError(f"{key} must be > 0, got {value}")


def clip_and_step(params: List[nn.Parameter], optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    optimizer.step()
