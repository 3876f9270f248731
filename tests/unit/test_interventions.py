"""The unified view, proven: each form is exactly the weight edit it claims to be."""

import pytest
import torch
from torch import nn

from workbench.encoding import encode_pairs
from workbench.interventions import (
    LocalWeightUpdate,
    LoRAUpdate,
    SteeringVector,
    TokenRoles,
    load_intervention,
    steering,
)
from workbench.models import load_model
from workbench.scoped_hooks import count_forward_hooks
from workbench.tiny_models import build_tiny_hf_model

ARCHS = ["llama", "gemma3"]
LAYER = 1


def _randomise(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def _batch(model, small_pairs):
    return encode_pairs(model.tokenizer, small_pairs, "positive", prepend_bos=True)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch.input_ids, attention_mask=batch.attention_mask)


@pytest.mark.parametrize("arch", ARCHS)
def test_local_weight_update_equals_editing_the_real_down_projection(arch, small_pairs):
    bridge = load_model(f"tiny-{arch}")
    update = LocalWeightUpdate.for_model(bridge, LAYER)
    _randomise(update, seed=1)
    m = 0.7
    batch = _batch(bridge, small_pairs)
    with update.applied(bridge, m=m):
        steered = _logits(bridge, batch)

    edited, _ = build_tiny_hf_model(arch, seed=0)
    down = edited.model.layers[LAYER].mlp.down_proj
    replacement = nn.Linear(down.in_features, down.out_features, bias=True)
    with torch.no_grad():
        replacement.weight.copy_(down.weight + m * update.weight)
        base_bias = down.bias if down.bias is not None else 0.0
        replacement.bias.copy_(base_bias + m * update.bias)
    edited.model.layers[LAYER].mlp.down_proj = replacement
    with torch.no_grad():
        reference = edited(batch.input_ids, attention_mask=batch.attention_mask).logits
    assert (steered - _logits(bridge, batch)).abs().max() > 1e-2  # the edit does something
    torch.testing.assert_close(steered, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["mlp_out", "resid"])
def test_lora_equals_its_dense_product_and_vector_equals_a_bias_edit(tiny_model, small_pairs, site):
    batch = _batch(tiny_model, small_pairs)
    lora = LoRAUpdate.for_model(tiny_model, LAYER, site=site, rank=3)
    _randomise(lora, seed=2)
    dense = LocalWeightUpdate.for_model(tiny_model, LAYER, site=site)
    with torch.no_grad():
        dense.weight.copy_(lora.lora_b @ lora.lora_a)
    vector = SteeringVector.for_model(tiny_model, LAYER, site=site)
    _randomise(vector, seed=3)
    bias_only = LocalWeightUpdate.for_model(tiny_model, LAYER, site=site)
    with torch.no_grad():
        bias_only.bias.copy_(vector.bias)

    results = {}
    for name, intervention in [
        ("lora", lora),
        ("dense", dense),
        ("vec", vector),
        ("bias", bias_only),
    ]:
        with intervention.applied(tiny_model, m=1.3):
            results[name] = _logits(tiny_model, batch)
    torch.testing.assert_close(results["lora"], results["dense"], atol=1e-5, rtol=0)
    torch.testing.assert_close(results["vec"], results["bias"], atol=1e-5, rtol=0)
    assert (results["lora"] - _logits(tiny_model, batch)).abs().max() > 1e-3


def test_zero_multiplier_is_bit_identical(tiny_model, small_pairs):
    batch = _batch(tiny_model, small_pairs)
    plain = _logits(tiny_model, batch)
    for form in (SteeringVector, LoRAUpdate, LocalWeightUpdate):
        intervention = form.for_model(tiny_model, LAYER)
        _randomise(intervention, seed=4)
        with intervention.applied(tiny_model, m=0.0):
            assert torch.equal(_logits(tiny_model, batch), plain)
        with intervention.applied(tiny_model, m=torch.zeros(len(small_pairs))):
            assert torch.equal(_logits(tiny_model, batch), plain)


