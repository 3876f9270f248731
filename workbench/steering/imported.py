"""Steering vectors made elsewhere, read in (and written out) as one vector per layer.

Two formats that need no other package: a safetensors file of ``{layer: tensor}`` (keys such as
``"12"``, ``"layer_12"`` or ``"model.layers.12"``; the layout most tools can export) and
EasyEdit's folder of ``layer_{L}.pt`` files (loaded with ``torch.load(weights_only=True)``, so no
pickled code runs). Each vector becomes a workbench
:class:`~workbench.steering.forms.SteeringVector` in raw activation units at the site the source
tool adds it (the block output, where both add their vectors), with provenance saying where it
came from (format, file, sha256). Bad files are refused with an error naming the file and key.

>>> imported = read_layer_tensors("vectors.safetensors", model)
>>> with imported.vectors[12].applied(model, 1.0): ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.atomic import file_sha256, replacing
from workbench.errors import ArtefactError, MissingFileError
from workbench.hooks.sites import DEFAULT_SITE, Site
from workbench.models.loading import model_provenance
from workbench.steering.forms import SteeringVector

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

LAYER_KEY = re.compile(r"(\d+)$")
EASYEDIT_FILE = re.compile(r"^layer_(\d+)\.pt$")


@dataclass(frozen=True)
class ImportedVectors:
    """Vectors by layer, and where they came from."""

    vectors: dict[int, SteeringVector]
    provenance: dict[str, Any] = field(default_factory=dict)


def read_layer_tensors(
    path: str | Path, model: TransformerBridge, site: Site = DEFAULT_SITE
) -> ImportedVectors:
    """A safetensors file of one 1-D vector per layer (the layer is the key's trailing number),
    as vectors for ``model`` (layers and widths checked against it)."""
    path = _existing(path)
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a broken file
        raise ArtefactError(f"{path}: not a readable safetensors file ({error})") from None
    by_layer: dict[int, Tensor] = {}
    for key, tensor in tensors.items():
        match = LAYER_KEY.search(key)
        if match is None:
            raise ArtefactError(f"{path}: key {key!r} names no layer (expected e.g. '12')")
        layer = int(match.group(1))
        if layer in by_layer:
            raise ArtefactError(f"{path}: two tensors for layer {layer} (key {key!r})")
        by_layer[layer] = _vector(tensor, f"{path}, key {key!r}")
    if not by_layer:
        raise ArtefactError(f"{path}: holds no tensors")
    return _imported(model, by_layer, site, "layer-tensors", path)


def write_layer_tensors(vectors: Mapping[int, SteeringVector | Tensor], path: str | Path) -> Path:
    """Write ``{str(layer): raw vector}`` as safetensors (atomically), readable back by
    :func:`read_layer_tensors` and by any tool that reads safetensors."""
    path = Path(path)
    tensors = {
        str(layer): (v.raw_vector if isinstance(v, SteeringVector) else v).detach().float().cpu()
        for layer, v in vectors.items()
    }
    with replacing(path) as temporary:
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(temporary))
    return path


def read_easyedit(
    folder: str | Path, model: TransformerBridge, site: Site = DEFAULT_SITE
) -> ImportedVectors:
    """EasyEdit's vectors: every ``layer_{L}.pt`` in ``folder`` (a tensor of shape [d] or
    [1, d]), loaded with ``weights_only=True``, as vectors for ``model``."""
    folder = _existing(folder)
    files = sorted(p for p in folder.iterdir() if EASYEDIT_FILE.match(p.name))
    if not files:
        raise MissingFileError(f"{folder}: no layer_<L>.pt files")
    by_layer = {}
    for file in files:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # an unpickling error, or a file that is not torch's
            reason = str(error).splitlines()[0][:200]
            raise ArtefactError(f"{file}: not a plain tensor file ({reason})") from None
        if not isinstance(loaded, Tensor):
            raise ArtefactError(f"{file}: holds a {type(loaded).__name__}, not a tensor")
        layer = int(EASYEDIT_FILE.match(file.name).group(1))  # type: ignore[union-attr]
        by_layer[layer] = _vector(loaded, str(file))
    return _imported(model, by_layer, site, "easyedit", folder, files)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no vector file or folder at {path}")
    return path


def _vector(tensor: Tensor, where: str) -> Tensor:
    vector = tensor.squeeze(0) if tensor.ndim == 2 and tensor.shape[0] == 1 else tensor
    if vector.ndim != 1:
        raise ArtefactError(f"{where}: a vector must be 1-D, got shape {tuple(tensor.shape)}")
    if not vector.is_floating_point() or not torch.isfinite(vector).all():
        raise ArtefactError(f"{where}: the vector is not finite floating-point values")
    return vector.float()


def _imported(model, by_layer, site, kind: str, source: Path, files=None) -> ImportedVectors:
    vectors = {}
    for layer, vector in sorted(by_layer.items()):
        try:
            vectors[layer] = SteeringVector.for_model(model, layer, site, vector=vector)
        except ValueError as error:
            reason = f"the vector for layer {layer} does not fit: {error}"
            raise ArtefactError(f"{source}: {reason}") from None
    provenance_model = model_provenance(model).to_dict()
    hashed = files if files is not None else [source]
    provenance = {
        "format": kind,
        "source": str(source),
        "sha256": {p.name: file_sha256(p) for p in hashed},
        "site": site,
        "model": provenance_model,
    }
    return ImportedVectors(vectors, provenance)
