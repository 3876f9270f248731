"""The sweep's disk cache: parts keyed by the pairs they hold, each checked before it is used.

A cache folder belongs to one sweep (its ``config.json`` records the sweep's description, whose
hash names the folder). Each part holds the rows of one set of pairs at every multiplier, in
``part-<hash of its pair ids>.parquet``, beside ``part-<...>.json``: the sweep's key, the pair
ids and the sha256 of the part file. So a sweep resumed with any batch size reuses exactly the
pairs already done and computes the rest; a part from another sweep, a part copied over
another, or an edited byte is refused with an error naming the file. Every file is written
atomically (parts before their records), so a run killed at any moment leaves only whole files;
a part without its record is ignored and recomputed. ``table.parquet`` (the merged table, also
recorded with its sha256) can always be rebuilt from the parts: :func:`rebuild_table`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.atomic import file_sha256, write_table, write_text
from workbench.errors import ArtefactError
from workbench.provenance import stable_hash

CONFIG_FILE = "config.json"
TABLE_FILE = "table.parquet"
TABLE_RECORD = "table.json"
PART_PREFIX = "part-"


class SweepCache:
    """One sweep's cache folder; created (or checked against ``description``) on opening."""

    def __init__(self, folder: Path, description: dict[str, Any], pair_ids: Sequence[str]):
        self.folder, self.key, self.pair_ids = folder, stable_hash(description), list(pair_ids)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / CONFIG_FILE
        if config.is_file():
            recorded = _read_json(config)
            if stable_hash(recorded.get("sweep")) != self.key:
                raise ArtefactError(f"{config}: records another sweep than this folder's")
        else:
            record = {"sweep": description, "pair_ids": self.pair_ids}
            write_text(config, json.dumps(record, indent=2))

    def table(self) -> pd.DataFrame | None:
        """The merged table, checked against its record; None when it was not written yet."""
        path = self.folder / TABLE_FILE
        if not path.is_file():
            return None
        if not (self.folder / TABLE_RECORD).is_file():
            raise ArtefactError(
                f"{path}: has no record {TABLE_RECORD} beside it (damaged, or not written by "
                "this sweep); delete it, or call rebuild_table() to merge it from the parts"
            )
        record = _read_json(self.folder / TABLE_RECORD)
        if record.get("key") != self.key or record.get("sha256") != file_sha256(path):
            raise ArtefactError(
                f"{path}: does not match its record {TABLE_RECORD} (changed after it was "
                "written); delete it, or call rebuild_table() to merge it again from the parts"
            )
        return _read_parquet(path)

    def done(self, n_multipliers: int) -> dict[str, pd.DataFrame]:
        """pair id -> its rows, from every recorded part (each checked)."""
        rows: dict[str, pd.DataFrame] = {}
        for record_file in sorted(self.folder.glob(f"{PART_PREFIX}*.json")):
            part = record_file.with_suffix(".parquet")
            record = _read_json(record_file)
            if record.get("key") != self.key:
                raise ArtefactError(f"{record_file}: a part of another sweep")
            if not part.is_file():
                raise ArtefactError(f"{part}: recorded by {record_file.name} but missing")
            if record.get("sha256") != file_sha256(part):
                raise ArtefactError(f"{part}: does not match the sha256 in {record_file.name}")
            table = _read_parquet(part)
            ids = list(record.get("pair_ids", []))
            if sorted(table["pair_id"]) != sorted(ids * n_multipliers):
                raise ArtefactError(f"{part}: holds other rows than {record_file.name} records")
            for pair_id, group in table.groupby("pair_id", sort=False):
                rows.setdefault(str(pair_id), group)
        return rows

    def add(self, part: pd.DataFrame, pair_ids: Sequence[str]) -> None:
        """Write the rows of ``pair_ids`` (the part first, then its record)."""
        name = f"{PART_PREFIX}{stable_hash(list(pair_ids))[:16]}"
        path = write_table(part, self.folder / f"{name}.parquet")
        record = {"key": self.key, "pair_ids": list(pair_ids), "sha256": file_sha256(path)}
        write_text(self.folder / f"{name}.json", json.dumps(record))

    def write_table(self, table: pd.DataFrame) -> None:
        path = write_table(table, self.folder / TABLE_FILE)
        record = {"key": self.key, "sha256": file_sha256(path), "rows": len(table)}
        write_text(self.folder / TABLE_RECORD, json.dumps(record))


def merge(rows: dict[str, pd.DataFrame], pair_ids: Sequence[str]) -> pd.DataFrame:
    """One table from per-pair rows: m-major, pairs in ``pair_ids`` order within each m."""
    table = pd.concat([rows[i] for i in pair_ids], ignore_index=True)
    return table.sort_values("m", kind="stable", ignore_index=True)


def rebuild_table(folder: str | Path) -> pd.DataFrame:
    """Merge a sweep's table again from its checked parts (after ``table.parquet`` was lost or
    damaged); every pair of the sweep must have its part."""
    folder = Path(folder)
    recorded = _read_json(folder / CONFIG_FILE)
    cache = SweepCache(folder, recorded["sweep"], recorded["pair_ids"])
    rows = cache.done(len(recorded["sweep"]["multipliers"]))
    missing = [i for i in cache.pair_ids if i not in rows]
    if missing:
        raise ArtefactError(f"{folder}: no part holds pairs {missing[:5]} (run the sweep again)")
    table = merge(rows, cache.pair_ids)
    cache.write_table(table)
    return table


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtefactError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ArtefactError(
            f"{path}: not a readable JSON record ({type(error).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise ArtefactError(f"{path}: a record must be a JSON object")
    return data


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ArtefactError(f"{path}: not a readable Parquet table ({error})") from None
