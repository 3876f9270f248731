"""The package as a user installs it: a wheel in a fresh environment, run outside the repository.

The wheel must carry the shipped concepts and neutral sentences (package data, read through
``importlib.resources``), and ``python -m workbench`` must start. The fresh environment gets the
installed dependencies through a path entry, so nothing is downloaded; the workbench itself comes
only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a clean copy: setuptools leaves build/ behind, and a stale one would be packed
    source = tmp / "source"
    for name in ("pyproject.toml", "README.md", "NOTICE"):
        source.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "workbench", source / "workbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp), str(source)], check=True, cwd=tmp)
    wheel = next(tmp.glob("steering_workbench-*.whl"))
    fresh = tmp / "env"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, cwd=tmp)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the dependencies (torch, transformers, ...) from this environment, after the wheel's own
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def run_outside(python: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), *args],
        cwd=python.parent.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_wheel_carries_the_data_and_loads_it_outside_the_repository(installed):
    code = (
        "import workbench, pathlib\n"
        "print(pathlib.Path(workbench.__file__).resolve())\n"
        "pairs = workbench.load_concept('sentiment')\n"
        "print(len(pairs.train) + len(pairs.test), len(workbench.neutral_sentences()))\n"
        "print(' '.join(workbench.shipped_concepts()))\n"
    )
    where, counts, concepts = run_outside(installed, "-c", code).splitlines()
    assert ROOT not in Path(where).parents and str(installed.parent.parent) in where
    assert counts.split() == ["96", "300"]
    assert {"sentiment", "extraversion", "frugality"} <= set(concepts.split())


def test_python_dash_m_workbench_starts(installed):
    help_text = run_outside(installed, "-m", "workbench", "--help")
    assert "study" in help_text and "compare" in help_text
    assert "gemma-3-270m" in run_outside(installed, "-m", "workbench", "models")


def test_the_gpu_benchmark_runs_at_a_tiny_size_on_cpu():
    """The GPU benchmark is run by hand on a GPU; this keeps it from rotting meanwhile."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
    arguments = ["--preset", "tiny", "--device", "cpu", "--batch", "4", "--prompt-tokens", "12"]
    done = subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tokens/s" in done.stdout and "overhead" in done.stdout and "steps/s" in done.stdout


def test_the_sweep_benchmark_runs_at_a_tiny_size():
    """The sweep benchmark's figures are in the README; this keeps the script working."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep.py"
    arguments = ["--model", "tiny-llama", "--concepts", "extraversion", "--pairs", "2"]
    done = subprocess.run(
        [sys.executable, str(script), *arguments, "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 runs each" in done.stdout and "speed-up (medians)" in done.stdout
    gap = float(done.stdout.split("UtilOdds: ")[1].split()[0])
    assert gap < 1e-3  # the engine and the naive loop agree
    achieved = done.stdout.split("GFLOP of matmuls, ")[1]
    assert float(achieved.split()[0]) > 0 and "of the measured matmul rate" in achieved
