"""Steers that act on the state: their invariants, and that they compose like any intervention."""

import math

import numpy as np
import pytest
import torch

from workbench.data.encoding import encode_pairs
from workbench.errors import ConfigError
from workbench.hooks.forward import run_batch_with_cache
from workbench.hooks.sites import site_scales
from workbench.manifold.estimator import ActivationManifold
from workbench.measure.sweeps import naive_sweep, run_sweep
from workbench.steering.forms import SteeringVector
from workbench.steering.generation import generate_tokens
from workbench.steering.io import load_intervention
from workbench.steering.roles import TokenRoles
from workbench.steering.state import (
    AffineConceptEdit,
    AngularSteer,
    DistanceScaled,
    ManifoldClip,
)
from workbench.training.trainer import TrainingConfig, train_intervention

LAYER = 1


def _states(model, pairs, side="positive"):
    batch = encode_pairs(model.tokenizer, pairs, side, prepend_bos=True)
    hook = f"blocks.{LAYER}.hook_resid_post"
    states = run_batch_with_cache(model, batch, [hook], None)[hook]
    return states[batch.attention_mask.bool()].detach()


def _direction(model, seed=3):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


def _vector(model):
    scales = site_scales(model, "block", LAYER)
    return SteeringVector.along(model, LAYER, _direction(model, 5), scales)


def _manifold(states, k=4):
    return ActivationManifold(n_components=k).fit(states.double().numpy())


def _steers(model, pairs):
    states = _states(model, pairs)
    scales = site_scales(model, "block", LAYER)
    negative = _states(model, pairs, "negative")
    vector = _vector(model)
    manifold = _manifold(states)
    return {
        "angular": AngularSteer.plane(model, LAYER, _direction(model), states),
        "ace": AffineConceptEdit.fit(model, LAYER, _direction(model), negative, scales),
        "ids": DistanceScaled.fit(vector, states, negative, variance=0.6),
        "clip": ManifoldClip.fit(vector, manifold, states, strength=1.0),
    }


def test_angular_keeps_the_norm_and_turns_toward_the_direction(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs).double()
    steer = AngularSteer.plane(tiny_llama, LAYER, _direction(tiny_llama), states).double()
    d_hat = steer.direction
    before = torch.nn.functional.cosine_similarity(states, d_hat[None], dim=-1)
    plane = torch.stack([steer.direction, steer.axis])

    def outside(h):
        return h - (h @ plane.T) @ plane

    for m in (0.5, 3.0, 8.0, -2.0, -8.0):
        steered = steer.steer(states, states, m)
        assert torch.allclose(steered.norm(dim=-1), states.norm(dim=-1), rtol=1e-5, atol=0)
        # the part outside the plane is untouched
        assert torch.allclose(outside(steered), outside(states), atol=1e-8)
        after = torch.nn.functional.cosine_similarity(steered, d_hat[None], dim=-1)
        assert bool((after >= before - 1e-9).all() if m > 0 else (after <= before + 1e-9).all())
    # at |m|·unit = 1 every in-plane component points along ±d̂
    full = steer.steer(states, states, 1 / steer.unit)
    assert float((full @ steer.axis).abs().max()) < 1e-8
    assert bool((full @ d_hat > 0).all())
    assert torch.allclose(steer.steer(states, states, 0.0), states, atol=1e-10)


def test_angular_keeps_the_norm_in_float32_under_the_hook(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs)
    steer = AngularSteer.plane(tiny_llama, LAYER, _direction(tiny_llama), states)
    batch = encode_pairs(tiny_llama.tokenizer, small_pairs, "positive", prepend_bos=True)
    hook = steer.hook_names[1]
    plain = run_batch_with_cache(tiny_llama, batch, [hook], None)[hook]
    with steer.applied(tiny_llama, m=4.0, roles=TokenRoles.from_batch(batch)):
        steered = run_batch_with_cache(tiny_llama, batch, [hook], None)[hook]
    real = batch.attention_mask.bool()
    assert (steered - plain)[real].norm(dim=-1).max() > 1e-3  # it steers
    ratio = steered[real].norm(dim=-1) / plain[real].norm(dim=-1)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_ace_sets_the_concept_coordinate(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs)
    negative = _states(tiny_llama, small_pairs, "negative")
    scales = site_scales(tiny_llama, "block", LAYER)
    edit = AffineConceptEdit.fit(tiny_llama, LAYER, _direction(tiny_llama), negative, scales)
    push = edit.scale * math.sqrt(edit.d_out)
    for m in (1.0, -2.0):
        steered = edit.steer(states, states, m)
        expected = torch.full((len(states),), float(edit.reference) + m * push)
        assert torch.allclose(steered @ edit.direction, expected, rtol=1e-4, atol=1e-4)
        orthogonal = lambda h: h - (h @ edit.direction)[:, None] * edit.direction  # noqa: E731
        assert torch.allclose(orthogonal(steered), orthogonal(states), atol=1e-4)
    # the reference is the negative class's mean coordinate
    mean_coordinate = float((negative @ edit.direction).mean())
    assert float(edit.reference) == pytest.approx(mean_coordinate, rel=1e-5)


