"""The 360° viewer in headless Chromium: forward shows the panorama's centre column, and a
real (DevTools-dispatched) mouse drag turns the view by fov/width degrees per pixel.

Needs Debian's `chromium` (`.ci/run` installs it); skips with the reason otherwise.
The page loads web/pano360_viewer_core.js exactly as ComfyUI serves it (ES module,
relative import of the vendored three.js) from a loopback http.server thread.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from pano360.pipelines.spherical_mp4 import save_360_video

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
websockets_sync = pytest.importorskip("websockets.sync.client", reason="websockets>=11 needed for DevTools")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`; .ci/run installs it)"
)

VIEW_W, VIEW_H = 400, 300
FOV = 90.0
# Colour distance allowed between the rendered centre pixel and the sector colour:
# sampling inside a flat sector is exact; the margin covers SwiftShader rounding.
COLOUR_TOL = 12
STARTUP_TIMEOUT = 15.0

# Longitude sectors of 45°, centred on multiples of 45° (pack convention: +lon = right).
SECTORS = {
    0: (230, 30, 30),      # forward: red
    45: (30, 200, 30),     # right: green
    -45: (30, 30, 230),    # left: blue
    90: (220, 30, 220),
    -90: (30, 210, 210),
    135: (120, 120, 120),
    -135: (160, 90, 20),
    180: (230, 230, 30),   # back: yellow
}
CAP = (255, 255, 255)      # latitude > 55°: white
CAP_LAT = 55.0


def _panorama(h=256, w=512) -> np.ndarray:
    lon = ((np.arange(w) + 0.5) / w - 0.5) * 360.0           # docs/conventions.md pixel centres
    lat = (0.5 - (np.arange(h) + 0.5) / h) * 180.0
    sector = (np.round(lon / 45.0).astype(int) * 45 + 180) % 360 - 180
    sector[sector == -180] = 180
    img = np.stack([np.array([SECTORS[int(s)] for s in sector], np.uint8)] * h)
    img[lat > CAP_LAT] = CAP
    img[lat < -CAP_LAT] = 0
    return img


PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;height:100%;overflow:hidden;background:#000}#v{width:100vw;height:100vh}
</style></head><body><div id="v"></div><script type="module">
import { createViewer } from "./web/pano360_viewer_core.js";
try {
  const viewer = createViewer(document.getElementById("v"), { preserveDrawingBuffer: true, pixelRatio: 1, view: { fov: FOV } });
  window.viewer = viewer;
  await viewer.load({ url: "./pano.png", kind: "image" });
  viewer.renderNow();
  window.__pano360Ready = true;
} catch (e) { window.__pano360Error = String((e && e.stack) || e); }
</script></body></html>
""".replace("FOV", str(FOV))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str):
        self.ws = websockets_sync.connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10)
        self.next_id = 0

    def call(self, method: str, timeout: float = 10.0, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            err = self.evaluate("window.__pano360Error || null")
            if err:
                raise AssertionError(f"viewer page failed: {err}")
            if self.evaluate(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def screenshot(self) -> np.ndarray:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def drag(self, start: tuple[int, int], end: tuple[int, int], steps: int = 8):
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


@pytest.fixture(scope="module")
def page():
    site = pathlib.Path(tempfile.mkdtemp(prefix="pano360_viewer_"))
    profile = pathlib.Path(tempfile.mkdtemp(prefix="pano360_chromium_"))
    (site / "index.html").write_text(PAGE)
    Image.fromarray(_panorama()).save(site / "pano.png")
    save_360_video(np.stack([_panorama()] * 4), site / "pano.mp4", 4, 12)
    os.symlink(ROOT / "web", site / "web")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(site)))
    server.timeout = 1.0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--force-device-scale-factor=1", f"--window-size={VIEW_W},{VIEW_H}",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.load(r)
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        devtools = _DevTools(ws_url)
        devtools.call("Page.enable")
        devtools.call("Emulation.setDeviceMetricsOverride", width=VIEW_W, height=VIEW_H, deviceScaleFactor=1,
                      mobile=False)
        devtools.call("Page.navigate", url=f"http://127.0.0.1:{server.server_address[1]}/index.html")
        devtools.wait_for("window.__pano360Ready === true")
        if not devtools.evaluate("!!document.querySelector('canvas').getContext('webgl2')"
                                 " || !!document.querySelector('canvas').getContext('webgl')"):
            pytest.skip("Chromium has no WebGL here (SwiftShader unavailable)")
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        server.server_close()
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)


