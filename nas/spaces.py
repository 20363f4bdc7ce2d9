"""Builders: a supernet for a named space, and the discrete network of a genotype."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Type

from torch import nn

from .darts import DartsSupernet, NetworkCIFAR
from .errors import UserError
from .genotype import Genotype
from .nb201 import NB201Network, NB201Supernet
from .ops import DARTS_OPS, NB201_OPS
from .supernet import MODES, Supernet

SPACES: Dict[str, Type[Supernet]] = {"nb201": NB201Supernet, "darts": DartsSupernet}
DEFAULT_OPS = {"nb201": NB201_OPS, "darts": DARTS_OPS}


def check_derive_none(space: str, derive_none: Optional[bool]) -> None:
    """The darts space has one derivation rule (no ``none`` edges); refuse asking it for another."""
    if space == "darts" and derive_none:
        raise UserError("supernet.derive_none: the darts space never derives none edges (it keeps each "
                        "node's two strongest non-none edges); leave it unset (null) for darts")


def build_supernet(space: str, mode: str = "gdas", *, C: int = 16, N: int = 5, num_classes: int = 10,
                   ops: Optional[Sequence[str]] = None, affine: bool = False, tau: float = 10.0,
                   derive_none: Optional[bool] = None) -> Supernet:
    """A supernet of ``space`` ("nb201" or "darts").

    Args:
        mode: "gdas" (hard one-path Gumbel sample), "snas" (soft Gumbel) or "darts" (softmax).
        C: initial channels. N: cells per stage (nb201) or total cells (darts).
        ops: candidate op names (default: the space's standard list).
        affine: learn BN scale and shift in the cells' ops (searches usually do not).
        tau: initial Gumbel-softmax temperature; set ``net.tau`` as it anneals.
        derive_none: whether ``none`` may win an edge in :meth:`genotype`. ``None``: the
            space's rule (nb201: yes, as in GDAS; darts: no, as in DARTS). nb201 with
            ``False`` takes each edge's argmax over the other ops, DARTS's rule.

    Example::

        net = nas.build_supernet("nb201", mode="gdas", C=16, N=5, num_classes=10)
        logits = net(images)
        print(net.genotype())
    """
    if space not in SPACES:
        raise UserError(f"unknown space {space!r}; choose one of: {', '.join(SPACES)}")
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    ops = DEFAULT_OPS[space] if ops is None else ops
    if space == "nb201":
        return SPACES[space](C=C, N=N, num_classes=num_classes, mode=mode, ops=ops, affine=affine, tau=tau,
                             derive_none=True if derive_none is None else derive_none)
    check_derive_none(space, derive_none)
    return SPACES[space](C=C, N=N, num_classes=num_classes, mode=mode, ops=ops, affine=affine, tau=tau)


def build_network(geno: Genotype, *, C: int = 16, N: int = 5, num_classes: int = 10, auxiliary: bool = False,
                  drop_path_prob: float = 0.0, affine: bool = True) -> nn.Module:
    """The standalone discrete network of ``geno``, for retraining.

    nb201: NAS-Bench-201's evaluation network (``N`` cells per stage).
    darts: DARTS's NetworkCIFAR with ``N`` cells, optional auxiliary head and drop-path.
    """
    if geno.space == "nb201":
        if auxiliary or drop_path_prob:
            raise UserError("the nb201 network has no auxiliary head or drop-path; unset them")
        return NB201Network(geno, C=C, N=N, num_classes=num_classes, affine=affine)
    if geno.space == "darts":
        return NetworkCIFAR(geno, C=C, N=N, num_classes=num_classes, auxiliary=auxiliary,
                            drop_path_prob=drop_path_prob, affine=affine)
    raise UserError(f"unknown space {geno.space!r}; choose one of: {', '.join(SPACES)}")
