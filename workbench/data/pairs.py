"""Polarity-paired examples: the ``ContrastPair`` value object and the ``PairDataset`` of them.

A pair is a prompt with two answers: ``positive`` shows the concept, ``negative`` its opposite.
The text scored is ``prompt + answer`` concatenated as is, so answers usually begin with a space.

>>> pair = ContrastPair("p-0", "Review:", " Lovely.", " Awful.", concept="sentiment")
>>> dataset = PairDataset([pair]).assign_splits(test_fraction=0.25, seed=0)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, overload

import numpy as np

from workbench.errors import ConfigError, DataFormatError
from workbench.provenance import stable_hash

Strings = Sequence[str] | np.ndarray  # answer strings, one per item
MAX_REPEATED_ANSWERS = 8  # answer sets larger than this are free text, not a label set


def answers_repeat(positive: Strings, negative: Strings) -> bool:
    """Whether the items share a small set of answer strings (Yes/No, (A)/(B), ...)."""
    strings = {a.strip() for a in [*positive, *negative]}
    return len(strings) < 2 * len(positive) and len(strings) <= MAX_REPEATED_ANSWERS


SPLITS = ("train", "test")
INVISIBLE = ("Zs", "Zl", "Zp", "Cc", "Cf")  # separators, controls, format (zero-width) marks


SURROGATE = re.compile("[\ud800-\udfff]")


def visible(text: str) -> bool:
    """Whether ``text`` has a character that shows (not only spaces or zero-width marks)."""
    return any(unicodedata.category(c) not in INVISIBLE for c in text)


def content_key(pair: ContrastPair) -> tuple[str, str, str]:
    """What makes two pairs the same example, whatever their ids."""
    return (pair.prompt, pair.positive, pair.negative)


@dataclass(frozen=True)
class ContrastPair:
    """One prompt with a positive (concept) and a negative (opposite) answer.

    ``source`` says where the pair came from (``"file:line"``), so later errors can point at it.
    """

    id: str
    prompt: str
    positive: str
    negative: str
    concept: str = ""
    split: str | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_pair(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record (``source`` is where it was read from, so it is not written)."""
        data = asdict(self)
        data.pop("source")
        return data


def validate_pair(pair: ContrastPair) -> None:
    """Raise :class:`DataFormatError` (naming the field) if a pair is unusable."""
    path, line = _split_source(pair.source)
    for name in ("id", "prompt", "positive", "negative", "concept"):
        value = getattr(pair, name)
        if not isinstance(value, str):
            raise DataFormatError(
                f"expected a string, got {type(value).__name__}", path=path, line=line, field=name
            )
    for name in ("id", "prompt", "positive", "negative", "concept"):
        surrogate = SURROGATE.search(getattr(pair, name))
        if surrogate is not None:
            raise DataFormatError(
                f"holds a lone surrogate ({surrogate.group()!r} at character "
                f"{surrogate.start() + 1}), which is not text a tokenizer can encode",
                path=path,
                line=line,
                field=name,
            )
    for name in ("id", "positive", "negative"):
        if not visible(getattr(pair, name)):
            raise DataFormatError(
                "is empty (nothing but whitespace or invisible characters)",
                path=path,
                line=line,
                field=name,
            )
    if pair.positive == pair.negative:
        raise DataFormatError(
            f"positive and negative answers are identical ({pair.positive!r})",
            path=path,
            line=line,
            field="negative",
        )
    if pair.split is not None and pair.split not in SPLITS:
        raise DataFormatError(
            f"must be one of {SPLITS}, got {pair.split!r}", path=path, line=line, field="split"
        )


def _split_source(source: str | None) -> tuple[str | None, int | None]:
    if source is None:
        return None, None
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() and path else (source, None)


