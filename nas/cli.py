"""The command line: ``python search.py [inspect|retrain|lookup|measure-latency] ...`` (also installed as ``gumbel-nas``).

argparse lives here alone; the library below never imports this module. Each
command turns its arguments into explicit values (a config, a run directory, a
device) and calls the library.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .architecture import ChoiceArchitecture, load_architecture
from .benchmarks import cell_report, format_cell_report, is_benchmark_cell, load_benchmark
from .config import Config, load_config, validate
from .distributed import SINGLE, World, environment_world, init_from_environment, local_device, shutdown
from .errors import AllRanksError, UserError, WriteError
from .genotype import Genotype, disconnected_warning
from .io import read_record, read_text
from .runtime import (
    check_device_options,
    default_config,
    default_run_dir,
    find_config,
    program,
    resolve_device,
    set_cpu_threads,
    torchrun_program,
)

COMMANDS = ("search", "inspect", "retrain", "lookup", "measure-latency")


@dataclass
class Invocation:
    """Where a running command writes, so that Ctrl-C can say how to continue; the processes it runs in."""

    run_dir: Optional[Path] = None
    resume_command: str = ""
    world: World = SINGLE


def _start(cfg: Config, run_dir: Path, invocation: Invocation, resume_command: str) -> Tuple[torch.device, Path]:
    """Pick the device, join torchrun's processes (if launched by it), set the CPU threads.

    Under torchrun each rank takes its own GPU (``cuda:LOCAL_RANK``) and rank 0's run directory
    (a default name holds the time, which could differ by a second between ranks).
    """
    validate(cfg)  # before joining the processes: run.dist_timeout is one of the checks
    device = resolve_device(cfg.run.device)
    world = init_from_environment(device, cfg.run.dist_timeout)
    invocation.world = world  # from here on, main() leaves the process group on the way out
    device = local_device(device, world)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    set_cpu_threads(cfg.run.threads)
    run_dir = Path(world.broadcast_object(str(run_dir)))
    invocation.run_dir = run_dir
    if world.distributed:
        launcher = torchrun_program(world.world_size, int(os.environ.get("LOCAL_WORLD_SIZE", world.world_size)))
    else:
        launcher = program()
    invocation.resume_command = f"{launcher} {resume_command.format(run_dir=run_dir)}"
    return device, run_dir


def _say(invocation: Invocation, *args, **kwargs) -> None:
    """print, on rank 0 only."""
    if invocation.world.is_main:
        print(*args, **kwargs)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of epochs >= 1, got {text!r}")
    return value


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="YAML config: a path, or a shipped config by name, e.g. nb201_cifar10_cpu (default: configs/default.yaml)",
    )
    p.add_argument("--out", help="run directory to create (default: runs/<kind>-<config>-<time>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set search.epochs=5 (repeatable)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the stopped run in RUN_DIR")
    p.add_argument(
        "--stop-after",
        type=_at_least_one,
        metavar="EPOCHS",
        help="stop this invocation after EPOCHS epochs (checkpointed; continue with --resume)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program(),
        description="Differentiable architecture search with Gumbel-softmax sampling.",
        epilog="Commands: (none) or 'search' runs a search (its options: search --help); "
        "'inspect RUN_DIR' shows what a search chose; "
        "'retrain RUN_DIR | --genotype G' trains the discrete network; "
        "'lookup ARCH' gives a cell's NAS-Bench-201 accuracy; "
        "'measure-latency --out LUT.json' times every candidate op for search.cost.metric=latency.",
    )
    sub = parser.add_subparsers(dest="command")
    _add_run_args(sub.add_parser("search", help="run an architecture search"))
    p = sub.add_parser("inspect", help="show the ops a search chose")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dot", metavar="FILE", help="write a Graphviz DOT drawing of the cell(s)")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a figure: op probabilities per edge over the epochs, losses, accuracies, entropy, tau, "
        "the derived cell (needs matplotlib: the [plot] extra)",
    )
    p.add_argument(
        "--benchmark",
        metavar="PATH",
        help="official NATS-Bench topology directory (or CSV) for every dataset's figures",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="COST",
        help="also derive the most probable cell whose cost fits COST (the network's multiply-adds, or "
        "parameters with --metric params) from the run's last probabilities",
    )
    p.add_argument(
        "--metric",
        choices=("flops", "params"),
        help="what --budget counts (default: the run's own search.cost.metric when it is one of these, else flops)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help="with --budget: the cell must also cost at least (1 - T) of it, as search.cost.tolerance derives",
    )
    p.add_argument(
        "--form",
        choices=("budget", "target"),
        help="with --tolerance: budget, a window up to the budget; target, up to (1 + T) of it (default: budget)",
    )
    p = sub.add_parser(
        "lookup",
        help="look cells up in NAS-Bench-201",
        description="Look cells up in NAS-Bench-201. Each ARCH is an official arch string, an index "
        "0..15624, a genotype JSON file or a search run directory.",
    )
    p.add_argument("archs", nargs="+", metavar="ARCH")
    p.add_argument(
        "--benchmark",
        metavar="PATH",
        help="official NATS-Bench topology directory (or CSV) for every dataset's figures",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser(
        "measure-latency",
        help="time every candidate of every choice on this machine (for search.cost.metric=latency)",
        description="Time every candidate op of the config's supernet at its input shape and the search's "
        "batch size (eval mode, median of repeats), and write the latency table that search.cost.table reads.",
    )
    p.add_argument("--config", help="YAML config: a path or a shipped config's name (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's run.device)")
    p.add_argument("--out", required=True, help="the table to write (JSON)")
    p.add_argument("--batch-size", type=int, help="default: search.batch_size, which a search checks the table against")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per candidate; the median is kept (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p = sub.add_parser("retrain", help="train the discrete network of a searched or given architecture")
    p.add_argument("run_dir", nargs="?", help="a finished (or running) search run directory")
    p.add_argument(
        "--genotype",
        metavar="FILE_OR_STRING",
        help="architecture to train: NB201 string, DARTS Genotype(...) string, a genotype JSON file, or a "
        "NAS-Bench-201 cell index; "
        "with --set supernet.model=..., that model's architecture JSON file (net.export(path), architecture.json)",
    )
    _add_run_args(p)
    return parser


def _summary(result, resume_command: str) -> str:
    from .spaces import get_space

    geno: Genotype = result.genotype
    if isinstance(geno, ChoiceArchitecture):  # a custom model (supernet.model)
        return _choice_summary(result, resume_command)
    lines = [f"derived architecture: {geno}", ""]
    ops = geno.ops or []
    for cell, edges in geno.cells().items():
        probs = (geno.probs or {}).get(cell)
        index = {pair: e for e, pair in enumerate(get_space(geno.space).edges())}
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
    extra = [name for name in ("screen.json", "plot.png", "tensorboard/") if (run_dir / name).exists()]
    lines += [
        "",
        f"outputs in {run_dir}/: config.yaml, metrics.jsonl, arch_probs.jsonl, genotype.json, checkpoint.pt"
        + "".join(f", {name}" for name in extra),
        f"inspect with: {program()} inspect {run_dir}",
    ]
    if not result.finished:
        lines.append(f"stopped after epoch {result.epochs_done}; continue with: {resume_command}")
    return "\n".join(lines)


def _choice_summary(result, resume_command: str) -> str:
    """The summary of a search of a custom model: each label's chosen candidate and its probability."""
    arch: ChoiceArchitecture = result.genotype
    lines = [f"derived architecture: {arch}", "", "label, chosen candidate, probability"]
    for label, chosen in arch.choices.items():
        probs = (arch.probs or {}).get(label, {})
        for name in chosen if isinstance(chosen, list) else [chosen]:
            lines.append(f"  {label:<24} {name:<14} {probs.get(name, float('nan')):.3f}")
    run_dir = result.run_dir
    lines += [
        "",
        f"outputs in {run_dir}/: config.yaml, metrics.jsonl, arch_probs.jsonl, architecture.json, checkpoint.pt",
        f"inspect with: {program()} inspect {run_dir}",
        f"retrain with: {program()} retrain {run_dir}",
    ]
    if not result.finished:
        lines.append(f"stopped after epoch {result.epochs_done}; continue with: {resume_command}")
    return "\n".join(lines)


