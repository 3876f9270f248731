"""The manifold-aware projected steer: keep Δh inside the valid-activation subspace.

A fitted :class:`~workbench.manifold.estimator.ActivationManifold` at an intervention's output hook
has a PCA subspace with orthonormal rows ``V`` ([k, d]); ``P = VᵀV`` projects onto it. The
projected steer replaces every update by

    Δh' = Δh − s·(I − P)·Δh        (strength s in [0, 1])

so s = 1 removes the off-subspace component entirely and s = 0 leaves the update as it was.
Because Δh' is still linear in (ΔW, Δb), the projected steer is itself a weight update,
``ΔW' = (I − sQ)ΔW``, ``Δb' = (I − sQ)Δb`` with ``Q = I − P``, and stays in the unified frame.

:class:`ProjectedIntervention` wraps any intervention, so sweeps, steering, generation and
saving work unchanged. :func:`off_manifold_excess` is the optional training penalty: how far
the steered states leave the subspace beyond where the unsteered states already were.

>>> projection = ManifoldProjection.from_manifold(manifold)
>>> projected = ProjectedIntervention(trained_vector, projection, strength=1.0)
>>> with projected.applied(model, m=1.0, roles=roles): ...
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from workbench.errors import ConfigError
from workbench.steering.forms import PLACEMENT_KEYS, Intervention


class ManifoldProjection(nn.Module):
    """The PCA subspace of a fitted manifold as torch buffers (orthonormal rows, mean, scale).

    ``scale`` is the expected off-subspace norm of a valid state, ``sqrt(σ²_noise · (d − k))``
    from the PCA's discarded variance; penalties divide by it so they are unit-free.
    """

    components: Tensor  # [k, d] buffers
    mean: Tensor

    def __init__(self, components: Tensor, mean: Tensor, scale: float = 1.0) -> None:
        super().__init__()
        if components.ndim != 2 or mean.shape != (components.shape[1],):
            raise ConfigError(
                f"components must be [k, d] and mean [d]; got {tuple(components.shape)} and "
                f"{tuple(mean.shape)}"
            )
        if not scale > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        self.register_buffer("components", components.detach().float().clone())
        self.register_buffer("mean", mean.detach().float().clone())
        self.scale = float(scale)

    @classmethod
    def from_manifold(cls, manifold) -> ManifoldProjection:
        """The subspace of a fitted :class:`ActivationManifold`."""
        pca = getattr(manifold, "pca_", None)
        if pca is None:
            raise ConfigError("the manifold is not fitted: call fit() before projecting onto it")
        d, k = pca.n_features_in_, pca.n_components_
        scale = math.sqrt(max(float(pca.noise_variance_), 1e-12) * max(d - k, 1))
        return cls(torch.from_numpy(pca.components_), torch.from_numpy(pca.mean_), scale)

    @classmethod
    def empty(cls, n_components: int, width: int, scale: float) -> ManifoldProjection:
        """Zero buffers of the right shapes, to be filled by ``load_state_dict``."""
        return cls(torch.zeros(n_components, width), torch.zeros(width), scale)

    @property
    def width(self) -> int:
        return int(self.components.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def on_subspace(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        """``P·x`` for displacements (no centring)."""
        basis = self.components.to(x.dtype)
        return (x @ basis.T) @ basis

    def off_subspace(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        """``(I − P)·x`` for displacements (no centring)."""
        return x - self.on_subspace(x)

    def residual_norm(self, states: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch"]:
        """Distance of states to the (affine) subspace: ``‖(I − P)(h − μ)‖``."""
        return self.off_subspace(states - self.mean.to(states.dtype)).norm(dim=-1)


class ProjectedIntervention(Intervention):
    """Any intervention with the off-subspace part of its Δh removed (or shrunk by ``strength``)."""

    def __init__(
        self, inner: Intervention, projection: ManifoldProjection, strength: float = 1.0
    ) -> None:
        super().__init__(**inner.placement())
        if isinstance(inner, ProjectedIntervention):
            raise ConfigError("the intervention is already projected")
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"projection strength must be in [0, 1], got {strength}")
        if projection.width != inner.d_out:
            raise ConfigError(
                f"the manifold has width {projection.width}, but {inner.form} writes "
                f"{inner.d_out} values at {inner.hook_names[1]}"
            )
        self.inner = inner
        self.projection = projection
        self.strength = float(strength)
        # ``form`` stays the weight form (tables key methods × forms, and the method column says
        # "split_projected"); ``label`` and the saved ``projection`` entry say it is projected.
        self.form = inner.form
        self.reads_input = inner.reads_input

    @property
    def label(self) -> str:
        return f"projected {self.inner.form}"

    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        update = self.inner.delta(h_in)
        return update - self.strength * self.projection.off_subspace(update)

    def dense_update(self):
        weight, bias = self.inner.dense_update()
        keep = torch.eye(self.d_out, device=weight.device) - self.strength * (
            torch.eye(self.d_out, device=weight.device)
            - self.projection.components.T @ self.projection.components
        )
        return keep @ weight, keep @ bias

    def _config(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.inner.config().items() if k not in ("form", *PLACEMENT_KEYS)},
            "projection": {
                "strength": self.strength,
                "n_components": self.projection.n_components,
                "scale": self.projection.scale,
            },
        }


def off_manifold_excess(
    projection: ManifoldProjection,
    unsteered: Float[Tensor, "batch seq d"],
    steered: Float[Tensor, "batch seq d"],
    mask: Bool[Tensor, "batch seq"],
) -> Tensor:
    """Mean over ``mask`` of ``ReLU(‖r(steered)‖ − ‖r(unsteered)‖) / scale``.

    ``r`` is the off-subspace residual: the penalty counts only how much further from the
    subspace steering pushed each state, not the distance valid states already have.
    """
    if not bool(mask.any()):
        return steered.new_zeros(())
    excess = torch.relu(projection.residual_norm(steered) - projection.residual_norm(unsteered))
    return excess[mask].mean() / projection.scale
