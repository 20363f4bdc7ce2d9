"""Tests for nas.data: CIFAR loading (on a small self-built archive), splits, loader, synthetic data."""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import data
from nas.data import (
    BatchLoader,
    ImageData,
    crop_flip,
    load_dataset,
    make_synthetic,
    random_crop_flip,
    search_split,
    subset_indices,
)
from nas.errors import UserError

N_PER_BATCH = 20
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, images_hwc: np.ndarray, labels: np.ndarray) -> None:
    """Write one batch the official way: bytes keys, data uint8 N x 3072 (R, G, B planes)."""
    batch = {
        b"batch_label": b"test batch",
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)),
        b"filenames": [f"{i}.png".encode() for i in range(len(images_hwc))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture
def cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A small CIFAR-10 in the official layout: source folder, archive, and MD5 tables patched to it."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    folder = src / FOLDER
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images = {n: rng.integers(0, 256, (N_PER_BATCH, 32, 32, 3), dtype=np.uint8) for n in names}
    labels = {n: rng.integers(0, 10, N_PER_BATCH) for n in names}
    for n in names:
        _dump(folder / n, images[n], labels[n])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f, protocol=2)
    archive = tmp_path / ARCHIVE
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=FOLDER)
    monkeypatch.setitem(data.ARCHIVE_MD5, "cifar10", _md5(archive))
    monkeypatch.setitem(data.FILE_MD5, "cifar10", {n: _md5(folder / n) for n in names})
    root = tmp_path / "root"
    root.mkdir()
    return {"src": src, "folder": folder, "archive": archive, "root": root, "images": images, "labels": labels}


def _expected(cifar: dict, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([cifar["images"][n] for n in names])
    y = np.concatenate([cifar["labels"][n] for n in names])
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_loaded(d: ImageData, cifar: dict) -> None:
    train_hwc, train_y = _expected(cifar, [f"data_batch_{i}" for i in range(1, 6)])
    test_hwc, test_y = _expected(cifar, ["test_batch"])
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (5 * N_PER_BATCH, 3, 32, 32)
    assert d.train_y.dtype == torch.int64 and d.test_x.shape == (N_PER_BATCH, 3, 32, 32)
    # one pixel by hand: channel c of pixel (h, w) of image i in HWC order
    i, h, w, c = 27, 5, 30, 2
    assert int(d.train_x[i, c, h, w]) == int(train_hwc[i, h, w, c])
    assert torch.equal(d.train_x, train_hwc.permute(0, 3, 1, 2))
    assert torch.equal(d.test_x, test_hwc.permute(0, 3, 1, 2))
    assert torch.equal(d.train_y, train_y) and torch.equal(d.test_y, test_y)
    assert d.num_classes == 10 and d.name == "cifar10"
    assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2470, 0.2435, 0.2616)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name not in (ARCHIVE, FOLDER))


# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar_from_archive_then_from_folder(cifar: dict) -> None:
    root = cifar["root"]
    (root / ARCHIVE).write_bytes(cifar["archive"].read_bytes())
    _check_loaded(load_dataset("cifar10", root), cifar)
    assert (root / FOLDER).is_dir() and _leftovers(root) == []
    (root / ARCHIVE).unlink()  # the extracted folder alone is enough
    _check_loaded(load_dataset("cifar10", str(root)), cifar)


def test_cifar_folder_is_preferred(cifar: dict) -> None:
    root = cifar["src"]
    (root / ARCHIVE).write_bytes(b"not an archive")
    _check_loaded(load_dataset("cifar10", root), cifar)