class PairDataset(Sequence[ContrastPair]):
    """An ordered, immutable collection of contrast pairs with unique ids.

    ``train`` / ``test`` select a split; :meth:`assign_splits` gives every pair without one a
    split, deterministically from a seed.
    """

    def __init__(self, pairs: Iterable[ContrastPair], name: str = "") -> None:
        self._pairs: tuple[ContrastPair, ...] = tuple(pairs)
        self.name = name
        seen: dict[str, ContrastPair] = {}
        for pair in self._pairs:
            if pair.id in seen:
                path, line = _split_source(pair.source)
                first = seen[pair.id].source or "an earlier pair"
                raise DataFormatError(
                    f"duplicate id {pair.id!r} (first used at {first})",
                    path=path,
                    line=line,
                    field="id",
                )
            seen[pair.id] = pair

    def __len__(self) -> int:
        return len(self._pairs)

    @overload
    def __getitem__(self, index: int) -> ContrastPair: ...
    @overload
    def __getitem__(self, index: slice) -> PairDataset: ...
    def __getitem__(self, index: int | slice) -> ContrastPair | PairDataset:
        if isinstance(index, slice):
            return PairDataset(self._pairs[index], name=self.name)
        return self._pairs[index]

    def __iter__(self) -> Iterator[ContrastPair]:
        return iter(self._pairs)

    def __repr__(self) -> str:
        counts = {s: sum(p.split == s for p in self) for s in SPLITS}
        return (
            f"PairDataset(name={self.name!r}, pairs={len(self)}, concepts={self.concepts}, "
            f"train={counts['train']}, test={counts['test']})"
        )

    @property
    def concepts(self) -> list[str]:
        return sorted({p.concept for p in self})

    @property
    def train(self) -> PairDataset:
        return self.filter(lambda p: p.split == "train")

    @property
    def test(self) -> PairDataset:
        return self.filter(lambda p: p.split == "test")

    def filter(self, keep: Callable[[ContrastPair], bool]) -> PairDataset:
        return PairDataset((p for p in self if keep(p)), name=self.name)

    def map(self, transform: Callable[[ContrastPair], ContrastPair]) -> PairDataset:
        return PairDataset((transform(p) for p in self), name=self.name)

    def subsample(
        self, train: int | None = None, test: int | None = None, seed: int = 0
    ) -> PairDataset:
        """At most ``train`` training and ``test`` test pairs (None: all), drawn with ``seed``
        and balanced over the concept answer where answers repeat (Yes/No, (A)/(B)): the draw
        takes the answer strings in turn, so a 50/50 file stays 50/50. Order is kept."""
        keep: set[str] = set()
        for split, size in (("train", train), ("test", test)):
            members = [p for p in self if p.split == split]
            if size is not None and size < 0:
                raise ConfigError(f"subsample: {split} size must be >= 0, got {size}")
            if size is None or size >= len(members):
                keep.update(p.id for p in members)
                continue
            keep.update(_balanced_draw(members, size, seed))
        return self.filter(lambda p: p.id in keep)

    def content_hash(self) -> str:
        """sha256 over the pairs' records in order: the dataset hash recorded in artefacts."""
        return stable_hash([p.to_dict() for p in self])

    def assign_splits(
        self, test_fraction: float = 0.2, seed: int = 0, overwrite: bool = False
    ) -> PairDataset:
        """Give pairs without a split (or all, with ``overwrite``) a deterministic split.

        Pairs are ordered by id, shuffled with ``seed`` and the first ``round(test_fraction*n)``
        become ``test``: the same ids and seed always give the same split, whatever the order
        of the file. Copies of one pair (same prompt and answers, any ids) are split as one, so
        no example is in both splits.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
        groups: dict[tuple[str, str, str], list[ContrastPair]] = {}
        for pair in self:
            groups.setdefault(content_key(pair), []).append(pair)
        given = {key: _given_split(members) for key, members in groups.items()}
        todo = sorted(
            (min(p.id for p in members), key)
            for key, members in groups.items()
            if overwrite or given[key] is None
        )
        order = np.random.default_rng(seed).permutation(len(todo))
        n_test = round(test_fraction * len(todo))
        split_of = {
            todo[i][1]: ("test" if rank < n_test else "train") for rank, i in enumerate(order)
        }
        if not overwrite:
            split_of.update({k: v for k, v in given.items() if v is not None})
        return self.map(lambda p: replace(p, split=split_of[content_key(p)]))


def _given_split(copies: list[ContrastPair]) -> str | None:
    """The split given to copies of one pair (they follow it); copies given different splits
    are an error, since the same example would be trained on and tested."""
    splits = {p.split for p in copies if p.split is not None}
    if len(splits) > 1:
        where = ", ".join(f"{p.id!r} ({p.source or 'no source'}): {p.split}" for p in copies)
        raise DataFormatError(f"one pair (same prompt and answers) is in both splits: {where}")
    return splits.pop() if splits else None


def validation_split(
    pairs: Sequence[ContrastPair], fraction: float = 0.15, seed: int = 0
) -> tuple[PairDataset, PairDataset]:
    """(fit, validation) from training pairs, deterministic by id, for early stopping.

    Keeping the validation pairs out of the test split leaves the test split untouched by
    every choice made during training.
    """
    resplit = PairDataset(pairs).assign_splits(test_fraction=fraction, seed=seed, overwrite=True)
    validation_ids = {p.id for p in resplit.test}
    pairs = PairDataset(pairs)
    return (
        pairs.filter(lambda p: p.id not in validation_ids),
        pairs.filter(lambda p: p.id in validation_ids),
    )


def _balanced_draw(members: Sequence[ContrastPair], size: int, seed: int) -> list[str]:
    """Ids of ``size`` pairs, taking each concept-answer group in turn (shuffled within)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    repeat = len({p.positive.strip() for p in members}) < len(members)
    for pair in sorted(members, key=lambda p: p.id):
        groups.setdefault(pair.positive.strip() if repeat else "", []).append(pair.id)
    queues = [list(rng.permutation(ids)) for _, ids in sorted(groups.items())]
    drawn: list[str] = []
    while len(drawn) < size:
        for queue in queues:
            if queue and len(drawn) < size:
                drawn.append(str(queue.pop(0)))
    return drawn
