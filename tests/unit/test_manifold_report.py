import numpy as np
import pandas as pd
import pytest

from workbench.manifold.claim import correlation_with_interval, utility_drop_table


def _tables(coupled: bool, seed=0):
    rng = np.random.default_rng(seed)
    sweep, displacement = [], []
    for i in range(30):
        base = rng.normal(-40, 2)
        for m in (-4.0, -2.0, 0.0, 2.0, 4.0):
            off = abs(m) * (1 + rng.random())
            drop = 0.8 * off if coupled else rng.normal(0, 1)
            sweep.append({"pair_id": f"p{i}", "m": m, "util_odds": base - (drop if m else 0.0)})
            for side in ("positive", "negative"):
                displacement.append(
                    {
                        "pair_id": f"p{i}",
                        "m": m,
                        "side": side,
                        "hook": "h",
                        "off_manifold": off,
                        "on_manifold": rng.random(),
                    }
                )
    return pd.DataFrame(sweep), pd.DataFrame(displacement)


def test_a_coupled_drop_correlates_and_an_independent_one_does_not():
    drops = utility_drop_table(*_tables(coupled=True), "h")
    assert len(drops) == 30 * 4 and (drops["m"] != 0).all()
    strong = correlation_with_interval(drops, "off_manifold", "utility_drop", n_bootstrap=200)
    assert strong["pearson"] > 0.99 and strong["pearson_low"] > 0.95
    noise = correlation_with_interval(
        utility_drop_table(*_tables(coupled=False), "h"),
        "off_manifold",
        "utility_drop",
        n_bootstrap=200,
    )
    assert noise["pearson_low"] < 0 < noise["pearson_high"]


def test_errors_name_what_is_missing():
    sweep, displacement = _tables(True)
    with pytest.raises(ValueError, match="no rows at 'x'"):
        utility_drop_table(sweep, displacement, "x")
    with pytest.raises(ValueError, match="no m = 0"):
        utility_drop_table(sweep[sweep["m"] != 0], displacement, "h")
    with pytest.raises(ValueError, match="too few"):
        correlation_with_interval(pd.DataFrame({"pair_id": ["a"], "x": [1], "y": [2]}), "x", "y")
