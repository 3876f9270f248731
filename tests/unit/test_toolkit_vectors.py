"""Vectors in and out of steering-vectors, repeng and GGUF control vectors, each checked against
the real package: the same vector steers a tiny model to the same logits under both tools,
round trips are exact, and bad input is refused naming what is wrong."""

from contextlib import ExitStack

import numpy as np
import pytest
import torch
from gguf import GGUFWriter

from workbench.errors import ArtefactError, ConfigError
from workbench.hooks.sites import site_scales
from workbench.models.tiny import build_tiny_hf_model
from workbench.steering.forms import SteeringVector
from workbench.steering.imported import model_type, read_gguf, write_gguf
from workbench.steering.toolkits import from_repeng, from_steering_vectors, to_steering_vectors

steering_vectors = pytest.importorskip(
    "steering_vectors", reason="scripts/setup-env.sh installs it"
)

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])
LAYERS = (0, 2)


@pytest.fixture(scope="module")
def repeng():
    # repeng 0.4.0 pins numpy<2 only for np.float_ in three type annotations, evaluated at import
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    return pytest.importorskip("repeng", reason="scripts/setup-env.sh installs it")


def _raw(d: int, seed: int = 0) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(d, generator=generator) for layer in LAYERS}


def _plain(bridge):
    """The same weights as the tiny bridge, as the plain Hugging Face model a user of the other
    tool would hold (steering-vectors guesses its layers from the module names)."""
    return build_tiny_hf_model(bridge.cfg.model_name.removeprefix("tiny-"))[0]


def _steered(model, vectors, m: float) -> torch.Tensor:
    with torch.no_grad(), ExitStack() as stack:
        for vector in vectors.values():
            stack.enter_context(vector.applied(model, m))
        return model(IDS)


@pytest.mark.parametrize("layer_type", ["decoder_block", "mlp"])
def test_steering_vectors_parity(tiny_model, layer_type):
    theirs = steering_vectors.SteeringVector(_raw(tiny_model.cfg.d_model), layer_type)
    imported = from_steering_vectors(theirs, tiny_model)
    assert {v.site for v in imported.vectors.values()} == {
        "block" if layer_type == "decoder_block" else "mlp_out"
    }
    plain = _plain(tiny_model)
    with torch.no_grad(), theirs.apply(plain, multiplier=1.5):
        expected = plain(IDS).logits
    with torch.no_grad():
        unsteered = tiny_model(IDS)
    got = _steered(tiny_model, imported.vectors, 1.5)
    assert (expected - unsteered).abs().max() > 0.05  # the vector does steer
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert imported.provenance["format"] == "steering-vectors"
    assert imported.provenance["layer_type"] == layer_type


def test_to_steering_vectors_steers_the_same(tiny_model):
    scales = site_scales(tiny_model, "block", 1, n_texts=4)
    raw = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    ours = {1: SteeringVector.for_model(tiny_model, 1, scales=scales, vector=raw)}
    assert scales.output != 1.0  # in units of the site's scale: raw_vector undoes them
    theirs = to_steering_vectors(ours)
    assert isinstance(theirs, steering_vectors.SteeringVector)
    plain = _plain(tiny_model)
    with torch.no_grad(), theirs.apply(plain, multiplier=-2.0):
        expected = plain(IDS).logits
    torch.testing.assert_close(_steered(tiny_model, ours, -2.0), expected, atol=1e-5, rtol=0)
    again = from_steering_vectors(theirs, tiny_model).vectors[1].raw_vector
    assert torch.equal(again, ours[1].raw_vector.detach())


def test_steering_vectors_refusals(tiny_llama):
    d = tiny_llama.cfg.d_model
    with pytest.raises(ArtefactError, match="layer_type 'self_attn' has no workbench site"):
        from_steering_vectors(
            steering_vectors.SteeringVector({1: torch.ones(d)}, "self_attn"), tiny_llama
        )
    with pytest.raises(ArtefactError, match=r"layer_activations\[1\].*not finite"):
        bad = torch.ones(d)
        bad[3] = float("nan")
        from_steering_vectors(steering_vectors.SteeringVector({1: bad}), tiny_llama)
    with pytest.raises(ArtefactError, match="layer 9 does not fit"):
        from_steering_vectors(steering_vectors.SteeringVector({9: torch.ones(d)}), tiny_llama)
    resid = SteeringVector.for_model(tiny_llama, 1, "resid", vector=torch.ones(d))
    with pytest.raises(ConfigError, match=r"these act at \['resid'\]"):
        to_steering_vectors({1: resid})


