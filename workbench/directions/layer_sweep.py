"""Which layer carries the concept? Validation separation along each direction, layer by layer.

The choice never reads the test split: the training pairs are divided into a fitting part and
a validation part (:func:`workbench.data.pairs.validation_split`); for every block and extraction
method the direction is fitted on the fitting part and the validation pairs are projected on
it. The tidy table has one row per (layer, method) with:

- ``auroc``: ROC AUC of the projections, positive vs negative answers;
- ``probe_accuracy``: accuracy of a threshold classifier on the projection (threshold: the
  midpoint of the two training class means);
- ``paired_accuracy``: share of held-out pairs whose positive projects above its negative;
- ``effect_size``: Cohen's d of the projections (pooled standard deviation).

The recommended layer maximises the validation effect size of the answer-balanced DiffMean
(plain DiffMean if the table has no balanced rows) among layers whose AUROC is within
``auroc_tolerance`` of the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from workbench.data.pairs import PairDataset, validation_split
from workbench.directions.capture import ActivationSet, capture_activations
from workbench.directions.extract import EXTRACTORS, paired_rows
from workbench.errors import ConfigError
from workbench.hooks.names import resid_post

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class LayerSweep:
    table: pd.DataFrame
    recommended_layer: int
    train: ActivationSet  # the fitting part of the training pairs
    validation: ActivationSet


def layer_sweep(
    model: TransformerBridge,
    pairs: PairDataset,
    layers: Sequence[int] | None = None,
    methods: Sequence[str] = tuple(EXTRACTORS),
    position_rule: str = "answer_mean",
    seed: int = 0,
    batch_size: int = 16,
    auroc_tolerance: float = 0.02,
    progress: bool = True,
    validation_fraction: float = 0.25,
) -> LayerSweep:
    """Sweep residual-stream layers (default: all) on the training pairs alone."""
    fit, validation = validation_split(pairs.train, validation_fraction, seed)
    if len(fit) < 2 or len(validation) < 2:
        raise ConfigError(
            f"layer_sweep needs at least 2 fitting and 2 validation pairs from the train split; "
            f"{len(pairs.train)} training pairs at validation_fraction {validation_fraction} "
            f"give {len(fit)} and {len(validation)}"
        )
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    unknown = [m for m in methods if m not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown direction methods {unknown}; choose from {list(EXTRACTORS)}")
    hooks = [resid_post(layer) for layer in layers]
    capture: dict[str, Any] = dict(
        position_rule=position_rule, batch_size=batch_size, progress=progress
    )
    train = capture_activations(model, fit, hooks, **capture)
    test = capture_activations(model, validation, hooks, **capture)

    rows = []
    for layer, hook in zip(layers, hooks):
        for method in methods:
            direction = EXTRACTORS[method](train, hook, seed)
            rows.append(
                {
                    "layer": layer,
                    "hook": hook,
                    "method": method,
                    **_scores(train, test, hook, direction),
                }
            )
    table = pd.DataFrame(rows)
    return LayerSweep(table, recommend_layer(table, auroc_tolerance), train, test)


def recommend_layer(table: pd.DataFrame, auroc_tolerance: float = 0.02) -> int:
    """The layer with the largest DiffMean effect size among near-best AUROC layers."""
    method = (
        "balanced_diff_of_means"
        if (table["method"] == "balanced_diff_of_means").any()
        else "diff_of_means"
    )
    diffmean = table[table["method"] == method]
    if diffmean.empty:
        raise ConfigError("the sweep table has no diff_of_means rows to recommend a layer from")
    good = diffmean[diffmean["auroc"] >= diffmean["auroc"].max() - auroc_tolerance]
    return int(good.loc[good["effect_size"].idxmax(), "layer"])


def _scores(train: ActivationSet, test: ActivationSet, hook: str, direction) -> dict[str, float]:
    unit = direction / direction.norm()
    train_pos = (train.select(hook, "positive") @ unit).numpy()
    train_neg = (train.select(hook, "negative") @ unit).numpy()
    test_pos = (test.select(hook, "positive") @ unit).numpy()
    test_neg = (test.select(hook, "negative") @ unit).numpy()
    threshold = (train_pos.mean() + train_neg.mean()) / 2
    values = np.r_[test_pos, test_neg]
    labels = np.r_[np.ones(len(test_pos)), np.zeros(len(test_neg))]
    pooled = np.sqrt((test_pos.var(ddof=1) + test_neg.var(ddof=1)) / 2)
    positive, negative, _ = paired_rows(test, hook)
    return {
        "auroc": float(roc_auc_score(labels, values)),
        "probe_accuracy": float(((values > threshold) == labels.astype(bool)).mean()),
        "paired_accuracy": float(((positive - negative) @ unit > 0).double().mean()),
        "effect_size": float((test_pos.mean() - test_neg.mean()) / pooled) if pooled > 0 else 0.0,
        "direction_norm": float(direction.norm()),
    }
