"""The workflow tools and the bundled workflows against ComfyUI's own frontend (the one the
server under test bundles: 1.27 with 0.3.64, 1.49 with 0.33) in headless Chromium.

- Every bundled UI workflow (``workflows/*.json``, whatever exists) loads as a user
  opening it would: no alert or error/warning toast, no missing node type, no
  overlapping nodes, no pack-related console error; the only complaints are the model
  and input files this test server lacks, and the download prompt offers exactly the
  public model files (``client/model_sources.py``).  A screenshot per workflow is saved
  under the test's temp folder (and ``$PANO360_SCREENSHOTS`` if set) for a person to
  look at.  ``graphToPrompt`` (what "Run" sends) gives back the API twin.
- ``python -m pano360 workflows build --server <this server>`` writes UI files that this
  frontend reads back as their API twins, and our ``ui_to_api`` of the graph the
  frontend serialises gives the same prompt (core graphs with seeds, uploads, titles;
  on 0.33 also dynamic combos, autogrow and new optional inputs).
- The widgets the frontend creates for every node type are the ones ``client.schema``
  predicts (``widgets_values`` layout), except for nodes whose widgets come from the
  frontend's own extensions (listed below).
- The template thumbnails are served where both frontends fetch them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil

import pytest

from _chromium import CHROMIUM  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)
import comfy_env
from frontend import open_frontend

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
UI_FILES = sorted(p for p in WORKFLOWS.glob("*.json") if (WORKFLOWS / "api" / p.name).is_file())
COMFYUI_VERSION = comfy_env.DETECTED_VERSION   # set by conftest.py before collection


def _min_comfyui(name: str) -> tuple:
    """The oldest ComfyUI a bundled workflow runs on (``client/workflows_cli.MIN_COMFYUI``)."""
    from pano360.client.workflows_cli import min_comfyui

    return min_comfyui(name)[0]


# Workflows for a newer ComfyUI (the LTX-2.3 one) are deselected on older hosts, where
# test_workflows_host.py checks that POST /prompt refuses them for their missing node types.
UI_PARAMS = [pytest.param(p, id=p.stem, marks=pytest.mark.comfy_min_version(_min_comfyui(p.stem))) for p in UI_FILES]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")

# Core-only graphs covering what the converter must get right: a seed with its
# control widget, an upload widget, combos, optional inputs, several outputs, a title.
CORE_WORKFLOWS = {
    "txt2img": {
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 4, "cfg": 7.5, "sampler_name": "euler",
                                                    "scheduler": "karras", "denoise": 1.0, "model": ["4", 0],
                                                    "positive": ["6", 0], "negative": ["7", 0],
                                                    "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 256, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a city, 360 panorama", "clip": ["4", 1]},
              "_meta": {"title": "Positive prompt"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "pano"}},
    },
    "custom_sampling_and_upload": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "3": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "4": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 64,
                                                      "height": 32, "crop": "center"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "up"}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    },
}
_FRAMES = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 4, "color": 0}}
# Saving a video: a plain combo pair in 0.3.64, nested dynamic combos (and CreateVideo's
# new optional bit_depth) in 0.33.
VIDEO_0_3 = {"1": _FRAMES, "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
             "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "v", "format": "mp4",
                                                         "codec": "h264"}}}
VIDEO_0_33 = {"1": _FRAMES, "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0, "bit_depth": 10}},
              "3": {"class_type": "SaveVideo", "inputs": {
                  "video": ["2", 0], "filename_prefix": "v", "format": "mkv", "format.codec": "h264",
                  "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 20.0,
                  "format.codec.encoding.color_space": "sRGB", "codec": "auto"}}}
DYNAMIC_0_33 = {
    "1": _FRAMES, "2": {**_FRAMES, "inputs": {**_FRAMES["inputs"], "color": 255}},
    "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0]}},
    "4": {"class_type": "ResizeImageMaskNode", "inputs": {"input": ["3", 0], "resize_type": "scale by multiplier",
                                                          "resize_type.multiplier": 2.0, "scale_method": "area"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}},
}
# Nodes whose widgets the frontend's own extensions add or replace (3D viewers, webcam,
# recorder, refresh buttons, crop and compare components, custom combo options): their
# widgets_values are not the schema's, for the frontend as for these tools.
FRONTEND_EXTENSION_WIDGETS = frozenset({
    "Load3D", "Load3DAnimation", "Preview3D", "Preview3DAnimation", "SaveGLB", "WebcamCapture", "RecordAudio",
    "LoadImageOutput", "CustomCombo", "ImageCompare", "ImageCropV2"})


def core_workflows(version: tuple) -> dict:
    out = dict(CORE_WORKFLOWS)
    if version >= (0, 33):
        out.update(video=VIDEO_0_33, dynamic_inputs=DYNAMIC_0_33)
    else:
        out.update(video=VIDEO_0_3)
    return out


def _bundled() -> dict:
    """The API twins of the bundled workflows this host runs."""
    return {p.stem: json.loads((WORKFLOWS / "api" / p.name).read_text()) for p in UI_FILES
            if (COMFYUI_VERSION or (0,)) >= _min_comfyui(p.stem)}


def _without_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


@pytest.fixture(scope="module")
def page(comfy_server):
    with open_frontend(comfy_server) as page:
        yield page


# Nodes 2.0 (the Vue node renderer) is a supported mode from frontend 1.41 (ComfyUI 0.33
# ships 1.49); frontend 1.27 (ComfyUI 0.3.64) has it only as an unfinished experiment.
NODES_2_FRONTEND = (1, 41)
RENDERERS = ["classic", "nodes-2.0"] if (COMFYUI_VERSION or (0,)) >= (0, 33) else ["classic"]


@pytest.fixture(scope="module", params=RENDERERS)
def any_page(request, comfy_server, page):
    """The classic renderer (the ``page`` fixture), then (ComfyUI >= 0.33) Nodes 2.0."""
    if request.param == "classic":
        yield page
        return
    with open_frontend(comfy_server, {"Comfy.VueNodes.Enabled": True}) as vue_page:
        assert vue_page.frontend_version >= NODES_2_FRONTEND, vue_page.frontend_version
        yield vue_page


@pytest.fixture(scope="module")
def schemas(comfy_server):
    from pano360.client.schema import SchemaSet

    return SchemaSet([comfy_server.object_info()])


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory, comfy_version):
    name = f"frontend-screenshots-{'.'.join(map(str, comfy_version))}"
    folder = tmp_path_factory.mktemp(name)
    yield folder
    keep = os.environ.get("PANO360_SCREENSHOTS")
    if keep:
        shutil.copytree(folder, pathlib.Path(keep) / name, dirs_exist_ok=True)


def _check_round_trip(page, schemas, api: dict, ui: dict, name: str) -> None:
    from pano360.client.convert import ui_to_api

    page.load_workflow(ui, f"{name}.json")
    page.close_dialogs()
    prompt, graph = page.graph_to_prompt()
    assert _without_meta(prompt) == _without_meta(api)
    titles = {k: v["_meta"]["title"] for k, v in api.items() if "_meta" in v}
    assert {k: prompt[k]["_meta"]["title"] for k in titles} == titles
    # and our UI -> API of the frontend's own serialisation of the same graph
    assert _without_meta(ui_to_api(graph, schemas)) == _without_meta(prompt)


@pytest.mark.parametrize("name", ["txt2img", "custom_sampling_and_upload", "video", "dynamic_inputs"])
def test_frontend_reads_our_ui_files_as_their_api_twins(page, schemas, comfy_version, name):
    from pano360.client.convert import api_to_ui
    from pano360.client.validate import errors_only, validate_prompt

    workflows = core_workflows(comfy_version)
    if name not in workflows:   # a 0.33-only graph on 0.3.64: the same check on the plain video graph
        name = "video"
    api = workflows[name]
    assert errors_only(validate_prompt(api, schemas)) == []
    _check_round_trip(page, schemas, api, api_to_ui(api, schemas, name=name), name)


def test_build_against_the_live_server_reproduces_every_api_twin(page, schemas, comfy_server, tmp_path):
    """``workflows build --server`` (this server's /object_info), then each built UI file
    loaded in this server's frontend gives back its API twin."""
    from pano360.client import workflows_cli

    (tmp_path / "api").mkdir()
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        shutil.copy(path, tmp_path / "api" / path.name)
    parser = argparse.ArgumentParser()
    workflows_cli.add_arguments(parser)
    assert workflows_cli.run(parser.parse_args(["build", "--dir", str(tmp_path), "--server", comfy_server.url])) == 0
    assert workflows_cli.run(parser.parse_args(["check", "--dir", str(tmp_path), "--server", comfy_server.url])) == 0
    for name, api in _bundled().items():
        ui = json.loads((tmp_path / f"{name}.json").read_text())
        _check_round_trip(page, schemas, api, ui, name)


# What frontend 1.49 scans as a model file name (isModelFileName in its settingStore bundle).
FRONTEND_MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".onnx", ".gguf")


