"""The concepts shipped in ``data/`` and how to load one by name or path."""

from __future__ import annotations

from pathlib import Path

from .pair_files import read_pairs
from .pairs import PairDataset

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
NEUTRAL_SENTENCES = DATA_DIR / "neutral" / "sentences.txt"
DEFAULT_CONCEPT = "extraversion"  # the study's default concept


def neutral_sentences(path: str | Path = NEUTRAL_SENTENCES) -> list[str]:
    """The neutral sentence set (valid, unsteered text), one per line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ValueError(f"{path} holds no sentences")
    return sentences


def shipped_concepts() -> list[str]:
    """Names of the concepts in ``data/`` (folders holding a ``pairs.jsonl``)."""
    if not DATA_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in DATA_DIR.glob("*/pairs.jsonl"))


def load_concept(name_or_path: str | Path, **read_kwargs) -> PairDataset:
    """Load a shipped concept by name (``"sentiment"``) or any pair file by path."""
    path = Path(name_or_path)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return read_pairs(path, **read_kwargs)
    shipped = DATA_DIR / str(name_or_path) / "pairs.jsonl"
    if not shipped.is_file():
        raise ValueError(
            f"unknown concept {str(name_or_path)!r}: not a file, and not one of the shipped "
            f"concepts {shipped_concepts()}"
        )
    return read_pairs(shipped, **read_kwargs)
