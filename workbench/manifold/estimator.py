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
        return self._fit_density(self._features(X), self._features(calibration))

    def fit_stream(self, store, hook: str, held_out: np.ndarray | None = None):
        """Fit on the rows of an :class:`~workbench.store.ActivationStore` at ``hook``, one shard
        in memory at a time: the subspace from the exact streaming mean and covariance (fp64,
        d × d), the density on the low-dimensional features, ε on the rows ``held_out`` marks
        (default: a seeded share, the same rows :meth:`fit` would hold out)."""
        self._check_settings(len(store))
        n, d = len(store), store.width(hook)
        if held_out is None:
            order = np.random.default_rng(self.random_state).permutation(n)
            held = np.zeros(n, dtype=bool)
            held[order[: max(1, round(self.calibration_fraction * n))]] = True
        else:
            held = np.asarray(held_out, dtype=bool)
            if held.shape != (n,) or held.all() or not held.any():
                raise ConfigError(
                    f"held_out must mark some but not all of the store's {n} rows, got shape "
                    f"{held.shape} with {int(held.sum())} marked"
                )
        total, outer, start = np.zeros(d), np.zeros((d, d)), 0
        for rows in store.batches(hook):
            keep = rows[~held[start : start + len(rows)]]
            total += keep.sum(0)
            outer += keep.T @ keep
            start += len(rows)
        count = int((~held).sum())
        mean = total / count
        covariance = (outer - count * np.outer(mean, mean)) / (count - 1)
        self.pca_ = _pca_from_covariance(mean, covariance, self.n_components, count)
        fitting, calibration, start = [], [], 0
        for rows in store.batches(hook):
            features = self._features(as_activations(rows))
            mask = held[start : start + len(rows)]
            fitting.append(features[~mask])
            calibration.append(features[mask])
            start += len(rows)
        return self._fit_density(np.concatenate(fitting), np.concatenate(calibration))

    def _check_settings(self, n: int) -> None:
        if n < 3:
            raise ConfigError(f"need at least 3 valid activations to fit, got {n}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")

    def _fit_density(self, features: np.ndarray, calibration: np.ndarray):
        """The density and ε, from the fitting and calibration rows' features."""
        self.n_components_ = int(self.pca_.n_components_)
        self.scaler_ = StandardScaler().fit(features)
        self.density_ = make_density(self.density, self.k, self.n_mixture, self.random_state)
        self.density_.fit(self.scaler_.transform(features))
        scores = self.density_.score_samples(self.scaler_.transform(calibration))
        self.epsilon_ = conformal_threshold(-scores, self.delta)
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


def _pca_from_covariance(mean, covariance, n_components, count: int) -> PCA:
    """A fitted scikit-learn PCA from a mean and covariance (what a full-SVD PCA of the rows
    would give, up to the sign of each component)."""
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1].T
    ratio = values / values.sum()
    if isinstance(n_components, float):
        k = int(np.searchsorted(np.cumsum(ratio), n_components, side="right") + 1)
    else:
        k = int(n_components)
    k = min(k, len(values))
    pca = PCA(n_components=k)
    pca.mean_, pca.components_ = mean, vectors[:k]
    pca.explained_variance_, pca.explained_variance_ratio_ = values[:k], ratio[:k]
    pca.singular_values_ = np.sqrt(values[:k] * (count - 1))
    pca.noise_variance_ = float(values[k:].mean()) if k < len(values) else 0.0
    pca.n_components_, pca.n_features_in_, pca.n_samples_ = k, len(mean), count
    return pca


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
