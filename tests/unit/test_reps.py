"""RePS against hand-computed numbers, its reference losses against the scorer, and a RePS
training on a tiny model that moves preference and keeps its configuration through a save."""

import math

import pytest
import torch

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import ConfigError
from workbench.measure.scoring import answer_logprobs
from workbench.steering.forms import SteeringVector
from workbench.training.reps import RepsObjective, reference_losses
from workbench.training.trainer import TrainingConfig, train_intervention

LAYER = 1


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.fixture
def pairs() -> PairDataset:
    words = [("good", "bad"), ("happy", "sad"), ("warm", "cold"), ("calm", "tense")]
    words += [("bright", "dark"), ("kind", "cruel"), ("soft", "harsh"), ("glad", "upset")]
    return PairDataset(
        ContrastPair(f"w{i}", f"It was {i} and", f" {pos}.", f" very {neg}!", concept="t")
        for i, (pos, neg) in enumerate(words)
    )


def test_loss_equals_the_formula_on_hand_numbers():
    objective = RepsObjective()
    loss_pref, loss_opp = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([1.2, 1.2, 3.0])
    reference = (torch.tensor([2.0, 0.5, 1.0]), torch.tensor([0.5, 2.0, 1.0]))
    # β = max(1.5, 1) = 1.5, Δ = 1.2 − 1.5 = −0.3 → softplus(0.3)
    # β = max(−1.5, 1) = 1 (the floor), Δ = 1.2 − 1 = 0.2 → softplus(−0.2)
    # β = max(0, 1) = 1, Δ = 3 − 0.5 = 2.5 → softplus(−2.5)
    expected = [_softplus(0.3), _softplus(-0.2), _softplus(-2.5)]
    assert objective.per_example(loss_pref, loss_opp, reference).tolist() == pytest.approx(
        expected, rel=1e-6
    )
    terms = objective.terms(loss_pref, loss_opp, reference)
    assert float(terms.total) == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert float(terms.preferred) == pytest.approx((1.5 + 1.0 + 0.5) / 3)  # mean β·ℓ_pref
    assert float(terms.opposite) == pytest.approx((1.2 + 1.2 + 3.0) / 3)
    margin = RepsObjective(margin=0.5).per_example(loss_pref, loss_opp, reference)
    assert float(margin[0]) == pytest.approx(_softplus(0.8), rel=1e-6)


def test_gradient_weights_the_preferred_answer_by_beta_and_not_the_reference():
    loss_pref = torch.tensor([1.0, 1.0], requires_grad=True)
    loss_opp = torch.tensor([1.0, 1.0], requires_grad=True)
    ref_pref = torch.tensor([4.0, 0.0], requires_grad=True)
    reference = (ref_pref, torch.tensor([0.0, 0.0]))
    RepsObjective().terms(loss_pref, loss_opp, reference).total.backward()
    sigma = [1 / (1 + math.exp(-(b - 1.0))) for b in (4.0, 1.0)]  # σ(−Δ), Δ = 1 − β
    assert loss_pref.grad.tolist() == pytest.approx([4.0 * sigma[0] / 2, 1.0 * sigma[1] / 2])
    assert loss_opp.grad.tolist() == pytest.approx([-sigma[0] / 2, -sigma[1] / 2])
    assert ref_pref.grad is None  # β is a constant of the unsteered model


def test_bad_settings_and_missing_reference_are_refused():
    with pytest.raises(ConfigError, match="floor"):
        RepsObjective(floor=0.0)
    with pytest.raises(ConfigError, match="margin"):
        RepsObjective(margin=float("nan"))
    with pytest.raises(ConfigError, match="reference"):
        RepsObjective().terms(torch.ones(2), torch.ones(2))


def test_reference_losses_equal_the_unsteered_scorer(tiny_llama, pairs):
    table = reference_losses(tiny_llama, pairs, batch_size=3)
    for side in ("positive", "negative"):
        total, count = answer_logprobs(tiny_llama, list(pairs), side, [], batch_size=1)
        for pair, logprob, length in zip(pairs, total, count):
            loss, tokens = table[(pair.prompt, getattr(pair, side))]
            assert loss == pytest.approx(-float(logprob), abs=1e-4)
            assert tokens == int(length)


def test_reps_training_raises_preference_and_round_trips(tiny_llama, pairs):
    config = TrainingConfig(
        objective=RepsObjective(), epochs=3, batch_size=4, patience=0, multipliers=(1.0, 2.0)
    )
    assert config.method == "reps"
    assert TrainingConfig.from_dict(config.to_dict()) == config
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    result = train_intervention(tiny_llama, vector, pairs[:6], pairs[6:], config, progress=False)
    epochs = result.epochs
    assert epochs["mean_pref_odds"].iloc[result.best_epoch] > epochs["mean_pref_odds"].iloc[0]
    assert epochs["eval_loss"].iloc[result.best_epoch] < epochs["eval_loss"].iloc[0]
    assert result.steps["margin_term"].tolist() == result.steps["loss"].tolist()
