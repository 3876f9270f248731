"""Artefacts on disk: tensors in ``<path>.safetensors`` beside metadata in ``<path>.json``.

Every saved result (activations, directions, interventions) uses this pair of files, so the
JSON, which records how the artefact was made, can be read without loading tensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.errors import ConfigError, MissingFileError

SUFFIXES = (".safetensors", ".json")


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


def save_artefact(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``meta``; returns the path without suffix."""
    path = artefact_base(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    save_file(contiguous, str(artefact_file(path, ".safetensors")))
    artefact_file(path, ".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path


def load_artefact(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read what :func:`save_artefact` wrote, naming the file that is missing or broken."""
    path = artefact_base(path)
    for suffix in SUFFIXES:
        if not artefact_file(path, suffix).is_file():
            raise MissingFileError(f"no artefact file {artefact_file(path, suffix)}")
    json_file = artefact_file(path, ".json")
    try:
        meta = json.loads(json_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{json_file}: invalid JSON ({error.msg})") from None
    return load_file(str(artefact_file(path, ".safetensors"))), meta
