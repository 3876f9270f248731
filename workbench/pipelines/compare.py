"""Every method compared on held-out pairs, written to a folder: the comparison at the trained m
and at each method's m chosen on validation pairs, SPLIT minus SFT, and the training tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.models.loading import model_provenance
from workbench.training.comparison import Comparison, ComparisonConfig, run_comparison
from workbench.training.summary import (
    choose_multipliers,
    format_comparison,
    split_vs_sft,
    summarise,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FILES = ("sweeps.parquet", "summary.csv", "summary_validated_m.csv", "split_vs_sft.csv")


@dataclass
class ComparisonReport:
    config: ComparisonConfig
    comparison: Comparison
    summary: pd.DataFrame  # at the trained m
    validated: pd.DataFrame  # at each method's m chosen on validation pairs
    split_vs_sft: pd.DataFrame
    seconds: float

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
        )

    def write(self, out: Path, model: TransformerBridge) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.comparison.sweeps.to_parquet(out / "sweeps.parquet")
        self.comparison.validation_sweeps.to_parquet(out / "validation_sweeps.parquet")
        self.summary.to_csv(out / "summary.csv", index=False)
        self.validated.to_csv(out / "summary_validated_m.csv", index=False)
        self.split_vs_sft.to_csv(out / "split_vs_sft.csv", index=False)
        self.comparison.epochs.to_csv(out / "training_epochs.csv", index=False)
        self.comparison.steps.to_csv(out / "training_steps.csv", index=False)
        made = {
            "model": model_provenance(model).to_dict(),
            "config": self.config.to_dict(),
            "seconds": round(self.seconds, 1),
        }
        (out / "comparison.json").write_text(json.dumps(made, indent=2), encoding="utf-8")
        (out / "summary.md").write_text(
            f"At the trained m = {self.config.trained_m}:\n\n{format_comparison(self.summary)}"
            f"\n\nAt each method's m chosen on validation pairs:\n\n"
            f"{format_comparison(self.validated)}\n",
            encoding="utf-8",
        )


def compare_methods(
    model: TransformerBridge, config: ComparisonConfig, out: Path
) -> ComparisonReport:
    """Run the comparison (artefacts and sweeps cached under ``out``) and summarise it."""
    started = time.perf_counter()
    comparison = run_comparison(model, config, out_dir=out)
    margin, n_bootstrap, trained_m = config.utility_margin, config.n_bootstrap, config.trained_m
    chosen = choose_multipliers(comparison.validation_sweeps, margin)
    return ComparisonReport(
        config=config,
        comparison=comparison,
        summary=summarise(comparison.sweeps, trained_m, margin, n_bootstrap),
        validated=summarise(comparison.sweeps, trained_m, margin, n_bootstrap, chosen_m=chosen),
        split_vs_sft=split_vs_sft(comparison.sweeps, trained_m, margin, n_bootstrap),
        seconds=time.perf_counter() - started,
    )
