"""Collect activations at any hooks, for prompts and answers, under a position rule.

Position rules:

- ``last_prompt``: the last prompt token (one row per pair; the answer is not run).
- ``answer_mean``: the mean over the answer tokens (one row per pair and side).
- ``answer_tokens``: every answer token (one row per token; ``token_index`` says which).

Batches are padded (left or right) with attention masks and mask-derived positions, so the
result does not depend on batch size or padding side. Work is chunked: only one batch of full
activations is alive at a time, and what is kept is the reduced rows, on the CPU.

>>> acts = capture_activations(model, dataset.train, ["blocks.3.hook_resid_post"])
>>> acts.select("blocks.3.hook_resid_post", side="positive").shape
torch.Size([64, 640])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.artefacts import load_artefact, save_artefact
from workbench.data.encoding import EncodedBatch, encode_pairs
from workbench.data.pairs import ContrastPair, PairDataset, answers_repeat
from workbench.errors import ConfigError, HookNameError
from workbench.hooks.forward import run_batch_with_cache
from workbench.hooks.names import check_hook_names, stop_layer_for
from workbench.models.loading import model_device, model_provenance
from workbench.progress import bar
from workbench.provenance import Provenance, stable_hash

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PositionRule = Literal["last_prompt", "answer_mean", "answer_tokens"]
POSITION_RULES: tuple[str, ...] = ("last_prompt", "answer_mean", "answer_tokens")


@dataclass
class ActivationSet:
    """Activations per hook, one row per (pair, side) or per answer token, with row labels."""

    activations: dict[str, Float[Tensor, "rows d"]]
    pair_ids: list[str]
    sides: list[str]
    token_index: Int[Tensor, " rows"]  # position within the answer; -1 for per-pair rows
    token_ids: Int[Tensor, " rows"]  # the token at that position; -1 for per-pair rows
    position_rule: str
    provenance: Provenance
    # pair id -> its answer group ("Yes|No"): pairs sharing their answer strings, where answers
    # repeat; empty when every pair has answers of its own (see balanced_diff_of_means)
    answer_groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows = len(self.pair_ids)
        for name, values in self.activations.items():
            if values.ndim != 2 or values.shape[0] != rows:
                raise ConfigError(
                    f"activations at {name!r} have shape {tuple(values.shape)}, "
                    f"expected ({rows}, d)"
                )
        if len(self.sides) != rows or len(self.token_index) != rows or len(self.token_ids) != rows:
            raise ConfigError(
                "pair_ids, sides, token_index and token_ids must all have one entry per row"
            )

    @property
    def hook_names(self) -> list[str]:
        return list(self.activations)

    def select(self, hook: str, side: str | None = None) -> Float[Tensor, "rows d"]:
        """Rows of one hook, optionally of one side (``positive``, ``negative``, ``prompt``)."""
        if hook not in self.activations:
            raise HookNameError(f"no activations at {hook!r}; captured: {self.hook_names}")
        values = self.activations[hook]
        if side is None:
            return values
        keep = torch.tensor([s == side for s in self.sides], dtype=torch.bool)
        if not keep.any():
            raise HookNameError(
                f"no rows of side {side!r}; sides present: {sorted(set(self.sides))}"
            )
        return values[keep]

    def save(self, path: str | Path) -> Path:
        """Save as ``<path>.safetensors`` plus ``<path>.json`` (row labels and provenance)."""
        tensors = {f"act/{name}": t for name, t in self.activations.items()}
        tensors.update(token_index=self.token_index, token_ids=self.token_ids)
        meta = {
            "position_rule": self.position_rule,
            "hook_names": self.hook_names,
            "pair_ids": self.pair_ids,
            "sides": self.sides,
            "answer_groups": self.answer_groups,
            "provenance": self.provenance.to_dict(),
        }
        return save_artefact(path, tensors, meta, kind="activations")

    @classmethod
    def load(cls, path: str | Path) -> ActivationSet:
        tensors, meta = load_artefact(path, kind="activations")
        return cls(
            activations={name: tensors[f"act/{name}"] for name in meta["hook_names"]},
            pair_ids=meta["pair_ids"],
            sides=meta["sides"],
            token_index=tensors["token_index"],
            token_ids=tensors["token_ids"],
            position_rule=meta["position_rule"],
            provenance=Provenance.from_dict(meta["provenance"]),
            answer_groups=meta.get("answer_groups", {}),
        )


def answer_groups(pairs: Sequence[ContrastPair]) -> dict[str, str]:
    """pair id -> ``"<positive>|<negative>"`` where answer strings repeat across pairs, else {}."""
    if not answers_repeat([p.positive for p in pairs], [p.negative for p in pairs]):
        return {}
    return {p.id: f"{p.positive.strip()}|{p.negative.strip()}" for p in pairs}


def capture_activations(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    hook_names: Sequence[str],
    *,
    position_rule: str = "answer_mean",
    sides: Sequence[str] = ("positive", "negative"),
    batch_size: int = 16,
    padding_side: str = "right",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> ActivationSet:
    """Run ``pairs`` through ``model`` and keep the activations at ``hook_names``.

    Rows are ordered side by side (all positives, then all negatives), pairs in input order.
    ``last_prompt`` ignores ``sides`` and gives one ``"prompt"`` row per pair.
    """
    pairs = list(pairs)
    hook_names, sides = _checked(model, pairs, hook_names, position_rule, sides, batch_size)
    prepend_bos = model_provenance(model).prepend_bos
    stop_at = stop_layer_for(hook_names, model.cfg.n_layers)
    device = model_device(model)
    chunks: dict[str, list[Tensor]] = {name: [] for name in hook_names}
    rows = _Rows()
    steps = [(side, start) for side in sides for start in range(0, len(pairs), batch_size)]
    for side, start in bar(steps, desc="activations", enabled=progress):
        batch_pairs = pairs[start : start + batch_size]
        encoded = encode_pairs(
            model.tokenizer,
            batch_pairs,
            side,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            max_length=getattr(model.cfg, "n_ctx", None),
        ).to(device)
        cache = run_batch_with_cache(model, encoded, hook_names, stop_at)
        for name in hook_names:
            chunks[name].append(_reduce(cache[name], encoded, position_rule).to("cpu", dtype))
        rows.add(batch_pairs, side, encoded, position_rule)
        del cache
    provenance = Provenance(
        model=model_provenance(model),
        method="capture_activations",
        dataset_hash=PairDataset(pairs).content_hash(),
        details={
            "hook_names": hook_names,
            "position_rule": position_rule,
            "sides": list(sides),
            "batch_size": batch_size,
            "padding_side": padding_side,
            "pair_ids_hash": stable_hash([p.id for p in pairs]),
        },
    )
    return ActivationSet(
        activations={name: torch.cat(parts) for name, parts in chunks.items()},
        pair_ids=rows.pair_ids,
        sides=rows.sides,
        token_index=torch.cat(rows.token_index).long(),
        token_ids=torch.cat(rows.token_ids).long(),
        position_rule=position_rule,
        provenance=provenance,
        answer_groups=answer_groups(pairs),
    )


def _checked(
    model, pairs, hook_names, position_rule, sides, batch_size
) -> tuple[list[str], tuple[str, ...]]:
    """The hook names and sides, checked; raises a ConfigError naming the bad argument."""
    if position_rule not in POSITION_RULES:
        raise ConfigError(f"position_rule must be one of {POSITION_RULES}, got {position_rule!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    hook_names = check_hook_names(model, hook_names)
    if not pairs:
        raise ConfigError("no pairs to capture activations for")
    if position_rule == "last_prompt":
        return hook_names, ("prompt",)
    for side in sides:
        if side not in ("positive", "negative"):
            raise ConfigError(f"sides must be 'positive' and/or 'negative', got {side!r}")
    return hook_names, tuple(sides)


@dataclass
class _Rows:
    """Row labels of the captured activations, batch by batch."""

    pair_ids: list[str] = field(default_factory=list)
    sides: list[str] = field(default_factory=list)
    token_index: list[Tensor] = field(default_factory=list)
    token_ids: list[Tensor] = field(default_factory=list)

    def add(self, batch_pairs, side: str, encoded: EncodedBatch, position_rule: str) -> None:
        if position_rule == "answer_tokens":  # one row per answer token
            counts = encoded.answer_mask.sum(-1).tolist()
            for pair, count in zip(batch_pairs, counts):
                self.pair_ids.extend([pair.id] * count)
                self.sides.extend([side] * count)
                self.token_index.append(torch.arange(count))
            self.token_ids.append(encoded.input_ids[encoded.answer_mask].cpu())
        else:  # one row per pair
            self.pair_ids.extend(p.id for p in batch_pairs)
            self.sides.extend([side] * len(batch_pairs))
            self.token_index.append(torch.full((len(batch_pairs),), -1))
            self.token_ids.append(torch.full((len(batch_pairs),), -1))


def _reduce(
    values: Float[Tensor, "batch seq d"], encoded: EncodedBatch, rule: str
) -> Float[Tensor, "rows d"]:
    if values.ndim != 3:
        raise ConfigError(
            f"expected activations of shape (batch, seq, d), got {tuple(values.shape)}; "
            "per-head hooks are not supported by capture_activations"
        )
    if rule == "last_prompt":
        rows = torch.arange(values.shape[0], device=values.device)
        return values[rows, encoded.last_prompt_index]
    mask = encoded.answer_mask
    if rule == "answer_tokens":
        return values[mask]
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)
