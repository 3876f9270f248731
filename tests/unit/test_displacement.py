import numpy as np
import pytest
import torch

from workbench.manifold.displacement import displacement_table, downstream_hooks, measured_validity
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.valid import collect_valid_activations, token_activations
from workbench.measure.sweeps import run_sweep
from workbench.steering.forms import SteeringVector

LAYER = 1


@pytest.fixture(scope="module")
def fitted(tiny_llama_module, pairs_module):
    model = tiny_llama_module
    hooks = downstream_hooks(model, LAYER)
    valid = collect_valid_activations(model, hooks, pairs_module, sources=("neutral", "answers"))
    manifolds = {
        h: ActivationManifold(n_components=8).fit(valid.fitting(h), calibration=valid.held_out(h))
        for h in hooks
    }
    return model, manifolds


@pytest.fixture(scope="module")
def tiny_llama_module():
    from workbench.models.loading import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def pairs_module():
    from workbench.data.concepts import load_concept

    return load_concept("sentiment").train[:6]


def test_in_subspace_vector_has_no_off_manifold_part_and_orthogonal_has_no_on(fitted, pairs_module):
    model, manifolds = fitted
    hook = f"blocks.{LAYER}.hook_resid_post"
    basis = torch.from_numpy(manifolds[hook].pca_.components_).float()
    inside = basis[0] * 2 + basis[1]
    outside = torch.randn(basis.shape[1], generator=torch.Generator().manual_seed(0))
    outside -= basis.T @ (basis @ outside)
    for vector, zero_part in ((inside, "off_manifold"), (outside, "on_manifold")):
        steer = SteeringVector.for_model(model, LAYER, site="resid", vector=vector)
        table = displacement_table(
            model, pairs_module, steer, [0.0, 1.5], manifolds, {hook: vector}, progress=False
        )
        own = table[(table["hook"] == hook) & (table["m"] == 1.5)]
        assert own[zero_part].abs().max() < 1e-4
        other = "on_manifold" if zero_part == "off_manifold" else "off_manifold"
        np.testing.assert_allclose(own[other], 1.5 * float(vector.norm()), rtol=1e-4)
        np.testing.assert_allclose(own["concept_projection"], 1.5 * float(vector.norm()), rtol=1e-4)
        unsteered = table[table["m"] == 0.0]
        assert (
            unsteered[["on_manifold", "off_manifold", "kl_from_unsteered"]].abs().max() < 1e-6
        ).all()
        np.testing.assert_allclose(unsteered["norm_ratio"], 1.0, atol=1e-6)


def test_table_joins_the_sweep_and_validity_falls_with_large_pushes(fitted, pairs_module):
    model, manifolds = fitted
    vector = SteeringVector.for_model(
        model,
        LAYER,
        site="resid",
        vector=torch.randn(64, generator=torch.Generator().manual_seed(1)),
    )
    grid = [-8.0, 0.0, 8.0]
    table = displacement_table(model, pairs_module, vector, grid, manifolds, progress=False)
    assert len(table) == len(pairs_module) * 2 * len(grid) * len(manifolds)
    sweep = run_sweep(model, pairs_module, vector, grid, progress=False)
    keys = ["pair_id", "split", "concept", "form", "layer", "site", "m"]
    joined = table.merge(sweep, on=keys, how="left", validate="many_to_one")
    assert joined["pref_odds"].notna().all()
    validity = measured_validity(table).set_index(["hook", "m"])["validity"]
    own = f"blocks.{LAYER}.hook_resid_post"
    assert validity[(own, 0.0)] > validity[(own, 8.0)]
    assert table.loc[table["m"] != 0, "kl_from_unsteered"].min() > 0


def test_bad_hooks_and_token_rows(fitted, pairs_module):
    model, manifolds = fitted
    early = SteeringVector.for_model(model, 2, site="resid")
    with pytest.raises(ValueError, match="not at or after"):
        displacement_table(model, pairs_module, early, [1.0], manifolds, progress=False)
    acts, owner = token_activations(model, ["ab", "cde"], None, ["blocks.0.hook_resid_post"])
    assert acts["blocks.0.hook_resid_post"].shape[0] == 5 and owner.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown valid-text sources"):
        collect_valid_activations(
            model, ["blocks.0.hook_resid_post"], pairs_module, sources=("web",)
        )


def test_the_manifold_is_fitted_on_training_text_only(tiny_llama_module, monkeypatch):
    from workbench.data.concepts import load_concept
    from workbench.pipelines import manifold as pipeline

    pairs = load_concept("sentiment")
    with pytest.raises(ValueError, match="training text only"):
        collect_valid_activations(tiny_llama_module, ["blocks.0.hook_resid_post"], list(pairs))
    seen = []

    def recording(model, hooks, given, **kwargs):
        seen.extend(given)
        raise RuntimeError("stop after the fit's input is known")

    monkeypatch.setattr(pipeline, "collect_valid_activations", recording)
    with pytest.raises(RuntimeError, match="stop after"):
        pipeline.manifold_analysis(tiny_llama_module, {"sentiment": pairs}, layer=LAYER)
    assert seen and {p.split for p in seen} == {"train"}


def test_states_and_answer_logits_equal_the_full_forward(tiny_model, small_pairs):
    from workbench.data.encoding import encode_pairs
    from workbench.hooks.forward import states_and_final_norm, unembed

    batch = encode_pairs(tiny_model.tokenizer, list(small_pairs), "positive", prepend_bos=True)
    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    forward = dict(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    logits, cache = tiny_model.run_with_cache(
        batch.input_ids, names_filter=hooks, return_cache_object=False, **forward
    )
    states, normed = states_and_final_norm(tiny_model, batch.input_ids, hooks, **forward)
    answer = batch.answer_mask
    torch.testing.assert_close(unembed(tiny_model, normed[answer]), logits[answer])
    for hook in hooks:
        torch.testing.assert_close(states[hook], cache[hook])
