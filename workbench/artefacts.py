"""Artefacts on disk: tensors in ``<path>.safetensors`` beside metadata in ``<path>.json``.

Every saved result (activations, directions, interventions) uses this pair of files, so the
JSON, which records how the artefact was made, can be read without loading tensors. The JSON
also carries the artefact's ``kind`` and an integrity record: the sha256 of every tensor's bytes
(with its dtype and shape) and of the rest of the metadata. :func:`load_artefact` checks all of
them, so a flipped byte, an edited field, or one artefact's tensors beside another's metadata is
refused with an error naming the file, never used. Both files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.atomic import replacing, write_text
from workbench.errors import ArtefactError, MissingFileError
from workbench.provenance import stable_hash

SUFFIXES = (".safetensors", ".json")
INTEGRITY = "integrity"


def artefact_base(path: str | Path) -> Path:
    """The artefact's path without its file suffix: only ``.safetensors`` / ``.json`` are cut,
    so a name with dots (``sentiment.v2``) stays whole instead of losing its last part."""
    path = Path(path)
    return path.with_name(path.name[: -len(path.suffix)]) if path.suffix in SUFFIXES else path


def safe_stem(name: str) -> str:
    """``name`` (a concept name or a pair file's path) as one file-name component: the file's
    name for a path, every character outside ``[A-Za-z0-9._-]`` replaced by ``_``, so an
    artefact named after it stays inside the folder it is written to."""
    stem = Path(name).name or "unnamed"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")
    return cleaned or "unnamed"


def artefact_file(base: Path, suffix: str) -> Path:
    """``base`` with ``suffix`` appended (never replacing a dotted part of the name)."""
    return base.with_name(base.name + suffix)


def tensor_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (any dtype, bf16 included)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_artefact(
    path: str | Path, tensors: Mapping[str, Tensor], meta: dict[str, Any], kind: str
) -> Path:
    """Write ``tensors`` and ``meta`` (with ``kind`` and the integrity record); returns the path
    without suffix."""
    path = artefact_base(path)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    meta = {**meta, "kind": kind}
    meta[INTEGRITY] = {
        "tensors": {name: tensor_sha256(t) for name, t in contiguous.items()},
        "meta": stable_hash({k: v for k, v in meta.items() if k != INTEGRITY}),
    }
    text = json.dumps(meta, indent=2)  # fails before anything is written if meta is not JSON
    with replacing(artefact_file(path, ".safetensors")) as temporary:
        save_file(contiguous, str(temporary))
    write_text(artefact_file(path, ".json"), text)
    return path


def load_artefact(path: str | Path, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read what :func:`save_artefact` wrote, checking its kind and integrity record; every
    error names the file that is missing, broken or of another kind."""
    path = artefact_base(path)
    for suffix in SUFFIXES:
        if not artefact_file(path, suffix).is_file():
            raise MissingFileError(f"no artefact file {artefact_file(path, suffix)}")
    json_file, tensor_file = artefact_file(path, ".json"), artefact_file(path, ".safetensors")
    meta = _read_meta(json_file, kind)
    try:
        tensors = load_file(str(tensor_file))
    except Exception as error:  # safetensors raises its own error types for a broken file
        raise ArtefactError(f"{tensor_file}: not a readable safetensors file ({error})") from None
    _check_integrity(meta[INTEGRITY], tensors, tensor_file)
    return tensors, meta


def meta_field(meta: Mapping[str, Any], key: str, where: str | Path) -> Any:
    """``meta[key]``, or an :class:`ArtefactError` naming the file and the missing field."""
    if key not in meta:
        raise ArtefactError(f"{where}: the metadata has no field {key!r}")
    return meta[key]


def _read_meta(json_file: Path, kind: str) -> dict[str, Any]:
    try:
        meta = json.loads(json_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        reason = f"{error.msg}, line {error.lineno}"
        raise ArtefactError(f"{json_file}: invalid JSON ({reason})") from None
    except (UnicodeDecodeError, RecursionError) as error:
        reason = type(error).__name__
        raise ArtefactError(f"{json_file}: not readable metadata ({reason})") from None
    if not isinstance(meta, dict):
        raise ArtefactError(f"{json_file}: metadata must be a JSON object")
    record = meta.get(INTEGRITY)
    if not isinstance(record, dict) or not isinstance(record.get("tensors"), dict):
        raise ArtefactError(
            f"{json_file}: no integrity record (written by an older workbench, or not an "
            "artefact); save it again to use it"
        )
    if stable_hash({k: v for k, v in meta.items() if k != INTEGRITY}) != record.get("meta"):
        raise ArtefactError(f"{json_file}: the metadata was changed after it was saved")
    if meta.get("kind") != kind:
        raise ArtefactError(f"{json_file}: is a {meta.get('kind')!r} artefact, not a {kind!r}")
    return meta


def _check_integrity(record: dict[str, Any], tensors: dict[str, Tensor], where: Path) -> None:
    expected = record["tensors"]
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ArtefactError(
            f"{where}: holds other tensors than its metadata records "
            f"(missing {missing}, unexpected {extra})"
        )
    for name, tensor in tensors.items():
        if tensor_sha256(tensor) != expected[name]:
            raise ArtefactError(f"{where}: tensor {name!r} does not match its recorded sha256")
