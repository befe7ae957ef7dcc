"""Validation against the recorded core schemas of ComfyUI 0.3.64: one problem, one message."""

from pano360.client.schema import CORE_SCHEMA_FILE, SchemaSet
from pano360.client.validate import models_needed, validate_prompt

SCHEMAS = SchemaSet.from_files(CORE_SCHEMA_FILE)


def good():
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
        "6": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.safetensors", "weight_dtype": "default"}},
    }


def kinds(api):
    return [(i.node_id, i.input, i.kind) for i in validate_prompt(api, SCHEMAS) if i.severity == "error"]


def test_a_valid_workflow_only_needs_its_model_files_with_folders():
    issues = validate_prompt(good(), SCHEMAS)
    assert {(i.node_id, i.kind, i.severity) for i in issues} == {("1", "needs_model", "needs"), ("6", "needs_model", "needs")}
    needs = {(n.node_id, n.filename, n.folder) for n in models_needed(good(), SCHEMAS)}
    assert needs == {("1", "sd15.safetensors", "checkpoints"), ("6", "flux.safetensors", "diffusion_models")}


def test_each_problem_is_reported_by_node_and_input():
    api = good()
    api["2"]["inputs"]["width"] = 0                       # below min 1
    api["2"]["inputs"]["height"] = 20000                  # above max 16384
    api["3"]["inputs"]["pixels"] = ["1", 0]               # MODEL into IMAGE
    api["4"]["inputs"]["vae"] = ["1", 7]                  # no such output
    del api["5"]["inputs"]["filename_prefix"]             # required
    api["5"]["inputs"]["prefix"] = "x"                    # unknown input
    api["6"]["inputs"]["weight_dtype"] = "fp64"           # not an option
    api["7"] = {"class_type": "NoSuchNode", "inputs": {}}
    assert sorted(kinds(api)) == sorted([
        ("2", "width", "value_smaller_than_min"), ("2", "height", "value_bigger_than_max"),
        ("3", "pixels", "invalid_link"), ("4", "vae", "invalid_link"),
        ("5", "filename_prefix", "required_input_missing"), ("5", "prefix", "unknown_input"),
        ("6", "weight_dtype", "value_not_in_list"), ("7", None, "missing_node_type")])
    text = {str(i) for i in validate_prompt(api, SCHEMAS)}
    assert "node 3 (VAEEncode) input pixels: expects IMAGE but is linked to output 0 of node 1 " \
           "(CheckpointLoaderSimple), which is MODEL" in text


def test_a_workflow_without_output_node_is_refused():
    api = good()
    del api["5"]
    assert ("", None, "prompt_no_outputs") in [(i.node_id, i.input, i.kind) for i in validate_prompt(api, SCHEMAS)]
