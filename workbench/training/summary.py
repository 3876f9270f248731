"""Summaries of a comparison's held-out sweeps: the comparison table with its baselines and
intervals, SPLIT minus SFT and RePS, the multipliers chosen on validation pairs, and Markdown.

Every statistic is per concept × form × method over the test pairs (seeds averaged per pair),
with 95% percentile bootstrap intervals over pairs (:mod:`workbench.measure.stats`); see
:mod:`workbench.training.comparison` for what is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.pairs import answers_repeat
from workbench.errors import ConfigError
from workbench.measure import answer_bias
from workbench.measure.stats import pair_bootstrap


def choose_multipliers(
    validation_sweeps: pd.DataFrame, utility_margin: float | None = None
) -> dict[tuple[str, str, str], float]:
    """Per (concept, form, method), the positive m chosen on the validation pairs.

    The score is balanced accuracy where answers repeat and mean PrefOdds otherwise (seeds
    pooled); ties go to the smaller m. With ``utility_margin``, only m whose mean UtilOdds stays
    within that many nats of the unsteered validation UtilOdds are eligible (if none is, the
    smallest positive m).
    """
    chosen: dict[tuple[str, str, str], float] = {}
    for key, group in validation_sweeps.groupby(["concept", "form", "method"], sort=False):
        data, grid, answers = _per_pair_data(group)
        zero = grid.index(0.0) if 0.0 in grid else None
        floor = (
            _nanmean(data["util"][:, zero]) - utility_margin
            if utility_margin is not None and zero is not None
            else -np.inf
        )
        best, best_m = -np.inf, None
        for column, m in enumerate(grid):
            if m <= 0 or not _nanmean(data["util"][:, column]) >= floor:
                continue
            pref = data["pref"][:, column]
            score = (
                answer_bias.balanced_accuracy(pref, answers.positive)
                if answers.repeat
                else float(pref.mean())
            )
            if score > best:
                best, best_m = score, m
        chosen[key] = best_m if best_m is not None else min(m for m in grid if m > 0)
    return chosen


# -- the summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Which multiplier columns the statistics read (the trained m, the positive m, m = 0),
    the utility floor (unsteered mean UtilOdds minus the margin), and the pairs' answers."""

    at: int
    positive: list[int]
    zero: int
    floor: float
    answers: _Answers


@dataclass(frozen=True)
class _Answers:
    """Each pair's concept answer and opposite answer, and whether answers repeat."""

    positive: np.ndarray
    negative: np.ndarray
    repeat: bool

    def take(self, rows: np.ndarray) -> _Answers:
        return _Answers(self.positive[rows], self.negative[rows], self.repeat)


def _statistics(data: dict[str, np.ndarray], columns: _Columns) -> dict[str, float]:
    pref, util = data["pref"], data["util"]
    at, positive = columns.at, columns.positive
    answers = columns.answers.take(data["rows"])
    scores = answer_bias.preference_scores(pref[:, at], answers.positive, answers.repeat)
    stats = {
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "pref_odds": scores["mean_pref_odds"],
        "util_odds": _nanmean(util[:, at]),
        "answer_mass": float(np.mean(data["mass"][:, at])),
        "push": float(np.mean(data["push"][:, at])),
        "pref_odds_sweep": _nanmean(pref[:, positive]),
        "util_odds_sweep": _nanmean(util[:, positive]),
        "best_pref_within_margin": _best_within(pref, util, positive, columns.floor)[0],
    }
    return stats


def _differences(data: dict[str, np.ndarray], columns: _Columns) -> dict[str, float]:
    """SPLIT minus the other method, from [pairs, 2·grid] matrices (SPLIT's columns first)."""
    width = data["pref"].shape[1] // 2
    split = _statistics({k: v[:, :width] if v.ndim == 2 else v for k, v in data.items()}, columns)
    sft = _statistics({k: v[:, width:] if v.ndim == 2 else v for k, v in data.items()}, columns)
    return {
        f"d_{name}": split[name] - sft[name]
        for name in ("pref_odds", "util_odds", "best_pref_within_margin")
    }


