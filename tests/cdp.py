"""Headless Chromium driven over its DevTools protocol (websockets), for the report's browser tests.

`Browser(width, height)` starts Chromium on a free port with a fresh profile; `page.open(url)` loads a page and
collects console errors and uncaught exceptions; `page.js(expression)` evaluates JavaScript and returns the value;
`page.screenshot(path)` saves a PNG. Offline: nothing is downloaded.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws_url: str, width: int, height: int):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 1024 * 1024).__enter__()  # closed with the browser
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _note(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"log: {p['entry']['text']}")
        self.events.append(msg)

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._note(msg)

    def open(self, url: str, timeout: float = 30.0) -> float:
        """Navigate and wait for the load event; returns the seconds it took."""
        start = time.time()
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = start + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self._note(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time()))))
        return time.time() - start

    def js(self, expression: str, timeout: float = 30.0):
        res = self.call("Runtime.evaluate", timeout, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Poll `expression` until it is truthy; returns its value (AssertionError on timeout)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self, path: Path, clip_height: int | None = None) -> None:
        params = {"format": "png"}
        if clip_height:
            params["clip"] = {"x": 0, "y": 0, "width": self.js("window.innerWidth"), "height": clip_height,
                              "scale": 1}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))


class Browser:
    def __init__(self, width: int = 1400, height: int = 900):
        self.width, self.height = width, height
        self.profile = Path(tempfile.mkdtemp(prefix="emwb-cdp-"))
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools server")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])

    def page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as resp:  # noqa: S310
            targets = [t for t in json.loads(resp.read()) if t["type"] == "page"]
        return Page(targets[0]["webSocketDebuggerUrl"], self.width, self.height)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
