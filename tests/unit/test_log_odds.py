import math

import numpy as np
import pytest

from workbench.measure.log_odds import preference_utility


def test_matches_the_formula_on_hand_made_numbers():
    l_p, l_n = np.array([1.2, 3.0, 0.5]), np.array([2.5, 0.7, 4.0])
    pref, util, defined = preference_utility(l_p, l_n)
    for i in range(3):
        mass = math.exp(-l_p[i]) + math.exp(-l_n[i])
        assert pref[i] == pytest.approx(l_n[i] - l_p[i])
        assert util[i] == pytest.approx(math.log(mass / (1 - mass)), rel=1e-12)
    assert defined.all()


def test_stable_in_the_tails():
    _pref, util, _defined = preference_utility(np.array([800.0]), np.array([900.0]))
    assert np.isfinite(util).all() and util[0] == pytest.approx(-800.0)
    _, util, _ = preference_utility(np.array([1e-9]), np.array([40.0]))
    assert util[0] == pytest.approx(math.log(1 / 1e-9), rel=1e-6)  # mass close to 1, still finite


def test_undefined_utility_is_nan_and_flagged_never_clipped():
    pref, util, defined = preference_utility(np.array([0.1, 2.0]), np.array([0.2, 3.0]))
    assert not defined[0] and np.isnan(util[0])
    assert defined[1] and np.isfinite(util[1])
    assert pref[0] == pytest.approx(0.1)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        preference_utility(np.zeros(2), np.zeros(3))
