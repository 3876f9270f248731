"""Results that depend only on the model and the data, kept on disk across runs.

The layer sweep, the site scales and the valid-text activations (from which manifolds are
fitted) are the same for every study, comparison, claim and curves run on the same model and
pairs; :class:`AnalysisCache` computes each once. An entry is a folder
``<kind>-<hash>/`` whose name is the hash of its description (the kind, the model's provenance
and a fingerprint of its weights, the data's hash, hooks, settings and :data:`CACHE_VERSION`),
holding ``record.json`` (the description and the sha256 of every data file) and its data
(``data.safetensors`` for arrays, the record itself for small values). On reading, the record
must describe exactly what is asked and every file must match its sha256; an entry that does
not is refused with an error naming the file (delete the folder to recompute it). Files are
written atomically (data before record), so a run killed at any moment leaves only whole
entries; a folder without its record is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file, save_file

from workbench.atomic import file_sha256, replacing, write_text
from workbench.data.concepts import neutral_sentences
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import ArtefactError
from workbench.models.loading import model_provenance
from workbench.progress import say
from workbench.provenance import stable_hash

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.hooks.sites import Site, SiteScales
    from workbench.manifold.valid import TokenActivations

CACHE_VERSION = 1
RECORD_FILE = "record.json"
DATA_FILE = "data.safetensors"
_FINGERPRINTS = "workbench_weights_fingerprint"


def weights_fingerprint(model: TransformerBridge) -> str:
    """A cheap hash of the model's weights (every parameter's shape, sum and a strided sample),
    recomputed only when a parameter was modified in place (its version counter moved)."""
    parameters = list(model.named_parameters())
    versions = tuple(p._version for _, p in parameters)
    known = model.__dict__.get(_FINGERPRINTS)
    if known is not None and known[0] == versions:
        return known[1]
    parts = []
    with torch.no_grad():
        for name, p in parameters:
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].double().cpu().tolist()
            parts.append([name, list(p.shape), float(flat.sum(dtype=torch.float32)), sample])
    digest = stable_hash(parts)
    model.__dict__[_FINGERPRINTS] = (versions, digest)
    return digest


class AnalysisCache:
    """A folder of cached analysis results (None: a cache that keeps nothing)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None

    def describe(self, kind: str, model: TransformerBridge, **details: Any) -> dict[str, Any]:
        """What decides an entry: kind, model, weights, version and ``details``."""
        return {
            "kind": kind,
            "cache_version": CACHE_VERSION,
            "model": model_provenance(model).to_dict(),
            "weights": weights_fingerprint(model),
            **details,
        }

    def fetch(
        self,
        description: dict[str, Any],
        compute: Callable[[], tuple[dict[str, Any], dict[str, np.ndarray]]],
        what: str,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The (values, arrays) stored under ``description``, or ``compute()``'s, then stored.

        ``values`` must be JSON; ``arrays`` numpy arrays. ``what`` names the entry in the line
        that says it was reused."""
        if self.folder is None:
            return compute()
        entry = self.folder / f"{description['kind']}-{stable_hash(description)[:20]}"
        record_path = entry / RECORD_FILE
        if record_path.is_file():
            values, arrays = self._read(entry, description)
            say(f"{what}: reused from the cache ({entry})")
            return values, arrays
        values, arrays = compute()
        entry.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"description": description, "values": values}
        if arrays:
            with replacing(entry / DATA_FILE) as temporary:
                save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(temporary))
            record["sha256"] = file_sha256(entry / DATA_FILE)
        write_text(record_path, json.dumps(record, indent=1, default=str))
        return values, arrays

    def _read(self, entry: Path, description: dict[str, Any]):
        path = entry / RECORD_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ArtefactError(f"{path}: unreadable cache record ({error}); delete it") from error
        if not isinstance(record, dict) or stable_hash(record.get("description")) != stable_hash(
            description
        ):
            raise ArtefactError(f"{path}: records another result than this folder's; delete it")
        arrays: dict[str, np.ndarray] = {}
        if "sha256" in record:
            data = entry / DATA_FILE
            if not data.is_file() or file_sha256(data) != record["sha256"]:
                raise ArtefactError(
                    f"{data}: missing or changed since it was written (sha256 differs from "
                    f"{path}); delete the folder {entry} to recompute it"
                )
            arrays = load_file(str(data))
        return record.get("values", {}), arrays


def _pairs_hash(pairs: Sequence[ContrastPair]) -> str:
    return PairDataset(pairs).content_hash()


def cached_layer_choice(
    cache: AnalysisCache | None,
    model: TransformerBridge,
    pairs: PairDataset,
    *,
    seed: int = 0,
    progress: bool = True,
) -> tuple[int, pd.DataFrame]:
    """The recommended layer and the layer-sweep table (answer-balanced DiffMean over every
    layer, on validation pairs carved from train: :func:`~workbench.directions.layer_sweep`)."""
    from workbench.directions.layer_sweep import layer_sweep

    def compute():
        sweep = layer_sweep(
            model, pairs, methods=("balanced_diff_of_means",), seed=seed, progress=progress
        )
        records = [  # numpy scalars as Python ones: JSON keeps every float exactly
            {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
            for row in sweep.table.to_dict(orient="records")
        ]
        return {"layer": sweep.recommended_layer, "table": records}, {}

    cache = cache or AnalysisCache(None)
    description = cache.describe(
        "layer_sweep", model, pairs=_pairs_hash(pairs.train), seed=seed, n_layers=model.cfg.n_layers
    )
    values, _ = cache.fetch(description, compute, "layer sweep")
    return int(values["layer"]), pd.DataFrame(values["table"])


def cached_site_scales(
    cache: AnalysisCache | None, model: TransformerBridge, site: Site, layer: int
) -> SiteScales:
    """:func:`~workbench.hooks.sites.site_scales`, kept across runs."""
    from workbench.hooks.sites import SiteScales, site_scales

    if cache is None or cache.folder is None:
        return site_scales(model, site, layer)
    description = cache.describe(
        "site_scales", model, site=site, layer=layer, neutral=stable_hash(neutral_sentences())
    )
    values, _ = cache.fetch(
        description, lambda: (site_scales(model, site, layer).to_dict(), {}), "site scales"
    )
    return SiteScales(**values)


def cached_valid_activations(
    cache: AnalysisCache | None,
    model: TransformerBridge,
    hooks: Sequence[str],
    pairs: Sequence[ContrastPair],
    *,
    sources: Sequence[str],
    seed: int = 0,
    batch_size: int = 16,
    memory_cap: int | None = None,
    progress: bool = True,
) -> TokenActivations:
    """:func:`~workbench.manifold.valid.collect_valid_activations`, kept across runs (streamed
    collections, under a memory cap, are not cached: their point is not to hold the rows)."""
    from workbench.manifold.valid import TokenActivations, collect_valid_activations

    def collect() -> TokenActivations:
        return collect_valid_activations(
            model,
            hooks,
            pairs,
            sources=sources,
            seed=seed,
            batch_size=batch_size,
            memory_cap=memory_cap,
            progress=progress,
        )

    if cache is None or cache.folder is None or memory_cap is not None:
        return collect()

    def compute():
        valid = collect()
        names = sorted(set(valid.source.tolist()))
        arrays = {f"act:{h}": valid.activations[h].numpy() for h in hooks}
        arrays.update(
            source=np.array([names.index(s) for s in valid.source], dtype=np.int64),
            text_index=np.asarray(valid.text_index, dtype=np.int64),
            calibration=np.asarray(valid.calibration, dtype=np.bool_),
        )
        return {"sources": names}, arrays

    description = cache.describe(
        "valid_activations",
        model,
        hooks=list(hooks),
        pairs=_pairs_hash(pairs),
        sources=list(sources),
        seed=seed,
        batch_size=batch_size,
        neutral=stable_hash(neutral_sentences()) if "neutral" in sources else None,
    )
    values, arrays = cache.fetch(description, compute, "valid activations")
    names = np.array(values["sources"])
    return TokenActivations(
        activations={h: torch.from_numpy(arrays[f"act:{h}"].copy()) for h in hooks},
        source=names[arrays["source"]] if len(arrays["source"]) else np.array([], dtype=str),
        text_index=arrays["text_index"],
        calibration=arrays["calibration"].astype(bool),
    )
