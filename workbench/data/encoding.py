"""Tokenise prompts and answers into padded batches with exact prompt / answer token masks.

Prompt and answer are tokenised separately (``add_special_tokens=False``) and concatenated, so
the boundary between them is exact; BOS is prepended when the model's own tokenizer would
(recorded as ``ModelProvenance.prepend_bos``). Position ids follow the attention mask, so left-
and right-padded batches give the same activations at real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.data.pairs import ContrastPair, _split_source
from workbench.errors import ConfigError, DataFormatError

SIDES: tuple[str, ...] = ("positive", "negative", "prompt")


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch. ``prompt_mask`` and ``answer_mask`` are False on padding and BOS."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    position_ids: Int[Tensor, "batch seq"]
    prompt_mask: Bool[Tensor, "batch seq"]
    answer_mask: Bool[Tensor, "batch seq"]
    last_prompt_index: Int[Tensor, " batch"]

    def to(self, device: str | torch.device) -> EncodedBatch:
        return EncodedBatch(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})

    def tile(self, times: int) -> EncodedBatch:
        """The batch repeated ``times`` times along the batch axis (row i + k·batch = row i)."""
        return EncodedBatch(
            **{
                k: getattr(self, k).repeat(times, *([1] * (getattr(self, k).ndim - 1)))
                for k in self.__dataclass_fields__
            }
        )


LONGEST_TOKEN_ATTRIBUTE = "workbench_longest_token"


def encode_pairs(
    tokenizer,
    pairs: Sequence[ContrastPair],
    side: str,
    *,
    prepend_bos: bool,
    padding_side: str = "right",
    max_length: int | None = None,
) -> EncodedBatch:
    """Encode ``prompt + answer`` of one side of each pair (``"prompt"``: the prompt alone).

    ``max_length`` (the model's context) is checked per pair; an over-long pair raises
    :class:`DataFormatError` naming its file, line and the field that makes it too long.
    """
    if side not in SIDES:
        raise ConfigError(f"side must be one of {SIDES}, got {side!r}")
    return encode_texts(
        tokenizer,
        [p.prompt for p in pairs],
        [getattr(p, side) if side != "prompt" else "" for p in pairs],
        prepend_bos=prepend_bos,
        padding_side=padding_side,
        max_length=max_length,
        labels=[(p.id, p.source, side) for p in pairs],
    )


def encode_texts(
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str] | None = None,
    *,
    prepend_bos: bool,
    padding_side: str = "right",
    max_length: int | None = None,
    labels: Sequence[tuple[str, str | None, str]] | None = None,
) -> EncodedBatch:
    """Encode prompts (and answers, if given) into one padded batch.

    ``labels`` are (id, source, answer field) per row, used to name the culprit in errors.
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not prompts:
        raise ConfigError("cannot encode an empty list of prompts")
    answers = list(answers) if answers is not None else [""] * len(prompts)
    if len(answers) != len(prompts):
        raise ConfigError(f"{len(prompts)} prompts but {len(answers)} answers")
    labels = labels or [(f"row {i}", None, "answer") for i in range(len(prompts))]
    if max_length is not None:
        _check_characters(tokenizer, prompts, answers, labels, max_length)
    prompt_ids = _tokenize(tokenizer, list(prompts))
    answer_ids = _tokenize(tokenizer, answers)
    bos = [tokenizer.bos_token_id] if prepend_bos else []
    for (row_id, source, field), prompt, answer in zip(labels, prompt_ids, answer_ids):
        path, line = _split_source(source)
        if not bos and not prompt:
            raise DataFormatError(
                "is empty and the model takes no BOS token, so there is no context to condition on",
                path=path,
                line=line,
                field="prompt",
            )
        total = len(bos) + len(prompt) + len(answer)
        if max_length is not None and total > max_length:
            culprit = "prompt" if len(bos) + len(prompt) > max_length else field
            raise DataFormatError(
                f"{row_id!r} is {total} tokens, longer than the model's context of {max_length}",
                path=path,
                line=line,
                field=culprit,
            )

    lengths = [len(bos) + len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)]
    width = max(lengths)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = len(prompt_ids)
    input_ids = torch.full((batch, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    prompt_mask = torch.zeros((batch, width), dtype=torch.bool)
    answer_mask = torch.zeros((batch, width), dtype=torch.bool)
    last_prompt = torch.zeros(batch, dtype=torch.long)
    for row, (prompt, answer) in enumerate(zip(prompt_ids, answer_ids)):
        ids = bos + prompt + answer
        start = width - len(ids) if padding_side == "left" else 0
        input_ids[row, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start : start + len(ids)] = 1
        prompt_start = start + len(bos)
        prompt_end = prompt_start + len(prompt)
        prompt_mask[row, prompt_start:prompt_end] = True
        answer_mask[row, prompt_end : prompt_end + len(answer)] = True
        last_prompt[row] = prompt_end - 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return EncodedBatch(
        input_ids, attention_mask, position_ids, prompt_mask, answer_mask, last_prompt
    )


def longest_token(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` stands for (computed once, kept on it)."""
    known = getattr(tokenizer, LONGEST_TOKEN_ATTRIBUTE, None)
    if known is None:
        known = max((len(t) for t in tokenizer.get_vocab()), default=1)
        setattr(tokenizer, LONGEST_TOKEN_ATTRIBUTE, known)
    return known


def _check_characters(tokenizer, prompts, answers, labels, max_length: int) -> None:
    """Refuse, before tokenising, a text with more characters than ``max_length`` tokens can
    hold: tokenising a multi-megabyte line only to find it too long takes seconds and GBs."""
    limit = max_length * longest_token(tokenizer)
    for (row_id, source, field), prompt, answer in zip(labels, prompts, answers):
        if len(prompt) + len(answer) > limit:
            path, line = _split_source(source)
            # the prompt alone is cheap to tokenise once it is known to be short enough
            short = len(prompt) <= limit and len(_tokenize(tokenizer, [prompt])[0]) < max_length
            culprit = field if short else "prompt"
            raise DataFormatError(
                f"{row_id!r} is {len(prompt) + len(answer):,} characters, more than the model's "
                f"context of {max_length} tokens can hold",
                path=path,
                line=line,
                field=culprit,
            )


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(ids) if text else [] for ids, text in zip(encoded, texts)]
