"""The preference–utility frontier of each method, on axes shared by every method of a concept.

For one method (seeds averaged per pair), over the grid's m ≥ 0, with means over pairs:

    gain(m)   = mean PrefOdds(m) − mean PrefOdds(0)       (preference bought)
    change(m) = mean UtilOdds(m) − mean UtilOdds(0)       (utility paid; ≤ 0 when it costs)

The frontier ``y*(x) = max {change(m) : gain(m) ≥ x}`` is the best utility the method keeps
while buying at least x of preference (the ``floor`` where it never gets there). Only measured
points count: between grid points a method is credited with the next point it reached, so a
coarse grid understates every method alike. Per concept,
every method is read on the same axes:

- ``target``: the median, over the methods that buy any preference, of their largest gain;
- ``area``: the mean of y* over x in [0, target] (higher is better: preference bought cheaply);
- ``utility_at_match``: y*(target / 2), utility at matched preference;
- ``preference_at_match``: x*(cost / 2), preference at matched utility, where
  ``x*(y) = max {gain(m) : change(m) ≥ y}`` is the most preference a method buys while
  keeping at least y of utility change (m = 0 always qualifies, so x* ≥ 0) and ``cost`` is the
  median, over the methods that buy any preference, of the utility change at their largest gain;

with the floor the lowest change any method reached on the concept. Intervals resample pairs
(the same resample for every method of a concept, so differences between methods are paired):
:func:`frontier_table` gives each method's values and intervals, :func:`frontier_differences`
a method minus a reference method. A concept on which no method buys any preference has no
frontier: its rows say so (``flag``) and carry no numbers; one whose target gain is below
:data:`MIN_TARGET` keeps its numbers and is flagged as read at noise level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.measure.stats import pair_bootstrap

KEYS = ["form", "method"]
_X_POINTS = 201


@dataclass(frozen=True)
class _Curves:
    """Per method: [pairs, m] PrefOdds and UtilOdds over the grid's m >= 0 (m = 0 first)."""

    names: list[tuple[str, str]]
    pref: np.ndarray  # [methods, pairs, m]
    util: np.ndarray
    grid: list[float]


def _curves(sweeps: pd.DataFrame) -> _Curves:
    rows = sweeps[sweeps["m"] >= 0]
    grid = sorted(rows["m"].unique())
    if not grid or grid[0] != 0.0:
        raise ConfigError("the frontier needs m = 0 (the unsteered point) in every sweep")
    per_pair = rows.groupby([*KEYS, "pair_id", "m"])[["pref_odds", "util_odds"]].mean()
    names = sorted(
        {(str(form), str(method)) for form, method in rows[KEYS].itertuples(index=False)}
    )
    pairs = sorted(rows["pair_id"].unique())
    index = pd.MultiIndex.from_product([pairs, grid], names=["pair_id", "m"])
    pref, util = [], []
    for form, method in names:
        table = per_pair.loc[(form, method)].reindex(index)
        pref.append(table["pref_odds"].to_numpy().reshape(len(pairs), len(grid)))
        util.append(table["util_odds"].to_numpy().reshape(len(pairs), len(grid)))
    return _Curves(names, np.stack(pref), np.stack(util), grid)


