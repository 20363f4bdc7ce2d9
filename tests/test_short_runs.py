"""Shortened runs: ``--set search.epochs=N`` works for any N >= 1 on every shipped config.

The configs' warm-up and pruning start scale with the run (at the same share of it), the run
says what it scaled, and a run with fewer epochs than ops to prune holds several pruning events
at one boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.cli import main
from nas.config import load_config, scale_epoch_counts
from nas.schedule import prune_events, search_epochs

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
# Each shipped config on tiny synthetic data: only its method is exercised.
TINY_DATA = [
    "data.name=synthetic",
    "data.root=null",
    "data.train_subset=null",
    "data.num_train=128",
    "data.num_test=32",
    "data.image_size=16",
    "supernet.C=4",
    "search.batch_size=16",
    "search.steps_per_epoch=2",
    "search.prune_batches=2",
    "run.device=cpu",
    "run.threads=1",
]


@pytest.mark.parametrize("config", SHIPPED)
@pytest.mark.parametrize("epochs", [1, 2])
def test_every_shipped_config_runs_any_number_of_epochs(config, epochs, tmp_path, capsys):
    sets = TINY_DATA + [f"search.epochs={epochs}"]
    if "darts" in config and "nb201" not in config:
        sets.append("supernet.N=3")  # the darts space's smallest network
    else:
        sets.append("supernet.N=1")
    if load_config(ROOT / "configs" / config).search.cost.budget is not None:
        sets.append("search.cost.budget=3e5")  # within the tiny network's 0.14-0.81 M multiply-adds
    out = tmp_path / "run"
    code = main(
        ["--config", str(ROOT / "configs" / config), "--out", str(out), "--quiet"]
        + [x for s in sets for x in ("--set", s)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Every epoch runs, or up to the last pruning event when the search ends decided.
    assert len(lines) == search_epochs(load_config(out / "config.yaml")) >= 1
    base = load_config(ROOT / "configs" / config)
    if base.search.warmup_epochs and base.search.epochs != epochs:
        assert "search.warmup_epochs:" in captured.out and "scaled with search.epochs" in captured.out


def test_scaling_keeps_the_share_and_leaves_explicit_values():
    cfg = load_config(None, ["search.epochs=60", "search.warmup_epochs=20", "search.prune_start=30"])
    cfg.search.epochs = 6
    notes = scale_epoch_counts(cfg, 60)
    assert (cfg.search.warmup_epochs, cfg.search.prune_start) == (2, 3)
    assert notes == [
        "search.warmup_epochs: 20 -> 2 (scaled with search.epochs 60 -> 6)",
        "search.prune_start: 30 -> 3 (scaled with search.epochs 60 -> 6)",
    ]
    cfg.search.epochs = 1  # at least one architecture epoch is left
    scale_epoch_counts(cfg, 6)
    assert (cfg.search.warmup_epochs, cfg.search.prune_start) == (0, 0)
    explicit = load_config(ROOT / "configs" / "default.yaml", ["search.epochs=6", "search.warmup_epochs=4"])
    assert explicit.search.warmup_epochs == 4
    default = load_config(ROOT / "configs" / "default.yaml", ["search.epochs=6"])
    assert default.search.warmup_epochs == 2  # 10 of 30


@pytest.mark.parametrize("epochs, start", [(1, 0), (3, 0), (6, 2), (60, 20)])
def test_prune_events_never_precede_an_architecture_epoch(epochs, start):
    events = prune_events(epochs, start, 5)
    assert len(events) == 4 and events == sorted(events)
    assert all(start + 1 <= e <= epochs for e in events)
