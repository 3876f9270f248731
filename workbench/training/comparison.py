"""Compare steering methods on one scale: DiffMean, random, SFT, SPLIT, SPLIT projected, the
published anchors (angular, ACE, distance-scaled) and SPLIT through the manifold clip
(:mod:`workbench.training.anchors`).

For each concept and seed, every method is swept over the same multiplier grid, in units of
the site's typical norm (DiffMean, the answer-balanced one, and random are unit directions, so
at a given m they push equally), on the held-out (test) pairs. Every choice is made without
the test split: the layer on validation pairs carved from train (:func:`layer_sweep`), the
trained epoch on the validation pairs (balanced accuracy where answers repeat), and, with
``select_m``, each method's strength on the same validation pairs (:func:`choose_multipliers`).
The summary reports, per concept × form × method, with 95% bootstrap intervals over test pairs
(seeds averaged per pair), after the ``unsteered`` row and the ``constant <answer>`` rows:

- accuracy (share of pairs with P(A_p|q) > P(A_n|q)) and, where answers repeat, balanced
  accuracy, per-answer accuracy, the answer given most and a warning when an accuracy gain is
  answer bias (:mod:`workbench.measure.answer_bias`);
- mean PrefOdds and UtilOdds, the answer mass P(A_p|q) + P(A_n|q) and the measured push
  ‖Δh‖ / ‖h‖ at the trained (or validated) multiplier, and the means across positive m;
- the best mean PrefOdds over the grid's positive multipliers whose mean UtilOdds stays within
  ``utility_margin`` nats of the unsteered mean UtilOdds, and the m that reaches it (this one
  reads the whole test sweep: descriptive, not a held-out choice).

:func:`~workbench.training.summary.split_versus` sets SPLIT against SFT and RePS per concept × form
(paired over pairs): the paper's claim is that SPLIT raises preference at equal or better
utility. The summaries live in :mod:`workbench.training.summary`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from workbench.analysis_cache import (
    AnalysisCache,
    cached_layer_choice,
    cached_site_scales,
    cached_valid_activations,
)
from workbench.artefacts import safe_stem
from workbench.data.chat import PROMPT_STYLES, PromptStyle, format_prompts, resolve_prompt_style
from workbench.data.concepts import load_concept
from workbench.data.pairs import PairDataset, validation_split
from workbench.errors import ConfigError
from workbench.hooks.sites import DEFAULT_SITE, SITES, Site, SiteScales, site_hooks
from workbench.manifold.estimator import ActivationManifold
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.models.loading import model_device, model_provenance
from workbench.progress import say, stage
from workbench.provenance import stable_hash
from workbench.steering.concept_vectors import DEFAULT_EXTRACTOR, concept_vectors
from workbench.steering.forms import FORMS
from workbench.steering.io import load_intervention
from workbench.steering.prefixes import PrefixCache
from workbench.steering.projected import ManifoldProjection, ProjectedIntervention
from workbench.steering.roles import Positions
from workbench.training.anchors import ANCHORS, CLIPPED, SiteStates, anchor_steers, clip_around
from workbench.training.objective import SplitObjective
from workbench.training.reps import RepsObjective
from workbench.training.trainer import TrainingConfig, train_intervention

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

BASE_METHODS = ("diff_of_means", "random", "sft", "split", "reps", "split_projected")
METHODS = (*BASE_METHODS, *ANCHORS, *CLIPPED)
VECTOR_ONLY = ("diff_of_means", "random")
NEEDS_STATES = (*ANCHORS, *CLIPPED)
RECIPES = ("default", "paper")
COMPARISON_GRID = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ComparisonConfig:
    """What to compare and how.

    ``normalise`` puts every method in units of the site's typical norm
    (:mod:`workbench.hooks.sites`):
    DiffMean and random are unit directions, so at m their push is m × the typical norm, and
    trained parameters use the same units. ``prompt_style`` formats the prompts
    (:func:`workbench.data.chat.format_prompts`: an answer cue or the chat template where
    answers repeat). ``recipe`` ``"paper"`` trains with :meth:`TrainingConfig.paper` instead of
    ``training``. With ``select_m``, each method is also swept on the validation pairs and its
    strength is chosen there (:func:`choose_multipliers`), never on test.
    """

    concepts: tuple[str, ...] = ("extraversion", "optimism")
    forms: tuple[str, ...] = ("vector", "lora", "local_weight")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1)
    layer: int | None = None  # None: the layer sweep's recommendation, per concept
    site: Site = DEFAULT_SITE
    positions: Positions = "all"
    multipliers: tuple[float, ...] = COMPARISON_GRID
    normalise: bool = True
    prompt_style: PromptStyle = "auto"
    recipe: str = "default"
    select_m: bool = True
    trained_m: float = 1.0
    utility_margin: float = 1.0
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(epochs=2))
    lora_rank: int = 4
    projection_strength: float = 1.0
    manifold_variance: float = 0.9
    validation_fraction: float = 0.15
    n_bootstrap: int = 1000
    batch_size: int = 8
    # at most this many training / test pairs (PairDataset.subsample: answer-balanced, seed 0)
    max_train_pairs: int | None = None
    max_test_pairs: int | None = None
    memory_cap_mib: int | None = None  # stream valid activations to disk under this cap

    def __post_init__(self) -> None:
        for name, allowed in (("forms", tuple(FORMS)), ("methods", METHODS)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ConfigError(f"ComparisonConfig.{name}: unknown {unknown}; known: {allowed}")
        if self.trained_m not in self.multipliers or 0.0 not in self.multipliers:
            raise ConfigError(
                f"the multiplier grid {self.multipliers} must hold 0 and the trained m "
                f"{self.trained_m}"
            )
        if not self.seeds or not self.concepts or not self.forms:
            raise ConfigError("ComparisonConfig needs at least one concept, form and seed")
        if self.memory_cap_mib is not None and self.memory_cap_mib < 1:
            raise ConfigError(f"memory_cap_mib must be >= 1, got {self.memory_cap_mib}")
        if self.utility_margin < 0:
            raise ConfigError(f"utility_margin must be >= 0, got {self.utility_margin}")
        if self.site not in SITES:
            raise ConfigError(f"ComparisonConfig.site: unknown {self.site!r}; known: {SITES}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(
                f"ComparisonConfig.prompt_style: unknown {self.prompt_style!r}; "
                f"known: {PROMPT_STYLES}"
            )
        if self.recipe not in RECIPES:
            raise ConfigError(f"ComparisonConfig.recipe: unknown {self.recipe!r}; known: {RECIPES}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["training"] = self.training.to_dict()
        return data


@dataclass
class Comparison:
    """What :func:`run_comparison` produced: the sweep table of every method, the training
    histories (per epoch and per step), the interventions by (concept, form, method, seed),
    and the manifold projection used for the projected steer, per concept."""

    sweeps: pd.DataFrame
    epochs: pd.DataFrame
    steps: pd.DataFrame
    interventions: dict[tuple[str, str, str, int], Any]
    projections: dict[str, ManifoldProjection]
    layers: dict[str, int]
    states: dict[str, SiteStates] = field(default_factory=dict)
    validation_sweeps: pd.DataFrame = field(default_factory=pd.DataFrame)
    layer_sweeps: dict[str, pd.DataFrame] = field(default_factory=dict)
    prompt_styles: dict[str, PromptStyle] = field(default_factory=dict)
    # the pairs each concept ran on: prompts formatted, train and test subsampled
    datasets: dict[str, PairDataset] = field(default_factory=dict)


def run_comparison(
    model: TransformerBridge,
    config: ComparisonConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    datasets: dict[str, PairDataset] | None = None,
    projections: dict[str, ManifoldProjection] | None = None,
    cache: AnalysisCache | None = None,
) -> Comparison:
    """Train, sweep and collect every method; resumable through ``out_dir``.

    ``datasets`` (concept name -> pairs) overrides loading ``config.concepts`` by name;
    ``projections`` supplies already-fitted manifold projections per concept. With
    ``out_dir``, trained interventions are saved as artefacts (``artefacts/``) and sweeps are
    cached (``sweeps/``), so an interrupted comparison picks up where it stopped. ``cache``
    keeps the layer sweep, site scales and valid activations across runs
    (:class:`~workbench.analysis_cache.AnalysisCache`).
    """
    config = config or ComparisonConfig()
    out = Path(out_dir) if out_dir is not None else None
    datasets = datasets or {c: load_concept(c) for c in config.concepts}
    styles = {c: resolve_prompt_style(model, p, config.prompt_style) for c, p in datasets.items()}
    datasets = {c: format_prompts(model, p, styles[c]) for c, p in datasets.items()}
    projections = dict(projections or {})
    with stage("layer, site scales and manifold"):
        layers, layer_tables, scales = _choose_layers(
            model, datasets, config, projections, cache, progress
        )
    states = {}
    if set(config.methods) & set(NEEDS_STATES):
        with stage("valid states for the anchors"):
            states = {
                concept: SiteStates.collect(
                    model,
                    pairs.train,
                    site_hooks(config.site, layers[concept])[1],
                    config.manifold_variance,
                    config.batch_size,
                    cache=cache,
                )
                for concept, pairs in datasets.items()
            }
    tables, validation_tables, epochs, steps, interventions = [], [], [], [], {}
    sized_datasets = {
        c: p.subsample(config.max_train_pairs, config.max_test_pairs)  # answer-balanced
        for c, p in datasets.items()
    }
    prefixes = PrefixCache(model)  # states entering the layer, shared by every method
    for seed in config.seeds:  # seed-major, so a cut-short run has whole seeds
        for concept, sized in sized_datasets.items():
            layer = layers[concept]
            train, test = sized.train, sized.test
            fit, validation = validation_split(train, config.validation_fraction, seed)
            setting = _Setting(
                concept,
                layer,
                scales[concept],
                seed,
                projections.get(concept),
                states.get(concept),
                prefixes,
            )
            for method, form, intervention, history in _interventions(
                model, setting, fit, validation, config, out, progress
            ):
                labels = SweepLabels(method=method, seed=seed)
                options: dict[str, Any] = dict(
                    labels=labels,
                    batch_size=config.batch_size,
                    cache_dir=out / "sweeps" if out is not None else None,
                    progress=progress,
                    prefixes=prefixes,
                )
                with stage(f"sweep {concept} {form} {method} seed {seed}"):
                    tables.append(
                        run_sweep(model, test, intervention, config.multipliers, **options).assign(
                            concept=concept
                        )
                    )
                    if config.select_m:
                        validation_tables.append(
                            run_sweep(
                                model, validation, intervention, config.multipliers, **options
                            ).assign(concept=concept)
                        )
                interventions[(concept, form, method, seed)] = intervention
                if history is not None:
                    keys = dict(concept=concept, form=form, method=method, seed=seed)
                    epochs.append(history[0].assign(**keys))
                    steps.append(history[1].assign(**keys))
    return Comparison(
        sweeps=pd.concat(tables, ignore_index=True),
        epochs=pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(),
        steps=pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(),
        interventions=interventions,
        projections=projections,
        layers=layers,
        states=states,
        validation_sweeps=pd.concat(validation_tables, ignore_index=True)
        if validation_tables
        else pd.DataFrame(),
        layer_sweeps=layer_tables,
        prompt_styles=styles,
        datasets=sized_datasets,
    )


def _choose_layers(model, datasets, config: ComparisonConfig, projections, cache, progress):
    """Per concept: the layer (given, or recommended on validation pairs carved from train),
    the site's scales, and the manifold projection where ``split_projected`` needs one (added
    to ``projections``)."""
    layers: dict[str, int] = {}
    layer_tables: dict[str, pd.DataFrame] = {}
    scales: dict[str, SiteScales | None] = {}
    for concept, pairs in datasets.items():
        layer = config.layer
        if layer is None:
            layer, layer_tables[concept] = cached_layer_choice(
                cache, model, pairs, progress=progress
            )
            say(f"{concept}: layer {layer} (answer-balanced DiffMean on validation pairs)")
        layers[concept] = layer
        if config.normalise:
            scales[concept] = cached_site_scales(cache, model, config.site, layer)
        else:
            scales[concept] = None
        hook = site_hooks(config.site, layer)[1]
        if "split_projected" in config.methods and concept not in projections:
            projections[concept] = _site_projection(
                model, pairs.train, hook, config, cache, progress
            )
    return layers, layer_tables, scales


@dataclass(frozen=True)
class _Setting:
    """What one concept × seed of a comparison trains and sweeps at."""

    concept: str
    layer: int
    scales: SiteScales | None
    seed: int
    projection: ManifoldProjection | None
    states: SiteStates | None = None
    prefixes: PrefixCache | None = None  # shared by every sweep and training of the run


def _site_projection(
    model: TransformerBridge, train_pairs, hook: str, config: ComparisonConfig, cache, progress
):
    """The manifold's subspace at the intervention's output hook, from valid unsteered text
    (neutral sentences and the training answers)."""
    cap = config.memory_cap_mib * 2**20 if config.memory_cap_mib is not None else None
    valid = cached_valid_activations(
        cache,
        model,
        [hook],
        train_pairs,
        sources=("neutral", "answers"),
        batch_size=config.batch_size,
        memory_cap=cap,
        progress=progress,
    )
    manifold = valid.fit_manifold(ActivationManifold(n_components=config.manifold_variance), hook)
    return ManifoldProjection.from_manifold(manifold)


def _interventions(
    model: TransformerBridge, setting: _Setting, fit, validation, config, out, progress
):
    """Yield (method, form, intervention, (epochs, steps) or None) for one concept and seed."""
    yield from _direction_methods(model, setting, fit, config)
    wanted = set(config.methods)
    for form in config.forms:
        base = TrainingConfig.paper(form) if config.recipe == "paper" else config.training
        objectives = {
            "sft": SplitObjective.sft(),
            "split": base.objective,
            "reps": RepsObjective(),
        }
        needs_split = wanted & {"split", "split_projected", "split_clipped"}
        for method in ("sft", "split", "reps"):
            if method not in wanted and not (method == "split" and needs_split):
                continue
            training = TrainingConfig.from_dict(
                {**base.to_dict(), "objective": objectives[method].to_dict(), "seed": setting.seed}
            )
            intervention, history = _trained(
                model, setting, form, fit, validation, training, config, out, progress
            )
            if method in wanted:
                yield method, form, intervention, history
            if method == "split":
                yield from _split_variants(intervention, setting, form, config)
        if "split_clip_trained" in wanted:
            training = TrainingConfig.from_dict({**base.to_dict(), "seed": setting.seed})
            clipped, history = _trained(
                model, setting, form, fit, validation, training, config, out, progress, clip=True
            )
            yield "split_clip_trained", form, clipped, history


def _direction_methods(model: TransformerBridge, setting: _Setting, fit, config):
    """DiffMean and random vectors, and the anchors built around DiffMean."""
    wanted = set(config.methods)
    anchors = [m for m in ANCHORS if m in wanted]
    chosen = [m for m in VECTOR_ONLY if m in wanted and "vector" in config.forms]
    if anchors and "diff_of_means" not in chosen:
        chosen.insert(0, "diff_of_means")
    if not chosen:
        return
    extractors = {"diff_of_means": DEFAULT_EXTRACTOR, "random": "random"}
    vectors = concept_vectors(
        model,
        fit,
        [setting.layer],
        methods=[extractors[method] for method in chosen],
        normalise=setting.scales is not None,
        seed=setting.seed,
        batch_size=config.batch_size,
        site=config.site,
        positions=config.positions,
    )
    for method in chosen:
        if method in wanted and "vector" in config.forms:
            yield method, "vector", vectors[setting.layer, extractors[method]], None
    if anchors:
        if setting.states is None or setting.scales is None:
            raise ConfigError(f"{anchors} need the site's valid states and typical norm")
        diff_of_means = vectors[setting.layer, DEFAULT_EXTRACTOR]
        built = anchor_steers(model, diff_of_means, setting.states, setting.scales, anchors)
        for method, steer in built.items():
            yield method, steer.form, steer, None


def _split_variants(intervention, setting: _Setting, form: str, config):
    """SPLIT projected and SPLIT through the clip, from one trained SPLIT intervention."""
    wanted = set(config.methods)
    if "split_projected" in wanted:
        if setting.projection is None:
            raise ConfigError("split_projected needs the manifold projection of the site")
        projected = ProjectedIntervention(
            intervention, setting.projection, strength=config.projection_strength
        )
        yield "split_projected", form, projected, None
    if "split_clipped" in wanted:
        if setting.states is None:
            raise ConfigError("split_clipped needs the site's valid states")
        yield "split_clipped", form, clip_around(intervention, setting.states), None


def _trained(
    model: TransformerBridge,
    setting,
    form,
    fit,
    validation,
    training,
    config,
    out,
    progress,
    clip: bool = False,
):
    """Train (or load the saved artefact of) one intervention; returns it and its history.

    The artefact's name carries a hash of everything that decides the training, so a cached
    artefact is reused only for the same data, site, layer, units and hyper-parameters.
    """
    kwargs: dict[str, Any] = {"site": config.site, "positions": config.positions}
    if form == "lora":
        kwargs.update(rank=config.lora_rank, seed=training.seed)
    decided = {
        "model": model_provenance(model).to_dict(),
        "fit": PairDataset(fit).content_hash(),
        "validation": PairDataset(validation).content_hash(),
        "layer": setting.layer,
        "scales": setting.scales.to_dict() if setting.scales is not None else None,
        "intervention": kwargs,
        "training": training.to_dict(),
    }
    if clip:  # SPLIT trained through the manifold clip (absent otherwise: old names stay valid)
        decided["clip"] = True
    digest = stable_hash(decided)[:12]
    method = f"{training.method}-clip" if clip else training.method
    name = f"{safe_stem(setting.concept)}-{form}-{method}-seed{training.seed}-{digest}"
    path = out / "artefacts" / name if out is not None else None
    if path is not None and (path.parent / f"{name}.json").is_file():
        intervention, provenance = load_intervention(path, model)
        intervention.to(model_device(model))
        say(f"{form} {method} seed {training.seed}: trained artefact reused ({path.name})")
        details = provenance["details"]
        return intervention, (pd.DataFrame(details["epochs"]), pd.DataFrame(details["steps"]))
    torch.manual_seed(training.seed)
    intervention = FORMS[form].for_model(model, setting.layer, scales=setting.scales, **kwargs)
    if clip:
        if setting.states is None:
            raise ConfigError("split_clip_trained needs the site's valid states")
        intervention = clip_around(intervention, setting.states)
    label = f"train {setting.concept} {form} {method} seed {training.seed}"
    with stage(label):
        result = train_intervention(
            model,
            intervention,
            fit,
            validation,
            training,
            progress=progress,
            prefixes=setting.prefixes,
        )
    if path is not None:
        result.save(path, model, fit)
    return result.intervention, (result.epochs, result.steps)
