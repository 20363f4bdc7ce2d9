"""The run skeleton that search and retrain share.

A run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per epoch),
the task's own logs and an atomic ``checkpoint.pt`` written after every epoch,
so a stopped run resumes exactly. :func:`run_epochs` prepares or resumes the
directory and drives the epoch loop (progress bar, NaN check, metrics line,
``stop_after``, checkpoint, TensorBoard events with ``run.tensorboard``); an
:class:`EpochTask` supplies what is its own. A write the machine refuses ends the
run with a :class:`nas.errors.WriteError`, the logs cut back to the last complete
checkpoint, which ``--resume`` continues from.
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence

import torch
from tqdm import tqdm

from . import config as config_mod
from .config import Config, validate
from .distributed import SINGLE, World
from .errors import UserError, WriteError
from .io import (
    append_jsonl,
    atomic_torch_save,
    atomic_write_bytes,
    capture_rng_state,
    cut_back,
    file_size,
    load_checkpoint,
    make_dir,
    read_jsonl,
    restore_rng_state,
    seed_everything,
    truncate_jsonl,
)
from .runtime import check_device_options
from .tensorboard_log import TensorBoardLog, require_tensorboard
from .training import check_batch_split

RUN_FILES = ("config.yaml", "checkpoint.pt", "metrics.jsonl")
# What runs write besides: a folder holding any of them is not a new run's (its files would be overwritten).
OUTPUT_FILES = ("genotype.json", "architecture.json", "arch_probs.jsonl", "result.json", "plot.png", "screen.json")
# Everything a run writes in its folder: what discarding a run that began in an existing folder removes.
_RUN_ENTRIES = RUN_FILES + OUTPUT_FILES + ("tensorboard",)
# The command that resumes each kind of run.
RESUME_COMMANDS = {"search": "--resume", "retrain": "retrain --resume"}
LOCK_FILE = ".lock"
# Settings of what a run shows, not of what it computes: a resume may change them.
# Where a run finds its files, kept in its config.yaml for the resumes after: the data (a new
# data.root is refused without data.verify_md5, which checks it is the same data) and a latency
# table (the checkpoint's hash of its numbers checks it is the same table).
LOCATIONS = ("data.root", "data.download", "search.cost.table")
# What runs after a search's last epoch (nas.screen): a resume may add or change it, and the screen
# writes it into config.yaml when it starts (after the search has checked it).
SCREEN_SETTINGS = ("search.screen.cells", "search.screen.epochs", "search.screen.distance")
# What a resume may change: what the run shows, for that invocation, where its files are, and what
# runs after the epochs.
RESUME_FREE = ("run.log_every", "run.plot", "run.tensorboard", "run.dist_timeout") + LOCATIONS + SCREEN_SETTINGS
_held: Dict[str, Any] = {}  # run directory -> its open lock file, while this process writes there
# New run directory -> what discarding it removes: the folders this process created for it (deepest
# first, absolute), or, for a folder that was there, the names of a run's files it held already.
_made: Dict[str, "tuple[List[Path], List[str]]"] = {}


def lock_run(run_dir: Path) -> None:
    """Take ``run_dir`` for this process: a second process writing the same run (a ``--resume``
    while it still runs, two runs given one ``--out``) would interleave its logs. The operating
    system drops the lock when the process ends, however it ends. Without ``fcntl`` (Windows) a no-op."""
    try:
        import fcntl
    except ImportError:
        return
    key = str(run_dir.resolve())
    if key in _held:
        return
    try:
        handle = open(run_dir / LOCK_FILE, "a")
    except OSError:  # a folder this process cannot write: the run's first write says so
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(
            f"{run_dir} is in use by another process (a search or retrain writing there); wait for it to end, "
            "or choose another --out"
        ) from None
    _held[key] = handle


def unlock_run(run_dir: Path, remove_file: bool = True) -> None:
    """Give ``run_dir`` back: its lock file goes with the lock, so a finished run holds only its outputs
    (``remove_file=False`` when the folder itself is gone: a new file there would be another process's)."""
    handle = _held.pop(str(run_dir.resolve()), None)
    if handle is not None:
        if remove_file:
            try:
                (run_dir / LOCK_FILE).unlink(missing_ok=True)
            except OSError:  # a folder that refuses the removal keeps an empty, unlocked file: harmless
                pass
        handle.close()  # closing drops the lock


def prepare_run_dir(run_dir: Path, kind: str = "") -> None:
    """Create ``run_dir`` for a new run of ``kind``; refuse one that already holds a run or its outputs."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise UserError(f"--out {run_dir} is a file; choose a folder")
        # tensorboard/ too: a new run's events would join the old ones in one chart
        present = [name for name in _RUN_ENTRIES if (run_dir / name).exists()]
        if [n for n in present if n != "tensorboard"] == ["config.yaml"]:  # no epoch ended: maybe a run in progress
            doomed = " and ".join(str(run_dir / n) for n in present)
            raise UserError(
                f"{run_dir} holds a run that has not finished its first epoch (config.yaml, no checkpoint); "
                f"if it is not running, delete {doomed} and start again, or choose another --out"
            )
        if "checkpoint.pt" in present:
            other = _checkpoint_kind(run_dir)
            if kind and other and other != kind:
                raise UserError(
                    f"{run_dir} holds a {other} run, not a {kind} run; choose another --out"
                    + (f" (to retrain its cell: retrain {run_dir} --out NEW_FOLDER)" if other == "search" else "")
                )
            again = RESUME_COMMANDS.get(other or kind, "--resume")
            raise UserError(
                f"{run_dir} already holds a run ({', '.join(present)}); continue it with "
                f"{again} {run_dir}, or choose another --out"
            )
        if present:
            raise UserError(
                f"{run_dir} holds a run's files ({', '.join(present)}) but no checkpoint to resume; "
                "choose another --out, or move those files away"
            )
        held = [name for name in _RUN_ENTRIES if (run_dir / name).exists()]
        _made.setdefault(str(run_dir.resolve()), ([], held))  # the second call, holding the lock, keeps the first's
        return
    made = [run_dir.absolute(), *run_dir.absolute().parents]
    made = made[: next(i for i, folder in enumerate(made) if folder.exists())]
    make_dir(run_dir)
    _made[str(run_dir.resolve())] = (made, [])


def _checkpoint_kind(run_dir: Path) -> Optional[str]:
    """The kind of run ``run_dir``'s checkpoint holds; None when it cannot be read."""
    try:
        kind = load_checkpoint(run_dir / "checkpoint.pt").get("kind")
    except UserError:
        return None
    return str(kind) if kind is not None else None


def discard_new_run(run_dir: Path) -> None:
    """A new run that failed before its first checkpoint leaves nothing behind, so the same --out
    starts again: the folders it created go (a parent another run has written to since stays), and
    a folder that was there keeps only what it held. Removed while the lock is still held, so no
    other process can have begun there."""
    key = str(run_dir.resolve())
    made, held = _made.pop(key, ([], None))
    if made:
        shutil.rmtree(made[0], ignore_errors=True)
        for folder in made[1:]:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else's files live there now
                break
    elif held is not None:
        for name in _RUN_ENTRIES:
            if name not in held:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    unlock_run(run_dir, remove_file=not made)


def keep_settings(run_dir: Path, cfg: Config, keys: Sequence[str]) -> None:
    """Write ``cfg``'s values of ``keys`` into the run's ``config.yaml`` where a resume changed
    them, so the resumes after it, the command it prints and ``inspect`` see them too."""
    path = run_dir / "config.yaml"
    saved = config_mod.load_config(path)
    moved = False
    for key in keys:
        *sections, name = key.split(".")  # search.cost.table: two sections deep
        here, there = functools.reduce(getattr, sections, saved), functools.reduce(getattr, sections, cfg)
        if getattr(here, name) != getattr(there, name):
            setattr(here, name, getattr(there, name))
            moved = True
    if moved:
        config_mod.save_config(saved, path)


def load_for_resume(run_dir: Path, cfg: Config, kind: str) -> Dict[str, Any]:
    """The run's checkpoint, after checking it belongs to ``kind`` and matches ``cfg``."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    if ckpt.get("kind") != kind:
        other = ckpt.get("kind")
        if (other, kind) == ("search", "retrain"):
            fix = f"to retrain the cell it found: retrain {run_dir} --out NEW_FOLDER"
        elif other in RESUME_COMMANDS:
            fix = f"resume it with {RESUME_COMMANDS[other]} {run_dir}"
        else:
            fix = "give the folder of a run"
        raise UserError(f"{run_dir}/checkpoint.pt is a {other!r} checkpoint, not a {kind!r} one; {fix}")
    # Through from_dict, so keys added to the config since the run started read as their defaults.
    try:
        saved = config_mod.from_dict(ckpt["config"])
    except UserError as exc:
        raise UserError(
            f"{run_dir}/checkpoint.pt holds no readable config ({exc}); it is damaged: restore it from a backup "
            "or start a new run with --out"
        ) from None
    changed = config_mod.diff(config_mod.to_dict(saved), config_mod.to_dict(cfg))
    changed = [line for line in changed if line.split(":")[0] not in RESUME_FREE]
    old = saved.data
    if cfg.data.root != old.root and cfg.data.key != "synthetic" and not cfg.data.verify_md5:
        raise UserError(
            f"data.root {old.root} -> {cfg.data.root}: with data.verify_md5=false this resume cannot check that "
            f"it holds the same data; put the data back at {old.root} (a relative root is read from the folder "
            "you run in)"
        )
    if changed:
        raise UserError(
            f"the config does not match the run in {run_dir}: {'; '.join(changed)}. "
            "Resume with the run's own config (drop --config/--set) or start a new run with --out"
        )
    return ckpt


# The epoch logs a run directory may hold (an EpochTask's ``logs`` are among them).
RUN_LOGS = ("metrics.jsonl", "arch_probs.jsonl")


class EpochTask(Protocol):
    """What a kind of run (search, retrain) adds to the skeleton."""

    kind: str  # the checkpoint's "kind"; a resume refuses another kind
    logs: Sequence[str]  # jsonl files in the run dir with one ``epoch`` line each (metrics.jsonl first)
    epochs: int
    nan_hint: str  # the fix named when the training loss is not finite
    # Optional: ``outputs``, files the task rewrites whole each epoch (restored if the epoch's writes fail).

    def state_dict(self) -> Dict[str, Any]: ...  # checkpoint entries (model, optimisers)

    def load_state_dict(self, ckpt: Dict[str, Any]) -> None: ...

    def start_epoch(self, epoch: int) -> int: ...  # 0-based epoch; returns its number of steps

    def batches(self) -> Iterable[Any]: ...

    def step(self, batch: Any) -> None: ...

    def postfix(self) -> Dict[str, str]: ...  # progress-bar figures (may read the device)

    def end_epoch(self, epoch: int, seconds: float) -> Dict[str, Any]: ...  # the metrics line (train_loss in it)

    def write_outputs(self, run_dir: Path, epoch: int, metrics: Dict[str, Any]) -> None: ...  # after the metrics line

    def describe(self, epoch: int, metrics: Dict[str, Any]) -> str: ...  # the epoch's log line

    # Optional: ``edge_probabilities() -> {cell: {edge: {op: p}}}``, the per-edge curves TensorBoard shows.


def _rng_state(world: World, device: Optional[torch.device]) -> Dict[str, Any]:
    state = capture_rng_state()
    if world.distributed and device is not None and device.type == "cuda":
        state["cuda_current"] = torch.cuda.get_rng_state(device)  # this rank's GPU's stream
    return state


def silent(text: str) -> None:
    """A log that drops every line (ranks other than 0)."""
    pass


@dataclass
class EpochsDone:
    start: int  # epochs done before this invocation
    done: int  # epochs done after it
    finished: bool
    last_metrics: Optional[dict]


def check_run(
    cfg: Config, device: torch.device, world: World, batch_size: int, batch_key: str, resume: bool = False
) -> None:
    """What every run checks before it touches its directory: the config, the options that depend
    on the device, and a global batch that splits evenly over the processes. A resume needs the
    run's own process count (:func:`open_run` says so), over which its batch split when it began."""
    error = None
    try:
        validate(cfg)
        if cfg.run.tensorboard:
            require_tensorboard()  # now, not after the first epoch
        check_device_options(device, cfg.run.bf16, cfg.run.sync_bn)
        if not resume:
            check_batch_split(batch_size, batch_key, world)
    except UserError as exc:
        error = exc
    world.raise_agreed(error)


def open_run(
    run_dir: Path,
    cfg: Config,
    kind: str,
    resume: bool,
    check_resumed: Optional[Callable[[Dict[str, Any]], None]] = None,
    world: World = SINGLE,
) -> Optional[Dict[str, Any]]:
    """Start a new run directory (saving the config) or load the checkpoint of the one to resume.

    Under several processes rank 0 prepares the directory; every rank loads a checkpoint to
    resume (the run directory must be on a file system all nodes share). An error on any rank
    stops every rank with that message.
    """
    raised: Optional[UserError] = None
    ckpt = None
    try:
        if resume:
            if world.is_main and run_dir.is_dir():
                lock_run(run_dir)
            ckpt = load_for_resume(run_dir, cfg, kind)
            saved = int(ckpt.get("world_size", 1))
            if saved != world.world_size:
                raise UserError(
                    f"{run_dir} ran with {saved} process(es), this resume has {world.world_size}; "
                    f"resume with the same number (torchrun --nproc_per_node={saved}), so the data "
                    "order and the batches continue exactly"
                )
            if check_resumed is not None:
                check_resumed(ckpt)
            if world.is_main:
                keep_settings(run_dir, cfg, LOCATIONS)  # a resume that found its files elsewhere
                for name in RUN_LOGS:  # damage found here stops every rank alike, not rank 0 alone later
                    read_jsonl(run_dir / name)
        elif world.is_main:
            prepare_run_dir(run_dir, kind)
            lock_run(run_dir)
            prepare_run_dir(run_dir, kind)  # again, holding the lock: another process may have begun there
            try:
                config_mod.save_config(cfg, run_dir / "config.yaml")
            except BaseException:
                discard_new_run(run_dir)
                raise
    except UserError as exc:
        unlock_run(run_dir)  # refused: the folder is as it was (a lock another process holds stays its own)
        _made.pop(str(run_dir.resolve()), None)  # refused after creating it: another process has begun there
        raised = exc
    world.raise_agreed(raised)  # any rank's error stops all alike
    return ckpt


def run_epochs(
    task_factory: Callable[[], EpochTask],
    cfg: Config,
    run_dir: Path,
    ckpt: Optional[Dict[str, Any]],
    **kwargs: Any,
) -> "tuple[EpochTask, EpochsDone]":
    """Seed, build the task, restore it from ``ckpt`` (from :func:`open_run`), and run its epochs
    (:func:`_run_epochs`); then give the run directory's lock back."""
    try:
        return _run_epochs(task_factory, cfg, run_dir, ckpt, **kwargs)
    except BaseException:  # a refusal, a bug or Ctrl-C
        if ckpt is None and kwargs.get("world", SINGLE).is_main and not (run_dir / "checkpoint.pt").exists():
            discard_new_run(run_dir)  # no epoch was kept: nothing to resume
        raise
    finally:
        unlock_run(run_dir)
        _made.pop(str(run_dir.resolve()), None)  # begun, or discarded: its folders are the user's now


def _restore(task: EpochTask, ckpt: Dict[str, Any], run_dir: Path) -> None:
    """The task's state and the generators from ``ckpt``; a checkpoint whose entries do not fit
    this run (edited, truncated or another network's) is one :class:`UserError`, not a traceback."""
    epoch = ckpt.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= task.epochs:
        raise UserError(
            f"{run_dir / 'checkpoint.pt'} says it ended epoch {epoch!r} of a {task.epochs}-epoch run; it is damaged "
            "or another run's: restore it from a backup or start a new run with --out"
        )
    try:
        task.load_state_dict(ckpt)
        restore_rng_state(ckpt["rng"])
    except (UserError, torch.OutOfMemoryError):  # said already; not the checkpoint's fault
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # load_state_dict's first line is a header ("Error(s) in loading state_dict for X:"); say the first error
        what = (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0])[:200] if lines else ""
        raise UserError(
            f"{run_dir / 'checkpoint.pt'} does not fit this run ({type(exc).__name__}{': ' + what if what else ''}); "
            "it is damaged or another run's: restore it from a backup or start a new run with --out"
        ) from None


