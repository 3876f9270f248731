"""Every control method as a dynamic weight update of one linear layer (DESIGN.md §1).

An intervention computes ``Δh = m·(ΔW h_in + Δb)`` from the input ``h_in`` of its layer and adds
it to that layer's output, at the positions it is told to steer:

| form                | Δh               | parameters         |
|---------------------|------------------|--------------------|
| ``SteeringVector``  | m·Δb             | d_out              |
| ``LoRAUpdate``      | m·B A h_in       | r·(d_in + d_out)   |
| ``LocalWeightUpdate``| m·(ΔW h_in + Δb) | d_in·d_out + d_out |

Sites: ``"mlp_out"`` is the MLP down-projection of a block (the paper's site): ``h_in`` is
``blocks.{l}.mlp.out.hook_in`` (d_mlp) and Δh is added at ``blocks.{l}.mlp.out.hook_out``
(d_model, before any post-MLP norm), which is exactly an edit of that layer's weight and bias.
``"resid"`` is the residual stream after the block (``blocks.{l}.hook_resid_post``), classic
activation addition; there ``h_in`` is the residual stream itself.

>>> vector = SteeringVector.for_model(model, layer=6, site="resid", positions="answer")
>>> with vector.applied(model, m=4.0, roles=TokenRoles.from_batch(batch)):
...     logits = model(batch.input_ids, attention_mask=batch.attention_mask)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from .artefacts import load_artefact, save_artefact
from .encoding import EncodedBatch
from .scoped_hooks import scoped_hooks

SITES: tuple[str, ...] = ("mlp_out", "resid")
POSITIONS: tuple[str, ...] = ("all", "prompt", "answer")
Multiplier = float | Tensor  # a scalar, or one value per batch row


def site_hooks(site: str, layer: int) -> tuple[str, str]:
    """(input hook, output hook) of a site at a block."""
    if site == "mlp_out":
        return f"blocks.{layer}.mlp.out.hook_in", f"blocks.{layer}.mlp.out.hook_out"
    if site == "resid":
        return (f"blocks.{layer}.hook_resid_post",) * 2
    raise ValueError(f"unknown site {site!r}; choose one of {SITES}")


def site_widths(model, site: str) -> tuple[int, int]:
    """(d_in, d_out) of a site on ``model``."""
    if site == "mlp_out":
        return model.cfg.d_mlp, model.cfg.d_model
    if site == "resid":
        return model.cfg.d_model, model.cfg.d_model
    raise ValueError(f"unknown site {site!r}; choose one of {SITES}")


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
        raise ValueError(f"unknown positions {positions!r}; choose one of {POSITIONS}")


class Intervention(nn.Module):
    """Base class: a trainable ``Δh = ΔW h_in + Δb`` at one site of one block."""

    form: ClassVar[str] = ""
    reads_input: ClassVar[bool] = True  # whether delta() depends on h_in

    def __init__(
        self, layer: int, d_in: int, d_out: int, site: str = "mlp_out", positions: str = "all"
    ) -> None:
        super().__init__()
        site_hooks(site, layer)  # validates the site
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; choose one of {POSITIONS}")
        if layer < 0:
            raise ValueError(f"layer must be >= 0, got {layer}")
        if site == "resid" and d_in != d_out:
            raise ValueError(f"the resid site maps d_model to d_model; got {d_in} -> {d_out}")
        self.layer, self.d_in, self.d_out, self.site, self.positions = (
            layer,
            d_in,
            d_out,
            site,
            positions,
        )

    # -- what subclasses define -------------------------------------------------------------
    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """``ΔW h_in + Δb`` (the update at m = 1)."""
        raise NotImplementedError

    def dense_update(self) -> tuple[Float[Tensor, "d_out d_in"], Float[Tensor, " d_out"]]:
        """The equivalent (ΔW, Δb) as dense tensors."""
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        return {}

    # -- shared ------------------------------------------------------------------------------
    @classmethod
    def for_model(
        cls, model, layer: int, site: str = "mlp_out", positions: str = "all", **kwargs: Any
    ) -> Intervention:
        """An intervention sized for ``model`` at ``layer`` (checked against its depth)."""
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: the model has blocks 0..{model.cfg.n_layers - 1}"
            )
        d_in, d_out = site_widths(model, site)
        device = next(model.parameters()).device
        return cls(layer, d_in, d_out, site=site, positions=positions, **kwargs).to(device)

    @property
    def hook_names(self) -> tuple[str, str]:
        return site_hooks(self.site, self.layer)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_model(self, model) -> None:
        """Raise a clear error if this intervention does not fit ``model``."""
        if self.layer >= model.cfg.n_layers:
            raise ValueError(
                f"{self.form} at layer {self.layer}, but the model has blocks "
                f"0..{model.cfg.n_layers - 1}"
            )
        d_in, d_out = site_widths(model, self.site)
        if (d_in, d_out) != (self.d_in, self.d_out):
            raise ValueError(
                f"{self.form} maps {self.d_in} -> {self.d_out} at {self.hook_names[1]}, but the "
                f"model's widths there are {d_in} -> {d_out}"
            )

    def applied(self, model, m: Multiplier = 1.0, roles: TokenRoles | None = None):
        """Context manager: steer ``model`` with this intervention at multiplier ``m``."""
        return steering(model, [(self, m)], roles)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, site={self.site!r}, positions={self.positions!r}, "
            f"d_in={self.d_in}, d_out={self.d_out}, parameters={self.num_parameters}"
        )

    def config(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "layer": self.layer,
            "d_in": self.d_in,
            "d_out": self.d_out,
            "site": self.site,
            "positions": self.positions,
            **self._config(),
        }

    def save(self, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Save as ``<path>.safetensors`` (parameters) + ``<path>.json`` (config, provenance)."""
        meta = {"config": self.config(), "provenance": provenance or {}}
        return save_artefact(path, dict(self.state_dict()), meta)


