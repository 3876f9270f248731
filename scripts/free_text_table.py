"""One table across free-text concepts, from the saved comparison folders (one per concept).

    python scripts/free_text_table.py results/sentiment results/formality ... \
        --out results/free_text.csv

Each folder is what ``workbench compare`` wrote (``summary.csv``, ``summary_validated_m.csv``,
``frontier.csv``, ``frontier_differences.csv``, ``split_versus.csv``, ``comparison.json`` and,
where present, ``tradeoff.csv``).
Every row says how it was made (the seeds, pairs and epochs from that folder's
``comparison.json``), so a table built over several runs stays legible. The markdown table
printed is the README's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

KEYS = ["concept", "form", "method"]


def _made_by(folder: Path) -> str:
    config = json.loads((folder / "comparison.json").read_text())["config"]
    return (
        f"seeds {' '.join(map(str, config['seeds']))}; {config.get('max_train_pairs')} train / "
        f"{config.get('max_test_pairs')} test pairs; {config['training']['epochs']} epoch(s); "
        f"forms {' '.join(config['forms'])}"
    )


def concept_rows(folder: Path) -> pd.DataFrame:
    """The per-method row of one concept's comparison."""
    at_one = pd.read_csv(folder / "summary.csv")
    validated = pd.read_csv(folder / "summary_validated_m.csv")
    frontier = pd.read_csv(folder / "frontier.csv")
    columns = ["accuracy", "accuracy_low", "accuracy_high", "pref_odds", "pref_odds_low"]
    columns += ["pref_odds_high", "util_odds", "util_odds_low", "util_odds_high"]
    first = at_one[[*KEYS, "seeds", "n_pairs", *columns[:6]]]
    first = first.rename(columns={c: c.replace("accuracy", "accuracy_m1") for c in columns[:3]})
    first = first.rename(columns={c: c.replace("pref_odds", "pref_odds_m1") for c in columns[3:6]})
    chosen = validated[[*KEYS, *columns, "trained_m"]].rename(
        columns={
            c: c.replace("accuracy", "accuracy_validated")
            .replace("pref_odds", "pref_odds_validated")
            .replace("util_odds", "util_odds_validated")
            for c in columns[:9]
        }
        | {"trained_m": "validated_m"}
    )
    table = first.merge(chosen, on=KEYS, how="left")
    keep = ["area", "preference_at_match", "preference_at_match_low"]
    keep += ["preference_at_match_high", "utility_at_match", "utility_at_match_low"]
    keep += ["utility_at_match_high"]
    table = table.merge(frontier[[*KEYS, *keep]], on=KEYS, how="left")
    return table.assign(made_by=_made_by(folder))


def differences(folder: Path) -> pd.DataFrame:
    """SPLIT − SFT and SPLIT − RePS per form: at the trained m (paired over pairs) and at
    matched utility (each method's own sweep)."""
    versus = pd.read_csv(folder / "split_versus.csv")
    frontier = pd.read_csv(folder / "frontier_differences.csv")
    rows = []
    for _, row in versus.iterrows():
        matched = frontier[
            (frontier["form"] == row["form"])
            & (frontier["method"] == row["versus"])
            & (frontier["reference"] == f"{row['form']}/split")
        ]
        entry = {
            "concept": row["concept"],
            "form": row["form"],
            "versus": row["versus"],
            "d_pref_odds": row["d_pref_odds"],
            "d_pref_odds_low": row["d_pref_odds_low"],
            "d_pref_odds_high": row["d_pref_odds_high"],
            "d_util_odds": row["d_util_odds"],
            "d_util_odds_low": row["d_util_odds_low"],
            "d_util_odds_high": row["d_util_odds_high"],
        }
        if len(matched):  # reference − method, so SPLIT − the other
            m = matched.iloc[0]
            entry.update(
                {
                    "d_pref_at_match": -m["preference_difference"],
                    "d_pref_at_match_low": -m["preference_difference_high"],
                    "d_pref_at_match_high": -m["preference_difference_low"],
                }
            )
        rows.append(entry)
    return pd.DataFrame(rows).assign(made_by=_made_by(folder))


