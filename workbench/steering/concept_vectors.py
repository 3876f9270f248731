"""Steering vectors read off a concept's pairs: capture → extract a direction → SteeringVector.

Activations are captured once for every layer asked for (at the site's output hook, plus the
residual stream for the typical norm); each extractor's direction then becomes a vector at that
site. With ``normalise`` (the default) it is a unit direction in units of the site's typical
norm (:meth:`SteeringVector.along`: at m the push is m × the typical norm), so every method is
compared at equal push; without, the raw direction is the vector (m = 1 adds the mean
difference itself).

>>> vector = concept_vector(model, pairs.train, layer=6)               # balanced DiffMean
>>> vectors = concept_vectors(model, pairs.train, [3, 6], methods=("random",))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from workbench.data.pairs import ContrastPair
from workbench.directions.capture import capture_activations
from workbench.directions.extract import direction_from_activations
from workbench.hooks.names import resid_post
from workbench.hooks.sites import DEFAULT_SITE, Site, site_hooks, site_scales
from workbench.steering.forms import SteeringVector
from workbench.steering.roles import Positions

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DEFAULT_EXTRACTOR = "balanced_diff_of_means"


def concept_vectors(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    layers: Sequence[int],
    *,
    site: Site = DEFAULT_SITE,
    methods: Sequence[str] = (DEFAULT_EXTRACTOR,),
    positions: Positions = "all",
    normalise: bool = True,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[tuple[int, str], SteeringVector]:
    """One vector per (layer, extractor), from one capture of ``pairs``."""
    outputs = {layer: site_hooks(site, layer)[1] for layer in layers}
    hooks = list(dict.fromkeys([*outputs.values(), *(resid_post(layer) for layer in layers)]))
    acts = capture_activations(model, pairs, hooks, batch_size=batch_size, progress=False)
    vectors: dict[tuple[int, str], SteeringVector] = {}
    for layer in layers:
        scales = site_scales(model, site, layer) if normalise else None
        for method in methods:
            direction = direction_from_activations(acts, outputs[layer], method, seed)
            vectors[layer, method] = (
                SteeringVector.along(model, layer, direction.vector, scales, site, positions)
                if scales is not None
                else SteeringVector.for_model(
                    model, layer, site, positions, vector=direction.vector
                )
            )
    return vectors


def concept_vector(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    layer: int,
    *,
    site: Site = DEFAULT_SITE,
    method: str = DEFAULT_EXTRACTOR,
    positions: Positions = "all",
    normalise: bool = True,
    seed: int = 0,
    batch_size: int = 16,
) -> SteeringVector:
    """The vector of one extractor at one layer (see :func:`concept_vectors`)."""
    vectors = concept_vectors(
        model,
        pairs,
        [layer],
        site=site,
        methods=[method],
        positions=positions,
        normalise=normalise,
        seed=seed,
        batch_size=batch_size,
    )
    return vectors[layer, method]
