"""Would re-ranking the last candidate cells by the supernet's own accuracy pick better cells?

A study of a search's saved checkpoints, not part of the search. For a checkpoint of a pruned
nb201 search taken late, while each edge keeps a few ops (e.g. between the last two pruning
events), it enumerates every cell the surviving ops allow (``none`` left out, as the
none-excluded rule does; 64 cells where each edge keeps two others), forces each on the supernet and measures its accuracy and loss on
fixed batches of the architecture's split (never trained on by the weights), in training
mode so batch norm uses each batch's statistics, as the search's own measurements do
(:mod:`nas.selection`). Then, for measurement only, it looks each cell up on NAS-Bench-201 and
reports the rank correlation, the benchmark accuracy of the supernet's best cell and that of the
cell the search derived by probability.

    python -m experiments.rerank_study CHECKPOINT.pt ... [--batches 8 --batch-size 256]
    python -m experiments.rerank_study --quick --out /tmp/x.json     # the test
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from experiments.machine import command_line, git_state, machine
from experiments.nb201_cpu_search import CONFIG, GDAS_PRUNED, QUICK
from experiments.settings import RESULTS, rel
from experiments.stats import kendall_tau_b
from experiments.tables import log, table
from nas.benchmarks import cell_string, load_benchmark
from nas.config import Config, from_dict, load_config
from nas.data import search_split, subset_indices
from nas.io import atomic_write_text, load_checkpoint
from nas.search import SearchTask, run_search
from nas.supernet import Supernet
from nas.training import load_data, make_loader

MAX_CELLS = 1000  # each costs a pass over the fixed batches


def load_task(ckpt_path: Path) -> Tuple[Dict[str, Any], SearchTask]:
    """A search checkpoint and its task (on the CPU, its state loaded): supernet, cost table,
    derivation, fixed batches."""
    ckpt = load_checkpoint(ckpt_path)
    cfg = from_dict(ckpt["config"])
    cfg.data.verify_md5 = False
    task = SearchTask(cfg, torch.device("cpu"), log=lambda s: None)
    task.load_state_dict(ckpt)
    return ckpt, task


def load_search(ckpt_path: Path) -> Tuple[Dict[str, Any], Config, Supernet]:
    """A search checkpoint, its config and its supernet (on the CPU, weights loaded)."""
    ckpt, task = load_task(ckpt_path)
    return ckpt, task.cfg, task.net


def fixed_batches(cfg: Config, batches: int, batch_size: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The first ``batches`` batches of the search's architecture split, drawn exactly as the
    search draws that split, without augmentation (never trained on by the weights)."""
    data = load_data(cfg)
    keep = subset_indices(data.train_x.shape[0], cfg.data.train_subset, cfg.run.seed)
    _, idx_a = search_split(len(keep), cfg.data.weight_fraction, cfg.run.seed)
    idx_a = keep[idx_a]
    loader = make_loader(
        data,
        data.train_x[idx_a],
        data.train_y[idx_a],
        batch_size,
        train=False,
        augment=False,
        seed=cfg.run.seed,
        device=torch.device("cpu"),
        channels_last=False,
    )
    return [b for _, b in zip(range(batches), loader)]


@torch.no_grad()
def study(ckpt_path: Path, batches: int, batch_size: int) -> Dict[str, Any]:
    """Every candidate cell of one checkpoint: its supernet accuracy and loss, its benchmark accuracy."""
    ckpt, cfg, net = load_search(ckpt_path)
    (cell,) = list(net.arch)
    alive = net.alive(cell)
    probs = net.probabilities()[cell]
    ops = net.ops
    per_edge = [[k for k in alive[e].nonzero().flatten().tolist() if ops[k] != "none"] for e in range(alive.shape[0])]
    cells = math.prod(len(ks) for ks in per_edge)
    if cells > MAX_CELLS:
        raise SystemExit(f"{ckpt_path} leaves {cells} cells to rank (at most {MAX_CELLS}); study a later checkpoint")
    fixed = fixed_batches(cfg, batches, batch_size)
    bench = load_benchmark()
    net.train()
    rows = []
    for choice in itertools.product(*per_edge):
        with net.forced({cell: list(choice)}):
            correct, loss, n = 0, 0.0, 0
            for x, y in fixed:
                out = net(x).float()
                loss += float(F.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(-1) == y).sum())
                n += y.shape[0]
        names = [ops[k] for k in choice]
        arch = cell_string(names)
        rows.append(
            {
                "cell": arch,
                "supernet_acc": 100 * correct / n,
                "supernet_loss": loss / n,
                "log_prob": float(sum(torch.log(probs[e, k]) for e, k in enumerate(choice))),
                "benchmark": bench.query(arch),
            }
        )
    derived = cell_string([ops[max(ks, key=lambda k: float(probs[e, k]))] for e, ks in enumerate(per_edge)])
    by_acc = max(rows, key=lambda r: r["supernet_acc"])
    by_loss = min(rows, key=lambda r: r["supernet_loss"])
    bench_values = [r["benchmark"] for r in rows]
    return {
        "checkpoint": str(ckpt_path),
        "epoch": ckpt["epoch"],
        "seed": cfg.run.seed,
        "cells": len(rows),
        "ops_per_edge": [[ops[k] for k in ks] for ks in per_edge],
        "tau_acc": kendall_tau_b([r["supernet_acc"] for r in rows], bench_values),
        "tau_neg_loss": kendall_tau_b([-r["supernet_loss"] for r in rows], bench_values),
        "tau_log_prob": kendall_tau_b([r["log_prob"] for r in rows], bench_values),
        "derived_by_probability": {"cell": derived, "benchmark": bench.query(derived)},
        "best_by_supernet_acc": {k: by_acc[k] for k in ("cell", "supernet_acc", "benchmark")},
        "best_by_supernet_loss": {k: by_loss[k] for k in ("cell", "supernet_loss", "benchmark")},
        "best_in_candidates": max(bench_values),
        "rows": rows,
    }