def test_archive_md5_mismatch(cifar: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cifar["root"]
    (root / ARCHIVE).write_bytes(cifar["archive"].read_bytes())
    monkeypatch.setitem(data.ARCHIVE_MD5, "cifar10", "0" * 32)
    with pytest.raises(UserError, match="MD5") as err:
        load_dataset("cifar10", root)
    assert ARCHIVE in str(err.value) and "verify_md5" in str(err.value) and "0" * 32 in str(err.value)
    assert not (root / FOLDER).exists() and _leftovers(root) == []


def test_modified_copy_needs_verify_md5_false(cifar: dict) -> None:
    folder = cifar["folder"]
    images = cifar["images"]["data_batch_1"].copy()
    images[0, 0, 0] = 255 - images[0, 0, 0]
    _dump(folder / "data_batch_1", images, cifar["labels"]["data_batch_1"])
    with pytest.raises(UserError, match="MD5") as err:
        load_dataset("cifar10", cifar["src"])
    assert "data_batch_1" in str(err.value) and "verify_md5=false" in str(err.value)
    d = load_dataset("cifar10", cifar["src"], verify_md5=False)
    assert torch.equal(d.train_x[0], torch.from_numpy(images[0]).permute(2, 0, 1))


def test_truncated_archive(cifar: dict) -> None:
    root = cifar["root"]
    blob = cifar["archive"].read_bytes()
    (root / ARCHIVE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="MD5"):
        load_dataset("cifar10", root)
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_dataset("cifar10", root, verify_md5=False)
    assert not (root / FOLDER).exists() and _leftovers(root) == []


def test_truncated_pickle(cifar: dict) -> None:
    path = cifar["folder"] / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_dataset("cifar10", cifar["src"], verify_md5=False)


def test_bad_labels(cifar: dict) -> None:
    labels = cifar["labels"]["test_batch"].copy()
    labels[3] = 12
    _dump(cifar["folder"] / "test_batch", cifar["images"]["test_batch"], labels)
    with pytest.raises(UserError, match="labels"):
        load_dataset("cifar10", cifar["src"], verify_md5=False)


def test_incomplete_folder(cifar: dict) -> None:
    """The fix names what works: extracting again where the archive is, downloading where it is not
    (download=true fetches only when the folder is missing)."""
    (cifar["folder"] / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3") as err:
        load_dataset("cifar10", cifar["src"])
    assert "delete that folder and set data.download=true" in str(err.value)
    shutil.copy(cifar["archive"], cifar["src"] / ARCHIVE)
    with pytest.raises(UserError, match=f"delete that folder so that it is extracted again from .*{ARCHIVE}"):
        load_dataset("cifar10", cifar["src"])
    shutil.rmtree(cifar["folder"])  # and doing so works
    assert load_dataset("cifar10", cifar["src"]).train_x.shape[0] == 5 * N_PER_BATCH


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_archive_member(cifar: dict, tmp_path: Path, kind: str) -> None:
    root = cifar["root"]
    bad = root / ARCHIVE
    payload = b"owned"
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(cifar["folder"], arcname=FOLDER)
        info = tarfile.TarInfo()
        if kind == "dotdot":
            info.name = f"{FOLDER}/../../evil.txt"
        elif kind == "absolute":
            info.name = str(tmp_path / "evil.txt")
        else:
            info.name = f"{FOLDER}/link"
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../evil.txt" if kind == "symlink" else "../evil.txt"
        if info.isfile():
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        else:
            tf.addfile(info)
    with pytest.raises(UserError, match="unsafe member"):
        load_dataset("cifar10", root, verify_md5=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (root / FOLDER).exists() and _leftovers(root) == []


def test_missing_root_and_no_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", missing)
    msg = str(err.value)
    assert str(missing / ARCHIVE) in msg and "data.root" in msg and "data.download=true" in msg
    with pytest.raises(UserError, match="data.root"):
        load_dataset("cifar100", None)


def test_unknown_name() -> None:
    with pytest.raises(UserError) as err:
        load_dataset("imagenet", "/tmp")
    assert all(n in str(err.value) for n in ("cifar10", "cifar100", "synthetic"))


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "dl" / "cifar"
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root, download=True)
    msg = str(err.value)
    assert data.CIFAR_URLS["cifar10"] in msg and str(root / ARCHIVE) in msg
    assert list(tmp_path.iterdir()) == []  # no partial file, nor the folders it created, left behind
    root.mkdir(parents=True)
    (root / "mine.txt").write_text("kept")  # a folder that was there stays, with what it held
    with pytest.raises(UserError):
        load_dataset("cifar10", root, download=True)
    assert [p.name for p in root.iterdir()] == ["mine.txt"]


def test_download(cifar: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = cifar["archive"].read_bytes()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append((url, timeout))
        return io.BytesIO(blob)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = cifar["root"] / "new"
    _check_loaded(load_dataset("cifar10", root, download=True), cifar)
    assert urls[0][0] == data.CIFAR_URLS["cifar10"] and urls[0][1] is not None
    assert (root / ARCHIVE).read_bytes() == blob and _leftovers(root) == []


def test_cifar100_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    expected = {}
    for split, n in (("train", 30), ("test", 10)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": list(map(int, fine)), b"coarse_labels": [0] * n}, f, protocol=2)
        expected[split] = (x, fine)
    monkeypatch.setitem(data.FILE_MD5, "cifar100", {s: _md5(folder / s) for s in ("train", "test")})
    d = load_dataset("cifar100", tmp_path)
    assert d.num_classes == 100 and d.name == "cifar100" and d.mean[0] == 0.5071
    assert torch.equal(d.train_x.reshape(30, -1), torch.from_numpy(expected["train"][0]))
    assert torch.equal(d.test_y, torch.from_numpy(expected["test"][1]))


# ---------------------------------------------------------------------------------------------- split


def test_search_split() -> None:
    a, b = search_split(1000, 0.5, seed=3)
    a2, b2 = search_split(1000, 0.5, seed=3)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert len(a) == 500 and len(b) == 500
    assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(1000))
    c, _ = search_split(1000, 0.5, seed=4)
    assert not torch.equal(a, c)
    w, r = search_split(101, 0.3, seed=0)
    assert len(w) == 30 and len(r) == 71 and a.dtype == torch.int64
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(UserError, match="between 0 and 1"):
            search_split(100, bad, seed=0)


# ---------------------------------------------------------------------------------------------- loader


def _naive_crop_flip(
    x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, fl: torch.Tensor, pad: int = 4
) -> torch.Tensor:
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        padded = torch.zeros(x.shape[1], h + 2 * pad, w + 2 * pad, dtype=x.dtype)
        padded[:, pad : pad + h, pad : pad + w] = x[i]
        crop = padded[:, int(oy[i]) : int(oy[i]) + h, int(ox[i]) : int(ox[i]) + w]
        out[i] = crop.flip(-1) if bool(fl[i]) else crop
    return out


def test_crop_flip_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 32, 32), generator=g, dtype=torch.int64).to(torch.uint8)
    oy = torch.randint(0, 9, (16,), generator=g)
    ox = torch.randint(0, 9, (16,), generator=g)
    fl = torch.randint(0, 2, (16,), generator=g).bool()
    oy[0], ox[0], fl[0] = 4, 4, False  # identity
    oy[1], ox[1], fl[1] = 0, 8, True  # corner + flip
    out = crop_flip(x, oy, ox, fl)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, _naive_crop_flip(x, oy, ox, fl))
    assert torch.equal(out[0], x[0])
    # by hand: crop at padded (0, 8) then flip -> out[r, c] = x[r - 4, 35 - c], zero where that is outside
    assert torch.equal(out[1][:, 4:, 4:], x[1][:, :28, 4:].flip(-1))
    assert int(out[1][:, :4].max()) == 0 and int(out[1][:, :, :4].max()) == 0
    # non-square images and the random wrapper
    y = torch.randint(0, 256, (5, 3, 12, 20), generator=g, dtype=torch.int64).to(torch.uint8)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    got = random_crop_flip(y, g1, padding=2)
    oy = torch.randint(0, 5, (5,), generator=g2)
    ox = torch.randint(0, 5, (5,), generator=g2)
    fl = torch.randint(0, 2, (5,), generator=g2).bool()
    assert torch.equal(got, _naive_crop_flip(y, oy, ox, fl, pad=2))


