"""Atomic file writes: a result file is either the old one or the whole new one, never half.

Everything the workbench saves (artefacts, sweep parts and tables, CSVs, reports) is written to a
temporary sibling and moved into place with :func:`os.replace`, which is atomic on one file
system, so a run killed mid-write leaves nothing a later run could mistake for a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

CHUNK = 1 << 20


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` atomically as Parquet or CSV (chosen by the suffix of ``path``)."""
    path = Path(path)
    with replacing(path) as temporary:
        if path.suffix == ".parquet":
            table.to_parquet(temporary)
        elif path.suffix == ".csv":
            table.to_csv(temporary, index=False)
        else:
            raise ValueError(f"{path}: tables are written as .parquet or .csv")
    return path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
