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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from workbench.artefacts import save_artefact
from workbench.errors import ConfigError
from workbench.hooks.names import check_layer
from workbench.hooks.sites import DEFAULT_SITE, Site, SiteScales, site_hooks, site_widths
from workbench.models.loading import model_device
from workbench.steering.apply import Multiplier, steering
from workbench.steering.roles import POSITIONS, Positions, TokenRoles

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FormT = TypeVar("FormT", bound="Intervention")
# the constructor arguments every form shares (where it acts, in which units)
PLACEMENT_KEYS = ("layer", "d_in", "d_out", "site", "positions", "scale", "input_scale")


class Intervention(nn.Module):
    """Base class: a trainable ``Δh = s_out·(ΔW (h_in / s_in) + Δb)`` at one site of one block.

    Subclasses define :meth:`update` (``ΔW x + Δb`` on the normalised input ``x``) and
    :meth:`normalised_update` (the dense ``(ΔW, Δb)`` in those units); :meth:`delta` and
    :meth:`dense_update` apply the scales.
    """

    form: str = ""  # the weight form; a class attribute (a wrapper may set its own)
    reads_input: bool = True  # whether delta() depends on h_in
    acts_on: str = "update"  # "update": adds m·delta(h_in); "state": maps h by steer()

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
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

    def steer(
        self, state: Float[Tensor, "*batch d_out"], h_in: Tensor, m: Tensor | float
    ) -> Float[Tensor, "*batch d_out"]:
        """The steered state at multiplier ``m`` (broadcastable): ``state + m·delta(h_in)``.

        Steers that act on the state (:mod:`workbench.steering.state`) override this.
        """
        return state + m * self.delta(h_in)

    def dense_update(self) -> tuple[Float[Tensor, "d_out d_in"], Float[Tensor, " d_out"]]:
        """The equivalent raw (ΔW, Δb): ``Δh = ΔW h_in + Δb`` at m = 1."""
        weight, bias = self.normalised_update()
        return weight * (self.scale / self.input_scale), bias * self.scale

    @classmethod
    def for_model(
        cls: type[FormT],
        model: TransformerBridge,
        layer: int,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
        scales: SiteScales | None = None,
        **kwargs: Any,
    ) -> FormT:
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

    def placement(self) -> dict[str, Any]:
        """Where it acts and in which units: what a wrapper around it is constructed with."""
        return {key: getattr(self, key) for key in PLACEMENT_KEYS}

    @property
    def label(self) -> str:
        """What to call it in messages and progress bars (``"lora"``, ``"projected lora"``)."""
        return self.form

    @property
    def hook_names(self) -> tuple[str, str]:
        return site_hooks(self.site, self.layer)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_model(self, model: TransformerBridge) -> None:
        """Raise a clear error if this intervention does not fit ``model``."""
        check_layer(model, self.layer, f"{self.label} at layer")
        d_in, d_out = site_widths(model, self.site)
        if (d_in, d_out) != (self.d_in, self.d_out):
            raise ConfigError(
                f"{self.label} maps {self.d_in} -> {self.d_out} at {self.hook_names[1]}, but the "
                f"model's widths there are {d_in} -> {d_out}"
            )

    def applied(
        self, model: TransformerBridge, m: Multiplier = 1.0, roles: TokenRoles | None = None
    ):
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
        return save_artefact(path, dict(self.state_dict()), meta, kind="intervention")


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
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
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
        model: TransformerBridge,
        layer: int,
        direction: Tensor,
        scales: SiteScales,
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
    ) -> SteeringVector:
        """A vector along ``direction`` whose push at m is ``m`` × the typical norm there."""
        direction = direction.detach().float()
        norm = float(direction.norm())
        if not math.isfinite(norm) or norm == 0.0:
            raise ConfigError("the direction is zero or not finite")
        raw = direction / norm * scales.output * math.sqrt(direction.shape[-1])
        return cls.for_model(model, layer, site, positions, scales=scales, vector=raw.cpu())

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
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
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
        site: Site = DEFAULT_SITE,
        positions: Positions = "all",
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
