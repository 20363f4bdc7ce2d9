"""Parameter and multiply-add counts.

One hook-based counter serves the discrete networks (:func:`count_macs`), single modules at a
given input (:func:`module_macs`) and the cost tables of hardware-aware search (:mod:`nas.cost`),
so a figure means the same everywhere.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Tuple

import torch
from torch import nn


def count_parameters(model: nn.Module, exclude_prefix: Tuple[str, ...] = ()) -> int:
    """Number of parameters, optionally leaving out submodules by name prefix (e.g. ``aux_head``)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude_prefix))


def _call_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one call of a conv or linear layer, per sample (the batch's first dim divided out)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
        return per_pixel * output.shape[-2] * output.shape[-1]
    # Linear: one in*out product per output row of a sample ([B, F] has one, [B, T, F] has T).
    rows = output.numel() // max(1, output.shape[0] * module.out_features) if output.dim() > 1 else 1
    return module.in_features * module.out_features * rows


@contextlib.contextmanager
def counting_macs(model: nn.Module) -> Iterator[Dict[nn.Module, int]]:
    """While open, every forward of a conv or linear layer inside ``model`` adds its multiply-adds
    (per sample) to the yielded dict, keyed by the layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with counting_macs(net) as counts:
        ...     _ = net(torch.zeros(1, 4))
        >>> sum(counts.values())
        18
    """
    counts: Dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        counts[module] = counts.get(module, 0) + _call_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradient while open; the module's mode is restored after."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def module_macs(module: nn.Module, *inputs: Any) -> int:
    """Multiply-adds (per sample) of one eval-mode forward of ``module`` on ``inputs``.

    Example:
        >>> import torch
        >>> module_macs(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), torch.zeros(1, 2, 8, 8))
        4608
    """
    with counting_macs(module) as counts, inference(module):
        module(*inputs)
    return sum(counts.values())


def count_macs(model: nn.Module, input_size: Tuple[int, ...]) -> int:
    """Multiply-adds of one forward in eval mode at ``input_size`` (``(C, H, W)``, batch 1).

    Counts convolutions (``C_out * C_in/groups * kh * kw`` per output pixel) and
    linear layers (``in * out``), the convention papers report; normalisation,
    activations, pooling and additions are not counted.
    """
    device = next(model.parameters()).device
    return module_macs(model, torch.zeros(1, *input_size, device=device))
