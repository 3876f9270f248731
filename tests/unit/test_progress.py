"""Progress output: plain timestamped lines when not on a terminal (no carriage return, no
stage silent for more than ten seconds), nothing with --quiet."""

import io
import itertools
import re
import subprocess
import sys
import threading
import time

import pytest

from workbench import progress
from workbench.errors import ConfigError

STAMP = re.compile(r"^\[workbench +(\d+\.\d)s\] ")


@pytest.fixture
def lines():
    stream = io.StringIO()
    progress.configure("lines", stream)
    yield stream
    progress.configure("auto")


def test_lines_mode_writes_plain_stamped_lines(lines, monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    with progress.stage("sweeps", 2, 5):
        for _ in progress.bar(range(3), desc="sweep split"):
            pass
    text = lines.getvalue()
    assert "\r" not in text
    assert all(STAMP.match(line) for line in text.splitlines())
    assert "2/5 sweeps ..." in text and "2/5 sweeps: done in" in text
    assert "sweep split: 1/3" in text


def test_heartbeat_repeats_the_running_step(lines, monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT", 0.3)
    with progress.stage("one long forward"):
        time.sleep(1.5)
    beats = [line for line in lines.getvalue().splitlines() if "(still running)" in line]
    assert beats and "one long forward" in beats[0]


def test_disabled_bars_and_quiet_mode_write_nothing():
    stream = io.StringIO()
    progress.configure("quiet", stream)
    try:
        with progress.stage("anything"):
            list(progress.bar(range(3), desc="x"))
            progress.say("a finding")
    finally:
        progress.configure("auto")
    assert stream.getvalue() == ""
    with pytest.raises(ConfigError, match="progress mode"):
        progress.configure("loud")


STUDY = [
    "study", "--model", "tiny-llama", "--concept", "sentiment", "--forms", "vector",
    "--train-pairs", "8", "--test-pairs", "4", "--no-umap", "--bootstrap", "5", "--epochs", "1",
]  # fmt: skip


def _timed_lines(command: list[str]) -> tuple[list[tuple[float, str]], str, int]:
    """Run ``command`` with stderr piped; each stderr line with the time it arrived."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started, arrived = time.monotonic(), []
    stdout: list[str] = []  # bytes decoded as they are, so a carriage return stays visible
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read().decode()))
    reader.start()
    for line in process.stderr:
        arrived.append((time.monotonic() - started, line.decode()))
    process.wait()
    reader.join()
    return arrived, stdout[0], process.returncode


def test_a_piped_study_writes_no_carriage_return_and_is_never_silent(tmp_path):
    arrived, stdout, code = _timed_lines(
        [sys.executable, "-m", "workbench", *STUDY, "--out", str(tmp_path)]
    )
    text = "".join(line for _, line in arrived)
    assert code == 0, text[-2000:]
    assert "\r" not in text and "\r" not in stdout
    times = [0.0] + [t for t, _ in arrived]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 10.0
    stamps = [float(m.group(1)) for _, line in arrived if (m := STAMP.match(line))]
    assert stamps and max(b - a for a, b in itertools.pairwise([0.0, *stamps])) <= 10.0
    for name in ("1/8 layer choice", "3/8 training and sweeps", "8/8 report"):
        assert f"{name} ..." in text
    # a second study on the same model and concept reuses the cached analyses, and says so
    again, _, code = _timed_lines(
        [sys.executable, "-m", "workbench", *STUDY, "--out", str(tmp_path), "--seed", "0"]
    )
    said = "".join(line for _, line in again)
    assert code == 0
    assert "layer sweep: reused from the cache" in said
    assert "valid activations: reused from the cache" in said
    baseline = ["baseline", "--model", "tiny-llama", "--concepts", "sentiment", "--quiet"]
    quiet, _, code = _timed_lines([sys.executable, "-m", "workbench", *baseline])
    assert code == 0
    assert not [line for _, line in quiet if STAMP.match(line)]
