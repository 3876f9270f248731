"""The valid-generation activation manifold, estimated.

``ActivationManifold`` fits, on activations of valid unsteered text at one hook:

1. a PCA subspace (components chosen by an explained-variance target, or given);
2. a density model on the features ``[subspace coordinates, off-subspace residual norm]``
   (standardised): a point can leave the manifold by leaving the subspace or by landing in an
   empty part of it. Densities are pluggable scikit-learn estimators: ``"gaussian"`` (Ledoit-Wolf
   shrinkage covariance, Mahalanobis), ``"knn"`` (mean distance to the k nearest valid points),
   ``"mixture"`` (Gaussian mixture), or any object with ``fit`` and ``score_samples``;
3. a threshold ε on the nonconformity ``-score_samples``, calibrated on held-out valid
   activations as a conformal quantile, so that at least 1 - δ of valid states lie within ε
   (the paper's Assumption 4.1).

>>> manifold = ActivationManifold(n_components=0.9, density="gaussian", delta=0.05)
>>> manifold.fit(valid_train, calibration=valid_held_out)
>>> manifold.within(steered).mean()          # measured validity
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from workbench.errors import ConfigError

DENSITIES = ("gaussian", "knn", "mixture")


class GaussianDensity(BaseEstimator):
    """Gaussian with Ledoit-Wolf shrinkage covariance; score = -½ Mahalanobis² (log-density + c)."""

    def fit(self, X, y=None):
        self.covariance_ = LedoitWolf().fit(X)
        return self

    def score_samples(self, X):
        return -0.5 * self.covariance_.mahalanobis(X)


class KNNDensity(BaseEstimator):
    """Score = minus the mean distance to the ``k`` nearest fitted points."""

    def __init__(self, k: int = 10):
        self.k = k

    def fit(self, X, y=None):
        if len(X) <= self.k:
            raise ConfigError(f"kNN density needs more than k={self.k} points, got {len(X)}")
        self.neighbours_ = NearestNeighbors(n_neighbors=self.k).fit(X)
        return self

    def score_samples(self, X):
        distances, _ = self.neighbours_.kneighbors(X)
        return -distances.mean(axis=1)


def make_density(density, k: int = 10, n_mixture: int = 4, random_state: int = 0):
    """A density estimator from its name, or ``density`` itself if it is an estimator."""
    if density == "gaussian":
        return GaussianDensity()
    if density == "knn":
        return KNNDensity(k=k)
    if density == "mixture":
        return GaussianMixture(
            n_components=n_mixture,
            covariance_type="full",
            reg_covar=1e-4,
            random_state=random_state,
        )
    if hasattr(density, "fit") and hasattr(density, "score_samples"):
        return clone(density)
    raise ConfigError(
        f"unknown density {density!r}; choose one of {DENSITIES} or pass an estimator"
    )


class ActivationManifold(TransformerMixin, BaseEstimator):
    """PCA subspace + density model + calibrated ε, with scikit-learn's fit / transform / score.

    Args:
        n_components: an int (that many components) or a float in (0, 1) (the fewest
            components explaining that share of the variance).
        density: ``"gaussian"``, ``"knn"``, ``"mixture"`` or an estimator.
        delta: at most this share of held-out valid states may lie beyond ε.
        calibration_fraction: share of ``X`` held out for ε when no calibration set is given.
        k, n_mixture: the kNN and mixture settings.
        random_state: seeds the calibration split and the mixture.
    """

    def __init__(
        self,
        n_components: int | float = 0.9,
        density="gaussian",
        delta: float = 0.05,
        calibration_fraction: float = 0.2,
        k: int = 10,
        n_mixture: int = 4,
        random_state: int = 0,
    ):
        self.n_components = n_components
        self.density = density
        self.delta = delta
        self.calibration_fraction = calibration_fraction
        self.k = k
        self.n_mixture = n_mixture
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None, calibration=None):
        """Fit on valid activations ``X`` [n, d]; calibrate ε on ``calibration`` (or a split)."""
        X = as_activations(X)
        if len(X) < 3:
            raise ConfigError(f"need at least 3 valid activations to fit, got {len(X)}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        X, calibration = calibration_split(
            X, calibration, self.calibration_fraction, self.random_state
        )
        n_components = self.n_components
        if isinstance(n_components, int) and not 1 <= n_components <= min(X.shape):
            raise ConfigError(
                f"n_components={n_components} needs at least that many samples and features; "
                f"got {X.shape[0]} samples of width {X.shape[1]}"
            )
        if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
            raise ConfigError(
                f"a float n_components is a variance share in (0, 1), got {n_components}"
            )
        self.pca_ = PCA(n_components=n_components, svd_solver="full").fit(X)
        self.n_components_ = int(self.pca_.n_components_)
        self.scaler_ = StandardScaler().fit(self._features(X))
        self.density_ = make_density(self.density, self.k, self.n_mixture, self.random_state)
        self.density_.fit(self.scaler_.transform(self._features(X)))
        self.epsilon_ = conformal_threshold(self.nonconformity(calibration), self.delta)
        self.n_calibration_ = len(calibration)
        return self

    # -- what it says about activations ------------------------------------------------------
    def transform(self, X):
        """Coordinates in the PCA subspace [n, n_components_]."""
        return self.pca_.transform(self._check(X))

    def residual_norm(self, X):
        """Norm of the part of (X - mean) outside the subspace: distance to the subspace."""
        X = self._check(X)
        centred = X - self.pca_.mean_
        inside = centred @ self.pca_.components_.T @ self.pca_.components_
        return np.linalg.norm(centred - inside, axis=1)

    def score_samples(self, X):
        """Density score of each point (higher: more typical of valid activations)."""
        X = self._check(X)
        return self.density_.score_samples(self.scaler_.transform(self._features(X)))

    def nonconformity(self, X):
        """-score_samples: the quantity ε is a threshold on."""
        return -self.score_samples(X)

    def within(self, X):
        """Whether each point lies within ε of the manifold."""
        return self.nonconformity(X) <= self.epsilon_

    def score(self, X, y=None):
        """Share of ``X`` within ε (the measured validity of a set of states)."""
        return float(self.within(X).mean())

    def decompose(self, delta):
        """(on-subspace, off-subspace) parts of displacements ``delta`` [n, d]: P·Δ and Δ - P·Δ."""
        delta = self._check(delta)
        on = delta @ self.pca_.components_.T @ self.pca_.components_
        return on, delta - on

    # -- helpers -----------------------------------------------------------------------------
    def _features(self, X):
        return np.column_stack([self.pca_.transform(X), self.residual_norm(X)])

    def _check(self, X):
        X = as_activations(X)
        if X.shape[1] != self.pca_.n_features_in_:
            raise ConfigError(
                f"activations have width {X.shape[1]}, but the manifold was fitted on width "
                f"{self.pca_.n_features_in_}"
            )
        return X


def calibration_split(
    X: np.ndarray, calibration, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, calibration) activations: ``calibration`` checked against ``X``, or a seeded
    random ``fraction`` of ``X`` held out when none is given."""
    if calibration is None:
        order = np.random.default_rng(seed).permutation(len(X))
        n_cal = max(1, round(fraction * len(X)))
        return X[order[n_cal:]], X[order[:n_cal]]
    calibration = as_activations(calibration)
    if calibration.shape[1] != X.shape[1]:
        raise ConfigError(
            f"calibration activations have width {calibration.shape[1]}, but the "
            f"training activations have width {X.shape[1]}"
        )
    return X, calibration


def conformal_threshold(nonconformity: np.ndarray, delta: float) -> float:
    """ε: the conformal (1 − δ) quantile of held-out nonconformity scores, so that a new valid
    state lies within ε with probability at least 1 − δ."""
    ordered = np.sort(nonconformity)
    n = len(ordered)
    rank = min(n, math.ceil((n + 1) * (1 - delta)))
    return float(ordered[rank - 1])


def as_activations(X) -> np.ndarray:
    """Activations as a finite float64 [n, d] array, or a clear error."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().double().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ConfigError(f"activations must be 2-D [n, d], got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ConfigError(f"activations contain NaN or infinite values ({bad} of {len(X)} rows)")
    return X