def _toy(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.int64).to(torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # identifies the sample
    return x, torch.arange(n)


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _loader(x, y, device="cpu", **kw) -> BatchLoader:
    args = dict(mean=MEAN, std=STD, augment=True, shuffle=True, drop_last=False, seed=5, device=device)
    args.update(kw)
    return BatchLoader(x, y, 8, **args)


def test_loader_deterministic_by_seed_and_epoch() -> None:
    x, y = _toy()
    a, b = _loader(x, y), _loader(x, y)
    a.set_epoch(3)
    b.set_epoch(3)
    batches_a, batches_b = list(a), list(b)
    assert len(batches_a) == len(a) == 7
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches_a, list(a)))  # re-iterating repeats
    b.set_epoch(4)
    assert not torch.equal(torch.cat([t for _, t in batches_a]), torch.cat([t for _, t in b]))
    c = _loader(x, y, seed=6)
    c.set_epoch(3)
    assert not torch.equal(torch.cat([t for _, t in batches_a]), torch.cat([t for _, t in c]))


def test_loader_epoch_visits_all_and_normalises() -> None:
    x, y = _toy()
    loader = _loader(x, y, augment=False)
    assert loader.num_samples == 50
    for epoch in range(3):
        loader.set_epoch(epoch)
        seen = []
        for xb, yb in loader:
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            ref = (x[yb].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
            torch.testing.assert_close(xb, ref, rtol=1e-5, atol=1e-5)
            seen.append(yb)
        seen = torch.cat(seen)
        assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    ordered = _loader(x, y, augment=False, shuffle=False, drop_last=True)
    assert len(ordered) == 6 and torch.cat([t for _, t in ordered]).tolist() == list(range(48))


def test_loader_augmentation_is_the_padded_crop() -> None:
    x, y = _toy()
    loader = _loader(x, y)
    loader.set_epoch(2)
    plan = loader._plan()
    scale = 1 / (255 * torch.tensor(STD).view(1, 3, 1, 1))
    shift = torch.tensor(MEAN).view(1, 3, 1, 1) / torch.tensor(STD).view(1, 3, 1, 1)
    flips = 0
    for i, (xb, yb) in enumerate(loader):
        part = plan[:, i * 8 : (i + 1) * 8]
        assert torch.equal(yb, part[0])
        ref = _naive_crop_flip(x[yb], part[1], part[2], part[3].bool()).float() * scale - shift
        torch.testing.assert_close(xb, ref, rtol=1e-5, atol=1e-5)
        flips += int(part[3].sum())
    assert 0 < flips < 50 and len(set(plan[1].tolist())) > 3  # both flips and several offsets drawn


def test_loader_draws_every_crop_offset_and_flip_uniformly() -> None:
    """The padded crop's offsets are uniform on 0..2 * padding in each direction and the flip is a
    fair coin: counts over one epoch of 9000 samples, each within 4 standard deviations."""
    n = 9000
    loader = BatchLoader(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), 8,
                         mean=MEAN, std=STD, augment=True, shuffle=True, drop_last=False, seed=5)  # fmt: skip
    plan = loader._plan()
    k = 2 * loader.padding + 1
    assert loader.padding == 4
    for row, values in ((1, k), (2, k), (3, 2)):
        counts = torch.bincount(plan[row], minlength=values)
        assert len(counts) == values, (row, counts)  # nothing outside the range
        q = 1 / values
        assert ((counts - n * q).abs() < 4 * (n * q * (1 - q)) ** 0.5).all(), (row, counts)


