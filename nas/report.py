"""Read a search run directory and report what the search chose (``python search.py inspect``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from .architecture import ChoiceArchitecture
from .benchmarks import NB201Benchmark, cell_report, format_cell_report, is_benchmark_cell, load_benchmark
from .config import from_dict as config_from_dict
from .errors import UserError
from .genotype import Genotype, derive_argmax, disconnected_warning
from .io import load_checkpoint, read_jsonl, read_record, read_text
from .model_supernet import ARCH_FILE
from .schedule import search_epochs
from .screen import describe as describe_screen
from .screen import load_record as load_screen
from .spaces import get_space


def _numbers(values: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)


def read_probs_log(path: Path, space: Optional[str]) -> List[Dict[str, Any]]:
    """``arch_probs.jsonl``'s records (:func:`nas.io.read_jsonl`), each checked for the shape a run
    of ``space`` writes: ``ops`` (names) and ``probs`` (per cell type of the space, a row of numbers
    per edge, one per op); or, with ``space=None`` (a custom model's run), ``choices`` (per label, a
    number per candidate). A record of another shape is damage: one :class:`UserError`, not a
    traceback from whatever reads it."""
    records = read_jsonl(path)
    shape = None
    if space is not None:
        sp = get_space(space)
        shape = {cell: len(sp.edges()) for cell in sp.cell_types}
    for rec in records:
        if shape is not None:
            ops, probs = rec.get("ops"), rec.get("probs")
            ok = (
                isinstance(ops, list)
                and all(isinstance(o, str) for o in ops)
                and isinstance(probs, dict)
                and {c: len(rows) if isinstance(rows, list) else None for c, rows in probs.items()} == shape
                and all(
                    isinstance(r, list) and len(r) == len(ops) and _numbers(r) for rows in probs.values() for r in rows
                )
            )
            what = f"{space}'s op probabilities (ops, and probs with {shape} rows)"
        else:
            choices = rec.get("choices")
            ok = isinstance(choices, dict) and all(
                isinstance(c, dict) and _numbers(c.values()) for c in choices.values()
            )
            what = "a custom model's choice probabilities (choices)"
        if not ok:
            raise UserError(
                f"{path}: the record of epoch {rec['epoch']} is not a record of {what}; the log is damaged: "
                "restore it from a backup"
            )
    return records


def edge_names(space: str) -> List[str]:
    """``"to<-from"`` per edge of ``space``'s cells, in its edge order."""
    return get_space(space).edge_names()


def collapse_counts(geno: Genotype) -> Dict[str, Dict[str, int]]:
    """Per cell type, how many kept edges are skip, pool, none or parametric ops."""
    out = {}
    for cell, edges in geno.cells().items():
        ops = [op for op, _ in edges]
        skip = sum(op == "skip_connect" for op in ops)
        pool = sum("pool" in op for op in ops)
        none = sum(op == "none" for op in ops)
        out[cell] = {"skip": skip, "pool": pool, "none": none, "parametric": len(ops) - skip - pool - none}
    return out