def _percent(row: pd.Series, name: str) -> str:
    value = row.get(name)
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.0%} [{row[name + '_low']:.0%}, {row[name + '_high']:.0%}]"


def _nats(row: pd.Series, name: str) -> str:
    value = row.get(name)
    if value is None or pd.isna(value):
        return "–"
    return f"{value:+.1f} [{row[name + '_low']:+.1f}, {row[name + '_high']:+.1f}]"


def markdown(table: pd.DataFrame, diffs: pd.DataFrame) -> str:
    lines = [
        "| concept | form | method | accuracy at m = 1 | accuracy at validated m (m) "
        "| PrefOdds at validated m | preference at matched utility | utility at matched "
        "preference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        m = row["validated_m"]
        chosen = f" ({m:g})" if pd.notna(m) and row["method"] != "unsteered" else ""
        lines.append(
            f"| {row['concept']} | {row['form'].replace('_', ' ')} | {row['method']} "
            f"| {_percent(row, 'accuracy_m1')} | {_percent(row, 'accuracy_validated')}{chosen} "
            f"| {_nats(row, 'pref_odds_validated')} | {_nats(row, 'preference_at_match')} "
            f"| {_nats(row, 'utility_at_match')} |"
        )
    lines += [
        "",
        "| concept | form | SPLIT − | ΔPrefOdds at m = 1 | ΔUtilOdds at m = 1 "
        "| Δpreference at matched utility |",
        "|---|---|---|---|---|---|",
    ]
    for _, row in diffs.iterrows():
        lines.append(
            f"| {row['concept']} | {row['form'].replace('_', ' ')} | {row['versus']} "
            f"| {_nats(row, 'd_pref_odds')} | {_nats(row, 'd_util_odds')} "
            f"| {_nats(row, 'd_pref_at_match')} |"
        )
    return "\n".join(lines)


def tradeoff(folder: Path) -> pd.DataFrame:
    """Held-out R² of the preference and utility fits, one row per method × form."""
    table = pd.read_csv(folder / "tradeoff.csv")
    wide = table.pivot_table(
        index=KEYS, columns="curve", values=["r2_held_out", "noise_ceiling"], aggfunc="first"
    )
    wide.columns = [f"{value}_{curve}" for value, curve in wide.columns]
    why = table.pivot_table(index=KEYS, columns="curve", values="why", aggfunc="first")
    why.columns = [f"why_{curve}" for curve in why.columns]
    return wide.join(why).reset_index().assign(made_by=_made_by(folder))


def tradeoff_markdown(table: pd.DataFrame) -> str:
    """One row per form × method, the held-out R² of both fits per concept."""

    def r2(row: pd.Series, curve: str) -> str:
        value = row.get(f"r2_held_out_{curve}")
        return "flat" if value is None or pd.isna(value) else f"{value:.2f}"

    concepts = list(dict.fromkeys(table["concept"]))
    lines = [
        "| form | method | " + " | ".join(f"{c}: preference / utility" for c in concepts) + " |",
        "|---|---|" + "---|" * len(concepts),
    ]
    for (form, method), rows in table.groupby(["form", "method"], sort=False):
        by_concept = rows.set_index("concept")
        cells = [
            f"{r2(by_concept.loc[c], 'preference')} / {r2(by_concept.loc[c], 'utility')}"
            if c in by_concept.index
            else "–"
            for c in concepts
        ]
        lines.append(f"| {form.replace('_', ' ')} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/free_text.csv"))
    args = parser.parse_args()
    table = pd.concat([concept_rows(f) for f in args.folders], ignore_index=True)
    diffs = pd.concat([differences(f) for f in args.folders], ignore_index=True)
    table.to_csv(args.out, index=False)
    diffs.to_csv(args.out.with_name(args.out.stem + "_split_differences.csv"), index=False)
    print(markdown(table, diffs))
    fits = [tradeoff(f) for f in args.folders if (f / "tradeoff.csv").is_file()]
    if fits:
        fitted = pd.concat(fits, ignore_index=True)
        fitted.to_csv(args.out.with_name(args.out.stem + "_tradeoff.csv"), index=False)
        print("\n" + tradeoff_markdown(fitted))


if __name__ == "__main__":
    main()
