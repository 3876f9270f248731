import pytest
import torch

from workbench.data.encoding import encode_pairs
from workbench.data.pairs import ContrastPair
from workbench.errors import DataFormatError
from workbench.models.tiny import byte_tokenizer


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_masks_recover_prompt_and_answer_text(small_pairs, padding_side):
    tokenizer = byte_tokenizer()
    batch = encode_pairs(
        tokenizer, small_pairs, "negative", prepend_bos=True, padding_side=padding_side
    )
    for row, pair in enumerate(small_pairs):
        ids = batch.input_ids[row]
        assert tokenizer.decode(ids[batch.prompt_mask[row]]) == pair.prompt
        assert tokenizer.decode(ids[batch.answer_mask[row]]) == pair.negative
        real = batch.attention_mask[row].bool()
        assert ids[real][0] == tokenizer.bos_token_id
        assert batch.position_ids[row][real].tolist() == list(range(int(real.sum())))
        assert batch.last_prompt_index[row] == batch.prompt_mask[row].nonzero().max()


def test_prompt_side_has_no_answer_tokens(small_pairs):
    batch = encode_pairs(byte_tokenizer(), small_pairs, "prompt", prepend_bos=False)
    assert not batch.answer_mask.any()
    assert (batch.prompt_mask.sum(-1) == batch.attention_mask.sum(-1)).all()


def test_too_long_pair_names_file_line_and_field():
    pair = ContrastPair("x", "a" * 10, " " + "b" * 30, " c", source="data/p.jsonl:4")
    with pytest.raises(DataFormatError, match="longer than the model's context of 20") as error:
        encode_pairs(byte_tokenizer(), [pair], "positive", prepend_bos=True, max_length=20)
    assert (error.value.path, error.value.line, error.value.field) == (
        "data/p.jsonl",
        4,
        "positive",
    )
    with pytest.raises(DataFormatError) as error:
        encode_pairs(byte_tokenizer(), [pair], "positive", prepend_bos=True, max_length=5)
    assert error.value.field == "prompt"


def test_bad_arguments():
    pair = ContrastPair("x", "a", " b", " c")
    with pytest.raises(ValueError, match="side"):
        encode_pairs(byte_tokenizer(), [pair], "both", prepend_bos=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding_side"):
        encode_pairs(byte_tokenizer(), [pair], "positive", prepend_bos=True, padding_side="middle")  # type: ignore[arg-type]


def test_shape_annotations_are_checked_under_test():
    """jaxtyping checks the EncodedBatch shapes (pytest runs with --jaxtyping-packages)."""
    from workbench.data.encoding import EncodedBatch

    ok = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="attention_mask"):
        EncodedBatch(
            ok,
            torch.zeros(2, 4, dtype=torch.long),
            ok,
            ok.bool(),
            ok.bool(),
            torch.zeros(2, dtype=torch.long),
        )