def within_budget_cells(
    run_dir: Path,
    budgets: Sequence[float],
    metric: str = "flops",
    tolerance: Optional[float] = None,
    form: str = "budget",
    benchmark: Optional[NB201Benchmark] = None,
) -> List[Dict[str, Any]]:
    """Per budget, the most probable cell of a search (finished or running) whose cost fits it
    (:func:`nas.cost.within_budget` on the last logged probabilities, the run's derivation rule;
    with ``tolerance``, in :func:`nas.cost.budget_window`'s window for ``form``, as
    ``search.cost.tolerance`` derives), its cost, the per-edge argmax's cost and, for an NB201
    cell, its benchmark figures (every dataset of ``benchmark`` when given; ``inspect --budget``)."""
    import torch

    from .cost import budget_window, cost_table, derived_cost, underivable, within_budget
    from .spaces import build_supernet

    for b in budgets:
        if not (b > 0 and math.isfinite(b)):
            raise UserError(f"--budget must be a finite number > 0 (the network's {metric}), got {b:g}")
    if tolerance is not None and not 0 < tolerance < 1:
        raise UserError(
            f"--tolerance must be in (0, 1), the share of the budget a cell's cost may stray from it, got {tolerance:g}"
        )
    try:
        cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        sn = cfg.supernet
        if sn.model is not None or not get_space(sn.space).keeps_every_edge:
            raise UserError(
                f"--budget derives cells that keep one op per edge (nb201 and spaces like it); this run searched "
                f"{sn.model or sn.space}"
            )
        probs_log = read_probs_log(run_dir / "arch_probs.jsonl", sn.space)
    except OSError:
        raise UserError(f"{run_dir} is not a search run directory (no config.yaml or arch_probs.jsonl)") from None
    if not probs_log:
        raise UserError(
            f"{run_dir / 'arch_probs.jsonl'} holds no epoch yet; inspect it after the first epoch (or the file "
            "is damaged)"
        )
    size, classes = cfg.data.shape()
    net = build_supernet(
        sn.space, mode=sn.mode, C=sn.C, N=sn.N, num_classes=classes, ops=sn.ops, derive_none=sn.derive_none
    )
    table = cost_table(net, metric, size)
    last = probs_log[-1]
    probs = {cell: torch.tensor(rows, dtype=torch.float64) for cell, rows in last["probs"].items()}
    exclude = underivable(net)
    argmax = net.genotype(scores={c: p.masked_fill(p == 0, -1.0) for c, p in probs.items()})
    argmax_cost = derived_cost(net, table, argmax, size)
    out = []
    for b in budgets:
        cap, floor = budget_window(b, tolerance, form)
        geno = net.genotype(scores=within_budget(probs, table, cap, exclude=exclude, floor=floor))
        cell = {
            "budget": b,
            "metric": metric,
            "window": [floor, cap],
            "epoch": last["epoch"],
            "arch": str(geno),
            "cost": derived_cost(net, table, geno, size),
            "argmax_cost": argmax_cost,
        }
        cell["fits"] = cell["cost"] <= cap * (1 + 1e-12)
        if is_benchmark_cell(geno):
            cell["benchmark"] = cell_report(geno, benchmark, epochs=(200, 12))
        out.append(cell)
    return out