def test_loader_channels_last() -> None:
    x, y = _toy()
    xb, _ = next(iter(_loader(x, y, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_on_cuda() -> None:
    x, y = _toy()
    cpu, gpu = _loader(x, y), _loader(x, y, device="cuda")
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic() -> None:
    d = make_synthetic(600, 200, seed=0)
    assert d.train_x.shape == (600, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (200, 3, 32, 32) and d.train_y.dtype == torch.int64
    assert d.num_classes == 10 and d.name == "synthetic" and len(d.mean) == 3 and len(d.std) == 3
    assert int(d.train_y.min()) >= 0 and int(d.train_y.max()) < 10
    counts = torch.bincount(d.train_y, minlength=10)
    assert int(counts.min()) >= 40 and int(counts.max()) <= 80
    again = make_synthetic(600, 200, seed=0)
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)
    other = make_synthetic(600, 200, seed=1)
    assert not torch.equal(d.train_x, other.train_x)
    assert not torch.equal(d.train_x[:200], d.test_x)  # train and test are different images
    # mean/std describe the data
    x = d.train_x.float() / 255
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.tensor(d.mean), atol=0.03, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.tensor(d.std), atol=0.03, rtol=0)


def test_synthetic_options() -> None:
    d = load_dataset("synthetic", num_train=100, num_test=20, image_size=24, seed=2)
    assert d.train_x.shape == (100, 3, 24, 24) and d.test_x.shape == (20, 3, 24, 24)
    e = make_synthetic(100, 20, image_size=24, num_classes=8, seed=2)
    assert int(e.train_y.max()) < 8 and e.num_classes == 8
    with pytest.raises(UserError):
        make_synthetic(10, 10, num_classes=1)


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(t.numpy()).tobytes()).hexdigest()


def _digest(d: ImageData) -> list:
    return [_sha256(d.train_x), _sha256(d.test_x), _sha256(d.train_y), _sha256(d.test_y), list(d.mean), list(d.std)]


# Computed with nas/data.py before it became a package (the second by patching its private
# _synthetic_images with scale=1, light=False, field=0.08, as experiments/synthetic_variants.py did).
SHIPPED_DIGEST = [
    "0084911d087c61a17ecc9cbc0f58514c0841fefbd80e74e961ed16e64cc94f8d",
    "3e132ed752d6f1b04975b9612d9bcafdb06fa0bb4301213f7c4a13c2e6f4713e",
    "7dda7c33365038a7ced2bbaccd368077972c9a77d7b8c23121623436fbb78c75",
    "52ce7f7fc5a600e3797449503965e4ee2c117983640584b1a9807841d982c58f",
    [0.6925, 0.6487, 0.6363],
    [0.2319, 0.258, 0.2564],
]
FIRST_VERSION_DIGEST = [
    "f667c2b5603c6ebc416fd8ff132447aeefc3910057cbd55c2db45e107792feb0",
    "0571ade1884272e60ee09828aba9984ef8d34c3498f4a43d2fb79abb6c154fa5",
    "dd0e3491d3150670c6ebbe9148b74ef156b4dd17592d80b80db32200c81f17a6",
    "d3e435b8f7a89f38e24991673f750f95a2c2e7c1a68229b2445eeb0fbbc893dd",
    [0.5337, 0.5223, 0.5129],
    [0.2067, 0.1994, 0.2002],
]


def test_synthetic_defaults_are_the_shipped_task() -> None:
    assert _digest(make_synthetic(40, 10, image_size=16, num_classes=3, seed=1)) == SHIPPED_DIGEST
    explicit = make_synthetic(40, 10, image_size=16, num_classes=3, seed=1, glyph_scale=2, polarity="light", field=0.0)
    assert _digest(explicit) == SHIPPED_DIGEST
    first = load_dataset(
        "synthetic",
        None,
        num_train=120,
        num_test=30,
        image_size=32,
        num_classes=5,
        seed=4,
        glyph_scale=1,
        polarity="either",
        field=0.08,
    )
    assert _digest(first) == FIRST_VERSION_DIGEST


def _deviation(**knobs) -> torch.Tensor:
    """200 images' pixels minus their image's per-channel median (the background colour)."""
    x = make_synthetic(200, 1, image_size=32, num_classes=5, seed=0, **knobs).train_x.float()
    return x - x.flatten(2).median(2).values[..., None, None]


def test_synthetic_polarity() -> None:
    light, either = _deviation(), _deviation(polarity="either")
    assert float((light < -60).float().mean()) == 0.0  # strokes only ever lighter (pixel noise std ~10)
    assert float((light > 60).float().mean()) > 0.05
    assert float((either < -60).float().mean()) > 0.03  # about half the stroke channels darker
    assert float((either > 60).float().mean()) > 0.03


def test_synthetic_glyph_scale() -> None:
    def stroke_pixels(scale: int) -> float:
        return float((_deviation(glyph_scale=scale).abs() > 60).any(1).float().sum((1, 2)).mean())

    one, two = stroke_pixels(1), stroke_pixels(2)
    assert 3.0 < two / one < 4.5  # strokes twice as wide and long: about 4x the pixels (less overlaps)
    assert make_synthetic(4, 2, image_size=7, glyph_scale=1).train_x.shape == (4, 3, 7, 7)  # 7 x 7 glyphs fit
    with pytest.raises(UserError, match=r"image_size >= 14, got 7"):
        make_synthetic(4, 2, image_size=7)
    with pytest.raises(UserError, match=r"glyph_scale=3 need image_size >= 21, got 20"):
        make_synthetic(4, 2, image_size=20, glyph_scale=3)


def test_synthetic_field() -> None:
    def background_std(field: float) -> float:
        dev = _deviation(field=field)
        bg = dev.abs() < 50
        return float(torch.stack([dev[i, c][bg[i, c]].std() for i in range(dev.shape[0]) for c in range(3)]).median())

    plain, field = background_std(0.0), background_std(0.08)
    assert 9.0 < plain < 11.5  # pixel noise only (std 0.04 * 255)
    assert field > 1.4 * plain


@pytest.mark.parametrize(
    "knob, value",
    [
        ("glyph_scale", 0),
        ("glyph_scale", 1.5),
        ("glyph_scale", True),
        ("glyph_scale", "2"),
        ("polarity", "dark"),
        ("polarity", None),
        ("polarity", "Light"),
        ("field", -0.1),
        ("field", math.nan),
        ("field", math.inf),
        ("field", "0.1"),
        ("field", True),
    ],
)
def test_synthetic_bad_knobs(knob: str, value: object) -> None:
    with pytest.raises(ValueError, match=knob):
        make_synthetic(10, 10, **{knob: value})
    with pytest.raises(ValueError, match=knob):
        load_dataset("synthetic", num_train=10, num_test=10, **{knob: value})


def test_subset_indices() -> None:
    assert torch.equal(subset_indices(7, None, 0), torch.arange(7))
    a = subset_indices(100, 10, 3)
    assert torch.equal(a, subset_indices(100, 10, 3)) and torch.equal(a, a.sort().values) and len(set(a.tolist())) == 10
    assert not torch.equal(a, subset_indices(100, 10, 4))
    with pytest.raises(UserError, match="train_subset"):
        subset_indices(10, 11, 0)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("synthetic", ((3, 16, 16), 3)),
        ("Synthetic", ((3, 16, 16), 3)),
        ("cifar10", ((3, 32, 32), 10)),
        ("CIFAR-10", ((3, 32, 32), 10)),
        ("cifar_100", ((3, 32, 32), 100)),
    ],
)
def test_a_data_sets_shape_is_read_from_its_name_as_the_loader_reads_it(name, shape):
    """What measure-latency and inspect --budget build the network for, without loading the data."""
    from nas.config import DataConfig

    d = DataConfig(name=name, image_size=16, num_classes=3)
    assert d.shape() == shape
    if d.key == "synthetic":  # and what the loader gives
        images = data.load_dataset(name, num_train=4, num_test=2, image_size=16, num_classes=3)
        assert tuple(images.train_x.shape[1:]) == shape[0]


