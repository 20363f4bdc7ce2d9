"""Why ``none`` gains in short gdas searches: the scale gradient of each sampled op.

In the gdas architecture step each edge's output is the sampled op's output ``y`` times
its straight-through weight ``w`` (1.0 going forward). The logits of the edge move with
``G = d loss / d w = <d loss / d y, y>``: the gradient of a scale on that op's output.
``none`` has ``y = 0`` and so ``G = 0``; whenever the sampled op has ``G > 0`` (the loss
would drop if its output were scaled down), the softmax Jacobian moves probability from
it to the other ops, ``none`` included.

This script loads a search run's supernet (its last checkpoint), sets the logits to
zero so every op is sampled equally often, and measures ``G`` on held-out images
(the data set's test split), with BN in training mode as in the search. It prints the
mean ``G`` per op with its standard error and the share of positive values.

    python experiments/scale_gradients.py RUN_DIR                 # 300 batches of 64
    python experiments/scale_gradients.py RUN_DIR --batches 5 --out /tmp/g.json
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

import nas.darts as darts_module
import nas.nb201 as nb201_module
import nas.supernet as supernet_module
from nas.config import load_config
from nas.io import atomic_write_text, load_checkpoint
from nas.spaces import build_supernet
from nas.training import load_data

ROOT = Path(__file__).resolve().parent.parent


def scale_gradients(run_dir: Path, batches: int, batch_size: int, seed: int) -> Dict[str, List[float]]:
    """Per op name, the G of every sampled, used edge over ``batches`` forward/backward passes."""
    cfg = load_config(run_dir / "config.yaml")
    data = load_data(cfg)
    sn = cfg.supernet
    net = build_supernet(sn.space, "gdas", C=sn.C, N=sn.N, num_classes=data.num_classes, ops=sn.ops,
                         affine=sn.affine)
    net.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()  # uniform sampling: every op is sampled equally often
    net.tau = 1.0  # G does not depend on tau; only the Jacobian that follows it does
    net.train()  # batch statistics, as in the search

    # Record each edge's straight-through weight as the cells use it (one weight per edge
    # and cell type, shared by all cells of that type, so its gradient sums over them).
    seen: Dict[int, tuple] = {}
    originals = {mod: mod.run_edge for mod in (nb201_module, darts_module)}

    def recording_run_edge(candidates, x, e, plan):
        if x is not None and plan.choices is not None and plan.weights is not None:
            w = plan.weights[e]
            if id(w) not in seen:
                w.retain_grad()
                seen[id(w)] = (plan.choices[e], w)
        return supernet_module.run_edge(candidates, x, e, plan)

    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    out: Dict[str, List[float]] = collections.defaultdict(list)
    try:
        for mod in originals:
            mod.run_edge = recording_run_edge
        for _ in range(batches):
            idx = torch.randint(0, data.test_x.shape[0], (batch_size,), generator=gen)
            x = (data.test_x[idx].float() / 255 - mean) / std
            seen.clear()
            loss = F.cross_entropy(net(x), data.test_y[idx])
            loss.backward(inputs=net.arch_parameters())
            for k, w in seen.values():
                if w.grad is not None:  # None: the edge's output was not used (a dead node)
                    out[net.ops[k]].append(float(w.grad))
    finally:
        for mod, fn in originals.items():
            mod.run_edge = fn
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a search run directory (config.yaml, checkpoint.pt)")
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = p.parse_args(argv)
    if not (args.run_dir / "checkpoint.pt").exists():
        print(f"error: {args.run_dir} holds no checkpoint.pt; give a search run directory", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    stats = scale_gradients(args.run_dir, args.batches, args.batch_size, args.seed)
    cfg = load_config(args.run_dir / "config.yaml")
    ops = list(cfg.supernet.ops or (nb201_module.NB201_OPS if cfg.supernet.space == "nb201"
                                    else darts_module.DARTS_OPS))
    rows = []
    for op in ops:
        v = stats.get(op, [])
        n = len(v)
        m = sum(v) / n if n else 0.0
        sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else float("nan")
        rows.append({"op": op, "n": n, "mean_G": m, "sem": sd / math.sqrt(n) if n > 1 else float("nan"),
                     "share_positive": sum(x > 0 for x in v) / n if n else float("nan")})
    lines = [f"scale gradient G = d loss / d w of the sampled op, {args.run_dir}, {args.batches} batches "
             f"of {args.batch_size} test images, uniform sampling:",
             f"{'op':<14} {'n':>5} {'mean G':>9} {'s.e.':>8} {'share G>0':>9}"]
    for r in rows:
        if r["op"] == "none":
            lines.append(f"{'none':<14} {'-':>5} {0.0:>+9.4f} {'-':>8} {'-':>9}   (zero output: G = 0 always)")
        else:
            lines.append(f"{r['op']:<14} {r['n']:>5} {r['mean_G']:>+9.4f} {r['sem']:>8.4f} {r['share_positive']:>9.2f}")
    text = "\n".join(lines)
    if args.out:
        atomic_write_text(args.out, json.dumps({
            "experiment": "scale_gradients", "run_dir": str(args.run_dir), "batches": args.batches,
            "batch_size": args.batch_size, "seed": args.seed, "rows": rows,
            "seconds": time.perf_counter() - t0, "table": text}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
