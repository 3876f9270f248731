"""Answer-bias measures: balanced accuracy and constant baselines see through a one-token push."""

import numpy as np
import pandas as pd
import pytest

from workbench.data.pairs import answers_repeat
from workbench.measure import answer_bias
from workbench.training.summary import format_comparison, summarise

POSITIVE = [" Yes", " No", " No", " Yes", " Yes", " No", " Yes", " Yes"]  # 5 Yes / 3 No
NEGATIVE = [" No" if a == " Yes" else " Yes" for a in POSITIVE]


def test_always_yes_scores_the_yes_share_but_half_balanced():
    always_yes = np.array([1.0 if a == " Yes" else -1.0 for a in POSITIVE])
    assert np.mean(always_yes > 0) == pytest.approx(5 / 8)
    assert answer_bias.balanced_accuracy(always_yes, POSITIVE) == pytest.approx(0.5)
    assert answer_bias.per_answer_accuracy(always_yes, POSITIVE) == {"No": 0.0, "Yes": 1.0}
    assert answer_bias.constant_baselines(POSITIVE, NEGATIVE) == {"No": 3 / 8, "Yes": 5 / 8}
    assert answer_bias.top_answer_share(always_yes, POSITIVE, NEGATIVE) == ("Yes", 1.0)
    concept = np.ones(len(POSITIVE))  # right on every item
    assert answer_bias.balanced_accuracy(concept, POSITIVE) == 1.0


def test_answers_repeat_only_for_label_sets():
    assert answers_repeat(POSITIVE, NEGATIVE)
    assert answers_repeat([" (A)", " (B)"] * 3, [" (B)", " (A)"] * 3)
    free = [f" answer {i}" for i in range(6)]
    assert not answers_repeat(free, [f" other {i}" for i in range(6)])


def test_warning_names_a_gain_that_is_answer_bias():
    text = answer_bias.bias_warning(0.62, 0.5, 0.5, "Yes", 1.0, 0.4, 0.5)
    assert "answers 'Yes' to 100%" in text and "the gain is answer bias" in text
    assert answer_bias.bias_warning(0.9, 0.9, 0.8, "Yes", 0.55, 0.5, 0.5) == ""


def _sweeps() -> pd.DataFrame:
    """Unsteered: right on 4 of 8, mixed answers. 'push_yes' makes every item answer Yes;
    'concept' makes every item right."""
    unsteered = np.array([1, -1, 1, -1, 1, -1, -1, 1], dtype=float)
    yes = np.array([1.0 if a == " Yes" else -1.0 for a in POSITIVE]) * 3
    rows = []
    for method, steered in (("push_yes", yes), ("concept", np.full(8, 2.0))):
        for m, values in ((0.0, unsteered), (1.0, steered)):
            for i, value in enumerate(values):
                rows.append(
                    dict(
                        pair_id=f"p{i}",
                        concept="c",
                        form="vector",
                        method=method,
                        layer=2,
                        seed=0,
                        m=m,
                        pref_odds=value,
                        util_odds=-1.0,
                        util_defined=True,
                        answer_mass=0.5,
                        push=0.1 * m,
                        A_p=POSITIVE[i],
                        A_n=NEGATIVE[i],
                    )
                )
    return pd.DataFrame(rows)


def test_summary_reports_baselines_balanced_accuracy_and_the_warning():
    summary = summarise(_sweeps(), n_bootstrap=100).set_index("method")
    assert list(summary.index[:3]) == ["unsteered", "constant No", "constant Yes"]
    assert summary.loc["constant Yes", "accuracy"] == pytest.approx(5 / 8)
    assert summary.loc["unsteered", "accuracy"] == pytest.approx(0.5)
    push = summary.loc["push_yes"]
    assert push["accuracy"] == pytest.approx(5 / 8)
    assert push["balanced_accuracy"] == pytest.approx(0.5)
    assert push["top_answer"] == "Yes" and push["top_answer_share"] == 1.0
    assert "answers 'Yes' to 100%" in push["warning"]
    concept = summary.loc["concept"]
    assert concept["balanced_accuracy"] == 1.0 and concept["warning"] == ""
    assert concept["push"] == pytest.approx(0.1) and concept["answer_mass"] == 0.5
    text = format_comparison(summary.reset_index())
    assert "WARNING c vector push_yes" in text and "| constant Yes |" in text


def test_preference_scores_balance_only_where_answers_repeat():
    pref = np.array([1.0, 2.0, -1.0, 3.0])  # always " Yes": right on the Yes items only
    positive = [" Yes", " Yes", " No", " Yes"]
    scores = answer_bias.preference_scores(pref, positive, repeat=True)
    assert scores == {"accuracy": 0.75, "balanced_accuracy": 0.5, "mean_pref_odds": 1.25}
    free = answer_bias.preference_scores(pref, ["a", "b", "c", "d"], repeat=False)
    assert free["accuracy"] == 0.75 and np.isnan(free["balanced_accuracy"])
