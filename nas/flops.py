"""Parameter and multiply-add counts."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def count_parameters(model: nn.Module, exclude_prefix: Tuple[str, ...] = ()) -> int:
    """Number of parameters, optionally leaving out submodules by name prefix (e.g. ``aux_head``)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude_prefix))


def count_macs(model: nn.Module, input_size: Tuple[int, ...]) -> int:
    """Multiply-adds of one forward in eval mode at ``input_size`` (``(C, H, W)``, batch 1).

    Counts convolutions (``C_out * C_in/groups * kh * kw`` per output pixel) and
    linear layers (``in * out``), the convention papers report; normalisation,
    activations, pooling and additions are not counted.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
        total += per_pixel * output.shape[2] * output.shape[3]

    def linear_hook(module: nn.Linear, inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
