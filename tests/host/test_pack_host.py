"""The pack inside a real ComfyUI server (issue 2): it loads, its nodes are listed with
complete schemas, and a projection round trip runs through the HTTP API."""

from __future__ import annotations

import io as _io
import math
import re

import numpy as np
import pytest
from PIL import Image

from comfy_env import PACK_DIRNAME

PYTHON_MODULE = f"custom_nodes.{PACK_DIRNAME}"
LINK_TYPES_FROM_PACK = {"PANO360_RIG": "Pano360Rig"}  # custom types a helper node can supply


def pack_nodes(object_info: dict) -> dict[str, dict]:
    return {k: v for k, v in object_info.items() if v.get("python_module") == PYTHON_MODULE}


def smooth_panorama(h: int = 64) -> np.ndarray:
    """(h, 2h, 3) uint8: smooth in longitude (periodic across the seam) and latitude."""
    lat = (0.5 - (np.arange(h) + 0.5) / h) * math.pi
    lon = ((np.arange(2 * h) + 0.5) / (2 * h) - 0.5) * 2 * math.pi
    lon, lat = np.meshgrid(lon, lat)
    # no mirror symmetry in longitude or latitude, so a flipped or shifted result cannot match
    rgb = np.stack([0.5 + 0.4 * np.sin(lon), 0.5 + 0.4 * np.sin(lat), 0.5 + 0.4 * np.cos(lon + 1.0) * np.cos(lat)], -1)
    return np.round(rgb * 255).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------ loading


def test_pack_imports_without_error(comfy_server):
    log = comfy_server.log_text()
    block = log.split("Import times for custom nodes:", 1)
    assert len(block) == 2, f"no custom-node import block in the log:\n{comfy_server.log_tail()}"
    lines = [line for line in block[1].splitlines()[:20] if line.rstrip().endswith(f"custom_nodes/{PACK_DIRNAME}")]
    assert lines, f"the pack is not in the import block:\n{block[1][:2000]}"
    assert "IMPORT FAILED" not in lines[0], log[-6000:]
    assert not re.search(rf"Cannot import .*{PACK_DIRNAME}", log), log[-6000:]


def test_object_info_lists_exactly_the_pack_nodes(comfy_server, comfy_in_process):
    """The server lists every node of ``nodes.all_nodes()`` (loaded in process) and no other."""
    from pano360.nodes import all_nodes

    expected = {cls.GET_SCHEMA().node_id for cls in all_nodes()}
    listed = set(pack_nodes(comfy_server.object_info()))
    assert listed == expected
    if not expected:
        pytest.skip("the pack defines no nodes yet")


def test_pack_node_schemas_are_complete(comfy_server):
    nodes = pack_nodes(comfy_server.object_info())
    if not nodes:
        pytest.skip("the pack defines no nodes yet")
    problems = []
    for node_id, info in nodes.items():
        if not node_id.startswith("Pano360"):
            problems.append(f"{node_id}: ID does not start with Pano360")
        if not str(info.get("category", "")).startswith("Pano360/"):
            problems.append(f"{node_id}: category {info.get('category')!r} is not under Pano360/")
        if not info.get("description"):
            problems.append(f"{node_id}: no description")
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not options.get("tooltip"):
                    problems.append(f"{node_id}: input {name!r} has no tooltip")
        for name, tooltip in zip(info["output_name"], info.get("output_tooltips") or [None] * len(info["output"])):
            if not tooltip:
                problems.append(f"{node_id}: output {name!r} has no tooltip")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ a prompt through the API


def build_chain(object_info: dict, chain: list[str], fixed: dict[str, dict]) -> dict:
    """An API prompt running ``chain`` in order.  Each required link input (a type that is
    not a widget) takes the latest earlier output of its type; a missing pack type from
    ``LINK_TYPES_FROM_PACK`` is supplied by inserting that node; widgets take their
    defaults unless ``fixed[node][input]`` names a value."""
    prompt: dict[str, dict] = {}
    outputs: list[tuple[str, int, str]] = []  # (node id, output index, type)

    def add(class_type: str) -> str:
        info = object_info[class_type]
        inputs = {}
        for name, spec in info["input"].get("required", {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if name in fixed.get(class_type, {}):
                inputs[name] = fixed[class_type][name]
            elif isinstance(kind, list):  # combo
                inputs[name] = options.get("default", kind[0] if kind else None)
            elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                inputs[name] = options.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[kind])
            elif kind == "COMBO":
                inputs[name] = options.get("default", (options.get("options") or [None])[0])
            else:
                source = next((o for o in reversed(outputs) if o[2] == kind), None)
                if source is None and kind in LINK_TYPES_FROM_PACK:
                    add(LINK_TYPES_FROM_PACK[kind])
                    source = next(o for o in reversed(outputs) if o[2] == kind)
                if source is None:
                    raise KeyError(f"{class_type}.{name}: no earlier output of type {kind}")
                inputs[name] = [source[0], source[1]]
        node_id = str(len(prompt) + 1)
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        outputs.extend((node_id, i, t) for i, t in enumerate(info["output"]))
        return node_id

    for class_type in chain:
        add(class_type)
    return prompt


def test_equirect_perspective_stitch_round_trip(comfy_server):
    """LoadImage -> Pano360EquirectToPerspective -> Pano360EquirectStitcher -> SaveImage with
    each node's defaults: the saved panorama is 2:1 and, where the views cover it, equals
    the uploaded one (the reference) up to resampling error."""
    info = comfy_server.object_info()
    chain = ["LoadImage", "Pano360EquirectToPerspective", "Pano360EquirectStitcher", "SaveImage"]
    missing = [c for c in chain if c not in info]
    if missing:
        pytest.skip(f"node IDs not in /object_info yet (projection nodes come from branch proj): {missing}")
    source = smooth_panorama(64)
    uploaded = comfy_server.upload_image(png_bytes(source), "pano360_test_erp.png", subfolder="pano360_tests")
    image_name = f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded["subfolder"] else uploaded["name"]
    # small views and panorama keep it fast; inputs a node does not have are ignored
    prompt = build_chain(info, chain, {"LoadImage": {"image": image_name},
                                       "Pano360Rig": {"preset": "videopanda8", "size": 64},
                                       "Pano360EquirectStitcher": {"height": 64},
                                       "SaveImage": {"filename_prefix": "pano360_tests/roundtrip"}})
    entry = comfy_server.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success", comfy_server.error_message(entry)
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    images = entry["outputs"][save_id]["images"]
    assert len(images) == 1
    result = np.asarray(Image.open(_io.BytesIO(comfy_server.view(**images[0]))).convert("RGB")).astype(np.float64)
    h, w, _ = result.shape
    assert w == 2 * h, f"stitched panorama is {w}x{h}, expected 2:1"
    reference = np.asarray(Image.fromarray(source).resize((w, h), Image.BICUBIC)).astype(np.float64)
    # pixels the views cover are not black; compare there (coverage is the stitcher's MASK output)
    covered = result.max(axis=-1) > 8
    assert covered.mean() > 0.2, f"only {covered.mean():.1%} of the panorama is covered"
    error = np.abs(result - reference)[covered].mean() / 255.0
    assert error < 0.02, f"mean abs error {error:.4f} on covered pixels"
