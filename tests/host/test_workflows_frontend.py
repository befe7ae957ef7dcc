"""The converter against ComfyUI's own frontend (1.27.10, served by the test server) in
headless Chromium: the frontend loads the UI file our ``api_to_ui`` wrote and its
``graphToPrompt`` (what "Queue" and "Export (API)" send) must give back our API twin;
and our ``ui_to_api`` of the graph *the frontend* serialises must equal the same prompt.

Needs ComfyUI (see docs/testing.md) and Debian's ``chromium``; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
from _chromium import CHROMIUM, headless_page  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)
STARTUP_TIMEOUT_S = 120.0   # the frontend bundle is large; a busy 2-core machine is slow

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


def _bundled():
    return {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "workflows" / "api").glob("*.json"))}


@pytest.fixture(scope="module")
def frontend(comfy_server):
    with headless_page(1280, 800) as browser:
        browser.call("Page.navigate", url=comfy_server.url + "/")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            ready = browser.evaluate("!!(window.app && window.app.graph && window.app.canvas && "
                                     "window.LiteGraph && Object.keys(window.LiteGraph.registered_node_types)"
                                     ".length > 100)", timeout=60.0)
            if ready:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the ComfyUI frontend did not come up in headless Chromium")
        yield browser


def _frontend_prompt(browser, ui: dict) -> tuple[dict, dict]:
    """Load a UI workflow in the frontend -> (its API prompt, its own serialisation of the graph)."""
    script = ("(async () => { await window.app.loadGraphData(" + json.dumps(ui) + ", true, true, null);"
              " const p = await window.app.graphToPrompt();"
              " return JSON.stringify({output: p.output, graph: window.app.graph.serialize()}); })()")
    result = json.loads(browser.evaluate(script, timeout=60.0))
    return result["output"], result["graph"]


def _without_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


@pytest.mark.parametrize("name", sorted(CORE_WORKFLOWS) + sorted(_bundled()))
def test_frontend_reads_our_ui_files_as_their_api_twins(frontend, comfy_server, name):
    from pano360.client.convert import api_to_ui, ui_to_api
    from pano360.client.schema import SchemaSet

    api = CORE_WORKFLOWS.get(name) or _bundled()[name]
    schemas = SchemaSet([comfy_server.object_info()])
    missing = sorted({n["class_type"] for n in api.values()} - set(schemas))
    if missing:
        pytest.skip(f"the server has no {', '.join(missing)} yet")
    prompt, graph = _frontend_prompt(frontend, api_to_ui(api, schemas, name=name))
    assert _without_meta(prompt) == _without_meta(api)
    titles = {k: v["_meta"]["title"] for k, v in api.items() if "_meta" in v}
    assert {k: prompt[k]["_meta"]["title"] for k in titles} == titles
    # and our UI -> API on the frontend's own serialisation of the same graph
    assert _without_meta(ui_to_api(graph, schemas)) == _without_meta(prompt)
