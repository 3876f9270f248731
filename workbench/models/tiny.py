"""Tiny randomly initialised models of real architectures, for fast unit tests.

Two architectures cover the cases the workbench must handle: Gemma 3 (a norm after the MLP,
``post_feedforward_layernorm``, so the MLP down-projection output is not the residual update)
and Llama (no post-MLP norm). Both use a byte-level tokenizer built in code, so nothing is read
from disk or the network, and a model builds in well under a second.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from workbench.errors import ConfigError

TINY_ARCHITECTURES = ("llama", "gemma3")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (3 special tokens + 256 bytes) that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + i for i, char in enumerate(alphabet)})
    backend = Tokenizer(models.BPE(vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        name_or_path="workbench-tiny-bytes",
        add_bos_token=True,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_config(architecture: str, vocab_size: int, n_layers: int = 3) -> PretrainedConfig:
    """A small config (d_model 64, d_mlp 128, 4 heads) of a real architecture."""
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if architecture == "llama":
        config: PretrainedConfig = LlamaConfig(**common)
        config.architectures = ["LlamaForCausalLM"]
    elif architecture == "gemma3":
        config = Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=64,
            layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"],
        )
        config.architectures = ["Gemma3ForCausalLM"]
    else:
        raise ConfigError(
            f"unknown tiny architecture {architecture!r}; choose one of {TINY_ARCHITECTURES}"
        )
    return config


def build_tiny_hf_model(
    architecture: str, seed: int = 0, n_layers: int = 3, attn_implementation: str = "eager"
):
    """The Hugging Face model and tokenizer of a tiny architecture, randomly initialised (in
    fp32, so the same seed gives the same weights whatever dtype they are cast to later)."""
    tokenizer = byte_tokenizer()
    config = tiny_config(architecture, vocab_size=len(tokenizer), n_layers=n_layers)
    config.name_or_path = f"tiny-{architecture}"
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn_implementation, dtype=torch.float32
        )
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), tokenizer
