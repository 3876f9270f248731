"""Steering vectors made elsewhere, read in (and written out) as one vector per layer.

Three file formats: a safetensors file of ``{layer: tensor}`` (keys such as ``"12"``,
``"layer_12"`` or ``"model.layers.12"``; the layout most tools can export), EasyEdit's folder of
``layer_{L}.pt`` files (loaded with ``torch.load(weights_only=True)``, so no pickled code runs)
and the GGUF control vector of llama.cpp and repeng (architecture ``controlvector``, one F32
tensor ``direction.{L}`` per layer, added to block L's output; llama.cpp cannot steer block 0).
Objects of the steering-vectors and repeng packages are in :mod:`workbench.steering.toolkits`.
Each vector becomes a workbench
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

import numpy as np
import torch
from gguf import GGUFReader, GGUFWriter
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.atomic import file_sha256, replacing
from workbench.errors import ArtefactError, ConfigError, MissingFileError
from workbench.hooks.sites import DEFAULT_SITE, Site
from workbench.models.loading import model_provenance
from workbench.steering.forms import SteeringVector

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

LAYER_KEY = re.compile(r"(\d+)$")
EASYEDIT_FILE = re.compile(r"^layer_(\d+)\.pt$")
GGUF_ARCH = "controlvector"
GGUF_TENSOR = re.compile(r"^direction\.(\d+)$")


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
        by_layer[layer] = checked_vector(tensor, f"{path}, key {key!r}")
    if not by_layer:
        raise ArtefactError(f"{path}: holds no tensors")
    return _from_files(model, by_layer, site, "layer-tensors", path)


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
        by_layer[layer] = checked_vector(loaded, str(file))
    return _from_files(model, by_layer, site, "easyedit", folder, files)


def read_gguf(
    path: str | Path, model: TransformerBridge, other_model: bool = False
) -> ImportedVectors:
    """A GGUF control vector (llama.cpp's ``--control-vector`` file, repeng's ``export_gguf``)
    as vectors for ``model``; its ``model_hint`` must be the model's type unless
    ``other_model``."""
    path = _existing(path)
    try:
        reader = GGUFReader(path)
    except Exception as error:  # gguf raises ValueError, struct.error, ... for a broken file
        raise ArtefactError(f"{path}: not a readable GGUF file ({error})") from None
    arch = _gguf_string(reader, "general.architecture")
    if arch != GGUF_ARCH:
        raise ArtefactError(f"{path}: general.architecture is {arch!r}, not {GGUF_ARCH!r}")
    hint, kind = _gguf_string(reader, f"{GGUF_ARCH}.model_hint"), model_type(model)
    if hint != kind and not other_model:
        raise ArtefactError(
            f"{path}: made for a {hint!r} model, and this one is {kind!r} "
            "(other_model=True reads it all the same)"
        )
    by_layer: dict[int, Tensor] = {}
    for tensor in reader.tensors:
        match = GGUF_TENSOR.match(tensor.name)
        if match is None:
            raise ArtefactError(f"{path}: tensor {tensor.name!r} is not direction.<layer>")
        data = np.asarray(tensor.data)
        if data.dtype not in (np.float32, np.float16):
            raise ArtefactError(f"{path}: tensor {tensor.name!r} is {data.dtype}, not F32 or F16")
        by_layer[int(match.group(1))] = checked_vector(
            torch.from_numpy(data.copy()), f"{path}, tensor {tensor.name!r}"
        )
    count = reader.get_field(f"{GGUF_ARCH}.layer_count")
    if count is not None and int(count.contents()) != len(by_layer):
        raise ArtefactError(
            f"{path}: layer_count says {int(count.contents())} and it holds {len(by_layer)} tensors"
        )
    if not by_layer:
        raise ArtefactError(f"{path}: holds no direction tensors")
    return _from_files(model, by_layer, DEFAULT_SITE, "gguf-control-vector", path)


def write_gguf(
    vectors: Mapping[int, SteeringVector | Tensor], path: str | Path, model_hint: str
) -> Path:
    """Write a GGUF control vector (atomically) that llama.cpp's ``--control-vector`` and
    repeng's ``ControlVector.import_gguf`` load: ``direction.{L}`` in F32, the raw vector added
    to block L's output at strength 1. ``model_hint`` is the model's type
    (:func:`model_type`). Only block-output vectors, and no block 0 (llama.cpp refuses it)."""
    path = Path(path)
    tensors = {}
    for layer, vector in sorted(vectors.items()):
        if isinstance(vector, SteeringVector):
            if vector.site != DEFAULT_SITE:
                raise ConfigError(
                    f"layer {layer}: a GGUF control vector is added to the block output, and "
                    f"this vector acts at the {vector.site!r} site"
                )
            vector = vector.raw_vector
        if layer < 1:
            raise ConfigError(f"layer {layer}: llama.cpp steers block outputs from layer 1 on")
        tensors[layer] = checked_vector(vector.detach().cpu(), f"layer {layer}").numpy()
    if not tensors:
        raise ConfigError("no vectors to write")
    with replacing(path) as temporary:
        writer = GGUFWriter(str(temporary), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(tensors))
        for layer, data in tensors.items():
            writer.add_tensor(f"direction.{layer}", data.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def model_type(model: TransformerBridge) -> str:
    """The model's Hugging Face ``model_type`` (``"llama"``, ``"gemma3_text"``): the hint GGUF
    control vectors and repeng carry."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    return str(getattr(config, "model_type", None) or model.cfg.model_name)


def _gguf_string(reader: GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    return None if field is None else str(field.contents())


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no vector file or folder at {path}")
    return path


def checked_vector(tensor: Tensor, where: str) -> Tensor:
    """``tensor`` as a 1-D float32 vector (a leading axis of 1 dropped), or an error naming
    ``where`` if it is not one or not finite."""
    vector = tensor.squeeze(0) if tensor.ndim == 2 and tensor.shape[0] == 1 else tensor
    if vector.ndim != 1:
        raise ArtefactError(f"{where}: a vector must be 1-D, got shape {tuple(tensor.shape)}")
    if not vector.is_floating_point() or not torch.isfinite(vector).all():
        raise ArtefactError(f"{where}: the vector is not finite floating-point values")
    return vector.float()


def vectors_for(
    model: TransformerBridge, by_layer: Mapping[int, Tensor], site: Site, source: dict[str, Any]
) -> ImportedVectors:
    """Vectors by layer, checked against ``model`` (a layer it lacks, a wrong width), with
    ``source`` (format, file, hashes) plus the site and the model as provenance."""
    vectors = {}
    for layer, vector in sorted(by_layer.items()):
        try:
            vectors[layer] = SteeringVector.for_model(model, layer, site, vector=vector)
        except ValueError as error:
            where = source.get("source", source["format"])
            reason = f"the vector for layer {layer} does not fit: {error}"
            raise ArtefactError(f"{where}: {reason}") from None
    provenance = {**source, "site": site, "model": model_provenance(model).to_dict()}
    return ImportedVectors(vectors, provenance)


def _from_files(model, by_layer, site, kind: str, source: Path, files=None) -> ImportedVectors:
    hashed = files if files is not None else [source]
    sha256 = {p.name: file_sha256(p) for p in hashed}
    return vectors_for(
        model, by_layer, site, {"format": kind, "source": str(source), "sha256": sha256}
    )