def test_repeng_parity_and_gguf_round_trip(tiny_model, repeng, tmp_path):
    d = tiny_model.cfg.d_model
    directions = {layer: v.numpy() for layer, v in _raw(d, seed=1).items()}
    theirs = repeng.ControlVector(model_type=model_type(tiny_model), directions=directions)
    imported = from_repeng(theirs, tiny_model)
    controlled = repeng.ControlModel(_plain(tiny_model), list(LAYERS))
    controlled.set_control(theirs, 0.75)
    with torch.no_grad():
        expected = controlled(IDS).logits
    torch.testing.assert_close(
        _steered(tiny_model, imported.vectors, 0.75), expected, atol=1e-5, rtol=0
    )
    # repeng's GGUF export reads back here; ours reads back in repeng (no layer 0 for llama.cpp)
    theirs.export_gguf(str(tmp_path / "theirs.gguf"))
    read = read_gguf(tmp_path / "theirs.gguf", tiny_model)
    assert all(
        torch.equal(read.vectors[k].raw_vector, imported.vectors[k].raw_vector) for k in LAYERS
    )
    ours = write_gguf({2: imported.vectors[2]}, tmp_path / "ours.gguf", model_type(tiny_model))
    back = repeng.ControlVector.import_gguf(str(ours))
    assert back.model_type == model_type(tiny_model) and list(back.directions) == [2]
    np.testing.assert_array_equal(back.directions[2], directions[2])


def test_repeng_other_model_refused(tiny_llama, repeng):
    theirs = repeng.ControlVector(model_type="mistral", directions={1: np.ones(64, np.float32)})
    with pytest.raises(ArtefactError, match="made for a 'mistral' model, and this one is 'llama'"):
        from_repeng(theirs, tiny_llama)
    assert list(from_repeng(theirs, tiny_llama, other_model=True).vectors) == [1]


def test_gguf_writer_refusals(tiny_llama, tmp_path):
    ones = torch.ones(tiny_llama.cfg.d_model)
    with pytest.raises(ConfigError, match=r"layer 0: llama\.cpp steers block outputs from layer 1"):
        write_gguf({0: ones}, tmp_path / "v.gguf", "llama")
    mlp = SteeringVector.for_model(tiny_llama, 1, "mlp_out", vector=ones)
    with pytest.raises(ConfigError, match=r"layer 1: .*the 'mlp_out' site"):
        write_gguf({1: mlp}, tmp_path / "v.gguf", "llama")
    assert not (tmp_path / "v.gguf").exists()


def _gguf(path, arch="controlvector", names=("direction.1",), count=None, hint="llama"):
    writer = GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", hint)
    writer.add_uint32(f"{arch}.layer_count", len(names) if count is None else count)
    for name in names:
        writer.add_tensor(name, np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "llama"}, "general.architecture is 'llama', not 'controlvector'"),
        ({"names": ("direction.x",)}, "tensor 'direction.x' is not direction.<layer>"),
        ({"count": 3}, "layer_count says 3 and it holds 1"),
        ({"hint": "gemma2"}, "made for a 'gemma2' model"),
        ({"names": ("direction.7",)}, "layer 7 does not fit"),
    ],
)
def test_gguf_reader_refusals(tiny_llama, tmp_path, kwargs, match):
    path = _gguf(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(ArtefactError, match=match) as error:
        read_gguf(path, tiny_llama)
    assert "bad.gguf" in str(error.value)


def test_gguf_truncated_named(tiny_llama, tmp_path):
    path = write_gguf({1: torch.ones(64)}, tmp_path / "v.gguf", "llama")
    assert torch.equal(read_gguf(path, tiny_llama).vectors[1].raw_vector, torch.ones(64))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtefactError, match=r"v\.gguf: not a readable GGUF file"):
        read_gguf(path, tiny_llama)
