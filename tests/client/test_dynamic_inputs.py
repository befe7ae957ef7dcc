"""ComfyUI 0.33's V3 dynamic inputs in the workflow tools: dynamic combos (SaveVideo's
format -> codec -> encoding), autogrow sockets (Batch Images), match-type sockets, new
optional inputs (CreateVideo's bit_depth), checked against 0.33's recorded schemas and
the stock templates that 0.33's frontend generation saved (comfyui-workflow-templates-json
0.1.50, the templates package of ComfyUI 0.33).  The same against the live frontends:
tests/host/test_workflows_frontend.py."""

import json
import pathlib

import pytest

from pano360.client.convert import ConversionError, api_to_ui, ui_to_api
from pano360.client.schema import SchemaSet, schema_files
from pano360.client.validate import errors_only, validate_prompt

NEW = SchemaSet.from_files(*schema_files("0.33.0"))
OLD = SchemaSet.from_files(*schema_files("0.3.64"))

try:
    import comfyui_workflow_templates_json

    TEMPLATES = pathlib.Path(comfyui_workflow_templates_json.__file__).parent / "templates"
except ImportError:
    TEMPLATES = None


def _save_video(**inputs):
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 4, "color": 0}},
            "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0, "bit_depth": 8}},
            "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "v", **inputs}}}


def test_dynamic_combo_expands_the_chosen_options_inputs_in_frontend_order():
    save = NEW["SaveVideo"]
    # what frontend 1.49 creates for a fresh SaveVideo (tests/host probes it): the hidden
    # legacy 'codec' keeps a widget; format.codec follows format
    assert [s.name for s in save.widgets] == ["filename_prefix", "format", "format.codec", "codec"]
    values = {"format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode"}
    assert [s.name for s in save.widgets_for(values)] == [
        "filename_prefix", "format", "format.codec", "format.codec.encoding", "format.codec.encoding.crf",
        "format.codec.encoding.color_space", "codec"]
    crf = save.input("format.codec.encoding.crf")
    assert (crf.type, crf.default, crf.options["max"], crf.required) == ("FLOAT", 23.0, 51.0, True)
    assert save.input("format.codec.encoding").required is False   # an optional input of the h264 option
    assert OLD["SaveVideo"].input("format").type == "COMBO" and OLD["SaveVideo"].input("format.codec") is None


@pytest.mark.parametrize("inputs", [
    {"format": "auto", "format.codec": "auto", "codec": "auto"},
    {"format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode",
     "format.codec.encoding.crf": 18.0, "format.codec.encoding.color_space": "sRGB", "codec": "auto"},
    {"format": "webm", "format.codec": "av1", "format.codec.encoding": "auto", "codec": "auto"},
], ids=["auto", "h264-re-encode", "webm-av1"])
def test_save_video_round_trips_and_validates_on_033(inputs):
    api = _save_video(**inputs)
    assert errors_only(validate_prompt(api, NEW)) == []
    ui = api_to_ui(api, NEW, "v")
    node = next(n for n in ui["nodes"] if n["type"] == "SaveVideo")
    assert node["widgets_values"] == ["v", *inputs.values()]
    assert ui_to_api(ui, NEW) == api


def test_widget_values_are_read_in_the_order_the_values_unfold():
    """A UI node saved by the frontend: the combo's value decides what the next values are."""
    node = {"id": 3, "type": "SaveVideo", "inputs": [], "outputs": [],
            "widgets_values": ["v", "mkv", "h264", "re-encode", 20.0, "HDR", "auto"]}
    api = ui_to_api({"nodes": [node], "links": []}, NEW)
    assert api["3"]["inputs"] == {"filename_prefix": "v", "format": "mkv", "format.codec": "h264",
                                  "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 20.0,
                                  "format.codec.encoding.color_space": "HDR", "codec": "auto"}


def test_missing_trailing_optional_widgets_take_defaults_but_a_missing_required_one_is_an_error():
    """Templates saved before 'codec' became a hidden optional input have 3 values; the
    frontend keeps the default for the rest.  A required widget short is refused."""
    node = {"id": 3, "type": "SaveVideo", "inputs": [], "outputs": [], "widgets_values": ["v", "auto", "auto"]}
    assert ui_to_api({"nodes": [node], "links": []}, NEW)["3"]["inputs"]["codec"] == "auto"
    node["widgets_values"] = ["v", "mp4"]
    with pytest.raises(ConversionError, match=r"node 3 \(SaveVideo\).*another version of the node"):
        ui_to_api({"nodes": [node], "links": []}, NEW)


