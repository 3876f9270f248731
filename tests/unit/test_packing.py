"""Both answers after one copy of the prompt give exactly the log-probabilities (and gradients)
of one row per answer; packing is refused where a sliding window would make it inexact."""

import pytest
import torch

from workbench.data.pairs import ContrastPair
from workbench.measure.sweeps import run_sweep
from workbench.steering import packing
from workbench.steering.forms import LocalWeightUpdate, LoRAUpdate, SteeringVector
from workbench.steering.paired import encode_paired, paired_logprobs, start_inputs

PAIRS = [
    ContrastPair("a", "Dear diary, today was", " great", " a long and tiring day"),
    ContrastPair("b", "Q", " yes indeed, certainly", " no"),
    ContrastPair("c", "The weather this week has been", " sunny and warm.", " grey and cold."),
]


def _both(model, pairs, intervention, ms, tiles):
    prompts, pos, neg = (
        [p.prompt for p in pairs],
        [p.positive for p in pairs],
        [p.negative for p in pairs],
    )
    results = []
    for pack in (True, False):
        paired = encode_paired(model, prompts, pos, neg, pack=pack)
        inputs = start_inputs(model, paired, intervention.layer)
        sides = paired.sides
        m = torch.tensor(ms).repeat_interleave(sides * len(pairs))
        total, _ = paired_logprobs(model, paired, inputs, intervention, m, tiles=tiles)
        results.append((paired, total))
    return results


@pytest.mark.parametrize("positions", ["all", "prompt", "answer"])
@pytest.mark.parametrize("form", [SteeringVector, LocalWeightUpdate, LoRAUpdate])
def test_packed_rows_equal_one_row_per_answer(tiny_model, form, positions):
    intervention = form.for_model(tiny_model, 1, positions=positions)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    (packed, got), (rows, expected) = _both(tiny_model, PAIRS, intervention, [0.0, 1.0, -2.0], 3)
    assert packed.packing is not None and rows.packing is None
    assert packed.batch.input_ids.shape[0] == len(PAIRS) < rows.batch.input_ids.shape[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(packed.lengths(), rows.lengths())


def test_packed_gradients_equal_one_row_per_answer(tiny_model):
    grads = []
    for pack in (True, False):
        vector = SteeringVector.for_model(tiny_model, 1)
        with torch.no_grad():
            vector.bias.copy_(torch.linspace(-0.2, 0.2, vector.bias.numel()))
        paired = encode_paired(
            tiny_model,
            [p.prompt for p in PAIRS],
            [p.positive for p in PAIRS],
            [p.negative for p in PAIRS],
            pack=pack,
        )
        inputs = start_inputs(tiny_model, paired, 1)
        m = torch.ones(paired.sides * len(PAIRS))
        total, _ = paired_logprobs(tiny_model, paired, inputs, vector, m)
        (total[:, 0] - total[:, 1]).sum().backward()
        grads.append(vector.bias.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_rows_longer_than_the_sliding_window_are_not_packed(tiny_model):
    window = getattr(tiny_model.original_model.config, "sliding_window", None)
    if window is None:
        pytest.skip("no sliding window on this architecture")
    long = ContrastPair("z", "word " * (window // 5), " fine", " not fine at all")
    paired = encode_paired(tiny_model, [long.prompt], [long.positive], [long.negative])
    assert paired.packing is None and paired.sides == 2


def test_a_wrong_packing_is_caught_by_the_check(tiny_llama, monkeypatch):
    original = packing.pack

    def leaky(two_rows, n, dtype):  # A_n allowed to see A_p: a wrong layout
        batch, layout = original(two_rows, n, dtype)
        return batch, packing.Packing(
            layout.mask.clamp(min=0) * 0,
            layout.predict_at,
            layout.targets,
            layout.owner,
            layout.lengths,
        )

    monkeypatch.setattr(packing, "pack", leaky)
    vector = SteeringVector.for_model(tiny_llama, 1)
    with pytest.raises(RuntimeError, match="packing both answers"):
        run_sweep(tiny_llama, PAIRS, vector, (0.0, 1.0), progress=False, verify=True)
