"""Concept directions from contrast-pair activations, and the ``ConceptDirection`` value object.

Extractors (each a function of an :class:`ActivationSet` and a hook):

- ``diff_of_means``: mean(positive) - mean(negative) (DiffMean / CAA).
- ``balanced_diff_of_means``: DiffMean within each group of pairs that share their answer
  strings (concept answer " Yes" vs " No"), averaged over the groups, so the identity of the
  answer token cancels out and the direction carries the concept; with answers of their own per
  pair it equals DiffMean. The default for layer choice and steering.
- ``pca_of_differences``: first principal axis of the paired differences (uncentred, so it is
  the axis that the differences share), its sign set so positives project higher.
- ``logistic_probe``: the weight vector of a scikit-learn logistic-regression probe
  (standardised features, mapped back to activation space).
- ``random_direction``: a seeded random direction: the baseline every comparison includes.

Every method but the two DiffMeans is scaled to the balanced DiffMean norm ("matched norm"),
so a multiplier m means a displacement of the same size whichever method made the direction.

>>> direction = extract_direction(model, pairs.train, layer=6, method="diff_of_means")
>>> direction.save("runs/sentiment-L6"); ConceptDirection.load("runs/sentiment-L6", model)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from workbench.artefacts import load_artefact, save_artefact
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.directions.capture import ActivationSet, capture_activations
from workbench.errors import ConfigError, HookNameError
from workbench.hooks.names import hook_layer, resid_post
from workbench.models.loading import check_made_for, model_provenance
from workbench.provenance import Provenance

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Extractor = Callable[[ActivationSet, str, int], Float[Tensor, " d"]]


def paired_rows(acts: ActivationSet, hook: str) -> tuple[Tensor, Tensor, list[str]]:
    """(positive rows, negative rows, pair ids), aligned by pair id."""
    if acts.position_rule == "answer_tokens":
        raise ConfigError("paired rows need one row per pair and side, not answer_tokens")
    values = acts.select(hook)
    index = {(pid, side): i for i, (pid, side) in enumerate(zip(acts.pair_ids, acts.sides))}
    ids = [pid for pid, side in index if side == "positive" and (pid, "negative") in index]
    if not ids:
        raise ConfigError("no pair has both a positive and a negative row")
    positive = values[[index[(pid, "positive")] for pid in ids]]
    negative = values[[index[(pid, "negative")] for pid in ids]]
    return positive, negative, ids


def diff_of_means(acts: ActivationSet, hook: str, seed: int = 0) -> Float[Tensor, " d"]:
    """mean(positive rows) - mean(negative rows) at ``hook``."""
    return acts.select(hook, "positive").mean(0) - acts.select(hook, "negative").mean(0)


def balanced_diff_of_means(acts: ActivationSet, hook: str, seed: int = 0) -> Float[Tensor, " d"]:
    """The mean over answer groups of each group's mean paired difference (positive − negative)."""
    positive, negative, ids = paired_rows(acts, hook)
    if not acts.answer_groups:
        return (positive - negative).mean(0)
    labels = [acts.answer_groups.get(pid, pid) for pid in ids]
    differences = positive - negative
    means = [
        differences[[i for i, label in enumerate(labels) if label == group]].mean(0)
        for group in sorted(set(labels))
    ]
    return torch.stack(means).mean(0)


def pca_of_differences(acts: ActivationSet, hook: str, seed: int = 0) -> Float[Tensor, " d"]:
    """First principal axis of the paired differences, signed so positives project higher."""
    positive, negative, _ = paired_rows(acts, hook)
    differences = (positive - negative).double()
    _, _, vh = torch.linalg.svd(differences, full_matrices=False)
    axis = vh[0]
    if (differences @ axis).mean() < 0:
        axis = -axis
    return _matched(axis.float(), acts, hook)


def logistic_probe(acts: ActivationSet, hook: str, seed: int = 0) -> Float[Tensor, " d"]:
    """Weights of a logistic-regression probe separating positive from negative rows."""
    positive, negative = acts.select(hook, "positive"), acts.select(hook, "negative")
    features = torch.cat([positive, negative]).double().numpy()
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(C=1.0, max_iter=5000, random_state=seed)
    probe.fit(scaler.transform(features), labels)
    weights = probe.coef_[0] / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return _matched(torch.from_numpy(weights).float(), acts, hook)


def random_direction(acts: ActivationSet, hook: str, seed: int = 0) -> Float[Tensor, " d"]:
    """A seeded random direction with the DiffMean norm (the baseline)."""
    width = acts.select(hook).shape[-1]
    generator = torch.Generator().manual_seed(seed)
    return _matched(torch.randn(width, generator=generator), acts, hook)


def _matched(vector: Tensor, acts: ActivationSet, hook: str) -> Tensor:
    if acts.position_rule == "answer_tokens":  # no pairing of rows: the plain DiffMean norm
        return vector / vector.norm() * diff_of_means(acts, hook).norm()
    return vector / vector.norm() * balanced_diff_of_means(acts, hook).norm()


EXTRACTORS: dict[str, Extractor] = {
    "diff_of_means": diff_of_means,
    "balanced_diff_of_means": balanced_diff_of_means,
    "pca_of_differences": pca_of_differences,
    "logistic_probe": logistic_probe,
    "random": random_direction,
}


def paired_separation(acts: ActivationSet, hook: str, direction: Float[Tensor, " d"]) -> float:
    """Share of pairs whose positive row projects higher on ``direction`` than its negative."""
    positive, negative, _ = paired_rows(acts, hook)
    return float(((positive - negative) @ direction > 0).double().mean())


