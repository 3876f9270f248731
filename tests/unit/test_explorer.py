"""The explorer over a real (tiny) study folder, without a browser: its scores are the report's
measures on the selected rows, every view follows a control, a heatmap click moves the layer and
m controls, live work runs off the calling thread, and bad folders are named."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import cli
from workbench.errors import ArtefactError, MissingFileError
from workbench.explorer import Explorer, LiveModel, Selection, StudyData
from workbench.hooks.scoped import count_forward_hooks, model_lock
from workbench.measure.answer_bias import balanced_accuracy
from workbench.models.loading import load_model
from workbench.report.figures import method_colour


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    arguments = ["study", "--model", "tiny-llama", "--concept", "extraversion", "--layer", "1"]
    arguments += [
        "--train-pairs",
        "12",
        "--test-pairs",
        "6",
        "--bootstrap",
        "10",
        "--forms",
        "vector",
        "lora",
        "local_weight",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    assert cli.main(arguments) == 0
    (study,) = out.glob("study-*")
    return study


@pytest.fixture(scope="module")
def data(folder):
    return StudyData.load(folder)


def test_index_of_the_folder(data):
    assert data.concepts() == ["extraversion"]
    assert {"diff_of_means", "random", "sft", "split"} <= set(data.methods("extraversion"))
    assert data.forms("extraversion", "split") == ["local_weight", "lora", "vector"]
    # DiffMean at the heatmap's layers (layer_sweeps) and at the study's layer
    assert data.layers("extraversion", "diff_of_means", "vector") == [0, 1, 2]
    assert data.layers("extraversion", "split", "lora") == [1]
    for layer in (0, 1, 2):  # every DiffMean the heatmap swept is saved, so it can be explored
        assert data.intervention_path(
            Selection("extraversion", "diff_of_means", "vector", layer, 1.0)
        )
    assert data.intervention_path(Selection("extraversion", "split", "lora", 1, 1.0))


def test_scores_are_the_measures_on_the_selected_rows(data, folder):
    selection = Selection("extraversion", "split", "vector", 1, 1.0)
    sweeps = pd.read_csv(folder / "tables" / "sweeps.csv")
    rows = sweeps[
        (sweeps["method"] == "split")
        & (sweeps["form"] == "vector")
        & (sweeps["split"] == "test")
        & np.isclose(sweeps["m"], 1.0)
    ]
    scores = data.scores(selection)
    selected = scores.loc["selected"]
    assert selected["n_pairs"] == len(rows) == 6
    expected = balanced_accuracy(rows["pref_odds"].to_numpy(), rows["A_p"].tolist())
    assert selected["balanced_accuracy"] == pytest.approx(expected)
    assert selected["answer_mass"] == pytest.approx(rows["answer_mass"].mean())
    # the persona pairs answer Yes / No: always one answer is the baseline to beat
    assert 0.5 <= selected["best_constant_answer"] <= 1.0
    unsteered = scores.loc["unsteered (m = 0)"]
    random = scores.loc[next(i for i in scores.index if i.startswith("random direction"))]
    assert unsteered["n_pairs"] == 6 and random["n_pairs"] == 6


def test_equal_push_picks_the_random_vector_nearest_in_push(data):
    selection = Selection("extraversion", "diff_of_means", "vector", 1, 0.5)
    (label,) = [i for i in data.scores(selection).index if i.startswith("random")]
    assert label == "random direction, equal push (m = 0.5)"  # equal norm: equal push at equal m


def test_heatmap_is_layer_by_m(data):
    grid = data.heatmap("extraversion", "diff_of_means", "vector")
    assert list(grid.index) == [0, 1, 2] and list(grid.columns) == data.multipliers()
    assert grid.notna().all().all() and ((grid >= 0) & (grid <= 1)).all().all()


def test_every_view_follows_the_controls(data, tiny_llama):
    explorer = Explorer(data, tiny_llama, prompt="The film was", max_new_tokens=4)
    explorer.wait(timeout=120.0)
    assert explorer.layer.value == 1  # the study's layer, not the first offered
    first = (explorer.scores.value, explorer.text.value, explorer.frontier.data[2].x)
    frontier_colour = explorer.frontier.data[1].line.color
    assert frontier_colour == method_colour("diff_of_means")
    assert explorer.frontier.data[0].marker.color.startswith("rgba(150,150,150")  # muted dots
    explorer.select(method="split", form="lora", m=2.0)
    explorer.wait(timeout=120.0)
    assert explorer.selection == Selection("extraversion", "split", "lora", 1, 2.0)
    assert explorer.frontier.data[1].line.color == method_colour("split")
    assert explorer.frontier.data[1].line.dash == "dash"  # the form's line style
    assert explorer.scores.value != first[0] and "split · lora" in explorer.scores.value
    assert explorer.text.value != first[1] and explorer.last_view.selection.m == 2.0
    assert explorer.frontier.data[2].x != first[2]
    assert len(explorer.tokens.data[0].y) == len(explorer.last_view.tokens)
    assert explorer.map.data[1].x is not None and len(explorer.map.data[0].x) > 10
    assert count_forward_hooks(tiny_llama) == 0


def test_heatmap_click_moves_the_controls(data, tiny_llama):
    explorer = Explorer(data, tiny_llama)
    heatmap = explorer.heatmap.data[0]

    class Points:  # what plotly passes to a click callback
        xs, ys, point_inds = ["-0.5"], ["2"], [[2, 1]]

    for callback in heatmap._click_callbacks:
        callback(heatmap, Points(), None)
    assert (explorer.layer.value, explorer.m.value) == (2, -0.5)
    assert explorer.heatmap.data[1].y == ("2",)  # the ring moved to the clicked cell
    assert "layer 2 · m = -0.5" in explorer.scores.value


def test_live_work_runs_in_the_background(data, tiny_llama):
    explorer = Explorer(data, tiny_llama, max_new_tokens=4)
    with model_lock(tiny_llama):  # hold the model: the live job must wait, the caller not
        started = time.perf_counter()
        explorer.prompt.value = "The film was"
        explorer._start_live()
        assert time.perf_counter() - started < 1.0
        assert explorer.progress.value == 1 and "generating" in explorer.status.value
    explorer.wait(timeout=120.0)
    assert explorer.progress.value == 3 and "drawn" in explorer.status.value


def test_hooks_of_a_background_thread_do_not_steer_the_main_one(data, tiny_llama):
    live = LiveModel(tiny_llama, data)
    vector = live.intervention(Selection("extraversion", "diff_of_means", "vector", 1, 1.0))
    ids = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        plain = tiny_llama(ids)
    inside, leave = threading.Event(), threading.Event()

    def steer():
        with vector.applied(tiny_llama, 8.0):
            inside.set()
            leave.wait(timeout=60)

    thread = threading.Thread(target=steer)
    thread.start()
    inside.wait(timeout=60)
    try:  # the hooks are on the model now, added by the other thread: they must not act here
        with torch.no_grad():
            torch.testing.assert_close(tiny_llama(ids), plain, atol=0, rtol=0)
    finally:
        leave.set()
        thread.join()


def test_live_view_without_a_saved_intervention_says_so(data, tiny_llama):
    live = LiveModel(tiny_llama, data)
    with pytest.raises(Exception, match="no saved split_projected vector intervention"):
        live.view(Selection("extraversion", "split_projected", "vector", 1, 1.0), "Hi")


def test_another_model_is_refused(data):
    other = load_model("tiny-llama", device="cpu", seed=3)
    with pytest.raises(ArtefactError, match="made with another model"):
        LiveModel(other, data)


def test_bad_folders_are_named(folder, tmp_path):
    with pytest.raises(MissingFileError, match=r"no study\.json or comparison\.json"):
        StudyData.load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    table = pd.read_csv(copy / "tables" / "sweeps.csv").drop(columns=["answer_mass"])
    table.to_csv(copy / "tables" / "sweeps.csv", index=False)
    with pytest.raises(ArtefactError, match=r"sweeps\.csv: missing columns \['answer_mass'\]"):
        StudyData.load(copy)
    (copy / "study.json").write_text("{", encoding="utf-8")
    with pytest.raises(ArtefactError, match=r"study\.json: invalid JSON"):
        StudyData.load(copy)


def test_umap_map_of_valid_states(data, tiny_llama):
    live = LiveModel(tiny_llama, data, n_valid=24)
    view = live.view(Selection("extraversion", "sft", "vector", 1, 1.0), "Hi", 3, kind="umap")
    assert view.map_kind == "umap" and view.valid_map.shape[1] == 2
    assert view.steered_map.shape == (len(view.tokens), 2)  # one state per projected token
    assert np.isfinite(view.steered_map).all()


def test_a_comparison_folder_opens_too(tmp_path, tiny_llama):
    arguments = ["compare", "--model", "tiny-llama", "--concepts", "optimism", "--forms"]
    arguments += ["vector", "--seeds", "0", "1", "--epochs", "1", "--layer", "1"]
    arguments += ["--train-pairs", "12", "--test-pairs", "6", "--bootstrap", "10"]
    assert cli.main([*arguments, "--out", str(tmp_path)]) == 0
    data = StudyData.load(next(tmp_path.glob("compare-*")))
    assert data.concepts() == ["optimism"] and {"sft", "split"} <= set(data.methods("optimism"))
    selection = Selection("optimism", "split", "vector", 1, 1.0)
    assert data.scores(selection).loc["selected", "n_pairs"] == 6  # two seeds, six pairs
    assert "seed0" in data.intervention_path(selection).name  # live views: the lowest seed
    explorer = Explorer(data, tiny_llama, prompt="Will tomorrow go well?", max_new_tokens=3)
    explorer.select(method="split")
    explorer.wait(timeout=120.0)
    assert "drawn for optimism · split · vector · layer 1" in explorer.status.value
