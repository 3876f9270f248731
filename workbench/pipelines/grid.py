"""Grids of concepts × layers × methods × forms × seeds as Ray tasks, one shard per cell.

Each cell is one small comparison (:func:`~workbench.training.comparison.run_comparison` with a
single concept, layer, method, form and seed) run as a Ray task; the task asks for a GPU when
the cluster has them and a CPU otherwise, loads the model once per worker process, and writes
its tidy sweep rows to ``shards/<cell>.parquet`` atomically, beside a record of the cell and the
shard's sha256. So a rerun skips every finished cell (checking its shard), and a cell killed at
any moment leaves no shard: the rerun computes it again, and every row is in the merged table
exactly once. The merged table (``grid.parquet``), the comparison summary (``summary.csv``) and
a report (``report.html``) are written when every cell is done.

>>> result = run_grid(GridSettings(model="tiny-llama", concepts=("sentiment",), layers=(1, 2)),
...                   "runs/grid")          # ray.init() on this machine
>>> result.table.groupby(["layer", "method"]).size()
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.artefacts import safe_stem
from workbench.atomic import file_sha256, write_table, write_text
from workbench.errors import ArtefactError, ConfigError
from workbench.progress import bar
from workbench.provenance import stable_hash
from workbench.steering.forms import FORMS
from workbench.training.comparison import METHODS, VECTOR_ONLY

SHARDS = "shards"
RUNNING = "running"
SHOWN = (
    "concept",
    "form",
    "method",
    "accuracy",
    "balanced_accuracy",
    "balanced_accuracy_low",
    "balanced_accuracy_high",
    "pref_odds",
    "pref_odds_low",
    "pref_odds_high",
    "util_odds",
    "answer_mass",
    "warning",
)
DIRECTION_ONLY = (*VECTOR_ONLY, "angular", "ace", "ids")  # a direction, not a trained form


@dataclass(frozen=True)
class GridSettings:
    """What the grid sweeps; every cell shares everything but its coordinates."""

    model: str = "gemma-3-270m"
    concepts: tuple[str, ...] = ("sentiment",)
    layers: tuple[int, ...] = (6,)
    methods: tuple[str, ...] = ("diff_of_means", "random", "split")
    forms: tuple[str, ...] = ("vector",)
    seeds: tuple[int, ...] = (0,)
    multipliers: tuple[float, ...] = (-1.0, 0.0, 0.5, 1.0, 2.0)
    train_pairs: int | None = 48
    test_pairs: int | None = 24
    epochs: int = 2
    batch_size: int = 8
    dtype: str | None = None
    n_bootstrap: int = 200

    def __post_init__(self) -> None:
        for name, allowed in (("methods", METHODS), ("forms", tuple(FORMS))):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ConfigError(f"GridSettings.{name}: unknown {unknown}; known: {allowed}")
        for name in ("concepts", "layers", "methods", "forms", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"GridSettings.{name} is empty")
        if 0.0 not in self.multipliers or 1.0 not in self.multipliers:
            raise ConfigError(f"the multipliers {self.multipliers} must hold 0 and 1")

    def shared(self) -> dict[str, Any]:
        """Everything that decides a cell's rows besides its coordinates."""
        return {k: v for k, v in asdict(self).items() if k not in Cell.COORDINATES}


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    COORDINATES = ("concepts", "layers", "methods", "forms", "seeds")

    concept: str
    layer: int
    method: str
    form: str
    seed: int

    def key(self, settings: GridSettings) -> str:
        return stable_hash({"cell": asdict(self), "shared": settings.shared()})[:16]

    def name(self, settings: GridSettings) -> str:
        label = f"{safe_stem(self.concept)}-L{self.layer}-{self.method}-{self.form}-s{self.seed}"
        return f"{label}-{self.key(settings)}"


def grid_cells(settings: GridSettings) -> list[Cell]:
    """Every cell; a method that is a direction (DiffMean, random, the anchors) has one cell
    per concept × layer × seed, not one per form."""
    cells: list[Cell] = []
    for concept in settings.concepts:
        for layer in settings.layers:
            for seed in settings.seeds:
                for method in settings.methods:
                    forms = ("vector",) if method in DIRECTION_ONLY else settings.forms
                    cells.extend(Cell(concept, layer, method, form, seed) for form in forms)
    return cells


@dataclass
class GridResult:
    """The merged table, the cells that failed (cell -> error) and where it was written."""

    table: pd.DataFrame
    failed: dict[Cell, str] = field(default_factory=dict)
    out: Path | None = None


