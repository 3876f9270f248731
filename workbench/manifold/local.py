"""A local estimate of the valid manifold: distance to the tangent plane of the nearest states.

The global :class:`~workbench.manifold.estimator.ActivationManifold` describes valid states by
one PCA subspace and one density. Valid activations may instead lie near a curved, lower-
dimensional set that no single subspace fits. ``LocalManifold`` keeps every fitted state; a
state's nonconformity is its distance to the affine plane through the mean of its ``k`` nearest
fitted states, spanned by their first ``rank`` principal axes (local PCA). ε is calibrated on
held-out valid states as a conformal quantile, as for the global estimate, so the two are read
the same way (``within``, ``score``).

>>> local = LocalManifold(k=16, rank=4).fit(valid_train, calibration=valid_held_out)
>>> local.within(steered).mean()
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors

from workbench.errors import ConfigError
from workbench.manifold.estimator import as_activations, calibration_split, conformal_threshold


class LocalManifold(BaseEstimator):
    """Local-PCA tangent distance with a calibrated ε (scikit-learn's fit / score conventions).

    Args:
        k: neighbours whose local PCA gives the tangent plane.
        rank: dimension of the tangent plane (< k).
        delta: at most this share of held-out valid states may lie beyond ε.
        calibration_fraction: share of ``X`` held out for ε when no calibration set is given.
        random_state: seeds that split.
    """

    def __init__(
        self,
        k: int = 16,
        rank: int = 4,
        delta: float = 0.05,
        calibration_fraction: float = 0.2,
        random_state: int = 0,
    ):
        self.k = k
        self.rank = rank
        self.delta = delta
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit(self, X, y=None, calibration=None):
        X = as_activations(X)
        if not 1 <= self.rank < self.k:
            raise ConfigError(f"rank must be in [1, k); got rank={self.rank}, k={self.k}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        X, calibration = calibration_split(
            X, calibration, self.calibration_fraction, self.random_state
        )
        if len(X) <= self.k:
            raise ConfigError(f"the local estimate needs more than k={self.k} states, got {len(X)}")
        self.points_ = X
        self.neighbours_ = NearestNeighbors(n_neighbors=self.k).fit(X)
        self.epsilon_ = conformal_threshold(self.nonconformity(calibration), self.delta)
        self.n_calibration_ = len(calibration)
        return self

    def tangent_distance(self, X) -> np.ndarray:
        """Distance of each state to its local tangent plane."""
        X = self._check(X)
        _, index = self.neighbours_.kneighbors(X)
        local = self.points_[index]  # [n, k, d]
        centre = local.mean(axis=1)
        # right singular vectors of the centred neighbourhoods: the local principal axes
        _, _, axes = np.linalg.svd(local - centre[:, None], full_matrices=False)
        basis = axes[:, : self.rank]  # [n, rank, d]
        offset = X - centre
        inside = np.einsum("nr,nrd->nd", np.einsum("nd,nrd->nr", offset, basis), basis)
        return np.linalg.norm(offset - inside, axis=1)

    def nonconformity(self, X) -> np.ndarray:
        return self.tangent_distance(X)

    def score_samples(self, X) -> np.ndarray:
        return -self.nonconformity(X)

    def within(self, X) -> np.ndarray:
        return self.nonconformity(X) <= self.epsilon_

    def score(self, X, y=None) -> float:
        return float(self.within(X).mean())

    def _check(self, X) -> np.ndarray:
        X = as_activations(X)
        if X.shape[1] != self.points_.shape[1]:
            raise ConfigError(
                f"activations have width {X.shape[1]}, but the local manifold was fitted on "
                f"width {self.points_.shape[1]}"
            )
        return X
