"""The one paired forward: log P(A_p | q) and log P(A_n | q) of a batch of pairs under an
intervention, shared by the sweep engine and SPLIT training.

Rows are ``(prompt, A_p)`` for every pair, then ``(prompt, A_n)``; where both answers of every
pair are one token, only the first half is run and A_n's log-probability is read at the same
position (half the work, the same numbers). The blocks before the intervention's layer run once
(:func:`start_inputs`); every steered forward starts there, skips the earlier blocks and stops
at the final norm, so only the answer-predicting positions are unembedded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.data.encoding import EncodedBatch, encode_texts
from workbench.hooks.forward import (
    answer_logprob_sums,
    final_normed_residual,
    one_token_ids,
    residual_before,
    skipping_blocks_before,
)
from workbench.hooks.logprobs import chosen_logprobs
from workbench.hooks.scoped import scoped_hooks
from workbench.models.loading import model_device, model_provenance
from workbench.steering import packing
from workbench.steering.apply import SteeringState, steering
from workbench.steering.forms import Intervention
from workbench.steering.packing import Packing, can_pack
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.steering.prefixes import PrefixCache

Observer = tuple[str, Callable[..., None]]


@dataclass(frozen=True)
class PairedBatch:
    """A batch of pairs encoded for :func:`paired_logprobs`."""

    batch: EncodedBatch
    n: int  # pairs
    alternative: list[int] | None  # A_n's token ids where every answer is one token
    packing: Packing | None = None  # both answers in one row after the prompt

    @property
    def sides(self) -> int:
        """Rows per pair in the forward: 1 where one forward scores both answers, else 2."""
        return 1 if self.alternative is not None or self.packing is not None else 2

    def lengths(self) -> Tensor:
        """Answer lengths in tokens, [2n]: A_p's for every pair, then A_n's."""
        if self.packing is not None:
            return self.packing.lengths
        lengths = self.batch.answer_mask.sum(-1)
        return lengths.repeat(2) if self.alternative is not None else lengths

    def forward_mask(self, tiles: int = 1) -> Tensor:
        """The attention mask the forward takes: the packed rows' 4-D mask, else the 2-D one."""
        if self.packing is not None:
            mask = self.packing.mask
            return mask.repeat(tiles, 1, 1, 1) if tiles > 1 else mask
        mask = self.batch.attention_mask
        return mask.repeat(tiles, 1) if tiles > 1 else mask


def encode_paired(
    model: TransformerBridge,
    prompts: Sequence[str],
    preferred: Sequence[str],
    opposite: Sequence[str],
    labels: Sequence[tuple[str, str | None]] | None = None,
    pack: bool = True,
) -> PairedBatch:
    """Encode ``prompts`` with both answers for one forward (``labels``: (id, source) per pair,
    named in errors such as a prompt longer than the model's context). Free-text answers are
    packed after one copy of the prompt (:mod:`workbench.steering.packing`) where that is exact
    on this model and ``pack``; otherwise each answer has its own row."""
    n = len(prompts)
    alternative = one_token_ids(model.tokenizer, list(preferred), list(opposite))
    sides = 1 if alternative is not None else 2
    named = None
    if labels is not None:
        both = [(i, s, "positive") for i, s in labels] + [(i, s, "negative") for i, s in labels]
        named = both[: sides * n]
    batch = encode_texts(
        model.tokenizer,
        list(prompts) * sides,
        (list(preferred) + list(opposite))[: sides * n],
        prepend_bos=model_provenance(model).prepend_bos,
        max_length=getattr(model.cfg, "n_ctx", None),
        labels=named,
    ).to(model_device(model))
    if alternative is None and pack and can_pack(model, batch, n):
        packed, layout = packing.pack(batch, n, next(model.parameters()).dtype)
        return PairedBatch(packed, n, None, layout)
    return PairedBatch(batch, n, alternative)


@torch.no_grad()
def start_inputs(
    model: TransformerBridge, paired: PairedBatch, layer: int, prefixes: PrefixCache | None = None
) -> Tensor:
    """What the steered forwards start from: the tokens, or the residual entering ``layer``
    (from ``prefixes`` where it holds the rows and may serve the model now)."""
    batch = paired.batch
    if layer == 0:
        return batch.input_ids
    if prefixes is not None and prefixes.usable(model):
        return prefixes.residual(paired, layer)
    mask = paired.forward_mask()
    return residual_before(model, batch.input_ids, mask, batch.position_ids, layer)


def paired_logprobs(
    model: TransformerBridge,
    paired: PairedBatch,
    inputs: Tensor,
    intervention: Intervention | None,
    multipliers: Tensor,
    *,
    tiles: int = 1,
    record_push: bool = False,
    observe: tuple[Sequence[Observer], Sequence[Observer]] = ((), ()),
    verify: bool = False,
) -> tuple[Tensor, SteeringState]:
    """Log-probabilities [tiles, 2, n] (side 0: A_p, side 1: A_n) and the steering state.

    The batch is repeated ``tiles`` times; ``multipliers`` holds one m per forward row
    (``tiles × sides × n``). ``observe`` = (hooks run before the intervention, hooks run after
    it). Differentiable with respect to the intervention's parameters unless called under
    ``torch.no_grad``. With ``verify``, the forward is also run without skipping the early
    blocks and a difference beyond float tolerance raises (an architecture whose blocks
    cannot be skipped).
    """
    batch = paired.batch.tile(tiles) if tiles > 1 else paired.batch
    x = inputs.repeat(tiles, *([1] * (inputs.ndim - 1))) if tiles > 1 else inputs
    start = intervention.layer if intervention is not None else 0
    kwargs: dict[str, Any] = dict(
        attention_mask=paired.forward_mask(tiles), position_ids=batch.position_ids
    )
    if start > 0:
        kwargs["start_at_layer"] = start
    steer = [(intervention, multipliers)] if intervention is not None else []
    before, after = observe
    with ExitStack() as stack:
        stack.enter_context(scoped_hooks(model, before))
        state = stack.enter_context(
            steering(model, steer, TokenRoles.from_batch(batch), record_push=record_push)
        )
        stack.enter_context(scoped_hooks(model, after))
        reference = final_normed_residual(model, x, **kwargs) if verify and start > 0 else None
        with skipping_blocks_before(model, start):
            normed = final_normed_residual(model, x, **kwargs)
    if reference is not None:
        _check_skipping(normed, reference, start)
    if paired.packing is not None:
        layout = paired.packing.tiled(tiles, paired.n, normed.shape[1])
        flat = normed.reshape(-1, normed.shape[-1])[layout.predict_at]
        picked = chosen_logprobs(model, flat, layout.targets[:, None])[:, 0]
        total = torch.zeros(tiles * 2 * paired.n, dtype=torch.float32, device=picked.device)
        return total.index_add(0, layout.owner, picked).view(tiles, 2, paired.n), state
    if paired.alternative is not None:
        other = torch.tensor(paired.alternative, device=normed.device).repeat(tiles)
        both = answer_logprob_sums(model, normed, batch, alternative=other)
        return both.view(2, tiles, paired.n).transpose(0, 1), state
    return answer_logprob_sums(model, normed, batch).view(tiles, 2, paired.n), state


def _check_skipping(normed: Tensor, reference: Tensor, start: int) -> None:
    gap = float((normed - reference).abs().max())
    if gap > 1e-4 * max(1.0, float(reference.abs().max())):
        raise RuntimeError(
            f"skipping blocks before {start} changed the result by {gap:.3g}; this "
            "architecture's blocks cannot be skipped (run the sweep with verify on and report it)"
        )
