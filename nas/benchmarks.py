"""NAS-Bench-201 lookups: the accuracy the benchmark recorded for a cell of the nb201 space.

NAS-Bench-201 (the NATS-Bench topology space) trained all 15,625 cells of the ``nb201`` space;
looking a searched cell up is how NB201 results are reported::

    import nas
    bench = nas.load_benchmark()            # the packaged CIFAR-10 table, no download
    bench.query(geno)                       # a nas.Genotype of the nb201 space -> accuracy in %
    bench.query("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    bench.query(1)                          # the same cell by its official index: 93.66
    bench.percentile(1)                     # % of the space scoring below it (ties count half)
    bench.best()                            # BestCell(index=6111, arch='|...|', accuracy=94.3733)

    full = nas.load_benchmark("NATS-tss-v1_0-3ffb9-simple")   # the official files, read lazily
    full.query(11, dataset="cifar100", metric="valid", epochs=12, seed=111)

Three sources, chosen by ``path``:

* ``None``: a table packaged with ``nas`` (``nas/benchmark_data/``): the 200-epoch CIFAR-10 test
  accuracy of every cell, the mean of the benchmark's 3 seeds, exactly as exported (4 decimals).
* a directory in the official NATS-Bench topology "simple" format (``meta.pickle.pbz2`` plus
  ``NNNNNN.pickle.pbz2`` per cell): every dataset, metric, both protocols (200 and 12 epochs) and
  single seeds. The pickles are read with a restricted unpickler that refuses any code.
* a CSV file (see :func:`load_benchmark` for the columns).
"""

from __future__ import annotations

import bz2
import csv
import functools
import io
import math
import os
import pickle
import re
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UserError
from .genotype import Genotype

# The op order of the packaged codes. Fixed here, not taken from nas.ops, because the packaged
# file's meaning must not change if the search space's op order does.
CELL_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_EDGES = 6  # 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
NUM_CELLS = len(CELL_OPS) ** NUM_EDGES  # 15,625
_SOURCES = (0, 0, 1, 0, 1, 2)  # the node each edge reads, in edge order

DATA_DIR = Path(__file__).resolve().parent / "benchmark_data"
ACC_FILE = "nb201_cifar10_test.npy"  # uint32 round(accuracy * ACC_SCALE), official index order
ARCH_FILE = "nb201_archs.npy"  # uint16 encode_cell() of each cell, official index order
ACC_SCALE = 10_000

# What the official API (get_more_info) reports per dataset: our metric name -> eval name.
OFFICIAL_METRICS: Dict[str, Dict[str, str]] = {
    "cifar10": {"test": "ori-test"},
    "cifar10-valid": {"test": "ori-test", "valid": "x-valid"},
    "cifar100": {"test": "x-test", "valid": "x-valid", "valtest": "ori-test"},
    "ImageNet16-120": {"test": "x-test", "valid": "x-valid", "valtest": "ori-test"},
}
OFFICIAL_EPOCHS = (200, 12)
_META_FILE = "meta.pickle.pbz2"
_OFFICIAL_HINT = "nas.load_benchmark(path='.../NATS-tss-v1_0-3ffb9-simple')"

Arch = Union[Genotype, str, int]


class BestCell(NamedTuple):
    """The best cell of the space for one metric."""

    index: int
    arch: str
    accuracy: float


# ---- cell encoding ---------------------------------------------------------------------------
def encode_cell(ops: Sequence[str]) -> int:
    """The base-5 code of a cell: edge 0 is the most significant digit, digits index CELL_OPS."""
    code = 0
    for op in ops:
        code = code * len(CELL_OPS) + CELL_OPS.index(op)
    return code


def decode_cell(code: int) -> Tuple[str, ...]:
    """The six ops (edge order) of a cell's base-5 code."""
    ops = []
    for _ in range(NUM_EDGES):
        code, digit = divmod(int(code), len(CELL_OPS))
        ops.append(CELL_OPS[digit])
    return tuple(reversed(ops))


