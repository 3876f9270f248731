"""Token activations streamed to disk in safetensors shards, under a memory cap the user sets.

A capture of 100k tokens at d = 3584 is 1.4 GB per hook in fp32; held in memory for every hook
it is what bounds the model size a machine can study. :class:`ActivationStore` copies appended
rows into preallocated buffers of half ``memory_cap`` bytes and writes a shard
(``shard-00000.safetensors``, written atomically) each time they are full; writing copies the
shard once more, so the store never holds more than the cap (the rows of the batch being
appended, and the forward that made them, are the caller's); ``close``
writes ``index.json`` (hooks, widths, rows per shard, the sha256 of every shard and the
provenance given). :meth:`ActivationStore.open` checks the index and each shard before use, and
:meth:`ActivationStore.batches` reads one shard at a time, which is what the streaming fit of
:meth:`~workbench.manifold.estimator.ActivationManifold.fit_stream` consumes.

>>> store = ActivationStore.create("runs/valid", hooks, memory_cap=256 * 2**20)
>>> store.append({hook: rows})            # as often as needed
>>> store.close(provenance)
>>> for rows in ActivationStore.open("runs/valid").batches(hook): ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.atomic import file_sha256, replacing, write_text
from workbench.errors import ArtefactError, ConfigError

INDEX = "index.json"


class ActivationStore:
    """Rows of activations per hook, on disk in shards; create, append, close, then open."""

    def __init__(self, folder: Path, hooks: Sequence[str], memory_cap: int, index: dict | None):
        self.folder, self.hooks, self.memory_cap = folder, list(hooks), int(memory_cap)
        self._buffer: dict[str, Tensor] = {}  # preallocated rows per hook, filled in place
        self._filled = 0
        self.peak_buffered = 0  # the most bytes held at once (what the cap bounds)
        self._index = index or {"hooks": self.hooks, "shards": [], "widths": {}}

    # -- writing ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: str | Path, hooks: Sequence[str], memory_cap: int = 256 * 2**20
    ) -> ActivationStore:
        """A new, empty store in ``folder`` (which must not hold one already)."""
        folder = Path(folder)
        if (folder / INDEX).exists():
            raise ConfigError(f"{folder} holds an activation store already; choose another")
        if memory_cap < 1:
            raise ConfigError(f"memory_cap must be a positive number of bytes, got {memory_cap}")
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, hooks, memory_cap, None)

    def append(self, rows: Mapping[str, Tensor]) -> None:
        """Add the same number of rows at every hook (copied to CPU, fp32)."""
        if set(rows) != set(self.hooks):
            raise ConfigError(f"rows for hooks {sorted(rows)}, but the store holds {self.hooks}")
        counts = {h: len(t) for h, t in rows.items()}
        if len(set(counts.values())) != 1:
            raise ConfigError(f"hooks were given different numbers of rows: {counts}")
        for hook, values in rows.items():
            width = self._index["widths"].setdefault(hook, int(values.shape[-1]))
            if values.ndim != 2 or values.shape[1] != width:
                raise ConfigError(f"rows at {hook} have shape {tuple(values.shape)}, width {width}")
        if not self._buffer:
            self._allocate()
        capacity = len(next(iter(self._buffer.values())))
        given, done = next(iter(counts.values())), 0
        while done < given:
            take = min(capacity - self._filled, given - done)
            for hook, values in rows.items():
                self._buffer[hook][self._filled : self._filled + take] = values[done : done + take]
            self._filled, done = self._filled + take, done + take
            if self._filled == capacity:
                self.flush()

    def _allocate(self) -> None:
        """Buffers of half the cap: writing a shard copies it once more (safetensors' bytes)."""
        row_bytes = sum(4 * self._index["widths"][h] for h in self.hooks)
        capacity = max(1, self.memory_cap // (2 * row_bytes))
        self._buffer = {
            h: torch.empty(capacity, self._index["widths"][h], dtype=torch.float32)
            for h in self.hooks
        }
        self.peak_buffered = 2 * capacity * row_bytes

    def flush(self) -> None:
        """Write the filled rows as one shard and start the buffer again."""
        if not self._filled:
            return
        name = f"shard-{len(self._index['shards']):05d}.safetensors"
        tensors = {h: self._buffer[h][: self._filled] for h in self.hooks}
        with replacing(self.folder / name) as temporary:
            save_file(tensors, str(temporary))
        self._index["shards"].append(
            {"file": name, "rows": self._filled, "sha256": file_sha256(self.folder / name)}
        )
        self._filled = 0

    def close(self, provenance: dict[str, Any] | None = None) -> ActivationStore:
        """Flush and write the index; the store can then be opened and read."""
        self.flush()
        self._index["provenance"] = provenance or {}
        self._index["memory_cap"] = self.memory_cap
        write_text(self.folder / INDEX, json.dumps(self._index, indent=2))
        return self

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path) -> ActivationStore:
        """A closed store, its index and every shard's sha256 checked."""
        folder = Path(folder)
        index_file = folder / INDEX
        if not index_file.is_file():
            raise ArtefactError(f"{index_file}: missing (not a closed activation store)")
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ArtefactError(f"{index_file}: not readable ({type(error).__name__})") from None
        for shard in index.get("shards", []):
            path = folder / shard["file"]
            if not path.is_file():
                raise ArtefactError(f"{path}: listed in {INDEX} but missing")
            if file_sha256(path) != shard["sha256"]:
                raise ArtefactError(f"{path}: does not match the sha256 in {INDEX}")
        return cls(folder, index["hooks"], index.get("memory_cap", 1), index)

    def __len__(self) -> int:
        return sum(shard["rows"] for shard in self._index["shards"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self._index.get("provenance", {}))

    def width(self, hook: str) -> int:
        self._require(hook)
        return int(self._index["widths"][hook])

    def batches(self, hook: str) -> Iterator[np.ndarray]:
        """The rows at ``hook``, one shard at a time, as float64 arrays."""
        self._require(hook)
        for shard in self._index["shards"]:
            yield load_file(str(self.folder / shard["file"]))[hook].double().numpy()

    def rows(self, hook: str, take: np.ndarray) -> np.ndarray:
        """The rows at the given global indices (sorted or not), read shard by shard."""
        take = np.asarray(take, dtype=np.int64)
        out = np.empty((len(take), self.width(hook)))
        start = 0
        for shard, values in zip(self._index["shards"], self.batches(hook)):
            inside = (take >= start) & (take < start + shard["rows"])
            out[inside] = values[take[inside] - start]
            start += shard["rows"]
        return out

    def _require(self, hook: str) -> None:
        if hook not in self.hooks:
            raise ConfigError(f"the store holds no activations at {hook!r}; it has {self.hooks}")
