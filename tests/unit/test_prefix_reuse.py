"""The states entering the intervention's block, computed once and reused (PrefixCache): the
reused path equals the path that recomputes them, in value and in gradient, on both tiny
architectures, and the cache refuses to serve when reuse would be wrong."""

import pandas as pd
import torch

from tests.unit.test_sweeps import _random
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.steering.forms import LocalWeightUpdate, SteeringVector
from workbench.steering.paired import encode_paired, start_inputs
from workbench.steering.prefixes import PrefixCache
from workbench.training.trainer import TrainingConfig, example_losses, make_examples

COLUMNS = ["L_p", "L_n", "pref_odds", "util_odds", "push"]
GRID = (-1.0, 0.0, 0.5, 2.0)


def test_sweeps_sharing_prefixes_equal_sweeps_without(tiny_model, small_pairs):
    prefixes = PrefixCache(tiny_model)
    for seed, form in enumerate((SteeringVector, LocalWeightUpdate)):
        intervention = _random(form.for_model(tiny_model, 2), seed=seed)
        options = dict(labels=SweepLabels(method="m"), batch_size=2, progress=False)
        plain = run_sweep(tiny_model, small_pairs, intervention, GRID, **options)
        shared = run_sweep(
            tiny_model, small_pairs, intervention, GRID, prefixes=prefixes, **options
        )
        pd.testing.assert_frame_equal(plain[COLUMNS], shared[COLUMNS], atol=1e-5, rtol=0)
    # the second method's sweep ran no block before the layer: every row was served
    assert prefixes.hits >= prefixes.misses > 0


def test_batches_of_other_compositions_are_assembled_from_kept_rows(tiny_model, small_pairs):
    pairs = list(small_pairs)
    prefixes = PrefixCache(tiny_model)

    def encoded(chosen):
        return encode_paired(
            tiny_model,
            [p.prompt for p in chosen],
            [p.positive for p in chosen],
            [p.negative for p in chosen],
        )

    start_inputs(tiny_model, encoded(pairs[:3]), 2, prefixes)
    mixed = encoded([pairs[2], pairs[4], pairs[0]])  # two kept rows, one new, another width
    served = start_inputs(tiny_model, mixed, 2, prefixes)
    direct = start_inputs(tiny_model, mixed, 2)
    real = mixed.batch.attention_mask.bool()
    assert torch.allclose(served[real], direct[real], atol=1e-5)
    assert prefixes.hits == 2


def test_training_losses_and_gradients_are_equal_with_reuse(tiny_model, small_pairs):
    vector = _random(SteeringVector.for_model(tiny_model, 2))
    config = TrainingConfig()
    examples = make_examples(list(small_pairs), [1.0] * 10, subtract=True)
    prefixes = PrefixCache(tiny_model)
    example_losses(tiny_model, vector, examples.take([5, 1, 7]), prefixes=prefixes)  # warm
    batch = examples.take([1, 2, 7, 9])  # rows kept and rows new, in another batch

    def loss_and_grad(**kwargs):
        vector.zero_grad()
        loss_p, loss_n, *_ = example_losses(tiny_model, vector, batch, **kwargs)
        terms = config.objective.terms(loss_p, loss_n)
        terms.total.backward()
        return loss_p.detach().clone(), vector.bias.grad.detach().clone()

    reused, reused_grad = loss_and_grad(prefixes=prefixes)
    plain, plain_grad = loss_and_grad()
    assert torch.allclose(reused, plain, atol=1e-5)
    assert torch.allclose(reused_grad, plain_grad, atol=1e-5)
    assert plain_grad.abs().sum() > 0


def test_no_reuse_after_a_weight_edit_or_while_hooks_are_attached(tiny_llama, small_pairs):
    pairs = list(small_pairs)[:2]
    paired = encode_paired(
        tiny_llama,
        [p.prompt for p in pairs],
        [p.positive for p in pairs],
        [p.negative for p in pairs],
    )
    prefixes = PrefixCache(tiny_llama)
    before = start_inputs(tiny_llama, paired, 2, prefixes)
    weight = next(tiny_llama.blocks[0].parameters())
    with torch.no_grad():
        weight.mul_(2.0)
    try:
        after = start_inputs(tiny_llama, paired, 2, prefixes)
        assert not torch.allclose(before, after)  # recomputed with the edited weights
        assert torch.allclose(after, start_inputs(tiny_llama, paired, 2), atol=1e-5)
    finally:
        with torch.no_grad():
            weight.div_(2.0)
    hits = prefixes.hits
    handle = tiny_llama.hook_dict["blocks.0.hook_resid_post"].register_forward_hook(
        lambda module, args, output: output * 0.5
    )
    try:
        assert not prefixes.usable(tiny_llama)
        hooked = start_inputs(tiny_llama, paired, 2, prefixes)
    finally:
        handle.remove()
    assert prefixes.hits == hits  # nothing served while a hook could change the states
    assert not torch.allclose(hooked, start_inputs(tiny_llama, paired, 2, prefixes))
    assert prefixes.usable(tiny_llama)