def _overlaps(boxes: dict) -> list:
    items = sorted(boxes.items())
    found = []
    for i, (a, (ax, ay, aw, ah)) in enumerate(items):
        for b, (bx, by, bw, bh) in items[i + 1:]:
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append((a, b))
    return found


# What marks a console message as the pack's: its scripts (served under
# /extensions/pano360/, in stacks and URLs), its log prefix, or three.js's duplicate-copy
# warning (the viewer vendors three.js).  Not the pack's: the frontend's requests to the
# outside world this offline test blocks (model file sizes, the node registry, which
# 1.49 asks about every custom node type with an error card).
PACK_MARKS = ("/extensions/pano360/", "[Pano360]", "Multiple instances of Three.js")


def _graph_screenshot(page, path: pathlib.Path) -> None:
    """The graph from its top-left corner, zoomed out as far as the canvas still draws text."""
    page.evaluate("(async () => { app.canvas.ds.scale = 0.65; app.canvas.ds.offset = [90, 140];"
                  " app.graph.setDirtyCanvas(true, true); await new Promise((r) => setTimeout(r, 300)); return true; })()")
    page.screenshot_png(path)


def _pack_console_problems(messages) -> list:
    return [m for m in messages if m[0] in ("error", "exception", "warning", "assert")
            and any(mark in m[1] for mark in PACK_MARKS)]