def _run_epochs(
    task_factory: Callable[[], EpochTask],
    cfg: Config,
    run_dir: Path,
    ckpt: Optional[Dict[str, Any]],
    *,
    desc: str,
    stop_after: Optional[int] = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    world: World = SINGLE,
    device: Optional[torch.device] = None,
) -> "tuple[EpochTask, EpochsDone]":
    """The epochs of :func:`run_epochs`.

    Every epoch ends with the metrics line, the task's own outputs and then the checkpoint, so the
    checkpoint never runs ahead of the logs. ``stop_after`` ends this invocation after that many
    epochs, as if the run had been stopped there. Every rank seeds alike and runs the epochs;
    rank 0 alone writes, prints and shows progress. ``device``: where the task computes (on CUDA
    the epoch's time waits for its queued work, and each rank's GPU generator is checkpointed).
    """
    if not world.is_main:
        progress, log = False, silent
    seed_everything(cfg.run.seed)
    task = task_factory()
    start = 0
    if ckpt is not None:
        _restore(task, ckpt, run_dir)
        start = int(ckpt["epoch"])
        if world.distributed and "cuda_current" in ckpt["rng"] and device is not None and device.type == "cuda":
            # Each rank draws on its own GPU: continue rank 0's stream there, as every rank did.
            torch.cuda.set_rng_state(ckpt["rng"]["cuda_current"], device)
        # Drop lines an interrupted epoch may have left after the checkpoint.
        if world.is_main:
            for name in task.logs:
                truncate_jsonl(run_dir / name, lambda r: r.get("epoch", 0) <= start)
        log(f"resuming {run_dir} after epoch {start}/{task.epochs}")
    done, last = start, None
    # A resumed run's events of the epochs after its checkpoint are dropped (TensorBoard's purge_step).
    tb = None
    if cfg.run.tensorboard and world.is_main:
        tb = TensorBoardLog(run_dir / "tensorboard", purge_step=start + 1 if start else None)
    for epoch in range(start, task.epochs):
        steps = task.start_epoch(epoch)
        t0 = time.perf_counter()
        bar = tqdm(
            total=steps, desc=f"{desc} {epoch + 1}/{task.epochs}", disable=not progress, leave=False, dynamic_ncols=True
        )
        for step, batch in enumerate(task.batches()):
            if step >= steps:
                break
            task.step(batch)
            bar.update(1)
            if progress and cfg.run.log_every > 0 and (step + 1) % cfg.run.log_every == 0:
                bar.set_postfix(**task.postfix())
        bar.close()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)  # the epoch's queued GPU work belongs to its time
        seconds = time.perf_counter() - t0
        metrics = task.end_epoch(epoch, seconds)
        train_loss = metrics["train_loss"]
        if not math.isfinite(train_loss):
            raise UserError(f"the training loss became {train_loss} in epoch {epoch + 1}; {task.nan_hint}")
        if world.is_main:
            _write_epoch(task, cfg, run_dir, epoch + 1, metrics, tb, world, device)
        done, last = epoch + 1, metrics
        log(task.describe(epoch, metrics))
        if stop_after is not None and done - start >= stop_after:
            break
    if tb is not None:
        tb.close()
    return task, EpochsDone(start, done, done >= task.epochs, last)


