import numpy as np
import pandas as pd
import pytest

from workbench.measure.fits import (
    FlatCurveError,
    breakdown_multiplier,
    check_curve_moves,
    continuity_gap,
    curve,
    decay,
    fit_curve,
    fit_sweep_curve,
    fit_table,
    preference_regimes,
    r_squared,
)

GRID = np.linspace(-10, 10, 21)


def _continuous(params):
    """Set m_minus so that D(0-) = D(0+) exactly."""
    d0 = (1 + params["m_plus"] ** 2 / params["L_plus"]) ** (-params["p_plus"])
    params["m_minus"] = -np.sqrt(params["L_minus"] * (d0 ** (-1 / params["p_minus"]) - 1))
    return params


PREF = _continuous(
    dict(
        alpha=2.0,
        beta=1.0,
        b=-0.5,
        m_plus=1.0,
        L_plus=4.0,
        p_plus=1.5,
        m_minus=0.0,
        L_minus=2.0,
        p_minus=1.0,
    )
)
UTIL = _continuous(
    dict(
        beta=6.0, b=-4.0, m_plus=0.5, L_plus=9.0, p_plus=0.8, m_minus=0.0, L_minus=6.0, p_minus=1.2
    )
)


def _sweep_table(kind, params, n_pairs=48, pair_sd=0.05, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    value = "pref_odds" if kind == "preference" else "util_odds"
    rows = []
    for i in range(n_pairs):
        offset = rng.normal(0, pair_sd)
        for m in GRID:
            y = curve(kind, np.array([m]), params)[0] + offset + rng.normal(0, noise)
            rows.append(
                {"pair_id": f"p{i}", "split": "test" if i % 4 == 3 else "train", "m": m, value: y}
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kind", "truth"), [("preference", PREF), ("utility", UTIL)])
def test_fits_recover_known_parameters(kind, truth):
    fit = fit_sweep_curve(_sweep_table(kind, truth), kind, n_bootstrap=10)
    assert fit.success and fit.flags == []
    assert fit.r2_train > 0.99 and fit.r2_test > 0.99 and fit.r2_test_offset >= fit.r2_test
    for name, true_value in truth.items():
        assert fit.params[name] == pytest.approx(true_value, abs=0.1 + 0.1 * abs(true_value)), name
    assert abs(continuity_gap(fit.params)) < 1e-6
    dense = np.linspace(-10, 10, 201)
    assert np.abs(fit.predict(dense) - curve(kind, dense, truth)).max() < 0.1
    low, high = fit.intervals["beta"]
    assert low <= fit.params["beta"] <= high


def test_decay_is_continuous_at_zero_and_one_there_when_centred():
    params = dict(m_plus=0.0, L_plus=2.0, p_plus=1.0, m_minus=0.0, L_minus=5.0, p_minus=3.0)
    assert decay(np.array([0.0]), *params.values())[0] == 1.0
    assert continuity_gap(PREF) == pytest.approx(0.0, abs=1e-12)


def test_r_squared_and_constant_curves():
    y = np.array([1.0, 2.0, 3.0])
    assert r_squared(y, y) == 1.0
    assert np.isnan(r_squared(np.ones(3), np.ones(3)))
    table = _sweep_table("preference", dict(PREF, alpha=0.0, beta=0.0), pair_sd=0.0, noise=0.0)
    with pytest.raises(FlatCurveError, match="does not move with m"):
        fit_sweep_curve(table, "preference", n_bootstrap=0)


def test_a_curve_within_its_noise_is_flat_not_fitted():
    """Pairs vary a lot, the mean barely moves with m: flagged, whatever the optimiser could do."""
    table = _sweep_table("preference", dict(PREF, alpha=0.001, beta=0.001), pair_sd=3.0, noise=0.0)
    with pytest.raises(FlatCurveError, match="flat"):
        fit_sweep_curve(table, "preference", n_bootstrap=0)
    moving = _sweep_table("preference", PREF, pair_sd=3.0, noise=0.0)
    check_curve_moves(moving[moving["split"] == "train"], "pref_odds")  # no error


def test_too_few_points_and_nans():
    with pytest.raises(ValueError, match="at least 5 distinct multipliers"):
        fit_curve(np.array([-1.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0]), "preference")
    with pytest.raises(ValueError, match="NaN"):
        fit_curve(GRID, np.where(GRID > 5, np.nan, GRID), "utility")
    table = _sweep_table("utility", UTIL)
    table.loc[table.index[:5], "util_odds"] = np.nan  # e.g. undefined utility
    fit = fit_sweep_curve(table, "utility", n_bootstrap=0)
    assert any("5 NaN values" in f for f in fit.flags)
    with pytest.raises(ValueError, match="kind"):
        curve("validity", GRID, PREF)


def test_regimes_and_breakdown_on_the_fitted_curves():
    pref = fit_sweep_curve(_sweep_table("preference", PREF), "preference", n_bootstrap=0)
    regimes = preference_regimes(pref, (-10.0, 10.0))
    neg_linear, pos_linear = regimes.linear_until
    neg_conv, pos_conv = regimes.converged_from
    assert neg_linear < 0 < pos_linear
    assert pos_conv is None or pos_conv > pos_linear
    assert neg_conv is None or neg_conv < neg_linear
    util = fit_sweep_curve(_sweep_table("utility", UTIL), "utility", n_bootstrap=0)
    negative, positive = breakdown_multiplier(util, (-10.0, 10.0), margin=1.0)
    for m in (negative, positive):
        assert m is not None
        assert curve("utility", np.array([m]), UTIL)[0] == pytest.approx(
            UTIL["beta"]
            * decay(
                np.array([0.0]),
                *(UTIL[k] for k in ("m_plus", "L_plus", "p_plus", "m_minus", "L_minus", "p_minus")),
            )[0]
            + UTIL["b"]
            - 1.0,
            abs=0.2,
        )
    with pytest.raises(ValueError):
        breakdown_multiplier(pref, (-10.0, 10.0))


def test_fit_table_groups_and_reports_both_kinds():
    pref = _sweep_table("preference", PREF)
    util = _sweep_table("utility", UTIL)
    table = pref.assign(
        util_odds=util["util_odds"], concept="c", form="vector", method="dm", layer=3, site="resid"
    )
    fits = fit_table(table, n_bootstrap=0)
    assert list(fits["kind"]) == ["preference", "utility"]
    assert (fits["r2_train"] > 0.99).all() and (fits["concept"] == "c").all()
