"""The manifold estimator on synthetic data whose manifold is known."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from workbench.manifold.estimator import DENSITIES, ActivationManifold, KNNDensity

D, K = 40, 3


def _valid(n, seed, basis=None):
    """Points on a 3-dimensional linear manifold in 40 dimensions, plus small isotropic noise."""
    rng = np.random.default_rng(seed)
    if basis is None:
        basis = np.linalg.qr(np.random.default_rng(123).normal(size=(D, K)))[0].T  # K x D
    coordinates = rng.normal(size=(n, K)) * np.array([5.0, 3.0, 2.0])
    return 7.0 + coordinates @ basis + 0.05 * rng.normal(size=(n, D)), basis


def _off(n, seed, basis, distance=2.0):
    points, _ = _valid(n, seed, basis)
    rng = np.random.default_rng(seed + 1)
    push = rng.normal(size=(n, D))
    push -= push @ basis.T @ basis  # orthogonal to the manifold
    return points + distance * push / np.linalg.norm(push, axis=1, keepdims=True)


@pytest.mark.parametrize("density", DENSITIES)
def test_recovers_the_dimension_and_separates_off_manifold_points(density):
    train, basis = _valid(600, 0)
    manifold = ActivationManifold(n_components=0.95, density=density).fit(train)
    assert manifold.n_components_ == K
    on, off = _valid(300, 5, basis)[0], _off(300, 6, basis)
    scores = np.r_[manifold.score_samples(on), manifold.score_samples(off)]
    labels = np.r_[np.ones(300), np.zeros(300)]
    auroc = roc_auc_score(labels, scores)
    print(f"{density}: AUROC on vs off manifold = {auroc:.3f}")
    assert auroc > 0.95
    assert manifold.within(on).mean() > 0.85 and manifold.within(off).mean() < 0.1


@pytest.mark.parametrize("density", DENSITIES)
def test_calibration_matches_one_minus_delta_on_fresh_draws(density):
    train, basis = _valid(800, 1)
    calibration, _ = _valid(400, 2, basis)
    delta = 0.1
    manifold = ActivationManifold(n_components=K, density=density, delta=delta)
    manifold.fit(train, calibration=calibration)
    fresh, _ = _valid(2000, 3, basis)
    share = manifold.score(fresh)
    # conformal coverage is >= 1 - delta in expectation; sampling error of both sets ~ 0.02
    standard_error = np.sqrt(delta * (1 - delta) / 400) + np.sqrt(delta * (1 - delta) / 2000)
    assert abs(share - (1 - delta)) < 3 * standard_error + 1 / 400


def test_displacement_in_the_subspace_has_no_off_manifold_part():
    train, _basis = _valid(500, 0)
    manifold = ActivationManifold(n_components=K).fit(train)
    inside = manifold.pca_.components_[:2].sum(0, keepdims=True) * 3.0
    on, off = manifold.decompose(inside)
    assert np.abs(off).max() < 1e-10 and np.allclose(on, inside)
    outside = np.random.default_rng(0).normal(size=(1, D))
    outside -= outside @ manifold.pca_.components_.T @ manifold.pca_.components_
    on, off = manifold.decompose(outside)
    assert np.abs(on).max() < 1e-10 and np.allclose(off, outside)
    point = train[:1]
    assert manifold.residual_norm(point + outside) == pytest.approx(
        np.linalg.norm(
            outside
            + (point - manifold.pca_.mean_)
            - manifold.decompose(point - manifold.pca_.mean_)[0]
        ),
        rel=1e-9,
    )


def test_transform_gives_subspace_coordinates_and_params_round_trip():
    train, _ = _valid(300, 0)
    manifold = ActivationManifold(n_components=K, density=KNNDensity(k=5)).fit(train)
    assert manifold.transform(train).shape == (300, K)
    params = manifold.get_params()
    assert params["n_components"] == K and params["delta"] == 0.05
    assert clone(manifold).get_params()["density"].k == 5


def test_bad_input_is_named():
    train, _ = _valid(100, 0)
    manifold = ActivationManifold(n_components=K).fit(train)
    with pytest.raises(ValueError, match=r"width 12.*width 40"):
        manifold.score_samples(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="n_components=50"):
        ActivationManifold(n_components=50).fit(train[:30])
    bad = train.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(1 of 100 rows\)"):
        ActivationManifold().fit(bad)
    with pytest.raises(ValueError, match="unknown density"):
        ActivationManifold(density="histogram").fit(train)
    with pytest.raises(ValueError, match="2-D"):
        manifold.within(np.zeros(40))