def _write_epoch(
    task: EpochTask,
    cfg: Config,
    run_dir: Path,
    epoch: int,
    metrics: Dict[str, Any],
    tb: Optional[TensorBoardLog],
    world: World,
    device: Optional[torch.device],
) -> None:
    """The metrics line, the task's outputs, the TensorBoard events, then the checkpoint.

    When the machine refuses a write, the logs are cut back to where they were, so they end with
    the last complete checkpoint's epoch, as a resume would cut them.
    """
    sizes = {name: file_size(run_dir / name) for name in task.logs}
    # Files the task rewrites whole each epoch: put back as they were when the epoch is not kept.
    before = {
        name: (run_dir / name).read_bytes() if (run_dir / name).exists() else None
        for name in getattr(task, "outputs", ())
    }
    try:
        append_jsonl(run_dir / task.logs[0], metrics)
        task.write_outputs(run_dir, epoch, metrics)
        if tb is not None:
            probabilities = getattr(task, "edge_probabilities", None)
            tb.log_epoch(epoch, metrics, probabilities() if probabilities is not None else None)
        atomic_torch_save(
            {
                "kind": task.kind,
                "epoch": epoch,
                **task.state_dict(),
                "rng": _rng_state(world, device),
                "config": config_mod.to_dict(cfg),
                **({"world_size": world.world_size} if world.distributed else {}),
            },
            run_dir / "checkpoint.pt",
        )
    except WriteError:
        for name, size in sizes.items():
            cut_back(run_dir / name, size)
        for name, data in before.items():
            try:
                if data is None:  # the run's first kept epoch is still to come
                    (run_dir / name).unlink(missing_ok=True)
                else:
                    atomic_write_bytes(run_dir / name, data)
            except (WriteError, OSError):
                pass  # the machine refuses this too; the error already names the run's state
        raise
