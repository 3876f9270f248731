"""The one-command study on a tiny model: every stage's table, the provenance record, and the
report as a person sees it in headless Chromium (figures drawn, no network request)."""

import json
import os
from html.parser import HTMLParser

import pandas as pd
import pytest

from tests.browser import chromium_binary, visit
from workbench import cli
from workbench.data.concepts import load_concept
from workbench.report.html import Report

HOSTILE = '<img src=x onerror=alert(0)>"wed</script>'


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """The study of the weddings pairs under a hostile file name and concept, with hostile
    text in prompts and answers: every test of the report also proves the names stay text."""
    out = tmp_path_factory.mktemp("study")
    pairs = tmp_path_factory.mktemp("input") / f"{HOSTILE.replace('/', '_')}.jsonl"
    hostile = [
        p.to_dict() | {"concept": HOSTILE, "prompt": f"{p.prompt} <script>alert(1)</script>"}
        for p in load_concept("weddings")
    ]
    hostile[0]["positive"] += "</script><img src=x onerror=alert(2)>"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in hostile), encoding="utf-8")
    arguments = [
        "study",
        "--model",
        "tiny-llama",
        "--concept",
        str(pairs),
        "--layer",
        "1",
        "--train-pairs",
        "12",
        "--test-pairs",
        "6",
        "--bootstrap",
        "20",
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
    (folder,) = out.glob("study-*")
    return folder


def test_study_writes_every_table_and_how_it_was_made(study_dir):
    made = json.loads((study_dir / "study.json").read_text())
    assert made["model"]["name"] == "tiny-llama" and made["layer"] == 1
    assert made["hook"] == "blocks.1.hook_resid_post"  # the block site, the default
    assert made["prompt_style"] == "plain"  # free-text answers
    assert made["settings"]["train_pairs"] == 12 and made["seconds"] > 0
    tables = {p.stem for p in (study_dir / "tables").glob("*.csv")}
    assert tables >= {
        "sweeps",
        "comparison",
        "split_versus",
        "frontier_differences",
        "fits",
        "layer_sweeps",
        "displacement",
        "validity",
        "training_steps",
        "generations",
        "comparison_validated_m",
        "validation_sweeps",
    }
    comparison = pd.read_csv(study_dir / "tables" / "comparison.csv")
    assert set(zip(comparison["form"], comparison["method"])) == {
        ("none", "unsteered"),
        ("vector", "diff_of_means"),
        ("vector", "random"),
        *(
            (form, method)
            for form in ("vector", "lora", "local_weight")
            for method in ("sft", "split", "reps", "split_projected")
        ),
    }
    sweeps = pd.read_csv(study_dir / "tables" / "sweeps.csv")
    assert set(sweeps["split"]) == {"test"} and sweeps["pair_id"].nunique() == 6
    assert any((study_dir / "cache" / "artefacts").glob("*split*.safetensors"))


def test_hostile_names_and_texts_reach_the_page_as_text(study_dir):
    page = (study_dir / "report.html").read_text()
    tags = _Tags()
    tags.feed(page)
    assert tags.handlers == [] and "img" not in tags.names
    # one script for plotly.js and one per figure: no text broke out of a script block
    assert tags.names.count("script") == 1 + page.count('class="plotly-graph-div')
    assert "&lt;img src=x onerror=alert(0)&gt;" in page  # shown, escaped


class _Tags(HTMLParser):
    """Every start tag of a page and every event-handler attribute on one."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.handlers: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.names.append(tag)
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]


def test_report_opens_with_the_answer_and_shows_readable_tables(study_dir):
    page = (study_dir / "report.html").read_text()
    assert page.index('id="answer"') < page.index("<h2>Preference and utility")
    assert "Preference does not move" in page or "Preference moves" in page
    assert "[95% CI]" in page and "_low</th>" not in page  # intervals merged into one column
    assert '<p class="caption">' in page and "<details>" in page  # captions; fits collapsed
    assert "RePS" in page


def test_report_is_self_contained(study_dir):
    page = (study_dir / "report.html").read_text()
    assert "Plotly" in page and page.count('class="plotly-graph-div') >= 9
    # plotly.js is inlined; nothing is fetched by a tag (the browser test checks at run time)
    assert "<script src=" not in page and "<link " not in page


@pytest.mark.browser
def test_report_renders_every_figure_with_no_network_request(study_dir, tmp_path):
    if chromium_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    made = json.loads((study_dir / "study.json").read_text())
    seen = visit(study_dir / "report.html", tmp_path / "report.png")
    assert seen.network_requests == []
    assert seen.errors == []
    assert len(seen.figures) == made["figures"] >= 9
    for figure in seen.figures:
        assert figure["width"] > 0 and figure["height"] > 0, figure
        assert figure["svgs"] >= 1 and figure["traces"] >= 1 and figure["marks"] >= 1, figure
    assert seen.screenshot.stat().st_size > 50_000
    # the first screen holds the answer block, and no table is wider than the page
    layout = seen.layout
    assert layout["answer_top"] is not None and layout["answer_bottom"] <= layout["viewport_height"]
    assert "Unsteered" in layout["answer_text"] and "SPLIT − SFT" in layout["answer_text"]
    assert layout["widest_table"] <= layout["page_width"]
    assert layout["scroll_width"] <= layout["page_width"]
    # one colour per method: the vector methods' legend entries are told apart by colour
    vectors = next(f for f in seen.figures if any("random · vector" in t for t, _ in f["legend"]))
    colours = {text.split(" · ")[0]: colour for text, colour in vectors["legend"] if colour}
    assert {"diff_of_means", "random", "sft", "split"} <= set(colours)
    assert len(set(colours.values())) == len(colours), colours


@pytest.mark.browser
def test_the_browser_check_catches_a_network_request_and_a_blank_figure(tmp_path):
    if chromium_binary() is None:
        pytest.skip("chromium is not installed")
    report = Report("broken on purpose")
    report.add("external", snippets=['<img src="http://example.invalid/pixel.png">'])
    path = report.write(tmp_path / "broken.html")
    page = path.read_text().replace(
        "</body>", '<div class="plotly-graph-div" style="height:100px"></div></body>'
    )
    path.write_text(page)
    seen = visit(path, tmp_path / "broken.png", timeout=15)
    assert seen.network_requests == ["http://example.invalid/pixel.png"]
    assert seen.figures and seen.figures[0]["marks"] == 0


class _Stop(Exception):
    pass


def test_the_study_layer_choice_never_reads_test_pairs(monkeypatch):
    """The study is stopped right after its layer choice; every activation captured for it
    came from training pairs, and rewriting the test pairs changes nothing it chose."""
    from dataclasses import replace

    from workbench.analysis_cache import AnalysisCache
    from workbench.data.pairs import ContrastPair, PairDataset
    from workbench.directions import layer_sweep as sweep_module
    from workbench.models.loading import load_model
    from workbench.pipelines import study

    seen: list[str] = []
    capture = sweep_module.capture_activations

    def recording(model, pairs, *args, **kwargs):
        seen.extend(p.id for p in pairs)
        return capture(model, pairs, *args, **kwargs)

    chosen: list[pd.DataFrame] = []
    sweep = sweep_module.layer_sweep

    def keep(*args, **kwargs):
        result = sweep(*args, **kwargs)
        chosen.append(result.table)
        return result

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(sweep_module, "capture_activations", recording)
    monkeypatch.setattr(sweep_module, "layer_sweep", keep)
    monkeypatch.setattr(study, "cached_valid_activations", stop)
    model = load_model("tiny-llama")
    pairs = PairDataset(
        ContrastPair(
            f"q{i:02d}",
            f"Statement {i}?",
            *((" Yes", " No") if i % 2 else (" No", " Yes")),
            concept="c",
            split="test" if i % 4 == 3 else "train",
        )
        for i in range(24)
    )
    changed = pairs.map(lambda p: replace(p, prompt="Other words?") if p.split == "test" else p)
    for dataset in (pairs, changed):
        with pytest.raises(_Stop):
            settings = study.StudySettings(prompt_style="cue")
            nothing_kept = AnalysisCache(None)  # both runs compute their layer sweep
            study.run_study(model, dataset, settings, progress=False, cache=nothing_kept)
    assert seen and not set(seen) & {p.id for p in pairs.test}
    pd.testing.assert_frame_equal(chosen[0], chosen[1])
