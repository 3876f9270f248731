"""Vectors from other tools, one per layer: safetensors {layer: tensor} and EasyEdit's
layer_{L}.pt files round-trip exactly, steer as the same vector built here, and bad files are
refused naming the file and key."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from workbench.errors import ArtefactError, MissingFileError
from workbench.steering.forms import SteeringVector
from workbench.steering.imported import read_easyedit, read_layer_tensors, write_layer_tensors

IDS = torch.tensor([[1, 5, 9, 14, 3]])


def _vectors(d: int = 64) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {layer: torch.randn(d, generator=generator) for layer in (0, 2)}


def test_layer_tensors_round_trip_and_steer_as_built_here(tiny_llama, tmp_path):
    raw = _vectors()
    path = write_layer_tensors(raw, tmp_path / "v.safetensors")
    imported = read_layer_tensors(path, tiny_llama)
    assert sorted(imported.vectors) == [0, 2]
    assert (
        imported.provenance["format"] == "layer-tensors"
        and "v.safetensors" in imported.provenance["sha256"]
    )
    for layer, vector in imported.vectors.items():
        assert torch.equal(vector.raw_vector, raw[layer]) and vector.site == "block"
        own = SteeringVector.for_model(tiny_llama, layer, vector=raw[layer])
        with torch.no_grad(), vector.applied(tiny_llama, 1.5):
            got = tiny_llama(IDS)
        with torch.no_grad(), own.applied(tiny_llama, 1.5):
            expected = tiny_llama(IDS)
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    again = read_layer_tensors(
        write_layer_tensors(imported.vectors, tmp_path / "w.safetensors"), tiny_llama
    )
    assert all(torch.equal(again.vectors[k].raw_vector, raw[k]) for k in raw)


@pytest.mark.parametrize("key", ["model.layers.7", "layer_7", "7"])
def test_layer_keys_of_common_exports(tiny_llama, tmp_path, key):
    save_file({key.replace("7", "1"): torch.ones(64)}, str(tmp_path / "x.safetensors"))
    assert list(read_layer_tensors(tmp_path / "x.safetensors", tiny_llama).vectors) == [1]


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"embed": torch.ones(4)}, "key 'embed' names no layer"),
        ({"3": torch.ones(2, 4)}, r"key '3'.*1-D, got shape \(2, 4\)"),
        ({"3": torch.tensor([1.0, float("nan")])}, "key '3'.*not finite"),
        ({"layer_1": torch.ones(4), "layers.1": torch.ones(4)}, "two tensors for layer 1"),
        ({"1": torch.ones(5)}, "layer 1 does not fit"),
        ({"9": torch.ones(64)}, "layer 9 does not fit"),
    ],
)
def test_bad_layer_tensor_files_are_named(tiny_llama, tmp_path, tensors, match):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ArtefactError, match=rf"bad\.safetensors.*{match}"):
        read_layer_tensors(path, tiny_llama)


def test_a_broken_safetensors_file_is_named(tiny_llama, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 12)
    with pytest.raises(ArtefactError, match=r"broken\.safetensors: not a readable"):
        read_layer_tensors(path, tiny_llama)
    with pytest.raises(MissingFileError):
        read_layer_tensors(tmp_path / "absent.safetensors", tiny_llama)


def test_easyedit_folders_load_as_plain_tensors_only(tiny_llama, tmp_path):
    raw = _vectors()
    for layer, vector in raw.items():
        torch.save(vector[None], tmp_path / f"layer_{layer}.pt")  # EasyEdit keeps [1, d]
    (tmp_path / "notes.txt").write_text("ignored")
    imported = read_easyedit(tmp_path, tiny_llama)
    assert sorted(imported.vectors) == [0, 2] and imported.provenance["format"] == "easyedit"
    assert all(torch.equal(imported.vectors[k].raw_vector, raw[k]) for k in raw)
    evil = tmp_path / "evil"
    evil.mkdir()
    with open(evil / "layer_1.pt", "wb") as handle:  # a pickle that would run code
        pickle.dump(type("Evil", (), {"__reduce__": lambda self: (print, ("ran",))})(), handle)
    with pytest.raises(ArtefactError, match=r"layer_1\.pt: not a plain tensor file"):
        read_easyedit(evil, tiny_llama)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError, match=r"no layer_<L>\.pt files"):
        read_easyedit(empty, tiny_llama)
