"""Shared helpers for the experiment scripts (search_vs_random, compare_modes, seed_variance, arch_matters).

Everything runs in-process through the library API (``nas.search.run_search``,
``nas.retrain.run_retrain``). Searches and retrains are cached by a hash of
their resolved config (and, for a retrain, the architecture), so scripts that
need the same run share it: the gdas searches of ``search_vs_random`` are the
ones ``compare_modes`` and ``seed_variance`` read. A cached run is reused only
when it finished and was made by the same library source (a hash of
``nas/*.py``); anything else is deleted and run again.

The settings of the full runs live here (``DATA_SYNTHETIC``, ``SEARCH``,
``RETRAIN_*``, ``CIFAR_*``) so every script uses the same budget; ``--quick``
swaps in tiny ones.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import pickle
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as ``python experiments/x.py`` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nas.cli import resolve_device  # noqa: E402
from nas.config import Config, load_config, to_dict  # noqa: E402
from nas.genotype import Genotype, nb201_edges  # noqa: E402
from nas.inspect import collapse_counts, edge_names  # noqa: E402
from nas.io import read_jsonl  # noqa: E402
from nas.ops import NB201_OPS  # noqa: E402
from nas.retrain import run_retrain  # noqa: E402
from nas.search import run_search  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
DEFAULT_CACHE = ROOT / "runs" / "experiments_cache"   # runs/ is git-ignored
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
DEFAULT_CIFAR_ROOT = ROOT / "data"                      # holds cifar-10-batches-py/
CACHE_VERSION = 1

# ---------------------------------------------------------------------------
# Budgets. Full runs: the NB201 space at C=8, N=1 (as configs/default.yaml),
# searched and retrained on 2 shared CPU cores. Quick runs: a few steps.
# ---------------------------------------------------------------------------
# The synthetic glyph task has no use for crop/flip (positions and orientations are already random)
# and learns much faster without it: with augmentation an all-nor_conv_3x3 network is often still at
# chance after 300 steps.
DATA_SYNTHETIC = ["data.name=synthetic", "data.num_train=4000", "data.num_test=1000", "data.augment=false"]
SEARCH = [                      # pinned here, so later edits of configs/default.yaml do not change it
    "supernet.space=nb201", "supernet.mode=gdas", "supernet.C=8", "supernet.N=1",
    "search.epochs=10", "search.batch_size=64", "search.weights.lr=0.05", "search.weights.lr_min=0.001",
    "search.arch.lr=0.003", "search.tau.schedule=linear", "search.tau.max=10.0", "search.tau.min=0.1",
    "search.warmup_epochs=0", "search.prune=off",
]
# The supernet learns the glyph task slowly (its paths change every step): 10 warm-up epochs train the
# weights alone, then 20 epochs search; with 10 epochs in all it was still near chance (experiments/README.md)
SEARCH_SYNTHETIC = ["search.epochs=30", "search.warmup_epochs=10"]
RETRAIN_SYNTHETIC = [           # the discrete network from scratch: 5 epochs over the 4000 images (310 steps)
    "retrain.nb201.C=8", "retrain.nb201.N=1", "retrain.nb201.epochs=5", "retrain.nb201.batch_size=64",
    # lr 0.02, not 0.05: at 0.05 (and 0.1) an all-conv network stayed on the ln 5 plateau for
    # 10 epochs on one seed of five; at 0.02 all five left it within 5 epochs (experiments/README.md)
    "retrain.nb201.lr=0.02",
]
RETRAIN_CIFAR = [               # 6 epochs of 40 steps (about 3 passes over the 5000 images), crop + flip
    "retrain.nb201.C=8", "retrain.nb201.N=1", "retrain.nb201.epochs=6", "retrain.nb201.batch_size=64",
    "retrain.nb201.steps_per_epoch=40", "retrain.nb201.lr=0.05",
]
CIFAR_TRAIN, CIFAR_TEST = 5000, 2000   # the fixed CIFAR-10 subset (seeded), see cifar_subset()

QUICK_DATA_SYNTHETIC = ["data.name=synthetic", "data.num_train=256", "data.num_test=128", "data.image_size=16"]
QUICK_SEARCH = ["supernet.C=4", "search.batch_size=32", "search.steps_per_epoch=3", "search.epochs=2",
                "search.warmup_epochs=0", "search.prune=off"]
QUICK_RETRAIN = ["retrain.nb201.C=4", "retrain.nb201.N=1", "retrain.nb201.epochs=1", "retrain.nb201.batch_size=32",
                 "retrain.nb201.steps_per_epoch=3"]
QUICK_CIFAR_TRAIN, QUICK_CIFAR_TEST = 256, 128


def data_overrides(dataset: str, quick: bool, cifar_root: Optional[Path] = None) -> List[str]:
    """The data section: the built-in synthetic set, or the CIFAR-10 subset folder made by cifar_subset()."""
    if dataset == "synthetic":
        return list(QUICK_DATA_SYNTHETIC if quick else DATA_SYNTHETIC)
    if dataset == "cifar10":
        if cifar_root is None:
            raise ValueError("cifar10 needs the root of the subset folder")
        # augment pinned: configs/default.yaml (the base config) turns it off for the synthetic data
        return ["data.name=cifar10", f"data.root={cifar_root}", "data.verify_md5=false", "data.augment=true"]
    raise ValueError(f"unknown dataset {dataset!r}")


def search_overrides(dataset: str, quick: bool) -> List[str]:
    if quick:
        return list(QUICK_SEARCH)
    return list(SEARCH) + (list(SEARCH_SYNTHETIC) if dataset == "synthetic" else [])


def retrain_overrides(dataset: str, quick: bool) -> List[str]:
    if quick:
        return list(QUICK_RETRAIN)
    return list(RETRAIN_CIFAR if dataset == "cifar10" else RETRAIN_SYNTHETIC)


def budget(quick: bool) -> Dict[str, Any]:
    """The settings, for the JSON records."""
    return {"base_config": str(DEFAULT_CONFIG.relative_to(ROOT)), "search_synthetic": search_overrides("synthetic", quick),
            "search_cifar10": search_overrides("cifar10", quick),
            "retrain_synthetic": retrain_overrides("synthetic", quick),
            "retrain_cifar10": retrain_overrides("cifar10", quick),
            "synthetic_data": data_overrides("synthetic", quick),
            "cifar10_subset": {"train": QUICK_CIFAR_TRAIN if quick else CIFAR_TRAIN,
                               "test": QUICK_CIFAR_TEST if quick else CIFAR_TEST, "seed": 0}}


# ---------------------------------------------------------------------------
# Machine description, command, threads
# ---------------------------------------------------------------------------
def cpu_model() -> Optional[str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def nproc() -> Optional[int]:
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return os.cpu_count()


def machine(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The machine a figure was measured on (and the device, when given)."""
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "nproc": nproc(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cuda_version"] = torch.version.cuda
        else:
            info["device_name"] = info["cpu_model"] or platform.processor() or "cpu"
    return info


def library_fingerprint() -> str:
    """A hash of the library's source (nas/*.py): a cached run is reused only if it was made by the same code."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "nas").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def git_state() -> Dict[str, Any]:
    """HEAD commit and whether nas/ or configs/ differ from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "library_dirty": bool(git("status", "--porcelain", "--", "nas", "configs")),
            "library_fingerprint": library_fingerprint()}


