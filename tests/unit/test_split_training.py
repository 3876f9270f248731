"""SPLIT training: only the intervention changes, SFT is SPLIT with λ_n = γ = 0, runs are
reproducible, early stopping keeps the best epoch, and the artefact loads back exactly."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.models.loading import model_provenance
from workbench.steering.forms import FORMS, SteeringVector
from workbench.steering.io import load_intervention
from workbench.steering.roles import TokenRoles
from workbench.training.objective import SplitObjective
from workbench.training.trainer import (
    TrainingConfig,
    _evaluate,
    example_losses,
    make_examples,
    train_intervention,
    validation_split,
)

LAYER = 1


@pytest.fixture
def pairs() -> PairDataset:
    words = [
        ("good", "bad"),
        ("happy", "sad"),
        ("warm", "cold"),
        ("calm", "angry"),
        ("bright", "dark"),
        ("kind", "cruel"),
        ("soft", "harsh"),
        ("glad", "upset"),
    ]
    return PairDataset(
        ContrastPair(f"w{i}", f"It was {i} and", f" {pos}.", f" very {neg}!", concept="t")
        for i, (pos, neg) in enumerate(words)
    )


def _quick(**overrides) -> TrainingConfig:
    settings = dict(epochs=2, batch_size=4, patience=0, multipliers=(1.0, 2.0), seed=3)
    return TrainingConfig(**{**settings, **overrides})


@pytest.mark.parametrize("form", sorted(FORMS))
def test_only_the_intervention_changes(tiny_llama, pairs, form):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    flags = [p.requires_grad for p in tiny_llama.parameters()]
    intervention = FORMS[form].for_model(tiny_llama, LAYER)
    initial = {k: v.clone() for k, v in intervention.state_dict().items()}
    train_intervention(tiny_llama, intervention, pairs[:6], pairs[6:], _quick(), progress=False)
    after = tiny_llama.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert [p.requires_grad for p in tiny_llama.parameters()] == flags
    assert any(not torch.equal(initial[k], v) for k, v in intervention.state_dict().items())


def test_training_lowers_the_held_out_objective(tiny_llama, pairs):
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    result = train_intervention(
        tiny_llama, vector, pairs[:6], pairs[6:], _quick(epochs=3), progress=False
    )
    losses = result.epochs["eval_loss"]
    assert losses.iloc[result.best_epoch] < losses.iloc[0]
    assert (
        result.epochs["mean_pref_odds"].iloc[result.best_epoch]
        > result.epochs["mean_pref_odds"].iloc[0]
    )
    assert len(result.steps) == 3 * math.ceil(12 / 4)  # add + subtract examples, batches of 4
    assert {"loss_p_term", "loss_n_term", "margin_term", "learning_rate"} <= set(result.steps)


def _reference_sft_losses(model, pairs, config, lr):
    """An independent SFT loop: full forward, cross-entropy on the concept answer's tokens."""
    vector = SteeringVector.for_model(model, LAYER)
    optimiser = torch.optim.AdamW(vector.parameters(), lr=lr, weight_decay=0.0)
    batch = encode_pairs(
        model.tokenizer, pairs, "positive", prepend_bos=model_provenance(model).prepend_bos
    )
    losses = []
    for epoch in range(config.epochs):
        with vector.applied(model, m=1.0, roles=TokenRoles.from_batch(batch)):
            logits = model(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
            )
        targets = batch.input_ids[:, 1:].masked_fill(~batch.answer_mask[:, 1:], -100)
        token_loss = F.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), targets, reduction="none"
        )
        per_pair = token_loss.sum(-1) / batch.answer_mask.sum(-1)
        loss = per_pair.mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vector.parameters(), config.max_grad_norm)
        for group in optimiser.param_groups:  # the linear schedule, by hand
            group["lr"] = lr * (config.epochs - epoch) / config.epochs
        optimiser.step()
        losses.append(float(loss))
    return losses, vector.bias.detach()


def test_split_with_zero_opposite_and_margin_weights_is_sft(tiny_llama, pairs):
    train, held_out = pairs[:6], pairs[6:]
    common = dict(
        epochs=3,
        batch_size=len(train),
        subtract=False,
        multipliers=(1.0,),
        learning_rate=0.05,
        patience=0,
    )
    split_as_sft = _quick(objective=SplitObjective(1.0, 0.0, 0.0, 0.7), **common)
    sft = _quick(objective=SplitObjective.sft(), **common)
    results = [
        train_intervention(
            tiny_llama,
            SteeringVector.for_model(tiny_llama, LAYER),
            train,
            held_out,
            config,
            progress=False,
        )
        for config in (split_as_sft, sft)
    ]
    assert results[0].steps["loss"].tolist() == results[1].steps["loss"].tolist()
    reference_losses, _ = _reference_sft_losses(tiny_llama, list(train), sft, 0.05)
    assert results[1].steps["loss"].tolist() == pytest.approx(reference_losses, abs=1e-5)
    assert sft.method == "sft" and TrainingConfig().method == "split"


