"""The hook names the workbench uses, checked against a model, and the layer a hook belongs to.

Every TransformerBridge hook name the package builds comes from the functions here, so a renamed
hook upstream is one edit.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workbench.errors import ConfigError, HookNameError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def resid_post(layer: int) -> str:
    """The residual stream after block ``layer`` (the block output)."""
    return f"blocks.{layer}.hook_resid_post"


def mlp_hidden(layer: int) -> str:
    """The MLP's hidden activation h_mid: the input of block ``layer``'s down-projection."""
    return f"blocks.{layer}.mlp.out.hook_in"


def mlp_output(layer: int) -> str:
    """The output of block ``layer``'s down-projection (before any post-MLP norm)."""
    return f"blocks.{layer}.mlp.out.hook_out"


def last_resid_post(model: TransformerBridge) -> str:
    """The residual stream after the model's last block."""
    return resid_post(model.cfg.n_layers - 1)


def check_layer(model: TransformerBridge, layer: int, label: str = "layer") -> int:
    """Return ``layer`` if the model has that block, else raise a :class:`ConfigError` naming
    ``label`` (e.g. ``--layer``) and the blocks there are."""
    n_layers = model.cfg.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ConfigError(
            f"{label} {layer} is out of range: the model has blocks 0..{n_layers - 1}"
        )
    return layer


def hook_layer(name: str) -> int | None:
    """The block index of a hook name (``blocks.7.mlp.out.hook_in`` -> 7), None outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def check_hook_names(model: TransformerBridge, names: Iterable[str]) -> list[str]:
    """Return ``names`` as a list, or raise :class:`HookNameError` for one the model lacks."""
    names = list(names)
    if not names:
        raise ConfigError("no hook names given")
    available = model.hook_dict
    for name in names:
        if name not in available:
            close = difflib.get_close_matches(name, list(available), n=3, cutoff=0.6)
            layer = hook_layer(name)
            extra = ""
            if layer is not None and layer >= model.cfg.n_layers:
                extra = f" (the model has {model.cfg.n_layers} blocks, 0..{model.cfg.n_layers - 1})"
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HookNameError(f"model has no hook named {name!r}{extra}{hint}")
    return names


def stop_layer_for(names: Iterable[str], n_layers: int) -> int | None:
    """The ``stop_at_layer`` that still runs every named hook, or None if all blocks must run."""
    layers = [hook_layer(n) for n in names]
    known = [layer for layer in layers if layer is not None]
    if len(known) < len(layers):
        return None
    stop = max(known) + 1
    return stop if stop < n_layers else None
