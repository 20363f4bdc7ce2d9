"""Small models with choices, for tests/test_choice.py and ``supernet.model`` in its command-line runs.

Each function takes ``num_classes`` and ``arch``: without ``arch`` it returns the model with
choices (the search), with it the fixed network built from scratch (the retrain).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

import nas

# A custom-model search of a few steps on tiny images: the tests' shared settings (each adds its own).
TINY_SEARCH = [
    "data.num_train=128",
    "data.num_test=32",
    "data.image_size=16",
    "search.batch_size=16",
    "search.steps_per_epoch=2",
    "run.device=cpu",
    "run.threads=1",
]


def conv_bn(c_in: int, c_out: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Block(nn.Module):
    """A kernel-size choice, then identity or a 1x1 convolution."""

    def __init__(self, i: int, c: int, arch: Optional[Mapping] = None):
        super().__init__()
        self.kernel = nas.op_choice(
            f"b{i}.kernel", {"k3": lambda: conv_bn(c, c, 3), "k5": lambda: conv_bn(c, c, 5)}, arch
        )
        self.skip = nas.op_choice(f"b{i}.skip", {"identity": nn.Identity, "conv": lambda: conv_bn(c, c, 1)}, arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(self.kernel(x))


class Merge(nn.Module):
    """Three branches, two of them summed (an InputChoice with n_chosen=2)."""

    def __init__(self, c: int, arch: Optional[Mapping] = None):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(c, c, 1), conv_bn(c, c, 3), nn.Identity()])
        self.pick = nas.input_choice("merge", 3, n_chosen=2, reduction="sum", arch=arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pick([b(x) for b in self.branches])


def tiny_net(num_classes: int = 5, arch: Optional[Mapping] = None, C: int = 4, blocks: int = 2) -> nn.Module:
    """Stem, ``blocks`` blocks of choices, global pooling, a linear head."""
    return nn.Sequential(
        conv_bn(3, C, 3),
        *[Block(i, C, arch) for i in range(blocks)],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(C, num_classes),
    )


def merge_net(num_classes: int = 5, arch: Optional[Mapping] = None, C: int = 4) -> nn.Module:
    """tiny_net's stem and one block, then a Merge."""
    return nn.Sequential(
        conv_bn(3, C, 3),
        Block(0, C, arch),
        Merge(C, arch),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(C, num_classes),
    )


def wide_net(num_classes: int = 5, arch: Optional[Mapping] = None, C: int = 4) -> nn.Module:
    """A kernel choice of three candidates, then a skip choice of two: a pruned search has two
    events (the widest choice sets them) and the narrower label is padded."""
    ops = {"k1": lambda: conv_bn(C, C, 1), "k3": lambda: conv_bn(C, C, 3), "k5": lambda: conv_bn(C, C, 5)}
    return nn.Sequential(
        conv_bn(3, C, 3),
        nas.op_choice("kernel", ops, arch),
        nas.op_choice("skip", {"identity": nn.Identity, "conv": lambda: conv_bn(C, C, 1)}, arch),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(C, num_classes),
    )


def one_choice_net(num_classes: int = 5, arch: Optional[Mapping] = None, C: int = 4) -> nn.Module:
    """One choice of two candidates: removing either forces the other (hand-checkable removal)."""
    return nn.Sequential(
        conv_bn(3, C, 3),
        nas.op_choice("op", {"k1": lambda: conv_bn(C, C, 1), "k3": lambda: conv_bn(C, C, 3)}, arch),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(C, num_classes),
    )


def no_choices(num_classes: int = 5) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


NOT_A_FUNCTION = 3


def tiny_net_without_arch(num_classes: int = 5) -> nn.Module:
    """tiny_net, from a function that takes no ``arch``: a retrain fixes its model with nas.fix."""
    return tiny_net(num_classes)


def recording_net(num_classes: int = 5, arch: Optional[Mapping] = None) -> nn.Module:
    """tiny_net; with the environment's ``CHOICE_RECORD`` (a folder), every forward of the model with
    choices appends the candidates it ran, ``{label: name}``, as a line of ``rank<RANK>.jsonl`` there."""
    import json
    import os

    model = tiny_net(num_classes, arch)
    folder = os.environ.get("CHOICE_RECORD")
    if arch is not None or not folder:
        return model
    path = os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.jsonl")
    ran: dict = {}

    def start(module, args):
        ran.clear()

    def record(module, args, output):
        with open(path, "a") as f:
            f.write(json.dumps({"training": module.training, "ran": dict(sorted(ran.items()))}) + "\n")

    for choice in model.modules():
        if isinstance(choice, nas.OpChoice):
            for name, candidate in choice.candidates.items():
                candidate.register_forward_hook(
                    lambda m, a, o, label=choice.label, name=name: ran.__setitem__(label, name)
                )
    model.register_forward_pre_hook(start)
    model.register_forward_hook(record)
    return model


def ignores_arch(num_classes: int = 5, **kwargs) -> nn.Module:
    """Takes ``arch`` (through ``**kwargs``) but returns tiny_net's choices all the same."""
    return tiny_net(num_classes)
