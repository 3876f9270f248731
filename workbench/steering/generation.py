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
from workbench.steering.apply import Multiplier, SteeringState, steering
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
    ``temperature``, ``top_k``, ``seed``, ``use_cache``, ``stop_at_eos``, ``labels``).
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
    labels: Sequence[tuple[str, str | None, str]] | None = None,
) -> list[list[int]]:
    """As :func:`generate`, but the generated token ids of each row (EOS excluded).

    ``labels`` (id, ``file:line``, field) per prompt name the culprit of an encoding error."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ConfigError(f"temperature must be > 0 when sampling, got {temperature}")
    tokenizer = model.tokenizer
    if use_cache:
        repair_cache_keyword(model)
    batch = encode_texts(
        tokenizer,
        list(prompts),
        prepend_bos=model_provenance(model).prepend_bos,
        padding_side="left",
        max_length=getattr(model.cfg, "n_ctx", None),
        labels=labels,
    ).to(model_device(model))
    generator = torch.Generator(device=batch.input_ids.device).manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    finished = torch.zeros(batch.input_ids.shape[0], dtype=torch.bool, device=generator.device)
    generated: list[Tensor] = []
    with steering(model, interventions, TokenRoles.from_batch(batch)) as state:
        decoder = _Decoder(model, batch, state, use_cache)
        for _ in range(max_new_tokens):
            logits = decoder.next_logits()
            token = _choose(logits.float(), do_sample, temperature, top_k, generator)
            token = torch.where(finished, torch.full_like(token, pad), token)
            generated.append(token)
            if stop_at_eos and eos is not None:
                finished |= token == eos
            decoder.append(token)
            if finished.all():
                break
    out = torch.stack(generated, dim=1).tolist()
    if stop_at_eos and eos is not None:
        out = [row[: row.index(eos)] if eos in row else row for row in out]
    return out


class _Decoder:
    """The growing sequence and the model's cache; sets the token roles before each step."""

    def __init__(self, model, batch, state: SteeringState, use_cache: bool) -> None:
        self.model, self.state, self.use_cache = model, state, use_cache
        self.ids, self.real, self.positions = (
            batch.input_ids,
            batch.attention_mask,
            batch.position_ids,
        )
        self.prompt_role = batch.prompt_mask
        self.past = None

    def next_logits(self) -> Tensor:
        """Logits of the next token ([rows, vocab]), from the cache where it holds the past."""
        if self.past is not None:  # a cached one-token step: the new token is an answer token
            one = torch.ones(self.ids.shape[0], 1, dtype=torch.bool, device=self.ids.device)
            self.state.roles = TokenRoles(real=one, prompt=~one, answer=one)
            step_ids, step_positions = self.ids[:, -1:], self.positions[:, -1:]
        else:
            step_ids, step_positions = self._whole_sequence()
        if not self.use_cache:
            return self._forward(step_ids, step_positions)[:, -1]
        logits, self.past = self.model(
            step_ids,
            attention_mask=self.real,
            position_ids=step_positions,
            past_key_values=self.past,
            return_type="logits_and_cache",
        )
        if not _cache_holds(self.past, self.ids.shape[1]):
            warnings.warn(
                "the key-value cache did not take in the tokens fed to the model (this "
                "TransformerLens/transformers pair does not fill it); generating without the "
                "cache instead, which gives the same tokens, only slower",
                RuntimeWarning,
                stacklevel=4,
            )
            self.use_cache, self.past = False, None
            if step_ids.shape[1] != self.ids.shape[1]:  # this step saw too little context
                logits = self._forward(*self._whole_sequence())
        return logits[:, -1]

    def append(self, token: Tensor) -> None:
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)
        self.real = torch.cat([self.real, torch.ones_like(self.real[:, :1])], dim=1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=1)

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.model(ids, attention_mask=self.real, position_ids=positions)

    def _whole_sequence(self) -> tuple[Tensor, Tensor]:
        """Every token so far: the prompt's are prompt positions, the generated answer ones."""
        rows, n_new = self.ids.shape[0], self.ids.shape[1] - self.prompt_role.shape[1]
        new = torch.ones(rows, n_new, dtype=torch.bool, device=self.ids.device)
        self.state.roles = TokenRoles(
            real=self.real.bool(),
            prompt=torch.cat([self.prompt_role, ~new], dim=1),
            answer=torch.cat([torch.zeros_like(self.prompt_role), new], dim=1),
        )
        return self.ids, self.positions


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
