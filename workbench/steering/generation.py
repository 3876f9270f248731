"""Steered text generation: batched, greedy or sampled, with or without the key-value cache.

Prompts are left-padded into one batch. Each intervention's position rule is honoured on every
step: prompt tokens are ``prompt`` positions, generated tokens ``answer`` positions; on cached
one-token steps the single new position is an answer position. With the cache and without it
the same tokens come out (a test checks this), the cache only saves the recomputation.

The cache is the model's own Hugging Face cache object, handed back to the bridge on each step.
transformers 5.x renamed the keyword its decoder layers pass it to attention by, from
``past_key_values`` to ``cache``; TransformerLens' reimplemented attention reads only the old name,
so without help the cache stays empty and every decode step attends to itself alone.
:func:`~workbench.models.loading.repair_cache_keyword` (applied by ``load_model``, and here to
bridges built elsewhere) renames it back for the bridge's attention modules, and each cached step
checks that the cache really holds every token fed so far; if it does not (a bridge or transformers
version this does not know), generation warns once and recomputes the whole sequence on each
remaining step instead, which is exact, only slower.

>>> generate(model, ["I think the film was"], [(vector, 4.0)], max_new_tokens=20)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.data.encoding import encode_texts
from workbench.errors import ConfigError
from workbench.models.loading import model_device, model_provenance, repair_cache_keyword
from workbench.steering.apply import Multiplier, steering
from workbench.steering.forms import Intervention
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def generate(
    model: TransformerBridge,
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
    model: TransformerBridge,
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
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ConfigError(f"temperature must be > 0 when sampling, got {temperature}")
    tokenizer = model.tokenizer
    device = model_device(model)
    if use_cache:
        repair_cache_keyword(model)
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

    with (
        steering(model, interventions, TokenRoles.from_batch(batch)) as state,
    ):

        def whole_sequence() -> tuple[Tensor, Tensor]:
            # Every token so far: the prompt's are prompt positions, the generated answer ones.
            n_new = ids.shape[1] - prompt_role.shape[1]
            new = torch.ones(rows, n_new, dtype=torch.bool, device=device)
            state.roles = TokenRoles(
                real=real.bool(),
                prompt=torch.cat([prompt_role, ~new], dim=1),
                answer=torch.cat([torch.zeros_like(prompt_role), new], dim=1),
            )
            return ids, positions

        past = None
        for _ in range(max_new_tokens):
            if past is not None:  # a cached one-token step: the new token is an answer token
                one = torch.ones(rows, 1, dtype=torch.bool, device=device)
                state.roles = TokenRoles(real=one, prompt=~one, answer=one)
                step_ids, step_positions = ids[:, -1:], positions[:, -1:]
            else:
                step_ids, step_positions = whole_sequence()
            if use_cache:
                logits, past = model(
                    step_ids,
                    attention_mask=real,
                    position_ids=step_positions,
                    past_key_values=past,
                    return_type="logits_and_cache",
                )
                if not _cache_holds(past, ids.shape[1]):
                    warnings.warn(
                        "the key-value cache did not take in the tokens fed to the model (this "
                        "TransformerLens/transformers pair does not fill it); generating "
                        "without the cache instead, which gives the same tokens, only slower",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    use_cache, past = False, None
                    if step_ids.shape[1] != ids.shape[1]:  # this step saw too little context
                        step_ids, step_positions = whole_sequence()
                        logits = model(step_ids, attention_mask=real, position_ids=step_positions)
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


def _cache_holds(past, n_tokens: int) -> bool:
    """Whether the cache returned by a step has taken in all ``n_tokens`` fed so far."""
    if past is None or not hasattr(past, "get_seq_length"):
        return False
    return int(past.get_seq_length()) == n_tokens


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
