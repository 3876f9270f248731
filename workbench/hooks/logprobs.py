"""Log-probabilities of chosen tokens from final-normed residuals: fp32, chunked over the vocab.

The sweep, the trainer and the displacement table read log P(token | prefix) at a few answer
positions. Unembedding those positions in one matmul and a log-softmax builds a
[positions, vocab] tensor (262k columns for Gemma) in the model's dtype, which in bf16 rounds a
logit of 20 to the nearest 0.125. Here the logits are computed in fp32 from the unembedding's
own weights, one vocabulary chunk at a time, with a running log-sum-exp, so the answer-scoring
memory is [positions, chunk] whatever the vocabulary and the log-odds are fp32 whatever the
model's dtype. Logit soft-capping (Gemma 2) is applied per chunk, as the model does. When no
gradient is wanted (sweeps) every chunk's logits are computed in place in one reused buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

VOCAB_CHUNK = 16_384


def logit_softcap(model: TransformerBridge) -> float | None:
    """The model's final logit soft-cap, if it has one."""
    config = getattr(model.original_model, "config", None)
    return getattr(config, "final_logit_softcapping", None) or None


def _logsumexp(logits: Tensor) -> Tensor:
    """Row log-sum-exp in two passes over ``logits`` (exp, sum) where that is exact in fp32;
    the max-shifted four-pass form for a chunk where any row's sum over- or underflows (large
    pushes make logits large), so neither the value nor its gradient is ever inf or NaN."""
    total = logits.exp().sum(-1)
    if bool((torch.isfinite(total) & (total > 0)).all()):
        return total.log()
    return logits.logsumexp(-1)


def _buffered_logsumexp(
    x: Tensor, rows: Tensor, bias: Tensor | None, cap: float | None, buffer: Tensor
) -> Tensor:
    """As :func:`_logsumexp` of ``x @ rows.T (+ bias)``, computed in ``buffer`` in place."""
    logits = buffer[:, : rows.shape[0]]

    def fill() -> Tensor:
        torch.mm(x, rows.T, out=logits)
        if bias is not None:
            logits.add_(bias)
        if cap:
            logits.div_(cap).tanh_().mul_(cap)
        return logits

    total = fill().exp_().sum(-1)
    if bool((torch.isfinite(total) & (total > 0)).all()):
        return total.log()
    return fill().logsumexp(-1)


def chosen_logprobs(
    model: TransformerBridge, normed: Tensor, tokens: Tensor, chunk: int = VOCAB_CHUNK
) -> Tensor:
    """log P(tokens[i, j] | position i) as fp32 [k, c], from final-normed residuals [k, d].

    Differentiable. Exactly what ``model.unembed`` and a log-softmax give (up to float
    rounding), computed without a [k, vocab] tensor; when hooks are attached to the unembedding
    it is run itself, so they act.
    """
    head = model.unembed
    if head.hook_in._forward_hooks or head.hook_out._forward_hooks:  # let them act
        logits = head(normed).float()
        cap = logit_softcap(model)
        logits = torch.tanh(logits / cap) * cap if cap else logits
        return logits.log_softmax(-1).gather(-1, tokens)
    linear = head.original_component
    weight, bias = linear.weight, linear.bias  # [vocab, d], [vocab] or None
    cap = logit_softcap(model)
    x = normed.float()
    lse = torch.full((x.shape[0],), -torch.inf, device=x.device)
    reuse = not (torch.is_grad_enabled() and x.requires_grad) and weight.dtype == torch.float32
    buffer = torch.empty((x.shape[0], chunk), device=x.device) if reuse else None
    for start in range(0, weight.shape[0], chunk):
        rows = weight[start : start + chunk]
        chunk_bias = bias[start : start + chunk] if bias is not None else None
        if buffer is not None:  # no gradient wanted: one buffer for every chunk's logits
            lse = torch.logaddexp(lse, _buffered_logsumexp(x, rows, chunk_bias, cap, buffer))
            continue
        logits = x @ rows.float().T
        if chunk_bias is not None:
            logits = logits + chunk_bias.float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        lse = torch.logaddexp(lse, _logsumexp(logits))
    picked = torch.einsum("kd,kcd->kc", x, weight[tokens].float())
    if bias is not None:
        picked = picked + bias[tokens].float()
    if cap:
        picked = torch.tanh(picked / cap) * cap
    return picked - lse[:, None]