def test_distance_scaling_pushes_far_states_more(tiny_llama, small_pairs):
    positive = _states(tiny_llama, small_pairs)
    negative = _states(tiny_llama, small_pairs, "negative")
    vector = _vector(tiny_llama)
    scaled = DistanceScaled.fit(vector, positive, negative, variance=0.6, cap=3.0)
    factors = scaled.factor(positive, 1.0)
    assert float(factors.median()) == pytest.approx(1.0, abs=1e-5)  # median distance = radius
    far = positive + 50 * positive.std() * torch.randn_like(positive)
    assert bool((scaled.factor(far, 1.0) >= factors.median()).all())
    assert float(scaled.factor(far, 1.0).max()) <= 3.0
    update = scaled.steer(positive, positive, 2.0) - positive
    expected = 2.0 * factors[:, None] * vector.raw_vector[None]
    assert torch.allclose(update, expected, rtol=1e-4, atol=1e-4)


def test_clip_is_idempotent_and_strength_zero_is_the_inner_steer(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs)
    vector = _vector(tiny_llama)
    manifold = _manifold(states)
    clip = ManifoldClip.fit(vector, manifold, states, strength=1.0)
    steered = vector.steer(states, states, 6.0)
    once = clip.project(steered, states)
    assert (once - steered).norm(dim=-1).max() > 1e-3  # it moved the states
    assert torch.allclose(clip.project(once, states), once, atol=1e-5)
    # never further from the subspace than the larger of tau and the unsteered residual
    limit = clip.projection.residual_norm(states).clamp(min=clip.tau)
    assert bool((clip.projection.residual_norm(once) <= limit * (1 + 1e-5)).all())
    loose = ManifoldClip.fit(vector, manifold, states, strength=0.0)
    assert torch.equal(loose.steer(states, states, 6.0), vector.steer(states, states, 6.0))
    half = ManifoldClip.fit(vector, manifold, states, strength=0.5)
    assert torch.allclose(half.steer(states, states, 6.0), (steered + once) / 2, atol=1e-5)


@pytest.mark.parametrize("name", ["angular", "ace", "ids", "clip"])
def test_state_steers_sweep_save_and_generate(tiny_llama, small_pairs, tmp_path, name):
    steer = _steers(tiny_llama, small_pairs)[name]
    grid = [-2.0, 0.0, 1.5]
    fast = run_sweep(tiny_llama, small_pairs, steer, grid, progress=False, verify=True)
    slow = naive_sweep(tiny_llama, small_pairs, steer, grid)
    merged = fast.merge(slow, on=["pair_id", "m"], suffixes=("", "_naive"))
    assert np.allclose(merged["pref_odds"], merged["pref_odds_naive"], atol=1e-4)
    unsteered = fast[fast["m"] == 0]["pref_odds"].to_numpy()
    steered = fast[fast["m"] == 1.5]["pref_odds"].to_numpy()
    assert not np.allclose(unsteered, steered)  # it changes the model
    assert fast[fast["m"] == 0]["push"].eq(0).all()
    loaded, _ = load_intervention(steer.save(tmp_path / name))
    assert type(loaded) is type(steer) and loaded.config() == steer.config()
    assert loaded.config()["acts_on"] == "state"
    h = torch.randn(3, 5, steer.d_out)
    saved, read = steer.state_dict(), loaded.state_dict()
    assert saved.keys() == read.keys() and all(torch.equal(saved[k], read[k]) for k in saved)
    # the same parameters, read from other memory: equal up to the rounding of the BLAS path
    assert torch.allclose(loaded.steer(h, h, 1.5), steer.steer(h, h, 1.5), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="not a weight update"):
        steer.dense_update()
    prompts = [pair.prompt for pair in small_pairs[:2]]
    plain = generate_tokens(tiny_llama, prompts, [(steer, 0.0)], max_new_tokens=4)
    steered = generate_tokens(tiny_llama, prompts, [(steer, 8.0)], max_new_tokens=4)
    cached = generate_tokens(tiny_llama, prompts, [(steer, 8.0)], max_new_tokens=4, use_cache=False)
    assert len(steered) == 2 and steered == cached and len(plain) == 2


def test_split_trains_through_the_clip(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs)
    vector = SteeringVector.for_model(tiny_llama, LAYER, positions="answer")
    clip = ManifoldClip.fit(vector, _manifold(states), states, strength=1.0)
    config = TrainingConfig(epochs=2, batch_size=4, multipliers=(1.0,), seed=0)
    before = vector.bias.detach().clone()
    pairs = list(small_pairs)
    result = train_intervention(tiny_llama, clip, pairs[:4], pairs[4:], config, progress=False)
    assert not torch.equal(vector.bias.detach(), before)  # the inner vector was trained
    assert result.epochs["epoch"].max() == 2
    assert result.intervention is clip


def test_bad_settings_are_refused(tiny_llama, small_pairs):
    states = _states(tiny_llama, small_pairs)
    vector = _vector(tiny_llama)
    with pytest.raises(ConfigError, match="strength"):
        ManifoldClip.fit(vector, _manifold(states), states, strength=1.5)
    with pytest.raises(ConfigError, match="zero"):
        AngularSteer.plane(tiny_llama, LAYER, torch.zeros(tiny_llama.cfg.d_model), states)
    clip = ManifoldClip.fit(vector, _manifold(states), states)
    with pytest.raises(ConfigError, match="already wrapped"):
        ManifoldClip.fit(clip, _manifold(states), states)