def command_line() -> str:
    """The command that ran this script, relative to the repository root where possible."""
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    return shlex.join(["python", *argv])


def set_threads(threads: Optional[int]) -> int:
    """``threads`` torch threads; by default 1 when the machine is already busy, else all cores.

    On a shared 2-core machine one thread is often faster than two under contention.
    """
    if threads is None:
        try:
            busy = os.getloadavg()[0] >= 1.0
        except OSError:
            busy = False
        threads = 1 if busy else max(1, os.cpu_count() or 1)
    torch.set_num_threads(int(threads))
    return int(threads)


# ---------------------------------------------------------------------------
# Statistics and formatting
# ---------------------------------------------------------------------------
def mean_std(values: Iterable[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value; NaN for none)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    if len(vals) == 1:
        return vals[0], 0.0
    return statistics.fmean(vals), statistics.stdev(vals)


def pairwise_win_share(found: Sequence[float], drawn: Sequence[float]) -> float:
    """Share of (found, drawn) pairs with found > drawn, ties counting half (the Mann-Whitney U / n m)."""
    if not found or not drawn:
        return float("nan")
    return sum((a > b) + 0.5 * (a == b) for a in found for b in drawn) / (len(found) * len(drawn))


def win_share_p_value(found: Sequence[float], drawn: Sequence[float], max_exact: int = 200_000,
                      samples: int = 100_000, seed: int = 0) -> float:
    """One-sided permutation p-value of :func:`pairwise_win_share`: the chance that ``len(found)`` values
    drawn without replacement from the pooled values win at least as large a share.

    Exact (every split of the pool) up to ``max_exact`` splits, else ``samples`` seeded random splits.
    Small samples cannot reach small p: with 3 against 10 the least possible p is 1/286.
    """
    if not found or not drawn:
        return float("nan")
    pool, n = list(found) + list(drawn), len(found)
    observed = pairwise_win_share(found, drawn) - 1e-12  # >= up to rounding of the shares

    def share(picked: Sequence[int]) -> float:
        chosen = set(picked)
        return pairwise_win_share([pool[i] for i in picked], [v for i, v in enumerate(pool) if i not in chosen])

    exact = math.comb(len(pool), n)
    if exact <= max_exact:
        splits: Iterable[Sequence[int]] = itertools.combinations(range(len(pool)), n)
        count = exact
    else:
        rng = random.Random(seed)
        splits = (rng.sample(range(len(pool)), n) for _ in range(samples))
        count = samples
    return sum(share(s) >= observed for s in splits) / count


def fmt_pm(values: Iterable[float], digits: int = 2) -> str:
    vals = list(values)
    m, s = mean_std(vals)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into the README as is, reads fine on a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------
def uniform_cell(op: str) -> Genotype:
    """The NB201 cell with ``op`` on all six edges."""
    return Genotype(space="nb201", normal=[(op, j) for _, j in nb201_edges()], normal_concat=[3])


def random_nb201(rng: random.Random, ops: Sequence[str] = NB201_OPS) -> Genotype:
    """A uniform draw from the 5^6 NB201 cells (each edge's op independent and uniform)."""
    return Genotype(space="nb201", normal=[(rng.choice(list(ops)), j) for _, j in nb201_edges()], normal_concat=[3])


def random_nb201_cells(k: int, seed: int) -> List[Genotype]:
    rng = random.Random(seed)
    return [random_nb201(rng) for _ in range(k)]


def param_free(geno: Genotype) -> int:
    """Parameter-free ops (skip, pool, none) in the normal cell, from nas.inspect.collapse_counts."""
    c = collapse_counts(geno)["normal"]
    return c["skip"] + c["pool"] + c["none"]


def cell_ops(geno: Genotype) -> List[str]:
    return [op for op, _ in geno.normal]


EDGES = edge_names("nb201")


# ---------------------------------------------------------------------------
# CIFAR-10 subset
# ---------------------------------------------------------------------------
def cifar_available(root: Optional[Path]) -> bool:
    return root is not None and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file()


def cifar_subset(root: Path, n_train: int, n_test: int, cache: Path, seed: int = 0) -> Path:
    """A fixed, seeded CIFAR-10 subset as an extracted ``cifar-10-batches-py`` folder; returns its root.

    The library's ``data.train_subset`` draws a different subset per ``run.seed``
    and always evaluates on the full 10,000 test images; this copy fixes both
    (``n_train`` training images, ``n_test`` test images, drawn once with
    ``seed``), so every search and retrain sees the same data and each
    per-epoch evaluation is cheap. It is read with ``data.verify_md5=false``.
    """
    from nas.data import load_dataset

    dest = Path(cache) / f"cifar10-sub-{n_train}-{n_test}-s{seed}"
    folder = dest / "cifar-10-batches-py"
    done = folder / "DONE"
    if done.exists():
        return dest
    full = load_dataset("cifar10", root, verify_md5=False)
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(full.train_x.shape[0], generator=g)[:n_train].sort().values
    te = torch.randperm(full.test_x.shape[0], generator=g)[:n_test].sort().values
    tmp = dest / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def dump(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        batch = {b"data": x.reshape(x.shape[0], -1).numpy().astype(np.uint8),
                 b"labels": [int(v) for v in y.tolist()]}
        with open(tmp / name, "wb") as f:
            pickle.dump(batch, f)

    parts = torch.tensor_split(tr, 5)
    for i, part in enumerate(parts, start=1):
        dump(f"data_batch_{i}", full.train_x[part], full.train_y[part])
    dump("test_batch", full.test_x[te], full.test_y[te])
    (tmp / "DONE").write_text(json.dumps({"source": str(root), "n_train": n_train, "n_test": n_test, "seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return dest


# ---------------------------------------------------------------------------
# Cached searches and retrains
# ---------------------------------------------------------------------------
def config(overrides: Sequence[str], base: Path = DEFAULT_CONFIG) -> Config:
    return load_config(base, list(overrides))


def _key(kind: str, cfg: Config, extra: str = "") -> str:
    text = json.dumps({"v": CACHE_VERSION, "kind": kind, "cfg": to_dict(cfg), "extra": extra}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Runner:
    """Runs searches and retrains in ``cache`` and times them.

    A cached run is reused only when it finished and was made by the same
    library source (its ``DONE`` file records :func:`library_fingerprint`).
    """
    cache: Path
    timings: List[Dict[str, Any]] = field(default_factory=list)
    fingerprint: str = field(default_factory=library_fingerprint)

    def _done(self, run_dir: Path) -> Optional[Dict[str, Any]]:
        try:
            done = json.loads((run_dir / "DONE").read_text())
        except (OSError, ValueError):
            return None
        return done if done.get("library") == self.fingerprint else None

    def _mark_done(self, run_dir: Path, seconds: float) -> None:
        (run_dir / "DONE").write_text(json.dumps({"seconds": seconds, "library": self.fingerprint}))

    def _device(self, cfg: Config) -> torch.device:
        return resolve_device(cfg.run.device)

    def search(self, overrides: Sequence[str], label: str = "", base: Path = DEFAULT_CONFIG) -> Dict[str, Any]:
        """A finished search of ``base`` with these overrides: ``{genotype, run_dir, metrics, seconds, cached}``."""
        cfg = config(overrides, base)
        run_dir = self.cache / f"search-{cfg.supernet.mode}-s{cfg.run.seed}-{_key('search', cfg)}"
        metrics = read_jsonl(run_dir / "metrics.jsonl")
        done = self._done(run_dir)
        finished = done is not None and (run_dir / "genotype.json").exists() and bool(metrics) \
            and metrics[-1]["epoch"] >= cfg.search.epochs
        t0 = time.perf_counter()
        if finished:
            geno = Genotype.from_json((run_dir / "genotype.json").read_text())
            seconds, cached = done["seconds"], True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            result = run_search(cfg, run_dir, self._device(cfg), progress=False, log=lambda s: None)
            geno, seconds, cached = result.genotype, time.perf_counter() - t0, False
            self._mark_done(run_dir, seconds)
            metrics = read_jsonl(run_dir / "metrics.jsonl")
        log(f"search {label} {'(cached) ' if cached else ''}{seconds:.0f} s: {geno}")
        self.timings.append({"kind": "search", "label": label, "seconds": seconds, "cached": cached})
        return {"genotype": geno, "run_dir": run_dir, "metrics": metrics, "seconds": seconds, "cached": cached,
                "config": cfg}

    def retrain(self, overrides: Sequence[str], geno: Genotype, label: str = "") -> Dict[str, Any]:
        """A finished retrain of ``geno``: ``{test_acc, test_loss, params, macs, seconds, cached}``."""
        cfg = config(overrides)
        arch = str(geno)
        run_dir = self.cache / f"retrain-s{cfg.run.seed}-{_key('retrain', cfg, arch)}"
        result_path = run_dir / "result.json"
        t0 = time.perf_counter()
        done = self._done(run_dir)
        if result_path.exists() and done is not None:
            res = json.loads(result_path.read_text())
            seconds, cached = done["seconds"], True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            plain = Genotype(space=geno.space, normal=geno.normal, reduce=geno.reduce,
                             normal_concat=geno.normal_concat, reduce_concat=geno.reduce_concat)
            r = run_retrain(cfg, plain, run_dir, self._device(cfg), progress=False, log=lambda s: None)
            res = {"test_acc": r.test_acc, "test_loss": r.test_loss, "params": r.params, "macs": r.macs,
                   "epochs": r.epochs_done}
            seconds, cached = time.perf_counter() - t0, False
            self._mark_done(run_dir, seconds)
        log(f"retrain {label} {'(cached) ' if cached else ''}{seconds:.0f} s: {res['test_acc']:.2f}%  {arch}")
        self.timings.append({"kind": "retrain", "label": label, "seconds": seconds, "cached": cached})
        return {"test_acc": float(res["test_acc"]), "test_loss": float(res["test_loss"]), "params": int(res["params"]),
                "macs": int(res["macs"]), "seconds": seconds, "cached": cached, "run_dir": run_dir}


# ---------------------------------------------------------------------------
# Command line and output
# ---------------------------------------------------------------------------
def parser(description: str, default_out: str, dataset_option: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if dataset_option:
        p.add_argument("--dataset", default="synthetic", choices=["synthetic", "cifar10"],
                       help="synthetic (the built-in data set, default) or cifar10 (the fixed subset)")
        p.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py/ (default: data/)")
    p.add_argument("--quick", action="store_true", help="tiny settings (a few steps), for the tests")
    p.add_argument("--out", default=None, help=f"JSON output (default: experiments/results/{default_out}; "
                                                "with --quick: experiments/results/quick_<name>)")
    p.add_argument("--cache", default=None,
                   help=f"folder of cached runs (default: {DEFAULT_CACHE.relative_to(ROOT)}; with --quick a "
                        "temporary folder, deleted at the end)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 when the machine is already busy, else all cores)")
    p.set_defaults(default_out=default_out)
    return p


@dataclass
class Context:
    args: argparse.Namespace
    runner: Runner
    out: Path
    threads: int
    started: float
    machine: Dict[str, Any]
    code: Dict[str, Any]
    _tmp: Optional[str] = None

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def setup(args: argparse.Namespace) -> Context:
    threads = set_threads(args.threads)
    tmp = None
    if args.cache:
        cache = Path(args.cache)
    elif args.quick:
        tmp = tempfile.mkdtemp(prefix="nas-exp-quick-")
        cache = Path(tmp)
    else:
        cache = DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (f"quick_{args.default_out}" if args.quick else args.default_out)
    runner = Runner(cache)
    return Context(args, runner, out, threads, time.perf_counter(), machine(), git_state(), tmp)


def finish(ctx: Context, name: str, payload: Dict[str, Any], text: str) -> None:
    """Write the JSON (with machine, command, timings) and print ``text`` (the table) last."""
    compute = sum(t["seconds"] for t in ctx.runner.timings)
    fresh = sum(t["seconds"] for t in ctx.runner.timings if not t["cached"])
    record = {
        "experiment": name,
        "command": command_line(),
        "quick": bool(ctx.args.quick),
        "machine": ctx.machine,
        "threads": ctx.threads,
        "code": ctx.code,
        **payload,
        "wall_seconds": time.perf_counter() - ctx.started,
        "compute_seconds_all_runs": compute,
        "compute_seconds_fresh_runs": fresh,
        "runs": ctx.runner.timings,
        "table": text,
    }
    ctx.out.parent.mkdir(parents=True, exist_ok=True)
    ctx.out.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    ctx.close()
    print(f"wrote {ctx.out}", file=sys.stderr)
    print(text, flush=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Genotype):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


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


def cifar_data(ctx: Context, root: Optional[str]) -> Optional[Path]:
    """The root of the fixed CIFAR-10 subset, built from ``root`` on first use; None (with a message) if absent."""
    src = Path(root) if root else DEFAULT_CIFAR_ROOT
    if not cifar_available(src):
        msg = (f"SKIPPING the CIFAR-10 part: no {src / 'cifar-10-batches-py'} (build it with "
               "`python ../shared/data/cifar10/build_cifar10.py data/` from the repository root, "
               "or pass --cifar-root)")
        print(msg, file=sys.stderr, flush=True)
        return None
    n_train, n_test = (QUICK_CIFAR_TRAIN, QUICK_CIFAR_TEST) if ctx.args.quick else (CIFAR_TRAIN, CIFAR_TEST)
    return cifar_subset(src, n_train, n_test, ctx.runner.cache)


def dataset_overrides(ctx: Context) -> List[str]:
    """The data section for ``--dataset``; exits with status 2 when CIFAR-10 is asked for but missing."""
    if ctx.args.dataset == "cifar10":
        root = cifar_data(ctx, ctx.args.cifar_root)
        if root is None:
            ctx.close()
            raise SystemExit(2)
        return data_overrides("cifar10", ctx.args.quick, root)
    return data_overrides("synthetic", ctx.args.quick)