def cell_string(ops: Sequence[str]) -> str:
    """The official ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` string of six ops."""
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def cell_ops(arch: Union[Genotype, str]) -> Tuple[str, ...]:
    """The six ops of an NB201 cell given as a Genotype or an arch string; UserError otherwise."""
    if isinstance(arch, Genotype):
        geno = arch
    elif isinstance(arch, str):
        geno = Genotype.parse(arch)
    else:
        raise UserError(
            f"cannot look up a {type(arch).__name__}: give a nas.Genotype of the nb201 space, "
            "an NB201 arch string (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|) or an index 0..15624"
        )
    if geno.space != "nb201":
        raise UserError(
            f"a {geno.space} genotype is not a NAS-Bench-201 cell: the benchmark holds only cells of "
            "the nb201 space (4 nodes, 6 edges); search with space nb201 to look the result up"
        )
    if [j for _, j in geno.normal] != list(_SOURCES) or geno.reduce is not None:
        raise UserError(
            f"{_describe(geno)} is not a NAS-Bench-201 cell: those have 4 nodes and 6 edges, "
            "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
        )
    ops = tuple(op for op, _ in geno.normal)
    bad = [op for op in ops if op not in CELL_OPS]
    if bad:
        raise UserError(
            f"{bad[0]!r} is not a NAS-Bench-201 op (in {_describe(geno)}); its cells use only {', '.join(CELL_OPS)}"
        )
    return ops


def _describe(geno: Genotype) -> str:
    try:
        return repr(str(geno))
    except ValueError:
        return f"the {geno.space} genotype"


# ---- index <-> cell orders ---------------------------------------------------------------------
class _CodeOrder:
    """The official order as packaged: one base-5 code per index (the order is not a formula)."""

    def __init__(self, codes: np.ndarray):
        self.codes = codes
        inverse = np.empty(NUM_CELLS, dtype=np.int64)
        inverse[codes] = np.arange(NUM_CELLS)
        self.inverse = inverse

    def __len__(self) -> int:
        return len(self.codes)

    def string(self, index: int) -> str:
        return cell_string(decode_cell(self.codes[index]))

    def find(self, ops: Sequence[str]) -> Optional[int]:
        return int(self.inverse[encode_cell(ops)])


class _StringOrder:
    """The order of an official meta file: its arch strings, indexed lazily."""

    def __init__(self, archs: List[str]):
        self.archs = archs
        self._index: Optional[Dict[str, int]] = None

    def __len__(self) -> int:
        return len(self.archs)

    def string(self, index: int) -> str:
        return self.archs[index]

    def find(self, ops: Sequence[str]) -> Optional[int]:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.archs)}
        return self._index.get(cell_string(ops))


# ---- restricted unpickling -------------------------------------------------------------------
# numpy type codes the official files use for numbers, as struct formats.
_NUMBER_CODES = {
    "f8": "d",
    "f4": "f",
    "f2": "e",
    "i8": "q",
    "i4": "i",
    "i2": "h",
    "i1": "b",
    "u8": "Q",
    "u4": "I",
    "u2": "H",
    "u1": "B",
    "b1": "?",
}


class _NumberDtype:
    """Stand-in for ``numpy.dtype`` while unpickling: plain numeric dtypes only, no numpy call.

    The official per-cell files hold a few numpy scalars (``params``, ``latency``); numpy pickles
    them as ``numpy.core.multiarray.scalar(numpy.dtype('f8'), raw_bytes)``. Rebuilding them from
    ``struct`` keeps every callable the file can reach under our control.
    """

    __slots__ = ("fmt", "order")

    def __init__(self, code=None, align=False, copy=True):
        if not isinstance(code, str) or code not in _NUMBER_CODES:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain number type")
        self.fmt = _NUMBER_CODES[code]
        self.order = "<" if sys.byteorder == "little" else ">"

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("unexpected numpy dtype state")
        if state[1] in ("<", ">"):
            self.order = state[1]


