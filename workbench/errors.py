"""Exceptions the workbench raises for bad input, each naming what is wrong and where."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A contrast-pair file (or pair) is malformed: names the file, line and field.

    >>> str(DataFormatError("empty answer", path="data/x.jsonl", line=3, field="positive"))
    "data/x.jsonl, line 3, field 'positive': empty answer"
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = [p for p in (path, f"line {line}" if line is not None else None) if p]
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ModelNotAvailableError(RuntimeError):
    """A model name that cannot be loaded here (e.g. a hub model on a machine without network)."""


class HookNameError(KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
