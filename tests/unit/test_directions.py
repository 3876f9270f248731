from dataclasses import replace

import pandas as pd
import pytest
import torch

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.directions.capture import ActivationSet, capture_activations
from workbench.directions.extract import (
    EXTRACTORS,
    ConceptDirection,
    diff_of_means,
    direction_from_activations,
    extract_direction,
    logistic_probe,
    pca_of_differences,
    random_direction,
)
from workbench.directions.layer_sweep import layer_sweep, recommend_layer
from workbench.errors import HookNameError
from workbench.models.loading import load_model
from workbench.provenance import ModelProvenance, Provenance

HOOK = "blocks.0.hook_resid_post"


def _synthetic(n=60, d=16, seed=0) -> tuple[ActivationSet, torch.Tensor]:
    """Pairs whose differences lie along a known axis u (plus noise), in shuffled row order."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=generator)
    u = u / u.norm()
    base = torch.randn(n, d, generator=generator) * 3
    strength = 2 + torch.rand(n, 1, generator=generator)
    positive = base + strength * u + 0.05 * torch.randn(n, d, generator=generator)
    negative = base - 0.05 * torch.randn(n, d, generator=generator)
    order = torch.randperm(2 * n, generator=generator)
    rows = torch.cat([positive, negative])[order]
    ids = [f"p{i}" for i in range(n)] * 2
    sides = ["positive"] * n + ["negative"] * n
    provenance = Provenance(ModelProvenance("synthetic", "test", None, "raw"), method="synthetic")
    acts = ActivationSet(
        {HOOK: rows},
        [ids[i] for i in order],
        [sides[i] for i in order],
        torch.full((2 * n,), -1),
        torch.full((2 * n,), -1),
        "answer_mean",
        provenance,
    )
    return acts, u


def test_diff_of_means_matches_an_independent_computation():
    acts, _ = _synthetic()
    rows = acts.activations[HOOK].double().numpy()
    sides = pd.Series(acts.sides)
    expected = rows[(sides == "positive").to_numpy()].mean(0) - rows[
        (sides == "negative").to_numpy()
    ].mean(0)
    torch.testing.assert_close(
        diff_of_means(acts, HOOK).double(), torch.from_numpy(expected), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("extractor", [pca_of_differences, logistic_probe])
def test_extractors_recover_the_axis_with_positive_sign_and_matched_norm(extractor):
    acts, u = _synthetic()
    direction = extractor(acts, HOOK, 0)
    cosine = float(direction @ u / direction.norm())
    assert cosine > (0.99 if extractor is pca_of_differences else 0.5)
    torch.testing.assert_close(direction.norm(), diff_of_means(acts, HOOK).norm())


def test_random_direction_is_seeded_with_matched_norm():
    acts, _ = _synthetic()
    a, b, c = (random_direction(acts, HOOK, s) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(), diff_of_means(acts, HOOK).norm())


def test_concept_direction_records_provenance_and_round_trips(tiny_llama, small_pairs, tmp_path):
    direction = extract_direction(
        tiny_llama, small_pairs, layer=1, method="pca_of_differences", seed=7
    )
    assert (direction.model_name, direction.numerics, direction.seed) == ("tiny-llama", "raw", 7)
    assert direction.dataset_hash == small_pairs.content_hash()
    acts = capture_activations(
        tiny_llama, small_pairs, ["blocks.1.hook_resid_post"], progress=False
    )
    expected_norm = acts.activations["blocks.1.hook_resid_post"].norm(dim=-1).mean()
    assert direction.mean_resid_norm == pytest.approx(float(expected_norm), rel=1e-5)
    torch.testing.assert_close(
        direction.scaled_to(0.5).norm(), torch.tensor(0.5 * direction.mean_resid_norm)
    )

    direction.save(tmp_path / "dir")
    loaded = ConceptDirection.load(tmp_path / "dir", tiny_llama)
    assert torch.equal(loaded.vector, direction.vector)
    assert loaded.provenance == direction.provenance
    assert (loaded.layer, loaded.hook, loaded.method) == (
        1,
        "blocks.1.hook_resid_post",
        "pca_of_differences",
    )


def test_direction_at_the_mlp_output_hook(tiny_llama, small_pairs):
    direction = extract_direction(
        tiny_llama, small_pairs, layer=2, hook="blocks.2.mlp.out.hook_out"
    )
    assert direction.vector.shape == (tiny_llama.cfg.d_model,) and direction.layer == 2


def test_loading_onto_a_mismatched_model_fails_clearly(tiny_llama, small_pairs, tmp_path):
    direction = extract_direction(tiny_llama, small_pairs, layer=2)
    wide = ConceptDirection(
        torch.ones(99), 2, direction.hook, "diff_of_means", 1.0, direction.provenance
    )
    wide.save(tmp_path / "wide")
    with pytest.raises(ValueError, match="width 99"):
        ConceptDirection.load(tmp_path / "wide", tiny_llama)
    deep = ConceptDirection(
        direction.vector,
        40,
        "blocks.40.hook_resid_post",
        "diff_of_means",
        1.0,
        direction.provenance,
    )
    deep.save(tmp_path / "deep")
    with pytest.raises(HookNameError, match=r"blocks\.40\.hook_resid_post"):
        ConceptDirection.load(tmp_path / "deep", tiny_llama)
    with pytest.raises(ValueError, match="zero"):
        ConceptDirection(
            torch.zeros(64), 2, direction.hook, "diff_of_means", 1.0, direction.provenance
        )
    with pytest.raises(ValueError, match="unknown direction method"):
        direction_from_activations(
            capture_activations(tiny_llama, small_pairs, [direction.hook]), direction.hook, "magic"
        )


def _persona_pairs(n: int = 16) -> PairDataset:
    """Yes/No items, half with " Yes" as the concept answer; every 4th is test."""
    return PairDataset(
        ContrastPair(
            f"q{i:02d}",
            f"Statement number {i} about {'parties' if i % 2 else 'books'}?",
            " Yes" if i % 2 else " No",
            " No" if i % 2 else " Yes",
            concept="c",
            split="test" if i % 4 == 3 else "train",
        )
        for i in range(n)
    )


def test_layer_sweep_table_and_recommendation():
    model = load_model("tiny-gemma3")
    sweep = layer_sweep(model, _persona_pairs(), progress=False)
    assert set(sweep.table["method"]) == set(EXTRACTORS)
    assert sorted(set(sweep.table["layer"])) == [0, 1, 2]
    assert len(sweep.table) == 3 * len(EXTRACTORS)
    for column in ("auroc", "probe_accuracy", "paired_accuracy"):
        assert sweep.table[column].between(0, 1).all()
    assert sweep.recommended_layer == recommend_layer(sweep.table)
    assert not {p for p in sweep.train.pair_ids + sweep.validation.pair_ids} & {
        p.id for p in _persona_pairs().test
    }


def test_layer_sweep_never_reads_test_pairs(monkeypatch):
    """Test pairs may be anything at all: the sweep's table does not change."""
    from workbench.directions import layer_sweep as module

    seen: list[str] = []
    capture = module.capture_activations

    def recording(model, pairs, *args, **kwargs):
        seen.extend(p.id for p in pairs)
        return capture(model, pairs, *args, **kwargs)

    monkeypatch.setattr(module, "capture_activations", recording)
    model = load_model("tiny-llama")
    pairs = _persona_pairs()
    first = layer_sweep(model, pairs, methods=("balanced_diff_of_means",), progress=False)
    assert seen and not set(seen) & {p.id for p in pairs.test}
    changed = pairs.map(lambda p: replace(p, prompt="other text") if p.split == "test" else p)
    again = layer_sweep(model, changed, methods=("balanced_diff_of_means",), progress=False)
    pd.testing.assert_frame_equal(first.table, again.table)


