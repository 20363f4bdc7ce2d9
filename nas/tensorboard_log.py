"""TensorBoard events of a run (``run.tensorboard: true``; the ``[tensorboard]`` extra).

Each epoch logs the metrics line's numbers as scalars (tagged as the metrics line names them),
every edge's op probabilities (``probs/<cell>/<edge>/<op>``) and the derived cell as text, into
``RUN_DIR/tensorboard``. A custom-scalars layout (TensorBoard's "Custom Scalars" tab) draws each
edge's ops on one chart, and the losses and accuracies of the splits together. TensorBoard is
imported only when a run asks for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import UserError
from .io import make_dir, writing

EXTRA_HINT = "pip install 'gumbel-nas[tensorboard]' (or pip install tensorboard), or set run.tensorboard=false"


def require_tensorboard() -> None:
    """Raise :class:`UserError` naming the extra when the ``tensorboard`` package is missing, or
    installed but not importable by torch (an old version, a protobuf it cannot use)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(f"run.tensorboard needs the tensorboard package: {EXTRA_HINT}") from None
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception as exc:  # a broken install fails in many ways; each gets the same fix
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"run.tensorboard: the installed tensorboard does not load in torch ({reason}); "
            "pip install -U tensorboard, or set run.tensorboard=false"
        ) from None


def layout(probabilities: Dict[str, Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, List[Any]]]:
    """The custom-scalars layout: one chart per edge with its ops, one for the losses, one for the
    accuracies (``SummaryWriter.add_custom_scalars``' form: category -> chart -> [kind, tag regexes])."""
    charts = {
        "loss": ["Multiline", [r"^(train|val|test)_loss$"]],
        "accuracy": ["Multiline", [r"^(train|val|test)_acc$"]],
    }
    out = {"metrics": charts}
    for cell, edges in probabilities.items():
        out[f"probs/{cell}"] = {edge: ["Multiline", [f"^probs/{_literal(cell)}/{_literal(edge)}/"]] for edge in edges}
    return out


def _literal(name: str) -> str:
    """``name`` as a regex that both Python and the browser read alike (``re.escape`` also escapes
    ``-``, which a JavaScript unicode regex refuses outside a class)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\/])", r"\\\1", name)


def scalars(metrics: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, float]]:
    """The numbers of a metrics line as ``(tag, value)``; nested mappings give ``outer/inner`` tags."""
    for key, value in metrics.items():
        if key == "epoch" and not prefix:
            continue  # the step itself
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield prefix + key, float(value)


class TensorBoardLog:
    """One run's event files; writes go to disk at the end of every epoch."""

    def __init__(self, log_dir: Path, purge_step: Optional[int] = None):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        make_dir(self.log_dir)
        with writing(self.log_dir):
            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self._layout_written = False

    def log_epoch(
        self,
        epoch: int,
        metrics: Dict[str, Any],
        probabilities: Optional[Dict[str, Dict[str, Dict[str, float]]]] = None,
    ) -> None:
        """Log epoch ``epoch`` (1-based, the step); ``probabilities``: cell -> edge -> op -> p."""
        w = self.writer
        with writing(self.log_dir):
            if not self._layout_written:  # once per invocation: the edges do not change
                w.add_custom_scalars(layout(probabilities or {}))
                self._layout_written = True
            for tag, value in scalars(metrics):
                w.add_scalar(tag, value, epoch)
            for cell, edges in (probabilities or {}).items():
                for edge, row in edges.items():
                    for op, p in row.items():
                        w.add_scalar(f"probs/{cell}/{edge}/{op}", p, epoch)
            if metrics.get("genotype"):
                w.add_text("genotype", f"`{metrics['genotype']}`", epoch)  # code span: no markdown in it
            w.flush()  # surfaces a write the background thread could not make

    def close(self) -> None:
        with writing(self.log_dir):
            self.writer.close()
