"""The answer a study gives, in a few sentences, for the top of its report and its console.

Read from the comparison at each method's m chosen on validation pairs (never on test) and
from SPLIT minus SFT and RePS paired over pairs: does preference move (accuracy, balanced
where answers repeat, beside the unsteered model and the random direction at equal push), at
what cost in utility, and does SPLIT beat SFT and RePS. Every number carries its 95%
interval; a claim is made only where the interval supports it, and a flat result is said to be
flat.
"""

from __future__ import annotations

import math

import pandas as pd

TRAINED = ("sft", "split", "reps")
_NAMES = {"sft": "SFT", "reps": "RePS", "split": "SPLIT"}


def _ci(row: pd.Series, name: str, percent: bool = False) -> str:
    value, low, high = (row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high"))
    if value is None or pd.isna(value):
        return "n/a"
    if percent:
        if low is None or pd.isna(low):
            return f"{value:.0%}"
        return f"{value:.0%} [{low:.0%}, {high:.0%}]"
    if low is None or pd.isna(low):
        return f"{value:+.1f}"
    return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]"


def _score_name(validated: pd.DataFrame) -> str:
    """Balanced accuracy where answers repeat (constant answers then score 50%), else accuracy."""
    has_balanced = "balanced_accuracy" in validated and validated["balanced_accuracy"].notna().any()
    return "balanced_accuracy" if has_balanced else "accuracy"


def answer_lines(
    validated: pd.DataFrame,
    split_versus: pd.DataFrame,
    matched: pd.DataFrame | None = None,
) -> list[str]:
    """The study's findings as plain sentences (one concept); ``matched`` is the frontier's
    paired differences (:func:`~workbench.measure.frontier.frontier_differences`)."""
    score = _score_name(validated)
    label = score.replace("_", " ")
    unsteered = validated[validated["method"] == "unsteered"]
    if unsteered.empty:
        return ["the comparison has no unsteered row: nothing to compare against"]
    base = unsteered.iloc[0]
    steered = validated[~validated["method"].isin(["unsteered"])]
    steered = steered[~steered["method"].astype(str).str.startswith("constant")]
    random = steered[steered["method"] == "random"]
    candidates = steered[steered["method"] != "random"].dropna(subset=[score])
    lines = [
        f"Unsteered: held-out {label} {_ci(base, score, True)}, mean PrefOdds "
        f"{_ci(base, 'pref_odds')}, UtilOdds {_ci(base, 'util_odds')} (nats)."
    ]
    if not random.empty:
        r = random.iloc[0]
        lines.append(
            f"Random direction at equal push (m = {r['trained_m']:g}): {label} "
            f"{_ci(r, score, True)}."
        )
    if candidates.empty:
        return [*lines, "No steered method has a defined score."]
    lows = candidates[f"{score}_low"] if f"{score}_low" in candidates else candidates[score]
    best = candidates.loc[lows.fillna(candidates[score]).idxmax()]
    base_high = base.get(f"{score}_high", base[score])
    random_high = random.iloc[0].get(f"{score}_high", math.nan) if not random.empty else math.nan
    best_low = best.get(f"{score}_low", best[score])
    beats = best_low > base_high and (math.isnan(random_high) or best_low > random_high)
    verdict = (
        "Preference moves"
        if beats
        else "Preference does not move beyond the baselines' intervals (a flat result)"
    )
    cost = best["util_odds"] - base["util_odds"]
    lines.append(
        f"{verdict}: the best method, {best['method']} ({best['form']}) at its validated "
        f"m = {best['trained_m']:g}, gives {label} {_ci(best, score, True)} and PrefOdds "
        f"{_ci(best, 'pref_odds')}, at a utility cost of {cost:+.1f} nats of UtilOdds "
        f"({_ci(best, 'util_odds')} against {base['util_odds']:+.1f} unsteered)."
    )
    for form in dict.fromkeys(steered["form"]):
        trained = steered[(steered["form"] == form) & steered["method"].isin(TRAINED)]
        if len(trained) >= 2:
            parts = [
                f"{m['method']} {_ci(m, score, True)} (UtilOdds {m['util_odds']:+.1f})"
                for _, m in trained.iterrows()
            ]
            lines.append(f"{form}: " + ", ".join(parts) + ".")
    lines.extend(_split_lines(split_versus))
    if matched is not None:
        lines.extend(_matched_lines(matched))
    return lines


def _matched_lines(matched: pd.DataFrame) -> list[str]:
    """SPLIT minus SFT and minus RePS in preference at matched utility, per form (each method
    read off its own m sweep; the table holds method − reference, so the sign is turned)."""
    lines = []
    for _, row in matched.iterrows():
        form, other = str(row["form"]), str(row["method"])
        if other not in ("sft", "reps") or row["reference"] != f"{form}/split":
            continue
        value = -row["preference_difference"]
        low, high = -row["preference_difference_high"], -row["preference_difference_low"]
        if pd.isna(low) or pd.isna(value):
            judged = "interval undefined"
        elif low > 0:
            judged = "SPLIT prefers more"
        elif high < 0:
            judged = f"{_NAMES[other]} prefers more"
        else:
            judged = "no difference the interval supports"
        lines.append(
            f"SPLIT − {_NAMES[other]} ({form}) at matched utility: preference "
            f"{value:+.1f} [{low:+.1f}, {high:+.1f}] nats ({judged})."
        )
    return lines


def _split_lines(split_versus: pd.DataFrame) -> list[str]:
    """SPLIT minus SFT and minus RePS per form at the trained m, paired over pairs."""
    lines = []
    for _, row in split_versus.iterrows():
        other = str(row.get("versus", "sft"))
        low, high = row.get("d_pref_odds_low"), row.get("d_pref_odds_high")
        if low is None or pd.isna(low):
            judged = "interval undefined"
        elif low > 0:
            judged = "SPLIT prefers more"
        elif high < 0:
            judged = f"{_NAMES.get(other, other)} prefers more"
        else:
            judged = "no difference the interval supports"
        lines.append(
            f"SPLIT − {_NAMES.get(other, other)} ({row['form']}, m = {row['trained_m']:g}): "
            f"PrefOdds "
            f"{_ci(row, 'd_pref_odds')}, UtilOdds {_ci(row, 'd_util_odds')} nats ({judged})."
        )
    return lines
