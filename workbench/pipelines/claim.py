"""The paper's manifold claim, tested by design: does off-manifold displacement predict the
utility drop beyond on-manifold displacement?

For each concept, at the block site of the layer chosen on validation pairs (or given):

1. valid activations of training text only (neutral sentences, the training answers and the
   model's own greedy continuations of the training prompts), at the intervention's block output
   and every later one;
2. four manifold estimates per hook, fitted on those: ``pca_gaussian`` and ``pca_knn`` (the global
   PCA subspace with a Gaussian or kNN density), ``local`` (local-PCA tangent distance), and
   ``continuations`` (the global estimate fitted on the model's own continuations alone);
3. the matched-push family (:mod:`workbench.manifold.mixtures`): DiffMean's and random
   directions' on- and off-subspace parts mixed at controlled shares, equal push at every m;
4. each member swept on the held-out pairs and its displacement measured at every hook;
5. the joint regression (:func:`~workbench.manifold.claim.joint_regression`) per hook, and the
   estimates compared by held-out prediction (:mod:`workbench.manifold.selection`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from workbench.atomic import write_table
from workbench.data.chat import format_prompts
from workbench.data.pairs import PairDataset
from workbench.directions.layer_sweep import layer_sweep
from workbench.errors import ConfigError
from workbench.hooks.names import resid_post
from workbench.hooks.sites import site_scales
from workbench.manifold.claim import designed_drop_table, joint_regression
from workbench.manifold.displacement import displacement_table, downstream_hooks
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.local import LocalManifold
from workbench.manifold.mixtures import matched_push_family
from workbench.manifold.selection import best_estimates, estimate_comparison
from workbench.manifold.valid import TokenActivations, collect_valid_activations
from workbench.measure.sweeps import SweepLabels, run_sweep
from workbench.progress import bar
from workbench.report.figures import claim_figure
from workbench.steering.concept_vectors import concept_vector
from workbench.steering.projected import ManifoldProjection

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

CLAIM_GRID = (0.0, 0.125, 0.25, 0.5, 1.0)  # |m| is what the regression reads; one sign suffices
CLAIM_SHARES = (0.0, 0.5, 1.0)
ESTIMATES = ("pca_gaussian", "pca_knn", "local", "continuations")
FILES = ("claim.csv", "estimates.csv", "drops.parquet", "claim.html")


@dataclass
class ClaimTest:
    """The designed claim test on one or more concepts."""

    regression: pd.DataFrame  # one row per concept × hook
    estimates: pd.DataFrame  # one row per concept × hook × target × estimate
    drops: pd.DataFrame  # the rows regressed: member × pair × m × hook
    settings: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_table(self.regression, out / "claim.csv")
        write_table(self.estimates, out / "estimates.csv")
        write_table(self.drops, out / "drops.parquet")
        claim_figure(self.regression).write_html(out / "claim.html", include_plotlyjs=True)

    def describe(self) -> str:
        lines = []
        for concept, rows in self.regression.groupby("concept", sort=False):
            first = rows.iloc[0]
            lines.append(
                f"{concept}: layer {int(first['layer'])}, {int(first['n_pairs'])} held-out pairs, "
                f"{int(first['n_rows'])} rows per hook (members × pairs × m ≠ 0)"
            )
            lines.append(
                f"  {'hook':<24}{'r(off | on) [95% CI]':>24}{'r(on | off) [95% CI]':>26}"
                f"{'rank r(off | on)':>24}"
            )
            for _, row in rows.iterrows():
                lines.append(
                    f"  {row['hook']:<24}{_interval(row, 'partial_r_off'):>24}"
                    f"{_interval(row, 'partial_r_on'):>26}{_interval(row, 'rank_r_off'):>24}"
                )
        best = best_estimates(self.estimates)
        lines.append("manifold estimates, mean held-out R² over hooks (with |m|; gain over |m|):")
        for _, row in best.iterrows():
            lines.append(
                f"  {row['target']:<13}{row['estimate']:<15}{row['r2_with_push']:+.3f}"
                f"  ({row['gain']:+.3f})"
            )
        return "\n".join(lines)


def _interval(row: pd.Series, name: str) -> str:
    return f"{row[name]:+.2f} [{row[name + '_low']:+.2f}, {row[name + '_high']:+.2f}]"


def fit_estimates(
    valid: TokenActivations, hooks: Sequence[str], components: float = 0.9, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The four estimates of the module docstring, per hook (fitted on ``valid`` only)."""
    own = valid.source == "greedy"
    own_fit = torch.from_numpy(own & ~valid.calibration)
    own_held = torch.from_numpy(own & valid.calibration)
    n_components = int(components) if components >= 1 else components
    estimates: dict[str, dict[str, Any]] = {name: {} for name in ESTIMATES}
    for hook in hooks:
        fitting, held = valid.fitting(hook), valid.held_out(hook)
        for density in ("gaussian", "knn"):
            estimates[f"pca_{density}"][hook] = ActivationManifold(
                n_components=n_components, density=density, random_state=seed
            ).fit(fitting, calibration=held)
        estimates["local"][hook] = LocalManifold(random_state=seed).fit(fitting, calibration=held)
        estimates["continuations"][hook] = ActivationManifold(
            n_components=n_components, random_state=seed
        ).fit(valid.activations[hook][own_fit], calibration=valid.activations[hook][own_held])
    return estimates


