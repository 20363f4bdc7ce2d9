"""What skipping pruned ops saves a soft (darts-mode) supernet: one training step (forward and
backward) of the CPU config's supernet (nb201, C=8, N=2, batch 64 of 32x32) with three of five
ops pruned on every edge, against the same weights with those ops at weight 0 but still
computed (logits -1e4, no mask), alternated step by step; medians after two warm-up steps each.

    python -m experiments.bench_pruned_soft [--steps 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import nas
from experiments.machine import machine

DROPPED = ("none", "avg_pool_3x3", "nor_conv_1x1")  # two ops left per edge, as after a third event


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24, help="steps in all, alternating the two forms")
    args = p.parse_args()
    if args.steps < 6:  # each form's first two steps are warm-up, not measured
        p.error("--steps must be at least 6: each form drops its first two steps")
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", "darts", C=8, N=2)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    drop = [net.ops.index(o) for o in DROPPED]

    def use(pruned: bool) -> None:
        with torch.no_grad():
            net.alive("normal")[:] = True
            net.arch["normal"].zero_()
            if pruned:
                net.alive("normal")[:, drop] = False
            else:
                net.arch["normal"][:, drop] = -1e4  # softmax weight 0, the op still runs
        net._alive_cache = None

    seconds = {True: [], False: []}
    for i in range(args.steps):
        pruned = i % 2 == 0
        use(pruned)
        start = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        seconds[pruned].append(time.perf_counter() - start)
    skipped, computed = (statistics.median(seconds[k][2:]) for k in (True, False))
    print(f"machine: {machine()}")
    print(f"step with pruned ops skipped: {skipped * 1e3:.0f} ms; computed at weight 0: {computed * 1e3:.0f} ms")
    print(f"ratio {computed / skipped:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
