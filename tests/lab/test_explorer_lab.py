"""The explorer in a real JupyterLab, driven as a person would in headless Chromium.

Starts JupyterLab headless on a loopback port with notebook 06 (``WORKBENCH_SMALL=1``: a tiny
model), opens it, runs every cell from the page, then moves the method control and clicks a
heatmap cell through the page; asserts the views changed, that no script error was thrown and
that no request left the loopback server. The screenshot is kept in ``test-artefacts/`` (or
``$WORKBENCH_TEST_ARTEFACTS``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import DevToolsPage, chromium_binary, chromium_page, stop
from workbench.report.figures import method_colour

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "06_explorer.ipynb"
LOCAL_SCHEMES = ("data:", "blob:", "about:")
# the notebook's panel (headless Chromium has no focus, so the shell's current widget is unset)
PANEL = "Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.sessionContext)"

# the explorer's figures, in the order the widget lays them out, with what each drew
FIGURES = """(() => {
  const root = document.querySelector('.workbench-explorer');
  if (!root) return null;
  const plots = Array.from(root.querySelectorAll('.js-plotly-plot'));
  return plots.map(gd => (gd.data || []).map(t => ({
    type: t.type, x: t.x ? Array.from(t.x).map(String) : null,
    y: t.y ? Array.from(t.y).map(String) : null,
    colour: t.line ? t.line.color : null})));
})()"""
STATE = """(() => {
  const root = document.querySelector('.workbench-explorer');
  const value = name => { const s = root.querySelector(`.workbench-${name} select`);
                          return s ? s.value : null; };
  const m = root.querySelector('.workbench-m .widget-readout');
  return {method: value('method'), form: value('form'), layer: value('layer'),
          m: m ? m.textContent.trim() : null,
          status: root.querySelector('.workbench-status').textContent,
          text: root.querySelector('.workbench-text').textContent,
          scores: root.querySelector('.workbench-scores').textContent};
})()"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 06; (base URL, token)."""
    if chromium_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyter")
    env = os.environ | {
        "WORKBENCH_SMALL": "1",
        "OMP_NUM_THREADS": "2",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PYTHONPATH": str(ROOT),
    }
    log = open(home / "lab.log", "w")  # noqa: SIM115 - closed below, after the server
    options = [
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run the cells
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--allow-root",
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", *options],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((home / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield base, token
    finally:
        stop(server, timeout=20)
        log.close()


def _figures(page: DevToolsPage) -> list:
    return page.evaluate(FIGURES)


def _heatmap_cell_centre(page: DevToolsPage, m: str, layer: str) -> tuple[float, float]:
    """Page coordinates of a heatmap cell (the explorer's second figure)."""
    return tuple(
        page.evaluate(
            f"""(() => {{
      const gd = document.querySelectorAll('.workbench-explorer .js-plotly-plot')[1];
      const box = gd.getBoundingClientRect(), xa = gd._fullLayout.xaxis,
            ya = gd._fullLayout.yaxis;
      // category axes: d2p would read a numeric-looking name as an index, so look it up
      const at = (axis, name) => axis.c2p(axis._categories.indexOf(name));
      return [box.left + xa._offset + at(xa, {json.dumps(m)}),
              box.top + ya._offset + at(ya, {json.dumps(layer)})];
    }})()"""
        )
    )


def _wait_for_status(page: DevToolsPage, text: str, what: str, timeout: float = 240) -> None:
    """Wait until the explorer's status line holds ``text``; on a timeout, say what it holds."""
    expression = (
        "document.querySelector('.workbench-explorer .workbench-status').textContent"
        f".includes({json.dumps(text)})"
    )
    try:
        page.wait_for(expression, timeout, what)
    except TimeoutError as error:
        raise AssertionError(f"{error}; the explorer shows {page.evaluate(STATE)}") from None


def test_explorer_in_jupyterlab(lab):
    base, token = lab
    artefacts = Path(os.environ.get("WORKBENCH_TEST_ARTEFACTS", ROOT / "test-artefacts"))
    with chromium_page(timeout=600, size="1800,2400") as page:
        page.navigate(f"{base}/lab/tree/{NOTEBOOK}?token={token}", time.monotonic() + 120)
        page.wait_for(
            f"(() => {{ const p = window.jupyterapp && {PANEL};"
            " return !!(p && p.sessionContext.session && p.sessionContext.session.kernel &&"
            " p.sessionContext.session.kernel.status === 'idle'); })()",
            120,
            "the notebook and its idle kernel",
        )
        page.evaluate(
            f"(() => {{ const p = {PANEL}; window.jupyterapp.shell.activateById(p.id);"
            " return window.jupyterapp.commands.execute('notebook:run-all-cells'); })()"
        )
        # the last cell moves the controls from code to DiffMean at m = 0.5 and waits for it
        page.wait_for(
            "(() => { const s = document.querySelector('.workbench-explorer .workbench-status');"
            " return s && s.textContent.includes('drawn for') &&"
            " s.textContent.includes('m = 0.5'); })()",
            420,
            "the explorer to draw its live views",
        )
        before, figures = page.evaluate(STATE), _figures(page)
        assert len(figures) == 4 and all(figures), figures  # frontier, heatmap, tokens, map
        assert before["method"] == "diff_of_means" and before["m"] == "0.5", before
        assert "balanced_accuracy" in before["scores"] and before["text"].strip()
        assert figures[0][1]["colour"] == method_colour("diff_of_means")

        # move the method control through the page, as a person would
        page.evaluate(
            "(() => { const s = document.querySelector('.workbench-explorer .workbench-method"
            " select'); s.value = 'split'; s.dispatchEvent(new Event('change',"
            " {bubbles: true})); })()"
        )
        _wait_for_status(page, "drawn for extraversion · split", "the views to follow the method")
        after, moved = page.evaluate(STATE), _figures(page)
        assert after["method"] == "split" and after["scores"] != before["scores"]
        assert after["text"] != before["text"]
        assert moved[0][1]["colour"] == method_colour("split") != figures[0][1]["colour"]
        assert moved[0] != figures[0] and moved[2] != figures[2] and moved[3] != figures[3]

        # back to DiffMean, whose heatmap has three layers; click the cell (layer 2, m = -0.5)
        page.evaluate(
            "(() => { const s = document.querySelector('.workbench-explorer .workbench-method"
            " select'); s.value = 'diff_of_means'; s.dispatchEvent(new Event('change',"
            " {bubbles: true})); })()"
        )
        _wait_for_status(page, "drawn for extraversion · diff_of_means", "DiffMean again")
        page.wait_for(
            "document.querySelectorAll('.workbench-explorer .js-plotly-plot')[1].data[0].y"
            ".length === 3",
            60,
            "the DiffMean heatmap",
        )
        x, y = _heatmap_cell_centre(page, "-0.5", "2")
        page.click(x, y)
        clicked = page.wait_for(
            "(() => { const s = document.querySelector('.workbench-explorer .workbench-layer"
            " select'); return s && s.value === '2' ? s.value : null; })()",
            120,
            "the heatmap click to move the layer control",
        )
        assert clicked == "2"
        _wait_for_status(
            page,
            "drawn for extraversion · diff_of_means · vector · layer 2 · m = -0.5",
            "the live views at the clicked cell",
        )
        assert page.evaluate(STATE)["m"] == "-0.5"
        shot = page.screenshot(artefacts / "explorer.png")
    assert shot.stat().st_size > 50_000
    assert page.errors == [], page.errors
    outside = [
        url
        for url in page.requests
        if not url.startswith((base, base.replace("http", "ws", 1), *LOCAL_SCHEMES))
    ]
    assert outside == [], outside
