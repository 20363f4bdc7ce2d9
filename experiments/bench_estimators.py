"""Bias and variance of the hard sample's gradient estimators against the exact gradient.

A categorical toy problem where everything is known in closed form: K = 4 choices with fixed
logits ``alpha`` and the quadratic ``f(D) = ||D - c||^2`` of the one-hot sample ``D``. The exact
gradient of ``E[f(D)] = sum_k p_k f(e_k)``, ``p = softmax(alpha)``, is
``sum_k f(e_k) p_k (e_k - p)``. Every estimator sees ``df/dD = 2 (D - c)`` at its sampled ``D``
(what a supernet's backward hands the sampler) and returns a gradient for ``alpha``; over many
draws we record its bias (the norm of the mean minus the exact gradient, relative to the exact
gradient's norm) and its variance (the mean squared distance of a draw from the mean, relative
to the exact gradient's squared norm), per temperature.

    python -m experiments.bench_estimators                      # full run (10-25 s)
    python -m experiments.bench_estimators --quick --out /tmp/e.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from experiments.machine import write_record
from experiments.settings import RESULTS
from experiments.tables import table
from nas.sampler import gumbel_softmax

DEFAULT_OUT = RESULTS / "bench_estimators.json"
ALPHA = [1.0, 0.2, -0.4, -1.0]
C = [0.9, 0.6, 0.1, 0.3]
TAUS = [0.3, 1.0, 3.0]
# (name, estimator, samples)
ESTIMATORS = [
    ("st", "st", None),
    ("gumbel_rao K=4", "gumbel_rao", 4),
    ("gumbel_rao K=16", "gumbel_rao", 16),
    ("reinmax", "reinmax", None),
]


def exact_gradient(alpha: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """d/dalpha sum_k p_k f(e_k), f(D) = ||D - c||^2."""
    p = alpha.softmax(-1)
    eye = torch.eye(alpha.numel(), dtype=alpha.dtype)
    f = ((eye - c) ** 2).sum(-1)  # f at every vertex
    return (f[:, None] * p[:, None] * (eye - p)).sum(0)


def estimate(estimator: str, samples: Optional[int], tau: float, draws: int, seed: int) -> torch.Tensor:
    """``draws`` gradients of one estimator, ``[draws, K]`` (float64)."""
    alpha = torch.tensor(ALPHA, dtype=torch.float64).expand(draws, len(ALPHA)).clone().requires_grad_(True)
    c = torch.tensor(C, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    y = gumbel_softmax(alpha, tau=tau, hard=True, estimator=estimator, samples=samples, generator=gen)
    ((y - c) ** 2).sum().backward()
    return alpha.grad


def run(draws: int, seed: int) -> List[Dict[str, Any]]:
    exact = exact_gradient(torch.tensor(ALPHA, dtype=torch.float64), torch.tensor(C, dtype=torch.float64))
    norm2 = float((exact**2).sum())
    rows = []
    for tau in TAUS:
        for name, estimator, samples in ESTIMATORS:
            g = estimate(estimator, samples, tau, draws, seed)
            mean = g.mean(0)
            rows.append(
                {
                    "tau": tau,
                    "estimator": name,
                    "relative_bias": float(((mean - exact) ** 2).sum().sqrt()) / norm2**0.5,
                    "relative_variance": float(((g - mean) ** 2).sum(-1).mean()) / norm2,
                    "relative_mse": float(((g - exact) ** 2).sum(-1).mean()) / norm2,
                    "cosine_mean_exact": float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)),
                }
            )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="few draws, for the tests")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    draws = 2_000 if args.quick else args.draws
    rows = run(draws, args.seed)
    text = table(
        ["tau", "estimator", "bias / |grad|", "variance / |grad|^2", "MSE / |grad|^2", "cos(mean, exact)"],
        [
            [
                r["tau"],
                r["estimator"],
                f"{r['relative_bias']:.3f}",
                f"{r['relative_variance']:.2f}",
                f"{r['relative_mse']:.2f}",
                f"{r['cosine_mean_exact']:.3f}",
            ]
            for r in rows
        ],
    )
    record = {
        "experiment": "bench_estimators",
        "quick": args.quick,
        "benchmark": "gradient estimators of the hard Gumbel-softmax sample on f(D) = ||D - c||^2, K = 4",
        "alpha": ALPHA,
        "c": C,
        "draws": draws,
        "seed": args.seed,
        "rows": rows,
        "table": text,
    }
    write_record(Path(args.out), record)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