def _load(config: Optional[str], overrides: List[str], fallback: Optional[Path] = None) -> Config:
    """``--config`` (a path, or a shipped config's name) with ``--set`` overrides on top."""
    notes: List[str] = []
    cfg = load_config(find_config(config) if config else fallback or default_config(), overrides, notes)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone prints
        for note in notes:
            print(note)
    return cfg


def _run_config(path: Path) -> Path:
    """A run's ``config.yaml``, refused when it holds no config (an emptied file would read as
    the defaults: a CIFAR search resumed or retrained on the built-in data)."""
    from .config import load_yaml

    if not load_yaml(path):
        raise UserError(f"{path} holds no config; the run directory is damaged")
    return path


def _config_for(args, kind: str) -> Tuple[Config, Path]:
    """The config and run directory for a search invocation."""
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise UserError("give either --out (a new run) or --resume (an existing run), not both")
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise UserError(f"{run_dir} holds no run to resume (no config.yaml); check the path")
        return _load(args.config, args.overrides, _run_config(saved)), run_dir
    cfg = _load(args.config, args.overrides)
    return cfg, Path(args.out) if args.out else default_run_dir(kind, args.config)


def cmd_search(args, invocation: Invocation) -> int:
    from .search import run_search

    cfg, run_dir = _config_for(args, "search")
    device, run_dir = _start(cfg, run_dir, invocation, "--resume {run_dir}")
    world = invocation.world
    where = f"{world.world_size} processes ({device.type})" if world.distributed else str(device)
    _say(
        invocation,
        f"search: {f'model {cfg.supernet.model}' if cfg.supernet.model else f'{cfg.supernet.space} space'}, "
        f"{cfg.supernet.mode} mode, {cfg.data.name} data, "
        f"{_epochs_text(cfg)} on {where}; run folder {run_dir}",
        flush=True,
    )
    result = run_search(
        cfg, run_dir, device, resume=bool(args.resume), stop_after=args.stop_after, progress=not args.quiet, world=world
    )
    _say(invocation, _summary(result, invocation.resume_command))
    return 0


