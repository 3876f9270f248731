"""NaN is counted and reported, never scored as an answer; m = 0 rows are the unsteered model
even when the intervention's parameters are not finite; training refuses a non-finite start."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError, TrainingError
from workbench.measure import answer_bias
from workbench.measure.log_odds import preference_utility
from workbench.measure.sweeps import run_sweep
from workbench.steering.forms import LocalWeightUpdate, SteeringVector
from workbench.training import trainer
from workbench.training.summary import summarise
from workbench.training.trainer import TrainingConfig, train_intervention

INF, NAN = float("inf"), float("nan")


def test_undefined_preference_is_not_a_defined_utility():
    pref, util, defined = preference_utility([INF, NAN, INF, 2.0], [INF, 1.0, 1.0, 3.0])
    assert np.isnan(pref[:2]).all() and np.isnan(util[:2]).all() and not defined[:2].any()
    assert pref[2] == -INF and defined[2] and np.isfinite(util[2])  # one impossible answer
    assert defined[3]


def test_nan_preferences_are_left_out_not_wrong():
    pref = np.array([1.0, NAN, -1.0, 2.0])
    answers = [" Yes", " Yes", " No", " No"]
    scores = answer_bias.preference_scores(pref, answers, repeat=True)
    assert scores["accuracy"] == pytest.approx(2 / 3)  # of the three that answered
    assert scores["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["mean_pref_odds"] == pytest.approx(2 / 3)
    assert answer_bias.top_answer_share(pref, answers, [" No", " No", " Yes", " Yes"]) == (
        "Yes",
        pytest.approx(2 / 3),
    )
    assert np.isnan(answer_bias.preference_scores(np.array([NAN]), [" Yes"], True)["accuracy"])


def _table(pref_at_one):
    rows = []
    for m in (0.0, 1.0):
        for i, value in enumerate(pref_at_one):
            pref = (1.0 if i % 2 else -1.0) if m == 0 else value
            rows.append(
                {
                    "pair_id": f"p{i}",
                    "concept": "c",
                    "form": "vector",
                    "method": "x",
                    "layer": 1,
                    "seed": 0,
                    "m": m,
                    "pref_odds": pref,
                    "util_odds": -1.0 if np.isfinite(pref) else NAN,
                    "util_defined": bool(np.isfinite(pref)),
                    "A_p": " Yes" if i % 2 else " No",
                    "A_n": " No" if i % 2 else " Yes",
                }
            )
    return pd.DataFrame(rows)


def test_the_summary_counts_undefined_rows_and_scores_the_rest():
    summary = summarise(_table([2.0, NAN, 3.0, -1.0]), n_bootstrap=20)
    row = summary[summary["method"] == "x"].iloc[0]
    assert row["accuracy"] == pytest.approx(2 / 3)
    assert row["pref_undefined_rows"] == 1
    assert "1 of 8 rows have undefined PrefOdds" in row["warning"]
    clean = summarise(_table([2.0, 1.0, 3.0, -1.0]), n_bootstrap=20)
    assert clean[clean["method"] == "x"].iloc[0]["pref_undefined_rows"] == 0


PAIRS = [ContrastPair(f"q{i}", f"Item {i}:", " good", " bad") for i in range(4)]


@pytest.mark.parametrize("positions", ["all", "answer"])
@pytest.mark.parametrize("form", [SteeringVector, LocalWeightUpdate])
def test_m_zero_rows_are_unsteered_under_nan_parameters(tiny_llama, positions, form):
    unsteered = run_sweep(tiny_llama, PAIRS, progress=False)
    broken = form.for_model(tiny_llama, 1, positions=positions)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(NAN)
    table = run_sweep(tiny_llama, PAIRS, broken, (-1.0, 0.0, 1.0), progress=False)
    at_zero = table[table["m"] == 0]
    np.testing.assert_allclose(at_zero["pref_odds"], unsteered["pref_odds"], atol=1e-5)
    assert table[table["m"] != 0]["pref_odds"].isna().all()
    assert not table[table["m"] != 0]["util_defined"].any()


def test_training_refuses_a_non_finite_start(tiny_llama):
    vector = SteeringVector.for_model(tiny_llama, 1)
    with torch.no_grad():
        vector.bias[0] = NAN
    with pytest.raises(ConfigError, match=r"NaN or infinite values in \['bias'\]"):
        train_intervention(tiny_llama, vector, PAIRS[:2], PAIRS[2:], progress=False)


def test_training_that_never_scores_a_finite_epoch_says_it_diverged(tiny_llama, monkeypatch):
    original = trainer._evaluate

    def diverged(*args, **kwargs):
        row = original(*args, **kwargs)
        return row if row["epoch"] == 0 else {**row, "eval_loss": NAN}

    monkeypatch.setattr(trainer, "_evaluate", diverged)
    vector = SteeringVector.for_model(tiny_llama, 1)
    config = TrainingConfig(epochs=2, batch_size=4)
    with pytest.raises(TrainingError, match="diverged"):
        train_intervention(tiny_llama, vector, PAIRS[:2], PAIRS[2:], config, progress=False)
