"""The preference–utility frontier on shared axes: areas, matched utility, paired differences."""

import numpy as np
import pandas as pd
import pytest

from workbench.measure.frontier import frontier_differences, frontier_table


def _sweeps(seed: int = 0) -> pd.DataFrame:
    """Three methods on 16 pairs: 'free' buys preference at no utility cost, 'costly' pays
    one nat per nat, 'inert' buys nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair in range(16):
        base_p, base_u = rng.normal(), rng.normal()
        for method, gain, cost in (("free", 1.0, 0.0), ("costly", 1.0, 1.0), ("inert", 0.0, 0.5)):
            for m in (-1.0, 0.0, 0.5, 1.0, 2.0):
                rows.append(
                    {
                        "concept": "c",
                        "form": "vector",
                        "method": method,
                        "pair_id": f"p{pair}",
                        "m": m,
                        "pref_odds": base_p + gain * max(m, 0) * rng.uniform(0.9, 1.1),
                        "util_odds": base_u - cost * max(m, 0) * rng.uniform(0.9, 1.1),
                    }
                )
    return pd.DataFrame(rows)


def test_frontier_ranks_cheap_preference_first():
    table = frontier_table(_sweeps(), n_bootstrap=200).set_index("method")
    assert table.loc["free", "target_gain"] == pytest.approx(2.0, abs=0.1)  # median best gain
    assert table.loc["free", "area"] == pytest.approx(0.0, abs=0.05)
    # costly, measured points only: y* = -0.5 on (0, 0.5], -1 on (0.5, 1], -2 on (1, 2]
    assert table.loc["costly", "area"] == pytest.approx(-1.37, abs=0.08)
    assert table.loc["costly", "utility_at_match"] == pytest.approx(-1.0, abs=0.15)
    # inert never buys preference: the floor (the lowest change on the concept) everywhere > 0
    assert table.loc["inert", "utility_at_match"] == pytest.approx(table.loc["inert", "floor"])
    assert (table["flag"] == "").all()  # a 2-nat target is not noise
    tiny = _sweeps().assign(pref_odds=lambda t: t["pref_odds"] * 0.01)
    assert frontier_table(tiny, n_bootstrap=0)["flag"].str.contains("noise").all()
    for method in table.index:
        assert (
            table.loc[method, "area_low"]
            <= table.loc[method, "area"]
            <= table.loc[method, "area_high"]
        )


def test_differences_are_paired_and_exclude_zero_when_they_should():
    diffs = frontier_differences(_sweeps(), [("vector", "costly")], n_bootstrap=200)
    free = diffs.set_index("method").loc["free"]
    assert free["reference"] == "vector/costly"
    assert free["area_difference"] == pytest.approx(1.37, abs=0.08)
    assert free["area_difference_low"] > 0.5
    assert free["utility_difference_low"] > 0.5


def test_a_concept_nobody_steers_has_no_frontier():
    flat = _sweeps()
    flat["pref_odds"] = flat.groupby("pair_id")["pref_odds"].transform("first")
    table = frontier_table(flat, n_bootstrap=0)
    assert table["flag"].str.startswith("no frontier").all() and "area" not in table
    assert frontier_differences(flat, [("vector", "costly")], n_bootstrap=0).empty


def test_preference_at_matched_utility_reads_the_dual_frontier():
    # free: gain m at no cost; costly: gain m for m nats; cheap: gain m for 0.2·m² nats. Costs
    # at each method's best gain (m = 2): 0, -2, -0.8; their median is -0.8, so the level is
    # -0.4: free keeps all of its gain (2), cheap its gain up to m = 1 (1), costly none (0).
    rng = np.random.default_rng(1)
    rows = []
    costs = {"free": lambda m: 0.0, "costly": lambda m: m, "cheap": lambda m: 0.2 * m * m}
    for pair in range(12):
        base_p, base_u = rng.normal(), rng.normal()
        for method, cost in costs.items():
            for m in (0.0, 0.5, 1.0, 2.0):
                noise = rng.uniform(0.95, 1.05)
                rows.append(
                    dict(
                        concept="c",
                        form="vector",
                        method=method,
                        pair_id=f"p{pair}",
                        m=m,
                        pref_odds=base_p + m * noise,
                        util_odds=base_u - cost(m) * noise,
                    )
                )
    sweeps = pd.DataFrame(rows)
    table = frontier_table(sweeps, n_bootstrap=100).set_index("method")
    assert table["utility_level"].iloc[0] == pytest.approx(-0.4, abs=0.03)
    assert table.loc["free", "preference_at_match"] == pytest.approx(2.0, abs=0.05)
    assert table.loc["cheap", "preference_at_match"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["costly", "preference_at_match"] == pytest.approx(0.0, abs=1e-9)
    diffs = frontier_differences(sweeps, [("vector", "costly")], n_bootstrap=100)
    cheap = diffs.set_index("method").loc["cheap"]
    assert cheap["preference_difference"] == pytest.approx(1.0, abs=0.05)
    assert cheap["preference_difference_low"] > 0.5
