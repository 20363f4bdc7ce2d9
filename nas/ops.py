"""Candidate operations and their registry.

Every op is built by a factory with one signature,
``factory(C_in, C_out, stride, affine) -> nn.Module``, so adding an op is one
line::

    from nas.ops import register_op
    register_op("conv_5x5", lambda C_in, C_out, stride, affine:
                ReLUConvBN(C_in, C_out, 5, stride, 2, affine=affine))

or, as a decorator, ``@register_op("conv_5x5")`` on the factory.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

OpFactory = Callable[[int, int, int, bool], nn.Module]

OPS: Dict[str, OpFactory] = {}

# The standard candidate lists, in the order the spaces' papers use.
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# Ops whose output carries no learned transform; counted by the collapse check.
PARAMETER_FREE_OPS = ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3")


# Op names as the cells' string forms read them back (|op~0|+..., DARTS's ('op', 0)); a module
# name cannot hold a dot, so neither can an op a supernet builds as a candidate.
_OP_NAME = re.compile(r"[A-Za-z0-9_]+")


def register_op(name: str, factory: Optional[OpFactory] = None, *, overwrite: bool = False):
    """Register ``factory`` under ``name``; usable as ``@register_op(name)`` too."""

    if not isinstance(name, str) or not _OP_NAME.fullmatch(name):
        raise ValueError(
            f"op name {name!r} must be letters, digits and underscores (e.g. conv_5x5): the cells' string "
            "forms (|op~0|+..., DARTS's ('op', 0)) read no other name back"
        )

    def add(fn: OpFactory) -> OpFactory:
        if not callable(fn):
            raise ValueError(f"the factory of op {name!r} must be callable (C_in, C_out, stride, affine) -> nn.Module")
        if name in OPS and not overwrite:
            raise ValueError(f"op {name!r} is already registered; pass overwrite=True to replace it")
        OPS[name] = fn
        return fn

    return add if factory is None else add(factory)


def build_op(name: str, C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """Build the registered op ``name``."""
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(
            f"unknown op {name!r}; registered ops: {', '.join(sorted(OPS))}. "
            "Fix the name or register the op with nas.register_op."
        ) from None
    return factory(C_in, C_out, stride, affine)


def check_ops(names: Sequence[str]) -> tuple:
    """Validate an op list: known names, no duplicates."""
    names = tuple(names)
    if not names:
        raise ValueError("the op list is empty; give at least one op")
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(
            f"unknown op(s) {', '.join(map(repr, unknown))}; registered ops: "
            f"{', '.join(sorted(OPS))}. Fix the name or register the op with nas.register_op."
        )
    if len(set(names)) != len(names):
        raise ValueError(f"the op list {list(names)} names an op twice; list each op once")
    return names


class Zero(nn.Module):
    """The ``none`` op: a structural zero.

    Mixed edges and cells recognise it and skip it, so it is never computed
    there; calling it directly still returns the right zeros.
    """

    structural_zero = True  # nas.OpChoice(zero_as_none=True) returns None instead of running it

    def __init__(self, C_out: int, stride: int):
        super().__init__()
        self.C_out, self.stride = C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return x.new_zeros(x.shape[0], self.C_out, x.shape[2], x.shape[3])


def scaled_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``bn(x) * scale`` for a one-element ``scale``, folded into the BN's affine parameters.

    GDAS multiplies each chosen op's output by its straight-through weight (1.0 going
    forward) so the architecture logits get ``d loss / d w = <grad, y>``. A separate
    multiply makes autograd keep ``y`` for that; folded into the BN (weight ``gamma * w``,
    bias ``beta * w``) the gradient comes from BN's own backward, which already keeps its
    input. Same values, same gradients, one feature map less per edge.
    """
    if isinstance(bn, nn.SyncBatchNorm):  # run.sync_bn: its own forward gathers the statistics
        return bn(x) * scale
    bn._check_input_dim(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    if bn.weight is None:
        weight, bias = scale.expand(bn.num_features), None
    else:
        weight, bias = bn.weight * scale, bn.bias * scale
    return F.batch_norm(
        x,
        bn.running_mean if not bn.training or bn.track_running_stats else None,
        bn.running_var if not bn.training or bn.track_running_stats else None,
        weight,
        bias,
        use_batch_stats,
        momentum,
        bn.eps,
    )


class ScalableSequential(nn.Sequential):
    """A Sequential ending in a BatchNorm2d (or another ScalableSequential).

    ``forward(x, scale)`` returns ``forward(x) * scale`` with the scale folded into the
    final BN (:func:`scaled_batch_norm`); mixed edges use it for the straight-through weight.
    """

    accepts_scale = True

    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:  # type: ignore[override]
        if scale is None:
            return super().forward(x)  # the plain Sequential: no extra work off the arch step
        *body, tail = self._modules.values()
        for module in body:
            x = module(x)
        if isinstance(tail, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            return scaled_batch_norm(tail, x, scale)
        return tail(x, scale)


class ReLUConvBN(ScalableSequential):
    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int = 1, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(ScalableSequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(ScalableSequential):
    """Two stacked DilConvs without dilation, as in DARTS."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs (no information dropped)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    accepts_scale = True

    def forward(self, x: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.relu(x)
        # The second conv sees the odd pixels; pad keeps odd sizes working.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        y = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)
        return self.bn(y) if scale is None else scaled_batch_norm(self.bn, y, scale)


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


class AvgPool3x3(nn.Module):
    """3x3 average pooling, padding 1, padded pixels left out of the mean (``count_include_pad=False``).

    On the CPU, for NCHW inputs, it runs as a depthwise 3x3 convolution with a kernel of ones
    times the inverse of each window's pixel count: the same values (to float rounding) as
    ``F.avg_pool2d``, 3-5x faster forward and backward at NAS-Bench-201's sizes
    (``experiments/README.md``). Elsewhere, and for tiny inputs, ``F.avg_pool2d``.
    """

    # Below this many elements the box filter's fixed cost loses (batch 8, 16x16, 4 channels:
    # 0.25 against 0.19 ms forward + backward); from batch 64 at 8x8, 8 channels up it wins.
    min_box_filter_numel = 16384

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride
        self._cache: Dict[tuple, torch.Tensor] = {}  # kernels and count maps, never saved

    def _cached(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        t = self._cache.get(key)
        if t is None:
            with torch.inference_mode(False), torch.no_grad():  # usable in training even if first built in eval
                t = self._cache[key] = make()
        return t

    def _inverse_count(self, H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
        def per_axis(n: int) -> torch.Tensor:
            centre = torch.arange(0, n, self.stride)
            return (torch.clamp(centre + 1, max=n - 1) - torch.clamp(centre - 1, min=0) + 1).to(torch.float64)

        return self._cached(("count", H, W, dtype), lambda: (1.0 / torch.outer(per_axis(H), per_axis(W))).to(dtype))

    def _use_box_filter(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.is_contiguous()  # NCHW; channels-last has a fast native pooling kernel
            and x.dtype in (torch.float32, torch.float64)  # 1/count in low precision would round
            and not _cpu_autocast_enabled()  # autocast would run the conv in bf16
            and x.numel() >= self.min_box_filter_numel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_box_filter(x):
            return F.avg_pool2d(x, 3, stride=self.stride, padding=1, count_include_pad=False)
        C = x.shape[1]
        ones = self._cached(("ones", C, x.dtype), lambda: torch.ones(C, 1, 3, 3, dtype=x.dtype))
        window_sum = F.conv2d(x, ones, stride=self.stride, padding=1, groups=C)
        return window_sum * self._inverse_count(x.shape[2], x.shape[3], window_sum.dtype)

    def extra_repr(self) -> str:
        return f"kernel_size=3, stride={self.stride}, padding=1, count_include_pad=False"


class Pool(nn.Module):
    """3x3 pooling, with a 1x1 ReLU-conv-BN first when the channel count changes."""

    def __init__(self, kind: str, C_in: int, C_out: int, stride: int, affine: bool):
        super().__init__()
        self.preprocess = None if C_in == C_out else ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)
        if kind == "avg":
            self.pool = AvgPool3x3(stride)
        else:
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.pool(x)


def _skip(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    if stride == 2:
        return FactorizedReduce(C_in, C_out, affine)
    return ReLUConvBN(C_in, C_out, 1, 1, 0, affine=affine)


register_op("none", lambda C_in, C_out, stride, affine: Zero(C_out, stride))
register_op("skip_connect", _skip)
register_op("nor_conv_1x1", lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 1, stride, 0, affine=affine))
register_op("nor_conv_3x3", lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 3, stride, 1, affine=affine))
register_op("avg_pool_3x3", lambda C_in, C_out, stride, affine: Pool("avg", C_in, C_out, stride, affine))
register_op("max_pool_3x3", lambda C_in, C_out, stride, affine: Pool("max", C_in, C_out, stride, affine))
register_op("sep_conv_3x3", lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 3, stride, 1, affine))
register_op("sep_conv_5x5", lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 5, stride, 2, affine))
register_op("dil_conv_3x3", lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 3, stride, 2, 2, affine))
register_op("dil_conv_5x5", lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 5, stride, 4, 2, affine))
