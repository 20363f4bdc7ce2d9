"""Benchmark nas.sampler.gumbel_softmax(hard=True) against torch's.

A benchmark, not a timed test: it prints a table and writes JSON; nothing
here passes or fails on speed. The two implementations run interleaved in the
same loop (alternating which goes first), so drifts in clock speed or cache
state hit both alike; the medians of many repeats are compared.

Rows: logits of 6x5 (a NAS-Bench-201 cell: 6 edges, 5 operations) and
4096x1000, each for the forward pass and for forward + backward. The logits
require grad in both rows, as architecture parameters do.

    python -m experiments.bench_sampler                 # full run (from the repository root)
    python -m experiments.bench_sampler --quick --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from experiments.machine import machine, write_record
from experiments.settings import RESULTS
from nas.errors import UserError
from nas.runtime import resolve_device, set_cpu_threads
from nas.sampler import gumbel_softmax

SHAPES = [(6, 5), (4096, 1000)]
MODES = ["forward", "forward+backward"]
DEFAULT_OUT = RESULTS / "bench_sampler.json"
TAU = 1.0


def _step(fn: Callable[..., torch.Tensor], logits: torch.Tensor, upstream: torch.Tensor, backward: bool) -> None:
    y = fn(logits, tau=TAU, hard=True)
    if backward:
        y.backward(upstream)
        logits.grad = None


def bench_row(shape: tuple, mode: str, device: torch.device, repeats: int, warmup: int) -> Dict[str, object]:
    logits = torch.randn(*shape, device=device, requires_grad=True)
    upstream = torch.randn(*shape, device=device)
    backward = mode == "forward+backward"
    impls = {"ours": gumbel_softmax, "torch": F.gumbel_softmax}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: Dict[str, List[float]] = {name: [] for name in impls}
    for i in range(warmup + repeats):
        # Alternate the order so neither implementation always runs second.
        order = list(impls) if i % 2 == 0 else list(impls)[::-1]
        for name in order:
            sync()
            start = time.perf_counter()
            _step(impls[name], logits, upstream, backward)
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    ours = statistics.median(times["ours"]) * 1e6
    theirs = statistics.median(times["torch"]) * 1e6
    row: Dict[str, object] = {
        "shape": list(shape),
        "mode": mode,
        "repeats": repeats,
        "ours_median_us": ours,
        "torch_median_us": theirs,
        "ratio": ours / theirs,
    }
    # Quartiles show how noisy the machine was (a busy machine shows up here).
    for name in impls:
        if len(times[name]) >= 4:
            q1, _, q3 = statistics.quantiles(times[name], n=4)
            row[f"{name}_iqr_us"] = [q1 * 1e6, q3 * 1e6]
    return row


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per row and implementation (default: 2000 for 6x5, 60 for 4096x1000; --quick: 3)",
    )
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        device = resolve_device(args.device)
    except UserError as exc:
        parser.error(f"--device {args.device}: {exc}")
    set_cpu_threads(args.threads)

    rows = []
    for shape in SHAPES:
        small = math.prod(shape) < 10_000
        if args.repeats is not None:
            repeats = args.repeats
        elif args.quick:
            repeats = 3
        else:
            repeats = 2000 if small else 60
        warmup = 0 if args.quick else max(3, repeats // 20)
        for mode in MODES:
            rows.append(bench_row(shape, mode, device, repeats, warmup))

    result = {
        "benchmark": "gumbel_softmax(hard=True, tau=1): nas.sampler vs torch.nn.functional",
        "machine": machine(device),
        "quick": args.quick,
        "rows": rows,
    }
    write_record(args.out, result, here=result.pop("machine"))

    print(
        f"device: {result['machine']['device_name']} ({device}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = f"{'shape':>10} {'mode':>17} {'repeats':>8} {'ours us':>11} {'torch us':>11} {'ours/torch':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        print(
            f"{shape:>10} {row['mode']:>17} {row['repeats']:>8} "
            f"{row['ours_median_us']:>11.1f} {row['torch_median_us']:>11.1f} {row['ratio']:>10.3f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
