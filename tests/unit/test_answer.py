"""The answer block's matched-utility sentences: sign turned, cross-form rows left out."""

import pandas as pd

from workbench.report.answer import _matched_lines


def test_matched_lines_turn_the_sign_and_judge_by_the_interval():
    matched = pd.DataFrame(
        {
            "form": ["vector", "vector", "local_weight", "vector"],
            "method": ["sft", "reps", "reps", "diff_of_means"],
            "reference": ["vector/split", "vector/split", "vector/split", "vector/split"],
            "preference_difference": [-2.0, 0.5, 1.0, 9.0],
            "preference_difference_low": [-3.0, -0.5, 0.5, 8.0],
            "preference_difference_high": [-1.0, 1.5, 1.5, 10.0],
        }
    )
    lines = _matched_lines(matched)
    assert lines == [
        "SPLIT − SFT (vector) at matched utility: preference +2.0 [+1.0, +3.0] nats "
        "(SPLIT prefers more).",
        "SPLIT − RePS (vector) at matched utility: preference -0.5 [-1.5, +0.5] nats "
        "(no difference the interval supports).",
    ]
