"""Streaming capture under a small memory cap: the buffer never passes the cap, the shards
hold exactly what an in-memory capture holds, and the streamed fit equals the in-memory fit."""

import gc

import numpy as np
import pytest
import torch

from workbench.data.concepts import load_concept, neutral_sentences
from workbench.errors import ArtefactError, ConfigError
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.valid import (
    collect_valid_activations,
    stream_token_activations,
    token_activations,
)
from workbench.store import ActivationStore

HOOKS = ["blocks.1.hook_out", "blocks.2.hook_out"]
CAP = 64 * 1024  # 64 KiB: the whole capture is many times this


@pytest.fixture(scope="module")
def captured(tiny_llama, tmp_path_factory):
    texts = neutral_sentences()[:40]
    folder = tmp_path_factory.mktemp("store")
    store = stream_token_activations(
        tiny_llama, texts, None, HOOKS, folder, memory_cap=CAP, batch_size=4
    )
    memory, owner = token_activations(tiny_llama, texts, None, HOOKS, batch_size=4)
    return store, memory, owner, folder


def test_the_buffer_stays_under_the_cap_and_the_rows_are_exact(captured):
    store, memory, owner, folder = captured
    total = sum(t.numel() * 4 for t in memory.values())
    assert total > 5 * CAP and len(list(folder.glob("shard-*.safetensors"))) >= 5
    assert store.peak_buffered <= CAP
    opened = ActivationStore.open(folder)
    assert len(opened) == len(owner)
    for hook in HOOKS:
        streamed = np.concatenate(list(opened.batches(hook)))
        np.testing.assert_array_equal(streamed, memory[hook].double().numpy())
    np.testing.assert_array_equal(np.load(folder / "text_index.npy"), owner)
    assert opened.provenance["model"]["name"] == "tiny-llama"


def test_the_streamed_fit_equals_the_in_memory_fit(captured):
    memory = captured[1]
    X = memory[HOOKS[0]].double().numpy()
    probe = X[::7] + np.random.default_rng(0).normal(0, 0.5, X[::7].shape)
    for density in ("gaussian", "knn"):
        exact = ActivationManifold(n_components=0.9, density=density).fit(X)
        streamed = ActivationManifold(n_components=0.9, density=density).fit_stream(
            ActivationStore.open(captured[3]), HOOKS[0]
        )
        assert streamed.n_components_ == exact.n_components_
        np.testing.assert_allclose(streamed.epsilon_, exact.epsilon_, rtol=1e-6)
        np.testing.assert_allclose(
            streamed.nonconformity(probe), exact.nonconformity(probe), rtol=1e-6, atol=1e-8
        )
        np.testing.assert_allclose(
            streamed.residual_norm(probe), exact.residual_norm(probe), rtol=1e-6
        )


def test_a_damaged_store_is_refused_naming_the_shard(captured, tmp_path):
    folder = captured[3]
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    shard = sorted(copy.glob("shard-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x20
    shard.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=rf"{shard.name}: does not match"):
        ActivationStore.open(copy)
    with pytest.raises(ConfigError, match="holds an activation store already"):
        ActivationStore.create(folder, HOOKS)
    store = ActivationStore.create(tmp_path / "new", HOOKS, memory_cap=CAP)
    with pytest.raises(ConfigError, match="different numbers of rows"):
        store.append({HOOKS[0]: torch.zeros(2, 64), HOOKS[1]: torch.zeros(3, 64)})


def test_valid_text_collection_streams_and_fits_the_same(tiny_llama, tmp_path):
    pairs = load_concept("sentiment").train[:12]
    options = dict(sources=("neutral", "answers"), batch_size=8, seed=3)
    memory = collect_valid_activations(tiny_llama, HOOKS, pairs, **options)
    streamed = collect_valid_activations(
        tiny_llama, HOOKS, pairs, store=tmp_path / "valid", memory_cap=CAP, **options
    )
    assert streamed.activations == {} and streamed.store is not None
    assert streamed.store.peak_buffered <= CAP and len(streamed.store) == len(memory.source)
    np.testing.assert_array_equal(streamed.calibration, memory.calibration)
    torch.testing.assert_close(streamed.fitting(HOOKS[1]), memory.fitting(HOOKS[1]))
    exact = memory.fit_manifold(ActivationManifold(n_components=0.9), HOOKS[1])
    fitted = streamed.fit_manifold(ActivationManifold(n_components=0.9), HOOKS[1])
    assert fitted.n_components_ == exact.n_components_
    probe = memory.held_out(HOOKS[1]).double().numpy()
    np.testing.assert_allclose(fitted.nonconformity(probe), exact.nonconformity(probe), rtol=1e-6)
    assert fitted.epsilon_ == pytest.approx(exact.epsilon_, rel=1e-6)


def test_a_memory_cap_alone_streams_through_a_temporary_store(tiny_llama):
    pairs = load_concept("sentiment").train[:6]
    valid = collect_valid_activations(
        tiny_llama, HOOKS[:1], pairs, sources=("answers",), memory_cap=CAP
    )
    folder = valid.store.folder
    assert valid.activations == {} and folder.is_dir() and len(valid.store) > 0
    manifold = valid.fit_manifold(ActivationManifold(n_components=2), HOOKS[0])
    assert manifold.n_components_ == 2
    del valid, manifold
    gc.collect()
    assert not folder.exists()  # the temporary store goes with the result