def test_a_resume_finds_moved_cifar_data_and_keeps_finding_it(cifar: dict, tmp_path: Path, capsys) -> None:
    """The data folder moved after the run began: ``--set data.root=NEW`` on the resume finds it
    (the MD5s check it is the same data) and is kept in the run's config.yaml, so the resume
    command the run prints works as given. Without the MD5 check a new root is refused."""
    from nas.cli import main

    tiny = ["data.name=cifar10", "supernet.C=4", "supernet.N=1", "search.batch_size=10", "search.steps_per_epoch=2"]
    tiny += ["search.epochs=3", "search.warmup_epochs=0", "search.prune=off", "run.device=cpu", "run.threads=1"]
    sets = [x for s in tiny + [f"data.root={cifar['src']}"] for x in ("--set", s)]
    run = tmp_path / "run"
    assert main(["--out", str(run), "--quiet", "--stop-after", "1", *sets]) == 0
    moved = tmp_path / "moved"
    cifar["src"].rename(moved)
    assert main(["--resume", str(run), "--quiet"]) == 2
    assert "data.root" in capsys.readouterr().err  # where it looked, and the fix
    assert main(["--resume", str(run), "--quiet", "--stop-after", "1", "--set", f"data.root={moved}"]) == 0
    assert "continue with: python search.py --resume" in capsys.readouterr().out
    assert main(["--resume", str(run), "--quiet"]) == 0  # as printed: the new root is the run's now
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    # With data.verify_md5=false nothing checks that a new root holds the same data.
    unchecked = tmp_path / "unchecked"
    sets = [x for s in tiny + [f"data.root={moved}", "data.verify_md5=false"] for x in ("--set", s)]
    assert main(["--out", str(unchecked), "--quiet", "--stop-after", "1", *sets]) == 0
    capsys.readouterr()
    assert main(["--resume", str(unchecked), "--quiet", "--set", f"data.root={cifar['src']}"]) == 2
    err = capsys.readouterr().err
    assert "with data.verify_md5=false this resume cannot check that it holds the same data" in err
