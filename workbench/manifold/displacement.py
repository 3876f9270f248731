"""How far each intervention pushes activations, along the concept and off the manifold.

For every pair, side, multiplier m and analysed hook (the intervention's layer and every later
one), over the answer tokens, with Δh = steered state - unsteered state:

- ``concept_projection``: mean of ω̂ᵀΔh, the displacement along the unit concept direction at
  that hook (the paper's α_p, measured rather than fitted);
- ``on_manifold`` / ``off_manifold``: mean norms of the parts of Δh inside and outside the
  hook's fitted PCA subspace;
- ``density_score`` and ``beyond_epsilon``: the steered states' mean density score and the share
  of them beyond ε (so measured validity D̂(m) is 1 - the mean of ``beyond_epsilon``);
- for every further estimate given in ``scorers`` (name -> hook -> estimator with
  ``nonconformity`` and ``within``, e.g. a :class:`~workbench.manifold.local.LocalManifold`):
  ``nonconformity_<name>`` and ``beyond_<name>``, so estimates are compared on the same states;
- failure diagnostics: ``norm_ratio`` (steered / unsteered residual norm, layer by layer),
  and, once per row at the output, ``kl_from_unsteered`` and ``entropy`` of the next-token
  distribution at the answer positions.

The table carries the sweep table's keys (pair_id, split, concept, form, method, layer, site,
m) plus ``side`` and ``hook``, so the two join.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError
from workbench.hooks.forward import states_and_final_norm, unembed
from workbench.hooks.names import hook_layer, resid_post
from workbench.manifold.estimator import ActivationManifold
from workbench.measure.sweeps import row_keys
from workbench.models.loading import model_device, model_provenance
from workbench.progress import bar
from workbench.steering.apply import steering
from workbench.steering.forms import Intervention
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@runtime_checkable
class Scorer(Protocol):
    """What a manifold estimate must say about states to be compared in the table."""

    def nonconformity(self, X: Any) -> np.ndarray: ...

    def within(self, X: Any) -> np.ndarray: ...


def downstream_hooks(model: TransformerBridge, layer: int) -> list[str]:
    """Residual-stream hooks of ``layer`` and every later block."""
    return [resid_post(i) for i in range(layer, model.cfg.n_layers)]


@torch.no_grad()
def displacement_table(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    intervention: Intervention,
    multipliers: Sequence[float],
    manifolds: Mapping[str, ActivationManifold],
    directions: Mapping[str, Tensor] | None = None,
    *,
    method: str = "",
    scorers: Mapping[str, Mapping[str, Scorer]] | None = None,
    sides: Sequence[str] = ("positive", "negative"),
    batch_size: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """The displacement and diagnostics table (see the module docstring)."""
    hooks = list(manifolds)
    for hook in hooks:
        layer = hook_layer(hook)
        if layer is None or layer < intervention.layer:
            raise ConfigError(
                f"{hook} is not at or after the intervention's block {intervention.layer}"
            )
    directions = dict(directions or {})
    scorers = dict(scorers or {})
    for name, per_hook in scorers.items():
        missing = [h for h in hooks if h not in per_hook]
        if missing:
            raise ConfigError(f"the estimate {name!r} has no fit at {missing[0]}")
    units = {h: (v / v.norm()).double().cpu() for h, v in directions.items()}
    device = model_device(model)
    prepend_bos = model_provenance(model).prepend_bos
    rows = []
    steps = [(s, i) for s in sides for i in range(0, len(pairs), batch_size)]
    for side, start in bar(steps, desc="displacement", enabled=progress):
        batch_pairs = list(pairs[start : start + batch_size])
        batch = encode_pairs(model.tokenizer, batch_pairs, side, prepend_bos=prepend_bos).to(device)
        roles = TokenRoles.from_batch(batch)
        forward: dict[str, Any] = dict(
            attention_mask=batch.attention_mask, position_ids=batch.position_ids
        )
        base, base_normed = states_and_final_norm(model, batch.input_ids, hooks, **forward)
        # next-token distributions at the answer positions only (not the whole vocabulary
        # at every position)
        base_logprobs = unembed(model, base_normed[batch.answer_mask]).double().log_softmax(-1)
        index = torch.arange(len(batch_pairs), device=device)[:, None]
        owner = index.expand_as(batch.answer_mask)[batch.answer_mask].cpu().numpy()
        for m in multipliers:
            with steering(model, [(intervention, float(m))], roles):
                steered, normed = states_and_final_norm(model, batch.input_ids, hooks, **forward)
            logprobs = unembed(model, normed[batch.answer_mask]).double().log_softmax(-1)
            # KL(steered || unsteered) of the next-token distributions, and the steered entropy
            kl = F.kl_div(base_logprobs, logprobs, log_target=True, reduction="none").sum(-1)
            entropy = Categorical(logits=logprobs).entropy()
            per_token = {"kl_from_unsteered": kl.cpu().numpy(), "entropy": entropy.cpu().numpy()}
            for hook in hooks:
                h = steered[hook][batch.answer_mask].double().cpu()
                h0 = base[hook][batch.answer_mask].double().cpu()
                metrics = {**_token_metrics(manifolds[hook], h, h0, units.get(hook)), **per_token}
                for name, per_hook in scorers.items():
                    metrics[f"nonconformity_{name}"] = per_hook[hook].nonconformity(h.numpy())
                    metrics[f"beyond_{name}"] = ~per_hook[hook].within(h.numpy())
                frame = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in metrics.items()})
                frame["row"] = owner
                keys = dict(side=side, hook=hook, analysis_layer=hook_layer(hook))
                for row, (values, count) in _per_pair(frame):
                    pair = batch_pairs[row]
                    rows.append(
                        {**row_keys(pair, intervention, method, m), **keys, "n_tokens": count}
                        | values
                    )
    return pd.DataFrame(rows)


def _token_metrics(manifold: ActivationManifold, h: Tensor, h0: Tensor, unit) -> dict:
    """Per answer token: the steered state's displacement on and off the manifold, density,
    whether it lies beyond ε, its norm ratio and its projection gain on the concept."""
    on, off = manifold.decompose((h - h0).numpy())
    return {
        "on_manifold": np.linalg.norm(on, axis=1),
        "off_manifold": np.linalg.norm(off, axis=1),
        "density_score": manifold.score_samples(h.numpy()),
        "beyond_epsilon": ~manifold.within(h.numpy()),
        "norm_ratio": (h.norm(dim=-1) / h0.norm(dim=-1).clamp(min=1e-12)).numpy(),
        "concept_projection": ((h - h0) @ unit).numpy()
        if unit is not None
        else np.full(len(h), np.nan),
    }


def _per_pair(frame: pd.DataFrame):
    """(row, (mean of every metric over the row's answer tokens, its token count))."""
    means, counts = frame.groupby("row").mean(), frame.groupby("row").size()
    for row, values in means.iterrows():
        yield int(row), (values.to_dict(), int(counts[row]))


def measured_validity(table: pd.DataFrame) -> pd.DataFrame:
    """D̂(m) per hook: the share of steered answer tokens within ε (token-weighted)."""
    weighted = table.assign(within=(1 - table["beyond_epsilon"]) * table["n_tokens"])
    grouped = weighted.groupby(["concept", "form", "method", "layer", "site", "hook", "m"])
    result = (grouped["within"].sum() / grouped["n_tokens"].sum()).rename("validity")
    return result.reset_index()
