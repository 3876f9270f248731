"""Add TransformerLens hooks for the duration of a ``with`` block, removed even on error.

Unlike ``model.hooks(...)``, only the hooks added here are removed at exit, so scopes nest
and compose with hooks that other code (or an enclosing scope) added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from workbench.hooks.names import check_hook_names

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HookFn = Callable[..., object]


@contextmanager
def scoped_hooks(model: TransformerBridge, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Add ``(hook name, fn)`` forward hooks; ``fn(tensor, hook=...)`` may return a new tensor."""
    if hooks:
        check_hook_names(model, [name for name, _ in hooks])
    added = []
    try:
        for name, fn in hooks:
            point = model.hook_dict[name]
            added.append((point, point.add_hook(fn, dir="fwd")))
        yield
    finally:
        for point, handle in reversed(added):
            handle.hook.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]


def count_forward_hooks(model: TransformerBridge) -> int:
    """How many forward hooks are attached to the model's hook points (for leak checks)."""
    points = {id(point): point for point in model.hook_dict.values()}  # aliases share points
    return sum(len(point._forward_hooks) for point in points.values())
