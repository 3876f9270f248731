"""The unified view, proven: each form is exactly the weight edit it claims to be."""

import pytest
import torch
from torch import nn

from workbench.data.encoding import encode_pairs
from workbench.hooks.scoped import count_forward_hooks
from workbench.hooks.sites import site_scales
from workbench.models.loading import load_model
from workbench.models.tiny import build_tiny_hf_model
from workbench.steering.apply import steering
from workbench.steering.forms import LocalWeightUpdate, LoRAUpdate, SteeringVector
from workbench.steering.io import load_intervention
from workbench.steering.roles import TokenRoles

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


@pytest.mark.parametrize(
    ("arch", "site"), [("llama", "mlp_out"), ("gemma3", "mlp_out"), ("llama", "block")]
)
def test_local_weight_update_equals_editing_the_real_down_projection(arch, site, small_pairs):
    """mlp_out is the exact weight edit everywhere; the block site is too without a post-MLP
    norm (Llama). Scales are measured, so the proof covers the unit conversion as well."""
    bridge = load_model(f"tiny-{arch}")
    scales = site_scales(bridge, site, LAYER, n_texts=8)
    update = LocalWeightUpdate.for_model(bridge, LAYER, site=site, scales=scales)
    assert update.scale != 1.0 and update.input_scale != 1.0
    _randomise(update, seed=1)
    raw_weight, raw_bias = update.dense_update()
    m = 0.7
    batch = _batch(bridge, small_pairs)
    with update.applied(bridge, m=m):
        steered = _logits(bridge, batch)

    edited, _ = build_tiny_hf_model(arch, seed=0)
    down = edited.model.layers[LAYER].mlp.down_proj
    replacement = nn.Linear(down.in_features, down.out_features, bias=True)
    with torch.no_grad():
        replacement.weight.copy_(down.weight + m * raw_weight)
        base_bias = down.bias if down.bias is not None else 0.0
        replacement.bias.copy_(base_bias + m * raw_bias)
    edited.model.layers[LAYER].mlp.down_proj = replacement
    with torch.no_grad():
        reference = edited(batch.input_ids, attention_mask=batch.attention_mask).logits
    assert (steered - _logits(bridge, batch)).abs().max() > 1e-2  # the edit does something
    torch.testing.assert_close(steered, reference, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("form", [SteeringVector, LoRAUpdate, LocalWeightUpdate])
def test_block_site_delta_reaches_the_residual_stream_unchanged(form, small_pairs):
    """On Gemma 3 (post-feedforward norm) the block site adds Δh to the block output as is,
    while the same update at mlp_out is renormalised before it reaches the residual stream."""
    bridge = load_model("tiny-gemma3")
    batch = _batch(bridge, small_pairs)
    scales = site_scales(bridge, "block", LAYER, n_texts=8)
    intervention = form.for_model(bridge, LAYER, site="block", scales=scales)
    _randomise(intervention, seed=11)
    names = [f"blocks.{LAYER}.mlp.out.hook_in", f"blocks.{LAYER}.hook_resid_post"]

    def cached(iv=None, m=0.0):
        with steering(bridge, [(iv, m)] if iv is not None else []), torch.no_grad():
            _, cache = bridge.run_with_cache(
                batch.input_ids, attention_mask=batch.attention_mask, names_filter=names
            )
        return cache

    plain = cached()
    steered = cached(intervention, 2.5)
    expected = 2.5 * intervention.delta(plain[names[0]])
    torch.testing.assert_close(steered[names[1]] - plain[names[1]], expected, atol=1e-4, rtol=1e-4)
    assert expected.abs().max() > 1e-2

    at_mlp = form.for_model(bridge, LAYER, site="mlp_out")
    at_mlp.load_state_dict(intervention.state_dict())
    at_mlp.scale, at_mlp.input_scale = intervention.scale, intervention.input_scale
    through_norm = cached(at_mlp, 2.5)[names[1]] - plain[names[1]]
    assert (through_norm - expected).abs().max() > 1e-2  # the post-MLP norm changed it


def test_scales_give_m_in_units_of_the_typical_norm(tiny_model, small_pairs):
    scales = site_scales(tiny_model, "block", LAYER, n_texts=16)
    assert scales.output_norm == pytest.approx(scales.output * tiny_model.cfg.d_model**0.5)
    direction = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vector = SteeringVector.along(tiny_model, LAYER, direction * 7.0, scales)
    push = vector.delta(torch.zeros(1, tiny_model.cfg.d_mlp)).norm()
    assert float(push) == pytest.approx(scales.output_norm, rel=1e-5)
    torch.testing.assert_close(
        vector.raw_vector / vector.raw_vector.norm(), direction / direction.norm()
    )
    batch = _batch(tiny_model, small_pairs)
    with steering(
        tiny_model, [(vector, 0.5)], TokenRoles.from_batch(batch), record_push=True
    ) as state:
        _logits(tiny_model, batch)
    # ‖Δh‖ / ‖h‖ per row: half the typical norm over each row's own norms (positive, finite)
    assert state.push[0].shape == (len(small_pairs),)
    assert torch.isfinite(state.push[0]).all() and (state.push[0] > 0).all()
    with pytest.raises(ValueError, match="measured at site 'block' layer 1"):
        SteeringVector.for_model(tiny_model, 2, scales=scales)


@pytest.mark.parametrize("site", ["block", "mlp_out", "resid"])
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
    scales = site_scales(tiny_llama, "resid", 2, n_texts=8)
    intervention = form.for_model(tiny_llama, 2, site="resid", positions="answer", scales=scales)
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
    # ConfigError without a runtime type checker, the suite's Literal check with one
    with pytest.raises((ValueError, TypeError), match="attention"):
        SteeringVector(0, 4, 4, site="attention")
    with pytest.raises((ValueError, TypeError), match="middle"):
        SteeringVector(0, 4, 4, positions="middle")
    answer_only = SteeringVector.for_model(tiny_llama, 0, positions="answer")
    with pytest.raises(ValueError, match="needs token roles"), answer_only.applied(tiny_llama, 1.0):
        pass
