"""ComfyUI's own frontend (the one the server under test bundles: 1.27 with ComfyUI
0.3.64, 1.49 with 0.33) in headless Chromium, for host tests.

:func:`open_frontend` starts a browser on a server's page with what a user would see
recorded: ``window.alert``/``confirm`` calls, every toast (PrimeVue ``.p-toast-message``,
how the frontend shows "Alert"s such as "Invalid workflow against zod schema"), console
messages and uncaught exceptions.  Settings are written through the server's
``/settings`` route before the page loads (e.g. ``Comfy.VueNodes.Enabled`` for Nodes
2.0, ``Comfy.TutorialCompleted`` so no template browser opens over the canvas).
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import time
from typing import Iterator

from _chromium import DevTools, headless_page

READY_TIMEOUT_S = 180.0   # the frontend bundle is large; a busy 2-core machine is slow
# Settings every test page starts with (the server keeps settings between pages): the
# classic renderer, no first-run template browser, no release notices, no confirm on
# closing a workflow.
BASE_SETTINGS = {
    "Comfy.VueNodes.Enabled": False,   # the classic canvas renderer unless a test asks for Nodes 2.0
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ConfirmDelete": False,
    "Comfy.Window.UnloadConfirmation": False,
    "Comfy.Release.Timestamp": 0,
}

RECORDER = r"""
(() => {
  const seen = window.__pano360 = {alerts: [], toasts: []};
  window.alert = (m) => { seen.alerts.push(String(m)); };
  window.confirm = (m) => { seen.alerts.push("confirm: " + String(m)); return true; };
  const watch = () => new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (!(n instanceof Element)) continue;
      const found = n.matches(".p-toast-message") ? [n] : [...n.querySelectorAll(".p-toast-message")];
      for (const t of found) {
        const severity = [...t.classList].find((c) => c.startsWith("p-toast-message-") &&
          c !== "p-toast-message-content" && c !== "p-toast-message-enter-active") || "";
        seen.toasts.push({severity: severity.replace("p-toast-message-", ""), text: t.innerText});
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});
  if (document.documentElement) watch(); else document.addEventListener("readystatechange", watch, {once: true});
})();
"""

READY = ("!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph && "
         "Object.keys(window.LiteGraph.registered_node_types).length > 100 && window.app.extensionManager)")


class ComfyPage:
    """One ComfyUI frontend page: a :class:`DevTools` plus what the user saw."""

    def __init__(self, devtools: DevTools, url: str):
        self.devtools = devtools
        self.url = url

    def evaluate(self, expression: str, timeout: float = 30.0):
        return self.devtools.evaluate(expression, timeout=timeout)

    def wait_for(self, expression: str, timeout: float = 30.0):
        return self.devtools.wait_for(expression, timeout=timeout)

    @property
    def frontend_version(self) -> tuple[int, ...]:
        text = self.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || ''") or "0"
        return tuple(int(p) for p in text.split(".") if p.isdigit())

    def seen(self) -> dict:
        """``{"alerts": [...], "toasts": [{"severity", "text"}], "console": [(level, text)]}``."""
        seen = self.evaluate("JSON.stringify(window.__pano360)")
        out = json.loads(seen)
        out["console"] = self.devtools.console_messages()
        return out

    def clear_seen(self) -> None:
        self.evaluate("window.__pano360.alerts.length = 0; window.__pano360.toasts.length = 0; true")
        self.devtools.poll_events()
        self.devtools.events.clear()

    def dialogs(self) -> list[str]:
        """Texts of the open dialogs (PrimeVue ``.p-dialog``)."""
        return self.evaluate("[...document.querySelectorAll('.p-dialog')].map((d) => d.innerText)")

    def close_dialogs(self) -> None:
        self.evaluate("document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close')"
                      ".forEach((b) => b.click()); true")
        with contextlib.suppress(AssertionError):
            self.wait_for("!document.querySelector('.p-dialog')", timeout=10)

    def load_workflow(self, ui: dict, name: str = "workflow.json") -> None:
        """Load a UI workflow as opening a file does (missing node and model dialogs on)."""
        self.evaluate("(async () => { await window.app.loadGraphData(" + json.dumps(ui) + ", true, true, "
                      + json.dumps(name) + ", {showMissingNodesDialog: true, showMissingModelsDialog: true});"
                      " await new Promise((r) => setTimeout(r, 500)); return true; })()", timeout=120)

    def graph_to_prompt(self) -> tuple[dict, dict]:
        """(the API prompt "Queue" would send, the graph as the frontend serialises it)."""
        result = self.evaluate("(async () => { const p = await window.app.graphToPrompt();"
                               " return JSON.stringify({output: p.output, graph: window.app.graph.serialize()}); })()",
                               timeout=60)
        result = json.loads(result)
        return result["output"], result["graph"]

    def node_boxes(self) -> dict[int, tuple[float, float, float, float]]:
        """Each node's box on the canvas as the frontend lays it out: x, y (title bar top),
        width, height (title bar included)."""
        boxes = self.evaluate("JSON.stringify(window.app.graph._nodes.map((n) => {"
                              " const b = new Float32Array(4); n.getBounding(b); return [n.id, ...b]; }))")
        return {int(i): (x, y, w, h) for i, x, y, w, h in json.loads(boxes)}

    def screenshot_png(self, path: pathlib.Path) -> pathlib.Path:
        data = self.devtools.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def write_settings(client, settings: dict) -> None:
    """Store frontend settings on the server (what the settings dialog does)."""
    status, body = client.post_json("/settings", settings)
    if status != 200:
        raise RuntimeError(f"POST /settings: HTTP {status}: {body}")


@contextlib.contextmanager
def open_frontend(client, settings: dict | None = None, width: int = 1600, height: int = 1000) -> Iterator[ComfyPage]:
    """The server's frontend, ready, with ``settings`` (plus :data:`BASE_SETTINGS`) in force."""
    write_settings(client, {**BASE_SETTINGS, **(settings or {})})
    with headless_page(width, height) as devtools:
        devtools.call("Runtime.enable")
        devtools.call("Log.enable")
        devtools.call("Page.addScriptToEvaluateOnNewDocument", source=RECORDER)
        devtools.call("Page.navigate", url=client.url + "/")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not devtools.evaluate(READY, timeout=60.0):
            if time.monotonic() > deadline:
                raise AssertionError(f"the ComfyUI frontend did not come up in {READY_TIMEOUT_S} s at {client.url}")
            time.sleep(0.5)
        page = ComfyPage(devtools, client.url)
        time.sleep(1.0)   # extensions' setup() and the first draw
        page.close_dialogs()
        yield page