def _epochs_text(cfg) -> str:
    from .schedule import search_epochs

    s = cfg.search
    if cfg.supernet.model is not None and s.prune != "off" and s.stop_when_decided:
        # When it decides depends on the model's widest choice, known once the model is built.
        return f"up to {s.epochs} epochs (it ends once every label is decided; search.stop_when_decided)"
    epochs = search_epochs(cfg)
    if epochs == cfg.search.epochs:
        return f"{epochs} epochs"
    return f"{epochs} of {cfg.search.epochs} epochs (decided at the last pruning event; search.stop_when_decided)"


def cmd_inspect(args, invocation: Invocation) -> int:
    from .io import atomic_write_text
    from .report import format_text, load_report, report_json, to_dot, within_budget_cells

    for flag, value in (("--tolerance", args.tolerance), ("--metric", args.metric), ("--form", args.form)):
        if args.budget is None and value is not None:
            raise UserError(f"{flag} applies to --budget's derivation; give --budget too")
    if args.form is not None and args.tolerance is None:
        raise UserError("--form chooses the side of --tolerance's window; give --tolerance too")
    form = args.form or "budget"
    bench = load_benchmark(args.benchmark) if args.benchmark else None
    report = load_report(Path(args.run_dir), bench)
    searched = (report.get("cost") or {}).get("metric")  # a run with a cost term: its metric is --budget's default
    if args.budget is not None and args.metric is None and searched == "latency":
        raise UserError(
            "--budget derives by flops or params; this run searched under latency, whose measured table inspect "
            "does not read: give --metric flops or --metric params"
        )
    metric = args.metric or (searched if searched in ("flops", "params") else "flops")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG image; give a path ending in .png, not {args.plot}")
    if args.dot and report.get("kind") == "choices":
        raise UserError("--dot draws the cells of the built-in spaces; a custom model (supernet.model) has none")
    if bench is not None and report.get("benchmark") is None:
        space = report.get("model") or f"the {report.get('space')} space"
        raise UserError(
            f"--benchmark looks up NAS-Bench-201 cells; this run searched {space}, whose result is not one: "
            "drop --benchmark"
        )
    for flag, path, example in (("--plot", args.plot, "run.png"), ("--dot", args.dot, "cell.dot")):
        if path and Path(path).is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file path in it, e.g. {Path(path) / example}")
        if path and not Path(path).parent.is_dir():
            raise UserError(
                f"{flag} {path}: the folder {Path(path).parent} does not exist; create its folder first, or give "
                "a path in an existing folder"
            )
    within = None  # every check before the first file is written
    if args.budget is not None:
        within = within_budget_cells(Path(args.run_dir), [args.budget], metric, args.tolerance, form, bench)[0]
    if args.plot:
        from .plot import write_plot

        write_plot(Path(args.run_dir), Path(args.plot))
    if args.dot:
        atomic_write_text(args.dot, to_dot(Genotype.from_dict(report["genotype_record"])))
    if args.json:
        print(report_json({**report, **({"within_budget": within} if within else {})}))
    else:
        print(format_text(report))
        if within:
            floor, cap = within["window"]
            where = f"{args.budget:g}" if floor is None else f"[{floor:g}, {cap:g}]"
            if within["fits"]:
                print(f"\nmost probable cell within {metric} {where}: {within['arch']}")
            else:  # on a pruned run only the ops left are candidates
                print(
                    f"\nno cell the search can still derive has {metric} within {where}; the cheapest, on every "
                    f"edge its cheapest op left: {within['arch']}"
                )
            print(f"  {metric} {within['cost']:.6g} (the per-edge argmax: {within['argmax_cost']:.6g})")
            if within["fits"] and floor is not None and within["cost"] < floor:
                print("  (no cell costs within the window: the most probable one up to it)")
            if within.get("benchmark"):
                print("\n".join("  " + line for line in format_cell_report(within["benchmark"])))
    if not args.json:
        for path in (args.plot, args.dot):
            if path:
                print(f"\nwrote {path}")
    return 0


