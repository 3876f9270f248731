"""Every control method as a dynamic weight update of one linear layer (the unified view).

An intervention computes ``Δh = m·(ΔW h_in + Δb)`` from the input ``h_in`` of its layer and adds
it to that layer's output, at the positions it is told to steer:

| form                | Δh               | parameters         |
|---------------------|------------------|--------------------|
| ``SteeringVector``  | m·Δb             | d_out              |
| ``LoRAUpdate``      | m·B A h_in       | r·(d_in + d_out)   |
| ``LocalWeightUpdate``| m·(ΔW h_in + Δb) | d_in·d_out + d_out |

Sites (``SITES``; the default is ``"block"``):

- ``"block"``, the paper's reference site: ``h_in`` is the MLP down-projection's input
  ``blocks.{l}.mlp.out.hook_in`` (d_mlp) and Δh is added to the block's output
  ``blocks.{l}.hook_resid_post`` (d_model). Without a post-MLP norm this equals editing the
  down-projection; on Gemma 2/3 it is an additive update of the block output that no norm
  rescales.
- ``"mlp_out"``: the same input, Δh added at ``blocks.{l}.mlp.out.hook_out`` (before any
  post-MLP norm): exactly an edit of the down-projection's weight and bias. On Gemma the
  post-feedforward norm renormalises it, so its effect saturates in m.
- ``"resid"``: the residual stream after the block, classic activation addition; ``h_in`` is
  the residual stream itself.

Units. ``Δh = m·s_out·(ΔW (h_in / s_in) + Δb)``, where ``s_out`` / ``s_in`` (``scale`` /
``input_scale``) are the typical per-coordinate RMS of the site's output and input on valid
text (:mod:`workbench.hooks.sites`). With the scales measured, a vector whose parameter has unit
RMS pushes the state by its typical norm at m = 1, so m means the same push for every method
and model, and learning rates carry across models. Both default to 1 (raw units).

>>> vector = SteeringVector.for_model(model, layer=6, site="resid", positions="answer")
>>> with vector.applied(model, m=4.0, roles=TokenRoles.from_batch(batch)):
...     logits = model(batch.input_ids, attention_mask=batch.attention_mask)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from workbench.artefacts import load_artefact, save_artefact
from workbench.data.encoding import EncodedBatch
from workbench.errors import ConfigError
from workbench.hooks.names import check_layer
from workbench.hooks.scoped import scoped_hooks
from workbench.hooks.sites import DEFAULT_SITE, SiteScales, site_hooks, site_widths
from workbench.models.loading import model_device

POSITIONS: tuple[str, ...] = ("all", "prompt", "answer")
Multiplier = float | Tensor  # a scalar, or one value per batch row


@dataclass(frozen=True)
class TokenRoles:
    """Which positions of a batch are real, prompt and answer tokens (all ``[batch, seq]``)."""

    real: Bool[Tensor, "batch seq"]
    prompt: Bool[Tensor, "batch seq"]
    answer: Bool[Tensor, "batch seq"]

    @classmethod
    def from_batch(cls, batch: EncodedBatch) -> TokenRoles:
        return cls(batch.attention_mask.bool(), batch.prompt_mask, batch.answer_mask)

    def mask(self, positions: str) -> Bool[Tensor, "batch seq"]:
        if positions == "all":
            return self.real
        if positions == "prompt":
            return self.prompt
        if positions == "answer":
            return self.answer
        raise ConfigError(f"unknown positions {positions!r}; choose one of {POSITIONS}")


class Intervention(nn.Module):
    """Base class: a trainable ``Δh = s_out·(ΔW (h_in / s_in) + Δb)`` at one site of one block.

    Subclasses define :meth:`update` (``ΔW x + Δb`` on the normalised input ``x``) and
    :meth:`normalised_update` (the dense ``(ΔW, Δb)`` in those units); :meth:`delta` and
    :meth:`dense_update` apply the scales.
    """

    form: ClassVar[str] = ""
    reads_input: ClassVar[bool] = True  # whether delta() depends on h_in

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = DEFAULT_SITE,
        positions: str = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        site_hooks(site, layer)  # validates the site
        if positions not in POSITIONS:
            raise ConfigError(f"unknown positions {positions!r}; choose one of {POSITIONS}")
        if layer < 0:
            raise ConfigError(f"layer must be >= 0, got {layer}")
        if site == "resid" and d_in != d_out:
            raise ConfigError(f"the resid site maps d_model to d_model; got {d_in} -> {d_out}")
        for name, value in (("scale", scale), ("input_scale", input_scale)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        self.layer, self.d_in, self.d_out, self.site, self.positions = (
            layer,
            d_in,
            d_out,
            site,
            positions,
        )
        self.scale, self.input_scale = float(scale), float(input_scale)

    # -- what subclasses define -------------------------------------------------------------
    def update(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """``ΔW x + Δb`` in normalised units (``x = h_in / input_scale``)."""
        raise NotImplementedError

    def normalised_update(self) -> tuple[Float[Tensor, "d_out d_in"], Float[Tensor, " d_out"]]:
        """The equivalent (ΔW, Δb) in normalised units, as dense tensors."""
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        return {}

    # -- shared ------------------------------------------------------------------------------
    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """``Δh`` at m = 1, in the activations' own units."""
        x = h_in / self.input_scale if self.input_scale != 1.0 else h_in
        update = self.update(x)
        return update * self.scale if self.scale != 1.0 else update

    def dense_update(self) -> tuple[Float[Tensor, "d_out d_in"], Float[Tensor, " d_out"]]:
        """The equivalent raw (ΔW, Δb): ``Δh = ΔW h_in + Δb`` at m = 1."""
        weight, bias = self.normalised_update()
        return weight * (self.scale / self.input_scale), bias * self.scale

    @classmethod
    def for_model(
        cls,
        model,
        layer: int,
        site: str = DEFAULT_SITE,
        positions: str = "all",
        scales: SiteScales | None = None,
        **kwargs: Any,
    ) -> Intervention:
        """An intervention sized for ``model`` at ``layer`` (checked against its depth).

        ``scales`` (from :func:`workbench.hooks.sites.site_scales`) sets the units; without
        them the parameters are in raw activation units.
        """
        check_layer(model, layer)
        d_in, d_out = site_widths(model, site)
        if scales is not None:
            scales.check(site, layer)
            kwargs.update(scale=scales.output, input_scale=scales.input)
        device = model_device(model)
        return cls(layer, d_in, d_out, site=site, positions=positions, **kwargs).to(device)

    @property
    def hook_names(self) -> tuple[str, str]:
        return site_hooks(self.site, self.layer)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_model(self, model) -> None:
        """Raise a clear error if this intervention does not fit ``model``."""
        check_layer(model, self.layer, f"{self.form} at layer")
        d_in, d_out = site_widths(model, self.site)
        if (d_in, d_out) != (self.d_in, self.d_out):
            raise ConfigError(
                f"{self.form} maps {self.d_in} -> {self.d_out} at {self.hook_names[1]}, but the "
                f"model's widths there are {d_in} -> {d_out}"
            )

    def applied(self, model, m: Multiplier = 1.0, roles: TokenRoles | None = None):
        """Context manager: steer ``model`` with this intervention at multiplier ``m``."""
        return steering(model, [(self, m)], roles)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, site={self.site!r}, positions={self.positions!r}, "
            f"d_in={self.d_in}, d_out={self.d_out}, parameters={self.num_parameters}, "
            f"scale={self.scale:.4g}, input_scale={self.input_scale:.4g}"
        )

    def config(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "layer": self.layer,
            "d_in": self.d_in,
            "d_out": self.d_out,
            "site": self.site,
            "positions": self.positions,
            "scale": self.scale,
            "input_scale": self.input_scale,
            **self._config(),
        }

    def save(self, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Save as ``<path>.safetensors`` (parameters) + ``<path>.json`` (config, provenance)."""
        meta = {"config": self.config(), "provenance": provenance or {}}
        return save_artefact(path, dict(self.state_dict()), meta)


class SteeringVector(Intervention):
    """Δh = m·s_out·Δb: a bias on the site's output (activation addition).

    ``vector`` is given in raw activation units (it is divided by ``scale``); ``along``
    builds a vector from a direction so that m is the push in units of the typical norm.
    """

    form = "vector"
    reads_input = False

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = DEFAULT_SITE,
        positions: str = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
        vector: Tensor | None = None,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions, scale, input_scale)
        initial = torch.zeros(d_out) if vector is None else vector.detach().clone().float()
        if initial.shape != (d_out,):
            raise ConfigError(f"vector has shape {tuple(initial.shape)}, expected ({d_out},)")
        self.bias = nn.Parameter(initial / self.scale)

    @classmethod
    def along(
        cls,
        model,
        layer: int,
        direction: Tensor,
        scales: SiteScales,
        site: str = DEFAULT_SITE,
        positions: str = "all",
    ) -> SteeringVector:
        """A vector along ``direction`` whose push at m is ``m`` × the typical norm there."""
        direction = direction.detach().float()
        norm = float(direction.norm())
        if not math.isfinite(norm) or norm == 0.0:
            raise ConfigError("the direction is zero or not finite")
        raw = direction / norm * scales.output * math.sqrt(direction.shape[-1])
        vector = cls.for_model(model, layer, site, positions, scales=scales, vector=raw.cpu())
        assert isinstance(vector, SteeringVector)
        return vector

    @property
    def raw_vector(self) -> Tensor:
        """Δh at m = 1 in activation units (a detached copy)."""
        return (self.bias * self.scale).detach()

    def update(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return self.bias.to(x.dtype).expand(*x.shape[:-1], self.d_out)

    def normalised_update(self):
        return torch.zeros(self.d_out, self.d_in, device=self.bias.device), self.bias.detach()


class LoRAUpdate(Intervention):
    """Δh = m·s_out·B A (h_in / s_in) with A: r x d_in, B: d_out x r (B starts at zero)."""

    form = "lora"

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = DEFAULT_SITE,
        positions: str = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
        rank: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions, scale, input_scale)
        if rank < 1:
            raise ConfigError(f"rank must be >= 1, got {rank}")
        self.rank, self.seed = rank, seed
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(d_in)
        self.lora_a = nn.Parameter((torch.rand(rank, d_in, generator=generator) * 2 - 1) * bound)
        self.lora_b = nn.Parameter(torch.zeros(d_out, rank))

    def update(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return (x @ self.lora_a.to(x.dtype).T) @ self.lora_b.to(x.dtype).T

    def normalised_update(self):
        weight = (self.lora_b @ self.lora_a).detach()
        return weight, torch.zeros(self.d_out, device=weight.device)

    def _config(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed}


class LocalWeightUpdate(Intervention):
    """Δh = m·s_out·(ΔW (h_in / s_in) + Δb) with a full ΔW and Δb (both start at zero)."""

    form = "local_weight"

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = DEFAULT_SITE,
        positions: str = "all",
        scale: float = 1.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions, scale, input_scale)
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def update(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return x @ self.weight.to(x.dtype).T + self.bias.to(x.dtype)

    def normalised_update(self):
        return self.weight.detach(), self.bias.detach()


FORMS: dict[str, type[Intervention]] = {
    cls.form: cls for cls in (SteeringVector, LoRAUpdate, LocalWeightUpdate)
}


def load_intervention(path: str | Path) -> tuple[Intervention, dict[str, Any]]:
    """Load an intervention saved by :meth:`Intervention.save`; returns it and its provenance."""
    tensors, meta = load_artefact(path)
    config = dict(meta["config"])
    form = config.pop("form")
    if form not in FORMS:
        raise ConfigError(f"{path}: unknown intervention form {form!r}; known: {list(FORMS)}")
    projection = config.pop("projection", None)
    intervention = FORMS[form](**config)
    if projection is not None:  # a ProjectedIntervention: the buffers come from the file
        from workbench.steering.projected import ManifoldProjection, ProjectedIntervention

        subspace = ManifoldProjection(
            torch.zeros(projection["n_components"], intervention.d_out),
            torch.zeros(intervention.d_out),
            projection["scale"],
        )
        intervention = ProjectedIntervention(intervention, subspace, projection["strength"])
    intervention.load_state_dict(tensors)
    return intervention, meta.get("provenance", {})


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
    model,
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
                f"{intervention.form} steers {intervention.positions!r} positions, which needs "
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

    def add_update(tensor: Tensor, *, hook) -> Tensor:
        if intervention.reads_input and in_name != out_name:
            if "h_in" not in captured:
                raise RuntimeError(f"{in_name} did not fire before {out_name}")
            h_in = captured.pop("h_in")
        else:
            h_in = tensor
        update = intervention.delta(h_in) * _as_multiplier(m, tensor)
        mask = None
        if state.roles is not None:
            mask = state.roles.mask(intervention.positions)
            if mask.shape != tensor.shape[:2]:
                raise ConfigError(
                    f"token roles have shape {tuple(mask.shape)} but {out_name} has "
                    f"{tuple(tensor.shape[:2])} (batch, seq)"
                )
            update = update * mask.unsqueeze(-1).to(update.dtype)
        if state.record_push:
            state.push[index] = _push(update, tensor, mask)
        return tensor + update

    if in_name == out_name or not intervention.reads_input:
        return [(out_name, add_update)]
    return [(in_name, remember_input), (out_name, add_update)]


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
