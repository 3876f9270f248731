"""A designed family of steering vectors: equal push, controlled off-manifold share.

With one vector per run, on- and off-manifold displacement both grow with |m|, so their effects
on utility cannot be told apart. This family breaks the confound by design. At the intervention's
output hook the fitted manifold has a PCA subspace (projector P). From a source direction d:

    u_on  = P d / ‖P d‖          u_off = (I − P) d / ‖(I − P) d‖
    v(f)  = √(1 − f)·u_on + √f·u_off          (‖v‖ = 1, ‖(I − P) v‖² = f exactly)

for off-manifold shares f in a grid, each a :class:`SteeringVector` along v(f) in units of the
site's typical norm, so at any m every member pushes the state by the same norm and only the
share of that push leaving the subspace differs. Sources: the concept's DiffMean direction (its
own on- and off-subspace parts) and, as controls, random directions (a random on-subspace unit
and a random off-subspace unit, seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.errors import ConfigError
from workbench.hooks.sites import DEFAULT_SITE, Site, SiteScales
from workbench.steering.forms import SteeringVector
from workbench.steering.projected import ManifoldProjection
from workbench.steering.roles import Positions

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DEFAULT_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
SOURCES = ("diff_of_means", "random")


@dataclass(frozen=True)
class FamilyMember:
    """One vector of the family: its source direction, its off-manifold share and the vector."""

    source: str
    off_share: float
    vector: SteeringVector

    @property
    def name(self) -> str:
        return f"{self.source} off={self.off_share:.2f}"


def split_direction(direction: Tensor, projection: ManifoldProjection) -> tuple[Tensor, Tensor]:
    """Unit on- and off-subspace parts of ``direction`` (float64)."""
    d = direction.detach().double().flatten().cpu()
    basis = projection.components.double().cpu()
    on = (d @ basis.T) @ basis
    off = d - on
    parts = []
    for part, where in ((on, "inside"), (off, "outside")):
        norm = float(part.norm())
        if norm < 1e-9 * max(float(d.norm()), 1e-30):
            raise ConfigError(f"the direction has no part {where} the manifold's subspace")
        parts.append(part / norm)
    return parts[0], parts[1]


def matched_push_family(
    model: TransformerBridge,
    layer: int,
    direction: Tensor,
    projection: ManifoldProjection,
    scales: SiteScales,
    *,
    shares: Sequence[float] = DEFAULT_SHARES,
    sources: Sequence[str] = SOURCES,
    site: Site = DEFAULT_SITE,
    positions: Positions = "all",
    seed: int = 0,
) -> list[FamilyMember]:
    """The family of the module docstring (one member per source and share)."""
    if not shares or not all(0.0 <= f <= 1.0 for f in shares):
        raise ConfigError(f"off-manifold shares must lie in [0, 1], got {list(shares)}")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown family sources {unknown}; choose from {SOURCES}")
    if projection.width != direction.numel():
        raise ConfigError(
            f"the direction has width {direction.numel()}, but the manifold's subspace has "
            f"width {projection.width}"
        )
    generator = torch.Generator().manual_seed(seed)
    members = []
    for source in sources:
        if source == "diff_of_means":
            on, off = split_direction(direction, projection)
        else:
            draws = torch.randn(2, projection.width, generator=generator, dtype=torch.float64)
            on = split_direction(draws[0], projection)[0]
            off = split_direction(draws[1], projection)[1]
        for share in shares:
            mixed = (1.0 - share) ** 0.5 * on + share**0.5 * off
            vector = SteeringVector.along(model, layer, mixed.float(), scales, site, positions)
            members.append(FamilyMember(source, float(share), vector))
    return members
