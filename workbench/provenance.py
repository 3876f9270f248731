"""How an artefact was made: model, numerics, data and code versions, recorded with every result."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, str | None]:
    """Versions of the packages whose behaviour decides the numbers."""
    names = ("steering-workbench", "torch", "transformer-lens", "transformers", "numpy")
    versions: dict[str, str | None] = {n: package_version(n) for n in names}
    versions["python"] = platform.python_version()
    return versions


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelProvenance:
    """Which model, from where, in which numerics mode.

    ``numerics`` is ``"raw"`` (Hugging Face numerics, the TransformerBridge default) or
    ``"compatibility"`` (after ``enable_compatibility_mode()``: folded norms, centred weights).
    """

    name: str
    source: str
    revision: str | None
    numerics: str
    architecture: str | None = None
    dtype: str = "float32"
    prepend_bos: bool = True
    attn_implementation: str = "eager"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProvenance:
        return cls(**data)


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say how an artefact was made; saved beside it as JSON."""

    model: ModelProvenance
    method: str
    dataset_hash: str | None = None
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    software: dict[str, str | None] = field(default_factory=software_versions)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        data = dict(data)
        data["model"] = ModelProvenance.from_dict(data["model"])
        return cls(**data)
