import pytest

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.errors import DataFormatError


def _pair(i: int, split=None) -> ContrastPair:
    return ContrastPair(f"id-{i}", f"prompt {i}", f" yes {i}", f" no {i}", concept="c", split=split)


def test_pair_rejects_identical_and_empty_answers():
    with pytest.raises(DataFormatError, match="identical") as error:
        ContrastPair("a", "q", " same", " same")
    assert error.value.field == "negative"
    with pytest.raises(DataFormatError) as error:
        ContrastPair("a", "q", "   ", " no")
    assert error.value.field == "positive"
    with pytest.raises(DataFormatError, match="split"):
        ContrastPair("a", "q", " yes", " no", split="validation")


def test_error_names_source_file_and_line():
    with pytest.raises(DataFormatError) as error:
        ContrastPair("a", "q", "", " no", source="data/x.jsonl:7")
    assert (error.value.path, error.value.line, error.value.field) == (
        "data/x.jsonl",
        7,
        "positive",
    )
    assert str(error.value).startswith("data/x.jsonl, line 7, field 'positive'")


def test_duplicate_ids_are_rejected():
    with pytest.raises(DataFormatError, match="duplicate id"):
        PairDataset([_pair(1), _pair(2), _pair(1)])


def test_assign_splits_is_deterministic_and_order_free():
    pairs = [_pair(i) for i in range(50)]
    a = PairDataset(pairs).assign_splits(test_fraction=0.2, seed=1)
    b = PairDataset(reversed(pairs)).assign_splits(test_fraction=0.2, seed=1)
    c = PairDataset(pairs).assign_splits(test_fraction=0.2, seed=2)
    assert len(a.test) == 10 and len(a.train) == 40
    assert {p.id for p in a.test} == {p.id for p in b.test}
    assert {p.id for p in a.test} != {p.id for p in c.test}


def test_assign_splits_keeps_given_splits_unless_told():
    pairs = PairDataset([_pair(0, "test"), *(_pair(i) for i in range(1, 11))])
    assert pairs.assign_splits(0.5, seed=0)[0].split == "test"
    assert all(p.split for p in pairs.assign_splits(0.5))
    overwritten = pairs.assign_splits(0.5, seed=0, overwrite=True)
    assert len(overwritten.test) == round(0.5 * 11)


def test_content_hash_tracks_content():
    a = PairDataset([_pair(1), _pair(2)])
    assert a.content_hash() == PairDataset([_pair(1), _pair(2)]).content_hash()
    assert a.content_hash() != PairDataset([_pair(2), _pair(1)]).content_hash()
    assert a.content_hash() != a.assign_splits(0.5).content_hash()


def test_subsample_keeps_sizes_order_and_answer_balance():
    from workbench.data.pairs import ContrastPair, PairDataset

    pairs = PairDataset(
        ContrastPair(
            f"q{i:02d}",
            f"Item {i}?",
            *((" Yes", " No") if i % 3 == 0 else (" No", " Yes")),
            split="test" if i % 4 == 3 else "train",
        )
        for i in range(40)
    )
    small = pairs.subsample(train=10, test=4, seed=1)
    assert len(small.train) == 10 and len(small.test) == 4
    assert [p.id for p in small] == [p.id for p in pairs if p.id in {q.id for q in small}]
    assert sum(p.positive == " Yes" for p in small.train) == 5  # balanced, though 1 in 3 is Yes
    assert [p.id for p in pairs.subsample(10, 4, seed=1)] == [p.id for p in small]
    assert pairs.subsample() is not pairs and len(pairs.subsample()) == len(pairs)
