"""Regenerate the packaged NAS-Bench-201 CIFAR-10 table (nas/benchmark_data/) from the exported CSV.

    python -m experiments.build_benchmark_table ../shared/benchmarks/nb201/cifar10.csv
    python -m experiments.build_benchmark_table cifar10.csv --meta tests/fixtures/nats-tss-sample/meta.pickle.pbz2

The CSV has columns index, arch, cifar10_test_accuracy, one row per cell in the official order.
Writes two .npy files, both in official index order:

    nb201_cifar10_test.npy  uint32  round(accuracy * 10000): the CSV's 4 decimals, exactly
    nb201_archs.npy         uint16  the cell's base-5 code (nas.benchmarks.encode_cell)

The official order is not a formula of the ops, hence the second file. Checks that the indices are
0..15624, that each accuracy has at most 4 decimals, that the archs are 15,625 distinct NB201
cells, with --meta that they equal the official order (the arch strings of an official NATS-Bench
directory's meta file, read with ``nas.load_benchmark``), and that the written table reads back
to the CSV's values.
"""

from __future__ import annotations

import argparse
import csv
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import List

import numpy as np

from nas import benchmarks as B
from nas import load_benchmark
from nas.errors import UserError

META_FILE = "meta.pickle.pbz2"  # the meta file of an official NATS-Bench topology directory


def official_archs(meta: Path) -> List[str]:
    """The arch strings of an official NATS-Bench directory, in index order; ``meta`` is the
    directory or its meta file."""
    if meta.is_file() and meta.name != META_FILE:
        raise UserError(f"--meta {meta}: pass an official NATS-Bench directory or its {META_FILE}")
    bench = load_benchmark(meta.parent if meta.is_file() else meta)  # reads the meta file only
    return [bench.arch_string(i) for i in range(len(bench))]


def build(csv_path: Path, out_dir: Path, meta: Path = None) -> None:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{csv_path} is not a readable CSV file ({exc})") from None
    if not rows or not {"index", "arch", "cifar10_test_accuracy"} <= set(rows[0]):
        raise UserError(f"{csv_path} needs the columns index, arch, cifar10_test_accuracy")
    if [r["index"].strip() for r in rows] != [str(i) for i in range(B.NUM_CELLS)]:
        raise UserError(f"{csv_path} must list indices 0..{B.NUM_CELLS - 1} in order, one row each")
    acc = np.empty(B.NUM_CELLS, dtype=np.uint32)
    codes = np.empty(B.NUM_CELLS, dtype=np.uint16)
    for i, r in enumerate(rows):
        try:
            scaled = Decimal(r["cifar10_test_accuracy"]) * B.ACC_SCALE
        except InvalidOperation:
            raise UserError(f"row {i}: accuracy {r['cifar10_test_accuracy']!r} is not a number") from None
        if scaled != scaled.to_integral_value() or not 0 <= scaled <= 100 * B.ACC_SCALE:
            raise UserError(
                f"row {i}: accuracy {r['cifar10_test_accuracy']!r} needs more than 4 decimals or is "
                "outside 0..100; the uint32 encoding would not be exact"
            )
        acc[i] = int(scaled)
        ops = B.cell_ops(r["arch"])
        if B.cell_string(ops) != r["arch"].strip():
            raise UserError(f"row {i}: {r['arch']!r} is not in the canonical form {B.cell_string(ops)!r}")
        codes[i] = B.encode_cell(ops)
    if len(set(codes.tolist())) != B.NUM_CELLS:
        raise UserError(f"{csv_path} lists some cell twice; it must hold each of the {B.NUM_CELLS} cells once")
    if meta is not None:
        official = official_archs(meta)
        if official != [r["arch"].strip() for r in rows]:
            raise UserError(f"{csv_path}'s arch column differs from {meta}'s meta_archs list")
        print(f"arch order matches {meta}")
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / B.ACC_FILE, acc)
    np.save(out_dir / B.ARCH_FILE, codes)
    # read back through the files just written: exact values and the same strings
    back_acc = np.load(out_dir / B.ACC_FILE)
    back_codes = np.load(out_dir / B.ARCH_FILE)
    for i, r in enumerate(rows):
        assert f"{back_acc[i] / B.ACC_SCALE:.4f}" == f"{Decimal(r['cifar10_test_accuracy']):.4f}"
        assert back_acc[i] / B.ACC_SCALE == float(r["cifar10_test_accuracy"])
        assert B.cell_string(B.decode_cell(back_codes[i])) == r["arch"].strip()
    print(
        f"wrote {out_dir / B.ACC_FILE} and {out_dir / B.ARCH_FILE} ({B.NUM_CELLS} cells, "
        f"mean {acc.mean() / B.ACC_SCALE:.2f}, best {acc.max() / B.ACC_SCALE:.4f})"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", type=Path, help="the exported CSV (index, arch, cifar10_test_accuracy)")
    p.add_argument("--out", type=Path, default=B.DATA_DIR, help="output directory (default: nas/benchmark_data)")
    p.add_argument(
        "--meta",
        type=Path,
        default=None,
        help=f"an official NATS-Bench directory (or its {META_FILE}) to check the order against",
    )
    args = p.parse_args()
    try:
        build(args.csv, args.out, args.meta)
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
