import pytest

from workbench.data.chat import chat_prompt, with_chat_template
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.models.loading import load_model


@pytest.fixture
def model():
    return load_model("tiny-llama")  # fresh: tests change its tokenizer's template


def test_chat_prompt_renders_a_user_turn_and_assistant_opener(model):
    assert chat_prompt(model, "Hi?") == "<|user|>Hi?\n<|assistant|>"
    assert chat_prompt(model, "Hi?", "Be nice.").startswith("<|system|>Be nice.\n")


def test_leading_bos_is_dropped_only_when_the_encoder_adds_it(model):
    model.tokenizer.chat_template = "{{ bos_token }}" + model.tokenizer.chat_template
    assert chat_prompt(model, "Hi?") == "<|user|>Hi?\n<|assistant|>"
    provenance = model.workbench_provenance
    object.__setattr__(
        model,
        "workbench_provenance",
        provenance.__class__(**{**provenance.to_dict(), "prepend_bos": False}),
    )
    assert chat_prompt(model, "Hi?").startswith("<bos><|user|>")


def test_dataset_formatting_strips_answer_space_and_keeps_ids(model):
    pairs = PairDataset([ContrastPair("a", "Q?", " yes", " no", "c", "train")])
    formatted = with_chat_template(model, pairs)
    assert formatted[0].prompt.endswith("<|assistant|>")
    assert (formatted[0].id, formatted[0].positive, formatted[0].negative) == ("a", "yes", "no")


def test_base_model_without_template_is_an_error(model):
    model.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="tiny-llama has no chat template"):
        chat_prompt(model, "Hi")


def _persona() -> PairDataset:
    return PairDataset(
        ContrastPair(f"q{i}", f'Would you say this?\n"Statement {i}."', yes, no, split="train")
        for i, (yes, no) in enumerate([(" Yes", " No"), (" No", " Yes"), (" Yes", " No")])
    )


def test_answer_cue_is_added_once_and_auto_picks_by_answers_and_model(model):
    from workbench.data.chat import format_prompts, resolve_prompt_style, with_answer_cue

    cued = with_answer_cue(_persona())
    assert (
        cued[0].prompt == 'Would you say this?\n"Statement 0."\n\nPlease answer Yes or No.\nAnswer:'
    )
    assert with_answer_cue(cued)[0].prompt == cued[0].prompt  # idempotent
    assert [p.positive for p in cued] == [p.positive for p in _persona()]
    free = PairDataset([ContrastPair("f", "Review:", " Lovely food.", " Awful food.")])
    assert resolve_prompt_style(model, free) == "plain"
    assert resolve_prompt_style(model, _persona()) == "chat"  # tiny-llama has a template
    assert format_prompts(model, _persona(), "cue")[1].prompt.endswith("Answer:")
    chat = format_prompts(model, _persona())
    assert chat[0].prompt.startswith("<|user|>") and chat[0].positive == "Yes"
    model.tokenizer.chat_template = None
    assert resolve_prompt_style(model, _persona()) == "cue"
    # our ConfigError without a runtime type checker; the test suite's checker (jaxtyping +
    # beartype) refuses the Literal first: either way the error names the bad value
    with pytest.raises((ValueError, TypeError), match="fancy"):
        format_prompts(model, _persona(), "fancy")