def summarise(
    sweeps: pd.DataFrame,
    trained_m: float = 1.0,
    utility_margin: float = 1.0,
    n_bootstrap: int = 1000,
    seed: int = 0,
    chosen_m: dict[tuple[str, str, str], float] | None = None,
) -> pd.DataFrame:
    """One row per concept × form × method: the comparison table (see the module docstring).

    With ``chosen_m`` (from :func:`choose_multipliers`), each method's statistics are read at
    its own validated m instead of ``trained_m``.

    Each concept starts with its baselines: ``unsteered`` (the m = 0 column) and, where answers
    repeat, one ``constant <answer>`` row per answer string (its accuracy is the share of items
    whose concept answer it is; its balanced accuracy is 50%). Where answers repeat, every row
    has balanced accuracy, per-answer accuracy, the answer it gives most and how often, and a
    ``warning`` when its accuracy gain is explained by answer bias.
    """
    baseline = _unsteered_utility(sweeps)
    rows: list[dict[str, Any]] = []
    for concept, by_concept in sweeps.groupby("concept", sort=False):
        groups = list(by_concept.groupby(["form", "method"], sort=False))
        first = groups[0][1]
        data, grid, answers = _per_pair_data(first)
        columns = _columns(grid, trained_m, baseline[concept] - utility_margin, answers)
        unsteered = _columns(grid, 0.0, columns.floor, answers)
        row = _summary_row(concept, "none", "unsteered", first, data, unsteered, n_bootstrap, seed)
        row["trained_m"] = 0.0
        rows.append(row)
        if answers.repeat:
            rows.extend(_constant_rows(concept, answers, first))
        for (form, method), group in groups:
            data, grid, answers = _per_pair_data(group)
            at = (chosen_m or {}).get((concept, form, method), trained_m)
            columns = _columns(grid, at, baseline[concept] - utility_margin, answers)
            rows.append(
                _summary_row(concept, form, method, group, data, columns, n_bootstrap, seed)
            )
    return pd.DataFrame(rows)


def _summary_row(concept, form, method, group, data, columns, n_bootstrap, seed) -> dict[str, Any]:
    pref, util = data["pref"], data["util"]
    answers = columns.answers
    grid = sorted(group["m"].unique().tolist())
    at = grid[columns.at]
    row: dict[str, Any] = {
        "concept": concept,
        "form": form,
        "method": method,
        "layer": int(group["layer"].iloc[0]),
        "seeds": int(group["seed"].nunique()),
        "n_pairs": pref.shape[0],
        "trained_m": at,
    }
    row.update(_with_intervals(_statistics, data, columns, n_bootstrap, seed))
    best_column = _best_within(pref, util, columns.positive, columns.floor)[1]
    row["best_m"] = grid[best_column] if best_column is not None else np.nan
    row["seed_sd_pref_odds"] = float(
        group[group["m"] == at].groupby("seed")["pref_odds"].mean().std(ddof=0)
    )
    row["util_undefined_rows"] = int((~group["util_defined"]).sum())
    row["pref_undefined_rows"] = int(group["pref_odds"].isna().sum())
    row.update(per_answer="", top_answer="", top_answer_share=np.nan, warning="")
    if answers.repeat:
        per_answer = answer_bias.per_answer_accuracy(pref[:, columns.at], answers.positive)
        row["per_answer"] = ", ".join(f"{a}: {v:.0%}" for a, v in per_answer.items())
        top, share = answer_bias.top_answer_share(
            pref[:, columns.at], answers.positive, answers.negative
        )
        row["top_answer"], row["top_answer_share"] = top, share
        zero = pref[:, columns.zero]
        row["warning"] = answer_bias.bias_warning(
            row["accuracy"],
            row["balanced_accuracy"],
            row["balanced_accuracy_low"],
            top,
            share,
            answer_bias.preference_scores(zero, answers.positive, True)["accuracy"],
            answer_bias.balanced_accuracy(zero, answers.positive),
        )
    if row["pref_undefined_rows"]:
        undefined = (
            f"{row['pref_undefined_rows']} of {len(group)} rows have undefined PrefOdds (NaN): "
            "left out of every score"
        )
        row["warning"] = "; ".join(w for w in (row["warning"], undefined) if w)
    return row


