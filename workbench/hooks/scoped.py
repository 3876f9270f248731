"""Add TransformerLens hooks for the duration of a ``with`` block, removed even on error.

Unlike ``model.hooks(...)``, only the hooks added here are removed at exit, so scopes nest
and compose with hooks that other code (or an enclosing scope) added.

A scope holds the model's lock (:func:`model_lock`, re-entrant) from adding to removing, and its
hooks act only in the thread that added them: work in a background thread (the explorer's) and
a cell in the kernel's main thread never steer each other's forwards; the second waits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from workbench.hooks.names import check_hook_names

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge import TransformerBridge

HookFn = Callable[..., object]
# set on every block by TransformerBridge.forward for start_at_layer / stop_at_layer
BRIDGE_BLOCK_STATE = ("_stop_at_layer_idx", "_start_at_layer_idx", "_start_residual")
LOCK_ATTRIBUTE = "_workbench_lock"


def model_lock(model: TransformerBridge) -> threading.RLock:
    """The model's re-entrant lock: held by every hook scope and block-skipping forward.
    (Kept in the model's ``__dict__``: ``dict.setdefault`` is atomic, so no guard lock is
    needed, which an interrupt could leave held.)"""
    return model.__dict__.setdefault(LOCK_ATTRIBUTE, threading.RLock())


def _owned(fn: HookFn) -> HookFn:
    """``fn`` acting only in the thread that adds it (elsewhere it leaves the tensor alone)."""
    owner = threading.get_ident()

    def hook(tensor, *args, **kwargs):
        return fn(tensor, *args, **kwargs) if threading.get_ident() == owner else None

    return hook


@contextmanager
def scoped_hooks(model: TransformerBridge, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Add ``(hook name, fn)`` forward hooks; ``fn(tensor, hook=...)`` may return a new tensor.

    Each point's hook keys are recorded before a hook is added there, so an interrupt at any
    moment of adding (even inside ``add_hook``, before it returns a handle) leaves no hook of
    this scope behind.
    """
    if hooks:
        check_hook_names(model, [name for name, _ in hooks])
    added: list[tuple[HookPoint, set[int]]] = []
    pending: tuple[HookPoint, set[int]] | None = None
    with model_lock(model):
        try:
            for name, fn in hooks:
                point = model.hook_dict[name]
                pending = (point, set(point._forward_hooks))
                point.add_hook(_owned(fn), dir="fwd")
                added.append((point, set(point._forward_hooks) - pending[1]))
                pending = None
            yield
        finally:
            if pending is not None:  # interrupted while adding: whatever is new there is ours
                added.append((pending[0], set(pending[0]._forward_hooks) - pending[1]))
            for point, keys in reversed(added):
                _remove_forward_hooks(point, keys)


def _remove_forward_hooks(point: HookPoint, keys: set[int]) -> None:
    """Remove the forward hooks registered under ``keys`` (torch's handle ids) from ``point``,
    with TransformerLens's record of them, whether or not a handle was ever returned."""
    for key in keys:
        for registry in (
            point._forward_hooks,
            point._forward_hooks_with_kwargs,
            point._forward_hooks_always_called,
        ):
            registry.pop(key, None)
    point.fwd_hooks = [h for h in point.fwd_hooks if h.hook.id not in keys]


def reset_model_state(model: TransformerBridge) -> None:
    """Make ``model`` usable again after an interrupted forward or hook scope: remove every
    non-permanent hook, clear the bridge's per-block start/stop state (left set when a
    ``start_at_layer`` / ``stop_at_layer`` forward is interrupted before its own cleanup) and
    give it a fresh lock."""
    model.reset_hooks(including_permanent=False)
    _clear_block_state(model)
    model.__dict__[LOCK_ATTRIBUTE] = threading.RLock()  # an interrupted scope may hold the old


@contextmanager
def bridge_state_cleared(model: TransformerBridge) -> Iterator[None]:
    """Clear the bridge's per-block start/stop state on exit, also on an interrupt, so a
    ``start_at_layer`` or ``stop_at_layer`` forward never leaves later forwards changed."""
    try:
        yield
    finally:
        _clear_block_state(model)


def _clear_block_state(model: TransformerBridge) -> None:
    for block in getattr(model, "blocks", []):
        for name in BRIDGE_BLOCK_STATE:
            if getattr(block, name, None) is not None:
                setattr(block, name, None)


def count_forward_hooks(model: TransformerBridge) -> int:
    """How many forward hooks are attached to the model's hook points (for leak checks)."""
    points = {id(point): point for point in model.hook_dict.values()}  # aliases share points
    return sum(len(point._forward_hooks) for point in points.values())
