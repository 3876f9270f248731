"""A corpus of corrupted artefacts: each is refused with an error naming the file, none loads."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench.artefacts import save_artefact, tensor_sha256
from workbench.data.pairs import ContrastPair
from workbench.directions.extract import extract_direction
from workbench.errors import ArtefactError, MissingFileError
from workbench.models.loading import load_model, model_provenance
from workbench.steering.forms import LocalWeightUpdate, SteeringVector
from workbench.steering.io import load_intervention


def _saved(model, folder: Path, name: str = "iv", seed: int = 0) -> Path:
    intervention = LocalWeightUpdate.for_model(model, 1)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed))
            )
    provenance = {"model": model_provenance(model).to_dict(), "seed": seed}
    return intervention.save(folder / name, provenance)


def _edit_json(base: Path, change) -> None:
    file = base.with_name(base.name + ".json")
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def _edit_tensors(base: Path, change) -> None:
    file = base.with_name(base.name + ".safetensors")
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file))


def _flip_byte(base: Path) -> None:
    file = base.with_name(base.name + ".safetensors")
    data = bytearray(file.read_bytes())
    data[-5] ^= 0x40
    file.write_bytes(bytes(data))


def _scale(tensors):
    for name in tensors:
        tensors[name] = tensors[name] * 1000


def _nan(tensors):
    first = next(iter(tensors))
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")


def _other_tensors(base: Path) -> None:
    other = base.with_name("other.safetensors")
    base.with_name(base.name + ".safetensors").write_bytes(other.read_bytes())


CORRUPTIONS = {
    "flipped byte": _flip_byte,
    "tensors x1000": lambda b: _edit_tensors(b, _scale),
    "a NaN": lambda b: _edit_tensors(b, _nan),
    "tensor dropped": lambda b: _edit_tensors(b, lambda t: t.pop(next(iter(t)))),
    "another artefact's tensors": _other_tensors,
    "truncated tensors": lambda b: b.with_name(b.name + ".safetensors").write_bytes(
        b.with_name(b.name + ".safetensors").read_bytes()[:40]
    ),
    "empty tensor file": lambda b: b.with_name(b.name + ".safetensors").write_bytes(b""),
    "layer edited": lambda b: _edit_json(b, lambda m: m["config"].update(layer=0)),
    "positions edited": lambda b: _edit_json(b, lambda m: m["config"].update(positions="answer")),
    "scale edited": lambda b: _edit_json(b, lambda m: m["config"].update(scale=2.0)),
    "config removed": lambda b: _edit_json(b, lambda m: m.pop("config")),
    "integrity removed": lambda b: _edit_json(b, lambda m: m.pop("integrity")),
    "kind changed": lambda b: _edit_json(b, lambda m: m.update(kind="direction")),
    "JSON truncated": lambda b: b.with_name(b.name + ".json").write_text('{"config": {'),
    "JSON a list": lambda b: b.with_name(b.name + ".json").write_text("[1, 2]"),
    "JSON nested deep": lambda b: b.with_name(b.name + ".json").write_text("[" * 100_000),
    "JSON not UTF-8": lambda b: b.with_name(b.name + ".json").write_bytes(b"\xff\xfe{"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_artefacts_are_refused_naming_the_file(tiny_llama, tmp_path, corruption):
    base = _saved(tiny_llama, tmp_path)
    _saved(tiny_llama, tmp_path, "other", seed=1)
    CORRUPTIONS[corruption](base)
    with pytest.raises(ArtefactError, match=r"iv\.(json|safetensors)"):
        load_intervention(base)


def test_a_missing_half_is_named(tiny_llama, tmp_path):
    base = _saved(tiny_llama, tmp_path)
    base.with_name("iv.safetensors").unlink()
    with pytest.raises(MissingFileError, match=r"iv\.safetensors"):
        load_intervention(base)


def test_an_intact_artefact_loads_exactly(tiny_llama, tmp_path):
    base = _saved(tiny_llama, tmp_path)
    loaded, provenance = load_intervention(base, tiny_llama)
    assert provenance["seed"] == 0
    expected = load_file(str(base.with_name("iv.safetensors")))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_provenance_is_checked_against_the_model(tiny_llama, tmp_path):
    gemma = load_model("tiny-gemma3", device="cpu")
    base = _saved(tiny_llama, tmp_path)
    with pytest.raises(ArtefactError, match=r"iv.*another model.*tiny-llama.*tiny-gemma3"):
        load_intervention(base, gemma)
    other_seed = load_model("tiny-llama", device="cpu", seed=3)
    with pytest.raises(ArtefactError, match="revision 'seed:0' vs 'seed:3'"):
        load_intervention(base, other_seed)
    loaded, _ = load_intervention(base, other_seed, other_model=True)  # on purpose: allowed
    assert loaded.layer == 1
    direction = extract_direction(tiny_llama, _pairs(), 1)
    direction.save(tmp_path / "dir")
    with pytest.raises(ArtefactError, match=r"dir.*another model"):
        type(direction).load(tmp_path / "dir", gemma)


def test_saved_non_finite_parameters_are_refused(tiny_llama, tmp_path):
    vector = SteeringVector.for_model(tiny_llama, 1)
    with torch.no_grad():
        vector.bias.fill_(float("nan"))
    vector.save(tmp_path / "nan")
    with pytest.raises(ArtefactError, match=r"nan.*NaN or infinite"):
        load_intervention(tmp_path / "nan")


def test_integrity_covers_dtype_and_shape(tmp_path):
    values = torch.arange(6, dtype=torch.float32)
    assert tensor_sha256(values) != tensor_sha256(values.view(2, 3))
    assert tensor_sha256(values) != tensor_sha256(values.to(torch.bfloat16))
    save_artefact(tmp_path / "bf16", {"x": values.to(torch.bfloat16)}, {}, "t")  # any dtype


def test_a_failed_save_leaves_the_old_artefact(tmp_path):
    base = save_artefact(tmp_path / "a", {"x": torch.ones(3)}, {"n": 1}, "t")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError):
        save_artefact(base, {"x": torch.zeros(3)}, {"n": object()}, "t")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _pairs():
    return [ContrastPair(f"p{i}", "Say:", " yes", " no", concept="t") for i in range(4)]
