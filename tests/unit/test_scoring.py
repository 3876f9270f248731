import torch

from workbench.measure.scoring import answer_logprobs
from workbench.models.loading import load_model
from workbench.models.tiny import build_tiny_hf_model
from workbench.steering.forms import SteeringVector


def test_answer_logprobs_match_the_hf_model_one_pair_at_a_time(small_pairs):
    model = load_model("tiny-gemma3")
    hf_model, tokenizer = build_tiny_hf_model("gemma3")
    totals, lengths = answer_logprobs(model, small_pairs, "negative", batch_size=3)
    for i, pair in enumerate(small_pairs):
        prompt = [
            tokenizer.bos_token_id,
            *tokenizer(pair.prompt, add_special_tokens=False)["input_ids"],
        ]
        answer = tokenizer(pair.negative, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logprobs = hf_model(ids).logits[0].double().log_softmax(-1)
        expected = sum(logprobs[len(prompt) - 1 + j, token] for j, token in enumerate(answer))
        assert lengths[i] == len(answer)
        assert abs(float(totals[i]) - float(expected)) < 1e-4


def test_answer_only_steering_changes_the_answer_logprobs(small_pairs, tiny_llama):
    vector = SteeringVector.for_model(tiny_llama, 1, site="resid", positions="answer")
    with torch.no_grad():
        vector.bias.fill_(1.0)
    plain, _ = answer_logprobs(tiny_llama, small_pairs, "positive")
    steered, _ = answer_logprobs(tiny_llama, small_pairs, "positive", [(vector, 3.0)])
    zero, _ = answer_logprobs(tiny_llama, small_pairs, "positive", [(vector, 0.0)])
    assert torch.equal(plain, zero)
    assert (plain - steered).abs().min() > 0
