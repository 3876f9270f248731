"""Read and write contrast-pair files: the native JSONL format and the public formats.

Formats, detected from the fields of the first record unless given:

- ``native``: ``prompt``, ``positive``, ``negative``, ``concept``.
- ``persona``: ``question``, ``answer_matching_behavior`` (positive),
  ``answer_not_matching_behavior`` (negative).
- ``powerseeking``: ``question``, ``matching``, ``not_matching``.
- ``axbench``: ``input``, ``winning_output``, ``losing_output``, ``output_concept``.

``persona`` covers Anthropic's persona and advanced-AI-risk evaluations and EasyEdit's
psychopathy set. Files are JSONL (one record a line) or a JSON array. Every format may carry
``id`` and ``split``; pairs without an id get ``<file stem>-<line>``, pairs without a split get
a deterministic one (:meth:`PairDataset.assign_splits`). The native format is strict (an unknown
field is an error, so a misspelling is caught); the public formats allow extra fields, which
those files carry (``statement``, ``label_confidence``, ...).

When a public-format question and answer meet with no whitespace between them (``"Answer:"``
and ``"(A)"``), one space is inserted, since the text scored is ``prompt + answer``.

Any problem raises :class:`DataFormatError` naming file, line and field; a reader never returns
a partial dataset.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import ConfigError, DataFormatError, MissingFileError


@dataclass(frozen=True)
class PairFormat:
    """Where a file format keeps the prompt, the two answers and (optionally) the concept."""

    name: str
    prompt: str
    positive: str
    negative: str
    concept: str | None = None
    strict: bool = False  # unknown fields are errors

    @property
    def required(self) -> tuple[str, ...]:
        fields = (self.prompt, self.positive, self.negative)
        return (*fields, self.concept) if self.concept and self.name == "axbench" else fields

    @property
    def known(self) -> set[str]:
        return {*self.required, "id", "split", *([self.concept] if self.concept else [])}


FORMATS: dict[str, PairFormat] = {
    f.name: f
    for f in (
        PairFormat("native", "prompt", "positive", "negative", concept="concept", strict=True),
        PairFormat(
            "persona", "question", "answer_matching_behavior", "answer_not_matching_behavior"
        ),
        PairFormat("powerseeking", "question", "matching", "not_matching"),
        PairFormat("axbench", "input", "winning_output", "losing_output", concept="output_concept"),
    )
}


def read_pairs(
    path: str | Path,
    *,
    format: str = "auto",
    concept: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> PairDataset:
    """Read a contrast-pair file into a :class:`PairDataset` with every pair in a split.

    Args:
        path: a ``.jsonl`` file (or a JSON array file).
        format: ``"auto"`` or one of :data:`FORMATS`.
        concept: the concept name for records that carry none (default: the name of the
            file's folder for ``pairs.jsonl``, else the file stem).
        test_fraction, split_seed: how pairs without a ``split`` field are split.
    """
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        raise ConfigError(
            f"unknown pair format {format!r}; choose 'auto' or one of {list(FORMATS)}"
        )
    if not path.is_file():
        raise MissingFileError(f"no contrast-pair file at {path}")
    default_concept = concept or (path.parent.name if path.stem == "pairs" else path.stem)
    records = list(_records(path))
    if not records:
        raise DataFormatError("file holds no records", path=str(path))
    spec = (
        FORMATS[format] if format != "auto" else _detect_format(records[0][1], path, records[0][0])
    )
    pairs = [_to_pair(record, spec, path, line, default_concept) for line, record in records]
    return PairDataset(pairs, name=default_concept).assign_splits(test_fraction, split_seed)


def write_pairs_jsonl(pairs: Iterable[ContrastPair], path: str | Path) -> Path:
    """Write pairs in the native JSONL format (one record a line, UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
    return path


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record; a JSON array's records all report line 1+index."""
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"[":
        text = _decode(raw, path, 1)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"invalid JSON: {error.msg}", path=str(path), line=error.lineno
            ) from None
        for index, item in enumerate(items):
            yield index + 1, _as_record(item, path, index + 1)
        return
    for number, line in enumerate(raw.split(b"\n"), start=1):
        text = _decode(line, path, number).strip()
        if not text:
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"invalid JSON at column {error.colno}: {error.msg}", path=str(path), line=number
            ) from None
        yield number, _as_record(item, path, number)


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_line = line + raw[: error.start].count(b"\n")
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataFormatError(
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column})",
            path=str(path),
            line=bad_line,
        ) from None


def _as_record(item: Any, path: Path, line: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DataFormatError(
            f"expected a JSON object, got {type(item).__name__}", path=str(path), line=line
        )
    return item


def _detect_format(record: dict[str, Any], path: Path, line: int) -> PairFormat:
    def score(spec: PairFormat) -> int:
        return sum(key in record for key in spec.required)

    best = max(FORMATS.values(), key=score)
    if score(best) == 0:
        raise DataFormatError(
            f"cannot tell the format from fields {sorted(record)}; expected one of: "
            + "; ".join(f"{f.name} ({', '.join(f.required)})" for f in FORMATS.values()),
            path=str(path),
            line=line,
        )
    return best


def _to_pair(
    record: dict[str, Any],
    spec: PairFormat,
    path: Path,
    line: int,
    default_concept: str,
) -> ContrastPair:
    where: dict[str, Any] = {"path": str(path), "line": line}
    unknown = [key for key in record if key not in spec.known]
    for name in spec.required:
        if name not in record:
            guess = difflib.get_close_matches(name, unknown, n=1, cutoff=0.6)
            hint = f" (found {guess[0]!r}: misspelled?)" if guess else ""
            raise DataFormatError(
                f"missing in a {spec.name}-format record{hint}", field=name, **where
            )
    if spec.strict and unknown:
        guess = difflib.get_close_matches(unknown[0], sorted(spec.known), n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        raise DataFormatError(
            f"unknown field in a {spec.name}-format record{hint}; allowed: {sorted(spec.known)}",
            field=unknown[0],
            **where,
        )
    values = {name: _single_text(record[name], name, where) for name in spec.required}
    prompt = values[spec.prompt]
    positive, negative = values[spec.positive], values[spec.negative]
    if spec.name != "native":
        positive, negative = _join_space(prompt, positive), _join_space(prompt, negative)
    concept = record.get(spec.concept) if spec.concept else None
    pair_id = record.get("id", f"{path.stem}-{line:04d}")
    try:
        return ContrastPair(
            id=str(pair_id),
            prompt=prompt,
            positive=positive,
            negative=negative,
            concept=str(concept) if concept else default_concept,
            split=record.get("split"),
            source=f"{path}:{line}",
        )
    except DataFormatError:
        raise
    except (TypeError, ValueError) as error:
        raise DataFormatError(str(error), **where) from None


def _single_text(value: Any, name: str, where: dict[str, Any]) -> str:
    """A field's text; a one-element list (as some public files store answers) is unwrapped."""
    if isinstance(value, list):
        if len(value) != 1:
            raise DataFormatError(
                f"holds {len(value)} answers; a contrast pair needs exactly one",
                field=name,
                **where,
            )
        value = value[0]
    if not isinstance(value, str):
        raise DataFormatError(f"expected a string, got {type(value).__name__}", field=name, **where)
    return value


def _join_space(prompt: str, answer: str) -> str:
    if prompt and answer and not prompt[-1].isspace() and not answer[0].isspace():
        return " " + answer
    return answer