def test_same_seed_same_intervention(tiny_llama, pairs):
    def run(seed):
        vector = SteeringVector.for_model(tiny_llama, LAYER)
        train_intervention(
            tiny_llama, vector, pairs[:6], pairs[6:], _quick(seed=seed), progress=False
        )
        return vector.bias.detach().clone()

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_early_stopping_keeps_the_best_trained_epoch(tiny_llama, pairs):
    # Held-out pairs with the polarity reversed: every step on the training pairs makes the
    # held-out objective worse, so the first trained epoch is the best and training stops
    # once two more epochs have not improved on it.
    reversed_pairs = [replace(p, positive=p.negative, negative=p.positive) for p in pairs[6:]]
    config = _quick(epochs=8, patience=2, subtract=False, learning_rate=0.5)
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    result = train_intervention(
        tiny_llama, vector, pairs[:6], reversed_pairs, config, progress=False
    )
    losses = result.epochs["eval_loss"]
    assert losses.is_monotonic_increasing
    assert result.stopped_early and list(result.epochs["epoch"]) == [0, 1, 2, 3]
    assert result.best_epoch == 1
    assert vector.bias.abs().sum() > 0  # a trained epoch, never the untrained start
    again = _evaluate(tiny_llama, vector, reversed_pairs, config, None, -1)
    assert again["eval_loss"] == pytest.approx(losses.iloc[1], rel=1e-6)


def test_subtract_examples_use_minus_m_with_polarity_swapped(pairs):
    examples = make_examples(pairs[:2], [1.0, 2.0, 0.5, 4.0], subtract=True)
    assert examples.m == [1.0, 2.0, -0.5, -4.0]
    assert examples.preferred == [
        pairs[0].positive,
        pairs[1].positive,
        pairs[0].negative,
        pairs[1].negative,
    ]
    assert examples.opposite[2:] == [pairs[0].positive, pairs[1].positive]
    assert len(make_examples(pairs[:2], [1.0, 1.0], subtract=False)) == 2


def test_batched_losses_equal_one_example_at_a_time(tiny_llama, pairs):
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    torch.nn.init.normal_(vector.bias, std=0.5)
    examples = make_examples(pairs[:4], [1.0, -2.0, 0.5, 3.0], subtract=False)
    with torch.no_grad():
        batched = example_losses(tiny_llama, vector, examples)
        single = [example_losses(tiny_llama, vector, examples.take([i])) for i in range(4)]
    for column in range(4):
        expected = torch.cat([s[column] for s in single])
        assert torch.allclose(batched[column], expected, atol=1e-5)


def test_saved_artefact_loads_back_exactly_with_how_it_was_made(tiny_llama, pairs, tmp_path):
    intervention = FORMS["lora"].for_model(tiny_llama, LAYER, rank=2, seed=1)
    config = _quick(epochs=1)
    result = train_intervention(
        tiny_llama, intervention, pairs[:6], pairs[6:], config, progress=False
    )
    path = result.save(tmp_path / "lora", tiny_llama, pairs[:6])
    loaded, provenance = load_intervention(path)
    for name, tensor in intervention.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert provenance["method"] == "split" and provenance["seed"] == config.seed
    assert TrainingConfig.from_dict(provenance["details"]["training"]) == config
    assert provenance["dataset_hash"] == PairDataset(pairs[:6]).content_hash()
    assert provenance["model"]["name"] == "tiny-llama"


def test_validation_split_is_disjoint_and_deterministic(pairs):
    fit, validation = validation_split(pairs, fraction=0.25, seed=0)
    assert len(validation) == 2 and len(fit) == 6
    assert not {p.id for p in fit} & {p.id for p in validation}
    assert [p.id for p in validation_split(pairs, 0.25, 0)[1]] == [p.id for p in validation]