def test_balanced_diff_of_means_cancels_the_answer_token():
    """Rows = concept ± answer-token identity: plain DiffMean carries the token part when the
    concept answer is mostly " Yes"; the balanced one recovers the concept exactly."""
    concept, token = torch.tensor([1.0, 0, 0]), torch.tensor([0, 5.0, 0])
    yes = [True, True, True, False]  # 3 of 4 items have " Yes" as the concept answer
    positive = torch.stack([concept / 2 + (token if y else -token) for y in yes])
    negative = torch.stack([-concept / 2 + (-token if y else token) for y in yes])
    ids = [f"p{i}" for i in range(4)]
    provenance = Provenance(model=load_model("tiny-llama").workbench_provenance, method="test")
    acts = ActivationSet(
        {"blocks.0.hook_resid_post": torch.cat([positive, negative])},
        ids * 2,
        ["positive"] * 4 + ["negative"] * 4,
        torch.full((8,), -1),
        torch.full((8,), -1),
        "answer_mean",
        provenance,
        answer_groups={i: ("Yes|No" if y else "No|Yes") for i, y in zip(ids, yes)},
    )
    balanced = EXTRACTORS["balanced_diff_of_means"](acts, "blocks.0.hook_resid_post")
    plain = EXTRACTORS["diff_of_means"](acts, "blocks.0.hook_resid_post")
    torch.testing.assert_close(balanced, concept)
    assert plain[1] == pytest.approx(5.0)  # (3 - 1) / 4 · 2 · 5: the token leaks in


def test_recommend_layer_prefers_effect_size_among_near_best_auroc():
    table = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3, 3],
            "method": ["diff_of_means"] * 4 + ["random"],
            "auroc": [0.80, 0.99, 0.985, 0.90, 1.0],
            "effect_size": [5.0, 1.5, 2.5, 9.0, 9.9],
        }
    )
    assert recommend_layer(table) == 2
