"""Every method compared on held-out pairs, written to a folder: the comparison at the trained m
and at each method's m chosen on validation pairs, SPLIT minus SFT and RePS, the frontier, the
trade-off curves fitted on validation pairs with held-out R² (one figure per concept) and the
training tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.analysis_cache import AnalysisCache
from workbench.artefacts import safe_stem
from workbench.atomic import write_table, write_text
from workbench.hooks.sites import site_hooks
from workbench.measure.continuations import (
    ConceptProbe,
    Steer,
    continuation_table,
    summarise_continuations,
)
from workbench.measure.frontier import frontier_differences, frontier_table
from workbench.measure.tradeoff import tradeoff_table
from workbench.models.loading import model_provenance
from workbench.progress import stage
from workbench.report.figures import curves_figure, frontier_comparison_figure
from workbench.training.comparison import Comparison, ComparisonConfig, run_comparison
from workbench.training.summary import (
    choose_multipliers,
    format_comparison,
    split_versus,
    summarise,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FILES = (
    "sweeps.parquet",
    "summary.csv",
    "summary_validated_m.csv",
    "split_versus.csv",
    "frontier.csv",
    "frontier_differences.csv",
    "frontier.html",
    "tradeoff.csv",
    "curves-<concept>.html",
)


@dataclass
class ComparisonReport:
    config: ComparisonConfig
    comparison: Comparison
    summary: pd.DataFrame  # at the trained m
    validated: pd.DataFrame  # at each method's m chosen on validation pairs
    split_versus: pd.DataFrame
    seconds: float
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)  # area, utility at match
    frontier_differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # vs references
    tradeoff: pd.DataFrame = field(default_factory=pd.DataFrame)  # fits, held-out R²
    generations: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per text
    generation_summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # means [95% CI]

    def describe(self, model_name: str) -> str:
        c = self.config
        return (
            f"held-out pairs, model {model_name}, trained m = {c.trained_m}, utility margin "
            f"{c.utility_margin} nats, seeds {list(c.seeds)}; value [95% bootstrap CI]\n"
            + format_comparison(self.summary)
            + "\nat each method's m chosen on validation pairs:\n"
            + format_comparison(self.validated)
            + "\nSPLIT minus SFT and minus RePS:\n"
            + self.split_versus.to_string(index=False, float_format=lambda v: f"{v:+.2f}")
            + "\nfrontier on shared axes (area, utility at matched preference, preference at "
            "matched utility) [95% CI]:\n"
            + format_frontier(self.frontier, self.frontier_differences)
            + "\ntrade-off fits (on validation pairs; R² on held-out pairs, the paper's beside):\n"
            + format_tradeoff(self.tradeoff)
            + format_generations(self.generation_summary)
        )

    def write(self, out: Path, model: TransformerBridge) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.comparison.sweeps, out / "sweeps.parquet")
        write_table(self.comparison.validation_sweeps, out / "validation_sweeps.parquet")
        write_table(self.summary, out / "summary.csv")
        write_table(self.validated, out / "summary_validated_m.csv")
        write_table(self.split_versus, out / "split_versus.csv")
        write_table(self.frontier, out / "frontier.csv")
        write_table(self.frontier_differences, out / "frontier_differences.csv")
        figure = frontier_comparison_figure(self.comparison.sweeps, self.validated)
        figure.write_html(out / "frontier.html", include_plotlyjs=True)
        write_table(self.tradeoff, out / "tradeoff.csv")
        if not self.generations.empty:
            write_table(self.generations, out / "generations.csv")
            write_table(self.generation_summary, out / "generation_summary.csv")
        sweeps = pd.concat(
            [self.comparison.sweeps, self.comparison.validation_sweeps], ignore_index=True
        )
        for concept, rows in sweeps.groupby("concept", sort=False):
            title = f"{concept}: preference and utility against m (held-out means, fits on "
            title += "validation pairs)"
            curves = curves_figure(rows, split="test", fit_split="train", title=title)
            curves.write_html(out / f"curves-{safe_stem(str(concept))}.html", include_plotlyjs=True)
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
    generations: int = 0,
    max_new_tokens: int = 32,
) -> ComparisonReport:
    """Run the comparison (artefacts and sweeps cached under ``out``; the layer sweep, site
    scales and valid activations in ``cache``) and summarise it. With ``generations`` > 0,
    that many held-out prompts per concept are also continued under every method at its
    validated m, beside the unsteered model, and scored (:mod:`workbench.measure.continuations`)."""
    started = time.perf_counter()
    comparison = run_comparison(model, config, out_dir=out, cache=cache)
    margin, n_bootstrap, trained_m = config.utility_margin, config.n_bootstrap, config.trained_m
    chosen = choose_multipliers(comparison.validation_sweeps, margin)
    texts = pd.DataFrame()
    if generations > 0:
        with stage("generations"):
            texts = _generations(model, config, comparison, chosen, generations, max_new_tokens)
    references = [
        (form, method) for method in ("split", "sft", "reps") for form in config.forms
    ] + [("angular", "angular")]
    return ComparisonReport(
        config=config,
        comparison=comparison,
        summary=summarise(comparison.sweeps, trained_m, margin, n_bootstrap),
        validated=summarise(comparison.sweeps, trained_m, margin, n_bootstrap, chosen_m=chosen),
        split_versus=split_versus(comparison.sweeps, trained_m, margin, n_bootstrap),
        seconds=time.perf_counter() - started,
        frontier=frontier_table(comparison.sweeps, n_bootstrap),
        frontier_differences=frontier_differences(comparison.sweeps, references, n_bootstrap),
        tradeoff=tradeoff_table(comparison.sweeps, comparison.validation_sweeps)
        if not comparison.validation_sweeps.empty
        else pd.DataFrame(),
        generations=texts,
        generation_summary=summarise_continuations(texts, n_bootstrap)
        if not texts.empty
        else pd.DataFrame(),
    )


def _generations(model, config, comparison, chosen, n_prompts, max_new_tokens) -> pd.DataFrame:
    """Continuations of the first ``n_prompts`` held-out prompts of each concept: unsteered,
    and every intervention of the comparison at its method's validated m."""
    tables = []
    for concept, layer in comparison.layers.items():
        sized = comparison.datasets[concept]  # the pairs the comparison ran on
        hook = site_hooks(config.site, layer)[1]
        probe = ConceptProbe.fit(model, sized.train, sized.test, hook)
        steers = [Steer(concept, "none", "unsteered", 0, None, 0.0)]
        for (name, form, method, seed), intervention in comparison.interventions.items():
            if name == concept:
                m = chosen.get((concept, form, method), config.trained_m)
                steers.append(Steer(concept, form, method, seed, intervention, m))
        tables.append(
            continuation_table(
                model,
                list(sized.test)[:n_prompts],
                steers,
                probe,
                max_new_tokens=max_new_tokens,
                lexicon=concept == "sentiment",
            )
        )
    return pd.concat(tables, ignore_index=True)


