import time

import pytest
import torch

from workbench.errors import ModelNotAvailableError
from workbench.models.loading import available_models, load_model, model_provenance
from workbench.models.tiny import build_tiny_hf_model


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_tiny_models_build_fast_and_record_provenance(name):
    load_model(name)  # warm imports
    start = time.perf_counter()
    model = load_model(name, seed=3)
    assert time.perf_counter() - start < 5.0  # generous: well under a second when warm
    provenance = model_provenance(model)
    assert provenance.name == name
    assert provenance.numerics == "raw"
    assert provenance.revision == "seed:3"
    assert not any(p.requires_grad for p in model.parameters())


def test_tiny_architectures_differ_in_post_mlp_norm():
    gemma, _ = build_tiny_hf_model("gemma3")
    llama, _ = build_tiny_hf_model("llama")
    assert hasattr(gemma.model.layers[0], "post_feedforward_layernorm")
    assert not hasattr(llama.model.layers[0], "post_feedforward_layernorm")


def test_tiny_model_seed_is_deterministic_and_does_not_touch_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_tiny_hf_model("llama", seed=5)
    after = torch.rand(1)
    b, _ = build_tiny_hf_model("llama", seed=5)
    c, _ = build_tiny_hf_model("llama", seed=6)
    assert torch.equal(before, after)
    weight = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_bridge_matches_hf_logits_on_tiny_model():
    hf_model, tokenizer = build_tiny_hf_model("gemma3", seed=0)
    bridge = load_model("tiny-gemma3", seed=0)
    ids = tokenizer("steering works", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(bridge(ids), hf_model(ids).logits, atol=1e-5, rtol=0)


def test_compatibility_mode_is_recorded():
    model = load_model("tiny-llama", numerics="compatibility")
    assert model_provenance(model).numerics == "compatibility"
    raw = load_model("tiny-llama")
    raw.enable_compatibility_mode()
    assert model_provenance(raw).numerics == "compatibility"


def test_unknown_numerics_mode_is_rejected():
    with pytest.raises(ValueError, match="numerics"):
        load_model("tiny-llama", numerics="fast")  # type: ignore[arg-type]


def test_hub_model_fails_fast_offline_and_lists_packaged_models(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as error:
        load_model("some-org/not-a-packaged-model")
    assert time.perf_counter() - start < 5.0
    message = str(error.value)
    assert "not available offline" in message
    for name in ("gemma-3-270m", "smollm2-135m-instruct"):
        assert name in message
    assert set(available_models()) >= {"gemma-3-270m", "smollm2-135m-instruct", "tiny-llama"}
