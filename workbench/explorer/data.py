"""What a study or comparison folder measured, indexed for the explorer: sweep rows by
selection, the saved interventions, and the scores the explorer shows beside their baselines.

A selection is (concept, method, form, layer, m). Its rows are the held-out pairs' rows (every
seed) of the study's ``tables/sweeps.csv`` or the comparison's ``sweeps.parquet`` (every method
at the chosen layer) or, at other layers, the study's ``tables/layer_sweeps.csv`` (DiffMean on
fewer pairs). Live views use the saved intervention of the lowest seed. Scores are computed
from those rows with the measures the report uses: accuracy, balanced accuracy, the best
constant-answer accuracy, mean answer mass, and the same at m = 0 (unsteered) and for the
random direction at equal push.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.artefacts import load_artefact, meta_field, safe_stem
from workbench.errors import ArtefactError, MissingFileError
from workbench.measure.answer_bias import constant_baselines, preference_scores

KEYS = ("concept", "method", "form", "layer")
NEEDED = (*KEYS, "pair_id", "split", "m", "pref_odds", "util_odds", "answer_mass", "A_p", "A_n")
# in order of preference for a (concept, method, form, layer); the first must exist
TABLES = ("tables/sweeps.csv", "sweeps.parquet", "tables/layer_sweeps.csv")
MADE = ("study.json", "comparison.json")


@dataclass(frozen=True)
class Selection:
    """One point of the explorer: which intervention, where, and how hard."""

    concept: str
    method: str
    form: str
    layer: int
    m: float


@dataclass
class StudyData:
    """A study folder's tables and saved interventions (read and checked once)."""

    folder: Path
    made: dict[str, Any]
    rows: pd.DataFrame
    interventions: dict[tuple[str, str, str, int], Path] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> StudyData:
        """Read ``study.json``, the sweep tables (held-out rows) and the artefacts' metadata;
        errors name the missing file or column."""
        folder = Path(folder)
        made_file = next((folder / n for n in MADE if (folder / n).is_file()), None)
        if made_file is None:
            raise MissingFileError(f"{folder}: no study.json or comparison.json")
        try:
            made = json.loads(made_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ArtefactError(
                f"{made_file}: invalid JSON ({error.msg}, line {error.lineno})"
            ) from None
        rows = _rows(folder)
        concepts = sorted(rows["concept"].unique())
        return cls(folder, made, rows, _interventions(folder, concepts))

    # what there is to choose from
    def concepts(self) -> list[str]:
        return sorted(self.rows["concept"].unique())

    def methods(self, concept: str) -> list[str]:
        return sorted(self.rows.loc[self.rows["concept"] == concept, "method"].unique())

    def forms(self, concept: str, method: str) -> list[str]:
        return sorted(self._of(concept, method)["form"].unique())

    def layers(self, concept: str, method: str, form: str) -> list[int]:
        rows = self._of(concept, method)
        return sorted(int(x) for x in rows.loc[rows["form"] == form, "layer"].unique())

    def multipliers(self) -> list[float]:
        return sorted(float(m) for m in self.rows["m"].unique())

    def at(self, selection: Selection) -> pd.DataFrame:
        """The held-out rows of the selection (empty if it was not measured)."""
        rows = self.rows
        keep = (
            (rows["concept"] == selection.concept)
            & (rows["method"] == selection.method)
            & (rows["form"] == selection.form)
            & (rows["layer"] == selection.layer)
        )
        return rows[keep & np.isclose(rows["m"], selection.m)]

    def curve(self, selection: Selection) -> pd.DataFrame:
        """Mean PrefOdds and UtilOdds over pairs at each m of the selection's sweep."""
        rows = self.rows
        keep = (rows["concept"] == selection.concept) & (rows["method"] == selection.method)
        keep &= (rows["form"] == selection.form) & (rows["layer"] == selection.layer)
        return (
            rows[keep]
            .groupby("m")[["pref_odds", "util_odds"]]
            .mean()
            .reset_index()
            .sort_values("m")
        )

    def scores(self, selection: Selection) -> pd.DataFrame:
        """The selection's scores beside its baselines, one row each (``n_pairs`` 0 where a
        baseline was not measured)."""
        selected = self.at(selection)
        random_m = self._equal_push(selection, selected)
        random = _replace(selection, method="random", form="vector", m=random_m)
        rows = {
            "selected": selected,
            "unsteered (m = 0)": self.at(_replace(selection, m=0.0)),
            f"random direction, equal push (m = {random_m:g})": self.at(random),
        }
        table = pd.DataFrame([_score(label, r) for label, r in rows.items()])
        return table.set_index("rows")

    def _equal_push(self, selection: Selection, selected: pd.DataFrame) -> float:
        """The m of the same sign at which the random vector's mean push is nearest the
        selection's (the selection's m where push was not recorded)."""
        rows = self.rows
        keep = (rows["concept"] == selection.concept) & (rows["method"] == "random")
        keep &= (rows["form"] == "vector") & (rows["layer"] == selection.layer)
        if "push" not in rows or selected.empty or not keep.any():
            return selection.m
        target = float(selected["push"].mean())
        pushes = rows[keep].groupby("m")["push"].mean()
        pushes = pushes[np.sign(pushes.index.to_numpy()) == np.sign(selection.m)]
        if not np.isfinite(target) or pushes.isna().all():
            return selection.m
        return float((pushes - target).abs().idxmin())

    def heatmap(self, concept: str, method: str, form: str) -> pd.DataFrame:
        """Balanced accuracy (accuracy where answers never repeat) by layer (rows) × m."""
        rows = self._of(concept, method)
        rows = rows[rows["form"] == form]
        values = {
            key: _score("", group)["balanced_accuracy"]
            for key, group in rows.groupby(["layer", "m"])
        }
        if not values:
            return pd.DataFrame()
        series = pd.Series(values)
        series.index = series.index.set_names(["layer", "m"])
        return series.unstack("m").sort_index()

    def intervention_path(self, selection: Selection) -> Path | None:
        key = (selection.concept, selection.method, selection.form, selection.layer)
        return self.interventions.get(key)

    def _of(self, concept: str, method: str) -> pd.DataFrame:
        rows = self.rows
        return rows[(rows["concept"] == concept) & (rows["method"] == method)]


def _replace(selection: Selection, **changes: Any) -> Selection:
    return Selection(**{**selection.__dict__, **changes})


def _score(label: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, balanced accuracy, the best constant answer and the mean answer mass."""
    if rows.empty:
        nan = float("nan")
        return {
            "rows": label,
            "n_pairs": 0,
            "accuracy": nan,
            "balanced_accuracy": nan,
            "best_constant_answer": nan,
            "answer_mass": nan,
            "mean_pref_odds": nan,
            "mean_util_odds": nan,
        }
    positive, negative = rows["A_p"].astype(str).tolist(), rows["A_n"].astype(str).tolist()
    repeat = len({a.strip() for a in positive}) < len(positive)
    scores = preference_scores(rows["pref_odds"].to_numpy(float), positive, repeat)
    constants = constant_baselines(positive, negative)
    return {
        "rows": label,
        "n_pairs": int(rows["pair_id"].nunique()),
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"] if repeat else scores["accuracy"],
        "best_constant_answer": max(constants.values()) if repeat else float("nan"),
        "answer_mass": float(rows["answer_mass"].mean()),
        "mean_pref_odds": scores["mean_pref_odds"],
        "mean_util_odds": float(rows["util_odds"].mean()),
    }


def _rows(folder: Path) -> pd.DataFrame:
    """Held-out rows of every sweep table; a (concept, method, form, layer) comes from the first
    table that holds it, so pairs are never mixed between tables."""
    tables = []
    seen: set[tuple] = set()
    paths = [folder / name for name in TABLES if (folder / name).is_file()]
    if not paths or paths[0].name == "layer_sweeps.csv":
        raise MissingFileError(f"{folder}: no tables/sweeps.csv or sweeps.parquet")
    for path in paths:
        table = _read(path)
        missing = [c for c in NEEDED if c not in table.columns]
        if missing:
            raise ArtefactError(f"{path}: missing columns {missing}")
        table = table[table["split"] == "test"]
        keys = list(table[list(KEYS)].itertuples(index=False, name=None))
        fresh = table[[k not in seen for k in keys]]
        seen |= set(keys)
        tables.append(fresh.assign(table=path.name))
    rows = pd.concat(tables, ignore_index=True)
    rows["layer"] = rows["layer"].astype(int)
    rows["m"] = rows["m"].astype(float)
    for column in ("concept", "method", "form", "A_p", "A_n"):
        rows[column] = rows[column].astype(str)
    return rows


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])


def _interventions(folder: Path, concepts: list[str]) -> dict[tuple[str, str, str, int], Path]:
    """Saved interventions by (concept, method, form, layer), from their checked metadata (the
    concept is the one whose name starts the file's; the lowest seed first)."""
    found: dict[tuple[str, str, str, int], Path] = {}
    stems = sorted(((safe_stem(c) + "-", c) for c in concepts), key=lambda s: -len(s[0]))
    for json_file in sorted(folder.glob("**/artefacts/*.json")):
        base = json_file.with_suffix("")
        concept = next((c for stem, c in stems if base.name.startswith(stem)), None)
        if concept is None:
            continue
        _, meta = load_artefact(base, kind="intervention")
        config = meta_field(meta, "config", json_file)
        provenance = meta.get("provenance", {})
        method = str(provenance.get("method", "unknown"))
        key = (concept, method, str(config["form"]), int(config["layer"]))
        found.setdefault(key, base)
    return found
