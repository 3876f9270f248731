import pytest
import torch

from workbench.data.encoding import encode_pairs
from workbench.directions.capture import ActivationSet, capture_activations
from workbench.errors import HookNameError
from workbench.models.loading import model_provenance

HOOKS = ["blocks.1.hook_resid_post", "blocks.2.mlp.out.hook_in", "blocks.0.mlp.out.hook_out"]
RULES = ["last_prompt", "answer_mean", "answer_tokens"]


@pytest.mark.parametrize("rule", RULES)
def test_batched_equals_one_at_a_time_and_left_equals_right(tiny_model, small_pairs, rule):
    one = capture_activations(
        tiny_model, small_pairs, HOOKS, position_rule=rule, batch_size=1, progress=False
    )
    right = capture_activations(
        tiny_model, small_pairs, HOOKS, position_rule=rule, batch_size=4, progress=False
    )
    left = capture_activations(
        tiny_model,
        small_pairs,
        HOOKS,
        position_rule=rule,
        batch_size=5,
        padding_side="left",
        progress=False,
    )
    for hook in HOOKS:
        torch.testing.assert_close(
            right.activations[hook], one.activations[hook], atol=1e-5, rtol=0
        )
        torch.testing.assert_close(left.activations[hook], one.activations[hook], atol=1e-5, rtol=0)
    assert right.pair_ids == one.pair_ids == left.pair_ids
    assert torch.equal(right.token_ids, left.token_ids)


def test_reductions_match_an_unpadded_forward(tiny_model, small_pairs):
    """Independent check: a plain run_with_cache on each unpadded sequence."""
    hook = "blocks.1.hook_resid_post"
    means = capture_activations(tiny_model, small_pairs, [hook], progress=False)
    tokens = capture_activations(
        tiny_model,
        small_pairs,
        [hook],
        position_rule="answer_tokens",
        sides=["positive"],
        progress=False,
    )
    last = capture_activations(
        tiny_model, small_pairs, [hook], position_rule="last_prompt", progress=False
    )
    prepend = model_provenance(tiny_model).prepend_bos
    per_token = []
    for i, pair in enumerate(small_pairs):
        for side in ("positive", "negative"):
            batch = encode_pairs(tiny_model.tokenizer, [pair], side, prepend_bos=prepend)
            with torch.no_grad():
                _, cache = tiny_model.run_with_cache(batch.input_ids, names_filter=[hook])
            values = cache[hook][0]
            n_answer = len(
                tiny_model.tokenizer(getattr(pair, side), add_special_tokens=False)["input_ids"]
            )
            expected_mean = values[-n_answer:].mean(0)
            row = i if side == "positive" else len(small_pairs) + i
            torch.testing.assert_close(
                means.activations[hook][row], expected_mean, atol=1e-5, rtol=0
            )
            if side == "positive":
                per_token.append(values[-n_answer:])
                torch.testing.assert_close(
                    last.activations[hook][i], values[-n_answer - 1], atol=1e-5, rtol=0
                )
    torch.testing.assert_close(tokens.activations[hook], torch.cat(per_token), atol=1e-5, rtol=0)


def test_row_labels(tiny_llama, small_pairs):
    acts = capture_activations(
        tiny_llama,
        small_pairs,
        HOOKS[:1],
        position_rule="answer_tokens",
        sides=["negative"],
        progress=False,
    )
    n_tokens = [
        len(tiny_llama.tokenizer(p.negative, add_special_tokens=False)["input_ids"])
        for p in small_pairs
    ]
    assert len(acts.pair_ids) == sum(n_tokens)
    assert acts.token_index.tolist() == [j for n in n_tokens for j in range(n)]
    assert set(acts.sides) == {"negative"}
    assert tiny_llama.tokenizer.decode(acts.token_ids[: n_tokens[0]]) == small_pairs[0].negative
    means = capture_activations(tiny_llama, small_pairs, HOOKS[:1], progress=False)
    assert means.select(HOOKS[0], "positive").shape == (len(small_pairs), 64)
    assert means.activations[HOOKS[0]].shape[0] == 2 * len(small_pairs)
    with pytest.raises(KeyError, match="no rows of side"):
        means.select(HOOKS[0], "prompt")


def test_save_and_load_round_trip(tiny_llama, small_pairs, tmp_path):
    acts = capture_activations(
        tiny_llama, small_pairs, HOOKS, position_rule="answer_tokens", progress=False
    )
    acts.save(tmp_path / "acts")
    loaded = ActivationSet.load(tmp_path / "acts")
    for hook in HOOKS:
        assert torch.equal(loaded.activations[hook], acts.activations[hook])
    assert loaded.pair_ids == acts.pair_ids and loaded.sides == acts.sides
    assert torch.equal(loaded.token_index, acts.token_index)
    assert loaded.provenance == acts.provenance
    assert loaded.provenance.model.numerics == "raw"
    assert loaded.provenance.dataset_hash == small_pairs.content_hash()


def test_bad_hook_name_is_named_with_suggestions(tiny_llama, small_pairs):
    with pytest.raises(
        HookNameError, match=r"blocks\.1\.hook_resid_pst.*did you mean blocks\.1\.hook_resid_post"
    ):
        capture_activations(tiny_llama, small_pairs, ["blocks.1.hook_resid_pst"], progress=False)
    with pytest.raises(HookNameError, match="has 3 blocks"):
        capture_activations(tiny_llama, small_pairs, ["blocks.7.hook_resid_post"], progress=False)


def test_bad_arguments(tiny_llama, small_pairs):
    with pytest.raises(ValueError, match="position_rule"):
        capture_activations(tiny_llama, small_pairs, HOOKS, position_rule="first", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        capture_activations(tiny_llama, small_pairs, HOOKS, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="sides"):
        capture_activations(tiny_llama, small_pairs, HOOKS, sides=["both"], progress=False)


def test_no_hooks_left_behind_after_an_error(tiny_llama, small_pairs):
    def n_hooks():
        return sum(len(hp._forward_hooks) for hp in tiny_llama.hook_dict.values())

    before = n_hooks()
    too_long = [small_pairs[0].__class__("long", "x" * 400, " a", " b")]
    with pytest.raises(ValueError):
        capture_activations(tiny_llama, too_long, HOOKS, progress=False)
    capture_activations(tiny_llama, small_pairs, HOOKS, progress=False)
    assert n_hooks() == before