def _is_architecture_text(text: str) -> bool:
    """Genotype JSON or any registered space's format, rather than a file name."""
    from .spaces import SPACES

    text = text.strip()
    return text.startswith("{") or any(space.recognizes(text) for space in SPACES.values())


_NOT_A_CELL = (
    "a custom model's architecture is not a NAS-Bench-201 cell: the benchmark holds only cells of the nb201 "
    "space; search that space without supernet.model to look the result up"
)


def _is_choices(content: str) -> bool:
    """A custom model's architecture (``architecture.json``'s form, or a plain ``{label: name}``
    mapping): JSON of a mapping without a genotype's ``space``."""
    try:
        d = json.loads(content)
    except ValueError:
        return False
    return isinstance(d, dict) and "space" not in d


def _lookup_target(text: str):
    """An index, an arch string, a genotype JSON file or a run directory -> what to look up."""
    from .model_supernet import ARCH_FILE

    if re.fullmatch(r"-?[0-9]+", text.strip()):  # a negative one is refused as out of range
        return int(text)
    if _is_architecture_text(text):
        if _is_choices(text):
            raise UserError(_NOT_A_CELL)
        return Genotype.parse(text)
    path = Path(text)
    if path.is_dir():
        geno_path = path / "genotype.json"
        if (path / ARCH_FILE).exists() and not geno_path.exists():
            raise UserError(f"{path} holds {ARCH_FILE}: {_NOT_A_CELL}")
        if not geno_path.exists():
            raise UserError(f"{path} holds no genotype.json; give a search run directory after its first epoch")
        return read_record(geno_path, "genotype file", Genotype.from_json)
    if path.is_file():
        content = read_text(path, "architecture file")
        if _is_choices(content):
            raise UserError(f"{path}: {_NOT_A_CELL}")
        return Genotype.parse(content)
    raise UserError(
        f"{text!r} is neither a file, a run directory, an index nor an arch string; give e.g. "
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )


def cmd_lookup(args, invocation: Invocation) -> int:
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


