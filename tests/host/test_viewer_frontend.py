"""The viewer extension inside ComfyUI's real frontend (headless Chromium), with the
classic canvas renderer and with Nodes 2.0 (the Vue node renderer, setting
``Comfy.VueNodes.Enabled``; default on new installs from frontend 1.41, opt-in before):
a graph built and queued in the browser runs Save 360° Image, the node's onExecuted
receives ``ui.pano360``, the viewer's DOM widget appears on the node, is visible on
screen and draws the saved file fetched through /view.

Frontend 1.27 (ComfyUI 0.3.64) has Nodes 2.0 only as an experiment that mounts no
custom DOM widget; there the viewer loads its file without error and the frontend's own
flat preview shows the image (the test asserts exactly that)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from _chromium import CHROMIUM  # noqa: E402
from frontend import open_frontend

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
  src.pos = [60, 100];
  const set = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
  set(src, "width", 256); set(src, "height", 128); set(src, "batch_size", 1); set(src, "color", 0xE61E1E);
  const save = LiteGraph.createNode("Pano360Save360Image");
  app.graph.add(save);
  save.pos = [420, 100];
  src.connect(0, save, 0);
  window.__save = save;
  app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; app.graph.setDirtyCanvas(true, true);
  await app.queuePrompt(0, 1);
  return true;
})()
"""
CANVAS = "window.__save.pano360Panel.root.querySelector('canvas')"
# Frontend release from which Nodes 2.0 mounts custom DOM widgets (default on new installs).
NODES_2_FRONTEND = (1, 41)


def _pack_problems(page) -> list:
    return [m for m in page.devtools.console_messages()
            if m[0] in ("error", "exception", "warning") and ("pano360" in m[1].lower() or "Three.js" in m[1])]


@pytest.mark.parametrize("nodes_2", [False, True], ids=["classic", "nodes-2.0"])
def test_viewer_widget_shows_the_saved_panorama(comfy_server, nodes_2, tmp_path):
    with open_frontend(comfy_server, {"Comfy.VueNodes.Enabled": nodes_2}, 1200, 900) as page:
        page.wait_for("window.app.extensions.some((e) => e.name === 'Pano360.Viewer360')", timeout=30)
        assert page.evaluate("!!window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled')") is nodes_2
        assert page.evaluate(BUILD_AND_QUEUE)
        page.wait_for("!!window.__save.pano360Panel", timeout=FRONTEND_TIMEOUT)
        # a DOM widget (what Nodes 2.0 can show), not a canvas-drawn one
        assert page.evaluate("window.__save.widgets.find((w) => w.name === 'pano360_viewer').element"
                             " === window.__save.pano360Panel.root")
        if nodes_2 and page.frontend_version < NODES_2_FRONTEND:
            page.wait_for("window.__save.pano360Panel.status !== 'loading'", timeout=30)
            assert page.evaluate("window.__save.pano360Panel.status") == "ready"
            assert page.evaluate("window.__save.pano360Panel.root.isConnected") is False  # not mounted by 1.27
            page.wait_for("[...document.querySelectorAll('img')].some((i) => i.src.includes('/view?') &&"
                          " i.src.includes('Pano360') && i.naturalWidth > 0)", timeout=30)   # the flat preview
            page.screenshot_png(tmp_path / "viewer-nodes2-experimental.png")
            assert _pack_problems(page) == []
            return
        page.wait_for(f"(() => {{ const c = {CANVAS}; return c && c.width > 16 && c.height > 16; }})()", timeout=30)
        page.wait_for(f"(() => {{ const r = {CANVAS}.getBoundingClientRect(); return r.width > 16 && r.height > 16"
                      " && r.right > 0 && r.bottom > 0 && r.left < innerWidth && r.top < innerHeight; })()", timeout=30)
        page.wait_for("window.__save.pano360Panel.status !== 'loading'", timeout=30)
        assert page.evaluate("window.__save.pano360Panel.status") == "ready"
        # the save node's ui.text: the flat panorama's scores (no seam, no pole detail)
        scores = page.evaluate("window.__save.pano360Panel.scores")
        assert scores.startswith("saved: seam 1.00 (seamless") and "smooth" in scores, scores
        url = page.evaluate("window.__save.pano360Panel.url")
        assert url.startswith("/api/view?") and "type=output" in url and "subfolder=Pano360" in url
        rect = page.evaluate(f"(() => {{ const r = {CANVAS}.getBoundingClientRect();"
                             " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
        # what is on screen at the viewer's centre is the viewer (not covered by the node's own DOM)
        assert page.evaluate(f"document.elementFromPoint({rect['x'] + rect['width'] / 2}, "
                             f"{rect['y'] + rect['height'] / 2}) === {CANVAS}")
        deadline = time.monotonic() + 20
        while True:
            img = page.devtools.screenshot(clip={"x": rect["x"] + rect["width"] / 2 - 2,
                                                 "y": rect["y"] + rect["height"] / 2 - 2, "width": 4, "height": 4})
            centre = img.reshape(-1, 3).astype(int).mean(0)
            if np.abs(centre - np.array(RED)).max() <= COLOUR_TOL or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        page.screenshot_png(tmp_path / f"viewer-{'nodes2' if nodes_2 else 'classic'}.png")
        assert np.abs(centre - np.array(RED)).max() <= COLOUR_TOL, centre
        assert _pack_problems(page) == []
