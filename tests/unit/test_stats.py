import numpy as np

from workbench.measure.stats import pair_bootstrap


def test_pair_bootstrap_matches_the_normal_interval_of_a_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(2.0, 1.0, size=200)

    def mean(rows):
        return {"mean": values[rows].mean()}

    low, high = pair_bootstrap(len(values), mean, ["mean"], 2000, seed=0)["mean"]
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert abs(low - (values.mean() - half)) < 0.05 and abs(high - (values.mean() + half)) < 0.05
    assert pair_bootstrap(len(values), mean, ["mean"], 2000, seed=0)["mean"] == (low, high)
    assert pair_bootstrap(len(values), mean, ["mean"], 2000, seed=1)["mean"] != (low, high)


def test_undefined_resamples_are_left_out_and_too_few_pairs_give_nan():
    values = np.arange(10.0)

    def sometimes(rows):
        return {} if rows[0] == 0 else {"max": values[rows].max()}

    low, high = pair_bootstrap(10, sometimes, ["max"], 200, seed=0)["max"]
    assert np.isfinite(low) and low <= high <= 9
    assert all(np.isnan(pair_bootstrap(1, sometimes, ["max"], 200)["max"]))
