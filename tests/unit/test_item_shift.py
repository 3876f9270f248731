"""The split of a steer's effect into a common and an item-dependent shift, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.measure.item_shift import (
    answer_dependence,
    answer_labels,
    shift_decomposition,
    shift_intervals,
)

Y = np.array([1.0, 1.0, -1.0, -1.0])


def test_labels_follow_the_first_answer_string():
    assert answer_labels([" Yes", " No", "No"], [" No", " Yes", "Yes"]).tolist() == [-1, 1, 1]
    with pytest.raises(ConfigError, match="exactly two answer strings"):
        answer_labels([" Yes", " Maybe"], [" No", " No"])


def test_a_shift_of_every_prefodds_is_item_dependent():
    before = np.array([-1.0, 0.5, -1.5, 1.0])
    out = shift_decomposition(before, before + 2.0, Y)
    assert out["common"] == pytest.approx(0.0)
    assert out["item_dependent"] == pytest.approx(2.0)
    assert out["item_share"] == pytest.approx(1.0)
    assert out["flipped_to_concept"] == pytest.approx(0.5)  # items 0 and 2 cross zero
    assert out["balanced_accuracy"] == 1.0  # every item now prefers its concept answer


def test_a_push_toward_one_answer_is_common():
    before = np.array([-1.0, -2.0, 1.0, 2.0])  # d = -1, -2, -1, -2
    after = before + Y * 3.0  # d rises by 3 on every item
    out = shift_decomposition(before, after, Y)
    assert (out["common"], out["item_dependent"], out["residual_sd"]) == (3.0, 0.0, 0.0)
    assert out["flipped_to_concept"] == 0.5 and out["flipped_away"] == 0.5
    assert out["balanced_accuracy"] == 0.5  # the +1 items all right, the -1 items all wrong


def test_the_parts_add_up():
    rng = np.random.default_rng(0)
    y = np.repeat([1.0, -1.0], 50)
    before, after = rng.normal(size=100), rng.normal(size=100) + 0.3 * y + 1.0
    out = shift_decomposition(before, after, y)
    delta = y * (after - before)
    residual = delta - out["common"] - out["item_dependent"] * y
    assert residual.std() == pytest.approx(out["residual_sd"])
    assert abs(residual[y > 0].mean()) < 1e-12 and abs(residual[y < 0].mean()) < 1e-12
    total = out["common_share"] + out["item_share"] + out["residual_share"]
    assert total == pytest.approx(1.0)
    assert np.mean(after - before) == pytest.approx(out["item_dependent"])  # balanced groups


def test_answer_dependence_reads_the_label():
    d = np.array([3.0, 2.0, -1.0, -2.0])  # the +1 items get the first answer
    out = answer_dependence(Y * d, Y)
    assert out["auroc"] == 1.0 and out["gap"] == pytest.approx(4.0)
    ignored = answer_dependence(Y * np.array([1.0, 2.0, 1.0, 2.0]), Y)
    assert ignored["auroc"] == 0.5 and ignored["gap"] == 0.0 and ignored["mean"] == 1.5


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="undefined PrefOdds"):
        shift_decomposition(np.array([1.0, np.nan, 0.0, 0.0]), np.zeros(4), Y)
    with pytest.raises(ConfigError, match="both answer labels"):
        answer_dependence(np.zeros(2), np.ones(2))
    with pytest.raises(ConfigError, match="must be 1-D, equal"):
        shift_decomposition(np.zeros(3), np.zeros(4), Y)


def test_intervals_hold_the_estimate_and_shrink_to_it_without_noise():
    rng = np.random.default_rng(1)
    y = np.repeat([1.0, -1.0], 40)
    before = rng.normal(size=80)
    after = before + y * (2.0 + 0.5 * y + rng.normal(scale=0.3, size=80))  # c = 2, s = 0.5
    point, interval = shift_decomposition(before, after, y), shift_intervals(before, after, y)
    for name in ("common", "item_dependent"):
        assert interval[f"{name}_low"] < point[name] < interval[f"{name}_high"]
    assert interval["item_dependent_low"] > 0.3 and interval["common_low"] > 1.8
    exact = shift_intervals(before, before + y * 2.0, y, n_bootstrap=50)
    assert exact["common_low"] == pytest.approx(2.0) and exact["common_high"] == pytest.approx(2.0)
