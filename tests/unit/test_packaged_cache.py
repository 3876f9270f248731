"""The conversion cache: an interrupted conversion never leaves a cache that loads as valid."""

import json

import pytest

from workbench.models import packaged as packaged_models
from workbench.models.packaged import MARKER_FILE, cached_model_dir, ensure_converted, read_marker


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    return tmp_path


def _fake_convert(spec, out):
    (out / "config.json").write_text("{}")
    (out / MARKER_FILE).write_text(json.dumps({"name": spec.name}))


def test_cache_root_follows_environment(cache):
    assert cached_model_dir("gemma-3-270m").parent == cache / "models"


def test_interrupted_conversion_leaves_no_valid_cache(cache, monkeypatch):
    def crash(spec, out):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt  # e.g. the user pressed Ctrl-C half-way

    monkeypatch.setattr(packaged_models, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_converted("smollm2-135m-instruct")
    target = cached_model_dir("smollm2-135m-instruct")
    assert not target.exists()
    assert list((cache / "models").iterdir()) == []  # scratch folder removed too

    monkeypatch.setattr(packaged_models, "_convert", _fake_convert)
    assert ensure_converted("smollm2-135m-instruct") == target
    assert read_marker(target) == {"name": "smollm2-135m-instruct"}


def test_folder_without_marker_is_not_trusted(cache, monkeypatch):
    target = cached_model_dir("gemma-3-270m")
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a killed copy, say, with no marker
    calls = []
    monkeypatch.setattr(
        packaged_models,
        "_convert",
        lambda spec, out: (calls.append(spec.name), _fake_convert(spec, out)),
    )
    ensure_converted("gemma-3-270m")
    assert calls == ["gemma-3-270m"]
    ensure_converted("gemma-3-270m")  # a finished cache is reused, not converted again
    assert calls == ["gemma-3-270m"]
