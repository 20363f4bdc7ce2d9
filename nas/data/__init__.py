"""Image data for the search and for training: CIFAR-10/100, a synthetic task, and a GPU-resident loader.

* :func:`load_dataset` returns an :class:`ImageData` (uint8 images N x 3 x H x W, int64 labels,
  and per-channel mean/std) for ``"cifar10"``, ``"cifar100"`` (official python archives, MD5-checked,
  extracted safely, optionally downloaded; :mod:`nas.data.cifar`) or ``"synthetic"`` (generated on
  the fly, see :func:`make_synthetic`; :mod:`nas.data.synthetic`).
* :func:`search_split` splits the training set into a part for the network weights and a part for
  the architecture parameters; :func:`subset_indices` draws a seeded subset (:mod:`nas.data.splits`).
* :class:`BatchLoader` keeps the whole uint8 data set on the device and builds each batch there
  (gather, random crop with 4-pixel zero padding, horizontal flip, normalisation). The order and
  the augmentation of an epoch are a pure function of ``(seed, epoch)`` (:mod:`nas.data.loader`).

Nothing here picks a device: the caller passes it.
"""

from nas.data.cifar import ARCHIVE_MD5, CIFAR_URLS, DOWNLOAD_TIMEOUT_S, FILE_MD5
from nas.data.datasets import DATASETS, load_dataset
from nas.data.imagedata import ImageData
from nas.data.loader import BatchLoader, crop_flip, random_crop_flip
from nas.data.splits import search_split, subset_indices
from nas.data.synthetic import POLARITIES, SYNTHETIC_GLYPHS, make_synthetic

__all__ = [
    "ImageData",
    "DATASETS",
    "ARCHIVE_MD5",
    "FILE_MD5",
    "CIFAR_URLS",
    "DOWNLOAD_TIMEOUT_S",
    "SYNTHETIC_GLYPHS",
    "POLARITIES",
    "load_dataset",
    "make_synthetic",
    "search_split",
    "subset_indices",
    "crop_flip",
    "random_crop_flip",
    "BatchLoader",
]
