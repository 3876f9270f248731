"""Format prompts with a model's chat template (for instruct models such as SmolLM2)."""

from __future__ import annotations

from dataclasses import replace

from .models import model_provenance
from .pairs import ContrastPair, PairDataset


def chat_prompt(model, prompt: str, system_prompt: str | None = None) -> str:
    """``prompt`` as a single user turn followed by the assistant's turn opener.

    A leading BOS token in the rendered template is dropped when the model prepends BOS
    (``ModelProvenance.prepend_bos``), since the workbench's encoder adds it itself; SmolLM2's
    template legitimately starts with its BOS string ``<|im_start|>`` and keeps it.
    """
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        name = model_provenance(model).name
        raise ValueError(f"{name} has no chat template; use plain prompts for base models")
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if model_provenance(model).prepend_bos and bos and text.startswith(bos):
        text = text[len(bos) :]
    return text


def with_chat_template(model, pairs: PairDataset, system_prompt: str | None = None) -> PairDataset:
    """A copy of ``pairs`` whose prompts are chat-formatted for ``model``; answers lose their
    leading space, since the assistant turn starts on a fresh line."""

    def format_pair(pair: ContrastPair) -> ContrastPair:
        return replace(
            pair,
            prompt=chat_prompt(model, pair.prompt, system_prompt),
            positive=pair.positive.lstrip(),
            negative=pair.negative.lstrip(),
        )

    return pairs.map(format_pair)
