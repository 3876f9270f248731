import numpy as np
import pandas as pd
import pytest

from workbench import cli


def test_unknown_concept_fails_before_loading_a_model(monkeypatch, capsys):
    monkeypatch.setattr(
        "workbench.models.loading.load_model", lambda *a, **k: pytest.fail("model loaded")
    )
    assert cli.main(["study", "--concept", "no-such-concept"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench study: error: unknown concept") and "\n" not in err


def test_layer_out_of_range(capsys):
    assert cli.main(["study", "--model", "tiny-llama", "--layer", "9"]) == 2
    assert "--layer 9 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--forms", "vector", "adapter"], "unknown forms ['adapter']"),
        (["--site", "attn"], "unknown --site 'attn'"),
        (["--prompt-style", "fancy"], "unknown --prompt-style 'fancy'"),
        (["--train-pairs", "0"], "train_pairs must be >= 1"),
        (["--model", "no/such-model-offline"], "no/such-model-offline"),
    ],
)
def test_study_rejects_bad_arguments_in_one_line(arguments, message, capsys):
    assert cli.main(["study", *arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench study: error:") and message in err and "\n" not in err


def test_models_command_lists_packaged_models(capsys):
    assert cli.main(["models"]) == 0
    assert "gemma-3-270m" in capsys.readouterr().out


def test_curves_command_on_a_tiny_model(tmp_path, capsys):
    code = cli.main(
        [
            "curves",
            "--model",
            "tiny-llama",
            "--concepts",
            "weddings",
            "--bootstrap",
            "3",
            "--layer",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "weddings" in out and "preference" in out and "utility" in out and "> 0.97" in out
    fits = next(tmp_path.glob("curves-*/fits.csv"))
    import pandas as pd

    table = pd.read_csv(fits)
    assert list(table["kind"]) == ["preference", "utility"] and (table["layer"] == 1).all()


def test_failure_refuses_free_text_before_loading_a_model(monkeypatch, capsys):
    monkeypatch.setattr(
        "workbench.models.loading.load_model", lambda *a, **k: pytest.fail("model loaded")
    )
    assert cli.main(["failure", "--concept", "sentiment"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench failure: error:") and "exactly two answer strings" in err


def test_curves_command_rejects_a_bad_layer_before_sweeping(capsys):
    assert cli.main(["curves", "--model", "tiny-llama", "--layer", "7"]) == 2
    assert "--layer 7 is out of range" in capsys.readouterr().err


def test_manifold_command_on_a_tiny_model(tmp_path, capsys):
    code = cli.main(
        [
            "manifold",
            "--model",
            "tiny-llama",
            "--concepts",
            "formality",
            "--layer",
            "1",
            "--components",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "utility drop vs off-manifold norm" in out and "D̂(m) vs fitted D_u(m)" in out
    assert next(tmp_path.glob("manifold-*/validity.csv")).is_file()


def test_compare_on_a_persona_concept_prints_balanced_accuracy_and_baselines(tmp_path, capsys):
    code = cli.main(
        [
            "compare",
            "--model",
            "tiny-llama",
            "--concepts",
            "optimism",
            "--forms",
            "vector",
            "--methods",  # the anchors and the clip are covered by the comparison's own tests
            "diff_of_means",
            "random",
            "sft",
            "split",
            "reps",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--layer",
            "1",
            "--train-pairs",
            "24",
            "--test-pairs",
            "8",
            "--bootstrap",
            "10",
            "--generations",
            "3",
            "--new-tokens",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "generation-level scores" in out
    generated = pd.read_csv(next(tmp_path.glob("compare-*/generation_summary.csv")))
    assert {"unsteered", "sft", "split", "reps", "random"} <= set(generated["method"])
    assert (generated["n_prompts"] == 3).all() and {"score", "probe_accuracy"} <= set(generated)
    assert "balanced accuracy" in out and "| constant Yes |" in out and "| unsteered |" in out
    assert "validation pairs" in out  # the second table: each method at its validated m
    summary = pd.read_csv(next(tmp_path.glob("compare-*/summary.csv")))
    assert {"balanced_accuracy", "answer_mass", "push", "warning"} <= set(summary.columns)
    assert "trade-off fits" in out and "SPLIT minus SFT and minus RePS" in out
    versus = pd.read_csv(next(tmp_path.glob("compare-*/split_versus.csv")))
    assert set(versus["versus"]) == {"sft", "reps"}
    tradeoff = pd.read_csv(next(tmp_path.glob("compare-*/tradeoff.csv")))
    assert {"r2_held_out", "paper_r2", "noise_ceiling", "why"} <= set(tradeoff.columns)
    assert set(tradeoff["curve"]) == {"preference", "utility"}
    assert next(tmp_path.glob("compare-*/curves-optimism.html")).stat().st_size > 0


def test_baseline_reports_the_unsteered_disposition_beside_constant_answers(capsys):
    from workbench.data.concepts import load_concept
    from workbench.measure.unsteered import unsteered_baselines
    from workbench.models.loading import load_model

    assert cli.main(["baseline", "--model", "tiny-llama", "--concepts", "optimism"]) == 0
    out = capsys.readouterr().out
    assert "| optimism | chat | 240 |" in out and "No: 50%, Yes: 50%" in out
    table = unsteered_baselines(
        load_model("tiny-llama"), {"sentiment": load_concept("sentiment")}, split="test"
    )
    row = table.iloc[0]
    assert row["n_pairs"] == 24 and row["prompt_style"] == "plain"
    assert np.isnan(row["balanced_accuracy"]) and 0 <= row["accuracy"] <= 1
    assert cli.main(["baseline", "--model", "tiny-llama", "--split", "dev"]) == 2


def test_study_command_defaults_are_the_settings_defaults():
    from workbench.pipelines.study import StudySettings

    args = cli.build_parser().parse_args(["study"])
    defaults = StudySettings()
    assert tuple(args.forms) == defaults.forms
    assert (args.epochs, args.train_pairs, args.test_pairs) == (
        defaults.epochs,
        defaults.train_pairs,
        defaults.test_pairs,
    )