def cost_history(metrics: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A search with a cost term (``search.cost.weight > 0``): its metric, budget and, per epoch,
    the expected cost E and the derived network's cost; ``None`` for a search without one."""
    lines = [m for m in metrics if "expected_cost" in m]
    if not lines:
        return None
    return {
        "metric": lines[-1]["cost_metric"],
        "budget": lines[-1].get("cost_budget"),
        "reference": lines[-1].get("cost_reference"),
        "per_epoch": [
            {"epoch": m["epoch"], "expected": m["expected_cost"], "derived": m["derived_cost"]} for m in lines
        ],
    }


def format_cost_history(cost: Dict[str, Any]) -> List[str]:
    """:func:`cost_history` as text lines: ``epoch:E/derived``, in millions where the figures are large."""
    scale, unit = (1e6, " (millions)") if max(r["derived"] for r in cost["per_epoch"]) >= 1e6 else (1.0, "")
    budget = "" if cost["budget"] is None else f", budget {cost['budget'] / scale:.4g}"
    head = f"{cost['metric']} per epoch{unit}, expected / derived{budget}"
    body = "  ".join(f"{r['epoch']}:{r['expected'] / scale:.4g}/{r['derived'] / scale:.4g}" for r in cost["per_epoch"])
    return [head, body]


def load_report(run_dir: Path, benchmark: Optional[NB201Benchmark] = None) -> Dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-able dict.

    For an nb201 cell, ``benchmark`` holds its NAS-Bench-201 figures (the packaged CIFAR-10 table,
    plus every dataset of ``benchmark`` when given); ``None`` for other cells.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give the run directory a search wrote (--out)")
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise UserError(f"{run_dir} holds no config.yaml; it is not a search run directory")
    # A search appends arch_probs.jsonl before its first genotype.json (or architecture.json); a
    # retrain writes its architecture before its first epoch and never writes probabilities.
    written = ("metrics.jsonl", "genotype.json", ARCH_FILE)
    if any((run_dir / name).exists() for name in written) and not (run_dir / "arch_probs.jsonl").exists():
        ckpt = run_dir / "checkpoint.pt"
        if ckpt.exists() and load_checkpoint(ckpt).get("kind") == "search":
            raise UserError(
                f"{run_dir} is a search run whose arch_probs.jsonl is missing; the run directory is damaged: "
                "restore that file from a backup"
            )
        raise UserError(
            f"{run_dir} is a retrain run (no arch_probs.jsonl); inspect shows searches: give the search's "
            "run directory (a retrain's own figures are its metrics.jsonl and, once it ends, result.json)"
        )
    try:
        cfg = yaml.safe_load(read_text(config_path, "run config"))
    except yaml.YAMLError:
        raise UserError(f"{config_path} is not valid YAML; the run directory is damaged") from None
    if not isinstance(cfg, dict) or not cfg:
        raise UserError(f"{config_path} holds no config; the run directory is damaged")
    if (run_dir / ARCH_FILE).exists():
        return load_choice_report(run_dir, cfg)
    geno_path = run_dir / "genotype.json"
    if not geno_path.exists():
        raise UserError(f"{run_dir} has no finished epoch yet (no genotype.json); inspect it after the first epoch")
    geno = read_record(geno_path, "genotype file", Genotype.from_json)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    probs_log = read_probs_log(run_dir / "arch_probs.jsonl", geno.space)
    space = geno.space
    names = edge_names(space)
    ops = geno.ops or (probs_log[-1]["ops"] if probs_log else [])

    # The op each edge would derive, by the run's rule (nas.genotype.derive_argmax).
    derive_none = (cfg.get("supernet") or {}).get("derive_none")
    include_none = get_space(space).default_derive_none if derive_none is None else bool(derive_none)
    final = {}
    for cell, rows in (geno.probs or {}).items():
        best = derive_argmax(rows, ops, include_none)
        final[cell] = [
            {"edge": names[e], "probs": dict(zip(ops, row)), "argmax": ops[best[e]]} for e, row in enumerate(rows)
        ]
    # Each epoch's cell as the run derived it (its metrics line: a budget or removal rule may differ
    # from the argmax) where the space keeps one op per edge; elsewhere the argmax by the run's rule.
    derived = {m["epoch"]: m.get("genotype") for m in metrics} if get_space(space).keeps_every_edge else {}
    per_epoch = []
    for rec in probs_log:
        cells = {
            cell: [rec["ops"][k] for k in derive_argmax(rows, rec["ops"], include_none)]
            for cell, rows in rec["probs"].items()
        }
        try:
            logged = Genotype.parse(derived[rec["epoch"]]) if derived.get(rec["epoch"]) else None
        except UserError:  # a line this version cannot read: the argmax
            logged = None
        for cell in cells if logged is not None and logged.space == space else ():
            edges = getattr(logged, cell, None)
            if edges and len(edges) == len(cells[cell]):
                cells[cell] = [op for op, _ in edges]
        per_epoch.append({"epoch": rec["epoch"], **cells})
    epochs_scheduled = (cfg.get("search") or {}).get("epochs")
    epochs_total = epochs_scheduled
    try:  # a pruned search that stops once decided ends before search.epochs
        epochs_total = search_epochs(config_from_dict(cfg))
    except (UserError, TypeError, ValueError):  # a config this version cannot read: its epochs as written
        pass
    done = metrics[-1]["epoch"] if metrics else 0
    return {
        "run_dir": str(run_dir),
        "space": space,
        "mode": (cfg.get("supernet") or {}).get("mode"),
        "epochs_done": done,
        "epochs_total": epochs_total,
        "epochs_scheduled": epochs_scheduled,
        "finished": epochs_total is not None and done >= epochs_total,
        "genotype": str(geno),
        "genotype_record": geno.to_dict(),
        "ops": ops,
        "edges": names,
        "final_probs": final,
        "chosen_per_epoch": per_epoch,
        "entropy": [{"epoch": m["epoch"], "entropy": m.get("entropy")} for m in metrics],
        "cost": cost_history(metrics),
        # From each epoch's logged genotype, so runs from before the benchmark field get it too.
        "benchmark_per_epoch": [
            {"epoch": m["epoch"], "cifar10_test": load_benchmark().query(m["genotype"])}
            for m in metrics
            if is_benchmark_cell(m.get("genotype") or "")
        ],
        "derive_none": include_none,
        "collapse": collapse_counts(geno),
        "disconnected_cells": geno.disconnected_cells(),
        "benchmark": cell_report(geno, benchmark, epochs=(200, 12)) if is_benchmark_cell(geno) else None,
        "screen": load_screen(run_dir),
    }


def load_choice_report(run_dir: Path, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What ``inspect`` shows of a search of a custom model (``supernet.model``), as a JSON-able dict."""
    try:
        arch = ChoiceArchitecture.from_dict(json.loads((run_dir / ARCH_FILE).read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{run_dir / ARCH_FILE} is not readable JSON; the run directory is damaged") from None
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    probs_log = read_probs_log(run_dir / "arch_probs.jsonl", None)
    epochs_total = (cfg.get("search") or {}).get("epochs")
    try:  # a pruned search that stops once decided ends before search.epochs; its widest choice says when
        epochs_total = search_epochs(config_from_dict(cfg), num_ops=max(map(len, (arch.probs or {}).values())))
    except (UserError, TypeError, ValueError):  # a config this version cannot read: its epochs as written
        pass
    done = metrics[-1]["epoch"] if metrics else 0
    derived = {m["epoch"]: m.get("genotype") for m in metrics}
    return {
        "kind": "choices",
        "run_dir": str(run_dir),
        "model": (cfg.get("supernet") or {}).get("model"),
        "mode": (cfg.get("supernet") or {}).get("mode"),
        "epochs_done": done,
        "epochs_total": epochs_total,
        "finished": epochs_total is not None and done >= epochs_total,
        "architecture": arch.choices,
        "final_probs": arch.probs or {},
        "chosen_per_epoch": [
            {"epoch": r["epoch"], **_logged_choices(derived.get(r["epoch"]), r["choices"])} for r in probs_log
        ],
        "entropy": [{"epoch": m["epoch"], "entropy": m.get("entropy")} for m in metrics],
        "cost": cost_history(metrics),
        "screen": load_screen(run_dir),
    }


def _logged_choices(logged: Optional[str], probs: Dict[str, Dict[str, float]]) -> Dict[str, Any]:
    """Each label's candidate as the run derived it that epoch (its metrics line: a budget or
    removal rule may differ from the argmax); the most probable one where that line is unreadable."""
    try:
        chosen = json.loads(logged) if logged else None
    except json.JSONDecodeError:
        chosen = None
    if not isinstance(chosen, dict) or set(chosen) != set(probs):
        return {label: max(p, key=p.get) for label, p in probs.items()}
    return {label: "+".join(c) if isinstance(c, list) else c for label, c in chosen.items()}


def format_choice_text(report: Dict[str, Any]) -> str:
    """:func:`load_choice_report` as text: the chosen candidates, their probabilities, the history."""
    lines = [
        f"run      {report['run_dir']}",
        f"model    {report['model']} ({report['mode']} mode), epoch {report['epochs_done']}/{report['epochs_total']}"
        + ("" if report["finished"] else " (not finished)"),
        f"chosen   {json.dumps(report['architecture'])}",
        "",
        "candidate probabilities per label (* = chosen)",
    ]
    for label, probs in report["final_probs"].items():
        chosen = report["architecture"].get(label)
        chosen = chosen if isinstance(chosen, list) else [chosen]
        lines.append(f"  {label}: " + "  ".join(f"{n} {p:.3f}{'*' if n in chosen else ''}" for n, p in probs.items()))
    if report["chosen_per_epoch"]:
        lines += ["", "derived candidate per label and epoch"]
        for rec in report["chosen_per_epoch"]:
            lines.append(f"  {rec['epoch']:<4} " + "  ".join(f"{k}={v}" for k, v in rec.items() if k != "epoch"))
    lines += ["", "architecture entropy per epoch (nats per label)"]
    lines.append("  ".join(f"{r['epoch']}:{r['entropy']:.3f}" for r in report["entropy"] if r["entropy"] is not None))
    if report.get("cost"):
        lines += [""] + format_cost_history(report["cost"])
    if report.get("screen"):
        lines += ["", describe_screen(report["screen"])]
    return "\n".join(lines)


def format_text(report: Dict[str, Any]) -> str:
    if report.get("kind") == "choices":
        return format_choice_text(report)
    lines = [
        f"run      {report['run_dir']}",
        f"space    {report['space']} ({report['mode']} mode), epoch {report['epochs_done']}/{report['epochs_total']}"
        + ("" if report["finished"] else " (not finished)")
        + (
            f" (decided at the last pruning event, of {report['epochs_scheduled']} scheduled)"
            if report.get("epochs_scheduled") not in (None, report["epochs_total"])
            else ""
        ),
        f"genotype {report['genotype']}",
        "",
    ]
    ops = report["ops"]
    width = max(len(op) for op in ops) if ops else 8
    for cell, rows in report["final_probs"].items():
        rule = "argmax" if report["derive_none"] else "argmax over the ops other than none"
        lines.append(f"op probabilities, {cell} cell (* = {rule})")
        lines.append("edge    " + " ".join(f"{op:>{width}}" for op in ops))
        for row in rows:
            cells = []
            for op in ops:
                mark = "*" if op == row["argmax"] else " "
                cells.append(f"{row['probs'][op]:>{width - 1}.3f}{mark}")
            lines.append(f"{row['edge']:<8}" + " ".join(cells))
        lines.append("")
    if report["chosen_per_epoch"]:
        for cell in report["final_probs"]:
            lines.append(f"derived op per edge and epoch, {cell} cell")
            lines.append("epoch  " + "  ".join(f"{e:<14}" for e in report["edges"]))
            for rec in report["chosen_per_epoch"]:
                lines.append(f"{rec['epoch']:<6} " + "  ".join(f"{op:<14}" for op in rec[cell]))
            lines.append("")
    lines.append("architecture entropy per epoch (nats per edge)")
    lines.append("  ".join(f"{r['epoch']}:{r['entropy']:.3f}" for r in report["entropy"] if r["entropy"] is not None))
    lines.append("")
    if report.get("cost"):
        lines += format_cost_history(report["cost"]) + [""]
    if report.get("screen"):
        lines += [describe_screen(report["screen"]), ""]
    if report.get("benchmark_per_epoch"):
        lines.append("NAS-Bench-201 CIFAR-10 test accuracy of the derived cell per epoch (%)")
        lines.append("  ".join(f"{r['epoch']}:{r['cifar10_test']:.2f}" for r in report["benchmark_per_epoch"]))
        lines.append("")
    lines.append("collapse check (ops kept in the derived cell)")
    for cell, c in report["collapse"].items():
        lines.append(f"{cell:<7} skip {c['skip']}  pool {c['pool']}  none {c['none']}  parametric {c['parametric']}")
    if report["disconnected_cells"]:
        lines.append(disconnected_warning(Genotype.from_dict(report["genotype_record"])))
    if report.get("benchmark"):
        lines += [""] + format_cell_report(report["benchmark"])
    return "\n".join(lines)


def to_dot(geno: Genotype) -> str:
    """A Graphviz DOT drawing of the cell(s); ``none`` edges are left out (drawn by the space)."""
    return get_space(geno.space).to_dot(geno)


def report_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