@dataclass(frozen=True)
class ClaimSettings:
    """What the designed test sweeps and how it reports (see :func:`claim_test`)."""

    layer: int | None = None
    multipliers: tuple[float, ...] = CLAIM_GRID
    shares: tuple[float, ...] = CLAIM_SHARES
    max_test_pairs: int | None = 16
    components: float = 0.9
    n_bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not self.shares or not all(0.0 <= f <= 1.0 for f in self.shares):
            raise ConfigError(f"ClaimSettings.shares: each must lie in [0, 1], got {self.shares}")
        if 0.0 not in self.multipliers:
            raise ConfigError("ClaimSettings.multipliers: the grid needs m = 0 (the utility drop)")
        if len([m for m in self.multipliers if m != 0]) < 2:
            raise ConfigError("ClaimSettings.multipliers: need at least two m != 0")


def claim_test(
    model: TransformerBridge,
    datasets: Mapping[str, PairDataset],
    settings: ClaimSettings | None = None,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> ClaimTest:
    """Run the designed test on each concept (see the module docstring)."""
    settings = settings or ClaimSettings()
    parts = [
        _concept_claim(model, concept, pairs, settings, cache_dir, progress)
        for concept, pairs in datasets.items()
    ]
    regression, estimates, drops = (pd.concat(p, ignore_index=True) for p in zip(*parts))
    return ClaimTest(regression, estimates, drops, asdict(settings))


def _concept_claim(model, concept, raw, settings: ClaimSettings, cache_dir, progress):
    pairs = format_prompts(model, raw)
    layer = settings.layer
    if layer is None:
        sweep = layer_sweep(model, pairs, methods=("balanced_diff_of_means",), progress=False)
        layer = sweep.recommended_layer
    test = pairs.subsample(None, settings.max_test_pairs).test
    hooks = downstream_hooks(model, layer)
    valid = collect_valid_activations(
        model, hooks, pairs.train, sources=("neutral", "answers", "greedy"), seed=settings.seed
    )
    estimates = fit_estimates(valid, hooks, settings.components, settings.seed)
    direction = concept_vector(model, pairs.train, layer, seed=settings.seed).raw_vector
    projection = ManifoldProjection.from_manifold(estimates["pca_gaussian"][resid_post(layer)])
    family = matched_push_family(
        model,
        layer,
        direction.cpu(),
        projection,
        site_scales(model, "block", layer),
        shares=settings.shares,
        seed=settings.seed,
    )
    steered = [m for m in settings.multipliers if m != 0]
    sweeps, tables = [], []
    for member in bar(family, desc=f"claim {concept}", enabled=progress):
        labels = SweepLabels(method=member.name, seed=settings.seed)
        options: dict[str, Any] = dict(batch_size=settings.batch_size, progress=False)
        sweep = run_sweep(
            model,
            test,
            member.vector,
            settings.multipliers,
            labels=labels,
            cache_dir=cache_dir,
            **options,
        )
        sweeps.append(sweep.assign(source=member.source, off_share=member.off_share))
        global_estimate = estimates["pca_gaussian"]
        tables.append(
            displacement_table(
                model,
                test,
                member.vector,
                steered,
                global_estimate,
                method=member.name,
                scorers=estimates,
                **options,
            )
        )
    sweep_table = pd.concat(sweeps, ignore_index=True)
    drop = designed_drop_table(sweep_table, pd.concat(tables, ignore_index=True))
    described = sweep_table.groupby("method")[["source", "off_share"]].first()
    drop = drop.join(described, on="method")
    keys = dict(concept=concept, layer=layer)
    return (
        joint_regression(drop, settings.n_bootstrap, settings.seed).assign(**keys),
        estimate_comparison(drop, ESTIMATES).assign(**keys),
        drop.assign(**keys),
    )
