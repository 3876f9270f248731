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
from scipy.stats import pearsonr, spearmanr

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