def _number_scalar(dtype, data):
    """Stand-in for ``numpy.core.multiarray.scalar``: a Python number from a number dtype's bytes."""
    if not isinstance(dtype, _NumberDtype) or not isinstance(data, bytes) or len(data) != struct.calcsize(dtype.fmt):
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return struct.unpack(dtype.order + dtype.fmt, data)[0]


_ADMITTED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "dtype"): _NumberDtype,
    ("numpy.core.multiarray", "scalar"): _number_scalar,
    ("numpy._core.multiarray", "scalar"): _number_scalar,  # numpy >= 2 writes this name
}


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds plain containers, OrderedDicts and numpy numbers; refuses every other global."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        admitted = _ADMITTED.get((module, name))
        if admitted is None:
            raise UserError(
                f"refusing to unpickle {module}.{name} from {self._path}: benchmark files hold only "
                "plain containers and numbers; this file is not a NATS-Bench record (or was tampered with)"
            )
        return admitted


def _read_pickle(path: Path):
    """Load one bz2-compressed benchmark pickle safely; every failure is a UserError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read benchmark file {path}: {exc.strerror or exc}") from None
    try:
        data = bz2.decompress(raw)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"benchmark file {path} is truncated or corrupted ({exc}); download it again") from None
    try:
        return _SafeUnpickler(io.BytesIO(data), path).load()
    except UserError:
        raise
    except Exception as exc:  # a malformed pickle can fail in many ways; all mean "bad file"
        raise UserError(
            f"benchmark file {path} does not hold a valid pickle ({type(exc).__name__}: {exc}); "
            "it is truncated or corrupted: download it again"
        ) from None


# ---- sources -----------------------------------------------------------------------------------
def _check_epochs_seed(epochs, seed) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        raise UserError(f"epochs must be an int (200 or 12, the two NATS-Bench protocols), got {epochs!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UserError(f"seed must be None (the mean over the benchmark's seeds) or an int, got {seed!r}")


class _TableSource:
    """Accuracies in memory, one float64 array per (dataset, metric), NaN where a cell is absent.

    The packaged table and CSV files; they hold 200-epoch means over seeds only.
    """

    def __init__(
        self,
        name: str,
        columns: Dict[Tuple[str, str], np.ndarray],
        present: np.ndarray,
        order: _CodeOrder,
        packaged: bool,
    ):
        self.name = name
        self.columns = columns
        self.present = present
        self.order = order
        self.packaged = packaged
        self.count = int(present.sum())

    def datasets(self) -> List[str]:
        return _ordered(ds for ds, _ in self.columns)

    def metrics(self, dataset: str) -> List[str]:
        return [m for m in ("test", "valid", "valtest") if (dataset, m) in self.columns]

    def _protocol(self, epochs, seed) -> None:
        if epochs != 200 or seed is not None:
            what = f"epochs={epochs}" if epochs != 200 else f"seed={seed}"
            raise UserError(
                f"{self.name} holds only the 200-epoch accuracy averaged over seeds; {what} needs the "
                f"official NATS-Bench files: {_OFFICIAL_HINT}"
            )

    def value(self, index: int, dataset: str, metric: str, epochs: int, seed: Optional[int]) -> float:
        self._protocol(epochs, seed)
        if not self.present[index]:
            raise UserError(
                f"cell {index} ({self.order.string(index)}) is not in {self.name}, which holds "
                f"{self.count} of the {NUM_CELLS} cells; add its row or use the packaged table"
            )
        return float(self.columns[(dataset, metric)][index])

    def column(self, dataset: str, metric: str, epochs: int) -> np.ndarray:
        self._protocol(epochs, None)
        if self.count != NUM_CELLS:
            raise UserError(
                f"percentile and best need every cell of the space; {self.name} holds {self.count} of "
                f"the {NUM_CELLS}: use a CSV with all rows or the packaged table"
            )
        return self.columns[(dataset, metric)]


class _DirectorySource:
    """The official NATS-Bench topology "simple" directory; per-cell files are read on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.name = f"the NATS-Bench directory {root}"
        meta_path = root / _META_FILE
        if not meta_path.is_file():
            raise UserError(
                f"{root} is not a NATS-Bench topology directory: {_META_FILE} is missing; pass the "
                "NATS-tss-v1_0-3ffb9-simple directory (meta.pickle.pbz2 + NNNNNN.pickle.pbz2 per cell)"
            )
        meta = _read_pickle(meta_path)
        archs = meta.get("meta_archs") if isinstance(meta, dict) else None
        if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
            raise UserError(
                f"{meta_path} has no 'meta_archs' list of arch strings; it is not a NATS-Bench topology "
                "meta file: download it again"
            )
        total = meta.get("total_archs", len(archs))
        if total != len(archs):
            raise UserError(f"{meta_path} says total_archs={total} but lists {len(archs)} archs; download it again")
        self.order = _StringOrder(archs)
        self.count = len(archs)
        self._cells: Dict[int, dict] = {}  # index -> the file's record, filled on first query

    def datasets(self) -> List[str]:
        return list(OFFICIAL_METRICS)

    def metrics(self, dataset: str) -> List[str]:
        return list(OFFICIAL_METRICS.get(dataset, {}))

    def cell_path(self, index: int) -> Path:
        return self.root / f"{index:06d}.pickle.pbz2"

    def record(self, index: int) -> dict:
        rec = self._cells.get(index)
        if rec is None:
            path = self.cell_path(index)
            if not path.is_file():
                raise UserError(
                    f"{path} is missing: {self.root} holds no record of cell {index}; use the full "
                    "NATS-tss-v1_0-3ffb9-simple directory"
                )
            rec = _read_pickle(path)
            archs = (
                {hp.get("arch_str") for hp in rec.values() if isinstance(hp, dict)} if isinstance(rec, dict) else set()
            )
            if archs != {self.order.string(index)}:
                raise UserError(
                    f"{path} is not the record of cell {index} ({self.order.string(index)}): it holds "
                    f"{sorted(map(str, archs)) or 'no arch'}; download it again"
                )
            self._cells[index] = rec
        return rec

    def value(self, index: int, dataset: str, metric: str, epochs: int, seed: Optional[int]) -> float:
        path = self.cell_path(index)
        rec = self.record(index)
        hp = rec.get(str(epochs))
        if not isinstance(hp, dict):
            raise UserError(
                f"{path} has no {epochs}-epoch results; it holds epochs "
                f"{', '.join(k for k in rec if isinstance(rec[k], dict))} (NATS-Bench trains 200 and 12)"
            )
        try:
            seeds = list(hp["dataset_seed"][dataset])
            runs = hp["all_results"]
        except (KeyError, TypeError):
            raise UserError(
                f"{path} holds no {epochs}-epoch {dataset} results; the file is incomplete: download it again"
            ) from None
        if seed is not None:
            if seed not in seeds:
                raise UserError(
                    f"cell {index} has no {epochs}-epoch {dataset} run with seed {seed}; its seeds are "
                    f"{', '.join(map(str, seeds))} (or seed=None for their mean)"
                )
            seeds = [int(seed)]
        key = f"{OFFICIAL_METRICS[dataset][metric]}@{epochs - 1}"
        values = []
        for s in seeds:
            try:
                v = runs[(dataset, s)]["eval_acc1es"][key]
            except (KeyError, TypeError):
                raise UserError(
                    f"{path} lacks {dataset} {key} for seed {s}; the file is incomplete: download it again"
                ) from None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{path} holds a non-numeric {dataset} {key} for seed {s}: {v!r}")
            values.append(float(v))
        if not values:
            raise UserError(f"{path} lists no {epochs}-epoch {dataset} seeds; download it again")
        return float(np.mean(values))  # the official is_random=False mean

    def column(self, dataset: str, metric: str, epochs: int) -> np.ndarray:
        names = set(os.listdir(self.root))
        missing = [i for i in range(self.count) if self.cell_path(i).name not in names]
        if missing:
            raise UserError(
                f"percentile and best need the records of all {self.count} cells; {self.root} lacks "
                f"{len(missing)} of them (e.g. {self.cell_path(missing[0]).name}); use the full "
                "directory, or the packaged table (nas.load_benchmark()) for CIFAR-10 test accuracy"
            )
        return np.array([self.value(i, dataset, metric, epochs, None) for i in range(self.count)])


