"""Open a page in headless Chromium, as a person would, over the DevTools protocol.

:func:`chromium_page` yields a :class:`DevToolsPage` that records every network request (and
websocket) the page makes and every uncaught script error, evaluates script, waits for a
condition, clicks and takes screenshots; :func:`visit` loads an HTML file and reports what each
plotly figure drew. Used by the report and explorer tests; needs the ``chromium`` binary
(Debian's ``chromium`` package, which ``.ci/run`` installs when it is missing).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

LAYOUT_JS = """
JSON.stringify((() => {
  const answer = document.getElementById('answer');
  const box = answer ? answer.getBoundingClientRect() : null;
  const tables = Array.from(document.querySelectorAll('table.data'));
  return {
    viewport_height: window.innerHeight,
    page_width: document.documentElement.clientWidth,
    answer_top: box ? box.top + window.scrollY : null,
    answer_bottom: box ? box.bottom + window.scrollY : null,
    answer_text: answer ? answer.innerText : '',
    widest_table: Math.max(0, ...tables.map(t => t.getBoundingClientRect().right)),
    scroll_width: document.documentElement.scrollWidth,
  };
})())
"""

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
    layout: dict = field(default_factory=dict)  # where the answer block and tables sit

    @property
    def network_requests(self) -> list[str]:
        """Requests that would leave the machine (anything not file/data/blob/about)."""
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class DevToolsPage:
    """One page of a running Chromium, driven over its DevTools websocket."""

    def __init__(self, socket: websocket.WebSocket) -> None:
        self.socket = socket
        self.requests: list[str] = []
        self.errors: list[str] = []
        self._counter = iter(range(1, 10_000_000))
        self._loaded = False

    def call(self, method: str, **params: Any) -> dict:
        ident = next(self._counter)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._observe(message)

    def _observe(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.webSocketCreated":
            self.requests.append(params["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Page.loadEventFired":
            self._loaded = True

    def navigate(self, url: str, deadline: float) -> None:
        self._loaded = False
        self.call("Page.navigate", url=url)
        while not self._loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            self._observe(json.loads(self.socket.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str, poll: float = 0.5) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (move, press, release)."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.contextmanager
def chromium_page(timeout: float = 90.0, size: str = "1280,900") -> Iterator[DevToolsPage]:
    """A headless Chromium with one page, recording from the start; closed on exit."""
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
                f"--window-size={size}",
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
            socket = _connect(Path(profile), time.monotonic() + timeout, timeout)
            try:
                page = DevToolsPage(socket)
                for domain in ("Network", "Runtime", "Page"):
                    page.call(f"{domain}.enable")
                yield page
            finally:
                socket.close()
        finally:
            stop(process, timeout=10)


def stop(process: subprocess.Popen, timeout: float) -> None:
    """Terminate ``process``; kill it if it has not exited after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def _connect(profile: Path, deadline: float, timeout: float) -> websocket.WebSocket:
    port_file = profile / "DevToolsActivePort"
    while not port_file.is_file() or not port_file.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
    target = next(t for t in targets if t["type"] == "page")
    # no Origin header: Chromium >= 111 refuses a DevTools websocket from an origin it was not
    # started with (--remote-allow-origins)
    return websocket.create_connection(
        target["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
    )


def visit(html: Path, screenshot: Path, timeout: float = 90.0) -> PageVisit:
    """Load ``html`` in headless Chromium, wait for figures to render, and report."""
    deadline = time.monotonic() + timeout
    with chromium_page(timeout) as page:
        page.navigate(html.resolve().as_uri(), deadline)
        figures: list[dict] = []
        while time.monotonic() < deadline:  # plotly draws after load; wait until it settles
            current = json.loads(page.evaluate(FIGURES_JS))
            if current and current == figures and all(f["marks"] for f in current):
                break
            figures = current
            time.sleep(0.5)
        shot = page.screenshot(screenshot)
        layout = json.loads(page.evaluate(LAYOUT_JS))
        return PageVisit(page.requests, page.errors, figures, shot, layout)
