"""Sweep a concept's DiffMean steering vector, fit the preference and utility curves, and set
the R² next to the paper's (preference > 0.95, utility > 0.97 in most of its settings)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.data.concepts import load_concept
from workbench.directions.layer_sweep import layer_sweep
from workbench.hooks.sites import Site
from workbench.measure.fits import (
    FlatCurveError,
    breakdown_multiplier,
    fit_sweep_curve,
    preference_regimes,
)
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.steering.concept_vectors import concept_vector

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PAPER_R2 = {"preference": 0.95, "utility": 0.97}
DEFAULT_CURVE_GRID = (-16.0, -8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


def concept_curves(
    model: TransformerBridge,
    concept: str,
    *,
    site: Site = "block",
    layer: int | None = None,
    multipliers: Sequence[float] = DEFAULT_CURVE_GRID,
    n_bootstrap: int = 100,
    seed: int = 0,
    cache_dir: Path | None = None,
    batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sweep table, fit table) for the DiffMean vector of ``concept``.

    The vector is the raw difference of means at the site's output hook (the block output
    ``hook_resid_post`` for the paper's block site and the residual stream,
    ``mlp.out.hook_out`` for ``mlp_out``) of the recommended layer, so m = 1 adds the mean
    activation difference between the two answers.
    """
    pairs = load_concept(concept)
    if layer is None:
        layer = layer_sweep(
            model, pairs, methods=("diff_of_means",), progress=False
        ).recommended_layer
    vector = concept_vector(model, pairs.train, layer, site=site, normalise=False, seed=seed)
    labels = SweepLabels(method="diff_of_means", seed=seed)
    table = run_sweep(
        model, pairs, vector, multipliers, labels=labels, cache_dir=cache_dir, batch_size=batch_size
    )
    m_range = (min(multipliers), max(multipliers))
    rows = []
    for kind in ("preference", "utility"):
        try:
            fit = fit_sweep_curve(table, kind, n_bootstrap=n_bootstrap, seed=seed)
        except FlatCurveError as flat:  # flagged, not fitted
            nan = float("nan")
            rows.append(
                {
                    "concept": concept,
                    "layer": layer,
                    "site": site,
                    "kind": kind,
                    "r2_train": nan,
                    "r2_test": nan,
                    "r2_test_offset": nan,
                    "paper_r2": PAPER_R2[kind],
                    "flags": str(flat),
                }
            )
            continue
        row = {"concept": concept, "layer": layer, "site": site, **fit.to_row()}
        row["paper_r2"] = PAPER_R2[kind]
        if kind == "preference":
            regimes = preference_regimes(fit, m_range)
            row["linear_until"], row["converged_from"] = (
                regimes.linear_until,
                regimes.converged_from,
            )
        else:
            row["breakdown_m"] = breakdown_multiplier(fit, m_range)
        row["undefined_utility_rows"] = int((~table["util_defined"]).sum())
        rows.append(row)
    return table, pd.DataFrame(rows)


def format_r2_table(fits: pd.DataFrame) -> str:
    """The R² table beside the paper's figures, as plain text.

    "held-out" applies the train fit to the held-out per-m means as is (the paper's protocol);
    "(offset refit)" lets only the constant b move, separating the curve's shape from a shift
    between the two splits' baselines.
    """
    lines = [
        f"{'concept':<14}{'curve':<12}{'R² train':>10}{'95% CI':>18}{'R² held-out':>13}"
        f"{'(offset refit)':>16}{'paper':>8}  flags"
    ]
    for _, row in fits.iterrows():
        low, high = row.get("r2_ci_low"), row.get("r2_ci_high")
        ci = f"[{low:.3f}, {high:.3f}]" if pd.notna(low) else "-"
        lines.append(
            f"{row['concept']:<14}{row['kind']:<12}{row['r2_train']:>10.3f}{ci:>18}"
            f"{row['r2_test']:>13.3f}{row['r2_test_offset']:>16.3f}"
            f"{'> ' + str(row['paper_r2']):>8}  {row['flags'] or ''}"
        )
    return "\n".join(lines)