def _ordered(datasets: Iterable[str]) -> List[str]:
    """Distinct dataset names, the official ones first in the official order."""
    seen = list(dict.fromkeys(datasets))
    return [d for d in OFFICIAL_METRICS if d in seen] + sorted(d for d in seen if d not in OFFICIAL_METRICS)


# ---- the packaged table ----------------------------------------------------------------------
def _load_npy(name: str, dtype) -> np.ndarray:
    path = DATA_DIR / name
    fix = (
        "reinstall gumbel-nas, or load the official table instead: nas.load_benchmark('path/to/cifar10.csv') "
        "(from a checkout: python -m experiments.build_benchmark_table cifar10.csv rebuilds the packaged one)"
    )
    if not path.is_file():
        raise UserError(f"the packaged benchmark file {path} is missing; {fix}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"the packaged benchmark file {path} is corrupted ({exc}); {fix}") from None
    if arr.shape != (NUM_CELLS,) or arr.dtype != dtype:
        raise UserError(
            f"the packaged benchmark file {path} holds {arr.dtype} {arr.shape}, expected "
            f"{np.dtype(dtype)} ({NUM_CELLS},); {fix}"
        )
    return arr


@functools.lru_cache(maxsize=1)
def _official_order() -> _CodeOrder:
    codes = _load_npy(ARCH_FILE, np.uint16)
    if codes.max() >= NUM_CELLS or np.bincount(codes, minlength=NUM_CELLS).max() != 1:
        raise UserError(
            f"the packaged benchmark file {DATA_DIR / ARCH_FILE} is not a permutation of the "
            "15,625 cells; rebuild it: python -m experiments.build_benchmark_table cifar10.csv"
        )
    codes.setflags(write=False)
    return _CodeOrder(codes)


@functools.lru_cache(maxsize=1)
def _packaged_source() -> _TableSource:
    acc = _load_npy(ACC_FILE, np.uint32) / ACC_SCALE  # exact: k/10000 rounds like float("k.xxxx")
    acc.setflags(write=False)
    present = np.ones(NUM_CELLS, dtype=bool)
    return _TableSource(
        "the packaged NB201 CIFAR-10 table", {("cifar10", "test"): acc}, present, _official_order(), packaged=True
    )


# ---- CSV files --------------------------------------------------------------------------------
_METRIC_COLUMN = re.compile(r"(?P<dataset>.+)_(?P<metric>test|valid|valtest)_accuracy")


def _load_csv(path: Path) -> _TableSource:
    order = _official_order()
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"cannot read benchmark CSV {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
            rows = list(reader)
        except StopIteration:
            raise UserError(
                f"benchmark CSV {path} is empty; expected a header such as index,arch,cifar10_test_accuracy"
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not a readable CSV file ({exc})") from None
    if len(set(header)) != len(header):
        raise UserError(f"benchmark CSV {path} repeats a column name in its header {header}")
    col = {name: k for k, name in enumerate(header)}
    metric_cols = {}
    for name, k in col.items():
        m = _METRIC_COLUMN.fullmatch(name)
        if m:
            metric_cols[(m.group("dataset"), m.group("metric"))] = k
    if "index" not in col and "arch" not in col:
        raise UserError(
            f"benchmark CSV {path} has neither an 'index' nor an 'arch' column (header: {header}); "
            "it needs one of them to say which cell each row is"
        )
    if not metric_cols:
        raise UserError(
            f"benchmark CSV {path} has no accuracy column (header: {header}); name them "
            "<dataset>_<metric>_accuracy, e.g. cifar10_test_accuracy or cifar100_valid_accuracy"
        )
    columns = {key: np.full(NUM_CELLS, np.nan) for key in metric_cols}
    present = np.zeros(NUM_CELLS, dtype=bool)
    for line, row in enumerate(rows, start=2):
        if not row or all(not v.strip() for v in row):
            continue  # blank lines carry no cell
        where = f"benchmark CSV {path}, line {line}"
        if len(row) != len(header):
            raise UserError(f"{where}: {len(row)} fields, but the header has {len(header)}")
        index = None
        if "index" in col:
            text = row[col["index"]].strip()
            try:
                index = int(text)
            except ValueError:
                raise UserError(f"{where}: index {text!r} is not an integer") from None
            if not 0 <= index < NUM_CELLS:
                raise UserError(f"{where}: index {index} is out of range; NB201 indices are 0..{NUM_CELLS - 1}")
        if "arch" in col:
            try:
                found = order.find(cell_ops(row[col["arch"]]))
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
            if index is None:
                index = found
            elif index != found:
                raise UserError(
                    f"{where}: index {index} is {order.string(index)} in the official NATS-Bench order, "
                    f"but the arch column says {row[col['arch']].strip()} (official index {found}); "
                    "the CSV's indices must follow the official order"
                )
        if present[index]:
            raise UserError(f"{where}: cell {index} appears twice; keep one row per cell")
        present[index] = True
        for key, k in metric_cols.items():
            text = row[k].strip()
            try:
                v = float(text)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise UserError(f"{where}: {header[k]} {text!r} is not a number")
            columns[key][index] = v
    if not present.any():
        raise UserError(f"benchmark CSV {path} has a header but no rows")
    for arr in columns.values():
        arr.setflags(write=False)
    return _TableSource(f"the benchmark CSV {path}", columns, present, order, packaged=False)


# ---- the public class ------------------------------------------------------------------------
class NB201Benchmark:
    """Recorded accuracies of NAS-Bench-201 cells; build it with :func:`load_benchmark`.

    ``arch`` arguments take a ``nas.Genotype`` of the nb201 space, an official arch string
    ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` or an official index (an int).
    """

    def __init__(self, source: Union[_TableSource, _DirectorySource]):
        self._source = source

    @property
    def source(self) -> str:
        """Where the numbers come from, in words."""
        return self._source.name

    def __len__(self) -> int:
        """The number of cells the source holds (15,625 for the packaged table)."""
        return self._source.count

    def __repr__(self) -> str:
        return f"<NB201Benchmark: {self.source}, {len(self)} cells>"

    # ---- cells ----
    def index(self, arch: Arch) -> int:
        """The official NATS-Bench index of a cell."""
        order = self._source.order
        if isinstance(arch, (int, np.integer)) and not isinstance(arch, (bool, np.bool_)):
            i = int(arch)
            if not 0 <= i < len(order):
                raise UserError(f"cell index {i} is out of range; NB201 indices are 0..{len(order) - 1}")
            return i
        ops = cell_ops(arch)
        i = order.find(ops)
        if i is None:
            raise UserError(f"{cell_string(ops)} is not listed in {self.source}'s meta file; the file is incomplete")
        return i

    def arch_string(self, index: int) -> str:
        """The official arch string of the cell with this index."""
        return self._source.order.string(self.index(index))

    def genotype(self, arch: Arch) -> Genotype:
        """The cell as a ``nas.Genotype`` (nb201 space)."""
        return Genotype.from_nb201(self.arch_string(self.index(arch)))

    # ---- what it holds ----
    def datasets(self) -> List[str]:
        """The datasets this source answers for."""
        return self._source.datasets()

    def metrics(self, dataset: str = "cifar10") -> List[str]:
        """The metrics this source holds for ``dataset`` (``test``, ``valid``, ``valtest``)."""
        self._check_dataset(dataset)
        return self._source.metrics(dataset)

    def _check_dataset(self, dataset: str) -> None:
        available = self.datasets()
        if dataset in available:
            return
        if dataset in OFFICIAL_METRICS and isinstance(self._source, _TableSource) and self._source.packaged:
            raise UserError(
                f"the packaged table holds only cifar10 (test accuracy); dataset {dataset!r} needs the "
                f"official NATS-Bench files: {_OFFICIAL_HINT}"
            )
        raise UserError(f"unknown dataset {dataset!r}; {self.source} holds {', '.join(available)}")

    def _check(self, dataset: str, metric: str, epochs, seed) -> None:
        _check_epochs_seed(epochs, seed)
        if isinstance(self._source, _DirectorySource) and epochs not in OFFICIAL_EPOCHS:
            raise UserError(
                f"epochs={epochs}: NATS-Bench trained every cell for 200 and for 12 epochs; "
                "pass epochs=200 or epochs=12"
            )
        available = self.metrics(dataset)
        if metric in available:
            return
        if (
            isinstance(self._source, _TableSource)
            and self._source.packaged
            and metric in OFFICIAL_METRICS["cifar10-valid"]
        ):
            raise UserError(
                f"the packaged table holds only the cifar10 test metric; {metric!r} accuracy needs "
                f"dataset cifar10-valid (or cifar100, ImageNet16-120) from the official NATS-Bench "
                f"files: {_OFFICIAL_HINT}"
            )
        hint = (
            "; cifar10 is trained on all 50k images, so use dataset cifar10-valid for valid accuracy"
            if dataset == "cifar10" and metric in ("valid", "valtest")
            else ""
        )
        raise UserError(f"unknown metric {metric!r} for {dataset}; available: {', '.join(available)}{hint}")

    # ---- lookups ----
    def query(
        self, arch: Arch, dataset: str = "cifar10", metric: str = "test", epochs: int = 200, seed: Optional[int] = None
    ) -> float:
        """The recorded accuracy (%) of a cell.

        ``epochs`` is the protocol (200, or 12 in the official files); ``seed=None`` gives the mean
        over the benchmark's seeds (the official ``is_random=False``), an int one seed's run.
        """
        index = self.index(arch)
        self._check(dataset, metric, epochs, seed)
        return self._source.value(index, dataset, metric, int(epochs), seed)

    def percentile(self, arch: Arch, dataset: str = "cifar10", metric: str = "test", epochs: int = 200) -> float:
        """The cell's mid-rank percentile in the space, in %.

        ``100 * (below + equal / 2) / N``: ``below`` counts the cells scoring strictly less,
        ``equal`` the cells scoring exactly the same (the cell itself included), ``N`` all cells.
        Needs a source with every cell (the packaged table, a full CSV or directory).
        """
        index = self.index(arch)
        self._check(dataset, metric, epochs, None)
        col = self._source.column(dataset, metric, int(epochs))
        x = col[index]
        below = int(np.count_nonzero(col < x))
        equal = int(np.count_nonzero(col == x))
        return 100.0 * (below + 0.5 * equal) / len(col)

    def best(self, dataset: str = "cifar10", metric: str = "test", epochs: int = 200) -> BestCell:
        """The cell with the highest accuracy; ties go to the lowest index."""
        self._check(dataset, metric, epochs, None)
        col = self._source.column(dataset, metric, int(epochs))
        i = int(np.argmax(col))  # argmax returns the first maximum: the lowest index
        return BestCell(i, self._source.order.string(i), float(col[i]))

    def mean(self, dataset: str = "cifar10", metric: str = "test", epochs: int = 200) -> float:
        """The mean accuracy over every cell of the space: what a uniformly random cell scores on average."""
        self._check(dataset, metric, epochs, None)
        return float(np.mean(self._source.column(dataset, metric, int(epochs))))


def load_benchmark(path: Union[str, os.PathLike, None] = None) -> NB201Benchmark:
    """Open a NAS-Bench-201 source.

    * ``path=None``: the packaged table, CIFAR-10 test accuracy after 200 epochs (mean of 3 seeds)
      for all 15,625 cells; loaded once per process.
    * a directory in the official NATS-Bench topology "simple" format (``NATS-tss-v1_0-3ffb9-simple``):
      ``meta.pickle.pbz2`` is read now, each ``NNNNNN.pickle.pbz2`` on the first query of its cell.
      Datasets ``cifar10`` (metric ``test``), ``cifar10-valid`` (``test``, ``valid``), ``cifar100`` and
      ``ImageNet16-120`` (``test``, ``valid``, ``valtest``), as the official API names them.
    * a CSV file, parsed with the ``csv`` module: a header row, then one row per cell. Columns
      ``index`` (official index) and/or ``arch`` (official arch string; with both they must agree),
      plus accuracy columns named ``<dataset>_<metric>_accuracy`` with metric ``test``, ``valid`` or
      ``valtest`` (e.g. ``cifar10_test_accuracy``, ``cifar100_valid_accuracy``,
      ``ImageNet16-120_test_accuracy``), read as 200-epoch means over seeds. Other columns are ignored.
    """
    if path is None:
        return NB201Benchmark(_packaged_source())
    p = Path(path).expanduser()
    if p.is_dir():
        return NB201Benchmark(_DirectorySource(p))
    if p.is_file():
        if p.name.endswith((".pbz2", ".pickle")):
            raise UserError(f"{p} is one file of the official benchmark; pass its directory ({p.parent})")
        return NB201Benchmark(_load_csv(p))
    raise UserError(
        f"benchmark path {p} does not exist; pass the NATS-tss-v1_0-3ffb9-simple directory, a CSV "
        "file, or nothing for the packaged CIFAR-10 table"
    )


PROTOCOL = (
    "NAS-Bench-201's own training of this cell on CIFAR-10 (200 epochs, 50k training images, "
    "mean of 3 seeds), whatever data the search ran on"
)


def is_benchmark_cell(arch: Union[Genotype, str]) -> bool:
    """Whether ``arch`` is a cell NAS-Bench-201 holds (nb201 space, 4 nodes, its five ops)."""
    try:
        cell_ops(arch)
    except UserError:
        return False
    return True


def cell_report(arch: Arch, bench: Optional[NB201Benchmark] = None, epochs: Sequence[int] = (200,)) -> dict:
    """What ``inspect``, ``lookup`` and the search log say about one cell, as a JSON-able dict.

    Always the packaged CIFAR-10 test accuracy and its percentile in the space; with ``bench``
    (official files or a CSV), every dataset and metric it holds, per protocol in ``epochs``.
    """
    packaged = load_benchmark()
    i = packaged.index(arch)
    out = {
        "index": i,
        "arch": packaged.arch_string(i),
        "cifar10_test": packaged.query(i),
        "percentile": packaged.percentile(i),
        "protocol": PROTOCOL,
    }
    if bench is not None:
        tables: Dict[str, Dict[str, Dict[str, float]]] = {}
        protocols = epochs if isinstance(bench._source, _DirectorySource) else (200,)
        for e in protocols:
            tables[str(e)] = {
                ds: {m: bench.query(i, ds, m, epochs=e) for m in bench.metrics(ds)} for ds in bench.datasets()
            }
        out["source"] = bench.source
        out["epochs"] = tables
    return out


def format_cell_report(report: dict) -> List[str]:
    """Text lines for :func:`cell_report`."""
    lines = [
        f"NAS-Bench-201 CIFAR-10 test accuracy {report['cifar10_test']:.2f}%  "
        f"(percentile {report['percentile']:.1f} of the 15,625 cells; index {report['index']})",
        f"  this is {report['protocol']}",
    ]
    for e, tables in (report.get("epochs") or {}).items():
        lines.append(f"  {report['source']}, {e}-epoch protocol, mean over seeds:")
        for ds, metrics in tables.items():
            lines.append(f"    {ds:<15} " + "  ".join(f"{m} {v:.2f}%" for m, v in metrics.items()))
    return lines
