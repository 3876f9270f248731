import numpy as np
import pandas as pd
import pytest
import torch

from workbench.measure.log_odds import preference_utility
from workbench.measure.sweeps import SweepLabels, naive_sweep, run_sweep
from workbench.models.loading import load_model
from workbench.steering.forms import LocalWeightUpdate, LoRAUpdate, SteeringVector

COLUMNS = ["L_p", "L_n", "pref_odds", "util_odds", "pref_odds_norm", "util_odds_norm"]
GRID = (-2.0, -0.5, 0.0, 1.0, 3.0)


def _random(intervention, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return intervention


@pytest.mark.parametrize(
    ("form", "layer", "site", "positions"),
    [
        (LoRAUpdate, 1, "mlp_out", "all"),
        (SteeringVector, 2, "resid", "answer"),
        (LocalWeightUpdate, 0, "mlp_out", "prompt"),
    ],
)
def test_engine_equals_the_naive_loop(tiny_model, small_pairs, form, layer, site, positions):
    intervention = _random(form.for_model(tiny_model, layer, site=site, positions=positions))
    fast = run_sweep(
        tiny_model, small_pairs, intervention, GRID, batch_size=2, max_rows=6, progress=False
    )
    slow = naive_sweep(tiny_model, small_pairs, intervention, GRID)
    assert list(fast["pair_id"]) == list(slow["pair_id"]) and list(fast["m"]) == list(slow["m"])
    assert (fast[["T_p", "T_n"]].to_numpy() == slow[["T_p", "T_n"]].to_numpy()).all()
    pd.testing.assert_frame_equal(fast[COLUMNS], slow[COLUMNS], atol=1e-4, rtol=0)
    assert fast.loc[fast["m"] == 0, "L_p"].std() > 0  # the pairs differ
    steered = fast.set_index(["m", "pair_id"])["L_p"]
    assert (steered.loc[3.0] - steered.loc[0.0]).abs().max() > 1e-3  # the steering does something


def test_unsteered_sweep_equals_the_naive_loop(tiny_llama, small_pairs):
    fast = run_sweep(tiny_llama, small_pairs, None, progress=False)
    slow = naive_sweep(tiny_llama, small_pairs, None)
    assert (
        set(fast["m"]) == {0.0} and set(fast["form"]) == {"none"} and len(fast) == len(small_pairs)
    )
    pd.testing.assert_frame_equal(fast[COLUMNS], slow[COLUMNS], atol=1e-4, rtol=0)


def test_table_is_tidy_and_consistent(tiny_llama, small_pairs):
    intervention = _random(SteeringVector.for_model(tiny_llama, 1))
    labels = SweepLabels(method="diff_of_means", seed=3, extra={"strength": 0.2})
    table = run_sweep(tiny_llama, small_pairs, intervention, GRID, labels=labels, progress=False)
    assert len(table) == len(small_pairs) * len(GRID)
    assert table.groupby("m").size().eq(len(small_pairs)).all()
    assert table[["form", "method", "layer", "site", "seed", "strength"]].iloc[0].tolist() == [
        "vector",
        "diff_of_means",
        1,
        "block",
        3,
        0.2,
    ]
    pref, _util, defined = preference_utility(table["L_p"], table["L_n"])
    assert (table["pref_odds"] == pref).all() and (table["util_defined"] == defined).all()
    mass = np.exp(-table["L_p"]) + np.exp(-table["L_n"])
    np.testing.assert_allclose(table["answer_mass"], mass, rtol=1e-9)
    assert (table["A_p"] == [p.positive for p in small_pairs] * len(GRID)).all()
    # the push is |m| times the push at m = 1 (a vector's Δh is linear in m; h is unsteered)
    push = table.pivot(index="pair_id", columns="m", values="push")
    assert (push[0.0] == 0).all() and (push[1.0] > 0).all()
    for m in GRID:
        np.testing.assert_allclose(push[m], abs(m) * push[1.0], rtol=1e-6)
    assert set(table["split"]) == {"train", "test"}


def test_cache_returns_saved_table_and_resumes(tiny_llama, small_pairs, tmp_path, monkeypatch):
    from workbench.measure import sweeps

    intervention = _random(LoRAUpdate.for_model(tiny_llama, 1, rank=2))

    def sweep():
        return run_sweep(
            tiny_llama,
            small_pairs,
            intervention,
            GRID,
            batch_size=2,
            cache_dir=tmp_path,
            progress=False,
        )

    first = sweep()
    folder = next(tmp_path.glob("sweep-*"))
    assert (folder / "table.parquet").is_file() and (folder / "config.json").is_file()

    calls = []
    original = sweeps._batch_losses
    monkeypatch.setattr(
        sweeps, "_batch_losses", lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    )
    again = sweep()
    pd.testing.assert_frame_equal(first, again)
    assert calls == []

    (folder / "table.parquet").unlink()  # as if interrupted after the first two batches
    record = sorted(folder.glob("part-*.json"))[-1]
    record.unlink()
    record.with_suffix(".parquet").unlink()
    resumed = sweep()
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, resumed)

    with torch.no_grad():
        intervention.lora_b.add_(1.0)  # new parameters: a new cache entry, not a stale hit
    sweep()
    assert len(list(tmp_path.glob("sweep-*"))) == 2