def format_generations(summary: pd.DataFrame) -> str:
    """The generation-level scores per method (greedy and sampled), or nothing."""
    if summary.empty:
        return ""
    lines = [
        "\ngeneration-level scores (mean over prompts [95% CI]; probe accuracy on held-out "
        "answers in brackets after the concept):"
    ]
    for _, row in summary.iterrows():
        parts = [
            f"{name} {_ci(row, name)}"
            for name in ("probe", "vader", "nll", "repetition", "relevance", "score")
            if name in row and pd.notna(row[name])
        ]
        lines.append(
            f"  {row['concept']:<12}[{row['probe_accuracy']:.0%}] {row['form']:<13}"
            f"{row['method']:<16}m={row['m']:<6g}{row['decoding']:<8}" + "  ".join(parts)
        )
    return "\n".join(lines)


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
            f"area {_ci(row, 'area')}   utility at match {_ci(row, 'utility_at_match')}   "
            f"preference at match {_ci(row, 'preference_at_match')}"
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


def format_tradeoff(tradeoff: pd.DataFrame) -> str:
    """One line per concept × form × method: held-out R² of both curves, or why not."""
    if tradeoff.empty:
        return "  (no validation sweeps: nothing fitted)"
    lines = []
    for key, rows in tradeoff.groupby(["concept", "form", "method"], sort=False):
        parts = []
        for _, row in rows.iterrows():
            r2 = row.get("r2_held_out")
            shown = f"{r2:.3f}" if pd.notna(r2) else "n/a"
            why = f" ({row['why']})" if isinstance(row.get("why"), str) and row["why"] else ""
            parts.append(f"{row['curve']} {shown} vs {row['paper_r2']:.2f}{why}")
        lines.append(f"  {key[0]:<14}{key[1]:<14}{key[2]:<20}" + "; ".join(parts))
    return "\n".join(lines)


def _ci(row: pd.Series, name: str) -> str:
    return f"{row[name]:+.2f} [{row[name + '_low']:+.2f}, {row[name + '_high']:+.2f}]"
