"""Intervals over pairs: one percentile bootstrap for every table that reports a 95% interval.

The resamples are drawn by :func:`scipy.stats.bootstrap` (indices of pairs resampled with
replacement, seeded); a statistic may return NaN for a resample where it is undefined (a fit
that fails, a correlation of a constant), and such resamples are left out of that statistic's
percentiles instead of turning the interval into NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import bootstrap

Statistic = Callable[[np.ndarray], Mapping[str, float]]


def pair_bootstrap(
    n_pairs: int,
    statistic: Statistic,
    names: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ``statistic`` (pair indices -> {name: value}) over pairs.

    ``statistic`` receives the indices of one resample (``n_pairs`` of ``0..n_pairs-1``, with
    repeats) and returns a value per name in ``names``. Returns ``{name: (low, high)}``, NaN
    where fewer than two pairs or no defined resample exist.
    """
    undefined = {name: (np.nan, np.nan) for name in names}
    if n_pairs < 2 or n_resamples < 1:
        return undefined

    def values(indices: np.ndarray) -> np.ndarray:
        result = statistic(indices.astype(int))
        return np.array([result.get(name, np.nan) for name in names], dtype=float)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-distribution notes; NaNs are handled below
        result = bootstrap(
            (np.arange(n_pairs),),
            values,
            n_resamples=n_resamples,
            vectorized=False,
            method="percentile",
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
        distribution = np.asarray(result.bootstrap_distribution, float).reshape(len(names), -1)
        tail = 100 * (1 - confidence) / 2
        intervals: dict[str, tuple[float, float]] = {}
        for name, row in zip(names, distribution):
            row = row[np.isfinite(row)]
            if row.size == 0:
                intervals[name] = (np.nan, np.nan)
            else:
                intervals[name] = (
                    float(np.percentile(row, tail)),
                    float(np.percentile(row, 100 - tail)),
                )
    return intervals
