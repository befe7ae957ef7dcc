// ComfyUI frontend extension: an interactive 360° viewer on Pano360's output and preview
// nodes.  The Python nodes save files (output or temp folder) and return
//   ui.pano360 = [{filename, subfolder, type, kind: "image"|"video", stereo}]
// which arrives here in onExecuted; the viewer loads the file through ComfyUI's /view
// route (never base64), so large panoramas and videos stream like any other output.
// Save nodes also return ui.text = [line]: the result's seam/pole scores, shown under the view.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createViewer } from "./pano360_viewer_core.js";

const VIEWER_NODES = new Set(["Pano360Save360Video", "Pano360Save360Image", "Pano360Preview360"]);
const MIN_HEIGHT = 260;
const FLAT_PREVIEW_ROOM = 200; // px left for the usual image/video preview of the "images" entry

function viewUrl(item) {
  const params = new URLSearchParams({
    filename: item.filename,
    subfolder: item.subfolder || "",
    type: item.type || "output",
    rand: String(Math.random()),
  });
  return api.apiURL(`/view?${params.toString()}`);
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.style.cssText = "font:12px sans-serif;padding:1px 6px;cursor:pointer";
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function buildPanel(node) {
  const root = document.createElement("div");
  root.style.cssText = `display:flex;flex-direction:column;width:100%;height:100%;min-height:${MIN_HEIGHT}px;background:#111`;
  const stage = document.createElement("div");
  stage.style.cssText = "flex:1;position:relative;min-height:0";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:4px;align-items:center;padding:2px;color:#ccc;font:11px sans-serif";
  const label = document.createElement("span");
  label.style.cssText = "margin-left:auto;white-space:nowrap";
  const scores = document.createElement("div");
  scores.className = "pano360-scores";
  scores.style.cssText = "display:none;padding:2px 4px;color:#ccc;font:11px sans-serif;white-space:pre-line";
  root.append(stage, bar, scores);

  const state = { items: [], index: 0, status: "empty", url: null, seq: 0 };
  const viewer = createViewer(stage, {
    onViewChange: (v) => { label.textContent = `yaw ${v.yaw.toFixed(0)}° pitch ${v.pitch.toFixed(0)}° fov ${v.fov.toFixed(0)}°`; },
  });
  const play = button("⏯", "Play / pause (or double-click the view)", () => viewer.togglePlay());
  const prev = button("◀", "Previous item", () => show(state.index - 1));
  const next = button("▶", "Next item", () => show(state.index + 1));
  const reset = button("⟲", "Look forward (yaw 0, pitch 0)", () => viewer.setView({ yaw: 0, pitch: 0, fov: 90 }));
  bar.append(play, prev, next, reset, label);

  async function show(i) {
    if (!state.items.length) return;
    state.index = (i + state.items.length) % state.items.length;
    const item = state.items[state.index];
    const multi = state.items.length > 1;
    prev.style.display = next.style.display = multi ? "" : "none";
    play.style.display = item.kind === "video" ? "" : "none";
    state.url = viewUrl(item);
    state.status = "loading";
    const seq = ++state.seq; // a later show() (Next clicked again, a new run) supersedes this one
    try {
      const shown = await viewer.load({ url: state.url, kind: item.kind, stereo: item.stereo || "mono" });
      if (!shown || seq !== state.seq) return;
      state.status = "ready";
      if (item.kind === "video") await viewer.play().catch(() => {});
    } catch (err) {
      if (seq !== state.seq) return;
      state.status = `error: ${err.message || err}`;
      label.textContent = String(err.message || err);
      console.error("[Pano360]", err);
    }
  }

  return {
    root,
    viewer,
    setItems(items) { state.items = items; return show(0); },
    setScores(text) { scores.textContent = text || ""; scores.style.display = text ? "" : "none"; },
    get scores() { return scores.textContent; },
    get status() { return state.status; },   // "empty" | "loading" | "ready" | "error: ..."
    get url() { return state.url; },
  };
}

app.registerExtension({
  name: "Pano360.Viewer360",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VIEWER_NODES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const items = message?.pano360;
      if (!Array.isArray(items) || items.length === 0) return result;
      if (!this.pano360Panel) {
        this.pano360Panel = buildPanel(this);
        this.addDOMWidget("pano360_viewer", "pano360_viewer", this.pano360Panel.root, {
          serialize: false,
          hideOnZoom: false,
          getMinHeight: () => MIN_HEIGHT,
        });
        // Room for the widgets, the viewer and the frontend's own flat preview below it.
        const [w, h] = this.size;
        const needed = this.computeSize()[1] + FLAT_PREVIEW_ROOM;
        this.setSize([Math.max(w, 360), Math.max(h, needed)]);
      }
      this.pano360Panel.setScores(Array.isArray(message?.text) ? message.text.join("\n") : "");
      this.pano360Panel.setItems(items);
      app.graph?.setDirtyCanvas(true, true);
      return result;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.pano360Panel?.viewer.dispose();
      this.pano360Panel = null;
      return onRemoved?.apply(this, arguments);
    };
  },
});