def _centre(img: np.ndarray) -> np.ndarray:
    h, w, _ = img.shape
    return img[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, 3).astype(int).mean(0)


def _assert_colour(img, expected, what):
    got = _centre(img)
    assert np.abs(got - np.array(expected)).max() <= COLOUR_TOL, f"{what}: centre is {got.round()}, expected {expected}"


def _reset(page):
    page.evaluate("window.viewer.setView({yaw: 0, pitch: 0, fov: %s}); window.viewer.renderNow(); true" % FOV)


def test_forward_is_the_centre_column(page):
    _reset(page)
    img = page.screenshot()
    assert img.shape[:2] == (VIEW_H, VIEW_W)
    _assert_colour(img, SECTORS[0], "initial view")
    # The right edge of a 90° view is at +45° longitude: green sector.
    h, w, _ = img.shape
    right = img[h // 2, w - 3].astype(int)
    assert np.abs(right - np.array(SECTORS[45])).max() <= COLOUR_TOL, right


@pytest.mark.parametrize("dx, yaw, colour_key", [(-200, 45.0, 45), (200, -45.0, -45)])
def test_horizontal_drag_turns_by_fov_per_width(page, dx, yaw, colour_key):
    """Grabbing the panorama: dragging left by 200 px of a 400 px, 90° view turns 45° right."""
    _reset(page)
    x0 = VIEW_W // 2 - dx // 2
    page.drag((x0, VIEW_H // 2), (x0 + dx, VIEW_H // 2))
    page.wait_for(f"Math.abs(window.viewer.getView().yaw - ({yaw})) < 0.01", timeout=5)
    time.sleep(0.2)  # let the requested animation frame draw
    page.evaluate("window.viewer.renderNow(); true")
    _assert_colour(page.screenshot(), SECTORS[colour_key], f"after drag dx={dx}")


def test_vertical_drag_looks_up_to_the_cap(page):
    _reset(page)
    vfov = 2 * math.degrees(math.atan(math.tan(math.radians(FOV / 2)) * VIEW_H / VIEW_W))
    dy = 260
    page.drag((VIEW_W // 2, 20), (VIEW_W // 2, 20 + dy))
    expected_pitch = dy * vfov / VIEW_H
    page.wait_for(f"Math.abs(window.viewer.getView().pitch - {expected_pitch}) < 0.01", timeout=5)
    page.evaluate("window.viewer.renderNow(); true")
    assert expected_pitch > CAP_LAT
    _assert_colour(page.screenshot(), CAP, "after dragging down")


def test_wheel_zooms_in(page):
    _reset(page)
    page.call("Input.dispatchMouseEvent", type="mouseWheel", x=VIEW_W // 2, y=VIEW_H // 2, deltaX=0, deltaY=-300)
    page.wait_for(f"window.viewer.getView().fov < {FOV - 1}", timeout=5)
    fov = page.evaluate("window.viewer.getView().fov")
    assert fov == pytest.approx(FOV * math.exp(-300 * 0.001), rel=1e-6)


def test_video_loads_plays_and_pauses(page):
    if not page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=avc1.640015')"):
        pytest.skip("this Chromium build has no H.264 decoder")
    page.evaluate("window.viewer.load({url: './pano.mp4', kind: 'video'}).then(() => true)")
    assert page.evaluate("window.viewer.isVideo()")
    page.evaluate("window.viewer.play().then(() => true)")
    page.wait_for("window.viewer.isPlaying()", timeout=5)
    page.evaluate("window.viewer.togglePlay().then(() => true)")
    assert page.evaluate("window.viewer.isPlaying()") is False
    _reset(page)
    _assert_colour(page.screenshot(), SECTORS[0], "video, forward")
    # Back to the still for any later test.
    page.evaluate("window.viewer.load({url: './pano.png', kind: 'image'}).then(() => true)")


def test_texture_mapping_follows_the_pack_convention(page):
    """directionToTexCoord: +x (right) is longitude +90° -> s = 0.75; up is the top row."""
    got = page.evaluate(
        "import('./web/pano360_viewer_core.js').then(m => [m.directionToTexCoord(1, 0, 0),"
        " m.directionToTexCoord(0, 0, 1), m.directionToTexCoord(0, 1, 0), m.directionToTexCoord(-1, 0, -1)])"
    )
    assert got[0] == pytest.approx({"s": 0.75, "t": 0.5})
    assert got[1] == pytest.approx({"s": 0.5, "t": 0.5})
    assert got[2]["t"] == pytest.approx(1.0)
    assert got[3]["s"] == pytest.approx(1 / 8)  # longitude -135°
