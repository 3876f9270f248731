import pytest

from workbench.chat_format import chat_prompt, with_chat_template
from workbench.pairs import ContrastPair, PairDataset
from workbench.tiny_models import byte_tokenizer


def test_chat_prompt_renders_a_user_turn_and_assistant_opener():
    tokenizer = byte_tokenizer()
    assert chat_prompt(tokenizer, "Hi?") == "<|user|>Hi?\n<|assistant|>"
    assert chat_prompt(tokenizer, "Hi?", "Be nice.").startswith("<|system|>Be nice.\n")


def test_leading_bos_is_dropped():
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    assert not chat_prompt(tokenizer, "Hi?").startswith("<bos>")


def test_dataset_formatting_strips_answer_space_and_keeps_ids():
    pairs = PairDataset([ContrastPair("a", "Q?", " yes", " no", "c", "train")])
    formatted = with_chat_template(pairs, byte_tokenizer())
    assert formatted[0].prompt.endswith("<|assistant|>")
    assert (formatted[0].id, formatted[0].positive, formatted[0].negative) == ("a", "yes", "no")


def test_base_model_tokenizer_without_template_is_an_error():
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tokenizer, "Hi")
