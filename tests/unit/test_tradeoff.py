"""The trade-off table: fitted on validation pairs, scored on test pairs, and a reason
wherever the held-out R² falls short of the paper's."""

import numpy as np
import pandas as pd
import pytest

from workbench.measure.fits import curve
from workbench.measure.tradeoff import noise_ceiling, tradeoff_table

GRID = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)
DECAY = dict(m_plus=0.0, L_plus=1.0, p_plus=1.0, m_minus=0.0, L_minus=1.0, p_minus=1.0)


def _sweeps(method: str, n_pairs: int, noise: float, moves: bool, rng) -> pd.DataFrame:
    pref = dict(alpha=6.0 if moves else 0.0, beta=2.0 if moves else 0.0, b=-1.0, **DECAY)
    util = dict(beta=8.0 if moves else 0.0, b=-10.0, **DECAY)
    rows = []
    for pair in range(n_pairs):
        for m in GRID:
            rows.append(
                dict(
                    concept="c",
                    form="vector",
                    method=method,
                    pair_id=f"{method}{pair}",
                    m=m,
                    pref_odds=float(curve("preference", np.array([m]), pref)[0])
                    + rng.normal(0, noise),
                    util_odds=float(curve("utility", np.array([m]), util)[0])
                    + rng.normal(0, noise),
                )
            )
    return pd.DataFrame(rows)


def test_a_clean_curve_reaches_the_paper_and_noisy_or_flat_ones_say_why():
    rng = np.random.default_rng(0)
    test = pd.concat(
        [
            _sweeps("clean", 24, 0.2, True, rng),
            _sweeps("noisy", 24, 8.0, True, rng),  # measured too noisily on test
            _sweeps("flat", 24, 0.01, False, rng),
        ]
    )
    validation = pd.concat(
        [
            _sweeps("clean", 6, 0.2, True, rng),
            _sweeps("noisy", 6, 0.2, True, rng),
            _sweeps("flat", 6, 0.01, False, rng),
        ]
    )
    table = tradeoff_table(test, validation).set_index(["method", "curve"])
    clean = table.loc[("clean", "preference")]
    assert clean["r2_held_out"] > 0.98 and clean["why"] == ""
    assert clean["n_fit_pairs"] == 6 and clean["n_held_out_pairs"] == 24
    assert table.loc[("clean", "utility"), "r2_held_out"] > 0.98
    noisy = table.loc[("noisy", "preference")]
    assert noisy["noise_ceiling"] < 0.95 and noisy["why"].startswith("noisy")
    assert table.loc[("flat", "preference"), "why"].startswith("flat")
    assert np.isnan(table.loc[("flat", "preference"), "r2_held_out"])


def test_noise_ceiling_is_one_without_noise_and_falls_with_it():
    rng = np.random.default_rng(1)
    quiet = _sweeps("q", 30, 1e-6, True, rng)
    loud = _sweeps("l", 30, 30.0, True, rng)
    assert noise_ceiling(quiet, "pref_odds") == pytest.approx(1.0, abs=1e-6)
    assert noise_ceiling(loud, "pref_odds") < noise_ceiling(quiet, "pref_odds")
