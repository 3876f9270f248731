"""Vectors as objects of other steering packages: ``steering-vectors`` and ``repeng``.

Both add a vector to a layer's output through forward hooks on the Hugging Face model: a
``steering_vectors.SteeringVector`` holds ``layer_activations`` by layer and a ``layer_type``
(``"decoder_block"``: the block output, ``"mlp"``: the MLP's output); a
``repeng.ControlVector`` holds ``directions`` by layer, added to the block output, and the
``model_type`` it was made for. Read in, each becomes a workbench
:class:`~workbench.steering.forms.SteeringVector` at the matching site, with provenance; written
out, a workbench vector becomes a ``steering_vectors.SteeringVector`` that steers the same
model to the same logits. Neither package is needed to import this module: each is imported
where it is used, with an error naming it when it is missing.

>>> imported = from_steering_vectors(theirs, model)   # their vector, here
>>> theirs = to_steering_vectors(imported.vectors)    # and back
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from workbench.errors import ArtefactError, ConfigError
from workbench.hooks.sites import Site
from workbench.steering.forms import SteeringVector
from workbench.steering.imported import ImportedVectors, checked_vector, model_type, vectors_for

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# steering-vectors' layer types that a workbench site reproduces exactly
LAYER_TYPE_SITES: dict[str, Site] = {"decoder_block": "block", "mlp": "mlp_out"}


def from_steering_vectors(vector: Any, model: TransformerBridge) -> ImportedVectors:
    """A ``steering_vectors.SteeringVector`` as workbench vectors for ``model``, at the site its
    ``layer_type`` names (``decoder_block`` → ``block``, ``mlp`` → ``mlp_out``)."""
    activations = getattr(vector, "layer_activations", None)
    layer_type = getattr(vector, "layer_type", None)
    if not isinstance(activations, Mapping):
        raise ArtefactError(f"a {type(vector).__name__} has no layer_activations mapping")
    site = LAYER_TYPE_SITES.get(str(layer_type))
    if site is None:
        raise ArtefactError(
            f"steering-vectors layer_type {layer_type!r} has no workbench site; "
            f"readable types: {sorted(LAYER_TYPE_SITES)}"
        )
    by_layer = _layers(activations, "steering-vectors layer_activations")
    return _object(model, by_layer, site, "steering-vectors", {"layer_type": layer_type})


def to_steering_vectors(vectors: Mapping[int, SteeringVector]) -> Any:
    """Workbench vectors (one site for all) as a ``steering_vectors.SteeringVector`` whose
    ``apply(hf_model, multiplier=m)`` adds ``m`` × the raw vector where the workbench does."""
    package = _package("steering_vectors")
    sites = {v.site for v in vectors.values()}
    by_site = {site: layer_type for layer_type, site in LAYER_TYPE_SITES.items()}
    if len(sites) != 1 or next(iter(sites)) not in by_site:
        raise ConfigError(
            f"steering-vectors takes one layer type per vector; these act at {sorted(sites)} "
            f"(writable sites: {sorted(by_site)})"
        )
    activations = {int(layer): v.raw_vector.detach().float().cpu() for layer, v in vectors.items()}
    return package.SteeringVector(activations, by_site[sites.pop()])


def from_repeng(
    vector: Any, model: TransformerBridge, other_model: bool = False
) -> ImportedVectors:
    """A ``repeng.ControlVector`` as block-output vectors for ``model``; its ``model_type`` must
    be the model's unless ``other_model``. (repeng's ``normalize`` option, which rescales the
    steered state, is a choice at use and not part of the vector; it is not reproduced.)"""
    directions = getattr(vector, "directions", None)
    if not isinstance(directions, Mapping):
        raise ArtefactError(f"a {type(vector).__name__} has no directions mapping")
    hint, kind = str(getattr(vector, "model_type", None)), model_type(model)
    if hint != kind and not other_model:
        raise ArtefactError(
            f"repeng vector made for a {hint!r} model, and this one is {kind!r} "
            "(other_model=True reads it all the same)"
        )
    by_layer = _layers(directions, "repeng directions")
    return _object(model, by_layer, "block", "repeng", {"model_type": hint})


def _layers(mapping: Mapping[Any, Any], where: str) -> dict[int, Tensor]:
    by_layer = {}
    for key, value in mapping.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise ArtefactError(f"{where}: key {key!r} is not a layer number")
        tensor = torch.as_tensor(np.asarray(value)) if not isinstance(value, Tensor) else value
        by_layer[int(key)] = checked_vector(tensor.detach().cpu(), f"{where}[{key}]")
    if not by_layer:
        raise ArtefactError(f"{where}: holds no vectors")
    return by_layer


def _object(model, by_layer, site: Site, kind: str, extra: dict[str, Any]) -> ImportedVectors:
    """Vectors from an in-memory object: provenance hashes each tensor's bytes (no file)."""
    digest = {
        str(layer): hashlib.sha256(t.numpy().astype(np.float32).tobytes()).hexdigest()
        for layer, t in sorted(by_layer.items())
    }
    return vectors_for(model, by_layer, site, {"format": kind, **extra, "sha256": digest})


def _package(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ConfigError(
            f"writing a {name} object needs the {name.replace('_', '-')} package ({error})"
        ) from None
