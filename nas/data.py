"""Image data for the search and for training: CIFAR-10/100, a synthetic task, and a GPU-resident loader.

* :func:`load_dataset` returns an :class:`ImageData` (uint8 images N x 3 x H x W, int64 labels,
  and per-channel mean/std) for ``"cifar10"``, ``"cifar100"`` (official python archives, MD5-checked,
  extracted safely, optionally downloaded) or ``"synthetic"`` (generated on the fly, see
  :func:`make_synthetic`).
* :func:`search_split` splits the training set into a part for the network weights and a part for
  the architecture parameters.
* :class:`BatchLoader` keeps the whole uint8 data set on the device and builds each batch there
  (gather, random crop with 4-pixel zero padding, horizontal flip, normalisation). The order and
  the augmentation of an epoch are a pure function of ``(seed, epoch)``.

Nothing here picks a device: the caller passes it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
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
from typing import Iterator, Sequence

import numpy as np
import torch

from nas.errors import UserError

__all__ = [
    "ImageData",
    "DATASETS",
    "ARCHIVE_MD5",
    "FILE_MD5",
    "CIFAR_URLS",
    "load_dataset",
    "make_synthetic",
    "search_split",
    "crop_flip",
    "random_crop_flip",
    "BatchLoader",
]

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "synthetic")

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


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    verify_md5: bool = True,
    num_train: int = 10000,
    num_test: int = 2000,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> ImageData:
    """Load ``name`` (one of :data:`DATASETS`).

    CIFAR: from ``root`` (the folder holding the official archive or its extracted folder);
    ``download`` fetches the archive when neither is there; ``verify_md5=False`` accepts a
    deliberately modified copy. ``num_train``, ``num_test``, ``image_size`` and ``seed`` only
    matter for ``"synthetic"``.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key == "synthetic":
        return make_synthetic(num_train, num_test, image_size=image_size, num_classes=num_classes, seed=seed)
    if key not in _CIFAR:
        raise UserError(
            f"unknown data set {name!r}: valid names are {', '.join(DATASETS)} "
            "(set data.name to one of them)"
        )
    return _load_cifar(key, root, download=download, verify_md5=verify_md5)


# ----------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------


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
        raise UserError(
            f"{spec.title} folder {folder} is incomplete (missing {', '.join(missing)}). "
            f"Fix: delete that folder so that it is extracted again from {spec.archive}, "
            "or download again (data.download=true)"
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
                    os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts
                    or not inside(dest) or not (m.isfile() or m.isdir() or m.issym() or m.islnk())
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
    """Fetch ``url`` into ``dest`` through a temporary file in the same folder."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the data folder {dest.parent} ({exc}). Fix: set data.root to a writable folder") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, socket.timeout, TimeoutError, HTTPException, ValueError) as exc:
        raise UserError(
            f"download of {url} failed ({type(exc).__name__}: {exc}). Fix: check the network, or "
            f"fetch the file by other means and put it at {dest}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def search_split(num: int, weight_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(num)`` into (weight indices, architecture indices), each sorted.

    The split is a pure function of ``(num, weight_fraction, seed)``; the two parts are disjoint
    and together cover every index. GDAS on CIFAR-10 uses ``weight_fraction=0.5``.
    """
    if not 0.0 < float(weight_fraction) < 1.0:
        raise UserError(
            f"search split fraction must lie strictly between 0 and 1, got {weight_fraction}. "
            "Fix: set it to e.g. 0.5 (half the training set for weights, half for the architecture)"
        )
    if num < 2:
        raise UserError(f"cannot split {num} training images into two parts. Fix: use a larger training set")
    k = min(max(int(round(num * float(weight_fraction))), 1), num - 1)
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:k].sort().values, perm[k:].sort().values


# ----------------------------------------------------------------------------------------------
# Augmentation and loader
# ----------------------------------------------------------------------------------------------


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
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if int(batch_size) < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}. Fix: set a positive batch size")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self.epoch = 0
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
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

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
        for i in range(len(self)):
            part = plan[:, i * bs:(i + 1) * bs]
            idx = part[0]
            x = self._images.index_select(0, idx)
            if self.augment:
                x = crop_flip(x, part[1], part[2], part[3], self.padding)
            x = x.float().mul_(self._scale).sub_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self._labels.index_select(0, idx)


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------


