"""The concepts shipped with the package and how to load one by name or path.

The shipped data is package data (``workbench/data/shipped``, also reachable as the repository's
``data/`` folder), read through :mod:`importlib.resources`, so a wheel install has it too.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from workbench.data.formats import read_pairs
from workbench.data.pairs import PairDataset
from workbench.errors import ConfigError

# the study's default concept: the free-text concept on which the measured steering is strongest
# (persona concepts, on which the embedded models give one answer to every item, are the limit)
DEFAULT_CONCEPT = "sentiment"


def shipped_data() -> Traversable:
    """The folder of shipped data inside the installed package."""
    return resources.files("workbench.data") / "shipped"


def neutral_sentences(path: str | Path | None = None) -> list[str]:
    """The neutral sentences (valid, unsteered text), one per line; the shipped set by default."""
    source = shipped_data() / "neutral" / "sentences.txt" if path is None else Path(path)
    lines = source.read_text(encoding="utf-8").splitlines()
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ConfigError(f"{source} holds no sentences")
    return sentences


def shipped_concepts() -> list[str]:
    """Names of the shipped concepts (folders holding a ``pairs.jsonl``)."""
    root = shipped_data()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "pairs.jsonl").is_file())


def load_concept(name_or_path: str | Path, **read_kwargs) -> PairDataset:
    """Load a shipped concept by name (``"sentiment"``) or any pair file by path."""
    path = Path(name_or_path)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return read_pairs(path, **read_kwargs)
    name = str(name_or_path)
    shipped = shipped_data() / name / "pairs.jsonl"
    if name not in shipped_concepts() or not shipped.is_file():  # names only: no "a/../b"
        raise ConfigError(
            f"unknown concept {str(name_or_path)!r}: not a file, and not one of the shipped "
            f"concepts {shipped_concepts()}"
        )
    with resources.as_file(shipped) as local:
        return read_pairs(local, **read_kwargs)
