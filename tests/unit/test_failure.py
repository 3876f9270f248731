"""The persona-failure measurement on a tiny model: its gradients against finite differences,
its tables against the sweeps they come from, and its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.analysis_cache import AnalysisCache
from workbench.data.concepts import load_concept
from workbench.data.pairs import PairDataset
from workbench.measure.sweeps import run_sweep
from workbench.pipelines.failure import (
    READOUT_GRID,
    _answer_gradients,
    _labels,
    _needed_shift,
    _push_norm,
    steering_failure,
)
from workbench.steering.forms import SteeringVector

LAYER = 1


@pytest.fixture(scope="module")
def persona() -> PairDataset:
    """A few extraversion items of each label in each split."""
    pairs = load_concept("extraversion")
    chosen = []
    for split, count in (("train", 6), ("test", 4)):
        items = [p for p in pairs if p.split == split]
        for answer in (" Yes", " No"):
            chosen += [p for p in items if p.positive == answer][:count]
    return PairDataset(chosen, name="extraversion")


def test_gradients_match_finite_differences(tiny_model, persona):
    test = list(persona.test)
    y = _labels(test)
    gradients = _answer_gradients(tiny_model, test, y, LAYER, batch_size=3)
    direction = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    # a push of 1e-3 typical norms: tiny random models bend fast (1e-2 × a random direction is
    # already 25% off on tiny-llama), and much less drowns the difference in fp32 rounding
    step = 1e-3 * _push_norm(tiny_model, LAYER, AnalysisCache(None)) / float(direction.norm())
    vector = SteeringVector.for_model(tiny_model, LAYER, "block", "all", vector=direction * step)
    table = run_sweep(tiny_model, test, vector, (-1.0, 0.0, 1.0), progress=False)
    pref = {
        m: rows.set_index("pair_id").loc[[p.id for p in test], "pref_odds"]
        for m, rows in table.groupby("m")
    }
    finite = y * (pref[1.0].to_numpy() - pref[-1.0].to_numpy()) / (2 * step)
    predicted = gradients @ direction.double().numpy()
    np.testing.assert_allclose(predicted, finite, rtol=0.01, atol=0.01 * np.abs(finite).max())


def test_needed_shift_is_the_smallest_that_reaches_the_target():
    y = np.array([1.0, 1.0, -1.0, -1.0])
    pref = np.array([-3.0, -1.0, 2.0, -0.5])  # balanced accuracy 0.25
    # s > 0.5 lifts the -1 group to 2/2 (0.5 balanced); s > 1 the +1 group to 1/2 (0.75)
    assert _needed_shift(pref, y) == pytest.approx(1.0, abs=1e-6)
    assert _needed_shift(np.array([1.0, 1.0, 1.0, -1.0]), y) == 0.0


def test_the_failure_tables_come_from_the_sweeps(tiny_llama, persona, tmp_path):
    failure = steering_failure(
        tiny_llama, persona, layer=LAYER, multipliers=(-1.0, 0.0, 1.0), progress=False
    )
    assert failure.probe["layer"].tolist() == list(range(tiny_llama.cfg.n_layers))
    assert failure.probe["probe_auroc"].between(0, 1).all()
    assert set(failure.shifts["method"]) == {"diff_of_means", "random", "readout"}
    dm = failure.shifts[failure.shifts["method"] != "readout"]
    assert sorted(dm["m"].unique()) == [-1.0, 1.0]
    readout = failure.shifts[failure.shifts["method"] == "readout"]
    assert sorted(readout["m"]) == sorted(m for m in READOUT_GRID if m != 0)
    assert (failure.sweeps["method"] == "none").sum() == len(persona.test)
    test = list(persona.test)
    y = _labels(test)
    sweeps = failure.sweeps.set_index("pair_id")
    before = sweeps[sweeps.method == "none"].loc[[p.id for p in test], "pref_odds"].to_numpy()
    rows = sweeps[(sweeps.method == "diff_of_means") & (sweeps.m == 1.0)]
    after = rows.loc[[p.id for p in test], "pref_odds"].to_numpy()
    shift = failure.shifts.set_index(["method", "m"]).loc[("diff_of_means", 1.0)]
    assert shift["item_dependent"] == pytest.approx(np.mean(after - before))  # balanced test set
    assert shift["common"] == pytest.approx(np.mean(y * (after - before)))
    first = failure.first_order
    assert first["best_item_gain_per_m"] >= abs(first["diff_of_means_item_gain_per_m"]) - 1e-9
    assert first["diff_of_means_push_norm"] == pytest.approx(first["push_norm"], rel=1e-4)
    assert first["readout_push_norm"] == pytest.approx(first["push_norm"], rel=1e-4)
    # the readout vector is fitted on train: on test its item gain is positive but below the best
    assert 0 < first["readout_item_gain_per_m"] <= first["best_item_gain_per_m"] + 1e-9
    out = failure.write(tmp_path / "failure")
    record = json.loads((out / "failure.json").read_text())
    assert record["provenance"]["pairs_hash"] == persona.content_hash()
    assert record["layer"] == LAYER
    assert "item-dependent" in failure.describe()
    assert (out / "failure.html").stat().st_size > 1000
