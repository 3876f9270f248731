"""The designed claim test: the matched-push family, the joint regression, the local estimate,
the estimate comparison, and the pipeline end to end on a tiny model."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.concepts import load_concept
from workbench.errors import ConfigError
from workbench.hooks.sites import site_scales
from workbench.manifold.claim import joint_regression
from workbench.manifold.estimator import ActivationManifold
from workbench.manifold.local import LocalManifold
from workbench.manifold.mixtures import matched_push_family
from workbench.manifold.selection import best_estimates, estimate_comparison
from workbench.pipelines import claim as claim_pipeline
from workbench.pipelines.claim import ClaimSettings, claim_test
from workbench.steering.projected import ManifoldProjection

LAYER = 1


def _projection(width: int, k: int = 4, seed: int = 0) -> ManifoldProjection:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(width, k)))[0].T
    points = rng.normal(size=(300, k)) * 3 @ basis + rng.normal(size=(300, width)) * 0.05
    return ManifoldProjection.from_manifold(ActivationManifold(n_components=k).fit(points))


def test_family_controls_the_off_share_at_equal_push(tiny_llama):
    projection = _projection(tiny_llama.cfg.d_model)
    direction = torch.randn(tiny_llama.cfg.d_model, generator=torch.Generator().manual_seed(1))
    scales = site_scales(tiny_llama, "block", LAYER)
    shares = (0.0, 0.3, 1.0)
    family = matched_push_family(tiny_llama, LAYER, direction, projection, scales, shares=shares)
    assert [(m.source, m.off_share) for m in family] == [
        (s, f) for s in ("diff_of_means", "random") for f in shares
    ]
    norms = torch.stack([m.vector.raw_vector.norm() for m in family])
    assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-5)  # equal push
    for member in family:
        v = member.vector.raw_vector.double()
        off = projection.off_subspace(v.float()).double()
        assert float(off.norm() ** 2 / v.norm() ** 2) == pytest.approx(member.off_share, abs=1e-4)
    # the DiffMean members are built from the direction's own parts
    dm_on = family[0].vector.raw_vector
    on_part = projection.on_subspace(direction)
    cosine = torch.nn.functional.cosine_similarity(dm_on, on_part, dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ConfigError, match="shares"):
        matched_push_family(tiny_llama, LAYER, direction, projection, scales, shares=(1.5,))


def _synthetic(drop_from: str, seed: int = 0) -> pd.DataFrame:
    """Drops generated from one part only, at matched push (on² + off² = (|m|·c)²)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair in range(20):
        effect = rng.normal()
        for share in (0.0, 0.25, 0.5, 0.75, 1.0):
            for m in (1.0, 2.0, 4.0):
                on, off = np.sqrt(1 - share) * m, np.sqrt(share) * m
                cause = off if drop_from == "off" else on
                drop = 2.0 * cause + effect + rng.normal(scale=0.3)
                rows.append(
                    dict(pair_id=f"p{pair}", m=m, abs_m=m, on_manifold=on, off_manifold=off,
                         utility_drop=drop, hook="blocks.1.hook_resid_post", analysis_layer=1)
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_joint_regression_tells_the_two_parts_apart():
    off_driven = joint_regression(_synthetic("off"), n_bootstrap=200).iloc[0]
    assert off_driven["partial_r_off_low"] > 0.5 and off_driven["partial_r_off"] > 0.8
    on_driven = joint_regression(_synthetic("on"), n_bootstrap=200).iloc[0]
    assert on_driven["partial_r_on_low"] > 0.5
    assert on_driven["partial_r_off"] < off_driven["partial_r_off"] - 0.5
    assert off_driven["r2_gain_off"] > 0.3 > on_driven["r2_gain_off"]
    # pair effects are removed: shifting one pair's drops changes nothing
    shifted = _synthetic("off")
    shifted.loc[shifted["pair_id"] == "p3", "utility_drop"] += 100.0
    again = joint_regression(shifted, n_bootstrap=0).iloc[0]
    assert again["partial_r_off"] == pytest.approx(off_driven["partial_r_off"], abs=1e-9)


def test_local_estimate_follows_a_curved_manifold():
    rng = np.random.default_rng(0)
    embed = np.linalg.qr(rng.normal(size=(12, 2)))[0].T  # a circle in 12 dimensions

    def circle(n, radius=5.0):
        angle = rng.uniform(0, 2 * np.pi, n)
        return np.column_stack([np.cos(angle), np.sin(angle)]) * radius @ embed

    valid = circle(800) + rng.normal(scale=0.02, size=(800, 12))
    local = LocalManifold(k=12, rank=1, delta=0.1).fit(valid[:600], calibration=valid[600:])
    fresh = circle(400) + rng.normal(scale=0.02, size=(400, 12))
    assert local.score(fresh) >= 0.8  # calibrated: most fresh valid states are within ε
    inside = circle(200, radius=2.5)  # inside the circle, on the global plane
    assert local.score(inside) < 0.05
    # a one-component global subspace cannot tell the circle's interior from the circle
    global_fit = ActivationManifold(n_components=2, delta=0.1).fit(valid[:600], valid[600:])
    assert np.median(global_fit.residual_norm(inside)) < 0.1
    with pytest.raises(ConfigError, match="rank"):
        LocalManifold(k=4, rank=4).fit(valid)


def test_the_estimate_that_predicts_wins_the_comparison():
    rng = np.random.default_rng(1)
    rows = []
    for pair in range(12):
        for m in (1.0, 2.0, 4.0, 8.0):
            for member in range(3):
                hidden = rng.normal()
                drop = 0.2 * m + 3.0 * hidden + rng.normal(scale=0.1)
                rows.append(
                    dict(pair_id=f"p{pair}", method=str(member), m=m, abs_m=m,
                         hook="h", analysis_layer=0, utility_drop=drop,
                         kl_from_unsteered=np.exp(hidden), off_manifold=rng.normal(),
                         nonconformity_good=hidden + rng.normal(scale=0.05),
                         nonconformity_noise=rng.normal())
                )  # fmt: skip
    comparison = estimate_comparison(pd.DataFrame(rows), ["good", "noise"], folds=4)
    best = best_estimates(comparison)
    for target in ("utility_drop", "log_kl"):
        ranked = best[best["target"] == target]["estimate"].tolist()
        assert ranked[0] == "good"
    good = comparison[(comparison["estimate"] == "good") & (comparison["target"] == "utility_drop")]
    assert float(good["r2_with_push"].iloc[0]) > float(good["r2_push_only"].iloc[0]) + 0.5


def test_claim_pipeline_on_a_tiny_model(tiny_llama, monkeypatch, tmp_path):
    seen: list[str] = []
    collect = claim_pipeline.collect_valid_activations

    def spy(model, hooks, pairs=(), **kwargs):
        seen.extend(p.id for p in pairs)
        return collect(model, hooks, pairs, **kwargs)

    monkeypatch.setattr(claim_pipeline, "collect_valid_activations", spy)
    pairs = load_concept("weddings")
    settings = ClaimSettings(
        layer=LAYER, multipliers=(-2.0, 0.0, 2.0), shares=(0.0, 1.0), max_test_pairs=4,
        n_bootstrap=20,
    )  # fmt: skip
    result = claim_test(tiny_llama, {"weddings": pairs}, settings, progress=False)
    test_ids = {p.id for p in pairs.test}
    assert seen and not set(seen) & test_ids  # the manifold never sees a test pair
    assert set(result.drops["pair_id"]) <= test_ids  # and only test pairs are measured
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(LAYER, tiny_llama.cfg.n_layers)]
    assert result.regression["hook"].tolist() == hooks
    assert result.drops["method"].nunique() == 4  # 2 sources × 2 shares
    assert set(result.estimates["estimate"]) == {*claim_pipeline.ESTIMATES, "off_manifold"}
    result.write(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == set(claim_pipeline.FILES)
    assert "weddings: layer 1" in result.describe()
    with pytest.raises(ConfigError, match="m = 0"):
        ClaimSettings(multipliers=(1.0, 2.0))


def test_failure_auroc_ranks_the_estimate_that_marks_broken_text():
    from workbench.manifold.generated import failure_auroc

    rng = np.random.default_rng(0)
    broken = rng.random(60) < 0.4
    scores = pd.DataFrame(
        {
            "hook": "h",
            "repetition_rate": np.where(broken, 0.8, 0.1),
            "nonconformity_good": broken + rng.normal(scale=0.1, size=60),
            "nonconformity_noise": rng.normal(size=60),
        }
    )
    auroc = failure_auroc(scores, ["good", "noise"]).set_index("estimate")["auroc"]
    assert auroc["good"] > 0.95 and 0.3 < auroc["noise"] < 0.7
    fluent = scores.assign(repetition_rate=0.0)
    assert failure_auroc(fluent, ["good"])["auroc"].isna().all()  # undefined, not 0.5
