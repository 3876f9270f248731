"""Models in bf16: interventions compute in fp32, log-odds are fp32 and close to the fp32
model's, training moves the same way; the chunked fp32 answer scoring equals the plain one."""

import numpy as np
import pytest
import torch

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair
from workbench.errors import ConfigError
from workbench.hooks.forward import final_normed_residual, unembed
from workbench.hooks.logprobs import chosen_logprobs
from workbench.measure.sweeps import run_sweep
from workbench.models.loading import as_dtype, load_model, model_provenance
from workbench.steering.forms import LocalWeightUpdate, SteeringVector
from workbench.training.trainer import TrainingConfig, train_intervention

PAIRS = [
    ContrastPair(f"q{i}", f"Review {i}: the food was", f" {good}", f" {bad}")
    for i, (good, bad) in enumerate(
        [("lovely", "awful"), ("great", "bad"), ("fine", "poor"), ("superb", "grim")] * 3
    )
]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gemma3"])
def twins(request):
    """The same random weights in fp32 and in bf16."""
    return (
        load_model(request.param, device="cpu"),
        load_model(request.param, device="cpu", dtype="bfloat16"),
    )


def test_chosen_logprobs_equal_the_full_log_softmax(tiny_model):
    batch = encode_pairs(tiny_model.tokenizer, PAIRS[:4], "positive", prepend_bos=True)
    normed = final_normed_residual(tiny_model, batch.input_ids, attention_mask=batch.attention_mask)
    rows = normed[:, 2:5].reshape(-1, normed.shape[-1]).detach().requires_grad_(True)
    tokens = torch.randint(0, tiny_model.cfg.d_vocab, (rows.shape[0], 2))
    expected = unembed(tiny_model, rows).float().log_softmax(-1).gather(-1, tokens)
    got = chosen_logprobs(tiny_model, rows, tokens, chunk=50)  # several chunks, a ragged last
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (grad_got,) = torch.autograd.grad(got.sum(), rows)
    (grad_expected,) = torch.autograd.grad(expected.sum(), rows)
    torch.testing.assert_close(grad_got, grad_expected, atol=1e-5, rtol=1e-4)


def test_defaults_and_names(tiny_llama):
    made = model_provenance(tiny_llama)
    assert (made.dtype, made.attn_implementation) == ("float32", "eager")  # CPU defaults
    assert as_dtype("bf16") is torch.bfloat16 and as_dtype(torch.float16) is torch.float16
    with pytest.raises(ConfigError, match="dtype must be one of"):
        as_dtype("int8")
    with pytest.raises(ConfigError, match="attn_implementation"):
        load_model("tiny-llama", device="cpu", attn_implementation="flash")
    sdpa = load_model("tiny-llama", device="cpu", attn_implementation="sdpa")
    assert sdpa.original_model.config._attn_implementation == "sdpa"
    assert model_provenance(sdpa).attn_implementation == "sdpa"
    same = [run_sweep(m, PAIRS[:4], progress=False)["pref_odds"] for m in (tiny_llama, sdpa)]
    np.testing.assert_allclose(same[0], same[1], atol=1e-4)  # the kernel changes no number


@pytest.mark.parametrize("form", [SteeringVector, LocalWeightUpdate])
def test_bf16_log_odds_are_fp32_and_near_the_fp32_model(twins, form):
    fp32, bf16 = twins
    assert next(bf16.parameters()).dtype == torch.bfloat16
    intervention = form.for_model(fp32, 1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    grid = (-1.0, 0.0, 1.0)
    exact = run_sweep(fp32, PAIRS, intervention, grid, progress=False)
    rounded = run_sweep(bf16, PAIRS, intervention, grid, progress=False)
    assert next(intervention.parameters()).dtype == torch.float32  # untouched by the bf16 run
    error = np.abs(exact["pref_odds"].to_numpy() - rounded["pref_odds"].to_numpy())
    assert error.max() < 0.05, error.max()  # bf16 rounding: 0.013 nats measured
    assert np.corrcoef(exact["pref_odds"], rounded["pref_odds"])[0, 1] > 0.99


def test_training_under_a_bf16_model_moves_the_same_way(twins):
    config = TrainingConfig(epochs=2, batch_size=6)
    trained = []
    for model in twins:
        torch.manual_seed(0)
        vector = SteeringVector.for_model(twins[0], 1)
        train_intervention(model, vector, PAIRS[:8], PAIRS[8:], config, progress=False)
        assert vector.bias.dtype == torch.float32
        trained.append(vector.bias.detach().flatten())
    cosine = torch.nn.functional.cosine_similarity(trained[0], trained[1], dim=0)
    assert cosine > 0.9, float(cosine)


def test_the_fast_log_sum_exp_falls_back_where_it_would_overflow(tiny_llama):
    rows = torch.randn(3, tiny_llama.cfg.d_model) * 1e3  # logits far past exp's fp32 range
    rows.requires_grad_(True)
    tokens = torch.tensor([[0], [5], [7]])
    got = chosen_logprobs(tiny_llama, rows, tokens, chunk=64)
    expected = unembed(tiny_llama, rows).float().log_softmax(-1).gather(-1, tokens)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-5)
    (grad,) = torch.autograd.grad(got.sum(), rows)
    assert torch.isfinite(got).all() and torch.isfinite(grad).all()


def test_the_buffered_no_grad_path_equals_the_differentiable_one(tiny_model):
    rows = torch.randn(6, tiny_model.cfg.d_model)
    tokens = torch.randint(0, tiny_model.cfg.d_vocab, (6, 2))
    with torch.no_grad():
        buffered = chosen_logprobs(tiny_model, rows, tokens, chunk=50)
        huge = chosen_logprobs(tiny_model, rows * 1e3, tokens, chunk=50)  # the fallback too
    plain = chosen_logprobs(tiny_model, rows.requires_grad_(True), tokens, chunk=50)
    torch.testing.assert_close(buffered, plain.detach(), atol=1e-6, rtol=1e-6)
    expected = unembed(tiny_model, rows.detach() * 1e3).float().log_softmax(-1).gather(-1, tokens)
    torch.testing.assert_close(huge, expected, atol=1e-3, rtol=1e-5)
