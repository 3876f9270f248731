"""Open an HTML file in headless Chromium, as a person would, over the DevTools protocol.

Records every network request the page makes, every uncaught script error, what each plotly
figure drew, and a full-page screenshot. Used by the report tests; needs the ``chromium``
binary (Debian's ``chromium`` package, which ``.ci/run`` installs when it is missing).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import websocket

FIGURES_JS = """
JSON.stringify(Array.from(document.querySelectorAll('div.plotly-graph-div')).map(div => {
  const box = div.getBoundingClientRect();
  const marks = div.querySelectorAll(
    'g.trace path, g.trace rect, g.hm image, image, g.contourlevel path, path.point');
  const drawn = Array.from(marks).filter(el => {
    const b = el.getBoundingClientRect();
    const d = el.getAttribute('d');
    return b.width * b.height > 0 || (d && d.length > 4 && d !== 'M0,0Z');
  });
  const legend = Array.from(div.querySelectorAll('g.legend g.traces')).map(item => {
    const text = item.querySelector('text.legendtext');
    const mark = item.querySelector('g.legendpoints path, g.legendlines path');
    const style = mark ? window.getComputedStyle(mark) : null;
    const fill = style && style.fill !== 'none' ? style.fill : null;
    return [text ? text.textContent : '', fill || (style ? style.stroke : '')];
  });
  return {id: div.id, width: box.width, height: box.height, legend: legend,
          svgs: div.querySelectorAll('svg.main-svg').length,
          traces: div.querySelectorAll('g.trace, g.hm').length,
          marks: drawn.length};
}))
"""

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")


@dataclass
class PageVisit:
    requests: list[str]
    errors: list[str]
    figures: list[dict]
    screenshot: Path

    @property
    def network_requests(self) -> list[str]:
        """Requests that would leave the machine (anything not file/data/blob/about)."""
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def visit(html: Path, screenshot: Path, timeout: float = 90.0) -> PageVisit:
    """Load ``html`` in headless Chromium, wait for figures to render, and report."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (install Debian's chromium)")
    # chromium's helper processes may still write to the profile as it exits
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return _drive(Path(profile), html, screenshot, timeout)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _drive(profile: Path, html: Path, screenshot: Path, timeout: float) -> PageVisit:
    deadline = time.monotonic() + timeout
    port_file = profile / "DevToolsActivePort"
    while not port_file.is_file() or not port_file.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
    page = next(t for t in targets if t["type"] == "page")
    socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout)
    requests: list[str] = []
    errors: list[str] = []
    counter = iter(range(1, 1_000_000))

    def call(method: str, **params):
        ident = next(counter)
        socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            _observe(message)

    def _observe(message: dict) -> bool:
        method = message.get("method")
        if method == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = message["params"]["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details["text"])
        return method == "Page.loadEventFired"

    try:
        call("Network.enable")
        call("Runtime.enable")
        call("Page.enable")
        call("Page.navigate", url=html.resolve().as_uri())
        loaded = False
        while not loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{html} did not finish loading")
            loaded = _observe(json.loads(socket.recv()))
        figures: list[dict] = []
        while time.monotonic() < deadline:  # plotly draws after load; wait until it settles
            result = call("Runtime.evaluate", expression=FIGURES_JS, returnByValue=True)
            current = json.loads(result["result"]["value"])
            if current and current == figures and all(f["marks"] for f in current):
                break
            figures = current
            time.sleep(0.5)
        shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return PageVisit(requests, errors, figures, screenshot)
    finally:
        socket.close()
