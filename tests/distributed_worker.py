"""Run by tests/test_distributed.py under torchrun (not a test itself).

``steps`` mode: every rank builds the same seeded supernet, takes its half of the same global
batches for a few Searcher steps, and saves what it ends with (weights, logits, optimiser states,
batch-norm buffers, the architecture each forward sampled, each step's losses) to OUT/rankR.pt.

``fault`` mode: the search command line, with rank 1 killed (``os._exit``) at its Nth step, as a
crashed GPU would leave it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Tuple

import torch

import nas
from nas.distributed import init_from_environment
from nas.searcher import Searcher

Batch = Tuple[torch.Tensor, torch.Tensor]


def build(mode: str, seed: int = 0, model: str = "nb201"):
    """The supernet and optimisers every rank (and the one-process reference) starts from;
    ``model="choices"``: a custom model with choices (tests/choice_models.py) instead of nb201."""
    torch.manual_seed(seed)
    if model == "choices":
        from choice_models import tiny_net  # beside this file, which torchrun runs as a script

        net = nas.Supernet.from_model(tiny_net(num_classes=3), mode, tau=1.0)
    else:
        net = nas.build_supernet("nb201", mode, C=4, N=1, num_classes=3, tau=1.0)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05, weight_decay=1e-3)
    return net, w_opt, a_opt


def global_batches(steps: int, batch: int = 8) -> List[Tuple[Batch, Batch]]:
    g = torch.Generator().manual_seed(123)

    def one() -> Batch:
        return torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, 3, (batch,), generator=g)

    return [(one(), one()) for _ in range(steps)]


def steps_main(mode: str, steps: int, out: str, model: str = "nb201") -> None:
    torch.set_num_threads(1)
    world = init_from_environment(torch.device("cpu"), timeout_s=60)
    net, w_opt, a_opt = build(mode, model=model)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    searcher = Searcher(net, w_opt, a_opt, epochs=1, grad_clip=5.0, world=world)
    searcher.start_epoch(0)
    half = 8 // world.world_size
    mine = slice(world.rank * half, (world.rank + 1) * half)
    archs, losses = [], []
    for (x_w, y_w), (x_a, y_a) in global_batches(steps):
        before = float(searcher.train_meter.loss)
        searcher.weight_step(x_w[mine], y_w[mine])
        archs.append(net.sampled_architecture())
        losses.append(float(searcher.train_meter.loss) - before)
        before = float(searcher.val_meter.loss)
        searcher.arch_step(x_a[mine], y_a[mine])
        archs.append(net.sampled_architecture())
        losses.append(float(searcher.val_meter.loss) - before)
    searcher.end_epoch()
    torch.save(
        {
            "state": net.state_dict(),
            "w_opt": w_opt.state_dict(),
            "a_opt": a_opt.state_dict(),
            "archs": archs,
            "losses": [v / half for v in losses],
            "initial": initial,
            "train": searcher.train_meter.read(),
            "val": searcher.val_meter.read(),
            "grads_none": [p.grad is None for p in net.weight_parameters()],
        },
        os.path.join(out, f"rank{world.rank}.pt"),
    )
    # As nas.distributed's own shutdown: every rank done before the group goes (gloo has aborted
    # a rank whose peer tore the group down first: "terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def fault_main(kill_at: int, cli_args: List[str]) -> int:
    from nas.cli import main

    calls = {"n": 0}
    step = Searcher.step

    def step_then_maybe_die(self, *args, **kwargs):
        calls["n"] += 1
        if int(os.environ.get("RANK", "0")) == 1 and calls["n"] == kill_at:
            os._exit(3)  # no cleanup, no goodbye: as a crashed process
        return step(self, *args, **kwargs)

    Searcher.step = step_then_maybe_die
    return main(cli_args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["steps", "fault"])
    parser.add_argument("--mode", default="gdas")
    parser.add_argument("--model", default="nb201", choices=["nb201", "choices"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dump")
    parser.add_argument("--kill-at", type=int, default=5)
    known, rest = parser.parse_known_args()
    if known.what == "steps":
        steps_main(known.mode, known.steps, known.dump, known.model)
    else:
        sys.exit(fault_main(known.kill_at, rest))
