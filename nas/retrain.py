"""Train the discrete network of an architecture from scratch.

The protocol is the space's section of the config (``retrain.nb201`` or
``retrain.darts``). The run directory gets ``config.yaml``, ``genotype.json``,
``metrics.jsonl`` (one line per epoch, with test accuracy), an atomic
``checkpoint.pt`` after every epoch, and ``result.json`` at the end.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import config as config_mod
from .config import Config, RetrainSpaceConfig
from .errors import UserError
from .flops import count_macs, count_parameters
from .genotype import Genotype, disconnected_warning
from .io import append_jsonl, atomic_torch_save, atomic_write_text, capture_rng_state, restore_rng_state, \
    seed_everything, truncate_jsonl
from .ops import check_ops
from .spaces import build_network
from .training import Meter, autocast, check_positive, clip_and_step, cosine_lr, load_data, load_for_resume, \
    make_loader, prepare_run_dir, set_lr, subset_indices

CHECKPOINT_KIND = "retrain"


@dataclass
class RetrainResult:
    run_dir: Path
    genotype: Genotype
    test_acc: float
    test_loss: float
    params: int
    macs: int
    epochs_done: int
    finished: bool


def protocol(cfg: Config, space: str) -> RetrainSpaceConfig:
    try:
        return getattr(cfg.retrain, space)
    except AttributeError:
        raise UserError(f"no retrain protocol for space {space!r}; the config has retrain.nb201 and retrain.darts") from None


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


def run_retrain(cfg: Config, geno: Genotype, run_dir: Path, device: torch.device, *, resume: bool = False,
                stop_after: Optional[int] = None, progress: bool = True,
                log: Callable[[str], None] = tqdm.write) -> RetrainResult:
    """Train ``geno``'s discrete network into ``run_dir``; resumable and exact on CPU."""
    run_dir = Path(run_dir)
    p = protocol(cfg, geno.space)
    section = f"retrain.{geno.space}"
    check_positive(**{f"{section}.epochs": p.epochs, f"{section}.batch_size": p.batch_size, f"{section}.C": p.C,
                      f"{section}.N": p.N, f"{section}.lr": p.lr, f"{section}.steps_per_epoch": p.steps_per_epoch})
    if not 0 <= p.drop_path_prob < 1:
        raise UserError(f"{section}.drop_path_prob must be in [0, 1), got {p.drop_path_prob}")
    if cfg.run.bf16 and device.type != "cuda":
        raise UserError("run.bf16 needs a CUDA device; set run.bf16=false or run.device=cuda")
    check_ops(sorted({op for edges in geno.cells().values() for op, _ in edges}))
    ckpt = load_for_resume(run_dir, cfg, CHECKPOINT_KIND) if resume else None
    if ckpt is not None:
        saved = Genotype.from_dict(ckpt["genotype"])
        if not saved.same_architecture(geno):
            raise UserError(f"{run_dir} trains {saved}, not {geno}; resume without --genotype")
    else:
        prepare_run_dir(run_dir)
        config_mod.save_config(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / "genotype.json", geno.to_json())

    seed = cfg.run.seed
    seed_everything(seed)
    data = load_data(cfg)
    keep = subset_indices(data.train_x.shape[0], cfg.data.train_subset, seed)
    train_loader = make_loader(data, data.train_x[keep], data.train_y[keep], p.batch_size, train=True,
                               augment=cfg.data.augment, seed=seed, device=device, channels_last=cfg.run.channels_last)
    test_loader = make_loader(data, data.test_x, data.test_y, max(p.batch_size, 256), train=False, augment=False,
                              seed=seed, device=device, channels_last=cfg.run.channels_last)

    model = build_network(geno, C=p.C, N=p.N, num_classes=data.num_classes,
                          auxiliary=p.auxiliary and geno.space == "darts",
                          drop_path_prob=p.drop_path_prob if geno.space == "darts" else 0.0)
    params = count_parameters(model, exclude_prefix=("aux_head",))
    macs = count_macs(model, tuple(data.train_x.shape[1:]))
    model.to(device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.nesterov,
                                weight_decay=p.weight_decay)
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["epoch"])
        restore_rng_state(ckpt["rng"])
        truncate_jsonl(run_dir / "metrics.jsonl", lambda r: r.get("epoch", 0) <= start)
        log(f"resuming {run_dir} after epoch {start}/{p.epochs}")

    steps = len(train_loader) if p.steps_per_epoch is None else min(len(train_loader), p.steps_per_epoch)
    params_all = list(model.parameters())
    done, test_loss, test_acc = start, float("nan"), float("nan")
    last = None
    for epoch in range(start, p.epochs):
        lr = cosine_lr(epoch, p.epochs, p.lr, p.lr_min)
        set_lr(optimizer, lr)
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = p.drop_path_prob * epoch / p.epochs  # DARTS ramps drop-path linearly
        train_loader.set_epoch(epoch)
        meter = Meter(device)
        t0 = time.perf_counter()
        model.train()
        bar = tqdm(total=steps, desc=f"retrain {epoch + 1}/{p.epochs}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            if p.cutout > 0:
                x = cutout(x, p.cutout)
            with autocast(device, cfg.run.bf16):
                out = model(x)
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = F.cross_entropy(logits.float(), y)
                if aux is not None:
                    loss = loss + p.auxiliary_weight * F.cross_entropy(aux.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_and_step(params_all, optimizer, p.grad_clip)
            meter.add(loss, logits, y)
            bar.update(1)
        bar.close()
        train_loss, train_acc = meter.read()
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise UserError(f"the training loss became {train_loss} in epoch {epoch + 1}; lower {section}.lr")
        test_loss, test_acc = evaluate(model, test_loader, device, cfg.run.bf16).read()
        last = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                "test_loss": test_loss, "test_acc": test_acc, "epoch_seconds": train_seconds,
                "images_per_second": meter.count / train_seconds}
        append_jsonl(run_dir / "metrics.jsonl", last)
        atomic_torch_save({"kind": CHECKPOINT_KIND, "epoch": epoch + 1, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "rng": capture_rng_state(),
                           "config": config_mod.to_dict(cfg), "genotype": geno.to_dict()}, run_dir / "checkpoint.pt")
        done = epoch + 1
        log(f"epoch {done}/{p.epochs}  lr {lr:.4f}  train {train_loss:.3f}/{train_acc:.2f}%  "
            f"test {test_loss:.3f}/{test_acc:.2f}%")
        if stop_after is not None and done - start >= stop_after:
            break
    if last is None and ckpt is not None:  # already finished: report the recorded result
        model.eval()
        test_loss, test_acc = evaluate(model, test_loader, device, cfg.run.bf16).read()
    finished = done >= p.epochs
    result = RetrainResult(run_dir, geno, test_acc, test_loss, params, macs, done, finished)
    if finished:
        atomic_write_text(run_dir / "result.json", json.dumps({
            "genotype": str(geno), "space": geno.space, "test_acc": test_acc, "test_loss": test_loss,
            "params": params, "macs": macs, "epochs": done}, indent=2))
    return result


def read_genotype(text_or_path: str) -> Genotype:
    """An architecture from a string (NB201, DARTS or JSON) or a file holding one."""
    path = Path(text_or_path)
    looks_like_file = not text_or_path.lstrip().startswith(("|", "Genotype(", "{"))
    if looks_like_file:
        if not path.exists():
            raise UserError(f"--genotype {text_or_path!r} is neither an architecture string nor an existing file; "
                            "give an NB201 string (|op~0|+...), a DARTS Genotype(...) string, or a genotype.json")
        try:
            text_or_path = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --genotype file {path}: {exc}") from None
    return Genotype.parse(text_or_path)


def run_retrain_cli(args) -> int:
    """``python search.py retrain RUN_DIR | --genotype G [--config] [--set] [--out] [--resume]``."""
    import sys

    from .cli import DEFAULT_CONFIG, default_run_dir, resolve_device, set_cpu_threads
    from .config import load_config

    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise UserError("give either --out (a new run) or --resume (an existing run), not both")
        if not (run_dir / "config.yaml").exists() or not (run_dir / "genotype.json").exists():
            raise UserError(f"{run_dir} holds no retrain run to resume (no config.yaml/genotype.json)")
        cfg = load_config(args.config or run_dir / "config.yaml", args.overrides)
        geno = Genotype.from_json((run_dir / "genotype.json").read_text())
        if args.genotype and not read_genotype(args.genotype).same_architecture(geno):
            raise UserError(f"{run_dir} trains {geno}; resume it without a different --genotype")
    else:
        if bool(args.run_dir) == bool(args.genotype):
            raise UserError("give a search run directory or --genotype, exactly one of them")
        if args.run_dir:
            search_dir = Path(args.run_dir)
            if not (search_dir / "genotype.json").exists():
                raise UserError(f"{search_dir} holds no genotype.json; give a search run directory "
                                "that finished at least one epoch")
            geno = Genotype.from_json((search_dir / "genotype.json").read_text())
            base = args.config or (search_dir / "config.yaml" if (search_dir / "config.yaml").exists() else DEFAULT_CONFIG)
        else:
            geno = read_genotype(args.genotype)
            base = args.config or DEFAULT_CONFIG
        cfg = load_config(base, args.overrides)
        run_dir = Path(args.out) if args.out else default_run_dir("retrain", args.config)
    device = resolve_device(cfg.run.device)
    set_cpu_threads(cfg.run.threads)
    check_ops(sorted({op for edges in geno.cells().values() for op, _ in edges}))  # errors before warnings
    warning = disconnected_warning(geno)
    if warning:
        print(warning, file=sys.stderr)
    print(f"retrain: {geno} on {cfg.data.name}, {protocol(cfg, geno.space).epochs} epochs on {device}; "
          f"writing {run_dir}", flush=True)
    try:
        result = run_retrain(cfg, geno, run_dir, device, resume=bool(args.resume), stop_after=args.stop_after,
                             progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last checkpoint in {run_dir} is intact; continue with "
              f"python search.py retrain --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"architecture: {geno}")
    print(f"test accuracy {result.test_acc:.2f}%  (loss {result.test_loss:.4f}) after {result.epochs_done} epochs")
    print(f"parameters {result.params:,}  multiply-adds {result.macs:,} ({result.macs / 1e6:.2f} M)")
    print(f"outputs in {run_dir}/" + ("" if result.finished else
                                      f"; continue with: python search.py retrain --resume {run_dir}"))
    return 0
