"""The grid on a real local Ray runtime: 8 cells on a tiny model, one task's worker killed
mid-run, and a rerun that completes it with no row lost or duplicated."""

import os
import signal
import threading
import time

import pandas as pd
import pytest

from workbench.pipelines.grid import RUNNING, SHARDS, GridSettings, grid_cells, run_grid

pytestmark = pytest.mark.services

SETTINGS = GridSettings(
    model="tiny-llama",
    concepts=("sentiment",),
    layers=(1, 2),
    methods=("diff_of_means", "random", "sft"),
    forms=("vector", "lora"),
    seeds=(0,),
    multipliers=(-1.0, 0.0, 1.0),
    train_pairs=16,
    test_pairs=6,
    epochs=1,
    n_bootstrap=20,
)


def _kill_first_running(folder, killed: list, deadline: float = 240.0) -> None:
    """Kill (SIGKILL) the worker of the first cell seen running, as an OOM kill would."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        for marker in sorted(folder.glob("*.json")):
            try:
                pid = int(marker.read_text().split('"pid": ')[1].split(",")[0])
            except (OSError, IndexError, ValueError):
                continue  # being written
            os.kill(pid, signal.SIGKILL)
            killed.append(marker.stem)
            return
        time.sleep(0.01)


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_killed_cell_is_completed_by_the_rerun_exactly_once(ray_runtime, tmp_path):
    cells = grid_cells(SETTINGS)
    assert len(cells) == 8
    killed: list[str] = []
    killer = threading.Thread(target=_kill_first_running, args=(tmp_path / RUNNING, killed))
    (tmp_path / RUNNING).mkdir(parents=True)
    killer.start()
    first = run_grid(SETTINGS, tmp_path, retries=0, progress=False)
    killer.join()
    assert len(killed) == 1 and len(first.failed) == 1, (killed, first.failed)
    (victim,) = first.failed
    assert victim.name(SETTINGS) == killed[0]
    assert not (tmp_path / SHARDS / f"{killed[0]}.parquet").exists()  # nothing half-written
    assert not (tmp_path / "grid.parquet").exists()  # not merged while a cell is missing
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / SHARDS).glob("*.parquet")}
    assert len(done) == 7

    second = run_grid(SETTINGS, tmp_path, progress=False)
    assert second.failed == {}
    table = second.table
    per_cell = int(SETTINGS.test_pairs or 0) * len(SETTINGS.multipliers)
    assert len(table) == len(cells) * per_cell
    assert not table.duplicated(["cell", "pair_id", "m"]).any()
    assert table.groupby("cell").size().eq(per_cell).all()
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / SHARDS).glob("*.parquet")}
    assert {k: again[k] for k in done} == done  # finished cells were not computed again
    assert (tmp_path / "grid.parquet").is_file() and (tmp_path / "report.html").is_file()
    summary_methods = set(pd.read_csv(tmp_path / "summary.csv")["method"])
    assert {"diff_of_means", "random", "sft", "unsteered"} <= summary_methods
