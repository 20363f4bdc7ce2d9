"""Parameter and multiply-add counts.

One hook-based counter serves the discrete networks (:func:`count_macs`), single modules at a
given input (:func:`module_macs`) and the cost tables of hardware-aware search (:mod:`nas.cost`),
so a figure means the same everywhere.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterator, Tuple

import torch
from torch import nn


def count_parameters(model: nn.Module, exclude_prefix: Tuple[str, ...] = ()) -> int:
    """Number of parameters, optionally leaving out submodules by name prefix (e.g. ``aux_head``)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude_prefix))


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
COUNTED = _CONVS + _TRANSPOSED + (nn.Linear,)  # the layers whose multiply-adds are counted


def _call_macs(module: nn.Module, inputs: Tuple[Any, ...], output: torch.Tensor) -> int:
    """Multiply-adds of one call of a conv or linear layer, per sample (the batch's first dim divided out)."""
    if isinstance(module, _CONVS + _TRANSPOSED):
        dims = len(module.kernel_size)
        if isinstance(module, _CONVS):  # each output pixel: a kernel over C_in/groups channels, per output channel
            per_pixel = module.out_channels * (module.in_channels // module.groups)
            pixels = math.prod(output.shape[-dims:])
        else:  # transposed: each input pixel scatters a kernel into C_out/groups channels
            per_pixel = module.in_channels * (module.out_channels // module.groups)
            pixels = math.prod(inputs[0].shape[-dims:])
        return per_pixel * math.prod(module.kernel_size) * pixels
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

    def hook(module: nn.Module, inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        counts[module] = counts.get(module, 0) + _call_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED)]
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

    Counts convolution modules, 1-3d (``C_out * C_in/groups * kernel`` per output pixel; a
    transposed one per input pixel), and linear layers (``in * out``), the convention papers
    report; normalisation, activations, pooling, additions and functional calls (such as
    ``nn.MultiheadAttention``'s projections) are not counted. Only the layers that run count: an
    NB201 op reading a node whose inputs are all ``none`` is skipped by the network, so those
    cells (15% of NAS-Bench-201's) count fewer than the benchmark's records, which count every op.
    The input is zeros of the model's first parameter's device and floating dtype.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return module_macs(model, torch.zeros(1, *input_size, device=device, dtype=dtype))
