"""The whole pipeline on one concept, ending in one self-contained HTML report.

Stages (each with a progress bar, each writing its tidy table under ``out``):

1. layer choice: held-out DiffMean separation per residual layer (or the given layer);
2. the valid manifold at the intervention's output hook and at the last layer;
3. SFT, SPLIT and SPLIT projected for each form, DiffMean and random vectors, all swept on the
   held-out pairs (:mod:`workbench.training.comparison`);
4. fitted preference / utility curves per form × method;
5. DiffMean swept at several layers (the layer × m heatmaps);
6. displacement of the DiffMean steer (concept, on- and off-manifold) and measured validity;
7. steered states over the manifold (PCA, UMAP) and per-token projections of steered text;
8. the report: figures, the comparison table, SPLIT minus SFT, training curves.

The defaults are sized to finish within 15 minutes on a 2-core CPU with the default model
(fewer training and held-out pairs, one epoch); ``workbench compare`` is the full comparison.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.data.chat import PROMPT_STYLES, format_prompts, resolve_prompt_style
from workbench.data.pairs import PairDataset
from workbench.directions.layer_sweep import layer_sweep
from workbench.errors import ConfigError
from workbench.hooks.names import check_layer, last_resid_post
from workbench.hooks.sites import DEFAULT_SITE, SITES, site_hooks
from workbench.manifold.displacement import displacement_table, measured_validity
from workbench.manifold.embedding import activation_shift, token_projections
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.valid import collect_valid_activations
from workbench.measure.fits import fit_sweep_curve
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.models.loading import model_provenance
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
from workbench.steering.concept_vectors import DEFAULT_EXTRACTOR, concept_vector, concept_vectors
from workbench.steering.forms import FORMS, SteeringVector
from workbench.steering.generation import generate
from workbench.steering.projected import ManifoldProjection
from workbench.training.comparison import (
    RECIPES,
    ComparisonConfig,
    choose_multipliers,
    format_comparison,
    run_comparison,
    split_vs_sft,
    summarise,
)
from workbench.training.trainer import TrainingConfig


@dataclass(frozen=True)
class StudySettings:
    """Sizes and choices of a study (defaults: the 15-minute CPU budget)."""

    layer: int | None = None
    site: str = DEFAULT_SITE
    forms: tuple[str, ...] = ("vector", "lora", "local_weight")
    # m in units of the site's typical norm (a unit direction at m = 1 pushes by that norm)
    multipliers: tuple[float, ...] = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)
    prompt_style: str = "auto"
    recipe: str = "default"
    train_pairs: int = 24
    test_pairs: int = 12
    epochs: int = 1
    heatmap_layers: int = 3
    heatmap_pairs: int = 6
    displacement_pairs: int = 4
    displacement_multipliers: tuple[float, ...] = (-0.5, 0.0, 0.25, 0.5, 1.0)
    shift_pairs: int = 4
    shift_multipliers: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    generation_multipliers: tuple[float, ...] = (0.0, 0.5, 1.0)
    max_new_tokens: int = 20
    utility_margin: float = 1.0
    n_bootstrap: int = 200
    umap: bool = True
    seed: int = 0
    batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [f for f in self.forms if f not in FORMS]
        if unknown:
            raise ConfigError(f"unknown forms {unknown}; choose from {list(FORMS)}")
        if self.site not in SITES:
            raise ConfigError(f"unknown site {self.site!r}; choose one of {SITES}")
        for name in ("train_pairs", "test_pairs", "epochs", "heatmap_layers", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(
                f"unknown prompt style {self.prompt_style!r}; choose one of {PROMPT_STYLES}"
            )
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; choose one of {RECIPES}")
        if 0.0 not in self.multipliers or 1.0 not in self.multipliers:
            raise ConfigError(f"the multiplier grid {self.multipliers} must hold 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StudyResult:
    report: Path
    tables: dict[str, pd.DataFrame]
    layer: int
    seconds: float


def run_study(
    model,
    pairs: PairDataset,
    settings: StudySettings | None = None,
    out: str | Path = "runs/study",
    progress: bool = True,
) -> StudyResult:
    """Run every stage on ``pairs`` and write ``out/report.html`` and ``out/tables/``."""
    settings = settings or StudySettings()
    out = Path(out)
    started = time.perf_counter()
    concept = pairs.name or (pairs.concepts[0] if pairs.concepts else "concept")
    if not pairs.train or not pairs.test:
        raise ConfigError(f"{concept}: the study needs pairs in both the train and test splits")
    if settings.layer is not None:
        check_layer(model, settings.layer)
    style = resolve_prompt_style(model, pairs, settings.prompt_style)
    pairs = format_prompts(model, pairs, style)
    stages = tqdm(total=8, desc="study", disable=not progress)
    tables: dict[str, pd.DataFrame] = {}

    def stage(name: str) -> None:
        stages.set_postfix_str(name)

    stage("layer choice")
    layer = settings.layer
    if layer is None:
        sweep = layer_sweep(  # on validation pairs carved from train: never the test split
            model, pairs, methods=("balanced_diff_of_means",), seed=settings.seed, progress=progress
        )
        layer = sweep.recommended_layer
        tables["layer_sweep"] = sweep.table
    hook = site_hooks(settings.site, layer)[1]
    last = last_resid_post(model)
    stages.update()

    stage("valid manifold")
    sized = pairs.subsample(settings.train_pairs, settings.test_pairs)  # as the comparison does
    train, test = sized.train, sized.test
    hooks = list(dict.fromkeys([hook, last]))
    valid = collect_valid_activations(
        model,
        hooks,
        train,
        sources=("neutral", "answers"),
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    manifolds = {
        h: ActivationManifold(n_components=0.9, random_state=settings.seed).fit(
            valid.fitting(h), calibration=valid.held_out(h)
        )
        for h in hooks
    }
    stages.update()

    stage("training and sweeps")
    config = ComparisonConfig(
        concepts=(concept,),
        forms=settings.forms,
        seeds=(settings.seed,),
        layer=layer,
        site=settings.site,
        multipliers=settings.multipliers,
        utility_margin=settings.utility_margin,
        training=TrainingConfig(epochs=settings.epochs, seed=settings.seed),
        recipe=settings.recipe,
        prompt_style="plain",  # formatted above
        n_bootstrap=settings.n_bootstrap,
        batch_size=settings.batch_size,
        max_train_pairs=settings.train_pairs,
        max_test_pairs=settings.test_pairs,
    )
    comparison = run_comparison(
        model,
        config,
        out / "cache",
        progress,
        datasets={concept: pairs},
        projections={concept: ManifoldProjection.from_manifold(manifolds[hook])},
    )
    sweeps = comparison.sweeps
    chosen = choose_multipliers(comparison.validation_sweeps, settings.utility_margin)
    tables.update(
        sweeps=sweeps,
        validation_sweeps=comparison.validation_sweeps,
        training_epochs=comparison.epochs,
        training_steps=comparison.steps,
        comparison=summarise(sweeps, 1.0, settings.utility_margin, settings.n_bootstrap),
        comparison_validated_m=summarise(
            sweeps, 1.0, settings.utility_margin, settings.n_bootstrap, chosen_m=chosen
        ),
        split_vs_sft=split_vs_sft(sweeps, 1.0, settings.utility_margin, settings.n_bootstrap),
    )
    stages.update()

    stage("fits")
    tables["fits"] = _fits(sweeps)
    stages.update()

    stage("layer × m")
    tables["layer_sweeps"] = _layer_sweeps(model, train, test, layer, settings, out, progress)
    stages.update()

    stage("displacement")
    diffmean = comparison.interventions.get((concept, "vector", "diff_of_means", settings.seed))
    if diffmean is None:  # the vector form was not asked for: a DiffMean vector all the same
        diffmean = _diffmean_vector(model, train, layer, settings)
    concept_vector = diffmean.raw_vector.cpu()
    displacement = displacement_table(
        model,
        test[: settings.displacement_pairs],
        diffmean,
        settings.displacement_multipliers,
        manifolds,
        {hook: concept_vector},
        method="diff_of_means",
        sides=("positive",),
        batch_size=settings.batch_size,
        progress=progress,
    )
    tables["displacement"] = displacement
    tables["validity"] = measured_validity(displacement)
    stages.update()

    stage("activation shift")
    shift = activation_shift(
        model,
        manifolds[hook],
        diffmean,
        test[: settings.shift_pairs],
        settings.shift_multipliers,
        valid.fitting(hook),
        concept_direction=concept_vector,
        umap=settings.umap,
        seed=settings.seed,
    )
    prompt = test[0].prompt
    texts, labels, values, tokens = [], [], [], []
    for m in settings.generation_multipliers:
        continuation = generate(
            model, [prompt], [(diffmean, float(m))], max_new_tokens=settings.max_new_tokens
        )[0]
        texts.append({"m": m, "text": prompt + continuation})
        row_tokens, row_values = token_projections(
            model, [prompt + continuation], concept_vector, hook, [(diffmean, float(m))]
        )
        tokens.append(row_tokens[0])
        values.append(row_values[0])
        labels.append(f"m = {m:g}")
    tables["generations"] = pd.DataFrame(texts)
    stages.update()

    stage("report")
    report = _report(
        model, pairs, concept, layer, hook, settings, tables, shift, tokens, values, labels
    )
    seconds = time.perf_counter() - started
    report.intro += f" Made in {seconds:.0f} s."
    path = report.write(out / "report.html")
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
    diffmean.save(
        out / "artefacts" / f"{concept}-diff_of_means-vector-L{layer}",
        {
            "model": model_provenance(model).to_dict(),
            "method": "diff_of_means",
            "dataset_hash": pairs.content_hash(),
            "seed": settings.seed,
        },
    )
    made = {
        "model": model_provenance(model).to_dict(),
        "concept": concept,
        "dataset_hash": pairs.content_hash(),
        "layer": layer,
        "hook": hook,
        "prompt_style": style,
        "settings": settings.to_dict(),
        "seconds": round(seconds, 1),
        "figures": report.n_figures,
    }
    (out / "study.json").write_text(json.dumps(made, indent=2, default=str), encoding="utf-8")
    stages.update()
    stages.close()
    return StudyResult(path, tables, layer, seconds)


def _diffmean_vector(model, train, layer: int, settings: StudySettings) -> SteeringVector:
    """The answer-balanced DiffMean at the study's site, in units of the typical norm."""
    return concept_vector(model, train, layer, site=settings.site, seed=settings.seed)


