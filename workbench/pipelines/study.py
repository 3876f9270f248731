"""The whole pipeline on one concept, ending in one self-contained HTML report.

Stages (each announced with its progress, each writing its tidy table under ``out``):

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

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.analysis_cache import AnalysisCache, cached_layer_choice, cached_valid_activations
from workbench.artefacts import safe_stem
from workbench.atomic import write_table, write_text
from workbench.data.chat import PROMPT_STYLES, PromptStyle, format_prompts, resolve_prompt_style
from workbench.data.pairs import PairDataset
from workbench.errors import ConfigError
from workbench.hooks.names import check_layer, last_resid_post
from workbench.hooks.sites import DEFAULT_SITE, SITES, Site, site_hooks
from workbench.manifold.displacement import displacement_table, measured_validity
from workbench.manifold.embedding import ActivationShift, activation_shift, token_projections
from workbench.manifold.estimator import ActivationManifold
from workbench.measure.fits import fit_sweep_curve
from workbench.measure.frontier import frontier_differences
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.models.loading import model_provenance
from workbench.progress import bar, say, stage
from workbench.report.html import Report
from workbench.report.study_page import study_page
from workbench.steering.concept_vectors import DEFAULT_EXTRACTOR, concept_vector, concept_vectors
from workbench.steering.forms import FORMS, SteeringVector
from workbench.steering.generation import generate
from workbench.steering.projected import ManifoldProjection
from workbench.training.comparison import (
    BASE_METHODS,
    RECIPES,
    Comparison,
    ComparisonConfig,
    run_comparison,
)
from workbench.training.summary import choose_multipliers, split_versus, summarise
from workbench.training.trainer import TrainingConfig

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _bytes(mib: int | None) -> int | None:
    return mib * 2**20 if mib is not None else None


@dataclass(frozen=True)
class StudySettings:
    """Sizes and choices of a study (defaults: about ten minutes of pipeline on two CPU cores;
    LoRA is left to ``forms`` and to ``workbench compare``)."""

    layer: int | None = None
    site: Site = DEFAULT_SITE
    forms: tuple[str, ...] = ("vector", "local_weight")
    # m in units of the site's typical norm (a unit direction at m = 1 pushes by that norm)
    multipliers: tuple[float, ...] = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)
    prompt_style: PromptStyle = "auto"
    recipe: str = "default"
    train_pairs: int = 40
    test_pairs: int = 16
    epochs: int = 2
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
    memory_cap_mib: int | None = None  # stream valid activations to disk under this cap
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
        if self.memory_cap_mib is not None and self.memory_cap_mib < 1:
            raise ConfigError(f"memory_cap_mib must be >= 1, got {self.memory_cap_mib}")
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


@dataclass
class StudyRun:
    """What a study measured so far: the report and the files are made from it."""

    model: Any
    pairs: PairDataset  # prompts formatted in ``style``
    concept: str
    settings: StudySettings
    style: PromptStyle
    cache: AnalysisCache | None = None
    layer: int = -1
    hook: str = ""  # the intervention's output hook
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    shift: ActivationShift | None = None
    token_views: TokenViews | None = None
    layer_vectors: dict[int, SteeringVector] = field(default_factory=dict)


@dataclass
class TokenViews:
    """Per-token projections of the steered continuations, one row per m."""

    tokens: list[list[str]]
    values: list[np.ndarray]
    labels: list[str]


def run_study(
    model: TransformerBridge,
    pairs: PairDataset,
    settings: StudySettings | None = None,
    out: str | Path = "runs/study",
    progress: bool = True,
    cache: AnalysisCache | None = None,
) -> StudyResult:
    """Run every stage on ``pairs`` and write ``out/report.html`` and ``out/tables/``.

    ``cache`` keeps the layer sweep, site scales and valid activations across runs (default:
    ``out/cache/analysis``; the CLI shares one between the studies and comparisons of an
    ``--out`` folder)."""
    settings = settings or StudySettings()
    out = Path(out)
    cache = cache if cache is not None else AnalysisCache(out / "cache" / "analysis")
    started = time.perf_counter()
    concept = pairs.name or (pairs.concepts[0] if pairs.concepts else "concept")
    if not pairs.train or not pairs.test:
        raise ConfigError(f"{concept}: the study needs pairs in both the train and test splits")
    if settings.layer is not None:
        check_layer(model, settings.layer)
    style = resolve_prompt_style(model, pairs, settings.prompt_style)
    run = StudyRun(model, format_prompts(model, pairs, style), concept, settings, style, cache)
    with stage("layer choice", 1, 8):
        _choose_layer(run, progress)
    with stage("valid manifold", 2, 8):
        sized = run.pairs.subsample(settings.train_pairs, settings.test_pairs)  # as compare does
        train, test = sized.train, sized.test
        valid, manifolds = _valid_manifolds(run, train, progress)
    with stage("training and sweeps", 3, 8):
        projection = ManifoldProjection.from_manifold(manifolds[run.hook])
        comparison = _compare_methods(run, out, progress, projection)
    with stage("fits", 4, 8):
        run.tables["fits"] = _fits(run.tables["sweeps"])
    with stage("layer × m", 5, 8):
        run.tables["layer_sweeps"], run.layer_vectors = _layer_sweeps(
            model, train, test, run.layer, settings, out, progress
        )
    with stage("displacement", 6, 8):
        key = (concept, "vector", "diff_of_means", settings.seed)
        diffmean = comparison.interventions.get(key)
        if diffmean is None:  # the vector form was not asked for: a DiffMean vector all the same
            diffmean = concept_vector(
                model, train, run.layer, site=settings.site, seed=settings.seed
            )
        _displacement(run, test, diffmean, manifolds, progress)
    with stage("activation shift", 7, 8):
        _shift_and_continuations(run, test, diffmean, manifolds[run.hook], valid.fitting(run.hook))
    with stage("report", 8, 8):
        report = study_page(run)
        seconds = time.perf_counter() - started
        report.intro += f" Made in {seconds:.0f} s."
        path = _write(run, out, report, diffmean, seconds)
    return StudyResult(path, run.tables, run.layer, seconds)


def _choose_layer(run: StudyRun, progress: bool) -> None:
    """The given layer, or the one the layer sweep recommends on validation pairs carved from
    train (never the test split)."""
    layer = run.settings.layer
    if layer is None:
        layer, run.tables["layer_sweep"] = cached_layer_choice(
            run.cache, run.model, run.pairs, seed=run.settings.seed, progress=progress
        )
        say(f"layer {layer} (answer-balanced DiffMean on validation pairs carved from train)")
    run.layer, run.hook = layer, site_hooks(run.settings.site, layer)[1]


def _valid_manifolds(
    run: StudyRun, train, progress: bool
) -> tuple[Any, dict[str, ActivationManifold]]:
    """The valid manifold at the intervention's output hook and after the last block."""
    hooks = list(dict.fromkeys([run.hook, last_resid_post(run.model)]))
    valid = cached_valid_activations(
        run.cache,
        run.model,
        hooks,
        train,
        sources=("neutral", "answers"),
        seed=run.settings.seed,
        batch_size=run.settings.batch_size,
        memory_cap=_bytes(run.settings.memory_cap_mib),
        progress=progress,
    )
    manifolds = {
        h: valid.fit_manifold(
            ActivationManifold(n_components=0.9, random_state=run.settings.seed), h
        )
        for h in hooks
    }
    return valid, manifolds


