"""Does the supernet's preference between two ops on one edge depend on the other edges' ops?

A study of a search's saved checkpoints, not part of the search. For one edge of an nb201
supernet and two ops (default: edge 3<-0, the cell's input straight to its output,
``skip_connect`` against ``nor_conv_3x3``), it draws cells whose other edges are random
(each uniform over the ops other than ``none``) and measures, on fixed batches of the
architecture's split in training mode (as :mod:`nas.selection` does), the paired loss
difference ``L(cell with op A there) - L(cell with op B there)``. It does so in two contexts:
every other edge random, and the "chain" edges (default 1<-0, 2<-1, 3<-2) made ``nor_conv_3x3``
with the remaining edges random. A negative mean favours op A. The per-edge architecture
signal of a one-path search averages over the sampled context; the chain context is the one
of a cell with convolutions in series. Nothing here reads the benchmark.

    python -m experiments.context_study CHECKPOINT.pt ... [--batches 8 --batch-size 64]   # 30 pairs a context
    python -m experiments.context_study --quick --out /tmp/x.json     # the test
"""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from experiments.rerank_study import fixed_batches, load_search, quick_checkpoint, study_checkpoints, write_study
from experiments.tables import table

NAME = "context_study"
EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")  # nb201's edge order (nas.benchmarks)
EDGE, OP_A, OP_B = "3<-0", "skip_connect", "nor_conv_3x3"
CHAIN, CHAIN_OP = ("1<-0", "2<-1", "3<-2"), "nor_conv_3x3"
PAIRS = 30


@torch.no_grad()
def paired_differences(net, cell: str, fixed, pairs: int, chain: bool, seed: int = 0) -> List[float]:
    """``pairs`` paired differences L(A on EDGE) - L(B on EDGE), other edges random (chain: CHAIN fixed)."""
    ops = list(net.ops)
    use = [k for k, o in enumerate(ops) if o != "none"]
    edge = EDGES.index(EDGE)
    rng = random.Random(seed)

    def loss(choice: List[int]) -> float:
        with net.forced({cell: choice}):
            total = sum(float(F.cross_entropy(net(x).float(), y, reduction="sum")) for x, y in fixed)
        return total / sum(int(y.shape[0]) for _, y in fixed)

    out = []
    for _ in range(pairs):
        choice = [rng.choice(use) for _ in EDGES]
        if chain:
            for e in CHAIN:
                choice[EDGES.index(e)] = ops.index(CHAIN_OP)
        a, b = list(choice), list(choice)
        a[edge], b[edge] = ops.index(OP_A), ops.index(OP_B)
        out.append(loss(a) - loss(b))
    return out


def study(ckpt_path: Path, batches: int, batch_size: int, pairs: int = PAIRS) -> Dict[str, Any]:
    ckpt, cfg, net = load_search(ckpt_path)
    (cell,) = list(net.arch)
    fixed = fixed_batches(cfg, batches, batch_size)
    net.train()  # batch statistics, as the search's own measurements
    res: Dict[str, Any] = {"epoch": ckpt["epoch"], "seed": cfg.run.seed, "edge": EDGE, "ops": [OP_A, OP_B]}
    for name, chain in (("random", False), ("chain", True)):
        d = paired_differences(net, cell, fixed, pairs, chain)
        res[name] = {"mean": statistics.mean(d), "stderr": statistics.stdev(d) / len(d) ** 0.5, "pairs": len(d)}
    return res


def main() -> int:
    pairs = 3 if "--quick" in sys.argv else PAIRS  # the test's tiny search: three pairs a context
    args, out, studied, tmp = study_checkpoints(
        NAME,
        __doc__,
        lambda path, batches, batch_size: study(path, batches, batch_size, pairs),
        quick_checkpoint,
        lambda r: (
            f"seed {r['seed']} epoch {r['epoch']}: L({OP_A}) - L({OP_B}) on {EDGE}: random context "
            f"{r['random']['mean']:+.4f} +- {r['random']['stderr']:.4f}, chain {r['chain']['mean']:+.4f} "
            f"+- {r['chain']['stderr']:.4f}"
        ),
        checkpoints_help="search checkpoints of the nb201 space",
        batches=8,
        batch_size=64,
    )
    results = sorted(studied, key=lambda r: (r["seed"], r["epoch"], r["checkpoint"]))
    text = table(
        ["checkpoint", "epoch", "random context", "chain of 3x3"],
        [
            [
                r["checkpoint"],
                r["epoch"],
                f"{r['random']['mean']:+.4f} ± {r['random']['stderr']:.4f}",
                f"{r['chain']['mean']:+.4f} ± {r['chain']['stderr']:.4f}",
            ]
            for r in results
        ],
    )
    write_study(NAME, args, out, results, text, tmp, batches=args.batches, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
