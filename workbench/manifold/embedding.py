"""Where steered states land relative to the valid manifold, in 2-D coordinates for figures.

:func:`activation_shift` runs a set of prompts + answers unsteered and at each m, keeps the
answer-token states at the intervention's output hook, and maps valid and steered states into
two 2-D views: the manifold's first two PCA coordinates (linear, faithful to distances along
them) and a UMAP embedding fitted on valid and steered states together (non-linear, shows
whether steered states leave the valid cloud). Also per-token projections of a text on a
concept direction, for coloured-text views.

>>> shift = activation_shift(model, manifold, vector, pairs[:4], (0, 2, 4, 8), valid_states)
>>> activation_shift_figure(shift.valid, shift.steered, shift.hover, direction=shift.direction)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from workbench.data.encoding import encode_pairs, encode_texts
from workbench.data.pairs import ContrastPair
from workbench.hooks.forward import run_batch_with_cache
from workbench.models.loading import model_device, model_provenance
from workbench.steering.apply import steering
from workbench.steering.forms import Intervention
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass
class ActivationShift:
    """2-D coordinates of valid and steered states per view (``"PCA"``, ``"UMAP"``)."""

    valid: dict[str, np.ndarray]
    steered: dict[str, dict[float, np.ndarray]]
    hover: list[str]
    direction: dict[str, np.ndarray]


@torch.no_grad()
def steered_answer_states(
    model: TransformerBridge,
    intervention: Intervention,
    pairs: Sequence[ContrastPair],
    multipliers: Sequence[float],
    side: str = "positive",
) -> tuple[dict[float, np.ndarray], list[str]]:
    """Answer-token states at the intervention's output hook for each m, and hover labels."""
    hook = intervention.hook_names[1]
    device = model_device(model)
    batch = encode_pairs(
        model.tokenizer, list(pairs), side, prepend_bos=model_provenance(model).prepend_bos
    ).to(device)
    mask = batch.answer_mask
    states = {}
    for m in multipliers:
        with steering(model, [(intervention, float(m))], TokenRoles.from_batch(batch)):
            cache = run_batch_with_cache(model, batch, [hook], intervention.layer + 1)
        states[float(m)] = cache[hook][mask].double().cpu().numpy()
    rows, cols = mask.nonzero(as_tuple=True)
    hover = [
        f"{html.escape(pairs[int(r)].prompt)} ⟶ <b>"
        f"{html.escape(model.tokenizer.decode([int(batch.input_ids[r, c])]))}</b>"
        for r, c in zip(rows.tolist(), cols.tolist())
    ]
    return states, hover


def activation_shift(
    model: TransformerBridge,
    manifold,
    intervention: Intervention,
    pairs: Sequence[ContrastPair],
    multipliers: Sequence[float],
    valid_states: np.ndarray | Tensor,
    *,
    concept_direction: np.ndarray | Tensor | None = None,
    max_valid: int = 1500,
    umap: bool = True,
    seed: int = 0,
) -> ActivationShift:
    """Valid and steered states in PCA (and UMAP) coordinates; see the module docstring."""
    valid = np.asarray(valid_states, dtype=np.float64)
    if len(valid) > max_valid:
        valid = valid[np.random.default_rng(seed).choice(len(valid), max_valid, replace=False)]
    steered, hover = steered_answer_states(model, intervention, pairs, multipliers)
    views: dict[str, dict] = {"PCA": {}}
    valid_2d = {"PCA": manifold.transform(valid)[:, :2]}
    for m, states in steered.items():
        views["PCA"][m] = manifold.transform(states)[:, :2]
    direction = {}
    if concept_direction is not None:
        unit = np.asarray(concept_direction, dtype=np.float64)
        unit = unit / np.linalg.norm(unit)
        start = manifold.transform(manifold.pca_.mean_[None])[0, :2]
        reach = 2 * valid_2d["PCA"].std(axis=0).max()
        step = manifold.pca_.components_[:2] @ unit
        direction["PCA"] = np.stack(
            [start, start + reach * step / max(np.linalg.norm(step), 1e-12)]
        )
    if umap:
        from umap import UMAP

        ms = list(steered)
        stacked = np.concatenate([valid, *[steered[m] for m in ms]])
        reducer = UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1)
        embedded = reducer.fit_transform(manifold.transform(stacked))
        valid_2d["UMAP"] = embedded[: len(valid)]
        offsets = np.cumsum([len(valid)] + [len(steered[m]) for m in ms])
        views["UMAP"] = {m: embedded[offsets[i] : offsets[i + 1]] for i, m in enumerate(ms)}
    return ActivationShift(valid_2d, views, hover, direction)


@torch.no_grad()
def token_projections(
    model: TransformerBridge,
    texts: Sequence[str],
    direction: np.ndarray | Tensor,
    hook: str,
    interventions: Sequence[tuple[Intervention, float]] = (),
) -> tuple[list[list[str]], list[np.ndarray]]:
    """(tokens, projection of each token's state at ``hook`` on the unit ``direction``) per text."""
    unit = torch.as_tensor(np.asarray(direction), dtype=torch.float64)
    unit = unit / unit.norm()
    device = model_device(model)
    batch = encode_texts(
        model.tokenizer, list(texts), prepend_bos=model_provenance(model).prepend_bos
    ).to(device)
    layer = int(hook.split(".")[1])
    with steering(model, interventions, TokenRoles.from_batch(batch)):
        cache = run_batch_with_cache(model, batch, [hook], layer + 1)
    tokens, values = [], []
    for row in range(len(texts)):
        mask = batch.prompt_mask[row]
        ids = batch.input_ids[row][mask].tolist()
        tokens.append([model.tokenizer.decode([i]) for i in ids])
        values.append((cache[hook][row][mask].double().cpu() @ unit).numpy())
    return tokens, values
