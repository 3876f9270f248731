"""Compare steering methods on one scale: DiffMean, random, SFT, SPLIT and SPLIT projected.

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

:func:`split_vs_sft` sets SPLIT against SFT per concept × form (paired over pairs): the
paper's claim is that SPLIT raises preference at equal or better utility.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.data.chat import PROMPT_STYLES, format_prompts, resolve_prompt_style
from workbench.data.concepts import load_concept
from workbench.data.pairs import PairDataset, validation_split
from workbench.directions.layer_sweep import layer_sweep
from workbench.errors import ConfigError
from workbench.hooks.sites import DEFAULT_SITE, SITES, SiteScales, site_hooks, site_scales
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.valid import collect_valid_activations
from workbench.measure import answer_bias
from workbench.measure.stats import pair_bootstrap
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.models.loading import model_device, model_provenance
from workbench.provenance import stable_hash
from workbench.steering.concept_vectors import DEFAULT_EXTRACTOR, concept_vectors
from workbench.steering.forms import FORMS
from workbench.steering.io import load_intervention
from workbench.steering.projected import ManifoldProjection, ProjectedIntervention
from workbench.training.objective import SplitObjective
from workbench.training.trainer import TrainingConfig, train_intervention

METHODS = ("diff_of_means", "random", "sft", "split", "split_projected")
VECTOR_ONLY = ("diff_of_means", "random")
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
    site: str = DEFAULT_SITE
    positions: str = "all"
    multipliers: tuple[float, ...] = COMPARISON_GRID
    normalise: bool = True
    prompt_style: str = "auto"
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
    validation_sweeps: pd.DataFrame = field(default_factory=pd.DataFrame)
    layer_sweeps: dict[str, pd.DataFrame] = field(default_factory=dict)
    prompt_styles: dict[str, str] = field(default_factory=dict)


def run_comparison(
    model,
    config: ComparisonConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    *,
    datasets: dict[str, PairDataset] | None = None,
    projections: dict[str, ManifoldProjection] | None = None,
) -> Comparison:
    """Train, sweep and collect every method; resumable through ``out_dir``.

    ``datasets`` (concept name -> pairs) overrides loading ``config.concepts`` by name;
    ``projections`` supplies already-fitted manifold projections per concept. With
    ``out_dir``, trained interventions are saved as artefacts (``artefacts/``) and sweeps are
    cached (``sweeps/``), so an interrupted comparison picks up where it stopped.
    """
    config = config or ComparisonConfig()
    out = Path(out_dir) if out_dir is not None else None
    datasets = datasets or {c: load_concept(c) for c in config.concepts}
    styles = {c: resolve_prompt_style(model, p, config.prompt_style) for c, p in datasets.items()}
    datasets = {c: format_prompts(model, p, styles[c]) for c, p in datasets.items()}
    projections = dict(projections or {})
    layers: dict[str, int] = {}
    layer_tables: dict[str, pd.DataFrame] = {}
    scales: dict[str, SiteScales | None] = {}
    for concept, pairs in datasets.items():
        layer = config.layer
        if layer is None:
            sweep = layer_sweep(model, pairs, methods=("balanced_diff_of_means",), progress=False)
            layer, layer_tables[concept] = sweep.recommended_layer, sweep.table
        layers[concept] = layer
        scales[concept] = site_scales(model, config.site, layer) if config.normalise else None
        hook = site_hooks(config.site, layer)[1]
        if "split_projected" in config.methods and concept not in projections:
            projections[concept] = _site_projection(model, pairs.train, hook, config)
    tables, validation_tables, epochs, steps, interventions = [], [], [], [], {}
    for seed in config.seeds:  # seed-major, so a cut-short run has whole seeds
        for concept, pairs in datasets.items():
            layer = layers[concept]
            sized = pairs.subsample(config.max_train_pairs, config.max_test_pairs)  # balanced
            train, test = sized.train, sized.test
            fit, validation = validation_split(train, config.validation_fraction, seed)
            setting = _Setting(concept, layer, scales[concept], seed, projections.get(concept))
            for method, form, intervention, history in _interventions(
                model, setting, fit, validation, config, out, progress
            ):
                labels = SweepLabels(method=method, seed=seed)
                sweep = dict(
                    labels=labels,
                    batch_size=config.batch_size,
                    cache_dir=out / "sweeps" if out is not None else None,
                    progress=progress,
                )
                tables.append(
                    run_sweep(model, test, intervention, config.multipliers, **sweep).assign(
                        concept=concept
                    )
                )
                if config.select_m:
                    validation_tables.append(
                        run_sweep(
                            model, validation, intervention, config.multipliers, **sweep
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
        validation_sweeps=pd.concat(validation_tables, ignore_index=True)
        if validation_tables
        else pd.DataFrame(),
        layer_sweeps=layer_tables,
        prompt_styles=styles,
    )


@dataclass(frozen=True)
class _Setting:
    """What one concept × seed of a comparison trains and sweeps at."""

    concept: str
    layer: int
    scales: SiteScales | None
    seed: int
    projection: ManifoldProjection | None


def _site_projection(model, train_pairs, hook: str, config: ComparisonConfig):
    """The manifold's subspace at the intervention's output hook, from valid unsteered text
    (neutral sentences and the training answers)."""
    valid = collect_valid_activations(
        model, [hook], train_pairs, sources=("neutral", "answers"), batch_size=config.batch_size
    )
    manifold = ActivationManifold(n_components=config.manifold_variance).fit(
        valid.fitting(hook), calibration=valid.held_out(hook)
    )
    return ManifoldProjection.from_manifold(manifold)


def _interventions(model, setting: _Setting, fit, validation, config, out, progress):
    """Yield (method, form, intervention, (epochs, steps) or None) for one concept and seed."""
    wanted = set(config.methods)
    layer, seed, scales = setting.layer, setting.seed, setting.scales
    where = dict(site=config.site, positions=config.positions)
    if wanted & set(VECTOR_ONLY) and "vector" in config.forms:
        extractors = {"diff_of_means": DEFAULT_EXTRACTOR, "random": "random"}
        chosen = [method for method in VECTOR_ONLY if method in wanted]
        vectors = concept_vectors(
            model,
            fit,
            [layer],
            methods=[extractors[method] for method in chosen],
            normalise=scales is not None,
            seed=seed,
            batch_size=config.batch_size,
            **where,
        )
        for method in chosen:
            yield method, "vector", vectors[layer, extractors[method]], None
    for form in config.forms:
        base = TrainingConfig.paper(form) if config.recipe == "paper" else config.training
        objectives = {"sft": SplitObjective.sft(), "split": base.objective}
        for method in ("sft", "split"):
            if method not in wanted and not (method == "split" and "split_projected" in wanted):
                continue
            training = TrainingConfig.from_dict(
                {**base.to_dict(), "objective": objectives[method].to_dict(), "seed": seed}
            )
            intervention, history = _trained(
                model, setting, form, fit, validation, training, config, out, progress
            )
            if method in wanted:
                yield method, form, intervention, history
            if method == "split" and "split_projected" in wanted:
                projected = ProjectedIntervention(
                    intervention, setting.projection, strength=config.projection_strength
                )
                yield "split_projected", form, projected, None


def _trained(model, setting, form, fit, validation, training, config, out, progress):
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
    digest = stable_hash(decided)[:12]
    name = f"{setting.concept}-{form}-{training.method}-seed{training.seed}-{digest}"
    path = out / "artefacts" / name if out is not None else None
    if path is not None and (path.parent / f"{name}.json").is_file():
        intervention, provenance = load_intervention(path)
        intervention.to(model_device(model))
        details = provenance["details"]
        return intervention, (pd.DataFrame(details["epochs"]), pd.DataFrame(details["steps"]))
    torch.manual_seed(training.seed)
    intervention = FORMS[form].for_model(model, setting.layer, scales=setting.scales, **kwargs)
    result = train_intervention(model, intervention, fit, validation, training, progress=progress)
    if path is not None:
        result.save(path, model, fit)
    return result.intervention, (result.epochs, result.steps)


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
        "pref_odds_sweep": float(pref[:, positive].mean()),
        "util_odds_sweep": _nanmean(util[:, positive]),
        "best_pref_within_margin": _best_within(pref, util, positive, columns.floor)[0],
    }
    return stats


def _differences(data: dict[str, np.ndarray], columns: _Columns) -> dict[str, float]:
    """SPLIT minus SFT, from [pairs, 2·grid] matrices (SPLIT's columns first)."""
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
            float((zero > 0).mean()),
            answer_bias.balanced_accuracy(zero, answers.positive),
        )
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


