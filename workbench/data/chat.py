"""Format prompts for a model: its chat template (instruct models such as SmolLM2), or an
answer cue that makes a base model answer a persona question in the answer format."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal, get_args

from workbench.data.pairs import ContrastPair, PairDataset, answers_repeat
from workbench.errors import ConfigError
from workbench.models.loading import model_provenance
from workbench.models.packaged import PACKAGED_MODELS

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def chat_prompt(model: TransformerBridge, prompt: str, system_prompt: str | None = None) -> str:
    """``prompt`` as a single user turn followed by the assistant's turn opener.

    A leading BOS token in the rendered template is dropped when the model prepends BOS
    (``ModelProvenance.prepend_bos``), since the workbench's encoder adds it itself; SmolLM2's
    template legitimately starts with its BOS string ``<|im_start|>`` and keeps it.
    """
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        name = model_provenance(model).name
        raise ConfigError(f"{name} has no chat template; use plain prompts for base models")
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if model_provenance(model).prepend_bos and bos and text.startswith(bos):
        text = text[len(bos) :]
    return text


def with_chat_template(
    model: TransformerBridge, pairs: PairDataset, system_prompt: str | None = None
) -> PairDataset:
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


PromptStyle = Literal["auto", "plain", "cue", "chat"]
PROMPT_STYLES: tuple[PromptStyle, ...] = get_args(PromptStyle)
DEFAULT_CUE = "\n\nPlease answer {options}.\nAnswer:"


def with_answer_cue(pairs: PairDataset, cue: str = DEFAULT_CUE) -> PairDataset:
    """A copy of ``pairs`` whose prompts end with ``cue``, so a base model answers a persona
    question in the answer format. ``{options}`` in the cue becomes the answer strings joined
    by "or" ("Yes or No"). Prompts that already end with the cue's last line ("Answer:", as
    A/B files do) are kept as they are.
    """
    last_line = cue.strip().splitlines()[-1].strip() if cue.strip() else ""
    if not last_line:
        raise ConfigError("the answer cue is empty")
    if "{options}" in cue:
        strings = {a.strip() for p in pairs for a in (p.positive, p.negative)}
        first = ("yes", "(a)", "a")
        ordered = sorted(strings, key=lambda a: (a.lower() not in first, a))
        cue = cue.replace("{options}", " or ".join(ordered))

    def cued(pair: ContrastPair) -> ContrastPair:
        if pair.prompt.rstrip().endswith(last_line):
            return pair
        return replace(pair, prompt=pair.prompt.rstrip() + cue)

    return pairs.map(cued)


def resolve_prompt_style(
    model: TransformerBridge, pairs: PairDataset, style: PromptStyle = "auto"
) -> PromptStyle:
    """The concrete style ``auto`` stands for: plain prompts for free-text answers; for
    answers that repeat (Yes/No, (A)/(B)), the chat template on a model that has one, else
    the answer cue."""
    if style not in PROMPT_STYLES:
        raise ConfigError(f"unknown prompt style {style!r}; choose one of {PROMPT_STYLES}")
    if style != "auto":
        return style
    if not answers_repeat([p.positive for p in pairs], [p.negative for p in pairs]):
        return "plain"
    return "chat" if has_chat_template(model) else "cue"


def has_chat_template(model: TransformerBridge) -> bool:
    """Whether ``model`` is meant to be prompted through a chat template (the packaged
    models say so explicitly; Gemma 3 270M is a base model)."""
    packaged = PACKAGED_MODELS.get(model_provenance(model).name)
    if packaged is not None:
        return packaged.has_chat_template
    return bool(getattr(model.tokenizer, "chat_template", None))


def format_prompts(
    model: TransformerBridge,
    pairs: PairDataset,
    style: PromptStyle = "auto",
    cue: str = DEFAULT_CUE,
    system_prompt: str | None = None,
) -> PairDataset:
    """``pairs`` with prompts formatted for ``model`` in ``style`` (see :data:`PROMPT_STYLES`):
    ``plain`` as is, ``cue`` with the answer cue appended, ``chat`` in the chat template."""
    style = resolve_prompt_style(model, pairs, style)
    if style == "cue":
        return with_answer_cue(pairs, cue)
    if style == "chat":
        return with_chat_template(model, pairs, system_prompt)
    return pairs
