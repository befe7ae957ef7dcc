"""UI <-> API conversion against the ComfyUI frontend's own files and hand-written graphs."""

import json
import pathlib

import pytest

from pano360.client.convert import ConversionError, api_to_ui, ui_to_api
from pano360.client.schema import CORE_SCHEMA_FILE, SchemaSet
from pano360.client.validate import errors_only, validate_prompt

SCHEMAS = SchemaSet.from_files(CORE_SCHEMA_FILE)

try:
    import comfyui_workflow_templates

    TEMPLATES = pathlib.Path(comfyui_workflow_templates.__file__).parent / "templates"
except ImportError:   # the frontend's template package comes with ComfyUI's requirements
    TEMPLATES = None
needs_templates = pytest.mark.skipif(TEMPLATES is None, reason="comfyui-workflow-templates is not installed")

# The API export of ComfyUI's default workflow (templates/default.json), as the frontend's
# "Export (API)" writes it.
DEFAULT_API = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                                "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                                "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {
        "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


@needs_templates
def test_default_template_converts_to_the_known_api_export():
    ui = json.loads((TEMPLATES / "default.json").read_text())
    api = ui_to_api(ui, SCHEMAS)
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()} == DEFAULT_API
    issues = validate_prompt(api, SCHEMAS)
    assert [i.kind for i in issues] == ["needs_model"]
    assert "models/checkpoints" in issues[0].message


def _core_templates():
    if TEMPLATES is None:
        return []
    out = []
    for path in sorted(TEMPLATES.glob("*.json")):
        ui = json.loads(path.read_text())
        if not isinstance(ui, dict) or "nodes" not in ui or (ui.get("definitions") or {}).get("subgraphs"):
            continue
        kinds = {n["type"] for n in ui["nodes"]} - {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
        if kinds <= set(SCHEMAS):
            out.append(path)
    return out


@needs_templates
def test_stock_templates_convert_validate_and_round_trip():
    """Every core-only stock template saved by the real frontend converts (except those
    saved by an older node version), has no validation errors and survives API->UI->API."""
    paths = _core_templates()
    assert len(paths) > 50
    converted = 0
    for path in paths:
        try:
            api = ui_to_api(json.loads(path.read_text()), SCHEMAS)
        except ConversionError as exc:
            assert "another version of the node" in str(exc), (path.name, exc)
            continue
        converted += 1
        assert errors_only(validate_prompt(api, SCHEMAS)) == [], path.name
        assert ui_to_api(api_to_ui(api, SCHEMAS), SCHEMAS) == api, path.name
    assert converted >= 0.9 * len(paths)


def _node(id, type, inputs=(), outputs=(), widgets=None, mode=0):
    node = {"id": id, "type": type, "mode": mode, "inputs": list(inputs), "outputs": list(outputs)}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def test_frontend_only_nodes_reroute_primitive_note_mute_and_bypass():
    ui = {"nodes": [
        _node(1, "EmptyImage", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
              inputs=[{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 5}],
              widgets=[8, 4, 1, 0]),
        _node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
              outputs=[{"name": "", "type": "IMAGE", "links": [2]}]),
        # bypassed: its IMAGE output passes its IMAGE input through
        _node(3, "ImageInvert", inputs=[{"name": "image", "type": "IMAGE", "link": 2}],
              outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [3]}], mode=4),
        _node(4, "SaveImage", inputs=[{"name": "images", "type": "IMAGE", "link": 3}], widgets=["out"]),
        _node(5, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "widget": {"name": "width"}, "links": [5]}],
              widgets=[16, "fixed"]),
        _node(6, "Note", widgets=["hello"]),
        # muted: dropped, and so is the link out of it
        _node(7, "EmptyImage", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [7]}], widgets=[1, 1, 1, 0], mode=2),
        _node(8, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 7}]),
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
                 [5, 5, 0, 1, 0, "INT"], [7, 7, 0, 8, 0, "IMAGE"]]}
    api = ui_to_api(ui, SCHEMAS)
    assert api == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 4, "batch_size": 1, "color": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out"}},
        "8": {"class_type": "PreviewImage", "inputs": {}},
    }


def test_seed_control_and_upload_widgets_are_skipped_by_position():
    ui = {"nodes": [
        _node(1, "LoadImage", outputs=[], widgets=["pano.png", "image"]),
        _node(2, "RandomNoise", outputs=[], widgets=[7, "randomize"]),
    ], "links": []}
    api = ui_to_api(ui, SCHEMAS)
    assert api["1"]["inputs"] == {"image": "pano.png"} and api["2"]["inputs"] == {"noise_seed": 7}


def test_too_few_widget_values_name_the_node():
    ui = {"nodes": [_node(12, "KSampler", widgets=[1, "fixed", 20])], "links": []}
    with pytest.raises(ConversionError, match=r"node 12 \(KSampler\).*seed \+1 frontend-only"):
        ui_to_api(ui, SCHEMAS)


def test_api_to_ui_is_deterministic_and_lays_out_columns_by_depth():
    ui1, ui2 = api_to_ui(DEFAULT_API, SCHEMAS, "d"), api_to_ui(json.loads(json.dumps(DEFAULT_API)), SCHEMAS, "d")
    assert json.dumps(ui1) == json.dumps(ui2)
    x = {n["id"]: n["pos"][0] for n in ui1["nodes"]}
    assert x[4] < x[6] == x[7] == x[5] + 420 < x[3] < x[8] < x[9]
    ks = next(n for n in ui1["nodes"] if n["type"] == "KSampler")
    assert ks["widgets_values"] == [156680208700286, "fixed", 20, 8, "euler", "normal", 1]
    loader = next(n for n in ui1["nodes"] if n["id"] == 4)
    # the download prompt ComfyUI's own default workflow carries (a public file: client.model_sources)
    assert loader["properties"]["models"] == [{
        "name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
        "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
               "v1-5-pruned-emaonly-fp16.safetensors?download=true"}]
    for link in ui1["links"]:   # every link is listed at both ends
        lid, src, src_slot, dst, dst_slot, kind = link
        node_src = next(n for n in ui1["nodes"] if n["id"] == src)
        node_dst = next(n for n in ui1["nodes"] if n["id"] == dst)
        assert lid in node_src["outputs"][src_slot]["links"] and node_dst["inputs"][dst_slot]["link"] == lid
        assert node_src["outputs"][src_slot]["type"] == kind
    assert ui_to_api(ui1, SCHEMAS) == DEFAULT_API


def test_api_to_ui_refuses_non_numeric_ids_and_unknown_inputs():
    with pytest.raises(ConversionError, match="integers"):
        api_to_ui({"a": {"class_type": "EmptyImage", "inputs": {}}}, SCHEMAS)
    with pytest.raises(ConversionError, match=r"node 1 \(EmptyImage\): unknown inputs \['size'\]"):
        api_to_ui({"1": {"class_type": "EmptyImage", "inputs": {"size": 3}}}, SCHEMAS)
