"""Train the discrete network of an architecture from scratch.

The protocol is the space's section of the config (``retrain.nb201`` or
``retrain.darts``). The run directory gets ``config.yaml``, ``genotype.json``,
``metrics.jsonl`` (one line per epoch, with test accuracy), an atomic
``checkpoint.pt`` after every epoch (:mod:`nas.run`), and ``result.json`` at the end.

A custom model's architecture (a :class:`nas.ChoiceArchitecture`, from a search of
``supernet.model``) trains the network the model function builds with ``arch=``
(or, when it takes no ``arch``, its model fixed with :func:`nas.fix`), fresh
weights, under ``retrain.model``; its run directory holds ``architecture.json`` in
place of ``genotype.json``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .architecture import ChoiceArchitecture, save_architecture
from .config import Config, RetrainSpaceConfig
from .data import ImageData, subset_indices
from .distributed import SINGLE, World
from .errors import UserError
from .flops import count_macs, count_parameters
from .genotype import Genotype, disconnected_warning
from .io import atomic_write_text
from .model_supernet import ARCH_FILE, build_chosen_model
from .ops import check_ops
from .run import check_run, discard_new_run, open_run, run_epochs
from .spaces import build_network, get_space
from .training import Meter, autocast, clip_and_step, cosine_lr, load_data, make_loader, set_lr

CHECKPOINT_KIND = "retrain"
MODEL_SECTION = "model"  # retrain.model: a custom model's protocol

Architecture = Union[Genotype, ChoiceArchitecture]
# The data set, then (images, labels) to train on and to measure on.
Split = Tuple[ImageData, Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RetrainResult:
    run_dir: Path
    genotype: Architecture  # a ChoiceArchitecture for a custom model
    test_acc: float
    test_loss: float
    params: int
    macs: int
    epochs_done: int
    finished: bool


def section(geno: Architecture) -> str:
    """The name of the ``retrain`` section that trains ``geno``: its space, or ``model`` for a custom model."""
    return MODEL_SECTION if isinstance(geno, ChoiceArchitecture) else geno.space


def protocol(cfg: Config, space: str) -> RetrainSpaceConfig:
    """The ``retrain.<space>`` section of ``cfg`` (``retrain.model`` for a custom model)."""
    try:
        return getattr(cfg.retrain, space)
    except AttributeError:
        raise UserError(
            f"no retrain protocol for space {space!r}; the config has retrain.nb201, retrain.darts "
            "and retrain.model (a custom model)"
        ) from None


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero the square ``[c - size//2, c + size//2)`` around a uniform centre ``c`` per image, as DARTS does."""
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1, 1), device=x.device)  # ~U{0..H-1}
    cx = torch.randint(0, W, (B, 1, 1), device=x.device)
    ys = torch.arange(H, device=x.device).view(1, H, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def evaluate(model: torch.nn.Module, loader, device: torch.device, bf16: bool) -> Meter:
    meter = Meter(device)
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            with autocast(device, bf16):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            meter.add(loss, logits, y)
    return meter


def run_retrain(
    cfg: Config,
    geno: Architecture,
    run_dir: Path,
    device: torch.device,
    *,
    resume: bool = False,
    stop_after: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
    world: World = SINGLE,
) -> RetrainResult:
    """Train ``geno``'s discrete network into ``run_dir``; resumable and exact on CPU.

    ``geno``: a built-in space's genotype, or a custom model's :class:`nas.ChoiceArchitecture`
    (the network of ``cfg.supernet.model``'s function, under ``retrain.model``).
    ``log`` gets the progress lines, ``warn`` the warnings (a cell that ignores its input).
    ``world``: the processes of a torchrun launch; the network trains in DistributedDataParallel
    and rank 0 alone writes ``run_dir``. ``device``: a :class:`torch.device` or its name.
    """
    run_dir, device = Path(run_dir), torch.device(device)
    custom = isinstance(geno, ChoiceArchitecture)
    p = protocol(cfg, section(geno))
    check_run(cfg, device, world, p.batch_size, f"retrain.{section(geno)}.batch_size", resume)
    if custom:
        if cfg.supernet.model is None:
            raise UserError(
                "a custom model's architecture is built by its model function: set supernet.model, "
                "e.g. --set supernet.model=package.module:function"
            )
    else:
        try:
            check_ops(sorted({op for edges in geno.cells().values() for op, _ in edges}))
        except ValueError as exc:
            raise UserError(f"the architecture cannot be built: {exc}") from None
        warning = disconnected_warning(geno)  # after the errors: the network would give a constant output
        if warning and world.is_main:
            warn(warning)

    def same_architecture(ckpt: Dict[str, Any]) -> None:
        saved = (ChoiceArchitecture if custom else Genotype).from_dict(ckpt["genotype"])
        if type(saved) is not type(geno) or not saved.same_architecture(geno):
            raise UserError(f"{run_dir} trains {saved}, not {geno}; resume without --genotype")

    ckpt = open_run(run_dir, cfg, CHECKPOINT_KIND, resume, check_resumed=same_architecture, world=world)
    if ckpt is None and world.is_main:
        try:
            if custom:
                save_architecture(ChoiceArchitecture(geno.choices), run_dir / ARCH_FILE)
            else:
                atomic_write_text(run_dir / "genotype.json", geno.to_json())
        except BaseException:  # nothing of the new run is kept: the same --out starts again
            discard_new_run(run_dir)
            raise
    task, done = run_epochs(
        lambda: RetrainTask(cfg, p, geno, device, world, log=log if world.is_main else _silent),
        cfg,
        run_dir,
        ckpt,
        desc="retrain",
        stop_after=stop_after,
        progress=progress,
        log=log,
        world=world,
        device=device,
    )
    test_loss, test_acc = task.test_loss, task.test_acc
    if done.last_metrics is None and ckpt is not None:  # already finished: report the recorded result
        test_loss, test_acc = task.test()
    result = RetrainResult(run_dir, geno, test_acc, test_loss, task.params, task.macs, done.done, done.finished)
    if done.finished and world.is_main:
        what = (
            {"architecture": geno.choices, "model": cfg.supernet.model}
            if custom
            else {"genotype": str(geno), "space": geno.space}
        )
        atomic_write_text(
            run_dir / "result.json",
            json.dumps(
                {
                    **what,
                    "test_acc": test_acc,
                    "test_loss": test_loss,
                    "params": task.params,
                    "macs": task.macs,
                    "epochs": done.done,
                },
                indent=2,
            ),
        )
    return result


def _silent(text: str) -> None:
    pass


def _rank_epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(rank) * 10_007 + int(epoch)) % (2**63)


