"""A GGUF control vector written by the workbench, loaded by llama.cpp itself: on the packaged
SmolLM2 (whose GGUF llama.cpp runs directly), greedy text steered by llama.cpp's
``--control-vector-scaled`` begins as the workbench's steered generation with the same vector,
and the vector acts at the layer it was written for.

Needs llama.cpp's ``llama-completion`` (``scripts/build-llama-cpp.sh`` builds it; the test
command sets ``WORKBENCH_LLAMA_CPP``). Skipped without it, except in CI, where it fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from workbench.data.concepts import load_concept
from workbench.models.loading import load_model
from workbench.models.packaged import PACKAGED_MODELS
from workbench.steering.concept_vectors import concept_vector
from workbench.steering.generation import generate
from workbench.steering.imported import model_type, read_gguf, write_gguf

pytestmark = pytest.mark.integration

NAME, LAYER, TOKENS, PREFIX = "smollm2-135m-instruct", 15, 12, 3
PROMPT = "I went to the new restaurant last night and"
FLAGS = ("--temp", "0", "-no-cnv", "--no-warmup", "--simple-io", "-t", "2", "-s", "0")


@pytest.fixture(scope="module")
def llama_cpp() -> Path:
    binary = os.environ.get("WORKBENCH_LLAMA_CPP")
    if binary and Path(binary).is_file():
        return Path(binary)
    if os.environ.get("CI"):
        pytest.fail("WORKBENCH_LLAMA_CPP is not set to a built llama-completion in CI")
    pytest.skip("llama.cpp not built (bash scripts/build-llama-cpp.sh, then WORKBENCH_LLAMA_CPP)")


def _complete(binary: Path, gguf: Path, *extra: str) -> str:
    run = subprocess.run(
        [str(binary), "-m", str(gguf), "-p", PROMPT, "-n", str(TOKENS), *FLAGS, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "invalid" not in run.stderr and "skipping" not in run.stderr, run.stderr[-2000:]
    assert run.stdout.startswith(PROMPT), run.stdout
    return run.stdout[len(PROMPT) :].rstrip("\n")


def _tokens(model, text: str) -> list[int]:
    return model.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]


def test_llama_cpp_steers_as_the_workbench(llama_cpp, tmp_path):
    model = load_model(NAME, device="cpu")
    gguf = PACKAGED_MODELS[NAME].locate_gguf(tmp_path)
    vector = concept_vector(model, load_concept("sentiment").train[:16], LAYER)
    path = write_gguf({LAYER: vector}, tmp_path / "sentiment.gguf", model_type(model))
    assert read_gguf(path, model).vectors[LAYER].raw_vector.equal(vector.raw_vector.detach())
    unsteered = _complete(llama_cpp, gguf)
    texts = {}
    for m in (-1.0, 1.0):
        ours = generate(model, [PROMPT], [(vector, m)], max_new_tokens=TOKENS)[0]
        theirs = _complete(llama_cpp, gguf, "--control-vector-scaled", f"{path}:{m}")
        # llama.cpp runs the Q4_1 weights with quantised activations, the workbench their fp32
        # dequantisation: greedy text agrees until a near-tie between two tokens, which in the
        # repetitive text of a strong steer can come within a few tokens; the steer's own
        # tokens (the first PREFIX) must agree, and a wrong layer, sign or scale changes them
        assert _tokens(model, theirs)[:PREFIX] == _tokens(model, ours)[:PREFIX], (m, theirs, ours)
        texts[m] = theirs
    assert len({unsteered, *texts.values()}) == 3  # each m steers the text somewhere else
    assert unsteered.strip() == generate(model, [PROMPT], max_new_tokens=TOKENS)[0].strip()
    # applied only at the layer it names: a layer range without it leaves the text unsteered
    outside = ["--control-vector-layer-range", str(LAYER + 1), str(model.cfg.n_layers - 1)]
    assert (
        _complete(llama_cpp, gguf, "--control-vector-scaled", f"{path}:1.0", *outside) == unsteered
    )
