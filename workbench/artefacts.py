"""Artefacts on disk: tensors in ``<path>.safetensors`` beside metadata in ``<path>.json``.

Every saved result (activations, directions, interventions) uses this pair of files, so the
JSON, which records how the artefact was made, can be read without loading tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.errors import ConfigError, MissingFileError


def save_artefact(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``meta``; returns the path without suffix."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    save_file(contiguous, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path


def load_artefact(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read what :func:`save_artefact` wrote, naming the file that is missing or broken."""
    path = Path(path).with_suffix("")
    for suffix in (".safetensors", ".json"):
        if not path.with_suffix(suffix).is_file():
            raise MissingFileError(f"no artefact file {path.with_suffix(suffix)}")
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path.with_suffix('.json')}: invalid JSON ({error.msg})") from None
    return load_file(str(path.with_suffix(".safetensors"))), meta