def _compare_methods(run: StudyRun, out: Path, progress: bool, projection) -> Comparison:
    """Every method trained and swept (the comparison), and its summaries."""
    s = run.settings
    config = ComparisonConfig(
        concepts=(run.concept,),
        forms=s.forms,
        methods=BASE_METHODS,
        seeds=(s.seed,),
        layer=run.layer,
        site=s.site,
        multipliers=s.multipliers,
        utility_margin=s.utility_margin,
        training=TrainingConfig(epochs=s.epochs, seed=s.seed),
        recipe=s.recipe,
        prompt_style="plain",  # formatted already
        n_bootstrap=s.n_bootstrap,
        batch_size=s.batch_size,
        max_train_pairs=s.train_pairs,
        max_test_pairs=s.test_pairs,
    )
    comparison = run_comparison(
        run.model,
        config,
        out / "cache",
        progress,
        datasets={run.concept: run.pairs},
        projections={run.concept: projection},
        cache=run.cache,
    )
    sweeps, margin, n = comparison.sweeps, s.utility_margin, s.n_bootstrap
    chosen = choose_multipliers(comparison.validation_sweeps, margin)
    run.tables.update(
        sweeps=sweeps,
        validation_sweeps=comparison.validation_sweeps,
        training_epochs=comparison.epochs,
        training_steps=comparison.steps,
        comparison=summarise(sweeps, 1.0, margin, n),
        comparison_validated_m=summarise(sweeps, 1.0, margin, n, chosen_m=chosen),
        split_versus=split_versus(sweeps, 1.0, margin, n),
        frontier_differences=frontier_differences(sweeps, [(form, "split") for form in s.forms], n),
    )
    return comparison


