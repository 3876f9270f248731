"""Apply interventions to a model: the hooks that add Δh, scoped so they are always removed.

:func:`steering` composes several interventions, each at its own multiplier (a scalar or one
value per batch row); with ``record_push`` every forward records the effective push
‖Δh‖ / ‖h‖ per row. A weight update adds ``m·Δh(h_in)``; an intervention that acts on the state
(``acts_on == "state"``, :mod:`workbench.steering.state`) maps the state ``h ↦ steer(h, h_in, m)``
and its Δh is the difference. Either way the masked positions keep their unsteered state, and
m = 0 installs no hook: it is exactly the unsteered model for every method.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.errors import ConfigError
from workbench.hooks.scoped import scoped_hooks
from workbench.steering.roles import TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.steering.forms import Intervention

Multiplier = float | Tensor  # a scalar, or one value per batch row


@dataclass
class SteeringState:
    """What the hooks read on every forward: the roles of the current tokens.

    ``roles`` None means "no batch information": allowed only for interventions on all positions.
    Generation loops replace ``roles`` between steps (prompt prefill, then one answer token).
    With ``record_push``, every forward stores in ``push[i]`` the effective push of the i-th
    intervention per batch row: the mean over steered positions of ``‖Δh‖ / ‖h‖``.
    """

    roles: TokenRoles | None = None
    record_push: bool = False
    push: dict[int, Tensor] = field(default_factory=dict)


@contextmanager
def steering(
    model: TransformerBridge,
    interventions: Sequence[tuple[Intervention, Multiplier]],
    roles: TokenRoles | None = None,
    *,
    record_push: bool = False,
) -> Iterator[SteeringState]:
    """Apply several interventions at once; hooks are removed at exit, also on error.

    Interventions at the MLP site read the unmodified ``h_in`` and add to the output, so they
    commute; at the residual site each reads the stream as it arrives (earlier ones applied).
    """
    state = SteeringState(roles, record_push)
    hooks = []
    for index, (intervention, m) in enumerate(interventions):
        intervention.check_model(model)
        if roles is None and intervention.positions != "all":
            raise ConfigError(
                f"{intervention.label} steers {intervention.positions!r} positions, which needs "
                "token roles: pass roles=TokenRoles.from_batch(batch)"
            )
        hooks.extend(_hooks_for(intervention, m, state, index))
    with scoped_hooks(model, hooks):
        yield state


def _hooks_for(intervention: Intervention, m: Multiplier, state: SteeringState, index: int):
    in_name, out_name = intervention.hook_names
    if isinstance(m, (int, float)) and m == 0:
        return []  # exactly the unsteered model (its push is 0: not recorded)
    captured: dict[str, Tensor] = {}

    def remember_input(tensor: Tensor, *, hook) -> None:
        captured["h_in"] = tensor

    work = working_dtype(intervention)

    def add_update(activation: Tensor, *, hook) -> Tensor:
        if intervention.reads_input and in_name != out_name:
            if "h_in" not in captured:
                raise RuntimeError(f"{in_name} did not fire before {out_name}")
            h_in = captured.pop("h_in").to(work)
        else:
            h_in = activation.to(work)
        # computed in the intervention's dtype (fp32 under a bf16 model), added in the model's
        tensor = activation.to(work)
        scaled = _as_multiplier(m, tensor)
        if intervention.acts_on == "update":
            update = intervention.delta(h_in) * scaled
        else:  # a steer that maps the state itself (rotation, clip, ...): Δh is what it moved
            update = intervention.steer(tensor, h_in, scaled) - tensor
        if isinstance(scaled, Tensor):  # rows at m = 0 stay exactly unsteered, even when the
            update = torch.where(scaled != 0, update, 0.0)  # update is not finite (NaN · 0)
        mask = None
        if state.roles is not None:
            mask = state.roles.mask(intervention.positions)
            if mask.shape != tensor.shape[:2]:
                raise ConfigError(
                    f"token roles have shape {tuple(mask.shape)} but {out_name} has "
                    f"{tuple(tensor.shape[:2])} (batch, seq)"
                )
            update = torch.where(mask.unsqueeze(-1), update, 0.0)
        if state.record_push:
            state.push[index] = _push(update, tensor, mask)
        return activation + update.to(activation.dtype)

    if in_name == out_name or not intervention.reads_input:
        return [(out_name, add_update)]
    return [(in_name, remember_input), (out_name, add_update)]


def working_dtype(intervention: Intervention) -> torch.dtype:
    """The dtype an intervention computes in: its parameters' (fp32 unless cast on purpose)."""
    tensors = [*intervention.parameters(), *intervention.buffers()]
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    return floating[0] if floating else torch.float32


def _push(update: Tensor, state: Tensor, mask: Tensor | None) -> Tensor:
    """Per batch row, the mean over steered positions of ‖Δh‖ / ‖h‖ (detached, float64)."""
    with torch.no_grad():
        ratio = update.double().norm(dim=-1) / state.double().norm(dim=-1).clamp(min=1e-12)
        if ratio.ndim == 1:  # a single position per row (e.g. one generation step)
            return ratio.cpu()
        weights = torch.ones_like(ratio) if mask is None else mask.to(ratio.dtype)
        return ((ratio * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)).cpu()


def _as_multiplier(m: Multiplier, tensor: Tensor) -> Tensor | float:
    if isinstance(m, Tensor):
        if m.ndim == 0:
            return m.to(tensor.dtype)
        if m.shape != (tensor.shape[0],):
            raise ConfigError(
                f"per-row multipliers have shape {tuple(m.shape)}, expected ({tensor.shape[0]},)"
            )
        return m.to(device=tensor.device, dtype=tensor.dtype).view(-1, *([1] * (tensor.ndim - 1)))
    return float(m)
