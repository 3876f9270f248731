"""Format prompts with a model's chat template (for instruct models such as SmolLM2)."""

from __future__ import annotations

from dataclasses import replace

from .pairs import ContrastPair, PairDataset


def chat_prompt(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """``prompt`` as a single user turn followed by the assistant's turn opener.

    A leading BOS token in the rendered template is dropped: the workbench's encoder prepends
    BOS itself (when the model uses one), so keeping it would double it.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise ValueError(f"{name} has no chat template; use plain prompts for base models")
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        text = text[len(bos) :]
    return text


def with_chat_template(
    pairs: PairDataset, tokenizer, system_prompt: str | None = None
) -> PairDataset:
    """A copy of ``pairs`` whose prompts are chat-formatted; answers stripped of the leading
    space, since the assistant turn starts on a fresh line."""

    def format_pair(pair: ContrastPair) -> ContrastPair:
        return replace(
            pair,
            prompt=chat_prompt(tokenizer, pair.prompt, system_prompt),
            positive=pair.positive.lstrip(),
            negative=pair.negative.lstrip(),
        )

    return pairs.map(format_pair)
