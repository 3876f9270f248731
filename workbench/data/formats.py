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
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import ConfigError, DataFormatError, MissingFileError

JSON_SPACE = re.compile(r"[ \t\n\r]*")


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
    """(line number, record) for each record, also in a JSON array (the line it starts on)."""
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"[":
        yield from _array_records(_decode(raw, path, 1), path)
        return
    for number, line in enumerate(raw.split(b"\n"), start=1):
        text = _decode(line, path, number).strip()
        if text:
            item, end = _decode_value(text, 0, path, number)
            if text[end:].strip():
                raise DataFormatError(
                    f"invalid JSON at column {end + 1}: extra data after the record",
                    path=str(path),
                    line=number,
                )
            yield number, _as_record(item, path, number)


def _array_records(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a JSON array, each with the line its ``{`` is on."""
    position, line = _skip_space(text, text.index("[") + 1), 1
    counted = 0
    closed = text.startswith("]", position)
    while not closed:
        line += text.count("\n", counted, position)
        counted = position
        item, position = _decode_value(text, position, path, line)
        yield line, _as_record(item, path, line)
        position = _skip_space(text, position)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif text.startswith("]", position):
            closed = True
        else:
            at = text.count("\n", 0, position) + 1
            raise DataFormatError(
                "invalid JSON: expected ',' or ']' after a record", path=str(path), line=at
            )
    rest = _skip_space(text, text.index("]", position) + 1)
    if rest < len(text):
        at = text.count("\n", 0, rest) + 1
        raise DataFormatError("invalid JSON: extra data after the array", path=str(path), line=at)


def _skip_space(text: str, position: int) -> int:
    match = JSON_SPACE.match(text, position)
    return match.end() if match else position


class _RepeatedKey(Exception):
    pass


def _unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in items:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _decode_value(text: str, position: int, path: Path, line: int) -> tuple[Any, int]:
    """One JSON value from ``text`` at ``position``; a repeated key, nesting too deep for the
    parser, or bad syntax raises :class:`DataFormatError` at its true line."""
    try:
        return DECODER.raw_decode(text, position)
    except json.JSONDecodeError as error:
        at = line + text.count("\n", position, error.pos)
        column = f" at column {error.colno}" if at == line else ""
        raise DataFormatError(
            f"invalid JSON{column}: {error.msg}", path=str(path), line=at
        ) from None
    except _RepeatedKey as error:
        raise DataFormatError(
            "appears twice in one record (JSON keeps only the last)",
            path=str(path),
            line=line,
            field=str(error),
        ) from None
    except RecursionError:
        raise DataFormatError(
            "invalid JSON: nested too deeply to be a contrast pair", path=str(path), line=line
        ) from None


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
    pair_id = _pair_id(record, path, line, where)
    try:
        return ContrastPair(
            id=pair_id,
            prompt=prompt,
            positive=positive,
            negative=negative,
            concept=str(concept) if concept else default_concept,
            split=record.get("split"),
            source=f"{path}:{line}",
        )
    except DataFormatError as error:  # named by the file's own field, not the internal one
        own = {"prompt": spec.prompt, "positive": spec.positive, "negative": spec.negative}
        field = own.get(error.field or "", error.field)
        raise DataFormatError(error.reason, field=field, **where) from None
    except (TypeError, ValueError) as error:
        raise DataFormatError(str(error), **where) from None


def _pair_id(record: dict[str, Any], path: Path, line: int, where: dict[str, Any]) -> str:
    """The record's id (a string, or an integer written as one), or ``<stem>-<line>``."""
    if "id" not in record:
        return f"{path.stem}-{line:04d}"
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = "null" if value is None else type(value).__name__
        raise DataFormatError(f"must be a string or an integer, got {kind}", field="id", **where)
    return str(value)


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
