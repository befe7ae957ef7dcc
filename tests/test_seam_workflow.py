"""The seamless-panorama API workflow against the recorded core schemas (host-free).

Pack nodes are checked against their live schemas in tests/host/test_seam_host.py."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, SHARED

WORKFLOW = ROOT / "workflows" / "api" / "seamless_panorama.json"
# the core schemas shipped with the pack (workflows/schemas), else the shared recording
OBJECT_INFO = next((p for p in (ROOT / "workflows" / "schemas" / "core_object_info-0.3.64.json",
                                 SHARED / "comfyui" / "object_info-0.3.64.json") if p.is_file()),
                   ROOT / "workflows" / "schemas" / "core_object_info-0.3.64.json")
PACK_NODE_OUTPUTS = {"Pano360SeamRollPatch": ["MODEL"], "Pano360SeamBlendedVAEDecode": ["IMAGE"]}


def test_seamless_panorama_uses_core_inputs_and_valid_links():
    if not OBJECT_INFO.is_file():
        pytest.skip(f"recorded core schemas not found at {OBJECT_INFO}")
    info = json.loads(OBJECT_INFO.read_text())
    prompt = json.loads(WORKFLOW.read_text())
    outputs = {}
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if kind in PACK_NODE_OUTPUTS:
            outputs[node_id] = PACK_NODE_OUTPUTS[kind]
            continue
        assert kind in info, f"node {node_id}: unknown core node {kind}"
        spec = info[kind]["input"]
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(spec.get("required", {})) <= set(node["inputs"]), f"node {node_id} ({kind}) misses inputs"
        assert set(node["inputs"]) <= set(known), f"node {node_id} ({kind}) has unknown inputs"
        outputs[node_id] = info[kind]["output"]
        for name, value in node["inputs"].items():
            choices = known[name][0]
            if isinstance(choices, list) and name != "ckpt_name" and not isinstance(value, list):
                assert value in choices, f"node {node_id}: {name}={value!r} not in {choices}"
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                src, index = value
                assert src in outputs and index < len(outputs[src]), f"node {node_id}.{name}: bad link {value}"
    # the sampler samples the patched model, the decode is the seam-blended one, 2:1 latent
    kinds = {k: n["class_type"] for k, n in prompt.items()}
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")
    assert kinds[sampler["inputs"]["model"][0]] == "Pano360SeamRollPatch"
    latent = next(n for n in prompt.values() if n["class_type"] == "EmptyLatentImage")["inputs"]
    assert latent["width"] == 2 * latent["height"]
    assert "Pano360SeamBlendedVAEDecode" in kinds.values()
