"""The SPLIT objective against hand-made numbers, and SFT as its λ_n = γ = 0 special case."""

import pytest
import torch

from workbench.training.objective import SplitObjective


def test_loss_equals_the_formula_on_hand_numbers():
    objective = SplitObjective(lambda_p=1.0, lambda_n=0.5, gamma=4.0, theta=0.5)
    loss_p = torch.tensor([1.0, 2.0])
    loss_n = torch.tensor([1.2, 3.0])
    # example 1: 1 + 0.5·1.2 + 4·ReLU(0.5 − 0.2) = 2.8; example 2: 2 + 1.5 + 4·ReLU(−0.5) = 3.5
    assert objective.per_example(loss_p, loss_n).tolist() == pytest.approx([2.8, 3.5])
    terms = objective.terms(loss_p, loss_n)
    assert float(terms.total) == pytest.approx(3.15)
    assert float(terms.preferred) == pytest.approx(1.5)
    assert float(terms.opposite) == pytest.approx(1.05)
    assert float(terms.margin) == pytest.approx(0.6)
    assert float(terms.total) == pytest.approx(float(objective.per_example(loss_p, loss_n).mean()))


def test_split_with_no_opposite_or_margin_term_is_sft():
    generator = torch.Generator().manual_seed(0)
    loss_p = torch.rand(16, generator=generator) * 5
    loss_n = torch.rand(16, generator=generator) * 5
    for objective in (SplitObjective(1.0, 0.0, 0.0, 0.7), SplitObjective.sft()):
        assert objective.is_sft
        assert torch.equal(objective.terms(loss_p, loss_n).total, loss_p.mean())
        assert float(objective.terms(loss_p, loss_n).opposite) == 0.0
    assert not SplitObjective().is_sft


def test_gradient_of_the_margin_term_vanishes_once_the_margin_is_met():
    objective = SplitObjective(lambda_p=0.0, lambda_n=0.0, gamma=2.0, theta=1.0)
    loss_p = torch.tensor([1.0, 1.0], requires_grad=True)
    loss_n = torch.tensor([1.5, 3.0])
    objective.terms(loss_p, loss_n).total.backward()
    assert loss_p.grad.tolist() == pytest.approx([1.0, 0.0])  # γ/batch on the unmet margin only


@pytest.mark.parametrize(
    ("field", "value"), [("lambda_n", -0.1), ("gamma", float("nan")), ("theta", float("inf"))]
)
def test_bad_weights_are_rejected_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        SplitObjective(**{field: value})


def test_round_trip_through_a_dict():
    objective = SplitObjective(1.0, 0.6, 8.0, 0.3)
    assert SplitObjective.from_dict(objective.to_dict()) == objective