def run_grid(
    settings: GridSettings,
    out: str | Path,
    *,
    address: str | None = None,
    retries: int = 3,
    progress: bool = True,
) -> GridResult:
    """Run every unfinished cell as a Ray task (``ray.init(address)``: local when None) and
    merge the shards. Cells that fail (after ``retries`` retries of a killed worker) are
    reported in :attr:`GridResult.failed`; run again to complete them."""
    import ray

    out = Path(out)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    write_text(out / "grid.json", json.dumps(asdict(settings), indent=2))
    cells = grid_cells(settings)
    todo = [cell for cell in cells if not _finished(out, cell, settings)]
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(_cell_task).options(
            num_gpus=gpus, num_cpus=0 if gpus else 1, max_retries=retries
        )
        pending = {task.remote(asdict(c), asdict(settings), str(out)): c for c in todo}
        failed = dict(_collect(ray, pending, progress))
    else:
        failed = {}
    finished = [cell for cell in cells if cell not in failed]
    table = merge_shards(out, finished, settings)
    if not failed:
        _write_outputs(out, table, settings)
    return GridResult(table, failed, out)


def _collect(ray, pending: dict, progress: bool) -> Iterator[tuple[Cell, str]]:
    cells = bar(total=len(pending), desc="grid", enabled=progress)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except Exception as error:  # a task that raised, or whose worker was killed
            yield cell, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        cells.update(1)
    cells.close()


def _cell_task(cell: dict, settings: dict, out: str) -> str:
    """The Ray task: one cell, its shard written atomically; returns the shard's path."""
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()
    }
    return str(run_cell(Cell(**cell), GridSettings(**fields), Path(out)))


def run_cell(cell: Cell, settings: GridSettings, out: Path) -> Path:
    """Compute one cell in this process and write its shard (and the shard's record)."""
    from workbench.training.comparison import ComparisonConfig, run_comparison
    from workbench.training.trainer import TrainingConfig

    name = cell.name(settings)
    running = out / RUNNING / f"{name}.json"
    write_text(running, json.dumps({"pid": os.getpid(), "cell": asdict(cell)}))
    config = ComparisonConfig(
        concepts=(cell.concept,),
        forms=(cell.form,),
        methods=(cell.method,),
        seeds=(cell.seed,),
        layer=cell.layer,
        multipliers=tuple(settings.multipliers),
        select_m=False,
        training=TrainingConfig(epochs=settings.epochs, batch_size=16),
        n_bootstrap=settings.n_bootstrap,
        batch_size=settings.batch_size,
        max_train_pairs=settings.train_pairs,
        max_test_pairs=settings.test_pairs,
    )
    model = _worker_model(settings.model, settings.dtype)
    sweeps = run_comparison(model, config, out / "cells", progress=False).sweeps
    rows = sweeps.assign(cell=name)
    shard = write_table(rows, out / SHARDS / f"{name}.parquet")
    record = {"cell": asdict(cell), "key": cell.key(settings), "rows": len(rows)}
    record["sha256"] = file_sha256(shard)
    write_text(shard.with_suffix(".json"), json.dumps(record))
    running.unlink(missing_ok=True)
    return shard


_MODELS: dict[tuple[str, str | None], Any] = {}  # one model per worker process


def _worker_model(name: str, dtype: str | None):
    from workbench.models.loading import load_model

    if (name, dtype) not in _MODELS:
        _MODELS[(name, dtype)] = load_model(name, dtype=dtype)
    return _MODELS[(name, dtype)]


def _finished(out: Path, cell: Cell, settings: GridSettings) -> bool:
    """Whether the cell's shard and record are there and agree (a damaged shard is an error)."""
    shard = out / SHARDS / f"{cell.name(settings)}.parquet"
    record_file = shard.with_suffix(".json")
    if not (shard.is_file() and record_file.is_file()):
        return False  # never finished (or killed before its record): computed again
    record = json.loads(record_file.read_text(encoding="utf-8"))
    if record.get("key") != cell.key(settings) or record.get("sha256") != file_sha256(shard):
        raise ArtefactError(f"{shard}: does not match its record {record_file.name}; delete both")
    return True


def merge_shards(out: Path, cells: list[Cell], settings: GridSettings) -> pd.DataFrame:
    """The finished cells' rows, in cell order, each cell's shard checked against its record."""
    tables = []
    for cell in cells:
        if _finished(out, cell, settings):
            tables.append(pd.read_parquet(out / SHARDS / f"{cell.name(settings)}.parquet"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _write_outputs(out: Path, table: pd.DataFrame, settings: GridSettings) -> None:
    from workbench.report.html import Report
    from workbench.training.summary import summarise

    write_table(table, out / "grid.parquet")
    summaries = []
    for layer, rows in table.groupby("layer"):
        summary = summarise(rows.drop(columns="cell"), n_bootstrap=settings.n_bootstrap)
        summaries.append(summary.assign(layer=layer))
    summary = pd.concat(summaries, ignore_index=True)
    write_table(summary, out / "summary.csv")
    report = Report(
        f"Grid: {settings.model}",
        intro=f"{table['cell'].nunique()} cells; held-out pairs at m = 1, value and 95% interval",
    )
    for layer, rows in summary.groupby("layer"):
        shown = rows.dropna(axis="columns", how="all")
        report.add(f"Layer {layer}", tables=[shown[[c for c in SHOWN if c in shown]]])
    report.write(out / "report.html")
