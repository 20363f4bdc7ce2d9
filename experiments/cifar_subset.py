"""A fixed, seeded CIFAR-10 subset, written once as its own ``cifar-10-batches-py`` folder.

The library's ``data.train_subset`` draws a different subset per ``run.seed`` and
always evaluates on the full 10,000 test images; this copy fixes both, so every
search and retrain of a study sees the same data and each per-epoch evaluation
is cheap. A run reads it with ``data.root=<folder>`` and ``data.verify_md5=false``
(:func:`experiments.settings.data_overrides`).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nas.data import load_dataset


def cifar_available(root: Optional[Path]) -> bool:
    """Whether ``root`` holds an extracted ``cifar-10-batches-py`` folder."""
    return root is not None and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file()


def cifar_subset(root: Path, n_train: int, n_test: int, cache: Path, seed: int = 0) -> Path:
    """The subset of ``n_train`` training and ``n_test`` test images of the CIFAR-10 copy in ``root``,
    drawn once with ``seed``, as ``<cache>/cifar10-sub-.../cifar-10-batches-py``; returns its root."""
    dest = Path(cache) / f"cifar10-sub-{n_train}-{n_test}-s{seed}"
    folder = dest / "cifar-10-batches-py"
    done = folder / "DONE"
    if done.exists():
        return dest
    full = load_dataset("cifar10", root, verify_md5=False)
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(full.train_x.shape[0], generator=g)[:n_train].sort().values
    te = torch.randperm(full.test_x.shape[0], generator=g)[:n_test].sort().values
    tmp = dest / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def dump(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        batch = {b"data": x.reshape(x.shape[0], -1).numpy().astype(np.uint8), b"labels": [int(v) for v in y.tolist()]}
        with open(tmp / name, "wb") as f:
            pickle.dump(batch, f)

    parts = torch.tensor_split(tr, 5)
    for i, part in enumerate(parts, start=1):
        dump(f"data_batch_{i}", full.train_x[part], full.train_y[part])
    dump("test_batch", full.test_x[te], full.test_y[te])
    (tmp / "DONE").write_text(json.dumps({"source": str(root), "n_train": n_train, "n_test": n_test, "seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return dest