def read_genotype(text_or_path: str) -> Genotype:
    """``--genotype``: an architecture string (NB201, DARTS or JSON), a file holding one, or an
    NAS-Bench-201 cell index (as ``lookup`` takes them; the packaged table names the cell)."""
    if re.fullmatch(r"-?[0-9]+", text_or_path.strip()) and not Path(text_or_path).exists():
        return load_benchmark().genotype(int(text_or_path))
    path = Path(text_or_path)
    looks_like_file = not _is_architecture_text(text_or_path)
    if looks_like_file:
        if not path.exists():
            raise UserError(
                f"--genotype {text_or_path!r} is neither an architecture string nor an existing file; "
                "give an NB201 string (|op~0|+...), a DARTS Genotype(...) string, a genotype.json or a "
                "NAS-Bench-201 cell index"
            )
        if path.is_dir():
            raise UserError(
                f"--genotype {path} is a folder; to retrain the cell a search derived there, give the folder "
                f"itself: retrain {path}"
            )
        try:
            text_or_path = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --genotype file {path}: {exc}") from None
        try:
            record = json.loads(text_or_path)
        except ValueError:
            record = None
        if isinstance(record, dict) and "space" not in record:  # {label: name}: a custom model's choices
            raise UserError(
                f"{path} holds a custom model's choices (architecture.json, or net.export()), not a cell of a "
                "built-in space; retrain it with --set supernet.model=package.module:function, the model it chose in"
            )
        try:
            return Genotype.parse(text_or_path)
        except UserError as exc:
            raise UserError(f"--genotype file {path}: {exc}") from None
    return Genotype.parse(text_or_path)


def _retrain_setup(args) -> Tuple[Config, "Genotype | ChoiceArchitecture", Path]:
    """The config, architecture and run directory of ``retrain RUN_DIR | --genotype G``."""
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out) != run_dir:
            raise UserError("give either --out (a new run) or --resume (an existing run), not both")
        if args.run_dir:
            raise UserError(
                f"give either a search's folder ({args.run_dir}: a new retrain) or --resume (a retrain's folder), "
                "not both"
            )
        custom = (run_dir / "architecture.json").exists()  # a custom model's retrain
        arch_file = run_dir / ("architecture.json" if custom else "genotype.json")
        if not (run_dir / "config.yaml").exists() or not arch_file.exists():
            raise UserError(f"{run_dir} holds no retrain run to resume (no config.yaml/genotype.json)")
        cfg = _load(args.config, args.overrides, _run_config(run_dir / "config.yaml"))
        if custom:
            arch = ChoiceArchitecture(load_architecture(arch_file))
            if args.genotype and load_architecture(args.genotype) != arch.choices:
                raise UserError(f"{run_dir} trains {arch}; resume it without a different --genotype")
            return cfg, arch, run_dir
        geno = read_record(arch_file, "genotype file", Genotype.from_json)
        if args.genotype and not read_genotype(args.genotype).same_architecture(geno):
            raise UserError(f"{run_dir} trains {geno}; resume it without a different --genotype")
        return cfg, geno, run_dir
    if bool(args.run_dir) == bool(args.genotype):
        raise UserError("give a search run directory or --genotype, exactly one of them")
    base = None
    if args.run_dir:
        search_dir = Path(args.run_dir)
        if (search_dir / "architecture.json").exists():  # a custom model (supernet.model): its function builds it
            arch = ChoiceArchitecture(load_architecture(search_dir / "architecture.json"))
            base = _run_config(search_dir / "config.yaml") if (search_dir / "config.yaml").exists() else None
            cfg = _load(args.config, args.overrides, base)
            return cfg, arch, Path(args.out) if args.out else default_run_dir("retrain", args.config)
        if not search_dir.is_dir():
            what = "is a file, not a folder" if search_dir.exists() else "does not exist"
            raise UserError(f"{search_dir} {what}; give a search's run directory (its --out) or --genotype CELL")
        if not (search_dir / "genotype.json").exists():
            raise UserError(
                f"{search_dir} holds no genotype.json; give a search run directory that finished at least one epoch"
            )
        geno = read_record(search_dir / "genotype.json", "genotype file", Genotype.from_json)
        if (search_dir / "config.yaml").exists():
            base = _run_config(search_dir / "config.yaml")
    else:
        cfg = _load(args.config, args.overrides)
        # With supernet.model, --genotype is that model's architecture file ({label: name}: net.export(path)).
        custom = cfg.supernet.model is not None
        geno = ChoiceArchitecture(load_architecture(args.genotype)) if custom else read_genotype(args.genotype)
        return cfg, geno, Path(args.out) if args.out else default_run_dir("retrain", args.config)
    cfg = _load(args.config, args.overrides, base)
    return cfg, geno, Path(args.out) if args.out else default_run_dir("retrain", args.config)


