"""Both answers of a pair in one row, after one copy of the prompt.

The row is ``[BOS, prompt, A_p, A_n]``. A 4-D attention mask lets A_n's tokens see the prompt
and each other but never A_p, and A_n takes the positions A_p's tokens have, so every token's
state, and so every answer log-probability, is the one its own ``(prompt, answer)`` row gives:
the prompt is computed once instead of once per answer. Exact only where the model applies a
given 4-D mask as it is: the architectures in :data:`PACKABLE` (tested against the two-row
layout) and rows no longer than a sliding attention window, which a custom mask would override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.data.encoding import EncodedBatch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PACKABLE = ("LlamaForCausalLM", "Gemma3ForCausalLM")


@dataclass(frozen=True)
class Packing:
    """Where each answer token of a packed batch is predicted, and the rows' attention mask.

    ``mask`` [n, 1, L, L] is additive in the model's dtype; ``predict_at`` [k] is the flat index
    (row · L + column) of the position predicting each answer token, ``targets`` [k] the token,
    ``owner`` [k] its answer (pair i's A_p is i, its A_n n + i); ``lengths`` [2n] the answers'
    lengths in tokens.
    """

    mask: Tensor
    predict_at: Tensor
    targets: Tensor
    owner: Tensor
    lengths: Tensor

    def tiled(self, tiles: int, n: int, width: int) -> Packing:
        """The layout of the batch repeated ``tiles`` times along the batch axis."""
        if tiles == 1:
            return self
        offsets = torch.arange(tiles, device=self.predict_at.device)
        return Packing(
            self.mask.repeat(tiles, 1, 1, 1),
            (self.predict_at[None] + offsets[:, None] * n * width).reshape(-1),
            self.targets.repeat(tiles),
            (self.owner[None] + offsets[:, None] * 2 * n).reshape(-1),
            self.lengths.repeat(tiles),
        )


def can_pack(model: TransformerBridge, two_rows: EncodedBatch, n: int) -> bool:
    """Whether packing ``two_rows`` (A_p rows, then A_n rows) is exact on ``model``."""
    if getattr(model.cfg, "architecture", None) not in PACKABLE:
        return False
    window = getattr(getattr(model.original_model, "config", None), "sliding_window", None)
    longest = int((two_rows.attention_mask[:n].sum(-1) + two_rows.answer_mask[n:].sum(-1)).max())
    return window is None or longest <= int(window)


def pack(two_rows: EncodedBatch, n: int, dtype: torch.dtype) -> tuple[EncodedBatch, Packing]:
    """One row per pair from a right-padded two-row batch (``(prompt, A_p)`` rows, then
    ``(prompt, A_n)`` rows, as :func:`~workbench.data.encoding.encode_texts` makes them)."""
    real = two_rows.attention_mask.sum(-1)
    answers = two_rows.answer_mask.sum(-1)
    prefix = real[:n] - answers[:n]  # BOS + prompt
    width = int((real[:n] + answers[n:]).max())
    device = two_rows.input_ids.device
    shape = (n, width)
    input_ids = torch.zeros(shape, dtype=torch.long, device=device)
    attention = torch.zeros(shape, dtype=torch.long, device=device)
    positions = torch.zeros(shape, dtype=torch.long, device=device)
    prompt_mask = torch.zeros(shape, dtype=torch.bool, device=device)
    answer_mask = torch.zeros(shape, dtype=torch.bool, device=device)
    allowed = torch.zeros((n, width, width), dtype=torch.bool, device=device)
    predict, targets, owner = [], [], []
    for i in range(n):
        p, end, a_n = int(prefix[i]), int(real[i]), int(answers[n + i])
        total = end + a_n
        other = two_rows.input_ids[n + i][two_rows.answer_mask[n + i]]
        input_ids[i, :end] = two_rows.input_ids[i, :end]
        input_ids[i, end:total] = other
        attention[i, :total] = 1
        positions[i, :end] = torch.arange(end)
        positions[i, end:total] = torch.arange(p, p + a_n)
        prompt_mask[i, :end] = two_rows.prompt_mask[i, :end]
        answer_mask[i, p:total] = True
        allowed[i] = torch.tril(torch.ones(width, width, dtype=torch.bool, device=device))
        allowed[i, end:, p:end] = False  # A_n never sees A_p
        allowed[i, :, total:] = False  # nor anyone the padding
        allowed[i, total:, :] = False
        allowed[i, range(total, width), range(total, width)] = True  # padding sees itself
        predict += [i * width + c - 1 for c in range(p, end)]  # A_p from its previous token
        predict += [i * width + (p - 1 if j == 0 else end + j - 1) for j in range(a_n)]
        targets += [*input_ids[i, p:end].tolist(), *other.tolist()]
        owner += [i] * (end - p) + [n + i] * a_n
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    batch = EncodedBatch(
        input_ids, attention, positions, prompt_mask, answer_mask, two_rows.last_prompt_index[:n]
    )

    def as_tensor(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    layout = Packing(mask, as_tensor(predict), as_tensor(targets), as_tensor(owner), answers)
    return batch, layout
