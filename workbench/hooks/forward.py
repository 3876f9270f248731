"""Forward passes that skip work the sweep does not need.

- :func:`residual_before` runs the blocks before ``layer`` once (``stop_at_layer``).
- :func:`skipping_blocks_before` makes blocks ``0..layer-1`` identities for the duration of a
  ``with`` block: TransformerBridge's ``start_at_layer`` swaps the given residual in at block
  ``layer`` but still runs the earlier blocks and discards their output, so skipping them
  changes nothing but the time taken. The sweep engine verifies this against a plain
  ``start_at_layer`` forward before relying on it.
- :func:`run_batch_with_cache` runs one encoded batch and keeps the activations at given hooks.
- :func:`final_normed_residual` stops the forward after the final norm, so the unembedding can
  be applied at the positions that are scored only (for a 262k vocabulary, most of the work):
  :func:`answer_logprob_sums` does that for answer tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from workbench.data.encoding import EncodedBatch
from workbench.errors import ConfigError
from workbench.hooks.logprobs import chosen_logprobs, logit_softcap
from workbench.hooks.scoped import bridge_state_cleared, scoped_hooks

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FINAL_NORM_HOOK = "ln_final.hook_out"


class _Identity(nn.Module):
    def forward(self, *args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]


class _StopForward(Exception):
    pass


@contextmanager
def skipping_blocks_before(model: TransformerBridge, layer: int) -> Iterator[None]:
    """Blocks before ``layer`` do nothing inside the block (restored on exit, also on error)."""
    swapped = []
    try:
        for block in list(model.blocks)[:layer]:
            swapped.append((block, block._modules["_original_component"]))
            block._modules["_original_component"] = _Identity()
        yield
    finally:
        for block, original in swapped:
            block._modules["_original_component"] = original


def residual_before(
    model: TransformerBridge, input_ids, attention_mask, position_ids, layer: int
) -> Tensor:
    """The residual stream entering block ``layer`` ([batch, seq, d_model])."""
    if layer == 0:
        raise ConfigError("there is no residual before block 0 to reuse; start from tokens")
    with bridge_state_cleared(model):
        return model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, stop_at_layer=layer
        )


def final_normed_residual(model: TransformerBridge, inputs, **forward_kwargs) -> Tensor:
    """Run ``model(inputs, **forward_kwargs)`` up to and including the final norm only."""
    captured: dict[str, Tensor] = {}

    def stop(tensor: Tensor, *, hook) -> None:
        captured["normed"] = tensor
        raise _StopForward

    with (
        bridge_state_cleared(model),
        scoped_hooks(model, [(FINAL_NORM_HOOK, stop)]),
        suppress(_StopForward),
    ):
        model(inputs, **forward_kwargs)
    if "normed" not in captured:
        raise RuntimeError(f"{FINAL_NORM_HOOK} did not fire")
    return captured["normed"]


def states_and_final_norm(
    model: TransformerBridge, inputs, hooks: Sequence[str], **forward_kwargs
) -> tuple[dict[str, Tensor], Tensor]:
    """The activations at ``hooks`` and the final-normed residual of one forward that stops at
    the final norm: nothing is unembedded, so the caller unembeds only the positions it needs.
    Hooks registered earlier (an intervention's) act first, so the states are the steered ones."""
    captured: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(tensor: Tensor, *, hook) -> None:
            captured[name] = tensor

        return keep

    with scoped_hooks(model, [(name, keeper(name)) for name in hooks]):
        normed = final_normed_residual(model, inputs, **forward_kwargs)
    missing = [name for name in hooks if name not in captured]
    if missing:
        raise RuntimeError(f"hooks {missing} did not fire during the forward pass")
    return captured, normed


def unembed(model: TransformerBridge, normed: Tensor) -> Tensor:
    """Logits from final-normed residuals, with the model's logit soft-capping if it has one."""
    logits = model.unembed(normed)
    cap = logit_softcap(model)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def answer_logprob_sums(
    model: TransformerBridge, normed: Tensor, batch, alternative: Tensor | None = None
) -> Tensor:
    """Sum of log P(answer token | prefix) per row of an ``EncodedBatch``, from final-normed
    residuals, unembedding the answer-predicting positions only, in fp32 (differentiable).

    With ``alternative`` (one token id per row, for one-token answers), the result has twice
    the rows: the batch's own answers, then the log-prob of each row's alternative token read
    at the same position.
    """
    targets = batch.answer_mask[:, 1:]
    rows, cols = targets.nonzero(as_tuple=True)
    tokens = batch.input_ids[rows, cols + 1, None]
    n_rows = batch.input_ids.shape[0]
    if alternative is not None:
        if alternative.shape != (n_rows,) or not bool((targets.sum(-1) == 1).all()):
            raise ConfigError("alternative answers need one token id per row and one-token answers")
        tokens = torch.cat([tokens, alternative[rows, None]], dim=-1)
    picked = chosen_logprobs(model, normed[rows, cols], tokens)
    total = torch.zeros(n_rows, dtype=torch.float32, device=picked.device)
    own = total.index_add(0, rows, picked[:, 0])
    if alternative is None:
        return own
    return torch.cat([own, torch.zeros_like(total).index_add(0, rows, picked[:, 1])])


def logits_answer_logprob_sums(logits: Tensor, batch) -> Tensor:
    """As :func:`answer_logprob_sums`, from full logits [batch, seq, vocab] of a plain forward."""
    rows, cols = batch.answer_mask[:, 1:].nonzero(as_tuple=True)
    return sum_answer_logprobs(logits[rows, cols].float().log_softmax(-1), batch)


def sum_answer_logprobs(logprobs: Tensor, batch, alternative: Tensor | None = None) -> Tensor:
    """Per-row sums of the answer tokens' log-probs; ``logprobs`` [k, vocab] holds the
    log-softmax at the k answer-predicting positions, in ``answer_mask[:, 1:]`` order."""
    targets = batch.answer_mask[:, 1:]
    rows, cols = targets.nonzero(as_tuple=True)
    picked = logprobs.gather(-1, batch.input_ids[rows, cols + 1, None]).squeeze(-1)
    n_rows = batch.input_ids.shape[0]
    total = torch.zeros(n_rows, dtype=torch.float32, device=logprobs.device)
    total = total.index_add(0, rows, picked)
    if alternative is None:
        return total
    if alternative.shape != (n_rows,) or not bool((targets.sum(-1) == 1).all()):
        raise ConfigError("alternative answers need one token id per row and one-token answers")
    other = logprobs.gather(-1, alternative[rows, None]).squeeze(-1)
    return torch.cat([total, torch.zeros_like(total).index_add(0, rows, other)])


def one_token_ids(tokenizer, answers: list[str], others: list[str]) -> list[int] | None:
    """Each ``others`` answer's token id, if every answer in both lists is exactly one token
    (then one forward of ``prompt + answer`` also scores ``prompt + other``), else None."""
    if not answers:
        return None
    encoded = tokenizer(list(answers) + list(others), add_special_tokens=False)["input_ids"]
    if any(len(ids) != 1 for ids in encoded):
        return None
    return [int(ids[0]) for ids in encoded[len(answers) :]]


@torch.no_grad()
def run_batch_with_cache(
    model: TransformerBridge, encoded: EncodedBatch, hook_names: list[str], stop_at: int | None
):
    """Activations at ``hook_names`` for one encoded batch (masks and positions honoured)."""
    with bridge_state_cleared(model):
        _, cache = model.run_with_cache(
            encoded.input_ids,
            attention_mask=encoded.attention_mask,
            position_ids=encoded.position_ids,
            names_filter=hook_names,
            stop_at_layer=stop_at,
            return_cache_object=False,
        )
    missing = [n for n in hook_names if n not in cache]
    if missing:
        raise RuntimeError(f"hooks {missing} did not fire during the forward pass")
    return cache
