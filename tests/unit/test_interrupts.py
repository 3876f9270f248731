"""Interrupted at any line, hook scopes and the workbench's skipped-block forwards leave the
model as it was: no hook left behind, and later plain forwards unchanged."""

import sys
from contextlib import contextmanager

import pytest
import torch
import transformer_lens.hook_points as hook_points
import transformer_lens.model_bridge.transformer_bridge as bridge_module

import workbench.hooks.scoped as scoped
from workbench.hooks.forward import final_normed_residual, residual_before
from workbench.hooks.scoped import count_forward_hooks, reset_model_state
from workbench.steering.forms import LocalWeightUpdate

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


class Injected(BaseException):
    """Stands for a KeyboardInterrupt arriving at one particular line."""


@contextmanager
def interrupt_at(line: int, files: tuple[str, ...]):
    """Raise :class:`Injected` at the ``line``-th line executed in ``files`` (while armed)."""
    state = {"seen": 0, "armed": True}

    def local(frame, event, arg):
        if event == "line" and state["armed"]:
            state["seen"] += 1
            if state["seen"] == line:
                raise Injected
        return local

    def global_(frame, event, arg):
        return local if frame.f_code.co_filename in files else None

    sys.settrace(global_)
    try:
        yield state
    finally:
        sys.settrace(None)


def _hooks_left(model) -> int:
    points = {id(p): p for p in model.hook_dict.values()}.values()
    return count_forward_hooks(model) + sum(len(p.fwd_hooks) for p in points)


def _plain(model):
    with torch.no_grad():
        return model(IDS)


def _every_line(run, files, limit=2000):
    """Run ``run`` once per line it executes in ``files``, interrupted there; yields after each."""
    for line in range(1, limit):
        with interrupt_at(line, files) as state:
            try:
                run(state)
            except Injected:
                yield line
                continue
        return  # ran to the end: every line has been interrupted once
    pytest.fail(f"still interrupting after {limit} lines")


def test_an_interrupt_while_adding_hooks_leaves_none(tiny_llama):
    before = _plain(tiny_llama)
    update = LocalWeightUpdate.for_model(tiny_llama, 1)  # a pair of hooks: hook_in and hook_out
    files = (scoped.__file__, hook_points.__file__)

    def run(state):
        with update.applied(tiny_llama, 1.0):
            state["armed"] = False  # the body: only the adding is interrupted

    lines = list(_every_line(run, files))
    assert len(lines) > 20  # inside add_hook too, before it returns a handle
    assert _hooks_left(tiny_llama) == 0
    assert torch.equal(_plain(tiny_llama), before)
    with update.applied(tiny_llama, 1.0):  # and the model still steers
        tiny_llama(IDS)


@pytest.mark.parametrize("forward", ["start_at_layer", "stop_at_layer"])
def test_an_interrupt_inside_a_skipped_block_forward_leaves_plain_forwards_unchanged(
    tiny_llama, forward
):
    before = _plain(tiny_llama)
    residual = residual_before(tiny_llama, IDS, None, None, 1)

    def run(state):
        if forward == "start_at_layer":
            final_normed_residual(tiny_llama, residual, start_at_layer=1)
        else:
            residual_before(tiny_llama, IDS, None, None, 1)

    files = (bridge_module.__file__,)
    lines = list(_every_line(run, files, limit=5000))
    assert len(lines) > 10
    assert torch.equal(_plain(tiny_llama), before)
    assert _hooks_left(tiny_llama) == 0


def test_reset_model_state_repairs_a_model_left_mid_forward(tiny_llama):
    before = _plain(tiny_llama)
    for block in tiny_llama.blocks:  # what an interrupted start_at_layer forward leaves set
        block._start_at_layer_idx = 1
        block._start_residual = torch.zeros(1, IDS.shape[1], tiny_llama.cfg.d_model)
    tiny_llama.hook_dict["blocks.0.hook_out"].add_hook(lambda t, hook: t * 0)
    assert not torch.allclose(_plain(tiny_llama), before)  # the state really changes forwards
    reset_model_state(tiny_llama)
    assert torch.equal(_plain(tiny_llama), before) and _hooks_left(tiny_llama) == 0
