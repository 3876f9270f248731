import warnings

import pytest
import torch

from workbench.models.loading import load_model, repair_cache_keyword
from workbench.steering import generation
from workbench.steering.forms import SteeringVector
from workbench.steering.generation import generate, generate_tokens

PROMPTS = ["Hello", "The weather today is", "Q: what?"]


@pytest.fixture
def vector(tiny_model):
    v = SteeringVector.for_model(tiny_model, 1, site="resid")
    with torch.no_grad():
        v.bias.copy_(torch.randn(v.d_out, generator=torch.Generator().manual_seed(0)) * 3)
    return v


def test_unsteered_cache_and_no_cache_agree_and_the_cache_is_really_used(tiny_model):
    kwargs = dict(max_new_tokens=10, stop_at_eos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to recomputation
        cached = generate_tokens(tiny_model, PROMPTS, **kwargs)
    assert cached == generate_tokens(tiny_model, PROMPTS, use_cache=False, **kwargs)
    singles = [generate_tokens(tiny_model, [p], **kwargs)[0] for p in PROMPTS]
    assert cached == singles


def test_a_cache_the_bridge_leaves_empty_falls_back_to_recomputation(monkeypatch):
    # Without the keyword repair the bridge's attention never fills the transformers 5.x cache.
    model = load_model("tiny-llama", device="cpu")
    for handle in repair_cache_keyword(model):
        handle.remove()
    monkeypatch.setattr(generation, "repair_cache_keyword", lambda model: [])
    kwargs = dict(max_new_tokens=6, stop_at_eos=False)
    with pytest.warns(RuntimeWarning, match="without the cache"):
        cached = generate_tokens(model, PROMPTS, **kwargs)
    assert cached == generate_tokens(model, PROMPTS, use_cache=False, **kwargs)


def test_the_bridges_own_generate_uses_the_cache_correctly(tiny_model):
    # load_model repairs the cache keyword, so TransformerLens' generate is right as well.
    ids = torch.tensor([tiny_model.tokenizer("I think the film was")["input_ids"]])
    kwargs = dict(max_new_tokens=8, do_sample=False, verbose=False)
    cached = tiny_model.generate(ids, use_past_kv_cache=True, **kwargs)
    assert torch.equal(cached, tiny_model.generate(ids, use_past_kv_cache=False, **kwargs))


@pytest.mark.parametrize("positions", ["prompt", "answer", "all"])
def test_cache_and_no_cache_agree_under_steering(tiny_model, vector, positions):
    vector.positions = positions
    kwargs = dict(max_new_tokens=10, stop_at_eos=False)
    cached = generate_tokens(tiny_model, PROMPTS, [(vector, 1.0)], **kwargs)
    uncached = generate_tokens(tiny_model, PROMPTS, [(vector, 1.0)], use_cache=False, **kwargs)
    assert cached == uncached
    sampled = dict(do_sample=True, seed=3, top_k=20, **kwargs)
    assert generate_tokens(tiny_model, PROMPTS, [(vector, 1.0)], **sampled) == generate_tokens(
        tiny_model, PROMPTS, [(vector, 1.0)], use_cache=False, **sampled
    )


def test_batched_equals_one_prompt_at_a_time(tiny_model, vector):
    vector.positions = "answer"
    batched = generate_tokens(
        tiny_model, PROMPTS, [(vector, 1.0)], max_new_tokens=8, stop_at_eos=False
    )
    singles = [
        generate_tokens(tiny_model, [p], [(vector, 1.0)], max_new_tokens=8, stop_at_eos=False)[0]
        for p in PROMPTS
    ]
    assert batched == singles


def test_answer_only_steering_keeps_the_first_token_and_changes_later_ones(tiny_model, vector):
    vector.positions = "answer"
    plain = generate_tokens(tiny_model, PROMPTS, max_new_tokens=8, stop_at_eos=False)
    steered = generate_tokens(
        tiny_model, PROMPTS, [(vector, 1.0)], max_new_tokens=8, stop_at_eos=False
    )
    assert [row[0] for row in plain] == [row[0] for row in steered]
    assert plain != steered


def test_sampling_is_seeded_and_text_is_returned(tiny_llama):
    a = generate(tiny_llama, PROMPTS, do_sample=True, seed=1, max_new_tokens=6)
    b = generate(tiny_llama, PROMPTS, do_sample=True, seed=1, max_new_tokens=6)
    c = generate(tiny_llama, PROMPTS, do_sample=True, seed=2, max_new_tokens=6)
    assert a == b and a != c and all(isinstance(t, str) for t in a)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_llama, PROMPTS, do_sample=True, temperature=0.0)