def test_bad_grids_are_rejected(tiny_llama, small_pairs):
    intervention = SteeringVector.for_model(tiny_llama, 1)
    for grid, match in [((), "empty"), ((0.0, 0.0), "repeated"), ((float("nan"),), "non-finite")]:
        with pytest.raises(ValueError, match=match):
            run_sweep(tiny_llama, small_pairs, intervention, grid, progress=False)


def test_log_odds_match_an_independent_hf_computation(small_pairs):
    """PrefOdds / UtilOdds from the HF model's own log-probs, with the plain formula."""
    import math

    from workbench.models.loading import load_model
    from workbench.models.tiny import build_tiny_hf_model

    model = load_model("tiny-gemma3", seed=1)
    hf_model, tokenizer = build_tiny_hf_model("gemma3", seed=1)
    table = run_sweep(model, small_pairs, None, progress=False).set_index("pair_id")
    for pair in small_pairs:
        losses = []
        for answer in (pair.positive, pair.negative):
            prompt = [
                tokenizer.bos_token_id,
                *tokenizer(pair.prompt, add_special_tokens=False)["input_ids"],
            ]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = (
                    hf_model(torch.tensor([prompt + answer_ids])).logits[0].double().log_softmax(-1)
                )
            losses.append(
                -sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(answer_ids))
            )
        l_p, l_n = losses
        row = table.loc[pair.id]
        assert row["pref_odds"] == pytest.approx(l_n - l_p, abs=1e-4)
        mass = math.exp(-l_p) + math.exp(-l_n)
        assert row["util_odds"] == pytest.approx(math.log(mass / (1 - mass)), abs=1e-4)


@pytest.mark.parametrize("positions", ["all", "answer", "prompt"])
def test_one_token_answers_share_one_forward_and_equal_the_naive_loop(tiny_model, positions):
    """Yes/No items take the single-forward path; it gives the two-sided numbers."""
    from workbench.data.pairs import ContrastPair

    pairs = [
        ContrastPair(f"q{i}", text, *(("Y", "N") if i % 2 else ("N", "Y")), split="test")
        for i, text in enumerate(["Is it so?", "Would you say that?", "Q"])
    ]
    intervention = _random(LoRAUpdate.for_model(tiny_model, 1, rank=2, positions=positions))
    fast = run_sweep(tiny_model, pairs, intervention, GRID, progress=False)
    slow = naive_sweep(tiny_model, pairs, intervention, GRID)
    pd.testing.assert_frame_equal(fast[COLUMNS], slow[COLUMNS], atol=1e-4, rtol=0)
    assert (fast["T_p"] == 1).all() and (fast["T_n"] == 1).all()


def test_skipping_is_verified_once_per_model_and_layer(small_pairs, monkeypatch):
    from workbench.measure import sweeps

    model = load_model("tiny-llama", device="cpu")  # a fresh model: nothing checked yet
    checks = []
    original = sweeps._batch_losses

    def spy(*args, verify, **kwargs):
        checks.append(verify)
        return original(*args, verify=verify, **kwargs)

    monkeypatch.setattr(sweeps, "_batch_losses", spy)
    vector = SteeringVector.for_model(model, 1)
    for _ in range(2):
        run_sweep(model, small_pairs, vector, GRID, batch_size=2, progress=False)
    assert checks[:3] == [True, False, False] and not any(checks[3:])
    checks.clear()
    run_sweep(model, small_pairs, SteeringVector.for_model(model, 2), GRID, progress=False)
    run_sweep(model, small_pairs, vector, GRID, progress=False, verify=True)
    assert checks == [True, True]