def _displacement(run: StudyRun, test, diffmean: SteeringVector, manifolds, progress) -> None:
    """Displacement of the DiffMean steer and the measured validity."""
    s = run.settings
    displacement = displacement_table(
        run.model,
        test[: s.displacement_pairs],
        diffmean,
        s.displacement_multipliers,
        manifolds,
        {run.hook: diffmean.raw_vector.cpu()},
        method="diff_of_means",
        sides=("positive",),
        batch_size=s.batch_size,
        progress=progress,
    )
    run.tables["displacement"] = displacement
    run.tables["validity"] = measured_validity(displacement)


def _shift_and_continuations(run: StudyRun, test, diffmean, manifold, valid_states) -> None:
    """Steered states over the manifold, and the first held-out prompt continued at each m with
    per-token projections on the concept direction."""
    s, model, direction = run.settings, run.model, diffmean.raw_vector.cpu()
    run.shift = activation_shift(
        model,
        manifold,
        diffmean,
        test[: s.shift_pairs],
        s.shift_multipliers,
        valid_states,
        concept_direction=direction,
        umap=s.umap,
        seed=s.seed,
    )
    prompt = test[0].prompt
    texts, views = [], TokenViews([], [], [])
    for m in s.generation_multipliers:
        steer = [(diffmean, float(m))]
        continuation = generate(model, [prompt], steer, max_new_tokens=s.max_new_tokens)[0]
        texts.append({"m": m, "text": prompt + continuation})
        tokens, values = token_projections(
            model, [prompt + continuation], direction, run.hook, steer
        )
        views.tokens.append(tokens[0])
        views.values.append(values[0])
        views.labels.append(f"m = {m:g}")
    run.tables["generations"] = pd.DataFrame(texts)
    run.token_views = views


def _write(run: StudyRun, out: Path, report: Report, diffmean, seconds: float) -> Path:
    """The report, the tables, the DiffMean artefact and ``study.json`` (how it was made)."""
    path = report.write(out / "report.html")
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, table in run.tables.items():
        write_table(table, out / "tables" / f"{name}.csv")
    model = model_provenance(run.model).to_dict()
    # the chosen layer's DiffMean (the one every method was compared with) and the heatmap's
    vectors = {**run.layer_vectors, run.layer: diffmean}
    for layer, vector in sorted(vectors.items()):
        vector.save(
            out / "artefacts" / f"{safe_stem(run.concept)}-diff_of_means-vector-L{layer}",
            {
                "model": model,
                "method": "diff_of_means",
                "dataset_hash": run.pairs.content_hash(),
                "seed": run.settings.seed,
            },
        )
    made = {
        "model": model,
        "concept": run.concept,
        "dataset_hash": run.pairs.content_hash(),
        "layer": run.layer,
        "hook": run.hook,
        "prompt_style": run.style,
        "settings": run.settings.to_dict(),
        "seconds": round(seconds, 1),
        "figures": report.n_figures,
    }
    write_text(out / "study.json", json.dumps(made, indent=2, default=str))
    return path


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


def _layer_sweeps(
    model: TransformerBridge, train, test, chosen, settings, out, progress
) -> tuple[pd.DataFrame, dict[int, SteeringVector]]:
    """DiffMean at a few layers (evenly spaced, with the chosen one), swept on a few pairs;
    the table and the vectors."""
    n_layers = model.cfg.n_layers
    spaced = np.linspace(0, n_layers - 1, settings.heatmap_layers).round().astype(int).tolist()
    layers = sorted(set(spaced) | {chosen})
    vectors = concept_vectors(model, train, layers, site=settings.site, seed=settings.seed)
    tables = []
    for layer in bar(layers, desc="layers", enabled=progress):
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
    return pd.concat(tables, ignore_index=True), {k: vectors[k, DEFAULT_EXTRACTOR] for k in layers}
