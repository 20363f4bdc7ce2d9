"""The command line: ``python search.py [inspect|retrain] ...``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .benchmarks import cell_report, format_cell_report, is_benchmark_cell, load_benchmark
from .config import load_config
from .errors import UserError
from .genotype import Genotype, darts_edges, disconnected_warning, nb201_edges

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
COMMANDS = ("search", "inspect", "retrain", "lookup")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"run.device={name} but no CUDA GPU is visible; set run.device=cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"run.device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def set_cpu_threads(threads: Optional[int]) -> None:
    """Apply ``run.threads`` (``None`` keeps torch's default). On cores shared with other
    jobs, fewer threads than cores can be much faster."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"run.threads must be >= 1 (or null for torch's default), got {threads}")
    torch.set_num_threads(threads)


def default_run_dir(kind: str, config_path: Optional[str]) -> Path:
    stem = Path(config_path).stem if config_path else "default"
    return Path("runs") / f"{kind}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: configs/default.yaml)")
    p.add_argument("--out", help="run directory to create (default: runs/<kind>-<config>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set search.epochs=5 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the stopped run in RUN_DIR")
    p.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="stop this invocation after EPOCHS epochs (checkpointed; continue with --resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search.py", description="Differentiable architecture search with Gumbel-softmax sampling.",
        epilog="Commands: (none) or 'search' runs a search; 'inspect RUN_DIR' shows what a search chose; "
               "'retrain RUN_DIR | --genotype G' trains the discrete network; "
               "'lookup ARCH' gives a cell's NAS-Bench-201 accuracy.")
    sub = parser.add_subparsers(dest="command")
    _add_run_args(sub.add_parser("search", help="run an architecture search"))
    p = sub.add_parser("inspect", help="show the ops a search chose")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dot", metavar="FILE", help="write a Graphviz DOT drawing of the cell(s)")
    p.add_argument("--benchmark", metavar="PATH",
                   help="official NATS-Bench topology directory (or CSV) for every dataset's figures")
    p = sub.add_parser("lookup", help="look cells up in NAS-Bench-201",
                       description="Look cells up in NAS-Bench-201. Each ARCH is an official arch string, an index "
                                   "0..15624, a genotype JSON file or a search run directory.")
    p.add_argument("archs", nargs="+", metavar="ARCH")
    p.add_argument("--benchmark", metavar="PATH",
                   help="official NATS-Bench topology directory (or CSV) for every dataset's figures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("retrain", help="train the discrete network of a searched or given architecture")
    p.add_argument("run_dir", nargs="?", help="a finished (or running) search run directory")
    p.add_argument("--genotype", metavar="FILE_OR_STRING",
                   help="architecture to train: NB201 string, DARTS Genotype(...) string, or a genotype JSON file")
    _add_run_args(p)
    return parser


def _summary(result) -> str:
    geno: Genotype = result.genotype
    lines = [f"derived architecture: {geno}", ""]
    ops = geno.ops or []
    for cell, edges in geno.cells().items():
        probs = (geno.probs or {}).get(cell)
        pairs = nb201_edges() if geno.space == "nb201" else darts_edges()
        index = {pair: e for e, pair in enumerate(pairs)}
        lines.append(f"{cell} cell: edge, chosen op, probability")
        for (op, src), dst in zip(edges, geno.edge_targets(cell)):
            p = probs[index[(dst, src)]][ops.index(op)] if probs and op in ops else float("nan")
            lines.append(f"  {dst}<-{src}  {op:<14} {p:.3f}")
    warning = disconnected_warning(geno)  # the network would give a constant output
    if warning:
        lines += ["", warning]
    if is_benchmark_cell(geno):
        lines += [""] + format_cell_report(cell_report(geno))
    run_dir = result.run_dir
    lines += ["", f"outputs in {run_dir}/: config.yaml, metrics.jsonl, arch_probs.jsonl, genotype.json, checkpoint.pt",
              f"inspect with: python search.py inspect {run_dir}"]
    if not result.finished:
        lines.append(f"stopped after epoch {result.epochs_done}; continue with: python search.py --resume {run_dir}")
    return "\n".join(lines)


def _config_for(args, kind: str):
    """The config and run directory for a search or retrain invocation."""
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise UserError("give either --out (a new run) or --resume (an existing run), not both")
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise UserError(f"{run_dir} holds no run to resume (no config.yaml); check the path")
        return load_config(args.config or saved, args.overrides), run_dir
    config_path = args.config or str(DEFAULT_CONFIG)
    cfg = load_config(config_path, args.overrides)
    return cfg, Path(args.out) if args.out else default_run_dir(kind, args.config)


def cmd_search(args) -> int:
    from .search import run_search

    cfg, run_dir = _config_for(args, "search")
    device = resolve_device(cfg.run.device)
    set_cpu_threads(cfg.run.threads)
    print(f"search: {cfg.supernet.space} space, {cfg.supernet.mode} mode, {cfg.data.name} data, "
          f"{cfg.search.epochs} epochs on {device}; writing {run_dir}", flush=True)
    try:
        result = run_search(cfg, run_dir, device, resume=bool(args.resume), stop_after=args.stop_after,
                            progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last checkpoint in {run_dir} is intact; continue with "
              f"python search.py --resume {run_dir}", file=sys.stderr)
        return 130
    print(_summary(result))
    return 0


def cmd_inspect(args) -> int:
    from .inspect import format_text, load_report, report_json, to_dot
    from .io import atomic_write_text

    bench = load_benchmark(args.benchmark) if args.benchmark else None
    report = load_report(Path(args.run_dir), bench)
    if args.dot:
        atomic_write_text(args.dot, to_dot(Genotype.from_dict(report["genotype_record"])))
    print(report_json(report) if args.json else format_text(report))
    if args.dot and not args.json:
        print(f"\nwrote {args.dot}")
    return 0


def _lookup_target(text: str):
    """An index, an arch string, a genotype JSON file or a run directory -> what to look up."""
    if text.strip().isdigit():
        return int(text)
    if text.lstrip().startswith(("|", "Genotype(", "{")):
        return Genotype.parse(text)
    path = Path(text)
    if path.is_dir():
        geno_path = path / "genotype.json"
        if not geno_path.exists():
            raise UserError(f"{path} holds no genotype.json; give a search run directory after its first epoch")
        return Genotype.from_json(geno_path.read_text())
    if path.is_file():
        return Genotype.parse(path.read_text())
    raise UserError(f"{text!r} is neither a file, a run directory, an index nor an arch string; give e.g. "
                    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def cmd_lookup(args) -> int:
    import json

    bench = load_benchmark(args.benchmark) if args.benchmark else None
    reports = [{"query": text, **cell_report(_lookup_target(text), bench, epochs=(200, 12))} for text in args.archs]
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
        return 0
    for k, r in enumerate(reports):
        if k:
            print()
        print(r["arch"])
        print("\n".join(format_cell_report(r)))
    return 0


def cmd_retrain(args) -> int:
    from .retrain import run_retrain_cli

    return run_retrain_cli(args)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command means a search, so `python search.py --set ...` works.
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "search")
    args = build_parser().parse_args(argv)
    handler = {"search": cmd_search, "inspect": cmd_inspect, "retrain": cmd_retrain,
               "lookup": cmd_lookup}[args.command]
    try:
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint is intact; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
