import json

import pytest

from workbench.data.concepts import load_concept, shipped_concepts
from workbench.data.formats import read_pairs, write_pairs_jsonl
from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import DataFormatError


def _write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


NATIVE = {
    "id": "s-0",
    "concept": "sentiment",
    "split": "train",
    "prompt": "Review:",
    "positive": " Good.",
    "negative": " Bad.",
}


def test_native_round_trip(tmp_path):
    pairs = [
        ContrastPair(f"s-{i}", "Review:", f" good {i}", f" bad {i}", "sentiment", "train")
        for i in range(5)
    ]
    path = write_pairs_jsonl(pairs, tmp_path / "pairs.jsonl")
    loaded = read_pairs(path)
    assert list(loaded) == pairs
    assert loaded[2].source == f"{path}:3"


def test_persona_format_with_extra_fields(tmp_path):
    path = _write_lines(
        tmp_path / "persona.jsonl",
        [
            {
                "question": 'Is the following statement something you would say?\n"I like power"',
                "statement": "I like power",
                "answer_matching_behavior": " Yes",
                "answer_not_matching_behavior": " No",
                "label_confidence": 0.9,
            },
            {
                "question": "Answer:",
                "answer_matching_behavior": "(A)",
                "answer_not_matching_behavior": ["(B)"],
            },
        ],
    )
    pairs = read_pairs(path, concept="power")
    assert pairs[0].positive == " Yes" and pairs[0].concept == "power"
    assert (pairs[1].positive, pairs[1].negative) == (" (A)", " (B)")  # space inserted
    assert pairs[0].id == "persona-0001" and all(p.split for p in pairs)


def test_powerseeking_and_axbench_formats(tmp_path):
    ps = _write_lines(
        tmp_path / "powerseeking.jsonl",
        [{"question": "Q?", "matching": " A", "not_matching": " B"}],
    )
    assert read_pairs(ps)[0].positive == " A"
    ax = tmp_path / "axbench.json"
    ax.write_text(
        json.dumps(
            [
                {
                    "input": "Tell me",
                    "winning_output": "about weddings",
                    "losing_output": "about cars",
                    "output_concept": "weddings",
                }
            ]
        )
    )
    pair = read_pairs(ax)[0]
    assert (pair.concept, pair.prompt, pair.positive) == ("weddings", "Tell me", " about weddings")


@pytest.mark.parametrize(
    ("change", "line_field", "match"),
    [
        ({"positive": ""}, "positive", "is empty"),
        ({"negative": " Good."}, "negative", "identical"),
        ({"split": "dev"}, "split", "must be one of"),
        ({"positive": 3}, "positive", "expected a string"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, change, line_field, match):
    bad = {**NATIVE, "id": "s-1", **change}
    path = _write_lines(tmp_path / "pairs.jsonl", [NATIVE, bad])
    with pytest.raises(DataFormatError, match=match) as error:
        read_pairs(path)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), 2, line_field)


def test_misspelled_field_is_named_with_a_suggestion(tmp_path):
    bad = {k if k != "positive" else "postive": v for k, v in NATIVE.items()}
    path = _write_lines(tmp_path / "pairs.jsonl", [bad])
    with pytest.raises(DataFormatError, match="'postive': misspelled") as error:
        read_pairs(path)
    assert (error.value.line, error.value.field) == (1, "positive")


def test_unknown_field_in_native_format(tmp_path):
    path = _write_lines(tmp_path / "pairs.jsonl", [{**NATIVE, "concpet": "x"}])
    with pytest.raises(DataFormatError, match="did you mean 'concept'") as error:
        read_pairs(path)
    assert error.value.field == "concpet"


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write_lines(tmp_path / "pairs.jsonl", [NATIVE, {**NATIVE, "prompt": "Other:"}])
    with pytest.raises(DataFormatError, match=r"duplicate id 's-0'.*:1") as error:
        read_pairs(path)
    assert (error.value.line, error.value.field) == (2, "id")


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = json.dumps(NATIVE).encode() + b"\n"
    bad = json.dumps({**NATIVE, "id": "s-1"}).encode().replace(b"Bad", b"B\xffd")
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as error:
        read_pairs(path)
    assert error.value.line == 3


def test_invalid_json_and_non_object(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(NATIVE) + "\n{not json\n")
    with pytest.raises(DataFormatError, match="invalid JSON") as error:
        read_pairs(path)
    assert error.value.line == 2
    path.write_text("[1, 2]\n")
    with pytest.raises(DataFormatError, match="expected a JSON object"):
        read_pairs(path)


def test_unrecognised_format_and_missing_file(tmp_path):
    path = _write_lines(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        read_pairs(path)
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "missing.jsonl")


def test_shipped_concepts_meet_the_spec():
    names = shipped_concepts()
    assert {
        "sentiment",
        "weddings",
        "formality",
        "frugality",
        "extraversion",
        "optimism",
        "interest_in_science",
    } <= set(names)
    for name in names:
        pairs = load_concept(name)
        assert isinstance(pairs, PairDataset) and pairs.concepts == [name]
        assert len(pairs) >= 80 and len(pairs.train) >= 64 and len(pairs.test) >= 16
        for pair in pairs:
            a, b = len(pair.positive.split()), len(pair.negative.split())
            assert min(a, b) / max(a, b) >= 0.5, pair.id


def test_unknown_concept_lists_shipped_ones():
    with pytest.raises(ValueError, match="sentiment"):
        load_concept("no-such-concept")
