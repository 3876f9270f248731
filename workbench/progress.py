"""Progress that reads well anywhere: tqdm bars on a terminal, plain lines in a log, or nothing.

Every long step of every command runs inside :func:`stage` (a name, and ``i/n`` where the step
is one of several); loops inside it iterate a :func:`bar`. The mode is set once per process
(:func:`configure`, the CLI's ``--progress`` / ``--quiet``):

- ``"bars"``: tqdm bars (a terminal);
- ``"lines"``: plain lines on stderr, each stamped with the seconds since :func:`configure`
  (``[workbench   12.3s] sweep diff_of_means vector: 3/6``), no carriage returns, no nested
  bars, a bar's count at most once every :data:`LINE_INTERVAL` seconds; a heartbeat repeats
  the innermost running step whenever nothing was written for :data:`HEARTBEAT` seconds, so
  no stage is silent for more than ten seconds, however long one forward takes;
- ``"quiet"``: nothing;
- ``"auto"`` (the default): ``"bars"`` when stderr is a terminal, else ``"lines"``.

Library calls keep their ``progress: bool`` arguments: ``False`` silences that bar in every mode.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from workbench.errors import ConfigError

MODES = ("auto", "bars", "lines", "quiet")


@runtime_checkable
class Stream(Protocol):
    """Where progress lines go (stderr, a file, a StringIO)."""

    def write(self, text: str, /) -> Any: ...
    def flush(self) -> Any: ...


LINE_INTERVAL = 3.0  # seconds between two count lines of one bar
HEARTBEAT = 5.0  # seconds of silence before the running step is repeated


@dataclass
class _Reporter:
    mode: str = "auto"
    stream: Stream | None = None
    started: float = field(default_factory=time.monotonic)
    last_write: float = field(default_factory=time.monotonic)
    active: list[Any] = field(default_factory=list)  # stages and line bars, outermost first
    lock: threading.RLock = field(default_factory=threading.RLock)
    beating: bool = False

    def out(self) -> Stream:
        return self.stream if self.stream is not None else sys.stderr

    def resolved(self) -> str:
        if self.mode != "auto":
            return self.mode
        isatty = getattr(self.out(), "isatty", None)
        return "bars" if isatty is not None and isatty() else "lines"

    def write(self, text: str) -> None:
        with self.lock:
            if self.resolved() == "bars":
                tqdm.write(text, file=self.out())
            else:
                stamp = time.monotonic() - self.started
                self.out().write(f"[workbench {stamp:7.1f}s] {text}\n")
                self.out().flush()
            self.last_write = time.monotonic()

    def push(self, item: Any) -> None:
        with self.lock:
            self.active.append(item)
            if self.resolved() == "lines" and not self.beating:
                self.beating = True
                threading.Thread(target=self._beat, name="workbench-progress", daemon=True).start()

    def pop(self, item: Any) -> None:
        with self.lock:
            if item in self.active:
                self.active.remove(item)

    def _beat(self) -> None:
        while True:
            time.sleep(0.5)
            with self.lock:
                if self.resolved() != "lines":
                    self.beating = False
                    return
                quiet_for = time.monotonic() - self.last_write
                if self.active and quiet_for >= HEARTBEAT:
                    self.write(f"{self.active[-1].status()} (still running)")


_REPORTER = _Reporter()


def configure(mode: str = "auto", stream: Stream | None = None) -> None:
    """Set the progress mode for this process (``stream``: where lines go, default stderr)."""
    if mode not in MODES:
        raise ConfigError(f"unknown progress mode {mode!r}; choose one of {', '.join(MODES)}")
    with _REPORTER.lock:
        _REPORTER.mode, _REPORTER.stream = mode, stream
        _REPORTER.started = _REPORTER.last_write = time.monotonic()
        _REPORTER.active.clear()
    if mode_now() != "bars":
        _silence_library_bars()


def mode_now() -> str:
    """The mode in force: ``"bars"``, ``"lines"`` or ``"quiet"``."""
    return _REPORTER.resolved()


def say(message: str) -> None:
    """One line (not in quiet mode): what a command found, chose or reused."""
    if mode_now() != "quiet":
        _REPORTER.write(message)


class _Stage:
    def __init__(self, name: str) -> None:
        self.name, self.started = name, time.monotonic()

    def status(self) -> str:
        return f"{self.name}: {time.monotonic() - self.started:.0f} s"


@contextmanager
def stage(name: str, index: int | None = None, total: int | None = None) -> Iterator[None]:
    """Announce a step (``"3/8 training and sweeps"``), time it, and keep the heartbeat on it."""
    label = f"{index}/{total} {name}" if index is not None and total is not None else name
    if mode_now() == "quiet":
        yield
        return
    item = _Stage(label)
    say(f"{label} ...")
    _REPORTER.push(item)
    try:
        yield
    finally:
        _REPORTER.pop(item)
    say(f"{label}: done in {time.monotonic() - item.started:.1f} s")


class _LineBar:
    """The ``"lines"`` mode's bar: tqdm's interface, one plain line per update interval."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str) -> None:
        self.iterable, self.desc, self.n, self.postfix = iterable, desc, 0, ""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.started, self.last = total, time.monotonic(), 0.0
        self.closed = False
        _REPORTER.push(self)

    def status(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = f" ({self.postfix})" if self.postfix else ""
        return f"{self.desc}: {count}{extra}, {time.monotonic() - self.started:.0f} s"

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> _LineBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL and (self.total is None or self.n < self.total):
            self.last = now
            _REPORTER.write(self.status())

    def set_postfix(self, values: dict | None = None, **kwargs: Any) -> None:
        merged = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in merged.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _REPORTER.pop(self)
            if time.monotonic() - self.started >= 1.0:
                _REPORTER.write(f"{self.status()}, done")


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    leave: bool = False,
) -> Any:
    """A progress bar over ``iterable`` (or ``total`` steps, advanced with ``update``) in the
    process's mode; ``enabled=False`` (a caller's ``progress=False``) gives a silent one."""
    mode = mode_now()
    if mode == "lines" and enabled:
        return _LineBar(iterable, total, desc)
    disable = mode != "bars" or not enabled
    out = _REPORTER.out()
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave, file=out)


def _silence_library_bars() -> None:
    """Hugging Face's own bars (weights loading, downloads) write carriage returns: off."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
