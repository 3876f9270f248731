"""The preference–utility trade-off of every method, fitted where it moves, with held-out R².

Per concept × form × method of a comparison: the preference and utility curves
(:mod:`workbench.measure.fits`) are fitted on the validation pairs' per-m means and scored on
the test pairs' (never fitted there), beside the paper's R² (preference > 0.95, utility > 0.97).
Each row also carries the preference regimes and the utility breakdown m read off the fit, and,
where the held-out R² falls short of the paper's, why:

- ``noise ceiling``: the share of the held-out means' spread over m that is not their
  sampling noise, ``1 − mean(SE²) / var(means)``; a fit cannot score far above it, so a low
  ceiling says the curve is measured too noisily (too few pairs for the effect), not that its
  shape is wrong;
- a fit below a high ceiling misses the curve's shape (the reason names the worst-fitted m);
- a curve that does not move with m is flagged flat and not fitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.measure.fits import (
    FlatCurveError,
    breakdown_multiplier,
    fit_sweep_curve,
    preference_regimes,
)

PAPER_R2 = {"preference": 0.95, "utility": 0.97}
VALUES = {"preference": "pref_odds", "utility": "util_odds"}
KEYS = ("concept", "form", "method")


def noise_ceiling(table: pd.DataFrame, value: str) -> float:
    """``1 − mean(SE²) / var(means)`` of the per-m means of ``value`` (NaN if they are equal)."""
    stats = table.dropna(subset=[value]).groupby("m")[value].agg(["mean", "sem"])
    spread = float(stats["mean"].var(ddof=0)) if len(stats) > 1 else 0.0
    if not spread > 0:
        return float("nan")
    return float(1.0 - np.nanmean(stats["sem"].to_numpy() ** 2) / spread)


def tradeoff_table(
    test_sweeps: pd.DataFrame, validation_sweeps: pd.DataFrame, seed: int = 0
) -> pd.DataFrame:
    """One row per concept × form × method × curve: fitted on validation, R² on test."""
    fitting = validation_sweeps.assign(split="fit")
    held_out = test_sweeps.assign(split="held_out")
    rows = []
    for key, test in held_out.groupby(list(KEYS), sort=False):
        labels = dict(zip(KEYS, key))
        fit_rows = fitting
        for column, value in labels.items():
            fit_rows = fit_rows[fit_rows[column] == value]
        both = pd.concat([fit_rows, test], ignore_index=True)
        m_range = (float(test["m"].min()), float(test["m"].max()))
        for kind in ("preference", "utility"):
            rows.append(_row(labels, both, test, kind, m_range, seed))
    return pd.DataFrame(rows)


def _row(labels, both, test, kind, m_range, seed) -> dict:
    value = VALUES[kind]
    row: dict = {
        **labels,
        "curve": kind,
        "paper_r2": PAPER_R2[kind],
        "noise_ceiling": noise_ceiling(test, value),
        "n_fit_pairs": int(both.loc[both["split"] == "fit", "pair_id"].nunique()),
        "n_held_out_pairs": int(test["pair_id"].nunique()),
    }
    if row["n_fit_pairs"] == 0:
        return {**row, "why": "no validation sweep to fit on"}
    try:
        fit = fit_sweep_curve(
            both, kind, train_split="fit", test_split="held_out", n_bootstrap=0, seed=seed
        )
    except FlatCurveError as flat:
        return {**row, "why": str(flat)}
    except ValueError as error:
        return {**row, "why": f"not fitted: {error}"}
    row.update(r2_fit=fit.r2_train, r2_held_out=fit.r2_test, r2_held_out_offset=fit.r2_test_offset)
    if kind == "preference":
        regimes = preference_regimes(fit, m_range)
        row["linear_until"] = regimes.linear_until[1]
        row["converged_from"] = regimes.converged_from[1]
    else:
        row["breakdown_m"] = breakdown_multiplier(fit, m_range)[1]
    row["why"] = _why(fit, test, value, row)
    if fit.flags:
        row["why"] = "; ".join(w for w in (row["why"], *fit.flags) if w)
    return row


def _why(fit, test: pd.DataFrame, value: str, row: dict) -> str:
    """Empty where the held-out R² reaches the paper's; else the likelier reason it does not."""
    r2, ceiling = row.get("r2_held_out", np.nan), row["noise_ceiling"]
    if np.isfinite(r2) and r2 >= row["paper_r2"]:
        return ""
    if np.isfinite(ceiling) and ceiling < row["paper_r2"]:
        return (
            f"noisy: the held-out means' noise ceiling is {ceiling:.2f}, below the paper's "
            f"{row['paper_r2']:.2f} (too few pairs for the curve's spread)"
        )
    means = test.dropna(subset=[value]).groupby("m")[value].mean()
    residual = means - fit.predict(means.index.to_numpy(float))
    worst = residual.abs().idxmax()
    return (
        f"shape: the fit misses the held-out curve most at m = {worst:g} "
        f"({residual[worst]:+.2f} nats), with a noise ceiling of {ceiling:.2f}"
    )
