"""Testing the paper's claim: does off-manifold displacement predict the utility drop, and does
measured validity track the fitted validity decay?

Joins the displacement table (at one hook, averaged over the two sides) with the sweep table,
per pair and m (m != 0): utility drop = UtilOdds(0) - UtilOdds(m) of the same pair. Reports
Pearson and Spearman correlations, with percentile bootstrap intervals over pairs, between the
drop and (a) the off-manifold norm, (b) the on-manifold norm; and the correlation between the
measured validity D̂(m) and the fitted utility decay D_u(m) over the grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, rankdata, spearmanr

from workbench.errors import ConfigError
from workbench.manifold.displacement import measured_validity
from workbench.measure.fits import DECAY_PARAMS, CurveFit, decay
from workbench.measure.stats import pair_bootstrap


def utility_drop_table(sweep: pd.DataFrame, displacement: pd.DataFrame, hook: str) -> pd.DataFrame:
    """Per pair and m != 0: utility drop, off- and on-manifold displacement at ``hook``."""
    at_hook = displacement[displacement["hook"] == hook]
    if at_hook.empty:
        raise ConfigError(f"the displacement table has no rows at {hook!r}")
    moved = at_hook.groupby(["pair_id", "m"])[["off_manifold", "on_manifold"]].mean().reset_index()
    utility = sweep[["pair_id", "m", "util_odds"]]
    base = utility[utility["m"] == 0].set_index("pair_id")["util_odds"]
    if base.empty:
        raise ConfigError("the sweep table has no m = 0 rows to measure a utility drop from")
    table = moved[moved["m"] != 0].merge(utility, on=["pair_id", "m"], how="inner")
    table["utility_drop"] = table["pair_id"].map(base) - table["util_odds"]
    return table.dropna(subset=["utility_drop"])


def correlation_with_interval(
    table: pd.DataFrame, x: str, y: str, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Pearson and Spearman r of x and y, with 95% bootstrap intervals resampling pairs."""
    if len(table) < 3 or table[x].nunique() < 2 or table[y].nunique() < 2:
        raise ConfigError(f"too few distinct points to correlate {x} and {y} ({len(table)} rows)")
    result = {
        "pearson": float(pearsonr(table[x], table[y])[0]),
        "spearman": float(spearmanr(table[x], table[y])[0]),
        "n_rows": len(table),
    }
    groups = [rows for _, rows in table.groupby("pair_id", sort=False)]

    def correlations(chosen: np.ndarray) -> dict[str, float]:
        sample = pd.concat([groups[i] for i in chosen])
        if sample[x].nunique() < 2 or sample[y].nunique() < 2:
            return {}
        return {
            "pearson": float(pearsonr(sample[x], sample[y])[0]),
            "spearman": float(spearmanr(sample[x], sample[y])[0]),
        }

    intervals = pair_bootstrap(
        len(groups), correlations, ["pearson", "spearman"], n_bootstrap, seed
    )
    for name, (low, high) in intervals.items():
        result[f"{name}_low"], result[f"{name}_high"] = low, high
    return result


def validity_against_fit(displacement: pd.DataFrame, hook: str, utility_fit: CurveFit) -> dict:
    """Measured D̂(m) at ``hook`` beside the fitted D_u(m), and their correlation over m."""
    validity = measured_validity(displacement)
    validity = validity[validity["hook"] == hook].sort_values("m")
    fitted = decay(validity["m"].to_numpy(), *(utility_fit.params[p] for p in DECAY_PARAMS))
    measured = validity["validity"].to_numpy()
    spread = measured.std() > 0 and fitted.std() > 0
    return {
        "m": validity["m"].tolist(),
        "measured_validity": measured.tolist(),
        "fitted_decay": fitted.tolist(),
        "pearson": float(pearsonr(measured, fitted)[0]) if spread else float("nan"),
        "spearman": float(spearmanr(measured, fitted)[0]) if spread else float("nan"),
    }


# -- the designed test: a matched-push family, on- and off-manifold displacement jointly -------
DISPLACEMENT_COLUMNS = ("on_manifold", "off_manifold", "kl_from_unsteered")


def designed_drop_table(sweep: pd.DataFrame, displacement: pd.DataFrame) -> pd.DataFrame:
    """Per family member (``method``), pair, m != 0 and hook: the utility drop beside the
    displacement (averaged over the two answers) and every estimate's nonconformity."""
    measured = [
        c
        for c in displacement.columns
        if c in DISPLACEMENT_COLUMNS
        or c == "density_score"
        or c.startswith(("nonconformity_", "beyond_"))
    ]
    keys = ["method", "pair_id", "m", "hook", "analysis_layer"]
    moved = displacement.groupby(keys)[measured].mean().reset_index()
    utility = sweep[["method", "pair_id", "m", "util_odds"]]
    base = sweep[sweep["m"] == 0].groupby("pair_id")["util_odds"].first()
    if base.empty:
        raise ConfigError("the sweep table has no m = 0 rows to measure a utility drop from")
    table = moved[moved["m"] != 0].merge(utility, on=["method", "pair_id", "m"], how="inner")
    table["utility_drop"] = table["pair_id"].map(base) - table["util_odds"]
    table["abs_m"] = table["m"].abs()
    return table.dropna(subset=["utility_drop"])


