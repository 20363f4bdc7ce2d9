"""CIFAR-10/100 from the official python archives.

The archive (or its extracted folder) is found under a user-given root, optionally downloaded,
MD5-checked, extracted safely (no member may point outside the target folder) and read with a
restricted unpickler that only rebuilds numpy arrays. Every problem with the user's files raises
:class:`nas.errors.UserError` naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nas.data.imagedata import ImageData
from nas.errors import UserError

__all__ = ["ARCHIVE_MD5", "FILE_MD5", "CIFAR_URLS", "DOWNLOAD_TIMEOUT_S"]

#: Official MD5 of each archive, by data set name.
ARCHIVE_MD5: dict[str, str] = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}

#: Official MD5 of each data file in the extracted folder, by data set name.
FILE_MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfb6a6ac8d64",
    },
}

CIFAR_URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}

#: Seconds to wait for the download server (connect and each read).
DOWNLOAD_TIMEOUT_S: float = 20.0


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_CIFAR: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str, fix: str) -> None:
    got = _md5(path)
    if got != expected:
        raise UserError(
            f"MD5 mismatch for {path}: expected {expected}, got {got}. Fix: {fix}, "
            "or set data.verify_md5=false if this is a deliberately modified copy"
        )


def _load_cifar(key: str, root: str | Path | None, *, download: bool, verify_md5: bool) -> ImageData:
    spec = _CIFAR[key]
    if root is None or str(root) == "":
        raise UserError(
            f"{spec.title}: no data root given. Fix: set data.root to the folder that holds "
            f"{spec.archive} or {spec.folder}/ (or to an empty folder and set data.download=true)"
        )
    root = Path(root).expanduser()
    folder = root / spec.folder
    archive = root / spec.archive

    if not folder.is_dir():
        if not archive.is_file():
            if not download:
                raise UserError(
                    f"{spec.title} not found: expected {archive} or the extracted folder {folder}/. "
                    f"Fix: put the official archive there ({CIFAR_URLS[key]}), set data.root to the "
                    "folder that holds it, or set data.download=true"
                )
            _download(CIFAR_URLS[key], archive)
            if verify_md5:
                got = _md5(archive)
                if got != ARCHIVE_MD5[key]:
                    archive.unlink(missing_ok=True)
                    raise UserError(
                        f"MD5 mismatch for the downloaded {archive}: expected {ARCHIVE_MD5[key]}, "
                        f"got {got}; the file was deleted. Fix: run again to download it again"
                    )
        elif verify_md5:
            _check_md5(archive, ARCHIVE_MD5[key], f"delete {archive} and download it again (data.download=true)")
        _safe_extract(archive, root, spec.folder)

    files = spec.train_files + spec.test_files
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        again = (
            f"so that it is extracted again from {archive}"
            if archive.is_file()
            else f"and set data.download=true (or put {spec.archive} in {root})"
        )
        raise UserError(
            f"{spec.title} folder {folder} is incomplete (missing {', '.join(missing)}). "
            f"Fix: delete that folder {again}"
        )
    if verify_md5:
        expected = FILE_MD5[key]
        for f in files:
            _check_md5(folder / f, expected[f], f"delete {folder} and extract or download it again")

    train_x, train_y = _read_batches([folder / f for f in spec.train_files], spec)
    test_x, test_y = _read_batches([folder / f for f in spec.test_files], spec)
    return ImageData(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        name=key,
    )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for the official batch files: only numpy array reconstruction is allowed."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read_batches(paths: Sequence[Path], spec: _CifarSpec) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {path} ({exc}). Fix: check that the file is readable") from None
        try:
            with f:
                batch = _BatchUnpickler(f, encoding="bytes").load()
        except Exception as exc:  # a corrupted pickle can fail in many ways
            raise UserError(
                f"cannot read {path}: truncated or corrupted ({type(exc).__name__}: {exc}). "
                "Fix: delete it (or its folder) and extract or download it again"
            ) from None
        bad = f"{path} is not a {spec.title} batch file"
        fix = "Fix: delete it (or its folder) and extract or download it again"
        if not isinstance(batch, dict) or b"data" not in batch or spec.label_key not in batch:
            raise UserError(f"{bad} (no {b'data'!r}/{spec.label_key!r} entries). {fix}")
        data, y = batch[b"data"], batch[spec.label_key]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise UserError(f"{bad} (data should be uint8 N x 3072, got {shape}). {fix}")
        try:
            y = np.asarray(y, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise UserError(f"{bad} (labels are not integers). {fix}") from None
        if len(y) != len(data):
            raise UserError(f"{bad} ({len(data)} images but {len(y)} labels). {fix}")
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise UserError(f"{bad} (labels outside 0..{spec.num_classes - 1}). {fix}")
        images.append(torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32)))
        labels.append(torch.from_numpy(y))
    return torch.cat(images).contiguous(), torch.cat(labels)


def _safe_extract(archive: Path, root: Path, folder: str) -> None:
    """Extract ``archive`` into ``root`` via a temporary folder, refusing unsafe members.

    Only ``root/folder`` appears, and only once extraction has fully succeeded.
    """
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.extract-", dir=root))
    except OSError as exc:
        raise UserError(
            f"cannot extract {archive}: {root} is not writable ({exc}). Fix: make it writable, or extract "
            f"the archive there yourself (tar xzf {archive.name})"
        ) from None
    tmp_real = tmp.resolve()

    def inside(p: Path) -> bool:
        return p == tmp_real or tmp_real in p.parents

    has_filter = hasattr(tarfile, "data_filter")
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for m in tf:
                name = m.name
                parts = Path(name).parts
                dest = (tmp_real / name).resolve()
                unsafe = (
                    os.path.isabs(name)
                    or name.startswith(("/", "\\"))
                    or ".." in parts
                    or not inside(dest)
                    or not (m.isfile() or m.isdir() or m.issym() or m.islnk())
                )
                if m.issym():
                    unsafe = unsafe or os.path.isabs(m.linkname) or not inside((dest.parent / m.linkname).resolve())
                elif m.islnk():
                    unsafe = unsafe or os.path.isabs(m.linkname) or not inside((tmp_real / m.linkname).resolve())
                if unsafe:
                    raise UserError(
                        f"{archive} holds an unsafe member {name!r} (absolute path, '..', link or special file "
                        "pointing outside the target folder); nothing was extracted. Fix: delete it and "
                        "download the official archive again"
                    )
                if has_filter:
                    tf.extract(m, tmp_real, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extract(m, tmp_real)
        if not (tmp_real / folder).is_dir():
            raise UserError(
                f"{archive} does not contain the folder {folder}/. Fix: delete it and download the "
                "official archive again"
            )
        try:
            os.replace(tmp_real / folder, root / folder)
        except OSError:
            if not (root / folder).is_dir():  # else another process extracted it meanwhile
                raise
    except UserError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"cannot extract {archive}: truncated or corrupted ({type(exc).__name__}: {exc}). "
            "Fix: delete it and download it again (data.download=true)"
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot extract {archive} into {root} ({type(exc).__name__}: {exc}). "
            "Fix: check the free disk space and the folder's permissions"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` through a temporary file in the same folder; a failed download
    removes the folders it created."""
    made = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the data folder {dest.parent} ({exc}). Fix: set data.root to a writable folder"
        ) from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, socket.timeout, TimeoutError, HTTPException, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()  # empty unless something else wrote there meanwhile: then it stays
            except OSError:
                break
        raise UserError(
            f"download of {url} failed ({type(exc).__name__}: {exc}). Fix: check the network, or "
            f"fetch the file by other means and put it at {dest}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
