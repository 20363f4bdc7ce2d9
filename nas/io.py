"""Atomic writes, safe checkpoint loading and random-state capture.

Every write turns the machine's refusal (no space, no permission, a read-only disk) into a
:class:`nas.errors.WriteError` that names the path and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Union

import numpy as np
import torch

from .errors import UserError, WriteError

PathLike = Union[str, Path]


@contextlib.contextmanager
def writing(path: PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a :class:`WriteError` naming it."""
    try:
        yield
    except OSError as exc:
        raise WriteError(path, exc) from None


def make_dir(path: PathLike) -> None:
    """``mkdir -p path``; a refusal is a :class:`WriteError`."""
    with writing(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # reading it means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see a partial file."""
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            # Interrupted (Ctrl-C, a full disk): drop the partial file, keep the old one.
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
    """Append one JSON line, whole or not at all: a write the disk refuses halfway is cut off
    again (a line torn by a crash is skipped by readers). Synced before it returns, as the
    checkpoint written after it is: a power cut cannot keep the checkpoint and lose its line."""
    data = (json.dumps(record) + "\n").encode("utf-8")
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def file_size(path: PathLike) -> int:
    """The size of ``path`` in bytes; 0 when it does not exist."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def cut_back(path: PathLike, size: int) -> None:
    """Shorten ``path`` to ``size`` bytes, best effort (it frees space, so it works on a full disk)."""
    with contextlib.suppress(OSError):
        if file_size(path) > size:
            os.truncate(path, size)


def read_text(path: PathLike, what: str) -> str:
    """The text of ``path``; :class:`UserError` naming ``what`` it should be when it cannot be read
    or is not UTF-8 text."""
    path = Path(path)
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; the file is damaged or not the one meant") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_record(path: PathLike, what: str, parse: Callable[[str], Any]) -> Any:
    """``parse`` of ``path``'s text (``Genotype.from_json``, say); a :class:`UserError` it raises
    is said again with the file's name."""
    text = read_text(path, what)
    try:
        return parse(text)
    except UserError as exc:
        raise UserError(f"{what} {path}: {exc}; the file is damaged or not the one meant") from None


def read_jsonl(path: PathLike) -> list:
    """The epoch records of a run's log (``metrics.jsonl``, ``arch_probs.jsonl``): one JSON object
    with an integer ``"epoch"`` a line. A last line that does not parse is one a crash tore mid-write
    (or a run still writing): it is skipped. Any other line that is not such a record is damage, a
    :class:`UserError` naming the file and the line, so nothing reads (or a resume rewrites) the
    log without it unnoticed."""
    out: list = []
    path = Path(path)
    if not path.exists():
        return out
    # A stray byte spoils its own line only (replaced, so the line does not parse).
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    fix = "the log is damaged: restore it from a backup, or delete that line (the run loses that epoch's record)"
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # torn by a crash mid-write, or still being written
            raise UserError(f"{path} line {n} is not JSON; {fix}") from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise UserError(f'{path} line {n} is not an epoch record (a JSON object with an integer "epoch"); {fix}')
        out.append(record)
    return out


def read_json(path: PathLike, what: str, fix: str) -> Any:
    """The JSON value in ``path``; :class:`UserError` naming ``what`` the file should be and ``fix``
    when it is missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {what} {path} ({type(exc).__name__}); {fix}") from None


def truncate_jsonl(path: PathLike, keep: Callable[[dict], bool]) -> None:
    """Atomically keep only the records for which ``keep(record)`` holds (used on resume)."""
    path = Path(path)
    if path.exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; corruption becomes a UserError."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"no run folder {path.parent}; give --resume the --out folder of a run")
    if not path.exists():
        raise UserError(
            f"no checkpoint at {path}; the run has not finished an epoch yet: if it is not running, delete "
            f"{path.parent} and start it again without --resume"
        )
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign pickle would precede the error line
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load of arbitrary bytes fails in many ways (KeyError, IndexError, ...)
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
