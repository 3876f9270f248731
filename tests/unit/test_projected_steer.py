"""The projected steer: no off-subspace component, still a weight update, saved exactly."""

import numpy as np
import pytest
import torch

from workbench.data.encoding import encode_pairs
from workbench.hooks.forward import run_batch_with_cache
from workbench.manifold.estimator import ActivationManifold
from workbench.steering.forms import FORMS
from workbench.steering.io import load_intervention
from workbench.steering.projected import (
    ManifoldProjection,
    ProjectedIntervention,
    off_manifold_excess,
)
from workbench.steering.roles import TokenRoles
from workbench.training.trainer import TrainingConfig, train_intervention

LAYER = 1


def _fitted_projection(width: int, k: int = 5, seed: int = 0) -> ManifoldProjection:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(width, k)))[0].T
    points = rng.normal(size=(400, k)) * 3 @ basis + rng.normal(size=(400, width)) * 0.05
    manifold = ActivationManifold(n_components=k).fit(points + 2.0)
    return ManifoldProjection.from_manifold(manifold)


def _randomised(form, model, seed=1):
    intervention = FORMS[form].for_model(model, LAYER)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return intervention


@pytest.mark.parametrize("form", sorted(FORMS))
def test_projected_update_has_no_off_subspace_component(tiny_llama, small_pairs, form):
    projection = _fitted_projection(tiny_llama.cfg.d_model)
    inner = _randomised(form, tiny_llama)
    projected = ProjectedIntervention(inner, projection, strength=1.0)
    batch = encode_pairs(tiny_llama.tokenizer, small_pairs, "positive", prepend_bos=True)
    hook = inner.hook_names[1]
    plain = run_batch_with_cache(tiny_llama, batch, [hook], None)[hook]
    with projected.applied(tiny_llama, m=2.5, roles=TokenRoles.from_batch(batch)):
        steered = run_batch_with_cache(tiny_llama, batch, [hook], None)[hook]
    shift = (steered - plain)[batch.attention_mask.bool()]
    assert shift.norm(dim=-1).max() > 1e-2  # it steers
    off = projection.off_subspace(shift)
    assert off.norm(dim=-1).max() < 1e-4 * shift.norm(dim=-1).max()
    # and the off-subspace part of the unprojected update was not small
    h_in = torch.randn(7, inner.d_in)
    assert projection.off_subspace(inner.delta(h_in)).norm() > 0.5 * inner.delta(h_in).norm()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_strength_interpolates_and_the_projection_is_a_weight_update(tiny_llama, form):
    projection = _fitted_projection(tiny_llama.cfg.d_model)
    inner = _randomised(form, tiny_llama)
    h_in = torch.randn(5, inner.d_in)
    full = inner.delta(h_in)
    off = projection.off_subspace(full)
    for strength in (0.0, 0.4, 1.0):
        projected = ProjectedIntervention(inner, projection, strength=strength)
        assert torch.allclose(projected.delta(h_in), full - strength * off, atol=1e-5)
        weight, bias = projected.dense_update()
        assert torch.allclose(projected.delta(h_in), h_in @ weight.T + bias, atol=1e-4)
    assert torch.equal(ProjectedIntervention(inner, projection, 0.0).delta(h_in), full)


def test_saved_projected_intervention_loads_back_exactly(tiny_llama, tmp_path):
    projection = _fitted_projection(tiny_llama.cfg.d_model)
    projected = ProjectedIntervention(_randomised("lora", tiny_llama), projection, strength=0.7)
    loaded, _ = load_intervention(projected.save(tmp_path / "projected"))
    assert isinstance(loaded, ProjectedIntervention)
    assert loaded.form == "lora" and loaded.strength == 0.7
    h_in = torch.randn(3, projected.d_in)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in projected.state_dict().items())
    assert torch.allclose(loaded.delta(h_in), projected.delta(h_in), atol=1e-6)


def test_off_manifold_excess_counts_only_the_push_beyond_the_unsteered_state():
    projection = _fitted_projection(8, k=2)
    states = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(off_manifold_excess(projection, states, states, mask)) == 0.0
    push = projection.off_subspace(torch.randn(8))
    steered = states + push
    expected = (
        torch.relu(projection.residual_norm(steered) - projection.residual_norm(states))[
            mask
        ].mean()
        / projection.scale
    )
    assert float(off_manifold_excess(projection, states, steered, mask)) == pytest.approx(
        float(expected)
    )
    inside = states + projection.on_subspace(torch.randn(8))
    assert float(off_manifold_excess(projection, states, inside, mask)) < 1e-5


def test_the_training_penalty_keeps_the_trained_update_nearer_the_subspace(tiny_llama, small_pairs):
    projection = _fitted_projection(tiny_llama.cfg.d_model)
    off_share = {}
    for penalty in (0.0, 50.0):
        config = TrainingConfig(
            epochs=3, batch_size=4, off_manifold_penalty=penalty, patience=0, seed=0
        )
        vector = FORMS["vector"].for_model(tiny_llama, LAYER)
        train_intervention(
            tiny_llama,
            vector,
            small_pairs,
            small_pairs,
            config,
            projection=projection,
            progress=False,
        )
        bias = vector.bias.detach()
        off_share[penalty] = float(projection.off_subspace(bias).norm() / bias.norm())
    assert off_share[50.0] < off_share[0.0]


def test_mismatched_widths_and_strengths_are_rejected(tiny_llama):
    inner = _randomised("vector", tiny_llama)
    with pytest.raises(ValueError, match="width"):
        ProjectedIntervention(inner, _fitted_projection(tiny_llama.cfg.d_model + 1))
    with pytest.raises(ValueError, match="strength"):
        ProjectedIntervention(inner, _fitted_projection(tiny_llama.cfg.d_model), strength=1.5)
    with pytest.raises(ValueError, match="not fitted"):
        ManifoldProjection.from_manifold(ActivationManifold())


def test_a_projected_intervention_says_so_and_keeps_its_weight_form(tiny_llama):
    from workbench.steering.forms import LoRAUpdate
    from workbench.steering.projected import ManifoldProjection, ProjectedIntervention

    inner = LoRAUpdate.for_model(tiny_llama, 1, rank=2)
    subspace = ManifoldProjection(torch.eye(inner.d_out)[:3], torch.zeros(inner.d_out), 1.0)
    projected = ProjectedIntervention(inner, subspace)
    assert (projected.form, projected.label) == ("lora", "projected lora")
    assert inner.label == "lora" and "projection" in projected.config()
