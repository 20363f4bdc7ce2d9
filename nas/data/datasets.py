"""The one entry point that loads a data set by name (:func:`load_dataset`)."""

from __future__ import annotations

from pathlib import Path

from nas.config import DATASET_NAMES, dataset_key
from nas.data.cifar import _CIFAR, _load_cifar
from nas.data.imagedata import ImageData
from nas.data.synthetic import _SCALE, make_synthetic
from nas.errors import UserError

__all__ = ["DATASETS", "load_dataset"]

DATASETS: tuple[str, ...] = DATASET_NAMES


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
    glyph_scale: int = _SCALE,
    polarity: str = "light",
    field: float = 0.0,
) -> ImageData:
    """Load ``name`` (one of :data:`DATASETS`; case, ``-`` and ``_`` are ignored).

    CIFAR: from ``root`` (the folder holding the official archive or its extracted folder);
    ``download`` fetches the archive when neither is there; ``verify_md5=False`` accepts a
    deliberately modified copy. ``num_train``, ``num_test``, ``image_size``, ``num_classes``,
    ``seed`` and the glyph knobs ``glyph_scale``, ``polarity`` and ``field`` only matter for
    ``"synthetic"`` (see :func:`nas.data.make_synthetic`, which documents and checks them) and are
    ignored for CIFAR. An unknown name raises :class:`nas.errors.UserError`.
    """
    key = dataset_key(name)
    if key == "synthetic":
        return make_synthetic(
            num_train,
            num_test,
            image_size=image_size,
            num_classes=num_classes,
            seed=seed,
            glyph_scale=glyph_scale,
            polarity=polarity,
            field=field,
        )
    if key not in _CIFAR:
        raise UserError(
            f"unknown data set {name!r}: valid names are {', '.join(DATASETS)} (set data.name to one of them)"
        )
    return _load_cifar(key, root, download=download, verify_md5=verify_md5)
