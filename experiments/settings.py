"""Where the studies read and write, and the budgets of their searches and retrains.

The settings of the full runs live here (``DATA_SYNTHETIC``, ``SEARCH``,
``RETRAIN_*``, ``CIFAR_*``) so every study uses the same budget; ``--quick``
swaps in tiny ones (``QUICK_*``). They are pinned as config overrides on top of
the shipped ``configs/default.yaml`` (``nas.runtime.default_config()``), so
later edits of that file do not change them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from nas.runtime import default_config

ROOT = Path(__file__).resolve().parent.parent  # the repository root
RESULTS = ROOT / "experiments" / "results"  # recorded JSON, PNG
DEFAULT_CACHE = ROOT / "runs" / "experiments_cache"  # runs/ is git-ignored
DEFAULT_CIFAR_ROOT = ROOT / "data"  # holds cifar-10-batches-py/
DEFAULT_CONFIG = default_config()  # the base config of every search and retrain


def rel(path: Union[str, Path]) -> str:
    """``path`` relative to the repository root where it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------
# Budgets. Full runs: the NB201 space at C=8, N=1 (as configs/default.yaml),
# searched and retrained on 2 shared CPU cores. Quick runs: a few steps.
# ---------------------------------------------------------------------------
# The synthetic glyph task has no use for crop/flip (positions and orientations are already random)
# and learns much faster without it: with augmentation an all-nor_conv_3x3 network is often still at
# chance after 300 steps.
DATA_SYNTHETIC = ["data.name=synthetic", "data.num_train=4000", "data.num_test=1000", "data.augment=false"]
SEARCH = [  # pinned here, so later edits of configs/default.yaml do not change it
    "supernet.space=nb201",
    "supernet.mode=gdas",
    "supernet.C=8",
    "supernet.N=1",
    "search.epochs=10",
    "search.batch_size=64",
    "search.weights.lr=0.05",
    "search.weights.lr_min=0.001",
    "search.arch.lr=0.003",
    "search.tau.schedule=linear",
    "search.tau.max=10.0",
    "search.tau.min=0.1",
    "search.warmup_epochs=0",
    "search.prune=off",
]
# The supernet learns the glyph task slowly (its paths change every step): 10 warm-up epochs train the
# weights alone, then 20 epochs search; with 10 epochs in all it was still near chance (experiments/README.md)
SEARCH_SYNTHETIC = ["search.epochs=30", "search.warmup_epochs=10"]
RETRAIN_SYNTHETIC = [  # the discrete network from scratch: 5 epochs over the 4000 images (310 steps)
    "retrain.nb201.C=8",
    "retrain.nb201.N=1",
    "retrain.nb201.epochs=5",
    "retrain.nb201.batch_size=64",
    # lr 0.02, not 0.05: at 0.05 (and 0.1) an all-conv network stayed on the ln 5 plateau for
    # 10 epochs on one seed of five; at 0.02 all five left it within 5 epochs (experiments/README.md)
    "retrain.nb201.lr=0.02",
]
RETRAIN_CIFAR = [  # 6 epochs of 40 steps (about 3 passes over the 5000 images), crop + flip
    "retrain.nb201.C=8",
    "retrain.nb201.N=1",
    "retrain.nb201.epochs=6",
    "retrain.nb201.batch_size=64",
    "retrain.nb201.steps_per_epoch=40",
    "retrain.nb201.lr=0.05",
]
CIFAR_TRAIN, CIFAR_TEST = 5000, 2000  # the fixed CIFAR-10 subset (seeded), see experiments.cifar_subset

QUICK_DATA_SYNTHETIC = ["data.name=synthetic", "data.num_train=256", "data.num_test=128", "data.image_size=16"]
QUICK_SEARCH = [
    "supernet.C=4",
    "search.batch_size=32",
    "search.steps_per_epoch=3",
    "search.epochs=2",
    "search.warmup_epochs=0",
    "search.prune=off",
]
QUICK_RETRAIN = [
    "retrain.nb201.C=4",
    "retrain.nb201.N=1",
    "retrain.nb201.epochs=1",
    "retrain.nb201.batch_size=32",
    "retrain.nb201.steps_per_epoch=3",
]
QUICK_CIFAR_TRAIN, QUICK_CIFAR_TEST = 256, 128


def data_overrides(dataset: str, quick: bool, cifar_root: Optional[Path] = None) -> List[str]:
    """The data section: the built-in synthetic set, or the CIFAR-10 subset folder made by
    :func:`experiments.cifar_subset.cifar_subset`."""
    if dataset == "synthetic":
        return list(QUICK_DATA_SYNTHETIC if quick else DATA_SYNTHETIC)
    if dataset == "cifar10":
        if cifar_root is None:
            raise ValueError("cifar10 needs the root of the subset folder")
        # augment pinned: configs/default.yaml (the base config) turns it off for the synthetic data
        return ["data.name=cifar10", f"data.root={cifar_root}", "data.verify_md5=false", "data.augment=true"]
    raise ValueError(f"unknown dataset {dataset!r}")


def search_overrides(dataset: str, quick: bool) -> List[str]:
    """The search section of the shared budget for ``dataset``."""
    if quick:
        return list(QUICK_SEARCH)
    return list(SEARCH) + (list(SEARCH_SYNTHETIC) if dataset == "synthetic" else [])


def retrain_overrides(dataset: str, quick: bool) -> List[str]:
    """The retrain section of the shared budget for ``dataset``."""
    if quick:
        return list(QUICK_RETRAIN)
    return list(RETRAIN_CIFAR if dataset == "cifar10" else RETRAIN_SYNTHETIC)


def cifar_subset_size(quick: bool) -> tuple:
    """(training images, test images) of the fixed CIFAR-10 subset."""
    return (QUICK_CIFAR_TRAIN, QUICK_CIFAR_TEST) if quick else (CIFAR_TRAIN, CIFAR_TEST)


def budget(quick: bool) -> Dict[str, Any]:
    """The settings, for the JSON records."""
    n_train, n_test = cifar_subset_size(quick)
    return {
        "base_config": rel(DEFAULT_CONFIG),
        "search_synthetic": search_overrides("synthetic", quick),
        "search_cifar10": search_overrides("cifar10", quick),
        "retrain_synthetic": retrain_overrides("synthetic", quick),
        "retrain_cifar10": retrain_overrides("cifar10", quick),
        "synthetic_data": data_overrides("synthetic", quick),
        "cifar10_subset": {"train": n_train, "test": n_test, "seed": 0},
    }
