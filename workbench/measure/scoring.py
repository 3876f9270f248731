"""Teacher-forced log-probabilities of answers given prompts, optionally under steering.

``answer_logprobs`` returns, per pair, the summed log P(answer tokens | prompt) and the answer
length; the preference and utility log-odds are built from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair
from workbench.hooks.forward import logits_answer_logprob_sums
from workbench.models.loading import model_device, model_provenance
from workbench.progress import bar
from workbench.steering.apply import Multiplier, steering
from workbench.steering.forms import Intervention
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@torch.no_grad()
def answer_logprobs(
    model: TransformerBridge,
    pairs: Sequence[ContrastPair],
    side: str,
    interventions: Sequence[tuple[Intervention, Multiplier]] = (),
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Float[Tensor, " pairs"], Int[Tensor, " pairs"]]:
    """(summed log-prob of each pair's ``side`` answer, its number of tokens)."""
    pairs = list(pairs)
    prepend_bos = model_provenance(model).prepend_bos
    device = model_device(model)
    totals, lengths = [], []
    starts = range(0, len(pairs), batch_size)
    for start in bar(starts, desc=f"log P({side})", enabled=progress):
        batch = encode_pairs(
            model.tokenizer,
            pairs[start : start + batch_size],
            side,
            prepend_bos=prepend_bos,
            max_length=getattr(model.cfg, "n_ctx", None),
        ).to(device)
        with steering(model, interventions, TokenRoles.from_batch(batch)):
            logits = model(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
            )
        totals.append(logits_answer_logprob_sums(logits, batch).cpu())
        lengths.append(batch.answer_mask.sum(-1).cpu())
    return torch.cat(totals), torch.cat(lengths)
