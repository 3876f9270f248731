"""The comparison: the summary statistics against hand computation, and a small real run."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.concepts import load_concept
from workbench.training.comparison import ComparisonConfig, run_comparison
from workbench.training.summary import format_comparison, split_versus, summarise
from workbench.training.trainer import TrainingConfig


def _sweeps() -> pd.DataFrame:
    """Two methods, three pairs, m in {0, 1, 2}, two seeds; values chosen by hand."""
    pref = {  # method -> m -> per-pair PrefOdds (same for both seeds unless noted)
        "sft": {0.0: [1, -1, 0.5], 1.0: [2, 1, -0.5], 2.0: [6, 5, 4]},
        "split": {0.0: [1, -1, 0.5], 1.0: [3, 2, 1], 2.0: [7, 6, 5]},
    }
    util = {
        "sft": {0.0: [-2, -2, -2], 1.0: [-2.5, -2.5, -2.5], 2.0: [-9, -9, -9]},
        "split": {0.0: [-2, -2, -2], 1.0: [-2, -2, -2], 2.0: [-2.8, -2.8, np.nan]},
    }
    rows = []
    for method in pref:
        for seed in (0, 1):
            for m in (0.0, 1.0, 2.0):
                for i in range(3):
                    shift = 0.5 if (seed == 1 and method == "split") else 0.0
                    rows.append(
                        {
                            "pair_id": f"p{i}",
                            "concept": "c",
                            "form": "vector",
                            "method": method,
                            "layer": 3,
                            "seed": seed,
                            "m": m,
                            "pref_odds": pref[method][m][i] + shift * (m > 0),
                            "util_odds": util[method][m][i],
                            "util_defined": not np.isnan(util[method][m][i]),
                        }
                    )
    return pd.DataFrame(rows)


def test_summary_statistics_equal_hand_computation():
    summary = summarise(_sweeps(), trained_m=1.0, utility_margin=1.0, n_bootstrap=200)
    sft = summary[summary["method"] == "sft"].iloc[0]
    split = summary[summary["method"] == "split"].iloc[0]
    assert sft["accuracy"] == pytest.approx(2 / 3)
    assert sft["pref_odds"] == pytest.approx(2.5 / 3)
    assert sft["util_odds"] == pytest.approx(-2.5)
    # split: seed 1 adds 0.5 at m > 0, so the seed-averaged values are +0.25
    assert split["pref_odds"] == pytest.approx(2.0 + 0.25)
    assert split["accuracy"] == 1.0
    # unsteered utility -2, margin 1: SFT's m = 2 (-9) is out, SPLIT's m = 2 (-2.8) is in
    assert sft["best_m"] == 1.0 and sft["best_pref_within_margin"] == pytest.approx(2.5 / 3)
    assert split["best_m"] == 2.0 and split["best_pref_within_margin"] == pytest.approx(6.25)
    assert split["util_odds_sweep"] == pytest.approx(np.mean([-2, -2, -2, -2.8, -2.8]))
    assert split["util_undefined_rows"] == 2
    assert split["seed_sd_pref_odds"] == pytest.approx(0.25)
    for name in ("pref_odds", "util_odds", "accuracy"):
        assert sft[f"{name}_low"] <= sft[name] <= sft[f"{name}_high"]
    assert "| c | vector | split |" in format_comparison(summary)


def test_split_minus_sft_is_paired_and_judges_the_claim():
    claims = split_versus(_sweeps(), trained_m=1.0, utility_margin=1.0, n_bootstrap=200)
    row = claims.iloc[0]
    assert row["d_pref_odds"] == pytest.approx(2.25 - 2.5 / 3)
    assert row["d_util_odds"] == pytest.approx(0.5)
    assert row["d_best_pref_within_margin"] == pytest.approx(6.25 - 2.5 / 3)
    assert row["d_pref_odds_low"] > 0 and row["holds"]


def test_bad_comparison_settings_are_named():
    with pytest.raises(ValueError, match="forms"):
        ComparisonConfig(forms=("vector", "adapter"))
    with pytest.raises(ValueError, match="trained m"):
        ComparisonConfig(multipliers=(-1.0, 0.0, 2.0))


def test_small_real_run_covers_every_method_and_resumes(tiny_llama, tmp_path):
    config = ComparisonConfig(
        concepts=("sentiment",),
        forms=("vector", "lora"),
        seeds=(0,),
        layer=1,
        multipliers=(-1.0, 0.0, 1.0, 2.0),
        training=TrainingConfig(epochs=1, batch_size=16),
        n_bootstrap=20,
        batch_size=16,
        max_train_pairs=24,
        max_test_pairs=8,
    )
    comparison = run_comparison(tiny_llama, config, out_dir=tmp_path, progress=False)
    sweeps = comparison.sweeps
    methods = sweeps.groupby("form")["method"].unique().map(sorted).to_dict()
    trained = ["reps", "sft", "split", "split_clip_trained", "split_clipped", "split_projected"]
    assert methods == {
        "vector": sorted(["diff_of_means", "ids", "random", *trained]),
        "lora": trained,
        "angular": ["angular"],  # the anchors act on the state: their form is their own
        "ace": ["ace"],
    }
    assert set(sweeps["split"]) == {"test"}
    assert len(comparison.epochs) == 8 * 2  # sft, split, reps, split through the clip × 2 forms
    assert set(comparison.steps["method"]) == {"sft", "split", "reps", "split_clip_trained"}
    assert len(comparison.interventions) == 17 and comparison.layers == {"sentiment": 1}
    clip_trained = comparison.interventions[("sentiment", "lora", "split_clip_trained", 0)]
    assert clip_trained.label == "clipped lora"
    # m = 0 is the unsteered model for every method
    at_zero = sweeps[sweeps["m"] == 0].groupby("pair_id")["pref_odds"].agg(["min", "max"])
    assert np.allclose(at_zero["min"], at_zero["max"], atol=1e-4)
    assert len(list((tmp_path / "artefacts").glob("*.safetensors"))) == 8
    again = run_comparison(tiny_llama, config, out_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(sweeps, again.sweeps)
    pd.testing.assert_frame_equal(comparison.steps, again.steps, check_dtype=False)


def test_pair_files_with_dots_anywhere_write_distinct_artefacts_inside_out(tiny_llama, tmp_path):
    source = tmp_path / "input"
    source.mkdir()
    pairs = [p.to_dict() for p in load_concept("sentiment")][:40]
    concept = source / "mine.v2.json"  # a JSON array: the input must not pass for an artefact
    concept.write_text(json.dumps(pairs), encoding="utf-8")
    before = sorted(source.iterdir())
    config = ComparisonConfig(
        concepts=(str(concept),),
        forms=("vector", "lora"),
        methods=("sft", "split"),
        seeds=(0,),
        layer=1,
        multipliers=(0.0, 1.0),
        training=TrainingConfig(epochs=1, batch_size=16),
        n_bootstrap=10,
        batch_size=16,
        select_m=False,
        max_train_pairs=16,
        max_test_pairs=4,
    )
    out = tmp_path / "out"
    comparison = run_comparison(tiny_llama, config, out_dir=out, progress=False)
    assert sorted(source.iterdir()) == before  # nothing written next to the input
    names = sorted(p.name for p in (out / "artefacts").glob("*.safetensors"))
    assert len(names) == 4 and all(n.startswith("mine.v2.json-") for n in names)
    trained = [
        comparison.interventions[(str(concept), f, m, 0)]
        for f in ("vector", "lora")
        for m in ("sft", "split")
    ]
    flat = [torch.cat([p.detach().flatten() for p in iv.parameters()]) for iv in trained]
    assert not torch.equal(flat[0], flat[1]) and not torch.equal(flat[2], flat[3])
