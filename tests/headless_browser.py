"""Open a local HTML file in a real headless Chromium and read back what it rendered.

Talks the Chrome DevTools Protocol over a websocket (no browser-automation dependency): loads the page,
waits for its load event, evaluates a probe script in the page, collects console errors and failed
resource loads, and takes a full-page screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-extensions", "--disable-sync", "--mute-audio",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def find_browser() -> str:
    """The Chromium binary; CI (SENTIDISTILL_REQUIRE_BROWSER=1) fails without one, elsewhere the test skips."""
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe:
        return exe
    msg = "no headless Chromium found (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("SENTIDISTILL_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


class _Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.time(), 0.1)))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(method)

    def wait_event(self, method: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"no {method} within {timeout}s")
            self.events.append(json.loads(self.ws.recv(timeout=max(deadline - time.time(), 0.1))))


def render(html: Path, probe_js: str, screenshot: Path, width: int = 1280, height: int = 1600) -> dict[str, Any]:
    """Load `html`, return {"probe": <probe_js result, JSON-decoded>, "errors": [...]}; write a PNG screenshot."""
    exe = find_browser()
    with tempfile.TemporaryDirectory(prefix="sentidistill-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.time() > deadline:
                    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                    raise RuntimeError(f"chromium did not start its DevTools endpoint: {err}")
                time.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = _Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                page.call(domain)
            page.call("Page.navigate", url=html.resolve().as_uri())
            page.wait_event("Page.loadEventFired")
            result = page.call("Runtime.evaluate", expression=probe_js, returnByValue=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"probe script failed: {result['exceptionDetails']}")
            shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            errors = [e["params"]["entry"]["text"] for e in page.events
                      if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
            errors += [str(e["params"]["exceptionDetails"].get("text")) for e in page.events
                       if e.get("method") == "Runtime.exceptionThrown"]
            page.ws.close()
            return {"probe": json.loads(result["result"]["value"]), "errors": errors}
        finally:
            proc.terminate()  # chromium's own children exit with it
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
