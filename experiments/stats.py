"""Statistics of the studies: mean ± std, the pairwise win share and its permutation p-value,
Kendall's tau-b. Plain Python on lists of floats."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from typing import Iterable, Sequence, Tuple


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


def win_share_p_value(
    found: Sequence[float], drawn: Sequence[float], max_exact: int = 200_000, samples: int = 100_000, seed: int = 0
) -> float:
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


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable handled as in tau-b); nan for fewer than 2 pairs."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return float("nan") if denom == 0 else (concordant - discordant) / denom