NAME = "rerank_study"


def quick_checkpoint(run_dir: Path) -> Path:
    """A tiny pruned search on synthetic data, stopped while each edge keeps three ops."""
    cfg = load_config(CONFIG, GDAS_PRUNED + QUICK)
    # 6 epochs, one of warm-up: events before epochs 3, 4, 5, 6, so after 4 three ops are left
    # (at most one of them none: every edge has a choice to rank).
    run_search(cfg, run_dir, torch.device("cpu"), stop_after=4, progress=False, log=lambda s: None)
    return run_dir / "checkpoint.pt"


def study_checkpoints(
    name: str,
    doc: str,
    study: Callable[[Path, int, int], Dict[str, Any]],
    quick_checkpoint: Callable[[Path], Path],
    describe: Callable[[Dict[str, Any]], str],
    *,
    checkpoints_help: str,
    batches: int,
    batch_size: int,
    options: Optional[Callable[[argparse.ArgumentParser], List[str]]] = None,
) -> Tuple[argparse.Namespace, Path, List[Dict[str, Any]], Optional[str]]:
    """The command line shared by the checkpoint studies: parse it, run ``study`` on each
    checkpoint (or on ``quick_checkpoint``'s tiny search with ``--quick``), and merge the results
    with those already in the JSON by checkpoint; with no checkpoints, an existing JSON's results
    are rendered again under its own command and machine. ``options`` adds a study's own
    arguments and returns their names; each reaches ``study`` as a keyword. Returns the
    arguments, the JSON path, every result and the temporary folder to remove (``None`` unless
    quick)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help=checkpoints_help)
    p.add_argument("--batches", type=int, default=batches, help="fixed batches of the architecture split")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="a tiny search on synthetic data, for the tests")
    p.add_argument("--out", default=None, help=f"JSON (default experiments/results/{name}.json; results are added)")
    own = options(p) if options is not None else []
    args = p.parse_args()
    if not args.checkpoints and not args.quick and not (args.out and Path(args.out).is_file()):
        p.error("give checkpoints to study, --quick, or --out with a study's JSON to render again")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / f"{name}.json"
    tmp = None
    paths = [Path(c) for c in args.checkpoints]
    if args.quick:
        tmp = tempfile.mkdtemp(prefix=f"nas-{name}-")
        paths = [quick_checkpoint(Path(tmp) / "run")]
        args.batches, args.batch_size = 2, 32
    here = machine()
    old = json.loads(out.read_text()) if out.exists() and not args.quick else {}
    studied = {r["checkpoint"]: r for r in old.get("results", [])}
    args.rendered_from = None
    if not paths and not args.quick:  # render again: the file's own settings, command and machine
        args.batches, args.batch_size = old.get("batches", args.batches), old.get("batch_size", args.batch_size)
        args.rendered_from = old
    for path in paths:
        r = study(path, args.batches, args.batch_size, **{k: getattr(args, k) for k in own})
        r["checkpoint"] = str(path) if args.quick else rel(path)
        r["command"], r["machine"], r["code"] = command_line(), here, git_state()
        r["batches"], r["batch_size"] = args.batches, args.batch_size
        studied[r["checkpoint"]] = r
        log(describe(r))
    return args, out, list(studied.values()), tmp


def write_study(
    name: str, args: argparse.Namespace, out: Path, results: List[Dict[str, Any]], text: str, tmp, **extra: Any
) -> None:
    """Write a checkpoint study's JSON atomically, print its table, remove its temporary folder."""
    old = getattr(args, "rendered_from", None) or {}
    record = {
        "experiment": name,
        "quick": args.quick,
        "command": old.get("command") or command_line(),
        "machine": old.get("machine") or machine(),
        **extra,
        "results": results,
        "table": text,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(text)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    args, out, studied, tmp = study_checkpoints(
        NAME,
        __doc__,
        study,
        quick_checkpoint,
        lambda r: (
            f"seed {r['seed']} epoch {r['epoch']}: {r['cells']} cells; derived {r['derived_by_probability']['benchmark']:.2f}, "
            f"best by supernet accuracy {r['best_by_supernet_acc']['benchmark']:.2f}, by loss "
            f"{r['best_by_supernet_loss']['benchmark']:.2f}, best candidate {r['best_in_candidates']:.2f}"
        ),
        checkpoints_help="search checkpoints (a pruned nb201 search, two ops per edge)",
        batches=8,
        batch_size=256,
    )
    results = sorted(studied, key=lambda r: (r["seed"], r["epoch"], r["checkpoint"]))
    text = table(
        [
            "seed",
            "epoch",
            "cells",
            "tau(acc)",
            "tau(-loss)",
            "tau(log p)",
            "derived %",
            "best by acc %",
            "best by loss %",
            "best candidate %",
        ],
        [
            [
                r["seed"],
                r["epoch"],
                r["cells"],
                f"{r['tau_acc']:.2f}",
                f"{r['tau_neg_loss']:.2f}",
                f"{r['tau_log_prob']:.2f}",
                f"{r['derived_by_probability']['benchmark']:.2f}",
                f"{r['best_by_supernet_acc']['benchmark']:.2f}",
                f"{r['best_by_supernet_loss']['benchmark']:.2f}",
                f"{r['best_in_candidates']:.2f}",
            ]
            for r in results
        ],
    )
    write_study(NAME, args, out, results, text, tmp, batches=args.batches, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
