"""Concept directions extracted from contrast-pair activations.

For now: difference of means (DiffMean / CAA), the paper's baseline. The other extractors
(PCA of paired differences, probes, random) and the ``ConceptDirection`` value object come
with the interventions (issue 3).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .activations import ActivationSet


def diff_of_means(acts: ActivationSet, hook: str) -> Float[Tensor, " d"]:
    """mean(positive rows) - mean(negative rows) at ``hook``."""
    return acts.select(hook, "positive").mean(0) - acts.select(hook, "negative").mean(0)


def paired_separation(acts: ActivationSet, hook: str, direction: Float[Tensor, " d"]) -> float:
    """Share of pairs whose positive row projects higher on ``direction`` than its negative."""
    positive = _by_pair(acts, hook, "positive")
    negative = _by_pair(acts, hook, "negative")
    common = sorted(positive.keys() & negative.keys())
    if not common:
        raise ValueError("no pair has both a positive and a negative row")
    unit = direction / direction.norm()
    wins = [float(positive[i] @ unit > negative[i] @ unit) for i in common]
    return sum(wins) / len(wins)


def _by_pair(acts: ActivationSet, hook: str, side: str) -> dict[str, Tensor]:
    if acts.position_rule == "answer_tokens":
        raise ValueError("paired separation needs one row per pair and side, not answer_tokens")
    values = acts.activations[hook]
    return {
        pid: values[i] for i, (pid, s) in enumerate(zip(acts.pair_ids, acts.sides)) if s == side
    }


def mean_norm(acts: ActivationSet, hook: str) -> float:
    """Mean L2 norm of the rows at ``hook`` (the typical activation scale there)."""
    return float(torch.linalg.vector_norm(acts.activations[hook], dim=-1).mean())
