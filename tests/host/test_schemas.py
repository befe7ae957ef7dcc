"""The recorded node schemas of this ComfyUI version (workflows/schemas/<version>/) are what
its live server reports, and the in-process conversion is the server's own."""

from __future__ import annotations

import json

from comfy_env import PACK_DIRNAME, ROOT

RERECORD = "re-record with: bash .ci/hosts record-schemas (or COMFYUI_ROOT=... python tests/host/record_schemas.py)"


def _recorded(comfy_version, name: str):
    path = ROOT / "workflows" / "schemas" / ".".join(map(str, comfy_version)) / name
    assert path.is_file(), f"no recorded schemas for this ComfyUI: {path}; {RERECORD}"
    return path


def test_conversion_matches_the_server_for_stock_v3_nodes(comfy_server, comfy_in_process):
    """GET_NODE_INFO_V1 in process equals /object_info for stock V3 nodes (all but the
    module path, which ComfyUI's loader sets), so the recorder's format is the server's."""
    import comfy_extras.nodes_morphology as morphology
    import comfy_extras.nodes_video as video

    served = comfy_server.object_info()
    for cls in (morphology.Morphology, morphology.ImageRGBToYUV, video.SaveVideo, video.CreateVideo):
        ours = json.loads(json.dumps(cls.GET_NODE_INFO_V1()))
        theirs = dict(served[ours["name"]])
        assert theirs.pop("python_module").startswith("comfy_extras.")
        ours.pop("python_module")
        assert ours == theirs, ours["name"]


def test_recorded_pack_schemas_are_current(comfy_in_process, comfy_version):
    from pano360.nodes import _schemas

    path = _recorded(comfy_version, "pano360_object_info.json")
    assert path.read_text() == _schemas.dumps(_schemas.object_info()), f"{path} is stale; {RERECORD}"


def test_recorded_pack_schemas_equal_the_live_server(comfy_server, comfy_version):
    recorded = json.loads(_recorded(comfy_version, "pano360_object_info.json").read_text())
    served = {k: v for k, v in comfy_server.object_info().items() if v.get("python_module") == f"custom_nodes.{PACK_DIRNAME}"}
    assert sorted(served) == sorted(recorded), f"node lists differ; {RERECORD}"
    for node_id, info in served.items():
        assert info == recorded[node_id], f"{node_id}: schema differs from the recorded one; {RERECORD}"


def _without_file_lists(info: dict) -> dict:
    """A node schema with the combo option lists of local files emptied (model files,
    input files: they depend on the folders of the server)."""
    info = json.loads(json.dumps(info))
    for section in info["input"].values():
        if not isinstance(section, dict):
            continue
        for spec in section.values():
            if isinstance(spec[0], list):
                spec[0] = []
            elif spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                spec[1]["options"] = []
    return info


def test_recorded_core_schemas_equal_the_live_server(comfy_server, comfy_version):
    """The core /object_info the workflow tools use offline (prose stripped) describes
    exactly this ComfyUI's node types, inputs and outputs."""
    from pano360.client.schema import strip_object_info

    recorded = json.loads(_recorded(comfy_version, "core_object_info.json").read_text())
    served = strip_object_info({k: v for k, v in comfy_server.object_info().items()
                                if not str(v.get("python_module") or "").startswith("custom_nodes.")})
    assert sorted(served) == sorted(recorded), f"core node types differ; {RERECORD}"
    differing = [k for k in served if _without_file_lists(served[k]) != _without_file_lists(recorded[k])]
    assert not differing, f"{differing[:20]}; {RERECORD}"


def test_pack_schemas_say_what_differs_between_versions(comfy_version):
    """What 0.33 adds to a V3 node's /object_info (is_input_list, dev_only, search
    aliases, ...) is in its recording and not in 0.3.64's: the files are per version."""
    recorded = json.loads(_recorded(comfy_version, "pano360_object_info.json").read_text())
    info = next(iter(recorded.values()))
    assert ("is_input_list" in info) == (comfy_version >= (0, 33)), sorted(info)
