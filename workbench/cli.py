"""The ``workbench`` command line.

``workbench study`` is the main job: on one concept and model it chooses the layer, fits the
valid manifold, trains SFT and SPLIT for each form next to DiffMean and random vectors, sweeps
them all on held-out pairs, fits the curves, measures displacement, and writes one
self-contained HTML report with the tidy tables and artefacts. ``compare``, ``curves`` and
``manifold`` run the larger single analyses behind the report's sections; ``claim`` is the designed
test of the manifold claim.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.concepts import DEFAULT_CONCEPT, shipped_concepts
from workbench.errors import ConfigError, WorkbenchError
from workbench.hooks.names import check_layer
from workbench.models.packaged import DEFAULT_MODEL

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class ComparisonDefaults:
    """The comparison's default concepts (kept here so the parser imports nothing heavy)."""

    concepts = ("extraversion", "optimism")


def _progress_options() -> argparse.ArgumentParser:
    """``--progress`` and ``--quiet``, taken by every command (:mod:`workbench.progress`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        choices=("auto", "bars", "lines", "quiet"),
        default="auto",
        help="bars on a terminal, plain timestamped lines otherwise (auto, the default)",
    )
    common.add_argument("--quiet", action="store_true", help="no progress output")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = _progress_options()
    study = commands.add_parser(
        "study",
        parents=[common],
        help="the whole pipeline on one concept, ending in one HTML report",
    )
    study.add_argument(
        "--concept", default=DEFAULT_CONCEPT, help=f"one of {shipped_concepts()} or a pair file"
    )
    study.add_argument("--model", default=DEFAULT_MODEL, help="model name (see `workbench models`)")
    _add_numerics_options(study)
    _add_memory_option(study)
    study.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    study.add_argument("--site", default="block", help="block (the paper's), mlp_out or resid")
    study.add_argument(
        "--prompt-style",
        default="auto",
        help="auto, plain, cue (append an answer cue) or chat (the chat template)",
    )
    study.add_argument("--recipe", default="default", help="default or paper (training recipe)")
    study.add_argument("--forms", nargs="+", default=["vector", "local_weight"])
    study.add_argument("--epochs", type=int, default=2, help="SFT / SPLIT / RePS epochs")
    study.add_argument("--train-pairs", type=int, default=40, help="pairs trained on")
    study.add_argument("--test-pairs", type=int, default=16, help="held-out pairs swept")
    study.add_argument("--bootstrap", type=int, default=200)
    study.add_argument("--no-umap", action="store_true", help="PCA view only (faster)")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--out", type=Path, default=Path("runs"), help="where results are written")
    study.add_argument("--numerics", choices=("raw", "compatibility"), default="raw")
    curves = commands.add_parser(
        "curves",
        parents=[common],
        help="sweep DiffMean vectors, fit preference/utility curves, report R²",
    )
    curves.add_argument("--concepts", nargs="+", default=["sentiment", "formality"])
    curves.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(curves)
    curves.add_argument("--site", choices=("block", "mlp_out", "resid"), default="block")
    curves.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    curves.add_argument("--bootstrap", type=int, default=100)
    curves.add_argument("--seed", type=int, default=0)
    curves.add_argument("--out", type=Path, default=Path("runs"))
    manifold = commands.add_parser(
        "manifold",
        parents=[common],
        help="off-manifold displacement of DiffMean steering vs the utility drop",
    )
    manifold.add_argument("--concepts", nargs="+", default=["sentiment", "formality"])
    manifold.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(manifold)
    manifold.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    manifold.add_argument("--density", choices=("gaussian", "knn", "mixture"), default="gaussian")
    manifold.add_argument("--components", type=float, default=0.9, help="variance share or count")
    manifold.add_argument("--split", default="test", help="pairs analysed (train, test or all)")
    manifold.add_argument("--seed", type=int, default=0)
    manifold.add_argument("--out", type=Path, default=Path("runs"))
    claim = commands.add_parser(
        "claim",
        parents=[common],
        help="the designed manifold-claim test: matched push, controlled off-manifold share",
    )
    claim.add_argument("--concepts", nargs="+", default=["sentiment", "extraversion"])
    claim.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(claim)
    claim.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    claim.add_argument("--test-pairs", type=int, default=16, help="at most this many")
    claim.add_argument(
        "--shares", nargs="+", type=float, default=None, help="off-manifold shares (0 to 1)"
    )
    claim.add_argument("--multipliers", nargs="+", type=float, default=None, help="must hold 0")
    claim.add_argument("--bootstrap", type=int, default=1000)
    claim.add_argument("--seed", type=int, default=0)
    claim.add_argument("--out", type=Path, default=Path("runs"))
    failure = commands.add_parser(
        "failure",
        parents=[common],
        help="why a persona vector cannot flip answers item by item (probe, shifts, first order)",
    )
    failure.add_argument("--concept", default="extraversion", help="a concept whose answers repeat")
    failure.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(failure)
    failure.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    failure.add_argument("--test-pairs", type=int, default=None, help="at most this many")
    failure.add_argument("--seed", type=int, default=0)
    failure.add_argument("--out", type=Path, default=Path("runs"))
    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="DiffMean, random, SFT, SPLIT and SPLIT projected, for each form",
    )
    compare.add_argument("--concepts", nargs="+", default=list(ComparisonDefaults.concepts))
    compare.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(compare)
    _add_memory_option(compare)
    compare.add_argument("--forms", nargs="+", default=["vector", "lora", "local_weight"])
    compare.add_argument(
        "--methods", nargs="+", default=None, help="default: every method (see the README)"
    )
    compare.add_argument("--site", default="block", help="block (the paper's), mlp_out or resid")
    compare.add_argument("--prompt-style", default="auto", help="auto, plain, cue or chat")
    compare.add_argument("--recipe", default="default", help="default or paper")
    compare.add_argument("--train-pairs", type=int, default=None, help="at most this many")
    compare.add_argument("--test-pairs", type=int, default=None, help="at most this many")
    compare.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    compare.add_argument("--layer", type=int, default=None, help="block (default: recommended)")
    compare.add_argument("--epochs", type=int, default=2)
    compare.add_argument("--margin", type=float, default=1.0, help="utility margin (nats)")
    compare.add_argument("--bootstrap", type=int, default=1000)
    compare.add_argument("--out", type=Path, default=Path("runs"))
    compare.add_argument(
        "--generations",
        type=int,
        default=0,
        help="continue this many held-out prompts per concept under every method (0: none)",
    )
    compare.add_argument("--new-tokens", type=int, default=32, help="tokens per continuation")
    baseline = commands.add_parser(
        "baseline",
        parents=[common],
        help="the unsteered model on each concept: accuracy beside its baselines",
    )
    baseline.add_argument("--concepts", nargs="+", default=shipped_concepts())
    baseline.add_argument("--model", default=DEFAULT_MODEL)
    _add_numerics_options(baseline)
    baseline.add_argument("--prompt-style", default="auto", help="auto, plain, cue or chat")
    baseline.add_argument("--split", default="all", help="train, test or all")
    grid = commands.add_parser(
        "grid",
        parents=[common],
        help="concepts x layers x methods x forms x seeds as Ray tasks, one shard a cell",
    )
    grid.add_argument("--model", default=DEFAULT_MODEL)
    grid.add_argument("--concepts", nargs="+", default=["sentiment"])
    grid.add_argument("--layers", nargs="+", type=int, required=True)
    grid.add_argument("--methods", nargs="+", default=["diff_of_means", "random", "split"])
    grid.add_argument("--forms", nargs="+", default=["vector"])
    grid.add_argument("--seeds", nargs="+", type=int, default=[0])
    grid.add_argument("--multipliers", nargs="+", type=float, default=None, help="hold 0 and 1")
    grid.add_argument("--train-pairs", type=int, default=48)
    grid.add_argument("--test-pairs", type=int, default=24)
    grid.add_argument("--epochs", type=int, default=2)
    grid.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    grid.add_argument("--address", default=None, help="a Ray cluster (default: local ray.init())")
    grid.add_argument("--retries", type=int, default=3, help="retries of a killed cell's task")
    grid.add_argument("--out", type=Path, default=Path("runs/grid"))
    commands.add_parser(
        "models", parents=[common], help="list the models that load without network"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workbench.progress import configure

    configure("quiet" if args.quiet else args.progress)
    if args.command == "models":
        from workbench.models.loading import available_models

        print("\n".join(available_models()))
        return 0
    try:
        commands = {
            "compare": _compare,
            "grid": _grid,
            "claim": _claim,
            "failure": _failure,
            "curves": _curves,
            "manifold": _manifold,
            "study": _study,
            "baseline": _baseline,
        }
        _check_choices(args)
        return commands[args.command](args)
    except WorkbenchError as error:  # input the workbench refuses; anything else is a bug
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"workbench {args.command}: error: {message}", file=sys.stderr)
        return 2


def _check_choices(args: argparse.Namespace) -> None:
    """Refuse an unknown --site or --prompt-style in one line, before anything loads."""
    from workbench.data.chat import PROMPT_STYLES
    from workbench.hooks.sites import SITES

    for flag, value, allowed in (
        ("--site", getattr(args, "site", None), SITES),
        ("--prompt-style", getattr(args, "prompt_style", None), PROMPT_STYLES),
    ):
        if value is not None and value not in allowed:
            raise ConfigError(f"unknown {flag} {value!r}; choose one of {', '.join(allowed)}")


def _check_layer(args: argparse.Namespace, model: TransformerBridge) -> None:
    if args.layer is not None:
        check_layer(model, args.layer, "--layer")


def _loaded(args: argparse.Namespace) -> TransformerBridge:
    """The model of ``--model`` with its numerics options, ``--layer`` checked against it."""
    from workbench.models.loading import load_model

    model = load_model(args.model, **_model_options(args))
    _check_layer(args, model)
    return model


def _baseline(args: argparse.Namespace) -> int:
    from workbench.data.concepts import load_concept
    from workbench.measure.unsteered import format_baselines, unsteered_baselines
    from workbench.models.loading import load_model

    if args.split not in ("train", "test", "all"):
        raise ConfigError(f"--split must be train, test or all, got {args.split!r}")
    datasets = {c: load_concept(c) for c in args.concepts}  # fail before the model loads
    model = load_model(args.model, **_model_options(args))
    table = unsteered_baselines(model, datasets, args.prompt_style, args.split)
    print(f"unsteered {args.model}, {args.split} pairs\n" + format_baselines(table))
    return 0


def _grid(args: argparse.Namespace) -> int:
    from workbench.pipelines.grid import GridSettings, grid_cells, run_grid

    options: dict[str, Any] = {"multipliers": tuple(args.multipliers)} if args.multipliers else {}
    settings = GridSettings(  # validates before Ray starts
        model=args.model,
        concepts=tuple(args.concepts),
        layers=tuple(args.layers),
        methods=tuple(args.methods),
        forms=tuple(args.forms),
        seeds=tuple(args.seeds),
        train_pairs=args.train_pairs,
        test_pairs=args.test_pairs,
        epochs=args.epochs,
        dtype=args.dtype,
        **options,
    )
    print(f"[workbench] grid of {len(grid_cells(settings))} cells -> {args.out}/", file=sys.stderr)
    result = run_grid(settings, args.out, address=args.address, retries=args.retries)
    for cell, error in result.failed.items():
        print(f"cell {cell} failed: {error}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} cells failed; run the same command again to complete them")
        return 1
    print(f"{result.table['cell'].nunique()} cells, {len(result.table)} rows -> {args.out}/")
    return 0


def _add_memory_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-cap-mib",
        type=int,
        default=None,
        help="stream valid activations to disk in shards under this cap (default: in memory)",
    )


def _add_numerics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="model dtype (default: bfloat16 on a GPU, float32 on CPU); log-odds stay fp32",
    )
    parser.add_argument(
        "--attn-implementation",
        choices=("eager", "sdpa"),
        default=None,
        help="attention kernel (default: sdpa on a GPU, eager on CPU)",
    )


def _model_options(args: argparse.Namespace) -> dict:
    return {"dtype": args.dtype, "attn_implementation": args.attn_implementation}


def _study(args: argparse.Namespace) -> int:
    from workbench.analysis_cache import AnalysisCache
    from workbench.artefacts import safe_stem
    from workbench.data.concepts import load_concept
    from workbench.models.loading import load_model
    from workbench.pipelines.study import StudySettings, run_study
    from workbench.training.summary import format_comparison

    settings = StudySettings(  # validates forms, site and sizes before anything loads
        layer=args.layer,
        site=args.site,
        prompt_style=args.prompt_style,
        recipe=args.recipe,
        forms=tuple(args.forms),
        epochs=args.epochs,
        train_pairs=args.train_pairs,
        test_pairs=args.test_pairs,
        n_bootstrap=args.bootstrap,
        umap=not args.no_umap,
        seed=args.seed,
        memory_cap_mib=args.memory_cap_mib,
    )
    dataset = load_concept(args.concept)  # cheap, and fails before the model loads
    model = load_model(args.model, numerics=args.numerics, **_model_options(args))
    _check_layer(args, model)
    name = dataset.name or Path(args.concept).stem
    model_name = safe_stem(args.model.replace("/", "_"))
    out = args.out / f"study-{safe_stem(name)}-{model_name}"
    print(f"[workbench] study of {dataset!r} on {args.model} -> {out}/", file=sys.stderr)
    result = run_study(model, dataset, settings, out, cache=AnalysisCache(args.out / "cache"))
    print(
        f"model {args.model}, concept {name!r}, layer {result.layer}; held-out pairs at the "
        f"trained m = 1:\n"
        + format_comparison(result.tables["comparison"])
        + "\nat each method's m chosen on validation pairs:\n"
        + format_comparison(result.tables["comparison_validated_m"])
        + f"\nreport: {result.report} ({result.seconds:.0f} s); tables: {out}/tables/"
    )
    return 0


def _curves(args: argparse.Namespace) -> int:
    import pandas as pd

    from workbench.data.concepts import load_concept
    from workbench.models.loading import load_model, model_provenance
    from workbench.pipelines.curves import concept_curves, format_r2_table

    for concept in args.concepts:
        load_concept(concept)  # fail on a bad name before the model loads
    model = load_model(args.model, **_model_options(args))
    _check_layer(args, model)
    out = args.out / f"curves-{args.model.replace('/', '_')}-{args.site}"
    sweeps, fits = [], []
    for concept in args.concepts:
        table, fit = concept_curves(
            model,
            concept,
            site=args.site,
            layer=args.layer,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            cache_dir=args.out / "cache",
        )
        sweeps.append(table.assign(concept=concept))
        fits.append(fit)
    fit_table = pd.concat(fits, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    from workbench.atomic import write_table

    write_table(pd.concat(sweeps, ignore_index=True), out / "sweep.parquet")
    fits = fit_table.assign(model=json.dumps(model_provenance(model).to_dict()))
    write_table(fits, out / "fits.csv")
    print(
        f"DiffMean steering vector at the {args.site} site, model {args.model}; fitted on "
        f"per-m means of the train split, R² on train (bootstrap 95% CI) and held-out pairs\n"
        + format_r2_table(fit_table)
        + f"\ntables: {out}/ (sweep.parquet, fits.csv)"
    )
    return 0


def _manifold(args: argparse.Namespace) -> int:
    from workbench.data.concepts import load_concept
    from workbench.pipelines.manifold import SPLITS, manifold_analysis

    if args.split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}")
    datasets = {c: load_concept(c) for c in args.concepts}  # fail before the model loads
    model = _loaded(args)
    out = args.out / f"manifold-{args.model.replace('/', '_')}"
    analysis = manifold_analysis(
        model,
        datasets,
        layer=args.layer,
        split=args.split,
        components=args.components,
        density=args.density,
        seed=args.seed,
        cache_dir=args.out / "cache",
    )
    analysis.write(out)
    print(analysis.describe() + f"\ntables: {out}/ ({', '.join(analysis.files)})")
    return 0


def _failure(args: argparse.Namespace) -> int:
    from workbench.data.concepts import load_concept
    from workbench.measure.item_shift import answer_labels
    from workbench.pipelines.failure import steering_failure

    pairs = load_concept(args.concept)  # fail on a bad name or free text before the model loads
    answer_labels([p.positive for p in pairs], [p.negative for p in pairs])
    model = _loaded(args)
    out = args.out / f"failure-{args.model.replace('/', '_')}-{pairs.name}"
    failure = steering_failure(
        model,
        pairs,
        layer=args.layer,
        test_pairs=args.test_pairs,
        seed=args.seed,
        cache_dir=args.out / "cache",
    )
    failure.write(out)
    print(failure.describe() + f"\ntables: {out}/ (probe.csv, shifts.csv, failure.json, figure)")
    return 0


def _claim(args: argparse.Namespace) -> int:
    from workbench.data.concepts import load_concept
    from workbench.models.loading import load_model
    from workbench.pipelines.claim import FILES, ClaimSettings, claim_test

    settings = ClaimSettings(  # validates the grid before the model loads
        layer=args.layer,
        max_test_pairs=args.test_pairs,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    if args.multipliers is not None or args.shares is not None:
        settings = replace(
            settings,
            multipliers=tuple(args.multipliers or settings.multipliers),
            shares=tuple(args.shares or settings.shares),
        )
    datasets = {c: load_concept(c) for c in args.concepts}
    model = load_model(args.model, **_model_options(args))
    _check_layer(args, model)
    out = args.out / f"claim-{args.model.replace('/', '_')}"
    result = claim_test(model, datasets, settings, cache_dir=args.out / "cache")
    result.write(out)
    print(result.describe() + f"\ntables: {out}/ ({', '.join(FILES)})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from workbench.analysis_cache import AnalysisCache
    from workbench.data.concepts import load_concept
    from workbench.models.loading import load_model
    from workbench.pipelines.compare import FILES, compare_methods
    from workbench.training.comparison import METHODS, ComparisonConfig
    from workbench.training.trainer import TrainingConfig

    config = ComparisonConfig(  # validates forms, grid and margin before the model loads
        concepts=tuple(args.concepts),
        forms=tuple(args.forms),
        methods=tuple(args.methods) if args.methods else METHODS,
        seeds=tuple(args.seeds),
        layer=args.layer,
        site=args.site,
        prompt_style=args.prompt_style,
        recipe=args.recipe,
        utility_margin=args.margin,
        training=TrainingConfig(epochs=args.epochs),
        n_bootstrap=args.bootstrap,
        max_train_pairs=args.train_pairs,
        max_test_pairs=args.test_pairs,
        memory_cap_mib=args.memory_cap_mib,
    )
    for concept in args.concepts:
        load_concept(concept)
    model = load_model(args.model, **_model_options(args))
    _check_layer(args, model)
    out = args.out / f"compare-{args.model.replace('/', '_')}"
    report = compare_methods(
        model,
        config,
        out,
        AnalysisCache(args.out / "cache"),
        generations=args.generations,
        max_new_tokens=args.new_tokens,
    )
    report.write(out, model)
    print(report.describe(args.model) + f"\ntables: {out}/ ({', '.join(FILES)}, training_*.csv)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
