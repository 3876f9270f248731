"""Real packaged models: conversion, exact numerics against Hugging Face, fluent generation.

The first run converts each GGUF to a Hugging Face folder in the workbench cache (about two
minutes for Gemma); later runs load it in seconds.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair
from workbench.models.loading import load_model, model_provenance
from workbench.models.packaged import PACKAGED_MODELS, cached_model_dir, read_marker

pytestmark = pytest.mark.integration

TEXTS = [
    ("The capital of France is", " Paris, a city on the Seine."),
    ("My favourite food is", " pasta with tomato sauce and basil."),
    ("In 1969, astronauts", " landed on the Moon for the first time."),
]


@pytest.fixture(scope="module", params=list(PACKAGED_MODELS))
def packaged(request):
    return request.param, load_model(request.param, device="cpu")


def _answer_logprobs(logits, batch):
    logprobs = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    targets = batch.input_ids[:, 1:]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked[batch.answer_mask[:, 1:]]


def test_bridge_logprobs_equal_hugging_face(packaged):
    name, bridge = packaged
    folder = cached_model_dir(name)
    marker = read_marker(folder)
    assert marker is not None and marker["gguf_sha256"] in model_provenance(bridge).revision
    hf_model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    pairs = [ContrastPair(f"t{i}", p, a, " no.") for i, (p, a) in enumerate(TEXTS)]
    batch = encode_pairs(
        bridge.tokenizer, pairs, "positive", prepend_bos=model_provenance(bridge).prepend_bos
    )
    with torch.no_grad():
        ours = bridge(batch.input_ids, attention_mask=batch.attention_mask)
        theirs = hf_model(batch.input_ids, attention_mask=batch.attention_mask).logits
    difference = (_answer_logprobs(ours, batch) - _answer_logprobs(theirs, batch)).abs().max()
    print(f"{name}: max |log-prob difference| bridge vs HF = {difference:.2e}")
    assert difference < 1e-4
    # Sanity: the model is a trained LM, not noise (mean answer log-prob well above uniform).
    mean_logprob = _answer_logprobs(ours, batch).mean()
    assert mean_logprob > -6.0, mean_logprob


def test_greedy_generation_is_fluent_english(packaged):
    name, bridge = packaged
    prompt = "The capital of France is"
    if name == "smollm2-135m-instruct":
        from workbench.data.chat import chat_prompt

        prompt = chat_prompt(bridge, "What is the capital of France?")
        assert prompt.startswith("<|im_start|>system")
    ids = bridge.tokenizer(prompt, add_special_tokens=model_provenance(bridge).prepend_bos)
    input_ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        out = bridge.generate(input_ids, max_new_tokens=24, do_sample=False, verbose=False)
    text = bridge.tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
    print(f"{name}: {prompt!r} -> {text!r}")
    words = text.split()
    assert len(words) >= 4
    function_words = {"the", "is", "of", "and", "a", "an", "to", "in", "it", "its", "capital"}
    assert len(function_words & {w.strip(".,;:!?").lower() for w in words}) >= 2
    alphabetic = [w for w in words if any(c.isalpha() for c in w)]
    assert len(alphabetic) / len(words) > 0.8
    assert len(set(words)) / len(words) > 0.4  # not one token repeated


def test_compatibility_mode_keeps_logprobs():
    raw = load_model("smollm2-135m-instruct", device="cpu")
    compat = load_model("smollm2-135m-instruct", device="cpu", numerics="compatibility")
    assert model_provenance(compat).numerics == "compatibility"
    pairs = [ContrastPair(f"t{i}", p, a, " no.") for i, (p, a) in enumerate(TEXTS)]
    batch = encode_pairs(raw.tokenizer, pairs, "positive", prepend_bos=False)
    with torch.no_grad():
        a = _answer_logprobs(raw(batch.input_ids, attention_mask=batch.attention_mask), batch)
        b = _answer_logprobs(compat(batch.input_ids, attention_mask=batch.attention_mask), batch)
    print(f"compatibility vs raw: max |log-prob difference| = {(a - b).abs().max():.2e}")
    assert (a - b).abs().max() < 1e-3
