import math

import pytest
import torch

from workbench.measure.text import generation_diagnostics, repetition_rate
from workbench.steering.forms import SteeringVector


def test_repetition_rate_on_hand_made_sequences():
    assert repetition_rate([1, 2, 3, 4, 5], n=2) == 0.0
    assert repetition_rate([7, 7, 7, 7, 7], n=2) == pytest.approx(0.75)  # 4 bigrams, 1 distinct
    assert repetition_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(1 - 2 / 5)
    assert math.isnan(repetition_rate([1, 2], n=3))
    with pytest.raises(ValueError):
        repetition_rate([1], n=0)


def test_generation_diagnostics_table(tiny_llama, small_pairs):
    vector = SteeringVector.for_model(tiny_llama, 1, site="resid")
    with torch.no_grad():
        vector.bias.fill_(5.0)
    table = generation_diagnostics(tiny_llama, small_pairs, vector, [0.0, 4.0], max_new_tokens=12)
    assert len(table) == 2 * len(small_pairs)
    assert table["repetition_rate"].between(0, 1).all()
    heavy = table[table["m"] == 4.0]["repetition_rate"].mean()
    light = table[table["m"] == 0.0]["repetition_rate"].mean()
    assert heavy >= light  # a large constant push makes a random model repeat itself