@pytest.mark.parametrize("ui_file", UI_PARAMS)
def test_bundled_ui_workflow_loads_clean(any_page, schemas, comfy_version, screenshots, ui_file):
    """With the classic renderer and with Nodes 2.0 (node sizes differ between them)."""
    from pano360.client.model_sources import PUBLIC_MODELS
    from pano360.client.validate import models_needed

    page = any_page
    mode = "nodes2" if page.evaluate("!!window.app.ui.settings.getSettingValue('Comfy.VueNodes.Enabled')") else "classic"
    screenshots = screenshots / mode
    screenshots.mkdir(exist_ok=True)
    api = json.loads((WORKFLOWS / "api" / ui_file.name).read_text())
    ui = json.loads(ui_file.read_text())
    page.close_dialogs()  # nothing left open by an earlier workflow's failure
    page.clear_seen()
    page.load_workflow(ui, ui_file.name)
    shot = page.screenshot_png(screenshots / f"{ui_file.stem}.png")
    seen = page.seen()
    assert seen["alerts"] == [] and seen["toasts"] == [], seen
    assert page.evaluate("window.app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type])"
                         ".map((n) => n.type)") == []
    needed = models_needed(api, schemas)
    # one entry per file: two loaders of one file (Flux's and CogVideoX's T5) are one download
    public = sorted({f"{n.folder} / {n.filename}" for n in needed if n.filename in PUBLIC_MODELS})
    if page.frontend_version < (1, 40):
        # 1.27: the Missing Models dialog is the download prompt, listing exactly the public files
        dialogs = page.dialogs()
        if public:
            assert len(dialogs) == 1 and dialogs[0].startswith("Missing Models"), dialogs
            listed = sorted(line.strip() for line in dialogs[0].splitlines() if " / " in line)
            assert listed == public, dialogs[0]
        else:
            assert dialogs == [], dialogs
        page.close_dialogs()
        _graph_screenshot(page, screenshots / f"{ui_file.stem}-graph.png")
    else:
        _graph_screenshot(page, screenshots / f"{ui_file.stem}-graph.png")
        # 1.49: the errors panel lists only missing model files (the public ones with a
        # download) and missing input files
        page.evaluate("(() => { const b = [...document.querySelectorAll('button')].find((b) => "
                      "b.innerText.trim() === 'View details'); if (b) b.click(); return true; })()")
        if needed:
            page.wait_for("!!document.querySelector('[data-testid=errors-summary-hero]')", timeout=15)
        groups = page.evaluate("Object.fromEntries([...document.querySelectorAll('[data-testid^=error-group-]')]"
                               ".filter((e) => !e.dataset.testid.includes('display-message'))"
                               ".map((e) => [e.dataset.testid, e.innerText]))")
        assert set(groups) <= {"error-group-missing-model", "error-group-missing-media"}, groups
        models_text = groups.get("error-group-missing-model", "")
        for need in needed:
            if not need.filename.lower().endswith(FRONTEND_MODEL_EXTENSIONS):
                continue  # a model folder (VideoFrom3D's checkpoint-1350): the frontend lists files only
            assert need.filename in models_text, (need, models_text)
        downloads = page.evaluate("document.querySelectorAll('[data-testid=missing-model-download]').length")
        assert downloads == len(public), (public, models_text)
        page.screenshot_png(screenshots / f"{ui_file.stem}-errors.png")
        page.evaluate("(() => { const b = document.querySelector('button[aria-label=\"Toggle properties panel\"]');"
                      " if (b && document.querySelector('[data-testid=properties-panel]')) b.click(); return true; })()")
    boxes = page.node_boxes()   # graph coordinates, as the frontend laid the nodes out
    overlaps = _overlaps(boxes)
    declared = {n["id"]: (*n["pos"], *n["size"]) for n in ui["nodes"]}
    assert overlaps == [], (f"overlapping nodes {overlaps}; see {shot}; laid out (x, y, w, h) vs the file's: "
                            + "; ".join(f"{k}: {boxes[k]} vs {declared.get(k)}" for pair in overlaps for k in pair))
    assert _pack_console_problems(page.seen()["console"]) == []
    prompt, _graph = page.graph_to_prompt()
    assert _without_meta(prompt) == _without_meta(api)


