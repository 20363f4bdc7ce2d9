"""What torchrun costs on CPU: one search step of a 2-process gloo run against one process, same global batch.

Honest information, not a target: on one machine's CPU cores, two processes share the
cores that one process would use with two threads, and gloo adds an all-reduce of every
used weight gradient and of the logits' gradient per step. GPUs are where several
processes pay off; run this there with ``--device cuda`` to measure the scaling.

    python -m experiments.bench_distributed                  # nb201, C=8, N=2, batch 64, 32x32
    python -m experiments.bench_distributed --quick --out /tmp/d.json

Each case times ``Searcher.step`` (weight step then architecture step, gdas mode) over
``--steps`` steps after a warm-up, every rank stepping in lockstep; the median step is
reported. Cases, each in its own fresh launch: one process with 1 thread, one process with
2 threads, and ``torchrun --nproc_per_node=2`` with 1 thread per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import nas
from nas.config import load_config
from nas.distributed import init_from_environment, local_device, shutdown
from nas.io import atomic_write_text
from nas.searcher import Searcher

from .machine import command_line, git_state, machine
from .settings import RESULTS

DEFAULT_OUT = RESULTS / "bench_distributed.json"


def worker(args: argparse.Namespace) -> None:
    """One process of a case: time the search steps; rank 0 writes ``args.worker_out``."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    world = init_from_environment(device, timeout_s=120)
    device = local_device(device, world)
    torch.manual_seed(0)
    net = nas.build_supernet("nb201", "gdas", C=args.C, N=args.N, num_classes=10).to(device)
    cfg = load_config(None, [f"search.epochs={args.steps + args.warmup}"])
    searcher = Searcher.from_config(net, cfg.search, device=device, world=world)
    searcher.start_epoch(0)
    share = args.batch // world.world_size
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, share, 3, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 10, (2, share), generator=g).to(device)
    times = []
    for i in range(args.warmup + args.steps):
        world.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        searcher.step((x[0], y[0]), (x[1], y[1]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        world.barrier()  # a step ends when the slowest rank ends it
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if world.is_main:
        Path(args.worker_out).write_text(
            json.dumps(
                {
                    "median_s": statistics.median(times),
                    "times_s": times,
                    "world_size": world.world_size,
                    "threads": args.threads,
                }
            )
        )
    shutdown(world, completed=True)


def run_case(args: argparse.Namespace, nproc: int, threads: int, out: Path) -> dict:
    common = [
        "--worker",
        "--worker-out",
        str(out),
        "--threads",
        str(threads),
        "--device",
        args.device,
        "--C",
        str(args.C),
        "--N",
        str(args.N),
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "experiments.bench_distributed", *common]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "experiments.bench_distributed",
            *common,
        ]
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny setting (C=4, N=1, batch 16, 16px, 5 steps)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed case")
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--N", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.C, args.N, args.batch, args.size, args.steps, args.warmup = 4, 1, 16, 16, 5, 2
    tmp = args.out.with_suffix(".case.json")
    cases = {}
    if args.device == "cpu":
        cases["1 process, 1 thread"] = run_case(args, 1, 1, tmp)
        cases[f"1 process, {args.nproc} threads"] = run_case(args, 1, args.nproc, tmp)
        cases[f"{args.nproc} processes (gloo), 1 thread each"] = run_case(args, args.nproc, 1, tmp)
    else:
        cases["1 process"] = run_case(args, 1, 1, tmp)
        cases[f"{args.nproc} processes (nccl)"] = run_case(args, args.nproc, 1, tmp)
    tmp.unlink(missing_ok=True)
    base = next(iter(cases.values()))["median_s"]
    rows = {
        name: {"median_ms": 1e3 * c["median_s"], "relative_to_first": c["median_s"] / base} for name, c in cases.items()
    }
    setting = {
        "space": "nb201",
        "mode": "gdas",
        "C": args.C,
        "N": args.N,
        "global_batch": args.batch,
        "image_size": args.size,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.out,
        json.dumps(
            {
                "setting": setting,
                "cases": rows,
                "raw": cases,
                "machine": machine(torch.device(args.device)),
                "git": git_state(),
                "command": command_line(),
            },
            indent=2,
        ),
    )
    print(f"search step, global batch {args.batch} ({setting}):")
    for name, row in rows.items():
        print(f"  {name:<36} {row['median_ms']:8.1f} ms  x{row['relative_to_first']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
