"""Would deriving each edge's op by removal (DARTS-PT's selection) pick better cells than the logits?

A study of finished searches' checkpoints, not part of the search. For each nb201 supernet (any
mode), it measures per edge and op the supernet's mean validation loss with that op removed from
that edge, the other ops of the edge renormalised (:func:`nas.selection.edge_op_losses` with
``perturb="remove"``), on fixed batches of the architecture's split, in training mode as the search
measures. Each edge then takes the op whose removal costs most: with ``none`` left out (the
none-excluded rule) and with it (GDAS's rule). DARTS-PT (Wang et al., ICLR 2021) selects this way,
one edge at a time with fine-tuning between; here every edge is measured on the final supernet at
once. It also derives the one-path reading: each edge restricted to each op in turn (``perturb=
"keep"``), the lowest loss kept. Only afterwards, for measurement, are the cells looked up on
NAS-Bench-201 next to the cell derived from the logits.

    python -m experiments.removal_study runs/nb201_cpu_search/darts-beta25-10ep-s*/checkpoint.pt
    python -m experiments.removal_study --quick --out /tmp/x.json     # the test
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from experiments.nb201_cpu_search import CONFIG, QUICK
from experiments.nb201_evidence import both_rules
from experiments.rerank_study import fixed_batches, load_search, study_checkpoints, write_study
from experiments.tables import fmt_pm, table
from nas.benchmarks import cell_string, load_benchmark
from nas.config import load_config
from nas.search import run_search
from nas.selection import Batch, edge_op_losses, removal_scores
from nas.supernet import Supernet

NAME = "removal_study"


@torch.no_grad()
def edge_by_edge(net: Supernet, batches: List[Batch], seed: int) -> Tuple[str, List[Tuple[int, str, float]]]:
    """DARTS-PT's order without its fine-tuning: measure every undecided edge, fix the one whose
    best op (none excluded) leads its runner-up by most, measure the rest again with it fixed.
    Returns the cell and the decisions (edge, op, margin) in order. Leaves ``net``'s masks as it
    found them."""
    ops = list(net.ops)
    alive = net.alive("normal")
    saved = alive.clone()
    decisions: List[Tuple[int, str, float]] = []
    try:
        while any(int(row.sum()) > 1 for row in alive):
            losses = edge_op_losses(net, batches, seed=seed, perturb="remove")["normal"]
            best = None
            for e in range(alive.shape[0]):
                if int(alive[e].sum()) < 2:
                    continue
                score = losses[e].masked_fill(~alive[e], float("-inf"))
                if "none" in ops:
                    score[ops.index("none")] = float("-inf")
                top = score.topk(2)
                margin = float(top.values[0] - top.values[1])  # inf: a single candidate left
                if best is None or margin > best[0]:
                    best = (margin, e, int(top.indices[0]))
            margin, e, k = best
            alive[e] = False
            alive[e, k] = True
            net._alive_cache = None
            decisions.append((e, ops[k], margin))
        return cell_string([ops[int(row.nonzero()[0])] for row in alive]), decisions
    finally:
        alive.copy_(saved)
        net._alive_cache = None


@torch.no_grad()
def study(ckpt_path: Path, batches: int, batch_size: int) -> Dict[str, Any]:
    """One checkpoint: the removal losses, the cells they derive and the logits' cells, looked up."""
    ckpt, cfg, net = load_search(ckpt_path)
    if cfg.supernet.space != "nb201":
        raise SystemExit(f"{ckpt_path} is a {cfg.supernet.space} search; the benchmark has nb201 cells only")
    fixed = fixed_batches(cfg, batches, batch_size)
    losses = edge_op_losses(net, fixed, seed=cfg.run.seed, perturb="remove")["normal"]
    probs = net.probabilities()["normal"]
    ops = list(net.ops)
    scores = removal_scores({"normal": losses}, net)["normal"]
    # The one-path reading: each edge restricted to each op in turn (the others sampled as the
    # search samples them), the lowest loss kept.
    kept = edge_op_losses(net, fixed, seed=cfg.run.seed, perturb="keep")["normal"]
    by_removal, by_logits, by_keep = both_rules(scores, ops), both_rules(probs, ops), both_rules(-kept, ops)
    bench = load_benchmark()
    cells = {
        "removal_none_excluded": by_removal["none_excluded"],
        "removal_gdas_rule": by_removal["gdas_rule"],
        "logits_none_excluded": by_logits["none_excluded"],
        "logits_gdas_rule": by_logits["gdas_rule"],
        "keep_none_excluded": by_keep["none_excluded"],
    }
    cells["edge_by_edge"], decisions = edge_by_edge(net, fixed, cfg.run.seed)
    return {
        "checkpoint": str(ckpt_path),
        "epoch": ckpt["epoch"],
        "seed": cfg.run.seed,
        "mode": cfg.supernet.mode,
        "ops": ops,
        "removal_losses": [[x if x != float("inf") else None for x in row] for row in losses.tolist()],
        "keep_losses": [[x if x != float("inf") else None for x in row] for row in kept.tolist()],
        "edge_by_edge_decisions": decisions,
        "cells": {k: {"cell": c, "benchmark": bench.query(c)} for k, c in cells.items()},
    }


