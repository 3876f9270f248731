"""Figures draw the numbers of the tables they are given; coordinates match the manifold."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.manifold.embedding import activation_shift, steered_answer_states
from workbench.manifold.estimator import ActivationManifold
from workbench.report.figures import (
    curves_figure,
    displacement_figure,
    frontier_figure,
    layer_heatmaps,
    token_projection_html,
    training_figure,
)
from workbench.steering.forms import SteeringVector


def _sweep(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for form, method, scale in (("vector", "split", 2.0), ("lora", "sft", 1.0)):
        for layer in (1, 2):
            for m in (-2.0, -1.0, 0.0, 1.0, 2.0, 4.0):
                for i in range(6):
                    for split in ("train", "test"):
                        rows.append(
                            {
                                "pair_id": f"p{i}",
                                "split": split,
                                "form": form,
                                "method": method,
                                "layer": layer,
                                "m": m,
                                "pref_odds": scale * np.tanh(m) + rng.normal(0, 0.1),
                                "util_odds": -0.3 * m * m + rng.normal(0, 0.1),
                            }
                        )
    return pd.DataFrame(rows)


def test_frontier_and_curves_draw_the_table_means():
    sweep = _sweep()
    test = sweep[sweep["split"] == "test"]
    frontier = frontier_figure(sweep)
    for trace in frontier.data:
        method, form = trace.name.split(" · ")
        rows = test[(test["form"] == form) & (test["method"] == method) & (test["m"] >= 0)]
        means = rows.groupby("m")[["pref_odds", "util_odds"]].mean()
        assert np.allclose(trace.y, means["pref_odds"]) and np.allclose(trace.x, means["util_odds"])
    curves = curves_figure(sweep)
    markers = [t for t in curves.data if t.mode == "markers" and t.xaxis == "x"]
    assert len(markers) == 2
    rows = test[(test["form"] == "vector") & (test["method"] == "split")]
    expected = rows.groupby("m")["pref_odds"].mean()
    vector = next(t for t in markers if t.name == "vector · split")
    assert np.allclose(vector.y, expected.to_numpy())
    fitted = [t for t in curves.data if t.mode == "lines"]
    assert len(fitted) == 4  # two groups × (preference, utility)


def test_layer_heatmaps_hold_the_layer_by_m_means():
    sweep = _sweep()
    figure = layer_heatmaps(sweep)
    test = sweep[sweep["split"] == "test"]
    expected = test.groupby(["layer", "m"])["pref_odds"].mean().unstack("m").to_numpy()
    assert np.allclose(figure.data[0].z, expected)


def test_displacement_figure_has_a_panel_per_layer():
    table = pd.DataFrame(
        {
            "analysis_layer": [1, 1, 2, 2],
            "m": [0.0, 2.0, 0.0, 2.0],
            "concept_projection": [0.0, 1.0, 0.0, 0.5],
            "on_manifold": [0.0, 0.2, 0.0, 0.3],
            "off_manifold": [0.0, 0.8, 0.0, 1.2],
        }
    )
    figure = displacement_figure(table)
    assert len(figure.data) == 6
    off = [t for t in figure.data if t.name == "off-manifold"]
    assert [list(t.y) for t in off] == [[0.0, 0.8], [0.0, 1.2]]


def test_training_figure_draws_each_nonzero_loss_term():
    steps = pd.DataFrame(
        {
            "step": [1, 2],
            "loss": [3.0, 2.0],
            "loss_p_term": [2.0, 1.5],
            "loss_n_term": [0.0, 0.0],
            "margin_term": [1.0, 0.5],
            "penalty_term": [0.0, 0.0],
        }
    )
    epochs = pd.DataFrame({"epoch": [0, 1], "eval_loss": [3.0, 2.5], "mean_pref_odds": [0, 1]})
    names = [t.name for t in training_figure(steps, epochs).data]
    assert names[:3] == ["total", "λ_p·L_p", "γ·ReLU(θ − (L_n − L_p))"] and len(names) == 5


def test_token_projection_html_escapes_and_colours_by_sign():
    page = token_projection_html([["<b>", " ok"]], [[-2.0, 1.0]], labels=["m = 0"])
    assert "&lt;b&gt;" in page and "<b>" not in page.replace("<b style", "")
    assert "rgba(31,119,180,1.00)" in page and "rgba(214,39,40,0.50)" in page
    with pytest.raises(ValueError, match="2 tokens but 1 projections"):
        token_projection_html([["a", "b"]], [[1.0]])


def test_activation_shift_coordinates_are_the_manifold_coordinates(tiny_llama, small_pairs):
    vector = SteeringVector.for_model(tiny_llama, 1, vector=torch.randn(64))
    states, hover = steered_answer_states(tiny_llama, vector, small_pairs, (0.0, 3.0))
    valid = np.random.default_rng(0).normal(size=(200, 64))
    manifold = ActivationManifold(n_components=5).fit(valid)
    shift = activation_shift(
        tiny_llama,
        manifold,
        vector,
        small_pairs,
        (0.0, 3.0),
        valid,
        concept_direction=vector.bias.detach(),
        umap=False,
    )
    assert np.allclose(shift.steered["PCA"][0.0], manifold.transform(states[0.0])[:, :2])
    assert np.allclose(shift.valid["PCA"], manifold.transform(valid)[:, :2])
    assert len(hover) == len(states[3.0]) and "⟶" in hover[0]
    # at m the states move by m·v, so PCA coordinates move by m·(V v)
    moved = shift.steered["PCA"][3.0] - shift.steered["PCA"][0.0]
    expected = 3.0 * manifold.pca_.components_[:2] @ vector.bias.detach().double().numpy()
    assert np.allclose(moved, expected, atol=1e-4)
    assert shift.direction["PCA"].shape == (2, 2)