def _constant_rows(concept: str, answers: _Answers, group: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    n = len(answers.positive)
    for answer, accuracy in answer_bias.constant_baselines(
        answers.positive, answers.negative
    ).items():
        row: dict[str, Any] = {
            "concept": concept,
            "form": "none",
            "method": f"constant {answer}",
            "layer": int(group["layer"].iloc[0]),
            "seeds": 0,
            "n_pairs": n,
            "trained_m": np.nan,
            "accuracy": accuracy,
            "balanced_accuracy": 0.5,
            "top_answer": answer,
            "top_answer_share": 1.0,
            "per_answer": ", ".join(
                f"{a}: {float(a == answer):.0%}"
                for a in sorted({x.strip() for x in answers.positive})
            ),
            "warning": "",
        }
        for name in ("accuracy", "balanced_accuracy"):
            row[f"{name}_low"] = row[f"{name}_high"] = row[name]
        rows.append(row)
    return rows


def split_versus(
    sweeps: pd.DataFrame,
    trained_m: float = 1.0,
    utility_margin: float = 1.0,
    n_bootstrap: int = 1000,
    seed: int = 0,
    others: Sequence[str] = ("sft", "reps"),
) -> pd.DataFrame:
    """SPLIT minus each of ``others`` (SFT, RePS) per concept × form, paired over test pairs,
    with 95% bootstrap CIs; ``versus`` names the other method.

    ``holds`` is the paper's claim at the trained m: preference higher (CI above 0) with
    utility equal or better (the utility difference's CI reaches 0 or above).
    """
    baseline = _unsteered_utility(sweeps)
    rows = []
    for (concept, form), group in sweeps.groupby(["concept", "form"], sort=False):
        present = [o for o in others if o in set(group["method"])]
        if "split" not in set(group["method"]) or not present:
            continue
        split, grid, answers = _per_pair_data(group[group["method"] == "split"])
        for other in present:
            versus, _, _ = _per_pair_data(group[group["method"] == other])
            columns = _columns(grid, trained_m, baseline[concept] - utility_margin, answers)
            data = {
                k: np.concatenate([split[k], versus[k]], axis=1) if split[k].ndim == 2 else split[k]
                for k in split
            }
            row: dict[str, Any] = {
                "concept": concept,
                "form": form,
                "versus": other,
                "trained_m": trained_m,
            }
            row.update(_with_intervals(_differences, data, columns, n_bootstrap, seed))
            row["holds"] = bool(row["d_pref_odds_low"] > 0 and row["d_util_odds_high"] >= 0)
            rows.append(row)
    return pd.DataFrame(rows)


def _columns(grid: list[float], trained_m: float, floor: float, answers: _Answers) -> _Columns:
    if trained_m not in grid:
        raise ConfigError(f"the sweeps have no rows at the trained m = {trained_m}")
    if 0.0 not in grid:
        raise ConfigError("the sweeps hold no m = 0 rows: the unsteered values are unknown")
    return _Columns(
        grid.index(trained_m),
        [i for i, m in enumerate(grid) if m > 0],
        grid.index(0.0),
        floor,
        answers,
    )


def _with_intervals(statistics, data, columns, n_bootstrap, seed) -> dict[str, float]:
    """The statistics and their percentile 95% intervals over pairs (:func:`pair_bootstrap`)."""
    n = data["pref"].shape[0]
    data = {**data, "rows": np.arange(n)}
    point = statistics(data, columns)

    def resampled(rows: np.ndarray) -> dict[str, float]:
        return statistics({name: values[rows] for name, values in data.items()}, columns)

    intervals = pair_bootstrap(n, resampled, list(point), n_bootstrap, seed)
    result: dict[str, float] = {}
    for name, value in point.items():
        low, high = intervals[name] if np.isfinite(value) else (np.nan, np.nan)
        result.update({name: value, f"{name}_low": low, f"{name}_high": high})
    return result


def format_comparison(summary: pd.DataFrame) -> str:
    """The comparison table as Markdown (value [95% CI]); answer-bias warnings below it."""

    def cell(row, name, percent=False):
        value, low, high = row.get(name, np.nan), row.get(f"{name}_low"), row.get(f"{name}_high")
        if not np.isfinite(value):
            return "–"
        if percent:
            return f"{value:.0%} [{low:.0%}, {high:.0%}]"
        return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"

    header = (
        "| concept | form | method | accuracy @m | balanced accuracy @m | gives most (share) "
        "| PrefOdds @m | UtilOdds @m | answer mass @m | push @m | best PrefOdds within "
        "margin (m) |"
    )
    lines = [header, "|" + "---|" * 11]
    warnings = []
    for _, row in summary.iterrows():
        best = row.get("best_pref_within_margin", np.nan)
        best_text = (
            f"{cell(row, 'best_pref_within_margin')} ({row['best_m']:g})"
            if np.isfinite(best)
            else "–"
        )
        share = row.get("top_answer_share", np.nan)
        gives = f"{row['top_answer']} ({share:.0%})" if np.isfinite(share) else "–"
        mass = row.get("answer_mass", np.nan)
        push = row.get("push", np.nan)
        lines.append(
            f"| {row['concept']} | {row['form']} | {row['method']} | "
            f"{cell(row, 'accuracy', True)} | {cell(row, 'balanced_accuracy', True)} | {gives} | "
            f"{cell(row, 'pref_odds')} | {cell(row, 'util_odds')} | "
            f"{mass:.3g} | {push:.3g} | {best_text} |"
        )
        if isinstance(row.get("warning"), str) and row["warning"]:
            warnings.append(
                f"WARNING {row['concept']} {row['form']} {row['method']}: {row['warning']}"
            )
    return "\n".join(lines + (["", *warnings] if warnings else []))


def _nanmean(values: np.ndarray) -> float:
    """Mean over defined values (undefined values are NaN and counted separately)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _unsteered_utility(sweeps: pd.DataFrame) -> dict[str, float]:
    """Mean UtilOdds at m = 0 per concept (the same for every method: m = 0 is unsteered)."""
    at_zero = sweeps[sweeps["m"] == 0.0]
    if at_zero.empty:
        raise ConfigError("the sweeps hold no m = 0 rows: the unsteered utility is unknown")
    return at_zero.groupby("concept")["util_odds"].mean().to_dict()


def _per_pair_data(group: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[float], _Answers]:
    """[pairs, m] matrices (PrefOdds, UtilOdds, answer mass, push; seeds averaged per pair),
    the m grid, and each pair's answers."""
    group = group.copy()
    for name in ("answer_mass", "push"):
        if name not in group:
            group[name] = np.nan
    names = ["pref_odds", "util_odds", "answer_mass", "push"]
    means = group.groupby(["pair_id", "m"])[names].mean().unstack("m")
    grid = [float(m) for m in means["pref_odds"].columns]
    data = {
        "pref": means["pref_odds"].to_numpy(),
        "util": means["util_odds"].to_numpy(),
        "mass": means["answer_mass"].to_numpy(),
        "push": means["push"].to_numpy(),
    }
    if {"A_p", "A_n"} <= set(group.columns):
        first = group.groupby("pair_id")[["A_p", "A_n"]].first().loc[means.index]
        positive, negative = first["A_p"].to_numpy(object), first["A_n"].to_numpy(object)
        repeat = answers_repeat(list(positive), list(negative))
    else:
        positive = negative = np.array([""] * len(means), dtype=object)
        repeat = False
    return data, grid, _Answers(positive, negative, repeat)


def _best_within(pref, util, columns: Sequence[int], floor: float) -> tuple[float, int | None]:
    """(best mean PrefOdds among ``columns`` whose mean UtilOdds >= floor, that column)."""
    best, where = -np.inf, None
    for column in columns:
        util_mean = _nanmean(util[:, column])
        pref_mean = _nanmean(pref[:, column])
        if util_mean >= floor and pref_mean > best:
            best, where = pref_mean, column
    return (best if np.isfinite(best) else np.nan), where
