"""Load a model as a TransformerLens ``TransformerBridge``, with its provenance recorded on it.

>>> model = load_model("tiny-llama")                 # unit tests: tiny, random, instant
>>> model = load_model()                             # the default packaged model, Gemma 3 270M
>>> model_provenance(model).numerics
'raw'

Names resolve in this order: the packaged models (``PACKAGED_MODELS``), the tiny test models
(``tiny-llama``, ``tiny-gemma3``), a local Hugging Face folder, and finally any Hugging Face /
TransformerLens name, which is passed through unchanged where the hub is reachable.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from torch.utils.hooks import RemovableHandle
from transformer_lens.model_bridge import TransformerBridge

from workbench.errors import ArtefactError, ConfigError, ModelNotAvailableError
from workbench.models.packaged import DEFAULT_MODEL, PACKAGED_MODELS, ensure_converted, read_marker
from workbench.models.tiny import TINY_ARCHITECTURES, build_tiny_hf_model
from workbench.provenance import ModelProvenance

Numerics = Literal["raw", "compatibility"]
NUMERICS_MODES: tuple[str, ...] = ("raw", "compatibility")
PROVENANCE_ATTRIBUTE = "workbench_provenance"
CACHE_REPAIR_ATTRIBUTE = "workbench_cache_keyword_handles"
TINY_PREFIX = "tiny-"
ATTENTION = ("eager", "sdpa")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch floating dtype from itself or its name (``"bfloat16"``, ``"bf16"``, ...)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def available_models() -> list[str]:
    """Names that load on any machine, without network: packaged and tiny models."""
    return [*PACKAGED_MODELS, *(TINY_PREFIX + arch for arch in TINY_ARCHITECTURES)]


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    numerics: str = "raw",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    seed: int = 0,
) -> TransformerBridge:
    """Load ``name`` as a ``TransformerBridge`` in eval mode, its weights frozen.

    Args:
        name: a packaged model, ``tiny-llama`` / ``tiny-gemma3``, a local Hugging Face folder,
            or a hub name.
        numerics: ``"raw"`` keeps Hugging Face numerics; ``"compatibility"`` calls
            ``enable_compatibility_mode()`` (HookedTransformer-style folded weights).
        device: where to put the model (default: CUDA if available, else CPU).
        dtype: parameter dtype (a ``torch.dtype`` or ``"bfloat16"`` / ``"float16"`` /
            ``"float32"``); default bf16 on CUDA, fp32 on CPU (exact comparisons). Whatever the
            model's dtype, interventions compute in fp32 and log-odds are fp32.
        attn_implementation: ``"eager"`` or ``"sdpa"`` (Hugging Face's names); default SDPA on
            CUDA, eager on CPU. Under SDPA TransformerLens's attention-pattern hooks
            (``hook_pattern``, ``hook_attn_scores``) do not fire; the workbench uses none.
        seed: initialisation seed of the tiny models (ignored otherwise).
    """
    if numerics not in NUMERICS_MODES:
        raise ConfigError(f"numerics must be one of {NUMERICS_MODES}, got {numerics!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = torch.device(device).type == "cuda"
    dtype = as_dtype(dtype if dtype is not None else (torch.bfloat16 if on_gpu else torch.float32))
    attention = attn_implementation or ("sdpa" if on_gpu else "eager")
    if attention not in ATTENTION:
        raise ConfigError(f"attn_implementation must be one of {ATTENTION}, got {attention!r}")

    if name in PACKAGED_MODELS:
        folder = ensure_converted(name)
        marker = read_marker(folder) or {}
        source = f"pypi:{marker.get('package')}=={marker.get('package_version')}"
        revision = f"gguf-sha256:{marker.get('gguf_sha256')}"
        bridge, prepend_bos = _boot_from_folder(folder, device, dtype, attention)
    elif name.startswith(TINY_PREFIX) and name[len(TINY_PREFIX) :] in TINY_ARCHITECTURES:
        hf_model, tokenizer = build_tiny_hf_model(
            name[len(TINY_PREFIX) :], seed=seed, attn_implementation=attention
        )
        prepend_bos = True
        bridge = _boot(name, hf_model.to(device=device, dtype=dtype), tokenizer, device, dtype)
        source, revision = "random-init", f"seed:{seed}"
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
        bridge, prepend_bos = _boot_from_folder(folder, device, dtype, attention)
        source, revision = f"local:{folder}", None
    else:
        _require_hub(name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name)
        prepend_bos = tokenizer_prepends_bos(tokenizer)
        hf_model = AutoModelForCausalLM.from_pretrained(
            name, attn_implementation=attention, dtype=dtype
        )
        hf_model.to(device)  # type: ignore[arg-type]  # transformers' stubs want a dtype
        bridge = _boot(name, hf_model, tokenizer, device, dtype)
        source, revision = "huggingface-hub", getattr(bridge.cfg, "revision", None)

    if attention != "eager":
        # TransformerLens boots in eager attention (for its attention-pattern hooks, which the
        # workbench does not use); the kernel is runtime dispatch, so it is switched in place.
        loaded: Any = bridge.original_model
        loaded.set_attn_implementation(attention)
    if numerics == "compatibility":
        bridge.enable_compatibility_mode()
    bridge.eval()
    bridge.requires_grad_(False)
    repair_cache_keyword(bridge)
    provenance = ModelProvenance(
        name=name,
        source=source,
        revision=revision,
        numerics=numerics,
        architecture=getattr(bridge.cfg, "architecture", None),
        dtype=str(dtype).removeprefix("torch."),
        prepend_bos=prepend_bos,
        attn_implementation=attention,
    )
    object.__setattr__(bridge, PROVENANCE_ATTRIBUTE, provenance)
    return bridge


def model_device(model: torch.nn.Module) -> torch.device:
    """The device the model's parameters are on (where its inputs must go)."""
    return next(model.parameters()).device


def repair_cache_keyword(model: torch.nn.Module) -> list[RemovableHandle]:
    """Make the bridge's attention read the key-value cache transformers 5.x hands it.

    transformers 5.x decoder layers pass the cache to attention as ``cache=...``; the
    TransformerLens bridge's attention (``AttentionBridge._update_kv_cache``) reads only
    ``past_key_values``, so without this the cache stays empty and every cached decoding step
    (``generate`` of the workbench and the bridge's own ``model.generate``) attends to its own
    token alone and produces garbage. A forward pre-hook on each such module renames the keyword
    back; it does nothing where the old name is passed already. Idempotent; returns the handles
    (also kept on the model) so a test can remove them.
    """
    handles = getattr(model, CACHE_REPAIR_ATTRIBUTE, None)
    if handles is not None:
        return handles
    handles = [
        module.register_forward_pre_hook(_cache_as_past_key_values, with_kwargs=True)
        for module in model.modules()
        if callable(getattr(module, "_update_kv_cache", None))
    ]
    object.__setattr__(model, CACHE_REPAIR_ATTRIBUTE, handles)
    return handles


def _cache_as_past_key_values(module, args, kwargs):
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


IDENTITY_FIELDS = ("name", "source", "revision", "numerics")


def check_made_for(
    made_with: ModelProvenance | dict, model: TransformerBridge, where: object, allow: bool = False
) -> None:
    """Refuse to apply an artefact made with another model (name, source, revision or numerics
    differ; dtype may): raises :class:`ArtefactError` naming ``where`` and the fields, unless
    ``allow`` (a deliberate transfer between models)."""
    recorded = made_with.to_dict() if isinstance(made_with, ModelProvenance) else dict(made_with)
    current = model_provenance(model).to_dict()
    differ = [f for f in IDENTITY_FIELDS if recorded.get(f) != current[f]]
    if differ and not allow:
        said = ", ".join(f"{f} {recorded.get(f)!r} vs {current[f]!r}" for f in differ)
        raise ArtefactError(
            f"{where}: made with another model than the one given ({said}); pass "
            "other_model=True to apply it anyway"
        )


def model_provenance(model: TransformerBridge) -> ModelProvenance:
    """The provenance :func:`load_model` recorded, or one inferred for a bridge built elsewhere."""
    recorded = getattr(model, PROVENANCE_ATTRIBUTE, None)
    if isinstance(recorded, ModelProvenance):
        if recorded.numerics == "raw" and getattr(model, "compatibility_mode", False):
            # enable_compatibility_mode() was called after loading: say so.
            return ModelProvenance(**{**recorded.to_dict(), "numerics": "compatibility"})
        return recorded
    tokenizer = getattr(model, "tokenizer", None)
    return ModelProvenance(
        name=str(getattr(model.cfg, "model_name", "unknown")),
        source="unknown",
        revision=None,
        numerics="compatibility" if getattr(model, "compatibility_mode", False) else "raw",
        architecture=getattr(model.cfg, "architecture", None),
        dtype=str(getattr(model.cfg, "dtype", "float32")).removeprefix("torch."),
        prepend_bos=tokenizer_prepends_bos(tokenizer) if tokenizer is not None else True,
    )


def tokenizer_prepends_bos(tokenizer) -> bool:
    """Whether the tokenizer's own default encoding starts with its BOS token.

    The workbench tokenizes with ``add_special_tokens=False`` and prepends BOS itself exactly
    when the model's own tokenizer would (Gemma does; SmolLM2 does not), so the choice is
    deliberate and recorded rather than left to each call site.
    """
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def _boot(name, hf_model, tokenizer, device, dtype) -> TransformerBridge:
    # TransformerLens logs warnings about aliases and processing that are noise here.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    finally:
        logger.setLevel(level)


def _boot_from_folder(
    folder: Path, device, dtype, attention: str
) -> tuple[TransformerBridge, bool]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    prepend_bos = tokenizer_prepends_bos(tokenizer)
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation=attention, dtype=dtype
    ).to(device)
    return _boot(str(folder), hf_model, tokenizer, device, dtype), prepend_bos


def _require_hub(name: str) -> None:
    """Fail fast, before any download attempt, when ``name`` cannot come from the hub."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # already in the local Hugging Face cache
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        host = urlparse(endpoint).hostname or "huggingface.co"
        try:
            socket.create_connection((host, 443), timeout=3).close()
            return
        except OSError:
            pass
    raise ModelNotAvailableError(
        f"model {name!r} is not available offline: it is neither packaged nor in the local "
        f"Hugging Face cache, and the hub ({endpoint}) cannot be reached. Models that load "
        f"without network: {', '.join(available_models())}."
    )
