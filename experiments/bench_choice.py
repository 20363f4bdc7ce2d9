"""Benchmark a custom model with choices (issue 29): the gdas weight step against its fixed network.

A benchmark, not a timed test: it prints a table (last) and writes JSON; nothing here passes or
fails on speed. The model is the README's example (``cifar_net``: a stem, then per block a kernel
size choice, 3 or 5, and an identity-or-3x3-convolution choice; 16 channels, 3 blocks), batch 64
of 32x32 inputs, 10 classes. Per architecture (seeded random ones, all-k3-identity, all-k5-conv),
the median time of one WEIGHT step (zero_grad, forward, cross-entropy, backward, clip_grad_norm_(5),
SGD step; ``experiments.bench_search.weight_step_fn``) of:

  sampled  the supernet ``nas.Supernet.from_model(cifar_net())`` on the weight step's real path:
           logits frozen (as the Searcher's weight step) and +30 on each label's chosen candidate,
           so the Gumbel draw is that architecture (checked on every step);
  fixed    ``nas.fix(net, arch)``: the plain network of that architecture, the same weights;
  fixed_copy  an A/A control: a second fixed network doing the same work; its ratio to ``fixed``
           is the noise floor of the measurement on this machine.

The variants run interleaved (their order rotating each round) after a warm-up; medians are
compared, and the median of the per-round ratios (``ratio_paired``). Target: sampled <= 1.05x fixed.

    python -m experiments.bench_choice                 # from the repository root
    python -m experiments.bench_choice --quick --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

import nas
from experiments.bench_search import BIAS, interleaved, med, paired_ratio, weight_step_fn
from experiments.machine import command_line, git_state, machine, set_threads
from experiments.settings import RESULTS

DEFAULT_OUT = RESULTS / "bench_choice.json"
BATCH, SIZE, CLASSES = 64, 32, 10


def conv_bn(c: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU())


def cifar_net(num_classes: int = 10, arch: Optional[dict] = None, C: int = 16, blocks: int = 3) -> nn.Module:
    """The README's example model (``Choices in your own model``)."""
    layers = [nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C), nn.ReLU()]
    for i in range(blocks):
        layers.append(
            nas.op_choice(f"block{i}.kernel", {"k3": lambda: conv_bn(C, 3), "k5": lambda: conv_bn(C, 5)}, arch)
        )
        layers.append(nas.op_choice(f"block{i}.skip", {"identity": nn.Identity, "conv": lambda: conv_bn(C, 3)}, arch))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))


def architectures(count: int, seed: int = 0) -> List[Dict[str, str]]:
    labels = [(f"block{i}.kernel", ("k3", "k5")) for i in range(3)] + [
        (f"block{i}.skip", ("identity", "conv")) for i in range(3)
    ]
    rng = random.Random(seed)
    archs = [{label: rng.choice(names) for label, names in labels} for _ in range(count)]
    archs.append({label: names[0] for label, names in labels})  # all k3, all identity: the cheapest
    archs.append({label: names[1] for label, names in labels})  # all k5, all conv: the dearest
    return archs


def bias_logits(net, arch: Dict[str, str]) -> None:
    """0 everywhere, +BIAS on each label's chosen candidate: the Gumbel draw is ``arch``."""
    (a,) = net.arch_parameters()
    with torch.no_grad():
        a.zero_()
        for r, label in enumerate(net.labels):
            a[r, net.candidates[label].index(arch[label])] = BIAS


def bench_arch(arch: Dict[str, str], x: torch.Tensor, y: torch.Tensor, repeats: int, warmup: int) -> Dict[str, object]:
    torch.manual_seed(0)
    net = nas.Supernet.from_model(cifar_net(CLASSES), mode="gdas").train()
    bias_logits(net, arch)
    for a in net.arch_parameters():
        a.requires_grad_(False)  # the weight step's frozen logits: gumbel_max, no straight-through
    fixed = nas.fix(net, arch).train()
    fixed_copy = nas.fix(net, arch).train()
    sampled_step = weight_step_fn(net, net.weight_parameters(), x, y)

    def sampled() -> None:
        sampled_step()
        if net.sampled_architecture() != arch:
            raise RuntimeError(f"the draw was {net.sampled_architecture()}, not {arch}")

    fns = {
        "sampled": sampled,
        "fixed": weight_step_fn(fixed, list(fixed.parameters()), x, y),
        "fixed_copy": weight_step_fn(fixed_copy, list(fixed_copy.parameters()), x, y),
    }
    times = interleaved(fns, torch.device("cpu"), repeats, warmup)
    return {
        "arch": arch,
        "ms": {k: med(v) * 1e3 for k, v in times.items()},
        "ratio": med(times["sampled"]) / med(times["fixed"]),
        "ratio_paired": paired_ratio(times["sampled"], times["fixed"]),
        "control_paired": paired_ratio(times["fixed_copy"], times["fixed"]),
        "seconds": times,
    }


def table(res: Dict[str, object]) -> str:
    lines = [
        f"{'architecture':<58} {'sampled ms':>10} {'fixed ms':>9} {'ratio':>6} {'paired':>7} {'A/A':>6}",
    ]
    for row in res["rows"]:
        name = " ".join(f"{v}" for v in row["arch"].values())
        ms = row["ms"]
        lines.append(
            f"{name:<58} {ms['sampled']:>10.2f} {ms['fixed']:>9.2f} {row['ratio']:>6.3f} "
            f"{row['ratio_paired']:>7.3f} {row['control_paired']:>6.3f}"
        )
    s = res["summary"]
    lines.append(
        f"median over architectures: sampled/fixed {s['ratio_paired_median']:.3f} (paired), "
        f"worst {s['ratio_paired_max']:.3f}; A/A control {s['control_paired_median']:.3f}; target <= 1.05"
    )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 random architectures, 5 repeats")
    p.add_argument("--repeats", type=int, help="timed rounds per architecture (default 21; quick 5)")
    p.add_argument("--threads", type=int, help="torch threads (default: 1 on a busy machine, else all cores)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 21)
    warmup = 2 if args.quick else 4
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)
    rows = [bench_arch(a, x, y, repeats, warmup) for a in architectures(2 if args.quick else 6)]
    paired = sorted(r["ratio_paired"] for r in rows)
    res = {
        "machine": machine(),
        "git": git_state(),
        "command": command_line(),
        "threads": threads,
        "setting": {"batch": BATCH, "size": SIZE, "classes": CLASSES, "C": 16, "blocks": 3, "repeats": repeats},
        "rows": rows,
        "summary": {
            "ratio_paired_median": med(paired),
            "ratio_paired_max": paired[-1],
            "control_paired_median": med([r["control_paired"] for r in rows]),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nas.io.atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