def cmd_retrain(args, invocation: Invocation) -> int:
    from .nb201 import nb201_edges
    from .retrain import protocol, run_retrain, section

    cfg, geno, run_dir = _retrain_setup(args)
    if isinstance(geno, Genotype) and geno.space == "nb201" and len(geno.normal) != len(nb201_edges()):
        raise UserError(
            f"{geno} has {len(geno.normal)} edge(s); an NB201 cell has {len(nb201_edges())}: "
            "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
        )
    device, run_dir = _start(cfg, run_dir, invocation, "retrain --resume {run_dir}")
    world = invocation.world
    where = f"{world.world_size} processes ({device.type})" if world.distributed else str(device)
    what = f"model {cfg.supernet.model} {geno}" if isinstance(geno, ChoiceArchitecture) else str(geno)
    subset = cfg.data.train_subset
    fix = "" if args.resume else "; --set data.train_subset=null trains on all"  # a resume keeps its data
    data = cfg.data.name + (f" ({subset} training images by data.train_subset{fix})" if subset is not None else "")
    _say(
        invocation,
        f"retrain: {what} on {data}, {protocol(cfg, section(geno)).epochs} epochs "
        f"(retrain.{section(geno)}) on {where}; run folder {run_dir}",
        flush=True,
    )
    result = run_retrain(
        cfg,
        geno,
        run_dir,
        device,
        resume=bool(args.resume),
        stop_after=args.stop_after,
        progress=not args.quiet,
        world=world,
    )
    _say(
        invocation,
        f"architecture: {geno}\n"
        f"test accuracy {result.test_acc:.2f}%  (loss {result.test_loss:.4f}) after {result.epochs_done} epochs\n"
        f"parameters {result.params:,}  multiply-adds {result.macs:,} ({result.macs / 1e6:.2f} M)\n"
        f"outputs in {run_dir}/" + ("" if result.finished else f"; continue with: {invocation.resume_command}"),
    )
    return 0