JOINT_COLUMNS = ["utility_drop", "off_manifold", "on_manifold", "abs_m"]


def _within_pair(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``values`` [n, c] with each group's (pair's) mean removed: pair fixed effects."""
    _, index = np.unique(group, return_inverse=True)
    sums = np.zeros((index.max() + 1, values.shape[1]))
    np.add.at(sums, index, values)
    counts = np.bincount(index)[:, None]
    return values - (sums / counts)[index]


def _residual(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    design = np.column_stack([X, np.ones(len(X))])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coefficients


def _partial_r(y: np.ndarray, x: np.ndarray, controls: list[np.ndarray]) -> float:
    rx, ry = _residual(x, np.column_stack(controls)), _residual(y, np.column_stack(controls))
    if rx.std() < 1e-12 or ry.std() < 1e-12:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _partial(values: np.ndarray, group: np.ndarray) -> dict[str, float]:
    """Partial correlations of the utility drop with off- and on-manifold displacement within
    pairs (pair fixed effects), each controlling for the other (``partial_r_*``), also for |m|
    (``*_push``), and on ranks (``rank_r_*``); the joint fit's R² and the part of it off adds.

    ``values`` holds the :data:`JOINT_COLUMNS`; ``group`` the pair of every row.
    """
    y, off, on, push = _within_pair(values, group).T
    ranked = np.column_stack([rankdata(column) for column in values.T])
    ry, roff, ron, _ = _within_pair(ranked, group).T
    result = {
        "partial_r_off": _partial_r(y, off, [on]),
        "partial_r_on": _partial_r(y, on, [off]),
        "partial_r_off_push": _partial_r(y, off, [on, push]),
        "partial_r_on_push": _partial_r(y, on, [off, push]),
        "rank_r_off": _partial_r(ry, roff, [ron]),
        "rank_r_on": _partial_r(ry, ron, [roff]),
    }
    total = float((y**2).sum())  # y is already centred within pairs
    if total > 0:
        full = float((_residual(y, np.column_stack([off, on])) ** 2).sum())
        reduced = float((_residual(y, on[:, None]) ** 2).sum())
        result["r2_joint"] = 1 - full / total
        result["r2_gain_off"] = (reduced - full) / total
    return result


PARTIALS = [
    "partial_r_off",
    "partial_r_on",
    "partial_r_off_push",
    "partial_r_on_push",
    "rank_r_off",
    "rank_r_on",
    "r2_joint",
    "r2_gain_off",
]


def joint_regression(table: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per hook: does off-manifold displacement predict the utility drop beyond on-manifold
    displacement? Partial correlations (:func:`_partial`) with 95% intervals resampling pairs.

    At the intervention's own hook the family's push is matched, so on² + off² = (|m|·c)²
    there and controlling for |m| as well leaves only the curvature of that relation: read
    ``partial_r_off`` (on held fixed, the push moved off the subspace) first.
    """
    rows = []
    for (hook, layer), frame in table.groupby(["hook", "analysis_layer"], sort=False):
        pair_ids = frame["pair_id"].unique()
        if len(frame) < 5 or len(pair_ids) < 2:
            raise ConfigError(f"too few rows at {hook} for the joint regression ({len(frame)})")
        row = {"hook": hook, "analysis_layer": int(layer), "n_rows": len(frame)}
        groups = [frame.loc[frame["pair_id"] == p, JOINT_COLUMNS].to_numpy(float) for p in pair_ids]
        values = np.concatenate(groups)
        owner = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
        row |= {"n_pairs": len(pair_ids), **_partial(values, owner)}
        for name, (low, high) in _partial_intervals(groups, n_bootstrap, seed).items():
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows).sort_values("analysis_layer", ignore_index=True)


def _partial_intervals(
    groups: list[np.ndarray], n_bootstrap: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of :func:`_partial`, resampling pairs (a resampled pair is a new one)."""

    def statistic(chosen: np.ndarray) -> dict[str, float]:
        values = np.concatenate([groups[j] for j in chosen])
        owner = np.concatenate([np.full(len(groups[j]), i) for i, j in enumerate(chosen)])
        return _partial(values, owner)

    return pair_bootstrap(len(groups), statistic, PARTIALS, n_bootstrap, seed)
