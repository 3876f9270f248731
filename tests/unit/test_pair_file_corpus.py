"""A corpus of malformed pair files: each ends in an error naming the file, the true line and
the file's own field, or in a correct dataset; none in a silent wrong result or a raw traceback."""

import json
import time

import pytest

from workbench.data.encoding import encode_pairs
from workbench.data.formats import read_pairs
from workbench.errors import DataFormatError
from workbench.manifold.valid import collect_valid_activations

NATIVE = {"prompt": "Review:", "positive": " Good.", "negative": " Bad.", "concept": "taste"}
PERSONA = {
    "question": "Is this something you would say?",
    "answer_matching_behavior": " Yes",
    "answer_not_matching_behavior": " No",
}


def _lines(path, *texts):
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def _raises(path, line, field, match):
    with pytest.raises(DataFormatError, match=match) as error:
        read_pairs(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), line, field)
    assert str(path) in str(error.value)


def test_json_nested_too_deep_is_named(tmp_path):
    path = _lines(tmp_path / "deep.jsonl", json.dumps(NATIVE), "[" * 100_000)
    _raises(path, 2, None, "nested too deeply")
    array = tmp_path / "deep.json"
    array.write_text("[\n" + json.dumps(NATIVE) + ",\n" + "[" * 100_000)
    _raises(array, 3, None, "nested too deeply")


def test_a_lone_surrogate_is_named_before_any_tokenizer_sees_it(tmp_path):
    text = json.dumps({**NATIVE, "positive": " Go\\ud800od."}).replace("\\\\", "\\")
    path = _lines(tmp_path / "surrogate.jsonl", json.dumps(NATIVE), text)
    _raises(path, 2, "positive", "lone surrogate")


@pytest.mark.parametrize(
    ("value", "match"), [(None, "got null"), (["a", "b"], "got list"), (True, "got bool")]
)
def test_ids_that_are_not_strings_or_integers_are_named(tmp_path, value, match):
    path = _lines(tmp_path / "ids.jsonl", json.dumps({**NATIVE, "id": value}))
    _raises(path, 1, "id", match)


def test_integer_ids_are_kept_as_their_text(tmp_path):
    path = _lines(tmp_path / "ids.jsonl", json.dumps({**NATIVE, "id": 7}))
    assert read_pairs(path)[0].id == "7"


def test_a_repeated_key_is_named(tmp_path):
    record = json.dumps(NATIVE)[:-1] + ', "positive": " Great."}'
    path = _lines(tmp_path / "keys.jsonl", json.dumps(NATIVE), record)
    _raises(path, 2, "positive", "appears twice")


@pytest.mark.parametrize("blank", ["\u200b", " \u200b\u2060 ", "\ufeff", "\u3000"])
def test_answers_of_invisible_characters_only_are_empty(tmp_path, blank):
    path = _lines(tmp_path / "blank.jsonl", json.dumps({**NATIVE, "negative": blank}))
    _raises(path, 1, "negative", "is empty")


def test_copies_of_one_pair_without_ids_stay_in_one_split(tmp_path):
    others = [json.dumps({**NATIVE, "positive": f" Good {i}."}) for i in range(20)]
    copies = [json.dumps(NATIVE)] * 12
    path = _lines(tmp_path / "copies.jsonl", *others, *copies)
    pairs = read_pairs(path, test_fraction=0.5)
    splits = {p.split for p in pairs if p.positive == " Good."}
    assert len(splits) == 1 and {p.split for p in pairs} == {"train", "test"}


def test_copies_given_different_splits_are_refused(tmp_path):
    train, test = {**NATIVE, "split": "train"}, {**NATIVE, "split": "test"}
    path = _lines(tmp_path / "leak.jsonl", json.dumps(train), json.dumps(test))
    with pytest.raises(DataFormatError, match=r"in both splits.*leak.jsonl:1.*leak.jsonl:2"):
        read_pairs(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"answer_matching_behavior": ""}, "answer_matching_behavior"),
        ({"answer_not_matching_behavior": " Yes"}, "answer_not_matching_behavior"),
    ],
)
def test_public_format_errors_name_the_files_own_field(tmp_path, change, field):
    path = _lines(
        tmp_path / "persona.jsonl", json.dumps(PERSONA), json.dumps({**PERSONA, **change})
    )
    _raises(path, 2, field, "")


def test_axbench_and_powerseeking_errors_name_their_fields(tmp_path):
    ax = {"input": "Tell me", "winning_output": " yes", "losing_output": "\u200b"}
    path = _lines(tmp_path / "ax.jsonl", json.dumps({**ax, "output_concept": "c"}))
    _raises(path, 1, "losing_output", "is empty")
    power = {"question": "Q?", "matching": " A", "not_matching": " A"}
    path = _lines(tmp_path / "power.jsonl", json.dumps(power))
    _raises(path, 1, "not_matching", "identical")


def test_json_arrays_report_the_true_line(tmp_path):
    records = [NATIVE, {**NATIVE, "positive": " Fine."}, {**NATIVE, "positive": ""}]
    path = tmp_path / "array.json"
    path.write_text("[\n" + ",\n\n".join(json.dumps(r, indent=2) for r in records) + "\n]\n")
    text = path.read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if '"positive": ""' in t)
    start = max(i for i, t in enumerate(text[:line], 1) if t.strip() == "{")
    _raises(path, start, "positive", "is empty")
    path.write_text("[\n" + json.dumps(NATIVE) + ",\n" + json.dumps(NATIVE)[:-1] + ",,}\n]")
    _raises(path, 3, None, "invalid JSON")
    path.write_text("[" + json.dumps(NATIVE) + "] trailing")
    _raises(path, 1, None, "extra data after the array")
    path.write_text("[" + json.dumps(NATIVE) + " " + json.dumps(NATIVE) + "]")
    _raises(path, 1, None, "expected ',' or ']'")


def test_a_valid_array_keeps_its_records_and_their_lines(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(
        "[\n" + ",\n".join(json.dumps({**NATIVE, "id": str(i)}) for i in range(3)) + "\n]"
    )
    pairs = read_pairs(path)
    assert [p.id for p in pairs] == ["0", "1", "2"]
    assert [p.source for p in pairs] == [f"{path}:{i}" for i in (2, 3, 4)]


def test_a_huge_line_is_refused_before_tokenising(tiny_llama, tmp_path):
    huge = {**NATIVE, "prompt": "word " * 2_000_000}  # 10 MB
    path = _lines(tmp_path / "huge.jsonl", json.dumps(NATIVE), json.dumps(huge))
    pairs = read_pairs(path)
    started = time.perf_counter()
    with pytest.raises(DataFormatError, match="characters, more than") as error:
        encode_pairs(tiny_llama.tokenizer, pairs, "positive", prepend_bos=True, max_length=2048)
    assert time.perf_counter() - started < 5  # tokenising it in full takes far longer
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 2, "prompt")


def test_a_too_long_prompt_in_valid_text_collection_names_its_file(tiny_llama, tmp_path):
    long = {**NATIVE, "prompt": "word " * 3000, "split": "train"}
    path = _lines(
        tmp_path / "long.jsonl", json.dumps({**NATIVE, "split": "train"}), json.dumps(long)
    )
    pairs = read_pairs(path)
    with pytest.raises(DataFormatError, match="model's context") as error:
        collect_valid_activations(tiny_llama, ["blocks.0.hook_out"], pairs, sources=("answers",))
    assert (error.value.path, error.value.line) == (str(path), 2)
