"""Cached searches and retrains, run in-process through the library's API.

:class:`Runner` calls ``nas.search.run_search`` and ``nas.retrain.run_retrain``
(``progress=False``) in its own run directory per run, named by a hash of the
resolved config (and, for a retrain, the architecture), so studies that need the
same run share it. A cached run is reused only when it finished and was made by
the same library source (:func:`experiments.machine.library_fingerprint`, kept in
the run's ``DONE`` file); anything else is deleted and run again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from experiments.machine import library_fingerprint
from experiments.settings import DEFAULT_CONFIG
from experiments.tables import log
from nas.config import Config, load_config, to_dict
from nas.genotype import Genotype
from nas.io import read_jsonl
from nas.retrain import run_retrain
from nas.runtime import resolve_device
from nas.schedule import search_epochs
from nas.search import run_search

CACHE_VERSION = 1


def config(overrides: Sequence[str], base: Path = DEFAULT_CONFIG) -> Config:
    """``base`` (the shipped default config) with ``overrides`` applied."""
    return load_config(base, list(overrides))


def cache_key(kind: str, cfg: Config, extra: str = "") -> str:
    """The run directory's hash: the kind of run, the resolved config and ``extra`` (the architecture)."""
    text = json.dumps({"v": CACHE_VERSION, "kind": kind, "cfg": to_dict(cfg), "extra": extra}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class Runner:
    """Runs searches and retrains in ``cache`` and times them (``timings``, one entry per run)."""

    cache: Path
    timings: List[Dict[str, Any]] = field(default_factory=list)
    fingerprint: str = field(default_factory=library_fingerprint)

    def done_record(self, run_dir: Path) -> Optional[Dict[str, Any]]:
        """The run's ``DONE`` record when it finished with this library, else None."""
        try:
            done = json.loads((run_dir / "DONE").read_text())
        except (OSError, ValueError):
            return None
        return done if done.get("library") == self.fingerprint else None

    def mark_done(self, run_dir: Path, seconds: float) -> None:
        (run_dir / "DONE").write_text(json.dumps({"seconds": seconds, "library": self.fingerprint}))

    @staticmethod
    def device(cfg: Config) -> torch.device:
        return resolve_device(cfg.run.device)

    def search(self, overrides: Sequence[str], label: str = "", base: Path = DEFAULT_CONFIG) -> Dict[str, Any]:
        """A finished search of ``base`` with these overrides:
        ``{genotype, run_dir, metrics, seconds, cached, config}``."""
        cfg = config(overrides, base)
        run_dir = self.cache / f"search-{cfg.supernet.mode}-s{cfg.run.seed}-{cache_key('search', cfg)}"
        metrics = read_jsonl(run_dir / "metrics.jsonl")
        done = self.done_record(run_dir)
        finished = (
            done is not None
            and (run_dir / "genotype.json").exists()
            and bool(metrics)
            and metrics[-1]["epoch"] >= search_epochs(cfg)
        )
        t0 = time.perf_counter()
        if finished:
            geno = Genotype.from_json((run_dir / "genotype.json").read_text())
            seconds, cached = done["seconds"], True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            result = run_search(cfg, run_dir, self.device(cfg), progress=False, log=lambda s: None)
            geno, seconds, cached = result.genotype, time.perf_counter() - t0, False
            self.mark_done(run_dir, seconds)
            metrics = read_jsonl(run_dir / "metrics.jsonl")
        log(f"search {label} {'(cached) ' if cached else ''}{seconds:.0f} s: {geno}")
        self.timings.append({"kind": "search", "label": label, "seconds": seconds, "cached": cached})
        return {
            "genotype": geno,
            "run_dir": run_dir,
            "metrics": metrics,
            "seconds": seconds,
            "cached": cached,
            "config": cfg,
        }

    def retrain(
        self, overrides: Sequence[str], geno: Genotype, label: str = "", base: Path = DEFAULT_CONFIG
    ) -> Dict[str, Any]:
        """A finished retrain of ``geno``: ``{test_acc, test_loss, params, macs, seconds, cached, run_dir}``."""
        cfg = config(overrides, base)
        arch = str(geno)
        run_dir = self.cache / f"retrain-s{cfg.run.seed}-{cache_key('retrain', cfg, arch)}"
        result_path = run_dir / "result.json"
        t0 = time.perf_counter()
        done = self.done_record(run_dir)
        if result_path.exists() and done is not None:
            res = json.loads(result_path.read_text())
            seconds, cached = done["seconds"], True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            # the architecture only: a searched genotype's probabilities are no part of the retrain
            plain = Genotype(
                space=geno.space,
                normal=geno.normal,
                reduce=geno.reduce,
                normal_concat=geno.normal_concat,
                reduce_concat=geno.reduce_concat,
            )
            r = run_retrain(cfg, plain, run_dir, self.device(cfg), progress=False, log=lambda s: None)
            res = {
                "test_acc": r.test_acc,
                "test_loss": r.test_loss,
                "params": r.params,
                "macs": r.macs,
                "epochs": r.epochs_done,
            }
            seconds, cached = time.perf_counter() - t0, False
            self.mark_done(run_dir, seconds)
        log(f"retrain {label} {'(cached) ' if cached else ''}{seconds:.0f} s: {res['test_acc']:.2f}%  {arch}")
        self.timings.append({"kind": "retrain", "label": label, "seconds": seconds, "cached": cached})
        return {
            "test_acc": float(res["test_acc"]),
            "test_loss": float(res["test_loss"]),
            "params": int(res["params"]),
            "macs": int(res["macs"]),
            "seconds": seconds,
            "cached": cached,
            "run_dir": run_dir,
        }