#: The synthetic task's glyphs on a 7 x 7 grid: "1" and "2" mark the glyph's two strokes, which are
#: coloured independently. Class ``k`` is glyph ``k``. Every glyph is built from the same parts (short
#: strokes one grid cell wide, also used for the distractors); the classes differ only in how two strokes meet:
#: crossing, touching at an end or the middle, or missing each other by one grid cell (drawn 2 x 2 pixels).
SYNTHETIC_GLYPHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("plus", (".......", "...2...", "...2...", ".11111.", "...2...", "...2...", ".......")),
    ("corner", (".......", ".1.....", ".1.....", ".1.....", ".1.....", ".12222.", ".......")),
    ("tee", (".......", ".11111.", "...2...", "...2...", "...2...", "...2...", ".......")),
    ("parallel-1", (".......", ".......", ".11111.", ".......", ".22222.", ".......", ".......")),
    ("cross-diagonal", (".......", ".1...2.", "..1.2..", "...1...", "..2.1..", ".2...1.", ".......")),
    ("vee", (".......", ".1...2.", "..1.2..", "...1...", ".......", ".......", ".......")),
    ("tee-gap", (".......", ".11111.", ".......", "...2...", "...2...", "...2...", ".......")),
    ("broken-line", (".......", ".......", ".......", "111.222", ".......", ".......", ".......")),
    ("corner-gap", (".......", ".1.....", ".1.....", ".1.....", ".1.....", ".1.222.", ".......")),
    ("parallel-2", (".......", ".11111.", ".......", ".......", ".22222.", ".......", ".......")),
)

_GLYPH = 7  # the glyphs' design grid (above)
_SCALE = 2  # each grid cell is drawn as a 2 x 2 block: 2-pixel strokes and gaps, 14 x 14 glyphs
_GLYPH_PX = _GLYPH * _SCALE


def _upscale(masks: np.ndarray, scale: int) -> np.ndarray:
    return masks.repeat(scale, axis=-2).repeat(scale, axis=-1)


def _glyph_bank(num_classes: int, scale: int = _SCALE) -> np.ndarray:
    """int8 num_classes x 8 x 14 x 14 (at scale 2): each glyph in its 8 orientations (rotations, mirror images)."""
    bank = np.zeros((num_classes, 8, _GLYPH, _GLYPH), np.int8)
    for k, (_, rows) in enumerate(SYNTHETIC_GLYPHS[:num_classes]):
        g = np.array([[".12".index(ch) for ch in row] for row in rows], np.int8)
        for r in range(4):
            bank[k, r] = np.rot90(g, r)
            bank[k, 4 + r] = np.rot90(g.T, r)
    return _upscale(bank, scale)


def _stroke_bank(scale: int = _SCALE) -> np.ndarray:
    """int8 16 x 14 x 14 (at scale 2): single straight strokes of length 2..5 cells, horizontal, vertical and diagonal."""
    out = []
    for length in (2, 3, 4, 5):
        for dy, dx, x0 in ((0, 1, 0), (1, 0, 0), (1, 1, 0), (1, -1, _GLYPH - 1)):
            m = np.zeros((_GLYPH, _GLYPH), np.int8)
            for i in range(length):
                m[i * dy, x0 + i * dx] = 1
            out.append(m)
    return _upscale(np.stack(out), scale)