def test_version_differences_are_reported_by_input():
    api = _save_video(**{"format": "auto", "format.codec": "auto", "codec": "auto"})
    old = {str(i) for i in errors_only(validate_prompt(api, OLD))}
    assert "node 2 (CreateVideo) input bit_depth: CreateVideo has no input 'bit_depth'; its inputs are images, fps, audio" in old
    assert any(i.startswith("node 3 (SaveVideo) input format.codec: SaveVideo has no input") for i in old)
    missing = _save_video(format="mp4")   # mp4 brings a required codec
    assert [(i.input, i.kind) for i in errors_only(validate_prompt(missing, NEW))] == [
        ("format.codec", "required_input_missing")]
    wrong = _save_video(**{"format": "mp4", "format.codec": "vp9"})
    assert [(i.input, i.kind) for i in errors_only(validate_prompt(wrong, NEW))] == [
        ("format.codec", "value_not_in_list")]


def test_autogrow_sockets_and_match_type_links():
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
           "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
           "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0]}},
           "4": {"class_type": "ResizeImageMaskNode", "inputs": {
               "input": ["3", 0], "resize_type": "scale by multiplier", "resize_type.multiplier": 2.0,
               "scale_method": "area"}},
           "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}}}
    assert errors_only(validate_prompt(api, NEW)) == []
    ui = api_to_ui(api, NEW, "b")
    batch = next(n for n in ui["nodes"] if n["type"] == "BatchImagesNode")
    assert [(s["name"], s["type"]) for s in batch["inputs"]] == [("images.image0", "IMAGE"), ("images.image1", "IMAGE")]
    assert ui_to_api(ui, NEW) == api
    resize = NEW["ResizeImageMaskNode"]
    assert resize.input("input").type == "IMAGE,MASK" and resize.outputs[0] == "*"
    bad = json.loads(json.dumps(api))
    bad["4"]["inputs"]["input"] = ["6", 0]
    bad["6"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    assert [i.kind for i in errors_only(validate_prompt(bad, NEW))] == ["invalid_link"]
    del bad["4"], bad["5"]["inputs"]["images"]
    assert "required_input_missing" in [i.kind for i in validate_prompt(bad, NEW)]
    no_image = {k: v for k, v in api.items() if k != "2"}
    no_image["3"] = {"class_type": "BatchImagesNode", "inputs": {}}
    assert [(i.input, i.kind) for i in errors_only(validate_prompt(no_image, NEW))] == [
        ("images.image0", "required_input_missing")]


def _core_templates():
    if TEMPLATES is None:
        return []
    out = []
    for path in sorted(TEMPLATES.glob("*.json")):
        ui = json.loads(path.read_text())
        if not isinstance(ui, dict) or "nodes" not in ui or (ui.get("definitions") or {}).get("subgraphs"):
            continue
        kinds = {n["type"] for n in ui["nodes"]} - {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
        if kinds <= set(NEW):
            out.append(path)
    return out


@pytest.mark.skipif(TEMPLATES is None, reason="comfyui-workflow-templates-json (requirements-dev.txt) not installed")
def test_033_stock_templates_convert_validate_and_round_trip():
    """ComfyUI 0.33's core-only stock templates (saved by its frontends, dynamic combos
    included) convert, validate and survive API -> UI -> API with 0.33's schemas."""
    paths = _core_templates()
    assert len(paths) > 40
    converted, dynamic = 0, 0
    for path in paths:
        try:
            api = ui_to_api(json.loads(path.read_text()), NEW)
        except ConversionError as exc:
            assert "another version of the node" in str(exc), (path.name, exc)
            continue
        converted += 1
        dynamic += any("." in name for node in api.values() for name in node["inputs"])
        errors = [str(i) for i in errors_only(validate_prompt(api, NEW))]
        assert errors == [], (path.name, errors)
        assert ui_to_api(api_to_ui(api, NEW), NEW) == api, path.name
    assert converted >= 0.9 * len(paths) and dynamic >= 5, (converted, dynamic, len(paths))
