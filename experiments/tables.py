"""Output of the studies: Markdown tables, ``mean ± std`` cells, timestamped log lines, optional plots.

Plots need matplotlib (the ``plot`` extra); without it :func:`save_plot` notes that and returns
None, so a study never fails for want of a plot.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from experiments.stats import mean_std


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into the README as is, reads fine on a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def fmt_pm(values: Iterable[float], digits: int = 2) -> str:
    """``mean ± std`` of ``values`` (sample std, as :func:`experiments.stats.mean_std`)."""
    m, s = mean_std(list(values))
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def log(msg: str) -> None:
    """A progress line on stderr, with the time (stdout is the table's)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def try_pyplot():
    """matplotlib.pyplot with the Agg backend, or None: plots are optional extras."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except Exception:  # noqa: BLE001 - any import problem just means no plot
        return None


def save_plot(fn: Callable[[Any], None], path: Path) -> Optional[str]:
    """Draw with ``fn(plt)`` and save a PNG at ``path``; None (and a note) when matplotlib is missing or fails."""
    plt = try_pyplot()
    if plt is None:
        log(f"matplotlib is not installed; no plot {path.name}")
        return None
    try:
        fig = plt.figure(figsize=(6, 4))
        fn(plt)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)
    except Exception as exc:  # noqa: BLE001 - a plot must never fail an experiment
        log(f"plot {path.name} failed: {exc}")
        return None