def _synthetic_images(
    num: int, size: int, num_classes: int, rng: np.random.Generator, *,
    scale: int = _SCALE, light: bool = True, field: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` images (uint8 N x 3 x size x size) and balanced labels of the glyph task.

    The keywords make the task's variants for ``experiments/synthetic_variants.py``: ``scale``
    pixels per grid cell, strokes lighter than the background (``light``) or of random polarity
    per channel, and the std of a smooth colour field on the background (0: none). The task's
    first version was ``scale=1, light=False, field=0.08``.
    """
    labels = rng.permutation(np.arange(num) % num_classes)
    glyphs = _glyph_bank(num_classes, scale)
    strokes = _stroke_bank(scale)
    glyph_px = _GLYPH * scale
    base = rng.uniform(0.2, 0.8, (num, 3, 1, 1)).astype(np.float32)  # a random background colour per image
    img = np.repeat(np.repeat(base, size, axis=2), size, axis=3)  # N x 3 x size x size
    if field > 0:  # plus a smooth random colour field: bilinear upsampling of 4 x 4 normal values
        coarse = rng.normal(0.0, field, (num, 3, 4, 4)).astype(np.float32)
        pos = np.clip((np.arange(size) + 0.5) * 4 / size - 0.5, 0, 3)
        lo = np.minimum(pos.astype(int), 2)
        up = np.zeros((size, 4), np.float32)
        up[np.arange(size), lo] = 1 - (pos - lo)
        up[np.arange(size), lo + 1] = pos - lo
        img += up @ coarse @ up.T

    def stamp(masks: np.ndarray) -> None:
        """Draw one glyph per image (an all-zero mask draws nothing) at a random place, strokes in random colours."""
        y0 = rng.integers(0, size - glyph_px + 1, num)
        x0 = rng.integers(0, size - glyph_px + 1, num)
        # each stroke its own colour, lighter than the background in every channel (or either way)
        delta = rng.uniform(0.35, 0.7, (num, 2, 3)).astype(np.float32)
        if not light:
            delta *= rng.choice(np.array([-1.0, 1.0], np.float32), (num, 2, 3))
        colour = np.clip(base[:, None, :, 0, 0] + delta, 0, 1)
        i, dy, dx = np.nonzero(masks)
        img[i, :, y0[i] + dy, x0[i] + dx] = colour[i, masks[i, dy, dx] - 1]

    n_glyphs = rng.integers(2, 5, num)  # 2..4 copies of the class glyph
    n_strokes = rng.integers(1, 5, num)  # 1..4 distractor strokes
    for r in range(4):
        stamp(strokes[rng.integers(0, len(strokes), num)] * (r < n_strokes)[:, None, None])
        stamp(glyphs[labels, rng.integers(0, 8, num)] * (r < n_glyphs)[:, None, None])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.04)  # pixel noise
    img *= 255
    img += 0.5
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return out, labels.astype(np.int64)


def make_synthetic(
    num_train: int,
    num_test: int,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> ImageData:
    """A small image task, generated in a second, on which the choice of NAS-Bench-201 cell matters.

    Each image shows 2-4 copies of its class's glyph (see :data:`SYNTHETIC_GLYPHS`: two strokes
    that cross, touch at an end or in the middle, or miss each other by one grid cell), drawn with
    2-pixel strokes at random places, orientations (8) and colours (each stroke its own, lighter
    than the background), among 1-4 single distractor strokes, on a random background colour with
    pixel noise.

    Why the architecture matters: no single stroke, colour, orientation or position says anything
    about the class; the class is the *junction* of two strokes, at 2-pixel precision. Finding it
    takes a nonlinear stroke detector and then a second nonlinear stage at full resolution. Averaging
    (avg-pool cells) blurs the 2-pixel gaps away, and an all-skip network has only its linear stem
    at full resolution before striding. With the experiments' retrain budget (4000 images, 5 epochs,
    C=8, N=1) the all-nor_conv_3x3 network reaches about 95%, all skip_connect about 77% and all
    avg_pool_3x3 about 23% (5 classes, 5 seeds; ``experiments/arch_matters.py``). Unlike 1-pixel strokes on
    a smooth colour field (this task's first version), the signal survives the mixed paths of a
    weight-sharing supernet, so a search can learn it.

    Train and test images come from independent streams of ``seed``; labels are balanced.
    """
    if not 2 <= int(num_classes) <= len(SYNTHETIC_GLYPHS):
        raise UserError(
            f"the synthetic data set has 2..{len(SYNTHETIC_GLYPHS)} classes, not {num_classes}. "
            "Fix: choose num_classes in that range"
        )
    if int(image_size) < _GLYPH_PX:
        raise UserError(f"synthetic images need image_size >= {_GLYPH_PX}, got {image_size}. Fix: use 32")
    if int(num_train) < 1 or int(num_test) < 1:
        raise UserError(
            f"synthetic data needs at least 1 training and 1 test image, got {num_train} and {num_test}. "
            "Fix: set data.num_train and data.num_test"
        )
    parts = []
    for split, num in ((0, int(num_train)), (1, int(num_test))):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & (2**63 - 1), split])))
        parts.append(_synthetic_images(num, int(image_size), int(num_classes), rng))
    (train_x, train_y), (test_x, test_y) = parts
    x = torch.from_numpy(train_x)
    flat = x.transpose(0, 1).reshape(3, -1).float().div_(255)
    mean = tuple(round(float(v), 4) for v in flat.mean(1))
    std = tuple(round(float(v), 4) for v in flat.std(1))
    return ImageData(
        train_x=x,
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=int(num_classes),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        name="synthetic",
    )
