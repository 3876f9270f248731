"""Artefact names keep their dots, stay inside their folder, and shipped names are names only."""

import pytest
import torch

from workbench.artefacts import artefact_base, load_artefact, safe_stem, save_artefact
from workbench.data.concepts import load_concept
from workbench.errors import ConfigError


def test_dotted_names_do_not_collide(tmp_path):
    first = save_artefact(tmp_path / "sentiment.v2-vector", {"x": torch.ones(2)}, {"n": 1}, "t")
    second = save_artefact(tmp_path / "sentiment.v2-lora", {"x": torch.zeros(2)}, {"n": 2}, "t")
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sentiment.v2-lora.json",
        "sentiment.v2-lora.safetensors",
        "sentiment.v2-vector.json",
        "sentiment.v2-vector.safetensors",
    ]
    assert load_artefact(first, "t")[1]["n"] == 1 and load_artefact(second, "t")[1]["n"] == 2
    # the artefact's own suffixes are the only ones cut
    assert artefact_base(tmp_path / "a.b.json") == tmp_path / "a.b"
    assert artefact_base(tmp_path / "a.b") == tmp_path / "a.b"


def test_names_from_paths_stay_in_their_folder(tmp_path):
    for hostile in ("/abs/mine.jsonl", "../../escape", "<img src=x onerror=alert(0)>.jsonl", ""):
        stem = safe_stem(hostile)
        target = (tmp_path / f"{stem}-vector").resolve()
        assert target.parent == tmp_path.resolve() and "/" not in stem and "<" not in stem


def test_shipped_concepts_are_looked_up_by_name_only():
    assert len(load_concept("sentiment")) > 0
    with pytest.raises(ConfigError, match="unknown concept"):
        load_concept("sentiment/../formality")
