"""The skeleton of a study script: its command line, its run context and its JSON record.

    p = study.parser(__doc__, "NAME.json")     # --quick, --out, --cache, --threads (and --dataset)
    ctx = study.setup(p.parse_args())          # threads, the run cache, a Runner, machine and code
    ... ctx.runner.search(...), ctx.runner.retrain(...) ...
    study.finish(ctx, "NAME", payload, text)   # writes the JSON, prints the table last

The JSON holds the payload plus the command, the machine, the torch threads, the
code (git HEAD and library fingerprint), the wall time and the time of every run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from experiments.cifar_subset import cifar_available, cifar_subset
from experiments.machine import command_line, git_state, machine, set_threads
from experiments.runs import Runner
from experiments.settings import DEFAULT_CACHE, DEFAULT_CIFAR_ROOT, RESULTS, cifar_subset_size, data_overrides, rel
from nas.genotype import Genotype
from nas.io import atomic_write_text


def parser(description: str, default_out: str, dataset_option: bool = True) -> argparse.ArgumentParser:
    """The options every study takes; ``default_out`` is its JSON's name under experiments/results/."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if dataset_option:
        p.add_argument(
            "--dataset",
            default="synthetic",
            choices=["synthetic", "cifar10"],
            help="synthetic (the built-in data set, default) or cifar10 (the fixed subset)",
        )
        p.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py/ (default: data/)")
    p.add_argument("--quick", action="store_true", help="tiny settings (a few steps), for the tests")
    p.add_argument(
        "--out",
        default=None,
        help=f"JSON output (default: experiments/results/{default_out}; "
        "with --quick: experiments/results/quick_<name>)",
    )
    p.add_argument(
        "--cache",
        default=None,
        help=f"folder of cached runs (default: {rel(DEFAULT_CACHE)}; with --quick a "
        "temporary folder, deleted at the end)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 when the machine is already busy, else all cores)",
    )
    p.set_defaults(default_out=default_out)
    return p


@dataclass
class Context:
    """A study's run: its arguments, the Runner, where the JSON goes, and what it ran on."""

    args: argparse.Namespace
    runner: Runner
    out: Path
    threads: int
    started: float
    machine: Dict[str, Any]
    code: Dict[str, Any]
    tmp: Optional[str] = None  # the --quick cache, deleted by close()

    def close(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def setup(args: argparse.Namespace) -> Context:
    """Set the threads, open the run cache (a temporary one with --quick) and record the machine."""
    threads = set_threads(args.threads)
    tmp = None
    if args.cache:
        cache = Path(args.cache)
    elif args.quick:
        tmp = tempfile.mkdtemp(prefix="nas-exp-quick-")
        cache = Path(tmp)
    else:
        cache = DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (f"quick_{args.default_out}" if args.quick else args.default_out)
    return Context(args, Runner(cache), out, threads, time.perf_counter(), machine(), git_state(), tmp)


def finish(ctx: Context, name: str, payload: Dict[str, Any], text: str) -> None:
    """Write the JSON (with machine, command, timings) and print ``text`` (the table) last."""
    compute = sum(t["seconds"] for t in ctx.runner.timings)
    fresh = sum(t["seconds"] for t in ctx.runner.timings if not t["cached"])
    record = {
        "experiment": name,
        "command": command_line(),
        "quick": bool(ctx.args.quick),
        "machine": ctx.machine,
        "threads": ctx.threads,
        "code": ctx.code,
        **payload,
        "wall_seconds": time.perf_counter() - ctx.started,
        "compute_seconds_all_runs": compute,
        "compute_seconds_fresh_runs": fresh,
        "runs": ctx.runner.timings,
        "table": text,
    }
    ctx.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ctx.out, json.dumps(record, indent=2, default=json_default) + "\n")
    ctx.close()
    print(f"wrote {ctx.out}", file=sys.stderr)
    print(text, flush=True)


def json_default(obj: Any) -> Any:
    """Paths and genotypes as strings in the JSON."""
    if isinstance(obj, (Path, Genotype)):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def cifar_data(ctx: Context, root: Optional[str]) -> Optional[Path]:
    """The root of the fixed CIFAR-10 subset, built from ``root`` on first use; None (with a message) if absent."""
    src = Path(root) if root else DEFAULT_CIFAR_ROOT
    if not cifar_available(src):
        msg = (
            f"SKIPPING the CIFAR-10 part: no {src / 'cifar-10-batches-py'} (build it with "
            "`python ../shared/data/cifar10/build_cifar10.py data/` from the repository root, "
            "or pass --cifar-root)"
        )
        print(msg, file=sys.stderr, flush=True)
        return None
    n_train, n_test = cifar_subset_size(ctx.args.quick)
    return cifar_subset(src, n_train, n_test, ctx.runner.cache)


def dataset_overrides(ctx: Context) -> List[str]:
    """The data section for ``--dataset``; exits with status 2 when CIFAR-10 is asked for but missing."""
    if ctx.args.dataset == "cifar10":
        root = cifar_data(ctx, ctx.args.cifar_root)
        if root is None:
            ctx.close()
            raise SystemExit(2)
        return data_overrides("cifar10", ctx.args.quick, root)
    return data_overrides("synthetic", ctx.args.quick)
