"""Atomic writes, safe checkpoint loading and random-state capture."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Union

import numpy as np
import torch

from .errors import UserError

PathLike = Union[str, Path]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Interrupted (Ctrl-C included): drop the partial file, keep the old one.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def append_jsonl(path: PathLike, record: Dict[str, Any]) -> None:
    """Append one JSON line (a whole line per write; a torn last line is skipped by readers)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: PathLike) -> list:
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
    return out


def truncate_jsonl(path: PathLike, keep: Callable[[dict], bool]) -> None:
    """Atomically keep only the records for which ``keep(record)`` holds (used on resume)."""
    path = Path(path)
    if path.exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; corruption becomes a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"no checkpoint at {path}; the run has not finished an epoch yet, start it again without --resume"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(
            f"checkpoint {path} is corrupted or not a checkpoint of this tool "
            f"({type(exc).__name__}); restore it from a backup or start a new run"
        ) from None
    if not isinstance(ckpt, dict) or "epoch" not in ckpt or "config" not in ckpt:
        raise UserError(f"checkpoint {path} lacks the expected fields; it was not written by this tool")
    return ckpt


def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, in a form weights_only can load."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
