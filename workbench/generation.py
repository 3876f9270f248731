"""Steered text generation: batched, greedy or sampled, with or without the key-value cache.

Prompts are left-padded into one batch. Each intervention's position rule is honoured on every
step: prompt tokens are ``prompt`` positions, generated tokens ``answer`` positions; on cached
one-token steps the single new position is an answer position. With the cache and without it
the same tokens come out (a test checks this), the cache only saves the recomputation.

>>> generate(model, ["I think the film was"], [(vector, 4.0)], max_new_tokens=20)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .encoding import encode_texts
from .interventions import Intervention, Multiplier, TokenRoles, steering
from .models import model_provenance


def generate(
    model,
    prompts: Sequence[str],
    interventions: Sequence[tuple[Intervention, Multiplier]] = (),
    **options: Any,
) -> list[str]:
    """Continue each prompt; returns the generated text only (up to EOS).

    ``options`` are those of :func:`generate_tokens` (``max_new_tokens``, ``do_sample``,
    ``temperature``, ``top_k``, ``seed``, ``use_cache``, ``stop_at_eos``).
    """
    tokens = generate_tokens(model, prompts, interventions, **options)
    return [model.tokenizer.decode(row, skip_special_tokens=True) for row in tokens]


@torch.no_grad()
def generate_tokens(
    model,
    prompts: Sequence[str],
    interventions: Sequence[tuple[Intervention, Multiplier]] = (),
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """As :func:`generate`, but the generated token ids of each row (EOS excluded)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    tokenizer = model.tokenizer
    device = next(model.parameters()).device
    batch = encode_texts(
        tokenizer,
        list(prompts),
        prepend_bos=model_provenance(model).prepend_bos,
        padding_side="left",
        max_length=getattr(model.cfg, "n_ctx", None),
    ).to(device)
    ids, real, positions = batch.input_ids, batch.attention_mask, batch.position_ids
    prompt_role = batch.prompt_mask
    rows = ids.shape[0]
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    generated: list[Tensor] = []

    with steering(model, interventions, TokenRoles.from_batch(batch)) as state:
        past = None
        for _ in range(max_new_tokens):
            if past is not None:  # a cached one-token step: the new token is an answer token
                one = torch.ones(rows, 1, dtype=torch.bool, device=device)
                state.roles = TokenRoles(real=one, prompt=~one, answer=one)
                step_ids, step_positions = ids[:, -1:], positions[:, -1:]
            else:
                n_new = ids.shape[1] - prompt_role.shape[1]
                answer = torch.zeros_like(prompt_role)
                new = torch.ones(rows, n_new, dtype=torch.bool, device=device)
                state.roles = TokenRoles(
                    real=real.bool(),
                    prompt=torch.cat([prompt_role, ~new], dim=1),
                    answer=torch.cat([answer, new], dim=1),
                )
                step_ids, step_positions = ids, positions
            if use_cache:
                logits, past = model(
                    step_ids,
                    attention_mask=real,
                    position_ids=step_positions,
                    past_key_values=past,
                    return_type="logits_and_cache",
                )
            else:
                logits = model(step_ids, attention_mask=real, position_ids=step_positions)
            token = _choose(logits[:, -1].float(), do_sample, temperature, top_k, generator)
            token = torch.where(finished, torch.full_like(token, pad), token)
            generated.append(token)
            if stop_at_eos and eos is not None:
                finished |= token == eos
            ids = torch.cat([ids, token[:, None]], dim=1)
            real = torch.cat([real, torch.ones_like(real[:, :1])], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if finished.all():
                break

    out = torch.stack(generated, dim=1).tolist()
    if stop_at_eos and eos is not None:
        out = [row[: row.index(eos)] if eos in row else row for row in out]
    return out


def _choose(
    logits: Tensor, do_sample: bool, temperature: float, top_k: int | None, generator
) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