def cmd_measure_latency(args, invocation: Invocation) -> int:
    from .cost import measure_latency, save_latency_table
    from .search import search_supernet

    cfg = _load(args.config, args.overrides)
    c = cfg.search.cost
    if c.metric == "latency" and c.table is None:  # a config ready for the table this command writes
        c.table = str(args.out)
    validate(cfg)
    try:
        device = resolve_device(args.device or cfg.run.device)
        check_device_options(device, cfg.run.bf16)
    except UserError as exc:
        if not args.device:
            raise
        text = str(exc).replace("set run.bf16=", "--set run.bf16=")  # say both fixes as this command's options
        raise UserError(text.replace("run.device=", "--device ").replace("run.device", "--device")) from None
    batch = args.batch_size if args.batch_size is not None else cfg.search.batch_size
    for option, value, least in (
        ("--batch-size", batch, 1),
        ("--repeats", args.repeats, 1),
        ("--warmup", args.warmup, 0),
    ):
        if value < least:
            raise UserError(f"{option} must be >= {least}, got {value}")
    if not Path(args.out).resolve().parent.is_dir():  # before the minutes of timing, not after
        raise UserError(f"--out {args.out}: its folder does not exist; create it first or give another path")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file path, e.g. {Path(args.out) / 'lut.json'}")
    set_cpu_threads(cfg.run.threads)
    input_size, num_classes = cfg.data.shape()
    net = search_supernet(cfg, num_classes).to(device)
    if cfg.run.channels_last:  # as the search runs it
        net.to(memory_format=torch.channels_last)
    what = f"model {cfg.supernet.model}" if cfg.supernet.model else f"{cfg.supernet.space} space"
    how = "".join(f", {w}" for w, on in (("bf16", cfg.run.bf16), ("channels_last", cfg.run.channels_last)) if on)
    print(f"measure-latency: {what}, batch {batch} at {list(input_size)} on {device}{how}", flush=True)
    table = measure_latency(
        net,
        input_size,
        batch,
        repeats=args.repeats,
        warmup=args.warmup,
        log=print,
        bf16=cfg.run.bf16,
        channels_last=cfg.run.channels_last,
    )
    save_latency_table(table, args.out)
    print(
        f"whole network {table['whole_network']:.3f} ms, fixed part {table['fixed']:.3f} ms; wrote {args.out}\n"
        f"search with it: --set search.cost.metric=latency --set search.cost.table={args.out} "
        f"--set search.cost.weight=..."
    )
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns the exit status (2 for a user mistake, 130 for Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command means a search, so `python search.py --set ...` works; a search takes no positional
    # argument, so a first word that is not an option is a command, maybe misspelt.
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        near = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        print(f"error: unknown command {argv[0]!r}; {hint}the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "search")
    args = build_parser().parse_args(argv)
    handler = {
        "search": cmd_search,
        "inspect": cmd_inspect,
        "retrain": cmd_retrain,
        "lookup": cmd_lookup,
        "measure-latency": cmd_measure_latency,
    }[args.command]
    invocation = Invocation()
    completed = False
    try:
        status = handler(args, invocation)
        sys.stdout.flush()  # a refused write of the output is this command's, not the interpreter's exit
        completed = status == 0
        return status
    except UserError as exc:
        # Under torchrun: before the processes join, every rank meets the same error (the same command
        # line), and an AllRanksError is one rank 0 reports too; any other may be one rank's own.
        world = invocation.world if invocation.world.distributed else environment_world()
        if not world.is_main and (isinstance(exc, AllRanksError) or not invocation.world.distributed):
            return 2
        message = str(exc) + (_resume_advice(invocation) if isinstance(exc, WriteError) else "")
        print(f"{'' if world.is_main else f'[rank {world.rank}] '}error: {message}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:  # a file read without nas.io.read_text's name for it
        print(f"error: a file this command reads is not UTF-8 text ({exc.reason} at byte {exc.start})", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as a shell tool does
        _drop_stdout()
        return 141
    except OSError as exc:
        if exc.errno not in REFUSED_WRITES:
            raise
        # A write no helper of nas.io made: the printed output (a full disk under `> file`), a library's.
        where = exc.filename or "the output"
        if exc.filename is None:
            _drop_stdout()
        print(f"error: {WriteError(where, exc)}{_resume_advice(invocation)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the one place Ctrl-C is turned into advice
        if not invocation.world.is_main:
            return 130
        run_dir = invocation.run_dir
        if run_dir is None:
            print("\ninterrupted", file=sys.stderr)
        elif (run_dir / "checkpoint.pt").exists():
            print(
                f"\ninterrupted: the last checkpoint in {run_dir} is intact; continue with {invocation.resume_command}",
                file=sys.stderr,
            )
        else:
            print(
                "\ninterrupted before the first epoch ended: nothing was kept; start again with the same command",
                file=sys.stderr,
            )
        return 130
    finally:
        shutdown(invocation.world, completed=completed)


REFUSED_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _resume_advice(invocation: Invocation) -> str:
    """What a refused write of a run leaves to resume, for its error line."""
    run_dir = invocation.run_dir
    if run_dir is None:
        return ""
    if (run_dir / "checkpoint.pt").exists():
        return (
            f". The last checkpoint in {run_dir} and the metrics lines before it are intact: once the write "
            f"can succeed, --resume continues the run: {invocation.resume_command}"
        )
    if run_dir.exists():
        return ". No epoch was checkpointed, so --resume cannot continue; nothing of this run was kept: start again once the write can succeed"
    return ". Nothing was written, so there is nothing to --resume: start again once the write can succeed"


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's exit does not fail on the unwritten rest again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file behind sys.stdout (a test's capture)
        pass


def main_exit() -> None:
    """The ``gumbel-nas`` console script."""
    sys.exit(main())
