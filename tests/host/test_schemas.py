"""The recorded node schemas (workflows/schemas/pano360_object_info.json) are what a live
ComfyUI reports, and the in-process conversion is the server's own."""

from __future__ import annotations

import json

from comfy_env import PACK_DIRNAME, ROOT

RECORDED = ROOT / "workflows" / "schemas" / "pano360_object_info.json"
RERECORD = "re-record with: COMFYUI_ROOT=/path/to/ComfyUI python tests/host/record_schemas.py"


def test_conversion_matches_the_server_for_stock_v3_nodes(comfy_server, comfy_in_process):
    """GET_NODE_INFO_V1 in process equals /object_info for stock V3 nodes (all but the
    module path, which ComfyUI's loader sets), so the recorder uses the server's format."""
    import comfy_extras.nodes_morphology as morphology
    import comfy_extras.nodes_video as video

    served = comfy_server.object_info()
    for cls in (morphology.Morphology, morphology.ImageRGBToYUV, video.SaveVideo, video.CreateVideo):
        ours = json.loads(json.dumps(cls.GET_NODE_INFO_V1()))
        theirs = dict(served[ours["name"]])
        assert theirs.pop("python_module").startswith("comfy_extras.")
        ours.pop("python_module")
        assert ours == theirs, ours["name"]


def test_recorded_schemas_are_current(comfy_in_process):
    from pano360.nodes import _schemas

    assert RECORDED.is_file(), RERECORD
    assert RECORDED.read_text() == _schemas.dumps(_schemas.object_info()), f"{RECORDED} is stale; {RERECORD}"


def test_recorded_schemas_equal_the_live_server(comfy_server):
    recorded = json.loads(RECORDED.read_text())
    served = {k: v for k, v in comfy_server.object_info().items() if v.get("python_module") == f"custom_nodes.{PACK_DIRNAME}"}
    assert sorted(served) == sorted(recorded), f"node lists differ; {RERECORD}"
    for node_id, info in served.items():
        assert info == recorded[node_id], f"{node_id}: schema differs from the recorded one; {RERECORD}"


def _without_file_lists(info: dict) -> dict:
    """A node schema with the combo option lists emptied (they list local files)."""
    info = json.loads(json.dumps(info))
    for section in info["input"].values():
        for spec in section.values():
            if isinstance(spec[0], list):
                spec[0] = []
            elif spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                spec[1]["options"] = []
    return info


def test_recorded_core_schemas_match_this_comfyui(comfy_server):
    """The recorded core /object_info the workflow checks fall back on (shared/comfyui)
    describes the same node types, inputs and outputs as this ComfyUI."""
    import pytest

    candidates = [p / "shared" / "comfyui" / "object_info-0.3.64.json" for p in ROOT.parents]
    recorded_file = next((c for c in candidates if c.is_file()), None)
    if recorded_file is None:
        pytest.skip("no recorded core schemas (shared/comfyui/object_info-0.3.64.json) next to the checkout")
    recorded = json.loads(recorded_file.read_text())
    served = {k: v for k, v in comfy_server.object_info().items() if not v.get("python_module", "").startswith("custom_nodes.")}
    assert sorted(served) == sorted(recorded)
    differing = [k for k in served if _without_file_lists(served[k]) != _without_file_lists(recorded[k])]
    assert not differing, differing[:20]
