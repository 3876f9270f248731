"""Exceptions the workbench raises for bad input, each naming what is wrong and where.

Every one derives from :class:`WorkbenchError` (and from the built-in type it refines, so
``except ValueError`` keeps working); the command line catches only these and lets anything else,
a bug, show its traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of the errors the workbench raises for input it refuses."""


class ConfigError(WorkbenchError, ValueError):
    """A setting, argument or name out of range or unknown; says which and what is allowed."""


class ArtefactError(WorkbenchError, ValueError):
    """A saved artefact or cache that is broken or made for something else; names the file."""


class MissingFileError(WorkbenchError, FileNotFoundError):
    """A file the workbench was pointed at (pairs, artefact, weights package) does not exist."""


class TrainingError(WorkbenchError, RuntimeError):
    """Training that cannot give a result (it diverged: no epoch scored a finite value)."""


class DataFormatError(WorkbenchError, ValueError):
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


class ModelNotAvailableError(WorkbenchError, RuntimeError):
    """A model name that cannot be loaded here (e.g. a hub model on a machine without network)."""


class HookNameError(WorkbenchError, KeyError):
    """A hook name that the model (or a set of captured activations) does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
