"""Every method compared on held-out pairs, written to a folder: the comparison at the trained m
and at each method's m chosen on validation pairs, SPLIT minus SFT, and the training tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.analysis_cache import AnalysisCache
from workbench.atomic import write_table, write_text
from workbench.measure.frontier import frontier_differences, frontier_table
from workbench.models.loading import model_provenance
from workbench.report.figures import frontier_comparison_figure
from workbench.training.comparison import Comparison, ComparisonConfig, run_comparison
from workbench.training.summary import (
    choose_multipliers,
    format_comparison,
    split_vs_sft,
    summarise,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FILES = (
    "sweeps.parquet",
    "summary.csv",
    "summary_validated_m.csv",
    "split_vs_sft.csv",
    "frontier.csv",
    "frontier_differences.csv",
    "frontier.html",
)


@dataclass
class ComparisonReport:
    config: ComparisonConfig
    comparison: Comparison
    summary: pd.DataFrame  # at the trained m
    validated: pd.DataFrame  # at each method's m chosen on validation pairs
    split_vs_sft: pd.DataFrame
    seconds: float
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)  # area, utility at match
    frontier_differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # vs references

    def describe(self, model_name: str) -> str:
        c = self.config
        return (
            f"held-out pairs, model {model_name}, trained m = {c.trained_m}, utility margin "
            f"{c.utility_margin} nats, seeds {list(c.seeds)}; value [95% bootstrap CI]\n"
            + format_comparison(self.summary)
            + "\nat each method's m chosen on validation pairs:\n"
            + format_comparison(self.validated)
            + "\nSPLIT minus SFT:\n"
            + self.split_vs_sft.to_string(index=False, float_format=lambda v: f"{v:+.2f}")
            + "\nfrontier on shared axes (area, utility at matched preference) [95% CI]:\n"
            + format_frontier(self.frontier, self.frontier_differences)
        )

    def write(self, out: Path, model: TransformerBridge) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.comparison.sweeps, out / "sweeps.parquet")
        write_table(self.comparison.validation_sweeps, out / "validation_sweeps.parquet")
        write_table(self.summary, out / "summary.csv")
        write_table(self.validated, out / "summary_validated_m.csv")
        write_table(self.split_vs_sft, out / "split_vs_sft.csv")
        write_table(self.frontier, out / "frontier.csv")
        write_table(self.frontier_differences, out / "frontier_differences.csv")
        figure = frontier_comparison_figure(self.comparison.sweeps, self.validated)
        figure.write_html(out / "frontier.html", include_plotlyjs=True)
        write_table(self.comparison.epochs, out / "training_epochs.csv")
        write_table(self.comparison.steps, out / "training_steps.csv")
        made = {
            "model": model_provenance(model).to_dict(),
            "config": self.config.to_dict(),
            "seconds": round(self.seconds, 1),
        }
        write_text(out / "comparison.json", json.dumps(made, indent=2))
        write_text(
            out / "summary.md",
            f"At the trained m = {self.config.trained_m}:\n\n{format_comparison(self.summary)}"
            f"\n\nAt each method's m chosen on validation pairs:\n\n"
            f"{format_comparison(self.validated)}\n",
        )


def compare_methods(
    model: TransformerBridge,
    config: ComparisonConfig,
    out: Path,
    cache: AnalysisCache | None = None,
) -> ComparisonReport:
    """Run the comparison (artefacts and sweeps cached under ``out``; the layer sweep, site
    scales and valid activations in ``cache``) and summarise it."""
    started = time.perf_counter()
    comparison = run_comparison(model, config, out_dir=out, cache=cache)
    margin, n_bootstrap, trained_m = config.utility_margin, config.n_bootstrap, config.trained_m
    chosen = choose_multipliers(comparison.validation_sweeps, margin)
    references = [(form, "split") for form in config.forms] + [("angular", "angular")]
    return ComparisonReport(
        config=config,
        comparison=comparison,
        summary=summarise(comparison.sweeps, trained_m, margin, n_bootstrap),
        validated=summarise(comparison.sweeps, trained_m, margin, n_bootstrap, chosen_m=chosen),
        split_vs_sft=split_vs_sft(comparison.sweeps, trained_m, margin, n_bootstrap),
        seconds=time.perf_counter() - started,
        frontier=frontier_table(comparison.sweeps, n_bootstrap),
        frontier_differences=frontier_differences(comparison.sweeps, references, n_bootstrap),
    )


def format_frontier(frontier: pd.DataFrame, differences: pd.DataFrame) -> str:
    """Each method's frontier area and utility at matched preference, then the differences
    from the references whose intervals exclude zero."""
    lines = []
    for _, row in frontier.iterrows():
        if row.get("flag") and pd.isna(row.get("area")):
            lines.append(f"  {row['concept']:<14}{row['form']:<14}{row['method']:<20}{row['flag']}")
            continue
        lines.append(
            f"  {row['concept']:<14}{row['form']:<14}{row['method']:<20}"
            f"area {_ci(row, 'area')}   utility at match {_ci(row, 'utility_at_match')}"
            + (f"   ({row['flag']})" if row.get("flag") else "")
        )
    for _, row in differences.iterrows():
        both = [row[f"{k}_difference_low"] > 0 for k in ("area", "utility")]
        if all(both):
            lines.append(
                f"  beats {row['reference']} on {row['concept']}: {row['form']}/{row['method']} "
                f"(area {_ci(row, 'area_difference')}, utility "
                f"{_ci(row, 'utility_difference')})"
            )
    return "\n".join(lines)


def _ci(row: pd.Series, name: str) -> str:
    return f"{row[name]:+.2f} [{row[name + '_low']:+.2f}, {row[name + '_high']:+.2f}]"
