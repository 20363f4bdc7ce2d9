#!/usr/bin/env python3
"""Check that the architecture matters on the synthetic data set (``nas.data.make_synthetic``).

Trains, for the same short budget, networks that stand for the NAS-Bench-201 extremes and prints
their test accuracy:

* proxies (``--models proxy``): ``conv_heavy`` (stem + 6 ReLU-conv3x3-BN, two of them stride 2),
  ``shallow`` (stem + the two NB201 residual reduction blocks: what an all-skip_connect network
  computes) and ``blur`` (stem + two 3x3 average pools + the residual blocks: an all-avg_pool_3x3
  network);
* the real NB201 networks (``--models real``, needs ``nas.build_network``): every cell edge
  nor_conv_3x3, skip_connect or avg_pool_3x3, at each ``--real C,N``.

    python -m experiments.synthetic_proxy_check                      # proxies, C=16, 4 epochs
    python -m experiments.synthetic_proxy_check --models real --real 8,1 16,1

SGD (momentum 0.9, Nesterov, weight decay 5e-4), cosine schedule per step, no augmentation.

Results for the task's first version (1-pixel strokes of either polarity on a smooth colour field; the
current task draws 2-pixel light strokes, see ``make_synthetic``), CPU, 5000 train / 1000 test images,
10 classes, 4 epochs, batch 64, lr 0.05; test accuracy:

    proxy conv_heavy C=16   50.9 / 58.2  (seeds 0 / 1)      nb201 C=8  N=1: conv 69.7, skip  8.8, pool 8.5
    proxy shallow    C=16   39.5 / 16.0                     nb201 C=16 N=1: conv 81.2, skip  9.1
    proxy blur       C=16    7.9 /  9.8                     nb201 C=8  N=2: conv 75.1, skip  9.6, pool 9.5
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from nas.data import BatchLoader, ImageData, make_synthetic
from nas.runtime import set_cpu_threads


def _rcb(ci: int, co: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co))


class _ResBlock(nn.Module):
    """NB201's reduction block: ReLU-conv s2-BN, ReLU-conv-BN, plus avgpool + 1x1 conv shortcut."""

    def __init__(self, ci: int, co: int) -> None:
        super().__init__()
        self.a, self.b = _rcb(ci, co, 2), _rcb(co, co)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(ci, co, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.b(self.a(x))


def _stem(C: int) -> List[nn.Module]:
    return [nn.Conv2d(3, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C)]


def _head(C: int, k: int) -> List[nn.Module]:
    return [nn.BatchNorm2d(C), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, k)]


def conv_heavy(C: int, k: int) -> nn.Module:
    return nn.Sequential(
        *_stem(C),
        _rcb(C, C),
        _rcb(C, C),
        _rcb(C, 2 * C, 2),
        _rcb(2 * C, 2 * C),
        _rcb(2 * C, 4 * C, 2),
        _rcb(4 * C, 4 * C),
        *_head(4 * C, k),
    )


def shallow(C: int, k: int) -> nn.Module:
    return nn.Sequential(*_stem(C), _ResBlock(C, 2 * C), _ResBlock(2 * C, 4 * C), *_head(4 * C, k))


def blur(C: int, k: int) -> nn.Module:
    pools = [nn.AvgPool2d(3, 1, 1, count_include_pad=False) for _ in range(2)]
    return nn.Sequential(*_stem(C), *pools, _ResBlock(C, 2 * C), _ResBlock(2 * C, 4 * C), *_head(4 * C, k))


def real(op: str, C: int, N: int) -> Callable[[int, int], nn.Module]:
    def build(_: int, k: int) -> nn.Module:
        import nas

        geno = nas.Genotype.from_nb201("|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|".format(op))
        return nas.build_network(geno, C=C, N=N, num_classes=k)

    return build


def train_eval(make: Callable[[int, int], nn.Module], data: ImageData, args: argparse.Namespace, seed: int) -> float:
    """Train for ``args.epochs`` and return the test accuracy in percent."""
    torch.manual_seed(seed)
    model = make(args.C, data.num_classes)
    train = BatchLoader(
        data.train_x,
        data.train_y,
        args.batch_size,
        mean=data.mean,
        std=data.std,
        augment=args.augment,
        shuffle=True,
        drop_last=True,
        seed=seed,
    )
    test = BatchLoader(
        data.test_x,
        data.test_y,
        500,
        mean=data.mean,
        std=data.std,
        augment=False,
        shuffle=False,
        drop_last=False,
        seed=0,
    )
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * len(train))
    for epoch in range(args.epochs):
        model.train()
        train.set_epoch(epoch)
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test:
            correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / test.num_samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["proxy"], choices=["proxy", "real"])
    p.add_argument("--real", nargs="+", default=["8,1", "16,1"], help="C,N pairs for the real NB201 networks")
    p.add_argument(
        "--ops",
        nargs="+",
        default=["nor_conv_3x3", "skip_connect", "avg_pool_3x3"],
        help="cell ops of the real networks (one uniform network per op)",
    )
    p.add_argument("--num-train", type=int, default=5000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--C", type=int, default=16, help="channels of the proxies")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--augment", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    set_cpu_threads(args.threads or None)

    t0 = time.time()
    data = make_synthetic(args.num_train, args.num_test, num_classes=args.num_classes, seed=1234)
    print(
        f"data: {args.num_train} train / {args.num_test} test, {data.num_classes} classes, "
        f"generated in {time.time() - t0:.2f} s; chance = {100 / data.num_classes:.1f}%",
        flush=True,
    )

    models: Dict[str, Callable[[int, int], nn.Module]] = {}
    if "proxy" in args.models:
        models.update(
            {
                f"proxy conv_heavy C={args.C}": conv_heavy,
                f"proxy shallow C={args.C}": shallow,
                f"proxy blur C={args.C}": blur,
            }
        )
    if "real" in args.models:
        for cn in args.real:
            C, N = (int(v) for v in cn.split(","))
            for op in args.ops:
                models[f"nb201 all-{op} C={C} N={N}"] = real(op, C, N)

    results: Dict[str, List[float]] = {}
    for name, make in models.items():
        for seed in args.seeds:
            t = time.time()
            acc = train_eval(make, data, args, seed)
            results.setdefault(name, []).append(acc)
            print(f"{name:38s} seed {seed}: {acc:5.1f}%  ({time.time() - t:.0f} s)", flush=True)
    print("\nmean test accuracy after", args.epochs, "epochs:")
    for name, accs in results.items():
        print(f"  {name:38s} {sum(accs) / len(accs):5.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