def _fits(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Curves fitted to the held-out sweep means per form × method (R² on those means)."""
    rows = []
    for (form, method), group in sweeps.groupby(["form", "method"], sort=False):
        for kind in ("preference", "utility"):
            try:
                fit = fit_sweep_curve(group, kind, train_split="test", test_split="", n_bootstrap=0)
            except ValueError as error:
                rows.append({"form": form, "method": method, "kind": kind, "flags": str(error)})
                continue
            rows.append({"form": form, "method": method, **fit.to_row()})
    return pd.DataFrame(rows)


def _layer_sweeps(model, train, test, chosen, settings, out, progress) -> pd.DataFrame:
    """DiffMean at a few layers (evenly spaced, with the chosen one), swept on a few pairs."""
    n_layers = model.cfg.n_layers
    spaced = np.linspace(0, n_layers - 1, settings.heatmap_layers).round().astype(int).tolist()
    layers = sorted(set(spaced) | {chosen})
    vectors = concept_vectors(model, train, layers, site=settings.site, seed=settings.seed)
    tables = []
    for layer in tqdm(layers, desc="layers", disable=not progress, leave=False):
        vector = vectors[layer, DEFAULT_EXTRACTOR]
        tables.append(
            run_sweep(
                model,
                test[: settings.heatmap_pairs],
                vector,
                settings.multipliers,
                labels=SweepLabels(method="diff_of_means", seed=settings.seed),
                batch_size=settings.batch_size,
                cache_dir=out / "cache" / "sweeps",
                progress=False,
            )
        )
    return pd.concat(tables, ignore_index=True)


def _report(model, pairs, concept, layer, hook, settings, tables, shift, tokens, values, labels):
    provenance = model_provenance(model)
    report = Report(
        f"Steering study: {concept} on {provenance.name}",
        intro=(
            f"Model {provenance.name} ({provenance.source}, {provenance.numerics} numerics); "
            f"{len(pairs.train)} train / {len(pairs.test)} held-out pairs "
            f"(dataset {pairs.content_hash()[:12]}); intervention at {hook} (layer {layer}); "
            f"seed {settings.seed}; trained on {settings.train_pairs} pairs for "
            f"{settings.epochs} epoch(s), evaluated on {settings.test_pairs} held-out pairs."
        ),
    )
    if "layer_sweep" in tables:
        report.add(
            "Layer choice",
            "Held-out separation of the two answers' activations along the DiffMean direction "
            "at each residual layer; the study steers at the recommended layer.",
            tables=[tables["layer_sweep"]],
        )
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
        tables=[tables["fits"]],
    )
    report.add(
        "Methods compared",
        "Held-out pairs, every method on one m scale (units of the site's typical norm; 'push' "
        "is the measured ‖Δh‖/‖h‖). First at the trained m = 1, then at each method's m chosen "
        "on validation pairs (never on test). Beside accuracy: balanced accuracy (the mean of "
        "the per-answer accuracies, 50% for any constant answer), the constant-answer "
        "baselines, the answer the model gives most, and the answer mass P(A_p|q) + P(A_n|q) "
        "beside utility; a WARNING marks an accuracy gain explained by answer bias. The best "
        f"preference within {settings.utility_margin} nats of the unsteered utility reads the "
        "whole test sweep and is descriptive only. 95% bootstrap intervals over pairs. Below: "
        "SPLIT minus SFT, paired over pairs.",
        figures=[frontier_figure(sweeps)],
        tables=[tables["comparison"], tables["comparison_validated_m"], tables["split_vs_sft"]],
        snippets=[
            f"<pre>{html.escape(format_comparison(tables['comparison']))}</pre>",
            f"<pre>{html.escape(format_comparison(tables['comparison_validated_m']))}</pre>",
        ],
    )
    report.add(
        "Layer × m",
        "The DiffMean vector of each layer, swept on a few held-out pairs.",
        figures=[layer_heatmaps(tables["layer_sweeps"])],
    )
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
    )
    report.add(
        "Per-token projection on the concept direction",
        "The first held-out prompt continued greedily under the DiffMean steer at several m; "
        "each token coloured by its state's projection on the concept direction at the "
        "intervention hook (red +, blue −; hover for the value).",
        snippets=[token_projection_html(tokens, values, labels=labels)],
    )
    steps, epochs = tables["training_steps"], tables["training_epochs"]
    figures = []
    for form in settings.forms:
        chosen = steps[(steps["form"] == form) & (steps["method"] == "split")]
        chosen_epochs = epochs[(epochs["form"] == form) & (epochs["method"] == "split")]
        if not chosen.empty:
            figures.append(training_figure(chosen, chosen_epochs, title=f"SPLIT training: {form}"))
    report.add(
        "SPLIT training", "Each loss term per step; held-out objective per epoch.", figures=figures
    )
    return report
