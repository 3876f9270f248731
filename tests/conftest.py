"""Shared fixtures (tiny models of both architectures, built once per session) and the tiers.

Every test belongs to one tier, a pytest marker (``-m unit`` runs the fast tier alone):

- ``unit``: tiny random models, no browser, no notebook (the default for unmarked tests);
- ``notebook``: the notebooks executed through nbmake on small settings;
- ``browser``: opens pages in headless Chromium;
- ``integration``: real packaged models (converts their weights on first use);
- ``services``: real services started by the test (a local Ray runtime).

Their costs on a 2-core CPU are in the README.
"""

from __future__ import annotations

import pytest

from workbench.data.pairs import ContrastPair, PairDataset
from workbench.models.loading import load_model

TINY_MODELS = ("tiny-llama", "tiny-gemma3")
TIERS = ("integration", "notebook", "browser", "services")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session", params=TINY_MODELS)
def tiny_model(request):
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model("tiny-llama", device="cpu")


@pytest.fixture
def small_pairs() -> PairDataset:
    """Pairs of different prompt and answer lengths, so batches really are padded."""
    texts = [
        ("Review:", " Lovely food.", " Awful food, sadly."),
        ("Dear diary, today was", " great", " a long and tiring day"),
        ("Q", " yes indeed, certainly", " no"),
        ("The weather this week has been", " sunny and warm.", " grey and cold."),
        ("Hi", " :)", " :("),
    ]
    return PairDataset(
        ContrastPair(f"p{i}", prompt, pos, neg, concept="test", split="train" if i % 2 else "test")
        for i, (prompt, pos, neg) in enumerate(texts)
    )