def test_update_is_linear_in_m(tiny_model, small_pairs):
    batch = _batch(tiny_model, small_pairs)
    lora = LoRAUpdate.for_model(tiny_model, LAYER)
    _randomise(lora, seed=5)
    out_hook = lora.hook_names[1]

    def site_output(m):
        with lora.applied(tiny_model, m=m), torch.no_grad():
            _, cache = tiny_model.run_with_cache(
                batch.input_ids, attention_mask=batch.attention_mask, names_filter=[out_hook]
            )
        return cache[out_hook]

    base = site_output(0.0)
    one, two, minus = site_output(1.0) - base, site_output(2.0) - base, site_output(-0.5) - base
    torch.testing.assert_close(two, 2 * one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(minus, -0.5 * one, atol=1e-5, rtol=1e-5)


def test_per_row_multipliers(tiny_llama, small_pairs):
    batch = _batch(tiny_llama, small_pairs)
    vector = SteeringVector.for_model(tiny_llama, LAYER, site="resid")
    _randomise(vector, seed=6)
    ms = torch.tensor([0.0, 1.0, 0.0, 2.0, -1.0])
    with vector.applied(tiny_llama, m=ms):
        mixed = _logits(tiny_llama, batch)
    for row, m in enumerate(ms.tolist()):
        with vector.applied(tiny_llama, m=m):
            torch.testing.assert_close(
                mixed[row], _logits(tiny_llama, batch)[row], atol=1e-5, rtol=0
            )


def test_interventions_compose(tiny_llama, small_pairs):
    batch = _batch(tiny_llama, small_pairs)
    a = SteeringVector.for_model(tiny_llama, LAYER)
    b = SteeringVector.for_model(tiny_llama, LAYER)
    _randomise(a, seed=7)
    _randomise(b, seed=8)
    both = SteeringVector.for_model(tiny_llama, LAYER, vector=(a.bias + 2 * b.bias).detach())
    with steering(tiny_llama, [(a, 1.0), (b, 2.0)]):
        composed = _logits(tiny_llama, batch)
    with a.applied(tiny_llama, 1.0), b.applied(tiny_llama, 2.0):  # nested scopes compose too
        nested = _logits(tiny_llama, batch)
    with both.applied(tiny_llama, 1.0):
        single = _logits(tiny_llama, batch)
    torch.testing.assert_close(composed, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(nested, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", ["prompt", "answer", "all"])
def test_position_mask_is_honoured(tiny_llama, small_pairs, positions):
    batch = _batch(tiny_llama, small_pairs)
    vector = SteeringVector.for_model(tiny_llama, 0, site="resid", positions=positions)
    _randomise(vector, seed=9, scale=2.0)
    plain = _logits(tiny_llama, batch)
    with vector.applied(tiny_llama, 1.0, roles=TokenRoles.from_batch(batch)):
        steered = _logits(tiny_llama, batch)
    changed = (steered - plain).abs().amax(-1) > 1e-6
    first_answer = batch.answer_mask.float().argmax(-1)
    for row in range(len(small_pairs)):
        before_answer = changed[row, : first_answer[row]]
        at_answer = changed[row, batch.answer_mask[row]]
        if positions == "answer":
            assert not before_answer.any() and at_answer.all()
        else:
            assert before_answer[batch.prompt_mask[row, : first_answer[row]]].all()


def test_hooks_are_removed_on_exit_and_on_error(tiny_llama):
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    lora = LoRAUpdate.for_model(tiny_llama, LAYER)
    before = count_forward_hooks(tiny_llama)
    with steering(tiny_llama, [(vector, 1.0), (lora, 1.0)]):
        assert count_forward_hooks(tiny_llama) == before + 3
    assert count_forward_hooks(tiny_llama) == before
    with pytest.raises(RuntimeError, match="inside the block"), vector.applied(tiny_llama, 2.0):
        raise RuntimeError("inside the block")
    assert count_forward_hooks(tiny_llama) == before


def test_parameter_counts_follow_the_table(tiny_llama):
    d_in, d_out = tiny_llama.cfg.d_mlp, tiny_llama.cfg.d_model
    assert SteeringVector.for_model(tiny_llama, 0).num_parameters == d_out
    assert LoRAUpdate.for_model(tiny_llama, 0, rank=4).num_parameters == 4 * (d_in + d_out)
    assert LocalWeightUpdate.for_model(tiny_llama, 0).num_parameters == d_in * d_out + d_out


@pytest.mark.parametrize("form", [SteeringVector, LoRAUpdate, LocalWeightUpdate])
def test_save_and_load_round_trip(tiny_llama, tmp_path, form):
    intervention = form.for_model(tiny_llama, 2, site="resid", positions="answer")
    _randomise(intervention, seed=10)
    intervention.save(tmp_path / "iv", provenance={"seed": 10})
    loaded, provenance = load_intervention(tmp_path / "iv")
    assert type(loaded) is form and loaded.config() == intervention.config()
    assert provenance == {"seed": 10}
    for key, value in intervention.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_bad_fit_and_arguments_are_named(tiny_llama):
    other = load_model("tiny-llama")
    vector = SteeringVector(LAYER, d_in=10, d_out=10, site="resid")
    with pytest.raises(ValueError, match=r"10 -> 10.*64 -> 64"), vector.applied(other, 1.0):
        pass
    with pytest.raises(ValueError, match=r"blocks 0\.\.2"):
        SteeringVector.for_model(tiny_llama, 5)
    with pytest.raises(ValueError, match="unknown site"):
        SteeringVector(0, 4, 4, site="attention")
    with pytest.raises(ValueError, match="unknown positions"):
        SteeringVector(0, 4, 4, positions="middle")
    answer_only = SteeringVector.for_model(tiny_llama, 0, positions="answer")
    with pytest.raises(ValueError, match="needs token roles"), answer_only.applied(tiny_llama, 1.0):
        pass