def test_bad_settings_fail_before_training(tiny_llama, pairs):
    with pytest.raises(ValueError, match="multipliers"):
        TrainingConfig(multipliers=(-1.0,))
    with pytest.raises(ValueError, match="epochs"):
        TrainingConfig(epochs=0)
    vector = SteeringVector.for_model(tiny_llama, LAYER)
    with pytest.raises(ValueError, match="projection"):
        train_intervention(
            tiny_llama,
            vector,
            pairs,
            pairs,
            TrainingConfig(off_manifold_penalty=1.0),
            progress=False,
        )
    with pytest.raises(ValueError, match="evaluation pairs"):
        train_intervention(tiny_llama, vector, pairs, [], progress=False)


def test_one_token_answers_give_the_two_sided_losses_and_gradients(tiny_model, monkeypatch):
    from workbench.steering import paired

    pairs = [
        ContrastPair(f"q{i}", text, *(("Y", "N") if i % 2 else ("N", "Y")), split="train")
        for i, text in enumerate(["Is it so?", "Would you say that?", "Q"])
    ]
    examples = make_examples(pairs, [0.5, 1.0, 2.0, 1.0, 0.5, 2.0], subtract=True)
    vector = SteeringVector.for_model(tiny_model, 1)
    torch.nn.init.normal_(vector.bias, std=0.5)

    def losses():
        vector.zero_grad()
        result = example_losses(tiny_model, vector, examples)
        (result[0].sum() + 0.3 * result[1].sum()).backward()
        return [t.detach().clone() for t in result[:4]], vector.bias.grad.clone()

    shared, shared_grad = losses()
    monkeypatch.setattr(paired, "one_token_ids", lambda *args: None)
    separate, separate_grad = losses()
    for a, b in zip(shared, separate):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_grad, separate_grad, atol=1e-5, rtol=1e-4)


def test_paper_recipe_is_the_reference_settings():
    vector, weight = TrainingConfig.paper("vector"), TrainingConfig.paper("local_weight")
    assert vector.multipliers == tuple(float(m) for m in range(2, 21, 2))
    assert weight.multipliers == pytest.approx(tuple(0.2 * k for k in range(1, 11)))
    for config in (vector, weight):
        assert (config.objective.lambda_n, config.objective.gamma, config.objective.theta) == (
            0.5,
            8.0,
            0.3,
        )
        assert (config.batch_size, config.epochs, config.subtract) == (4, 2, True)
        assert config.eval_multiplier == 1.0
    assert (vector.learning_rate, weight.learning_rate) == (0.08, 0.01)
    assert TrainingConfig.paper("lora", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown form"):
        TrainingConfig.paper("adapter")
    with pytest.raises(ValueError, match="selection"):
        TrainingConfig(selection="luck")


def test_epoch_selection_defaults_to_balanced_accuracy_where_answers_repeat():
    from workbench.training.trainer import _improves, _score, _selection

    yes_no = [
        ContrastPair(f"q{i}", "Q?", *((" Yes", " No") if i % 2 else (" No", " Yes")))
        for i in range(6)
    ]
    free = [ContrastPair(f"f{i}", "Review:", f" good {i}", f" bad {i}") for i in range(6)]
    assert _selection("auto", yes_no) == "balanced_accuracy"
    assert _selection("auto", free) == "objective"
    assert _selection("accuracy", yes_no) == "accuracy"
    with pytest.raises(ValueError, match="free text"):
        _selection("balanced_accuracy", free)
    # the epoch with the better balanced accuracy wins over a better objective
    worse_objective = _score({"eval_loss": 2.0, "balanced_accuracy": 0.6}, "balanced_accuracy")
    better_objective = _score({"eval_loss": 1.0, "balanced_accuracy": 0.44}, "balanced_accuracy")
    assert _improves(worse_objective, better_objective, 0.0)
    assert not _improves(better_objective, worse_objective, 0.0)
    tie = _score({"eval_loss": 0.5, "balanced_accuracy": 0.6}, "balanced_accuracy")
    assert _improves(tie, worse_objective, 0.0)  # equal metric: the lower objective


def test_matrix_rates_are_divided_by_fan_in_only_in_normalised_units(tiny_llama):
    from workbench.hooks.sites import site_scales
    from workbench.training.trainer import parameter_groups

    raw = FORMS["local_weight"].for_model(tiny_llama, 1)
    assert [g["lr"] for g in parameter_groups(raw, 0.02)] == [0.02, 0.02]
    scaled = FORMS["lora"].for_model(
        tiny_llama, 1, scales=site_scales(tiny_llama, "block", 1, n_texts=8), rank=4
    )
    rates = [g["lr"] for g in parameter_groups(scaled, 0.02)]
    assert rates == pytest.approx([0.02 / tiny_llama.cfg.d_mlp, 0.02 / 4])