class SteeringVector(Intervention):
    """Δh = m·Δb: a bias on the layer's output (activation addition)."""

    form = "vector"
    reads_input = False

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = "mlp_out",
        positions: str = "all",
        vector: Tensor | None = None,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions)
        initial = torch.zeros(d_out) if vector is None else vector.detach().clone().float()
        if initial.shape != (d_out,):
            raise ValueError(f"vector has shape {tuple(initial.shape)}, expected ({d_out},)")
        self.bias = nn.Parameter(initial)

    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return self.bias.to(h_in.dtype).expand(*h_in.shape[:-1], self.d_out)

    def dense_update(self):
        return torch.zeros(self.d_out, self.d_in, device=self.bias.device), self.bias.detach()


class LoRAUpdate(Intervention):
    """Δh = m·B A h_in with A: r x d_in, B: d_out x r (B starts at zero, so ΔW = 0)."""

    form = "lora"

    def __init__(
        self,
        layer: int,
        d_in: int,
        d_out: int,
        site: str = "mlp_out",
        positions: str = "all",
        rank: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank, self.seed = rank, seed
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(d_in)
        self.lora_a = nn.Parameter((torch.rand(rank, d_in, generator=generator) * 2 - 1) * bound)
        self.lora_b = nn.Parameter(torch.zeros(d_out, rank))

    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return (h_in @ self.lora_a.to(h_in.dtype).T) @ self.lora_b.to(h_in.dtype).T

    def dense_update(self):
        weight = (self.lora_b @ self.lora_a).detach()
        return weight, torch.zeros(self.d_out, device=weight.device)

    def _config(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed}


class LocalWeightUpdate(Intervention):
    """Δh = m·(ΔW h_in + Δb) with a full ΔW and Δb (both start at zero)."""

    form = "local_weight"

    def __init__(
        self, layer: int, d_in: int, d_out: int, site: str = "mlp_out", positions: str = "all"
    ) -> None:
        super().__init__(layer, d_in, d_out, site, positions)
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def delta(self, h_in: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        return h_in @ self.weight.to(h_in.dtype).T + self.bias.to(h_in.dtype)

    def dense_update(self):
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
        raise ValueError(f"{path}: unknown intervention form {form!r}; known: {list(FORMS)}")
    projection = config.pop("projection", None)
    intervention = FORMS[form](**config)
    if projection is not None:  # a ProjectedIntervention: the buffers come from the file
        from .projected_steer import ManifoldProjection, ProjectedIntervention

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
    """

    roles: TokenRoles | None = None


@contextmanager
def steering(
    model,
    interventions: Sequence[tuple[Intervention, Multiplier]],
    roles: TokenRoles | None = None,
) -> Iterator[SteeringState]:
    """Apply several interventions at once; hooks are removed at exit, also on error.

    Interventions at the MLP site read the unmodified ``h_in`` and add to the output, so they
    commute; at the residual site each reads the stream as it arrives (earlier ones applied).
    """
    state = SteeringState(roles)
    hooks = []
    for intervention, m in interventions:
        intervention.check_model(model)
        if roles is None and intervention.positions != "all":
            raise ValueError(
                f"{intervention.form} steers {intervention.positions!r} positions, which needs "
                "token roles: pass roles=TokenRoles.from_batch(batch)"
            )
        hooks.extend(_hooks_for(intervention, m, state))
    with scoped_hooks(model, hooks):
        yield state


def _hooks_for(intervention: Intervention, m: Multiplier, state: SteeringState):
    in_name, out_name = intervention.hook_names
    if isinstance(m, (int, float)) and m == 0:
        return []  # exactly the unsteered model
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
        if state.roles is not None:
            mask = state.roles.mask(intervention.positions)
            if mask.shape != tensor.shape[:2]:
                raise ValueError(
                    f"token roles have shape {tuple(mask.shape)} but {out_name} has "
                    f"{tuple(tensor.shape[:2])} (batch, seq)"
                )
            update = update * mask.unsqueeze(-1).to(update.dtype)
        return tensor + update

    if in_name == out_name or not intervention.reads_input:
        return [(out_name, add_update)]
    return [(in_name, remember_input), (out_name, add_update)]


def _as_multiplier(m: Multiplier, tensor: Tensor) -> Tensor | float:
    if isinstance(m, Tensor):
        if m.ndim == 0:
            return m.to(tensor.dtype)
        if m.shape != (tensor.shape[0],):
            raise ValueError(
                f"per-row multipliers have shape {tuple(m.shape)}, expected ({tensor.shape[0]},)"
            )
        return m.to(device=tensor.device, dtype=tensor.dtype).view(-1, *([1] * (tensor.ndim - 1)))
    return float(m)
