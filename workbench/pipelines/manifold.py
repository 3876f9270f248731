"""The paper's manifold claim on a concept's DiffMean steer at the block site: does the off-manifold
part of the push predict the utility drop, and does measured validity track the fitted utility
decay? (One vector per run confounds the two parts with |m|; :mod:`workbench.pipelines.claim`
is the designed test.)

For each concept: the DiffMean sweep and fits (:func:`~workbench.pipelines.curves.concept_curves`),
a manifold fitted on valid activations at the intervention layer and every later one, the
displacement of the steered states, and the correlations with bootstrap intervals over pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.atomic import write_table
from workbench.data.pairs import PairDataset
from workbench.directions.extract import extract_direction
from workbench.errors import ConfigError
from workbench.hooks.names import resid_post
from workbench.manifold.claim import (
    correlation_with_interval,
    utility_drop_table,
    validity_against_fit,
)
from workbench.manifold.displacement import displacement_table, downstream_hooks, measured_validity
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.valid import collect_valid_activations
from workbench.measure.fits import FlatCurveError, fit_sweep_curve
from workbench.pipelines.curves import DEFAULT_CURVE_GRID, concept_curves
from workbench.steering.concept_vectors import concept_vector

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SPLITS = ("train", "test", "all")


@dataclass
class ConceptClaim:
    """The claim measured on one concept."""

    concept: str
    layer: int
    hook: str  # the intervention layer's block output, where the correlations are read
    n_pairs: int
    n_valid_tokens: int
    n_components: int
    off_manifold: dict[str, float]  # utility drop vs off-manifold norm: pearson, spearman, CIs
    on_manifold: dict[str, float]
    validity: dict[str, Any] | None  # measured D̂(m) vs fitted D_u(m); None for a flat curve
    flat: str | None = None  # why the utility curve was not fitted

    def describe(self, split: str, density: str) -> str:
        lines = [
            f"{self.concept}: layer {self.layer}, {self.n_pairs} {split} pairs, manifold of "
            f"{self.n_valid_tokens} valid tokens ({density}, {self.n_components} components at "
            f"{self.hook})",
            f"  utility drop vs off-manifold norm: {_correlations(self.off_manifold)}",
            f"  utility drop vs on-manifold norm:  {_correlations(self.on_manifold)}",
        ]
        if self.validity is None:
            lines.append(f"  measured validity D̂(m) vs fitted D_u(m): {self.flat}")
        else:
            v = self.validity
            lines.append(
                f"  measured validity D̂(m) vs fitted D_u(m): Pearson {v['pearson']:+.2f}, "
                f"Spearman {v['spearman']:+.2f}"
            )
            lines.extend(
                f"    m={m:+6.1f}  D̂={d_hat:.3f}  D_u={d_u:.3f}"
                for m, d_hat, d_u in zip(v["m"], v["measured_validity"], v["fitted_decay"])
            )
        return "\n".join(lines)


@dataclass
class ManifoldAnalysis:
    claims: list[ConceptClaim]
    displacement: pd.DataFrame
    split: str
    density: str
    files: list[str] = field(default_factory=lambda: ["displacement.parquet", "validity.csv"])

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.displacement, out / "displacement.parquet")
        write_table(measured_validity(self.displacement), out / "validity.csv")

    def describe(self) -> str:
        return "\n".join(claim.describe(self.split, self.density) for claim in self.claims)


def manifold_analysis(
    model: TransformerBridge,
    datasets: Mapping[str, PairDataset],
    *,
    layer: int | None = None,
    split: str = "test",
    components: float = 0.9,
    density: str = "gaussian",
    seed: int = 0,
    cache_dir: Path | None = None,
) -> ManifoldAnalysis:
    """Measure the claim on each concept (``split``: the pairs whose displacement is measured)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    claims, tables = [], []
    for concept, pairs in datasets.items():
        claim, table = _concept_claim(
            model, concept, pairs, layer, split, components, density, seed, cache_dir
        )
        claims.append(claim)
        tables.append(table)
    return ManifoldAnalysis(claims, pd.concat(tables, ignore_index=True), split, density)


def _concept_claim(
    model: TransformerBridge, concept, pairs, layer, split, components, density, seed, cache_dir
):
    sweep, fits = concept_curves(
        model, concept, site="block", layer=layer, n_bootstrap=0, seed=seed, cache_dir=cache_dir
    )
    layer = int(fits["layer"].iloc[0])
    hooks = downstream_hooks(model, layer)
    valid = collect_valid_activations(model, hooks, pairs.train, seed=seed)  # never test text
    n_components = int(components) if components >= 1 else components
    manifolds = {
        h: valid.fit_manifold(ActivationManifold(n_components=n_components, density=density), h)
        for h in hooks
    }
    vector = concept_vector(model, pairs.train, layer, site="block", normalise=False, seed=seed)
    analysed = pairs if split == "all" else pairs.filter(lambda p: p.split == split)
    resid = extract_direction(model, pairs.train, layer, seed=seed)
    table = displacement_table(
        model,
        analysed,
        vector,
        DEFAULT_CURVE_GRID,
        manifolds,
        {resid.hook: resid.vector},
        method="diff_of_means",
    )
    own = resid_post(layer)
    drops = utility_drop_table(sweep, table, own)
    validity, flat = None, None
    try:
        validity = validity_against_fit(
            table, own, fit_sweep_curve(sweep, "utility", n_bootstrap=0)
        )
    except FlatCurveError as error:
        flat = str(error)
    claim = ConceptClaim(
        concept=concept,
        layer=layer,
        hook=own,
        n_pairs=len(analysed),
        n_valid_tokens=len(valid.source),
        n_components=manifolds[own].n_components_,
        off_manifold=correlation_with_interval(drops, "off_manifold", "utility_drop", seed=seed),
        on_manifold=correlation_with_interval(drops, "on_manifold", "utility_drop", seed=seed),
        validity=validity,
        flat=flat,
    )
    return claim, table


def _correlations(r: dict[str, float]) -> str:
    return (
        f"Pearson {r['pearson']:+.2f} [{r['pearson_low']:+.2f}, {r['pearson_high']:+.2f}], "
        f"Spearman {r['spearman']:+.2f} [{r['spearman_low']:+.2f}, {r['spearman_high']:+.2f}]"
    )