class RetrainTask:
    """The retrain's part of the run skeleton: the discrete network, its SGD, the test pass."""

    kind = CHECKPOINT_KIND
    logs = ("metrics.jsonl",)

    def __init__(
        self,
        cfg: Config,
        p: RetrainSpaceConfig,
        geno: Architecture,
        device: torch.device,
        world: World = SINGLE,
        log: Callable[[str], None] = _silent,
        split: Optional[Split] = None,
    ):
        """``split``: the data, the images and labels to train on and those to measure on, in place
        of the config's training subset and its test set (nas.screen: a search's two splits)."""
        self.p, self.geno, self.device, self.bf16, self.world = p, geno, device, cfg.run.bf16, world
        self.epochs = p.epochs
        self.nan_hint = f"lower retrain.{section(geno)}.lr"
        self.custom = isinstance(geno, ChoiceArchitecture)
        seed = cfg.run.seed
        if split is None:
            data = load_data(cfg, world)
            keep = subset_indices(data.train_x.shape[0], cfg.data.train_subset, seed)
            split = (data, (data.train_x[keep], data.train_y[keep]), (data.test_x, data.test_y))
        data, (train_x, train_y), (test_x, test_y) = split
        self.train_loader = make_loader(
            data,
            train_x,
            train_y,
            p.batch_size,
            train=True,
            augment=cfg.data.augment,
            seed=seed,
            device=device,
            channels_last=cfg.run.channels_last,
            world=world,
            key=f"retrain.{section(geno)}.batch_size",
        )
        self.test_loader = make_loader(
            data,
            test_x,
            test_y,
            max(p.batch_size, 256),
            train=False,
            augment=False,
            seed=seed,
            device=device,
            channels_last=cfg.run.channels_last,
            world=world,
        )
        if self.custom:  # the model function's network, fresh weights (retrain.model.C and .N do not apply)
            model, how = build_chosen_model(cfg.supernet.model, geno.choices, data.num_classes)
            log(f"network: {how}")
        else:
            with_extras = get_space(geno.space).supports_auxiliary  # auxiliary head and drop-path
            try:
                model = build_network(
                    geno,
                    C=p.C,
                    N=p.N,
                    num_classes=data.num_classes,
                    auxiliary=p.auxiliary and with_extras,
                    drop_path_prob=p.drop_path_prob if with_extras else 0.0,
                )
            except ValueError as exc:  # a genotype its space accepts that the network cannot build
                raise UserError(f"cannot build the network of this genotype: {exc}") from None
        self.params = count_parameters(model, exclude_prefix=("aux_head",))
        self.macs = count_macs(model, tuple(data.train_x.shape[1:]))
        if cfg.run.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        if cfg.run.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        # A none edge can leave ops that never run (they read, or feed only, a dead node): DDP must expect them.
        # A custom model's may too (a branch an InputChoice left out still runs but feeds nothing).
        dead_ops = self.custom or any(op == "none" for edges in geno.cells().values() for op, _ in edges)
        self.train_model = world.wrap(model, device, find_unused_parameters=dead_ops)  # DDP under torchrun
        self.seed = cfg.run.seed
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.nesterov, weight_decay=p.weight_decay
        )
        self.params_all = list(model.parameters())
        self.autocast = autocast(device, self.bf16)
        self.steps = (
            len(self.train_loader) if p.steps_per_epoch is None else min(len(self.train_loader), p.steps_per_epoch)
        )
        self.test_loss, self.test_acc = float("nan"), float("nan")

    def state_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "genotype": self.geno.to_dict(),
        }

    def load_state_dict(self, ckpt: Dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def start_epoch(self, epoch: int) -> int:
        p = self.p
        if self.world.distributed:
            # Cutout and drop-path draw from the global generator: give each rank its own stream, a
            # function of (seed, rank, epoch), so the ranks' shares differ and a resume is exact.
            torch.manual_seed(_rank_epoch_seed(self.seed, self.world.rank, epoch))
        self.lr = cosine_lr(epoch, p.epochs, p.lr, p.lr_min)
        set_lr(self.optimizer, self.lr)
        if hasattr(self.model, "drop_path_prob") and not self.custom:  # a custom model's attribute is its own
            self.model.drop_path_prob = p.drop_path_prob * epoch / p.epochs  # DARTS ramps drop-path linearly
        self.train_loader.set_epoch(epoch)
        self.meter = Meter(self.device)
        self.model.train()
        return self.steps

    def batches(self):
        return self.train_loader

    def step(self, batch) -> None:
        x, y = batch
        p = self.p
        if p.cutout > 0:
            x = cutout(x, p.cutout)
        with self.autocast:
            out = self.train_model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits.float(), y)
            if aux is not None:
                loss = loss + p.auxiliary_weight * F.cross_entropy(aux.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(self.params_all, self.optimizer, p.grad_clip)
        self.meter.add(loss, logits, y)

    def postfix(self) -> Dict[str, str]:
        return {"acc": f"{self.meter.read()[1]:.1f}"}

    def test(self) -> "tuple[float, float]":
        """Test loss and accuracy (each rank tests its share of the test set; the counts are summed)."""
        meter = evaluate(self.model, self.test_loader, self.device, self.bf16)
        meter.all_reduce_(self.world)
        return meter.read()

    def end_epoch(self, epoch: int, seconds: float) -> Dict[str, Any]:
        self.world.average_buffers_(self.model)
        self.meter.all_reduce_(self.world)
        train_loss, train_acc = self.meter.read()
        if math.isfinite(train_loss):  # else the skeleton stops the run with a clear error
            self.test_loss, self.test_acc = self.test()
        return {
            "epoch": epoch + 1,
            "lr": self.lr,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": self.test_loss,
            "test_acc": self.test_acc,
            "epoch_seconds": seconds,
            "images_per_second": self.meter.count / seconds,
            "world_size": self.world.world_size,
        }

    def write_outputs(self, run_dir: Path, epoch: int, metrics: Dict[str, Any]) -> None:
        pass

    def describe(self, epoch: int, m: Dict[str, Any]) -> str:
        return (
            f"epoch {epoch + 1}/{self.epochs}  lr {m['lr']:.4f}  train {m['train_loss']:.3f}/"
            f"{m['train_acc']:.2f}%  test {m['test_loss']:.3f}/{m['test_acc']:.2f}%"
        )
