"""The study's HTML page: layout and captions over what :func:`~workbench.pipelines.study.run_study`
measured."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from workbench.models.loading import model_provenance
from workbench.report.answer import answer_lines
from workbench.report.figures import (
    activation_shift_figure,
    curves_figure,
    displacement_figure,
    frontier_figure,
    layer_heatmaps,
    token_projection_html,
    training_figure,
)
from workbench.report.html import Report

if TYPE_CHECKING:
    from workbench.pipelines.study import StudyRun


def study_page(run: StudyRun) -> Report:
    """The study's page: every figure and table with a caption saying what it shows."""
    pairs, settings, tables = run.pairs, run.settings, run.tables
    shift, views = run.shift, run.token_views
    assert shift is not None and views is not None, "the study has not run every stage"
    provenance = model_provenance(run.model)
    report = Report(
        f"Steering study: {run.concept} on {provenance.name}",
        intro=(
            f"Model {provenance.name} ({provenance.source}, {provenance.numerics} numerics); "
            f"{len(pairs.train)} train / {len(pairs.test)} held-out pairs "
            f"(dataset {pairs.content_hash()[:12]}); intervention at {run.hook} "
            f"(layer {run.layer}); "
            f"seed {settings.seed}; trained on {settings.train_pairs} pairs for "
            f"{settings.epochs} epoch(s), evaluated on {settings.test_pairs} held-out pairs."
        ),
        answer=answer_lines(
            tables["comparison_validated_m"],
            tables["split_versus"],
            tables.get("frontier_differences"),
        ),
    )
    _add_results(report, tables, settings.utility_margin)
    _add_mechanism(report, tables, shift, views)
    _add_training(report, tables, settings.forms)
    if "layer_sweep" in tables:
        report.add(
            "Layer choice",
            "Held-out separation of the two answers' activations along the DiffMean direction "
            "at each residual layer; the study steers at the recommended layer.",
            tables=[_layer_table(tables["layer_sweep"])],
            captions=[
                "Validation pairs carved from train; the largest effect size among "
                "near-best AUROC layers is chosen."
            ],
        )
    return report


FIT_SUMMARY = ("form", "method", "kind", "r2_train", "n_multipliers", "flags")


def _fit_summary(fits):
    """The fits' key columns (which curve, how well it fits, why not); the rest go collapsed.
    The study fits the held-out per-m means, so its R² is on held-out pairs."""
    shown = fits[[c for c in FIT_SUMMARY if c in fits.columns]]
    return shown.rename(columns={"r2_train": "R² (held-out means)"})


def _layer_table(table):
    keep = ["layer", "method", "auroc", "effect_size", "paired_accuracy", "probe_accuracy"]
    return table[[c for c in keep if c in table.columns]]


def _add_results(report: Report, tables, utility_margin: float) -> None:
    """The curves, the methods compared, and the layer × m heatmaps."""
    sweeps = tables["sweeps"]
    split_rows = sweeps[sweeps["method"] == "split"]
    vector_rows = sweeps[sweeps["form"] == "vector"]
    report.add(
        "Preference and utility against m",
        "Held-out means with 95% bands and the fitted curves (piecewise rational-quadratic "
        "decay, continuous at m = 0). Shading: the fitted preference's linear regime (light) and "
        "convergence regime (darker), per form.",
        figures=[
            curves_figure(split_rows, title="SPLIT, each form"),
            curves_figure(vector_rows, title="Steering vectors, each method"),
        ],
        tables=[_fit_summary(tables["fits"])],
        captions=[
            "How well each fitted curve follows the held-out means (R²); a flag says why "
            "a curve was not fitted (footnotes)."
        ],
        details=[tables["fits"]],
    )
    report.add(
        "Methods compared",
        "Held-out pairs, every method on one m scale (units of the site's typical norm; 'push' "
        "is the measured ‖Δh‖/‖h‖). First at the trained m = 1, then at each method's m chosen "
        "on validation pairs (never on test). Beside accuracy: balanced accuracy (the mean of "
        "the per-answer accuracies, 50% for any constant answer), the constant-answer "
        "baselines, the answer the model gives most, and the answer mass P(A_p|q) + P(A_n|q) "
        "beside utility; a WARNING marks an accuracy gain explained by answer bias. The best "
        f"preference within {utility_margin} nats of the unsteered utility reads the "
        "whole test sweep and is descriptive only. 95% bootstrap intervals over pairs. Below: "
        "SPLIT minus SFT and minus RePS, paired over pairs.",
        figures=[frontier_figure(sweeps)],
        tables=[
            tables["comparison_validated_m"],
            tables["comparison"],
            tables["split_versus"],
            *([tables["frontier_differences"]] if "frontier_differences" in tables else []),
        ],
        captions=[
            "At each method's m chosen on validation pairs: read accuracy (balanced where "
            "answers repeat) against the unsteered and random rows.",
            "At the trained m = 1 for every method.",
            "SPLIT minus SFT and minus RePS (versus), paired over pairs: preference up with "
            "utility no lower is the paper's claim.",
            *(
                [
                    "Each method minus SPLIT of its form, read off each one's own m sweep: "
                    "preference at matched utility (negative: SPLIT prefers more)."
                ]
                if "frontier_differences" in tables
                else []
            ),
        ],
        snippets=[_warnings(tables["comparison"]), _warnings(tables["comparison_validated_m"])],
    )
    report.add(
        "Layer × m",
        "The DiffMean vector of each layer, swept on a few held-out pairs.",
        figures=[layer_heatmaps(tables["layer_sweeps"])],
    )


def _warnings(summary) -> str:
    """The summary's warnings (answer bias, undefined rows) as a list, escaped."""
    if "warning" not in summary:
        return ""
    rows = summary[summary["warning"].fillna("").astype(str) != ""]
    items = "".join(
        f"<li>{html.escape(f'{r.method} · {r.form}: {r.warning}')}</li>" for r in rows.itertuples()
    )
    return f'<ul class="note">{items}</ul>' if items else ""


def _add_mechanism(report: Report, tables, shift, views) -> None:
    """Displacement against the valid manifold and the per-token projections."""
    report.add(
        "Displacement and the valid manifold",
        "How far the DiffMean steer moves answer-token states along the concept direction, "
        "within the valid subspace and off it, at the intervention layer and the last layer; "
        "and the share of steered tokens within the calibrated ε (measured validity).",
        figures=[
            displacement_figure(tables["displacement"]),
            activation_shift_figure(
                shift.valid, shift.steered, shift.hover, direction=shift.direction
            ),
        ],
        tables=[tables["validity"]],
        captions=["The share of steered tokens within the calibrated ε of the manifold, per m."],
    )
    report.add(
        "Per-token projection on the concept direction",
        "The first held-out prompt continued greedily under the DiffMean steer at several m; "
        "each token coloured by its state's projection on the concept direction at the "
        "intervention hook (red +, blue −; hover for the value).",
        snippets=[token_projection_html(views.tokens, views.values, labels=views.labels)],
    )


def _add_training(report: Report, tables, forms) -> None:
    """SPLIT's loss terms per step and held-out objective per epoch, per form."""
    steps, epochs = tables["training_steps"], tables["training_epochs"]
    figures = []
    for form in forms:
        chosen = steps[(steps["form"] == form) & (steps["method"] == "split")]
        chosen_epochs = epochs[(epochs["form"] == form) & (epochs["method"] == "split")]
        if not chosen.empty:
            figures.append(training_figure(chosen, chosen_epochs, title=f"SPLIT training: {form}"))
    report.add(
        "SPLIT training", "Each loss term per step; held-out objective per epoch.", figures=figures
    )
