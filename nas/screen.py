"""A search's first cells, each trained alone (``search.screen``).

A supernet ranks the cells near the one it derives poorly: its shared weights serve every cell at
once (experiments/README.md, section 15). The same cells trained alone for a few epochs at the
supernet's own size rank closer to their full training. So a search may end by training its first
few cells, the one it derived and then its derivation's runners-up, each from scratch on the
weights' split, measuring each on the architecture's split (held out from that training; never
the test set), and reporting the most accurate.

Every cell starts from the same seed and sees the same batches in the same order: the cells differ
by their architecture alone. ``screen.json`` in the run folder is rewritten after each cell, so a
resumed run trains only the cells it had not finished.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .config import Config, RetrainSpaceConfig
from .distributed import SINGLE, World
from .errors import UserError
from .io import atomic_write_text, read_record
from .retrain import Architecture, RetrainTask, Split

SCREEN_FILE = "screen.json"
SCREEN_VERSION = 1


def best_first(scores: Sequence[Sequence[float]]) -> Iterator[List[int]]:
    """Every way to pick one index per row, by descending sum of ``scores`` (``-inf``: that index
    may not be picked; equal sums: the smaller index lists first).

    Each pick differs from one already given by one row's next-best index, so the ``n``-th pick
    costs at most ``n * rows`` sums: a filter (a budget's window) can walk as far as it needs.

    >>> from itertools import islice
    >>> list(islice(best_first([[0.0, -1.0], [0.0, -0.5, float("-inf")]]), 3))
    [[0, 0], [0, 1], [1, 0]]
    """
    # Per row, its allowed indices from best to worst (ties: the smaller index first).
    order = [sorted((j for j, x in enumerate(row) if x != -math.inf), key=lambda j: (-row[j], j)) for row in scores]
    if not scores or any(not o for o in order):
        return

    def entry(pos: Tuple[int, ...]) -> Tuple[float, List[int], Tuple[int, ...]]:
        pick = [order[r][p] for r, p in enumerate(pos)]
        return (-sum(scores[r][j] for r, j in enumerate(pick)), pick, pos)

    start = (0,) * len(scores)
    heap, seen = [entry(start)], {start}
    while heap:
        _, pick, pos = heapq.heappop(heap)
        yield pick
        for r in range(len(pos)):
            if pos[r] + 1 < len(order[r]):
                nxt = pos[:r] + (pos[r] + 1,) + pos[r + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, entry(nxt))


def protocol(cfg: Config) -> RetrainSpaceConfig:
    """A screened cell's training: the supernet's size, the search's weight optimiser, batch and
    cap on steps per epoch."""
    s = cfg.search
    sgd = {k: getattr(s.weights, k) for k in ("lr", "lr_min", "momentum", "nesterov", "weight_decay", "grad_clip")}
    return RetrainSpaceConfig(
        epochs=s.screen.epochs,
        batch_size=s.batch_size,
        C=cfg.supernet.C,
        N=cfg.supernet.N,
        steps_per_epoch=s.steps_per_epoch,
        **sgd,
    )


def train_alone(cfg: Config, arch: Architecture, split: Split, device: torch.device, world: World = SINGLE) -> dict:
    """Train ``arch``'s network from scratch on ``split``'s first part and measure it on its second:
    ``{"held_out_acc", "held_out_loss", "train_loss", "seconds"}`` (NaN figures: the training diverged)."""
    p = protocol(cfg)
    torch.manual_seed(cfg.run.seed)  # every cell's weights from the same generator state
    start = time.perf_counter()
    task = RetrainTask(cfg, p, arch, device, world, split=split)
    train_loss = float("nan")
    for epoch in range(p.epochs):
        steps = task.start_epoch(epoch)
        for _, batch in zip(range(steps), task.batches()):
            task.step(batch)
        world.average_buffers_(task.model)
        task.meter.all_reduce_(world)
        train_loss = task.meter.read()[0]
        if not math.isfinite(train_loss):
            break
    loss, acc = task.test() if math.isfinite(train_loss) else (float("nan"), float("nan"))
    return {
        "held_out_acc": acc,
        "held_out_loss": loss,
        "train_loss": train_loss,
        "seconds": time.perf_counter() - start,
    }


def _finite(x: Optional[float], worst: float) -> float:
    return x if x is not None and math.isfinite(x) else worst


def best_row(rows: List[dict]) -> int:
    """The most accurate row on the held-out split; then the lower loss; then the search's order.
    A diverged cell ranks last."""
    return min(
        range(len(rows)),
        key=lambda i: (
            -_finite(rows[i]["held_out_acc"], -math.inf),
            _finite(rows[i]["held_out_loss"], math.inf),
            i,
        ),
    )


def run_screen(
    cfg: Config,
    candidates: List[Architecture],
    ranked_by: str,
    split: Split,
    run_dir: Path,
    device: torch.device,
    world: World = SINGLE,
    log: Callable[[str], None] = print,
) -> Tuple[Architecture, Dict[str, Any]]:
    """Train each of ``candidates`` alone (:func:`train_alone`), in order, and return the best and
    the record written to ``run_dir/screen.json`` (rank 0 writes it). The cells a record already
    there finished with the same epochs are not trained again."""
    epochs = cfg.search.screen.epochs
    names = [str(a) for a in candidates]
    record: Dict[str, Any] = {
        "version": SCREEN_VERSION,
        "epochs": epochs,
        "ranked_by": ranked_by,
        "candidates": names,
        "rows": [],
    }
    path = run_dir / SCREEN_FILE
    # Rank 0 reads what an earlier screen finished; every rank takes the same rows.
    done = world.broadcast_object(_finished_rows(path, epochs, log) if world.is_main else None)
    rows: List[dict] = record["rows"]
    reused = sum(n in done for n in names)
    if reused:
        log(f"screen: {reused} of {len(names)} cells already trained ({SCREEN_FILE})")
    for i, name in enumerate(names):
        if name in done:
            rows.append(done[name])
            continue
        log(f"screen {i + 1}/{len(names)}: training {name} alone for {epochs} epochs")
        figures = train_alone(cfg, candidates[i], split, device, world)
        # Non-finite figures as null: screen.json stays strict JSON.
        row = {"cell": names[i], **{k: v if math.isfinite(v) else None for k, v in figures.items()}}
        rows.append(row)
        if world.is_main:
            atomic_write_text(path, json.dumps(record, indent=1))
        acc, loss = row["held_out_acc"], row["held_out_loss"]
        result = "diverged" if acc is None else f"held-out accuracy {acc:.2f}% (loss {loss:.3f})"
        log(f"screen {i + 1}/{len(names)}: {result}, {row['seconds'] / 60:.1f} min")
    best = best_row(rows)
    record["chosen"] = names[best]
    if world.is_main:
        atomic_write_text(path, json.dumps(record, indent=1))
    return candidates[best], record


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _row_ok(row: Any) -> bool:
    """A row as :func:`run_screen` writes it: the cell, its figures (null: diverged) and seconds."""
    if not (isinstance(row, dict) and isinstance(row.get("cell"), str) and _number(row.get("seconds"))):
        return False
    figures = ("held_out_acc", "held_out_loss", "train_loss")
    return all(k in row and (row[k] is None or _number(row[k])) for k in figures)


def _finished_rows(path: Path, epochs: int, log: Callable[[str], None]) -> Dict[str, dict]:
    """The cells an earlier screen of ``epochs`` epochs finished, by cell (a damaged record: none)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    rows = old.get("rows") if isinstance(old, dict) else None
    if not (isinstance(rows, list) and all(_row_ok(r) for r in rows) and old.get("version") == SCREEN_VERSION):
        log(f"screen: {path} is damaged or from another version; its cells are trained again")
        return {}
    return {r["cell"]: r for r in rows} if old.get("epochs") == epochs else {}


def _parse(text: str) -> Dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError:
        raise UserError("not valid JSON") from None
    rows = record.get("rows") if isinstance(record, dict) else None
    if not (isinstance(rows, list) and all(_row_ok(r) for r in rows)):
        raise UserError("not a screen record (rows of cells with their accuracies)")
    return record


def load_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The screen's record in ``run_dir`` (``None``: the run was not screened)."""
    path = Path(run_dir) / SCREEN_FILE
    return read_record(path, "screen record", _parse) if path.exists() else None


def describe(record: Dict[str, Any]) -> str:
    """The screen's table: each cell's held-out accuracy, the chosen one marked."""
    lines = [
        f"screened {len(record['rows'])} of {len(record.get('candidates', record['rows']))} cells (ranked by "
        f"{record.get('ranked_by')}), each trained alone for {record.get('epochs')} epochs and measured on the "
        "architecture's split (held-out accuracy; * = reported):"
    ]
    for i, row in enumerate(record["rows"]):
        mark = "*" if row["cell"] == record.get("chosen") else " "
        what = "the search's cell" if i == 0 else f"runner-up {i}"
        acc = row.get("held_out_acc")
        acc_text = f"{acc:6.2f}%" if acc is not None else "diverged"
        lines.append(f" {mark} {acc_text}  {row['cell']}  ({what})")
    return "\n".join(lines)