def split_vs_sft(
    sweeps: pd.DataFrame,
    trained_m: float = 1.0,
    utility_margin: float = 1.0,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """SPLIT minus SFT per concept × form, paired over test pairs, with 95% bootstrap CIs.

    ``holds`` is the paper's claim at the trained m: preference higher (CI above 0) with
    utility equal or better (the utility difference's CI reaches 0 or above).
    """
    baseline = _unsteered_utility(sweeps)
    rows = []
    for (concept, form), group in sweeps.groupby(["concept", "form"], sort=False):
        if not {"sft", "split"} <= set(group["method"]):
            continue
        split, grid, answers = _per_pair_data(group[group["method"] == "split"])
        sft, _, _ = _per_pair_data(group[group["method"] == "sft"])
        columns = _columns(grid, trained_m, baseline[concept] - utility_margin, answers)
        data = {
            k: np.concatenate([split[k], sft[k]], axis=1) if split[k].ndim == 2 else split[k]
            for k in split
        }
        row: dict[str, Any] = {"concept": concept, "form": form, "trained_m": trained_m}
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
    """Mean over defined values (undefined utility is NaN and counted separately)."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


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
        repeat = answer_bias.answers_repeat(list(positive), list(negative))
    else:
        positive = negative = np.array([""] * len(means), dtype=object)
        repeat = False
    return data, grid, _Answers(positive, negative, repeat)


def _best_within(pref, util, columns: Sequence[int], floor: float) -> tuple[float, int | None]:
    """(best mean PrefOdds among ``columns`` whose mean UtilOdds >= floor, that column)."""
    best, where = -np.inf, None
    for column in columns:
        util_mean = np.nanmean(util[:, column]) if np.isfinite(util[:, column]).any() else np.nan
        if util_mean >= floor and pref[:, column].mean() > best:
            best, where = float(pref[:, column].mean()), column
    return (best if np.isfinite(best) else np.nan), where
