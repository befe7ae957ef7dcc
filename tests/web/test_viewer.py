"""The 360° viewer in headless Chromium: forward shows the panorama's centre column, and a
real (DevTools-dispatched) mouse drag turns the view by fov/width degrees per pixel.

Needs Debian's `chromium` (`.ci/run` installs it); skips with the reason otherwise.
The page loads web/pano360_viewer_core.js exactly as ComfyUI serves it (ES module,
relative import of the vendored three.js) from a loopback http.server thread.
"""

from __future__ import annotations

import functools
import http.server
import math
import os
import pathlib
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pano360.media.spherical_mp4 import save_360_video

pytest.importorskip("websockets.sync.client", reason="websockets>=11 needed for DevTools")

from _chromium import CHROMIUM, BrowserUnavailable, headless_page  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`; .ci/run installs it)"
)

VIEW_W, VIEW_H = 400, 300
FOV = 90.0
# Colour distance allowed between the rendered centre pixel and the sector colour:
# sampling inside a flat sector is exact; the margin covers SwiftShader rounding.
COLOUR_TOL = 12

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


# Files whose name starts with "slow" are served this much later (a slow network).
SLOW_DELAY_S = 1.0
# A flat colour that appears nowhere in _panorama().
OTHER = (250, 140, 0)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.lstrip("/.").startswith("slow"):
            time.sleep(SLOW_DELAY_S)
        return super().do_GET()


@pytest.fixture(scope="module")
def site():
    """Base URL of a loopback site serving the test page, the panoramas and web/."""
    site = pathlib.Path(tempfile.mkdtemp(prefix="pano360_viewer_"))
    (site / "index.html").write_text(PAGE)
    Image.fromarray(_panorama()).save(site / "pano.png")
    Image.fromarray(_panorama()).save(site / "slow_pano.png")
    Image.fromarray(np.full((64, 128, 3), OTHER, np.uint8)).save(site / "other.png")
    save_360_video(np.stack([_panorama()] * 4), site / "pano.mp4", 4, 12)
    os.symlink(ROOT / "web", site / "web")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(site, ignore_errors=True)


@pytest.fixture(scope="module")
def page(site):
    url, _ = site
    try:
        with headless_page(VIEW_W, VIEW_H) as devtools:
            devtools.call("Page.navigate", url=f"{url}/index.html")
            devtools.wait_for("window.__pano360Ready === true", error_expression="window.__pano360Error || null")
            yield devtools
    except BrowserUnavailable as err:
        pytest.skip(str(err))


# Pages that already have a three.js: one marked by another copy (window.__THREE__, what
# the ComfyUI frontend's bundled three.js leaves), one exposing it as window.THREE.
THREE_PAGES = {
    "marked": """<!doctype html><script>window.__THREE__ = "999";</script><script type="module">
import { THREE_SOURCE } from "./web/pano360_viewer_core.js";
window.result = {source: THREE_SOURCE, mark: window.__THREE__};
</script>""",
    "global": """<!doctype html><script type="module">
const own = await import("./web/vendor/three/three.module.min.js");
window.THREE = {...own, fromPage: true};
const { THREE_SOURCE } = await import("./web/pano360_viewer_core.js");
window.result = {source: THREE_SOURCE, mark: window.__THREE__};
</script>""",
    "alone": """<!doctype html><script type="module">
import { THREE_SOURCE } from "./web/pano360_viewer_core.js";
window.result = {source: THREE_SOURCE, mark: window.__THREE__ === undefined ? null : window.__THREE__};
</script>""",
}


@pytest.mark.parametrize("kind, source, mark", [("marked", "vendored", "999"), ("global", "page", "170"),
                                                ("alone", "vendored", None)])
def test_three_js_is_the_pages_or_its_own_without_a_duplicate_warning(site, kind, source, mark):
    """The viewer uses window.THREE when the page has one, else the vendored copy, which
    loads without three.js's "Multiple instances" warning and leaves the page's mark as it
    was (so a copy loaded later does not warn either)."""
    url, folder = site
    (folder / f"three_{kind}.html").write_text(THREE_PAGES[kind])
    with headless_page(VIEW_W, VIEW_H) as devtools:
        devtools.call("Runtime.enable")
        devtools.call("Page.navigate", url=f"{url}/three_{kind}.html")
        devtools.wait_for("!!window.result", timeout=15)
        assert devtools.evaluate("window.result") == {"source": source, "mark": mark}
        messages = devtools.console_messages()
    assert not [m for m in messages if "Multiple instances of Three.js" in m[1] or m[0] == "exception"], messages


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


def test_a_slow_earlier_load_does_not_replace_a_later_one(page):
    """Clicking Next twice quickly: the first item arrives last but the second stays shown."""
    _reset(page)
    first = page.evaluate(
        "window.__first = window.viewer.load({url: './slow_pano.png', kind: 'image'});"
        " window.viewer.load({url: './other.png', kind: 'image'})"
        ".then(shown => window.__first.then(firstShown => [firstShown, shown]))"
    )
    assert first == [False, True]
    page.evaluate("window.viewer.renderNow(); true")
    _assert_colour(page.screenshot(), OTHER, "after the slow first load finished")
    page.evaluate("window.viewer.load({url: './pano.png', kind: 'image'}).then(() => true)")
