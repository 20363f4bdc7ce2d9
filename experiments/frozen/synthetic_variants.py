"""Variants of the built-in glyph task: which ones a weight-sharing supernet can learn.

The glyph task's first version (1-pixel strokes of either polarity on a smooth colour field) was
learned by discrete conv networks but never by a supernet. This script sets the knobs of
``nas.data``'s generator and, for each variant, retrains the all-conv, all-skip and all-pool
cells with the experiments' budget and runs one gdas search, reporting the supernet's final
train and validation accuracy:

* ``scale``: pixels per glyph grid cell (1: 1-pixel strokes, 7 x 7 glyphs; 2: 2-pixel, 14 x 14);
* ``polarity``: ``light`` (strokes lighter than the background) or ``either`` (per channel, random);
* ``field``: std of the smooth colour field added to the background colour (0: plain);
* ``epochs`` / ``warmup``: the search's length and warm-up epochs.

The shipped task is ``scale=2 polarity=light field=0`` (``nas.data.make_synthetic``); with those
knobs it draws exactly the library's images. The runs are written under ``--work``
(default: a temporary folder) and not cached, because the library cannot tell the variants apart.

    python experiments/synthetic_variants.py                       # the variants in VARIANTS
    python experiments/synthetic_variants.py --variant 2,light,0,30,10
    python experiments/synthetic_variants.py --quick --out /tmp/x.json
"""
from __future__ import annotations

import functools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

import common as C
import nas.data as data_module
from nas.retrain import run_retrain
from nas.search import run_search

NAME = "synthetic_variants"
LIBRARY_IMAGES = data_module._synthetic_images
# (scale, polarity, field, search epochs, warm-up epochs); the first is the task's first version
VARIANTS = [(1, "either", 0.08, 10, 0), (2, "either", 0.08, 10, 0), (1, "light", 0.08, 10, 0),
            (1, "light", 0.0, 10, 0), (2, "either", 0.0, 30, 10), (2, "light", 0.0, 10, 0), (2, "light", 0.0, 30, 10)]
CELLS = ("nor_conv_3x3", "skip_connect", "avg_pool_3x3")


def variant_images(scale: int, polarity: str, field: float):
    """A drop-in for ``nas.data._synthetic_images`` with the variant's knobs."""
    return functools.partial(LIBRARY_IMAGES, scale=scale, light=polarity == "light", field=field)


def fmt(acc: Any) -> str:
    return "-" if acc is None else f"{acc:.1f}"


def parse_variant(text: str) -> tuple:
    scale, polarity, field, epochs, warmup = text.split(",")
    if polarity not in ("light", "either"):
        raise SystemExit(f"--variant: polarity must be light or either, got {polarity!r}")
    return int(scale), polarity, float(field), int(epochs), int(warmup)


def run_variant(variant: tuple, work: Path, quick: bool) -> Dict[str, Any]:
    scale, polarity, field, epochs, warmup = variant
    original = data_module._synthetic_images
    data_module._synthetic_images = variant_images(scale, polarity, field)
    device = torch.device("cpu")
    row: Dict[str, Any] = {"scale": scale, "polarity": polarity, "field": field, "epochs": epochs, "warmup": warmup}
    try:
        data = C.data_overrides("synthetic", quick)
        for op in CELLS:
            cfg = C.config(data + C.retrain_overrides("synthetic", quick))
            res = run_retrain(cfg, C.uniform_cell(op), work / f"retrain_{op}", device, progress=False, log=C.log)
            row[f"all_{op}"] = res.test_acc
        search = C.search_overrides("synthetic", quick)
        if not quick:
            search += [f"search.epochs={epochs}", f"search.warmup_epochs={warmup}"]
        started = time.time()
        result = run_search(C.config(data + search), work / "search", device, progress=False, log=C.log)
        last = json.loads((work / "search" / "metrics.jsonl").read_text().splitlines()[-1])
        row.update(search_train_acc=last["train_acc"], search_val_acc=last["val_acc"],
                   genotype=str(result.genotype), search_seconds=time.time() - started)
    finally:
        data_module._synthetic_images = original
    return row


def main() -> int:
    p = C.parser(__doc__, f"{NAME}.json", dataset_option=False)
    p.add_argument("--variant", action="append", default=None,
                   help="scale,polarity,field,epochs,warmup (repeatable; default: the list in the script)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder, deleted)")
    args = p.parse_args()
    variants = [parse_variant(v) for v in args.variant] if args.variant else \
        (VARIANTS[-1:] if args.quick else VARIANTS)
    ctx = C.setup(args)
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nas-variants-"))
    rows: List[Dict[str, Any]] = []
    try:
        for i, v in enumerate(variants):
            rows.append(run_variant(v, work_root / f"variant_{i}", args.quick))
    finally:
        if not args.work:
            shutil.rmtree(work_root, ignore_errors=True)
    text = "\n".join([
        "Glyph-task variants: fixed cells retrained with the experiments' budget, and one gdas search each:",
        C.table(["scale", "polarity", "field", "search epochs (warm-up)", "all conv", "all skip", "all pool",
                 "supernet train / val acc %", "derived cell"],
                [[r["scale"], r["polarity"], r["field"], f"{r['epochs']} ({r['warmup']})",
                  f"{r['all_nor_conv_3x3']:.1f}", f"{r['all_skip_connect']:.1f}", f"{r['all_avg_pool_3x3']:.1f}",
                  f"{r['search_train_acc']:.1f} / {fmt(r['search_val_acc'])}",
                  r["genotype"]] for r in rows]),
    ])
    C.finish(ctx, NAME, {"budget": C.budget(args.quick), "rows": rows}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
