"""The viewer extension inside ComfyUI's real frontend (headless Chromium): a graph built
and queued in the browser runs Save 360° Image, the node's onExecuted receives
``ui.pano360``, the viewer widget appears and draws the saved file fetched through /view."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("comfy_env", reason="tests/host infrastructure (branch host) not present")
pytest.importorskip("websockets.sync.client", reason="websockets>=11 needed for DevTools")

from _chromium import CHROMIUM, BrowserUnavailable, headless_page  # noqa: E402

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")

FRONTEND_TIMEOUT = 90.0
RED = (0xE6, 0x1E, 0x1E)
# A flat colour through the viewer shader and SwiftShader: exact up to rounding.
COLOUR_TOL = 12

BUILD_AND_QUEUE = """
(async () => {
  app.graph.clear();
  const src = LiteGraph.createNode("EmptyImage");
  app.graph.add(src);
  const set = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
  set(src, "width", 256); set(src, "height", 128); set(src, "batch_size", 1); set(src, "color", 0xE61E1E);
  const save = LiteGraph.createNode("Pano360Save360Image");
  app.graph.add(save);
  save.pos = [400, 100];
  src.connect(0, save, 0);
  window.__save = save;
  await app.queuePrompt(0, 1);
  return true;
})()
"""


def test_viewer_widget_shows_the_saved_panorama(comfy_server):
    try:
        with headless_page(1200, 900) as page:
            page.call("Page.navigate", url=comfy_server.url + "/")
            page.wait_for("!!(window.app && window.app.graph && window.LiteGraph && window.app.extensions)",
                          timeout=FRONTEND_TIMEOUT)
            page.wait_for("window.app.extensions.some((e) => e.name === 'Pano360.Viewer360')", timeout=30)
            # A first start opens the template browser over the canvas: close any dialog.
            page.evaluate("document.querySelectorAll('.p-dialog-close-button').forEach((b) => b.click()); true")
            page.wait_for("!document.querySelector('.p-dialog')", timeout=10)
            assert page.evaluate(BUILD_AND_QUEUE)
            page.wait_for("!!window.__save.pano360Panel", timeout=FRONTEND_TIMEOUT)
            page.wait_for("(() => { const c = window.__save.pano360Panel.root.querySelector('canvas');"
                          " return c && c.width > 16 && c.height > 16; })()", timeout=30)
            page.wait_for(
                "(() => { const c = window.__save.pano360Panel.root.querySelector('canvas');"
                " const r = c.getBoundingClientRect(); return r.width > 16 && r.height > 16; })()", timeout=30)
            rect = page.evaluate(
                "(() => { const r = window.__save.pano360Panel.root.querySelector('canvas').getBoundingClientRect();"
                " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
            page.wait_for("window.__save.pano360Panel.status !== 'loading'", timeout=30)
            assert page.evaluate("window.__save.pano360Panel.status") == "ready"
            # the save node's ui.text: the flat panorama's scores (no seam, no pole detail)
            scores = page.evaluate("window.__save.pano360Panel.scores")
            assert scores.startswith("saved: seam 1.00 (seamless") and "smooth" in scores, scores
            url = page.evaluate("window.__save.pano360Panel.url")
            assert url.startswith("/api/view?") and "type=output" in url and "subfolder=Pano360" in url
            deadline = time.monotonic() + 20
            while True:
                img = page.screenshot(clip={"x": rect["x"] + rect["width"] / 2 - 2, "y": rect["y"] + rect["height"] / 2 - 2,
                                            "width": 4, "height": 4})
                centre = img.reshape(-1, 3).astype(int).mean(0)
                if np.abs(centre - np.array(RED)).max() <= COLOUR_TOL or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert np.abs(centre - np.array(RED)).max() <= COLOUR_TOL, centre
    except BrowserUnavailable as err:
        pytest.skip(str(err))