def _points(pref: np.ndarray, util: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[methods, m] gains and utility changes from [methods, pairs, m] (NaN-aware means)."""
    with np.errstate(all="ignore"):
        p, u = np.nanmean(pref, axis=1), np.nanmean(util, axis=1)
    return p - p[:, :1], u - u[:, :1]


def _frontier(gain: np.ndarray, change: np.ndarray, xs: np.ndarray, floor: float) -> np.ndarray:
    """y*(x) at each x for one method."""
    best = np.full(len(xs), floor)
    for g, c in zip(gain, change):
        if np.isfinite(g) and np.isfinite(c):
            best = np.where((xs <= g) & (c > best), c, best)
    return best


def _bought(gain: np.ndarray, change: np.ndarray, level: float) -> float:
    """x*(level): the largest gain among the points whose utility change is at least level."""
    keep = np.isfinite(gain) & np.isfinite(change) & (change >= level)
    return float(gain[keep].max()) if keep.any() else float("nan")


def _metrics(gains, changes, target: float, floor: float, cost: float = 0.0) -> np.ndarray:
    """[methods, 3]: area, utility at matched preference, preference at matched utility."""
    xs = np.linspace(0.0, target, _X_POINTS)
    out = []
    for gain, change in zip(gains, changes):
        frontier = _frontier(gain, change, xs, floor)
        out.append([frontier.mean(), frontier[_X_POINTS // 2], _bought(gain, change, cost / 2)])
    return np.array(out)


NO_FRONTIER = "no frontier: no method raises the mean PrefOdds above the unsteered one"
MIN_TARGET = 0.1  # nats of mean PrefOdds: a smaller target gain is read at noise level
SMALL_TARGET = f"target gain below {MIN_TARGET} nats: the frontier is read at noise level"


def _axes(curves: _Curves) -> tuple[float, float, float] | None:
    """(target gain, floor, cost), or None when no method buys any preference."""
    gains, changes = _points(curves.pref, curves.util)
    with np.errstate(all="ignore"):
        best = np.nanmax(np.where(np.isfinite(gains), gains, -np.inf), axis=1)
    buys = np.isfinite(best) & (best > 0)
    if not buys.any():
        return None
    target = float(np.median(best[buys]))
    at_best = [
        change[np.nanargmax(np.where(np.isfinite(gain), gain, -np.inf))]
        for gain, change, buying in zip(gains, changes, buys)
        if buying
    ]
    cost = float(np.nanmedian(at_best)) if np.isfinite(at_best).any() else 0.0
    return target, float(np.nanmin(changes)), min(cost, 0.0)


def _with_intervals(
    curves: _Curves, compute: Callable[[np.ndarray, np.ndarray], np.ndarray], n_bootstrap, seed
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``compute(pref, util)`` on all pairs, and its 95% interval bounds resampling pairs."""
    point = compute(curves.pref, curves.util)
    names = [str(i) for i in range(point.size)]

    def statistic(chosen: np.ndarray) -> dict[str, float]:
        values = compute(curves.pref[:, chosen], curves.util[:, chosen]).ravel()
        return dict(zip(names, values))

    intervals = pair_bootstrap(curves.pref.shape[1], statistic, names, n_bootstrap, seed)
    low = np.array([intervals[n][0] for n in names]).reshape(point.shape)
    high = np.array([intervals[n][1] for n in names]).reshape(point.shape)
    return point, low, high


def frontier_table(sweeps: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per concept × form × method: target, area, utility_at_match,
    preference_at_match and intervals."""
    rows: list[dict] = []
    for concept, group in sweeps.groupby("concept", sort=False):
        curves = _curves(group)
        axes = _axes(curves)
        if axes is None:  # said, not fitted: one row per method with the reason
            rows.extend(
                {"concept": concept, "form": form, "method": method, "flag": NO_FRONTIER}
                for form, method in curves.names
            )
            continue
        target, floor, cost = axes
        compute = partial(_metrics_of, target=target, floor=floor, cost=cost)
        point, low, high = _with_intervals(curves, compute, n_bootstrap, seed)
        for i, (form, method) in enumerate(curves.names):
            rows.append(
                {
                    "concept": concept,
                    "form": form,
                    "method": method,
                    "target_gain": target,
                    "floor": floor,
                    "area": point[i, 0],
                    "area_low": low[i, 0],
                    "area_high": high[i, 0],
                    "utility_at_match": point[i, 1],
                    "utility_at_match_low": low[i, 1],
                    "utility_at_match_high": high[i, 1],
                    "utility_level": cost / 2,
                    "preference_at_match": point[i, 2],
                    "preference_at_match_low": low[i, 2],
                    "preference_at_match_high": high[i, 2],
                    "n_pairs": curves.pref.shape[1],
                    "flag": SMALL_TARGET if target < MIN_TARGET else "",
                }
            )
    return pd.DataFrame(rows)


def _metrics_of(
    pref: np.ndarray, util: np.ndarray, target: float, floor: float, cost: float = 0.0
) -> np.ndarray:
    return _metrics(*_points(pref, util), target, floor, cost)


def _differences_of(
    pref, util, spots: list[int], target: float, floor: float, cost: float
) -> np.ndarray:
    metrics = _metrics_of(pref, util, target, floor, cost)  # [methods, 3]
    return np.stack([metrics - metrics[s] for s in spots])  # [references, methods, 3]


def frontier_differences(
    sweeps: pd.DataFrame,
    references: Sequence[tuple[str, str]],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each method minus each reference (form, method) of its concept, paired over pairs."""
    rows = []
    for concept, group in sweeps.groupby("concept", sort=False):
        curves = _curves(group)
        axes = _axes(curves)
        present = [r for r in references if r in curves.names]
        if not present or axes is None:
            continue
        target, floor, cost = axes
        spots = [curves.names.index(r) for r in present]
        compute = partial(_differences_of, spots=spots, target=target, floor=floor, cost=cost)
        point, low, high = _with_intervals(curves, compute, n_bootstrap, seed)
        for r, reference in enumerate(present):
            for i, (form, method) in enumerate(curves.names):
                if (form, method) == reference:
                    continue
                rows.append(
                    {
                        "concept": concept,
                        "form": form,
                        "method": method,
                        "reference": "/".join(reference),
                        "area_difference": point[r, i, 0],
                        "area_difference_low": low[r, i, 0],
                        "area_difference_high": high[r, i, 0],
                        "utility_difference": point[r, i, 1],
                        "utility_difference_low": low[r, i, 1],
                        "utility_difference_high": high[r, i, 1],
                        "preference_difference": point[r, i, 2],
                        "preference_difference_low": low[r, i, 2],
                        "preference_difference_high": high[r, i, 2],
                    }
                )
    return pd.DataFrame(rows)