def mean_norm(acts: ActivationSet, hook: str) -> float:
    """Mean L2 norm of the rows at ``hook`` (the typical activation scale there)."""
    return float(torch.linalg.vector_norm(acts.activations[hook], dim=-1).mean())


@dataclass(frozen=True)
class ConceptDirection:
    """A direction in the activation space of one hook of one model, and how it was made.

    ``mean_resid_norm`` is the mean residual-stream norm at the direction's layer over the
    activations it was extracted from, so a multiplier can be given in units of the typical
    norm: ``direction.scaled_to(0.5)`` has half the typical residual norm.
    """

    vector: Float[Tensor, " d"]
    layer: int
    hook: str
    method: str
    mean_resid_norm: float
    provenance: Provenance

    def __post_init__(self) -> None:
        if self.vector.ndim != 1:
            raise ConfigError(f"a direction is a vector; got shape {tuple(self.vector.shape)}")
        if not torch.isfinite(self.vector).all() or float(self.vector.norm()) == 0.0:
            raise ConfigError(f"{self.method} direction at {self.hook} is zero or not finite")
        if hook_layer(self.hook) != self.layer:
            raise ConfigError(f"hook {self.hook!r} is not in block {self.layer}")

    @property
    def model_name(self) -> str:
        return self.provenance.model.name

    @property
    def numerics(self) -> str:
        return self.provenance.model.numerics

    @property
    def dataset_hash(self) -> str | None:
        return self.provenance.dataset_hash

    @property
    def seed(self) -> int | None:
        return self.provenance.seed

    @property
    def unit(self) -> Float[Tensor, " d"]:
        return self.vector / self.vector.norm()

    def scaled_to(self, fraction_of_mean_norm: float) -> Float[Tensor, " d"]:
        """The direction with norm ``fraction × mean residual-stream norm``."""
        return self.unit * fraction_of_mean_norm * self.mean_resid_norm

    def check_model(self, model: TransformerBridge) -> None:
        """Raise a clear error if ``model`` has no such hook or another width there."""
        if self.hook not in model.hook_dict:
            raise HookNameError(
                f"direction was made at {self.hook!r}, which this model "
                f"({model_provenance(model).name}) does not have"
            )
        widths = {"hook_resid_post": model.cfg.d_model, "hook_out": model.cfg.d_model}
        expected = next((w for suffix, w in widths.items() if self.hook.endswith(suffix)), None)
        if expected is not None and expected != self.vector.shape[0]:
            raise ConfigError(
                f"direction has width {self.vector.shape[0]} but {self.hook} of this model "
                f"({model_provenance(model).name}) has width {expected}"
            )

    def save(self, path: str | Path) -> Path:
        """``<path>.safetensors`` (the vector) + ``<path>.json`` (everything else)."""
        meta = {
            "layer": self.layer,
            "hook": self.hook,
            "method": self.method,
            "mean_resid_norm": self.mean_resid_norm,
            "provenance": self.provenance.to_dict(),
        }
        return save_artefact(path, {"vector": self.vector}, meta, kind="direction")

    @classmethod
    def load(
        cls, path: str | Path, model: TransformerBridge | None = None, other_model: bool = False
    ) -> ConceptDirection:
        """Load a saved direction; with ``model``, also check that it was made with that model
        (unless ``other_model``) and fits it."""
        tensors, meta = load_artefact(path, kind="direction")
        direction = cls(
            vector=tensors["vector"],
            layer=meta["layer"],
            hook=meta["hook"],
            method=meta["method"],
            mean_resid_norm=meta["mean_resid_norm"],
            provenance=Provenance.from_dict(meta["provenance"]),
        )
        if model is not None:
            check_made_for(direction.provenance.model, model, path, allow=other_model)
            direction.check_model(model)
        return direction


def direction_from_activations(
    acts: ActivationSet, hook: str, method: str = "balanced_diff_of_means", seed: int = 0
) -> ConceptDirection:
    """Extract a :class:`ConceptDirection` from captured activations.

    ``acts`` must also hold ``blocks.{layer}.hook_resid_post`` (for the typical norm).
    """
    if method not in EXTRACTORS:
        raise ConfigError(f"unknown direction method {method!r}; choose one of {list(EXTRACTORS)}")
    layer = hook_layer(hook)
    if layer is None:
        raise ConfigError(f"hook {hook!r} is not inside a block")
    resid = resid_post(layer)
    if resid not in acts.activations:
        raise HookNameError(
            f"activations need {resid!r} for the typical norm; captured {acts.hook_names}"
        )
    vector = EXTRACTORS[method](acts, hook, seed)
    provenance = Provenance(
        model=acts.provenance.model,
        method=method,
        dataset_hash=acts.provenance.dataset_hash,
        seed=seed,
        details={"hook": hook, "position_rule": acts.position_rule, "n_rows": len(acts.pair_ids)},
    )
    return ConceptDirection(vector, layer, hook, method, mean_norm(acts, resid), provenance)


def extract_direction(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair] | PairDataset,
    layer: int,
    method: str = "balanced_diff_of_means",
    hook: str | None = None,
    position_rule: str = "answer_mean",
    seed: int = 0,
    batch_size: int = 16,
) -> ConceptDirection:
    """Capture activations of ``pairs`` and extract a direction at ``hook`` (default: the
    residual stream after block ``layer``)."""
    resid = resid_post(layer)
    hook = hook or resid
    hooks = [resid] if hook == resid else [hook, resid]
    acts = capture_activations(
        model, pairs, hooks, position_rule=position_rule, batch_size=batch_size
    )
    return direction_from_activations(acts, hook, method, seed)
