"""Steers that act on the state, not only on an additive Δh.

A weight update adds ``m·Δh(h_in)`` whatever the state is. The steers here map the state
``h ↦ steer(h, h_in, m)``: the push depends on where ``h`` is, so none of them is a weight update
(their saved config says ``acts_on: "state"``). All are interventions: they compose with
:func:`~workbench.steering.apply.steering`, sweeps, generation and saving, and m = 0 is the
unsteered model for every one of them.

- :class:`AngularSteer` (after Angular Steering, arXiv 2510.26243): rotate the state inside the
  plane of the concept direction ``d̂`` and a second axis ``b̂``, keeping ‖h‖. m moves the in-plane
  angle the fraction ``min(|m|·unit, 1)`` of the way to ``d̂`` (m > 0) or to ``-d̂`` (m < 0); at
  ``|m|·unit = 1`` every state points along ``±d̂`` in the plane (the paper's fixed target angle).
- :class:`AffineConceptEdit` (ACE, arXiv 2411.09003): set the coordinate along ``d̂`` to a
  reference (the mean coordinate of the opposite class) and add ``m`` typical norms along ``d̂``.
- :class:`DistanceScaled` (after In-Distribution Steering, arXiv 2510.13285): any additive
  intervention whose push is scaled per state by its Mahalanobis distance, in a PCA space of the
  two classes, to the class that m pushes toward, relative to that class's own median distance
  (capped): states already inside the target distribution are pushed less.
- :class:`ManifoldClip`, the workbench's manifold-aware steer: apply any intervention, then move
  the steered state back toward the valid manifold. Its off-subspace residual (outside the
  fitted PCA subspace, about the valid mean) is shrunk to at most the larger of τ (the 1 − δ
  quantile of valid states' residual norms) and the unsteered state's own residual, by the
  fraction ``strength``. At strength 1 the map is a projection (idempotent); at 0 it is the
  inner intervention unchanged. Gradients flow through it, so SPLIT can train an intervention
  with the clip inside the forward.

The readings of the published methods are ours (the papers' code is not used): each docstring
says what is computed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.decomposition import PCA
from torch import Tensor

from workbench.errors import ConfigError
from workbench.hooks.sites import DEFAULT_SITE, Site, SiteScales
from workbench.steering.forms import PLACEMENT_KEYS, Intervention
from workbench.steering.projected import ManifoldProjection
from workbench.steering.roles import Positions

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class _ActsOnState(Intervention):
    """What every steer here shares: it maps the state, so it has no Δh(h_in) and no dense
    update (both refuse, naming the steer)."""

    acts_on = "state"

    def delta(self, h_in: Tensor) -> Tensor:
        raise ConfigError(f"{self.label} acts on the state: it has no Δh(h_in); use steer()")

    def dense_update(self):
        raise ConfigError(f"{self.label} acts on the state and is not a weight update")


class StateSteer(_ActsOnState):
    """Base class of the steers that map the state from their own buffers."""

    reads_input = False

    def normalised_update(self):
        return self.dense_update()

    def _config(self) -> dict[str, Any]:
        return {"acts_on": "state", **self._steer_config()}

    def _steer_config(self) -> dict[str, Any]:
        return {}


def _row_multiplier(m: Tensor | float, coordinate: Tensor) -> Tensor:
    """``m`` shaped to broadcast against a per-position coordinate ``[*batch]``."""
    m = torch.as_tensor(m, dtype=coordinate.dtype, device=coordinate.device)
    if m.ndim == coordinate.ndim + 1:  # [batch, 1, 1] from the hook, coordinate [batch, seq]
        m = m[..., 0]
    return m


def _unit(direction: Tensor, what: str) -> Tensor:
    direction = direction.detach().double().flatten()
    norm = float(direction.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise ConfigError(f"the {what} is zero or not finite")
    return direction / norm


class AngularSteer(StateSteer):
    """Norm-preserving rotation in the plane (``direction``, ``axis``), both unit and orthogonal."""

    form = "angular"

    direction: Tensor
    axis: Tensor

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
        unit: float = 0.125,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions, scale, input_scale)
        if not (math.isfinite(unit) and unit > 0):
            raise ConfigError(f"the angular unit must be a positive number, got {unit}")
        self.unit = float(unit)
        self.register_buffer("direction", torch.zeros(d_out))
        self.register_buffer("axis", torch.zeros(d_out))

    @classmethod
    def plane(
        cls,
        model: TransformerBridge,
        layer: int,
        direction: Tensor,
        states: Tensor,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
        unit: float = 0.125,
    ) -> AngularSteer:
        """The steer in the plane of ``direction`` and the first principal axis of ``states``
        (valid states at the site) orthogonal to it."""
        d_hat = _unit(direction, "concept direction")
        flat = states.detach().double().reshape(-1, d_hat.shape[0]).cpu()
        flat = flat - (flat @ d_hat)[:, None] * d_hat
        if len(flat) < 2:
            raise ConfigError("the plane's second axis needs at least 2 states")
        first = torch.from_numpy(PCA(n_components=1).fit(flat.numpy()).components_[0])
        axis = _unit(first - (first @ d_hat) * d_hat, "plane's second axis")
        steer = cls.for_model(model, layer, site, positions, unit=unit)
        steer.direction.copy_(d_hat.float())
        steer.axis.copy_(axis.float())
        return steer

    def steer(self, state: Float[Tensor, "*batch d"], h_in: Tensor, m: Tensor | float) -> Tensor:
        d_hat, b_hat = self.direction.to(state.dtype), self.axis.to(state.dtype)
        along, across = state @ d_hat, state @ b_hat
        radius, angle = torch.hypot(along, across), torch.atan2(across, along)
        m = _row_multiplier(m, along)
        fraction = (m.abs() * self.unit).clamp(max=1.0)
        away = torch.where(angle >= 0, math.pi, -math.pi)
        target = torch.where(m >= 0, torch.zeros_like(angle), away)
        new = angle + fraction * (target - angle)
        moved = (radius * torch.cos(new) - along)[..., None] * d_hat
        return state + moved + (radius * torch.sin(new) - across)[..., None] * b_hat

    def _steer_config(self) -> dict[str, Any]:
        return {"unit": self.unit}


class AffineConceptEdit(StateSteer):
    """ACE: ``h' = h − (d̂ᵀh)d̂ + c_ref·d̂ + m·s·√d·d̂`` (``s·√d``: the site's typical norm)."""

    form = "ace"

    direction: Tensor
    reference: Tensor

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions, scale, input_scale)
        self.register_buffer("direction", torch.zeros(d_out))
        self.register_buffer("reference", torch.zeros(()))

    @classmethod
    def fit(
        cls,
        model: TransformerBridge,
        layer: int,
        direction: Tensor,
        reference_states: Tensor,
        scales: SiteScales,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
    ) -> AffineConceptEdit:
        """ACE along ``direction`` whose reference is the mean of ``reference_states`` (the
        opposite class's states at the site)."""
        d_hat = _unit(direction, "concept direction")
        flat = reference_states.detach().double().reshape(-1, d_hat.shape[0]).cpu()
        if not len(flat):
            raise ConfigError("ACE needs reference states to set the concept coordinate")
        edit = cls.for_model(model, layer, site, positions, scales=scales)
        edit.direction.copy_(d_hat.float())
        edit.reference.copy_(torch.tensor(float((flat @ d_hat).mean())))
        return edit

    def steer(self, state: Float[Tensor, "*batch d"], h_in: Tensor, m: Tensor | float) -> Tensor:
        d_hat = self.direction.to(state.dtype)
        along = state @ d_hat
        push = self.scale * math.sqrt(self.d_out)
        target = self.reference.to(state.dtype) + _row_multiplier(m, along) * push
        return state + (target - along)[..., None] * d_hat


class _Wrapper(_ActsOnState):
    """An intervention around another one (its ``inner``): same site, positions and form."""

    kind = ""

    def __init__(self, inner: Intervention) -> None:
        super().__init__(**inner.placement())
        if isinstance(inner, _Wrapper):
            raise ConfigError(f"{inner.label} is already wrapped")
        self.inner = inner
        self.form = inner.form  # tables key method × form; label and config say it is wrapped
        self.reads_input = inner.reads_input

    def _config(self) -> dict[str, Any]:
        placed = ("form", *PLACEMENT_KEYS)
        inner = {k: v for k, v in self.inner.config().items() if k not in placed}
        return {**inner, "acts_on": "state", "wrapper": {"kind": self.kind, **self._settings()}}

    def _settings(self) -> dict[str, Any]:
        return {}


class DistanceScaled(_Wrapper):
    """IDS: ``h' = h + m·g(h)·Δh(h_in)``, ``g(h) = min(dist(h, target class) / radius, cap)``.

    ``dist`` is the Mahalanobis distance in the PCA space of both classes (within-class
    variance per component); the target class is the positive one for m > 0 and the negative
    one for m < 0, and ``radius`` its states' median distance to their own mean.
    """

    kind = "distance_scaled"

    components: Tensor
    mean: Tensor
    inverse_variance: Tensor
    centres: Tensor
    radii: Tensor

    def __init__(self, inner: Intervention, n_components: int, cap: float = 2.0) -> None:
        super().__init__(inner)
        if not (math.isfinite(cap) and cap > 0):
            raise ConfigError(f"the distance-scale cap must be a positive number, got {cap}")
        self.cap = float(cap)
        self.register_buffer("components", torch.zeros(n_components, inner.d_out))
        self.register_buffer("mean", torch.zeros(inner.d_out))
        self.register_buffer("inverse_variance", torch.ones(n_components))
        self.register_buffer("centres", torch.zeros(2, n_components))
        self.register_buffer("radii", torch.ones(2))

    @property
    def label(self) -> str:
        return f"distance-scaled {self.inner.label}"

    @classmethod
    def fit(
        cls,
        inner: Intervention,
        positive_states: Tensor,
        negative_states: Tensor,
        variance: float = 0.4,
        cap: float = 2.0,
    ) -> DistanceScaled:
        """Fit the PCA (``variance``: the share kept) and the class statistics on the two
        classes' states at the intervention's output hook."""
        classes = [
            s.detach().double().reshape(-1, inner.d_out).cpu().numpy()
            for s in (positive_states, negative_states)
        ]
        if min(len(c) for c in classes) < 2:
            raise ConfigError("IDS needs at least 2 states of each class")
        pca = PCA(n_components=variance, svd_solver="full").fit(np.concatenate(classes))
        coordinates = [pca.transform(c) for c in classes]
        centres = np.stack([z.mean(0) for z in coordinates])
        within = np.concatenate([z - c for z, c in zip(coordinates, centres, strict=True)])
        inverse_variance = 1.0 / np.maximum(within.var(0), 1e-12)
        scaled = cls(inner, int(pca.n_components_), cap).to(inner_device(inner))
        scaled.components.copy_(torch.from_numpy(pca.components_))
        scaled.mean.copy_(torch.from_numpy(pca.mean_))
        scaled.inverse_variance.copy_(torch.from_numpy(inverse_variance))
        scaled.centres.copy_(torch.from_numpy(centres))
        radii = [
            scaled._distance(torch.from_numpy(c).float().to(scaled.mean.device), i).median()
            for i, c in enumerate(classes)
        ]
        scaled.radii.copy_(torch.stack(radii).clamp(min=1e-6))
        return scaled

    def _distance(self, state: Tensor, target: int | Tensor) -> Tensor:
        basis = self.components.to(state.dtype)
        z = (state - self.mean.to(state.dtype)) @ basis.T
        gaps = z[..., None, :] - self.centres.to(state.dtype)  # [*batch, 2, k]
        both = (gaps**2 * self.inverse_variance.to(state.dtype)).sum(-1).sqrt()
        if isinstance(target, int):
            return both[..., target]
        return torch.where(target, both[..., 0], both[..., 1])

    def factor(self, state: Tensor, m: Tensor | float) -> Tensor:
        """g(h) per position for the class ``m`` pushes toward."""
        m = _row_multiplier(m, state[..., 0])
        positive = (m >= 0).expand(state.shape[:-1])
        distance = self._distance(state, positive)
        radius = torch.where(positive, self.radii[0], self.radii[1]).to(state.dtype)
        return (distance / radius).clamp(max=self.cap)

    def steer(self, state: Float[Tensor, "*batch d"], h_in: Tensor, m: Tensor | float) -> Tensor:
        update = self.inner.steer(state, h_in, m) - state
        return state + self.factor(state, m)[..., None] * update

    def _settings(self) -> dict[str, Any]:
        return {"n_components": int(self.components.shape[0]), "cap": self.cap}


class ManifoldClip(_Wrapper):
    """The inner steer, then its state's off-subspace residual shrunk toward the valid manifold."""

    kind = "manifold_clip"

    def __init__(
        self,
        inner: Intervention,
        projection: ManifoldProjection,
        tau: float,
        strength: float = 1.0,
    ) -> None:
        super().__init__(inner)
        if projection.width != inner.d_out:
            raise ConfigError(
                f"the manifold has width {projection.width}, but {inner.label} writes "
                f"{inner.d_out} values at {inner.hook_names[1]}"
            )
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"clip strength must be in [0, 1], got {strength}")
        if not (math.isfinite(tau) and tau >= 0):
            raise ConfigError(f"tau must be a finite number >= 0, got {tau}")
        self.projection = projection
        self.tau, self.strength = float(tau), float(strength)

    @property
    def label(self) -> str:
        return f"clipped {self.inner.label}"

    @classmethod
    def fit(
        cls,
        inner: Intervention,
        manifold,
        valid_states: Tensor | np.ndarray,
        strength: float = 1.0,
    ) -> ManifoldClip:
        """The clip at ``manifold``'s subspace, with τ the 1 − δ quantile of the residual norms
        of ``valid_states`` (held-out valid states: not those the manifold was fitted on)."""
        residuals = manifold.residual_norm(valid_states)
        tau = float(np.quantile(residuals, 1 - manifold.delta))
        projection = ManifoldProjection.from_manifold(manifold).to(inner_device(inner))
        return cls(inner, projection, tau, strength)

    def project(self, steered: Tensor, unsteered: Tensor) -> Tensor:
        """Move ``steered`` toward the manifold (``unsteered`` sets the residual it may keep)."""
        mean = self.projection.mean.to(steered.dtype)
        residual = self.projection.off_subspace(steered - mean)
        limit = self.projection.residual_norm(unsteered).clamp(min=self.tau)
        keep = (limit / residual.norm(dim=-1).clamp(min=1e-12)).clamp(max=1.0)
        return steered - self.strength * (1.0 - keep)[..., None] * residual

    def steer(self, state: Float[Tensor, "*batch d"], h_in: Tensor, m: Tensor | float) -> Tensor:
        return self.project(self.inner.steer(state, h_in, m), state)

    def _settings(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "strength": self.strength,
            "n_components": self.projection.n_components,
            "scale": self.projection.scale,
        }

    @classmethod
    def empty(cls, inner: Intervention, settings: dict[str, Any]) -> ManifoldClip:
        """A clip with zero subspace buffers, to be filled by ``load_state_dict``."""
        projection = ManifoldProjection.empty(
            settings["n_components"], inner.d_out, settings["scale"]
        )
        return cls(inner, projection, settings["tau"], settings["strength"])


def inner_device(inner: Intervention) -> torch.device:
    """The device of an intervention's parameters or buffers (CPU if it has none)."""
    for tensor in list(inner.parameters()) + list(inner.buffers()):
        return tensor.device
    return torch.device("cpu")


STATE_FORMS: dict[str, type[Intervention]] = {
    cls.form: cls for cls in (AngularSteer, AffineConceptEdit)
}


def rebuild_wrapper(inner: Intervention, settings: dict[str, Any]) -> Intervention:
    """The wrapper a saved config's ``wrapper`` entry names, with buffers to be loaded."""
    settings = dict(settings)
    kind = settings.pop("kind", None)
    if kind == ManifoldClip.kind:
        return ManifoldClip.empty(inner, settings)
    if kind == DistanceScaled.kind:
        return DistanceScaled(inner, settings["n_components"], settings["cap"])
    raise ConfigError(f"unknown wrapper {kind!r}; known: manifold_clip, distance_scaled")