def test_frontend_widgets_are_the_ones_the_tools_predict(page, schemas):
    """For every node type the server lists (core and Pano360): the frontend's widgets
    that are inputs come in the order ``client.schema`` predicts, and the saved
    ``widgets_values`` has the predicted length (frontend-only extras included)."""
    created = json.loads(page.evaluate("""JSON.stringify(Object.fromEntries(Object.keys(LiteGraph.registered_node_types).map((t) => {
      try {
        const n = LiteGraph.createNode(t); app.graph.add(n);
        const values = n.serialize().widgets_values; app.graph.remove(n);
        return [t, {names: (n.widgets || []).map((w) => w.name), values: values ? values.length : null}];
      } catch (e) { return [t, {error: String(e)}]; }
    })))""", timeout=300))
    checked, differing = 0, {}
    for node_type, got in created.items():
        if node_type not in schemas or node_type in FRONTEND_EXTENSION_WIDGETS:
            continue
        schema = schemas[node_type]
        assert "error" not in got, (node_type, got)
        ours = [w.name for w in schema.widgets]
        theirs = [n for n in got["names"] if schema.input(n) is not None]
        count = sum(1 + len(w.extras) for w in schema.widgets)
        if theirs != ours or got["values"] not in (None, count):
            differing[node_type] = (ours, count, got)
        checked += 1
    assert differing == {}
    assert checked > 350 and any(t.startswith("Pano360") for t in created)


def test_template_thumbnails_are_served_where_the_frontends_look(page, comfy_server):
    """Both frontends list a pack's templates from /api/workflow_templates and show
    ``/api/workflow_templates/<pack>/<name>.jpg`` for each (``getTemplateThumbnailUrl``,
    media subtype jpg); the page can decode every one."""
    from comfy_env import PACK_DIRNAME

    listed = comfy_server.get_json("/workflow_templates")
    assert sorted(listed[PACK_DIRNAME]) == sorted(p.stem for p in UI_FILES)
    urls = [f"/api/workflow_templates/{PACK_DIRNAME}/{p.stem}.jpg" for p in UI_FILES]
    sizes = page.evaluate("(async () => Promise.all(" + json.dumps(urls) + ".map(async (u) => {"
                          " const i = new Image(); i.src = u; await i.decode(); return [i.naturalWidth, i.naturalHeight]; })))()",
                          timeout=60)
    assert sizes == [[512, 512]] * len(urls)
