"""Choosing a manifold estimate by what it predicts, on pairs it has not seen.

For every estimate (a ``nonconformity_<name>`` column of the designed drop table), hook and
target, a linear model is fitted across pairs and scored out of fold (``GroupKFold`` by pair):

- ``utility_drop``: UtilOdds(0) − UtilOdds(m) of the pair;
- ``log_kl``: log(1 + KL) of the steered next-token distribution at the answer positions from
  the unsteered one, the failure of the text itself.

Each estimate is scored alone and beside |m| (``r2_with_push``), against |m| alone
(``r2_push_only``): an estimate earns its place only if it predicts beyond how hard the state was
pushed. ``off_manifold`` (the norm of the displacement outside the global subspace) is scored the
same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from workbench.errors import ConfigError

TARGETS = ("utility_drop", "log_kl")


def _held_out_r2(features: np.ndarray, target: np.ndarray, groups: np.ndarray, folds: int) -> float:
    predicted = cross_val_predict(
        LinearRegression(), features, target, groups=groups, cv=GroupKFold(n_splits=folds)
    )
    return float(r2_score(target, predicted))


def estimate_comparison(
    table: pd.DataFrame, estimates: Sequence[str], *, folds: int = 5
) -> pd.DataFrame:
    """One row per hook × target × estimate: held-out R² alone, with |m|, |m| alone, Spearman."""
    table = table.assign(log_kl=np.log1p(table["kl_from_unsteered"].clip(lower=0)))
    predictors = {name: f"nonconformity_{name}" for name in estimates}
    predictors["off_manifold"] = "off_manifold"
    missing = [c for c in predictors.values() if c not in table.columns]
    if missing:
        raise ConfigError(f"the drop table has no column {missing[0]!r}")
    rows = []
    for (hook, layer), frame in table.groupby(["hook", "analysis_layer"], sort=False):
        groups = frame["pair_id"].to_numpy()
        n_folds = min(folds, len(np.unique(groups)))
        if n_folds < 2:
            raise ConfigError(f"comparing estimates needs at least 2 pairs at {hook}")
        push = frame[["abs_m"]].to_numpy(float)
        for target in TARGETS:
            y = frame[target].to_numpy(float)
            baseline = _held_out_r2(push, y, groups, n_folds)
            for name, column in predictors.items():
                x = frame[[column]].to_numpy(float)
                rows.append(
                    {
                        "hook": hook,
                        "analysis_layer": int(layer),
                        "target": target,
                        "estimate": name,
                        "r2_alone": _held_out_r2(x, y, groups, n_folds),
                        "r2_with_push": _held_out_r2(np.hstack([x, push]), y, groups, n_folds),
                        "r2_push_only": baseline,
                        "spearman": float(spearmanr(x[:, 0], y)[0]),
                    }
                )
    return pd.DataFrame(rows)


def best_estimates(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per target: each estimate's mean held-out R² (with |m|) over hooks and its gain over |m|
    alone, best first."""
    gain = comparison.assign(gain=comparison["r2_with_push"] - comparison["r2_push_only"])
    summary = gain.groupby(["target", "estimate"])[["r2_with_push", "r2_alone", "gain"]].mean()
    return summary.reset_index().sort_values(["target", "r2_with_push"], ascending=[True, False])
