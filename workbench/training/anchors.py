"""The steers a comparison sets beside SPLIT: published anchors and the manifold-aware clip.

Everything here is fitted on training pairs and valid text only, at the intervention's output
hook (:class:`SiteStates`):

- ``angular``: :class:`~workbench.steering.state.AngularSteer` in the plane of the balanced
  DiffMean direction and the first principal axis of valid states (``unit``: the share of the
  way to the direction per unit of m, so the grid's largest m reaches it);
- ``ace``: :class:`~workbench.steering.state.AffineConceptEdit` along DiffMean, its reference the
  negative answers' mean coordinate;
- ``ids``: the DiffMean vector with :class:`~workbench.steering.state.DistanceScaled` strength;
- ``split_clipped``: a trained SPLIT intervention applied through
  :class:`~workbench.steering.state.ManifoldClip` (the clip added after training);
- ``split_clip_trained``: SPLIT trained with the clip inside the forward (built by the
  comparison's trainer from :func:`clip_around`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from workbench.analysis_cache import AnalysisCache, cached_valid_activations
from workbench.data.pairs import ContrastPair
from workbench.directions.capture import capture_activations
from workbench.manifold.estimator import ActivationManifold
from workbench.steering.forms import Intervention, SteeringVector
from workbench.steering.state import (
    AffineConceptEdit,
    AngularSteer,
    DistanceScaled,
    ManifoldClip,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.hooks.sites import SiteScales

ANCHORS = ("angular", "ace", "ids")
CLIPPED = ("split_clipped", "split_clip_trained")


@dataclass
class SiteStates:
    """Valid and per-class states at one output hook, from training text only."""

    hook: str
    manifold: ActivationManifold
    fitting: Tensor  # valid states the manifold was fitted on
    held_out: Tensor  # valid states it was not (τ of the clip)
    positive: Tensor  # answer-mean state of each training pair's positive answer
    negative: Tensor

    @classmethod
    def collect(
        cls,
        model: TransformerBridge,
        train_pairs: Sequence[ContrastPair],
        hook: str,
        variance: float = 0.9,
        batch_size: int = 8,
        cache: AnalysisCache | None = None,
    ) -> SiteStates:
        valid = cached_valid_activations(
            cache, model, [hook], train_pairs, sources=("neutral", "answers"), batch_size=batch_size
        )
        manifold = ActivationManifold(n_components=variance).fit(
            valid.fitting(hook), calibration=valid.held_out(hook)
        )
        classes = capture_activations(
            model, train_pairs, [hook], batch_size=batch_size, progress=False
        )
        return cls(
            hook,
            manifold,
            valid.fitting(hook),
            valid.held_out(hook),
            classes.select(hook, "positive"),
            classes.select(hook, "negative"),
        )


def anchor_steers(
    model: TransformerBridge,
    diff_of_means: SteeringVector,
    states: SiteStates,
    scales: SiteScales,
    wanted: Sequence[str],
    unit: float = 0.5,
) -> dict[str, Intervention]:
    """The ``wanted`` anchors of the module docstring, built around the DiffMean vector."""
    layer, site, positions = diff_of_means.layer, diff_of_means.site, diff_of_means.positions
    direction = diff_of_means.raw_vector.cpu()
    builders = {
        "angular": lambda: AngularSteer.plane(
            model, layer, direction, states.fitting, site, positions, unit=unit
        ),
        "ace": lambda: AffineConceptEdit.fit(
            model, layer, direction, states.negative, scales, site, positions
        ),
        "ids": lambda: DistanceScaled.fit(diff_of_means, states.positive, states.negative),
    }
    return {name: builders[name]() for name in ANCHORS if name in wanted}


def clip_around(intervention: Intervention, states: SiteStates, strength: float = 1.0):
    """``intervention`` through the manifold clip of ``states`` (τ from held-out valid states)."""
    return ManifoldClip.fit(intervention, states.manifold, states.held_out, strength=strength)