def run_variant(checkpoint: str) -> str:
    """``runs/x/darts-beta25-10ep-s3/checkpoint.pt`` -> ``darts-beta25-10ep``."""
    return re.sub(r"-s\d+$", "", Path(checkpoint).parent.name)


def quick_checkpoint(run_dir: Path) -> Path:
    """A tiny softmax-relaxation search on synthetic data (every op alive on every edge)."""
    cfg = load_config(CONFIG, QUICK + ["search.warmup_epochs=0", "search.epochs=2"])
    run_search(cfg, run_dir, torch.device("cpu"), progress=False, log=lambda s: None)
    return run_dir / "checkpoint.pt"


def summary_table(results: List[Dict[str, Any]]) -> str:
    """Per checkpoint, the benchmark accuracy of each derivation's cell; then a mean row per variant."""
    keys = [
        "logits_none_excluded",
        "removal_none_excluded",
        "logits_gdas_rule",
        "removal_gdas_rule",
        "edge_by_edge",
        "keep_none_excluded",
    ]
    rows = [
        [r["checkpoint"], r["seed"]]
        + [
            f"{r['cells'][k]['benchmark']:.2f}" if k in r["cells"] else "-" for k in keys
        ]  # older rows lack edge_by_edge
        for r in results
    ]
    # One mean row per search variant (the run directory's name without its seed): supernets of
    # different methods are not pooled.
    for variant in dict.fromkeys(run_variant(r["checkpoint"]) for r in results):
        sel = [r for r in results if run_variant(r["checkpoint"]) == variant]
        rows.append(
            [f"mean ± std, {variant} ({len(sel)})", ""]
            + [
                fmt_pm(r["cells"][k]["benchmark"] for r in sel if k in r["cells"])
                if any(k in r["cells"] for r in sel)
                else "-"  # measured on none of this variant's supernets
                for k in keys
            ]
        )
    return table(
        [
            "checkpoint",
            "seed",
            "logits %",
            "removal %",
            "logits, GDAS's rule %",
            "removal, GDAS's rule %",
            "edge by edge, no fine-tuning %",
            "restricted edge %",
        ],
        rows,
    )


def main() -> int:
    args, out, studied, tmp = study_checkpoints(
        NAME,
        __doc__,
        study,
        quick_checkpoint,
        lambda r: (
            f"{r['checkpoint']}: logits {r['cells']['logits_none_excluded']['benchmark']:.2f}, removal "
            f"{r['cells']['removal_none_excluded']['benchmark']:.2f} "
            f"(GDAS's rule {r['cells']['removal_gdas_rule']['benchmark']:.2f})"
        ),
        checkpoints_help="nb201 search checkpoints (finished runs' checkpoint.pt)",
        batches=16,
        batch_size=64,  # the search's own batch size: BN's batch statistics as it trains
    )
    results = sorted(studied, key=lambda r: r["checkpoint"])
    write_study(NAME, args, out, results, summary_table(results), tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
