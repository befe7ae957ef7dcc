"""Headless Chromium driven over the Chrome DevTools Protocol (for the viewer tests).

``headless_page(width, height)`` starts Debian's ``chromium`` with SwiftShader WebGL and a
throw-away profile, and yields a :class:`DevTools` client on its page; the browser is
always terminated.  ``CHROMIUM`` is None when no browser is installed (tests skip).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Iterator

import numpy as np
from PIL import Image

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
STARTUP_TIMEOUT = 15.0
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--force-device-scale-factor=1",
]


class BrowserUnavailable(RuntimeError):
    """Chromium could not be started (the caller skips)."""


class DevTools:
    """A minimal DevTools client over one page's websocket.

    Events (messages without an ``id``: console output, exceptions, network responses of
    the enabled domains) that arrive while waiting for a reply are kept in ``events``.
    """

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 10.0, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "id" not in msg:
                self.events.append(msg)
            elif msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def poll_events(self) -> list[dict]:
        """Read the events that arrived so far (without waiting) and return all kept ones."""
        while True:
            try:
                msg = json.loads(self.ws.recv(timeout=0.05))
            except TimeoutError:
                return self.events
            if "id" not in msg:
                self.events.append(msg)

    def console_messages(self) -> list[tuple[str, str]]:
        """``(level, text)`` of every console call, uncaught exception and browser log entry
        seen so far (needs ``Runtime.enable`` and ``Log.enable``)."""
        out = []
        for event in self.poll_events():
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                out.append((params.get("type", ""), text))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(("exception", str(details.get("exception", {}).get("description") or details.get("text"))))
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                out.append((entry.get("level", ""), f"{entry.get('text', '')} {entry.get('url', '')}".strip()))
        return out

    def evaluate(self, expression: str, timeout: float = 10.0):
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page exception: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = STARTUP_TIMEOUT, error_expression: str | None = None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if error_expression:
                err = self.evaluate(error_expression)
                if err:
                    raise AssertionError(f"page failed: {err}")
            if self.evaluate(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {expression}")

    def screenshot(self, clip: dict | None = None) -> np.ndarray:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8):
        x0, y0 = start
        x1, y1 = end
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", buttons=1, clickCount=1)
        for i in range(1, steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1, button="left", buttons=0, clickCount=1)

    def close(self):
        self.ws.close()


@contextlib.contextmanager
def headless_page(width: int, height: int) -> Iterator[DevTools]:
    """A fresh headless Chromium showing about:blank at ``width`` x ``height`` CSS pixels."""
    if CHROMIUM is None:
        raise BrowserUnavailable("headless Chromium not installed (Debian package `chromium`; .ci/run installs it)")
    profile = pathlib.Path(tempfile.mkdtemp(prefix="pano360_chromium_"))
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserUnavailable(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.load(r)
        devtools = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        devtools.call("Page.enable")
        devtools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
