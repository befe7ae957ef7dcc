"""The bundled workflows and the batch client against real ComfyUI 0.3.64 servers.

- Every API twin in ``workflows/api/`` is accepted by ``POST /prompt``: the only node
  errors allowed are missing model files (recorded schemas and this test server hold no
  weights) and missing input files.
- The batch client runs 3 jobs end to end on TWO server processes: a core-only workflow
  (uploaded inputs, downloaded PNGs) and, once the projection nodes exist,
  ``projection_views`` (equirect -> VideoPanda rig views -> stitch -> save).
"""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BATCH_TIMEOUT_S = 300.0
ALLOWED_ERRORS = ("value_not_in_list", "custom_validation_failed")   # model file / input file absent


@pytest.fixture(scope="module")
def second_server(comfy_server_factory):
    return comfy_server_factory()   # another independent ComfyUI process


def min_comfyui(name):
    from pano360.client.workflows_cli import min_comfyui as needs

    return needs(name)


def parse_version(text):
    from pano360.client.workflows_cli import parse_version as parse

    return parse(text)


def _missing_pack_nodes(client, api: dict) -> list[str]:
    return sorted({n["class_type"] for n in api.values()
                   if n["class_type"].startswith("Pano360") and not client.object_info(n["class_type"])})


def _model_or_input_error(class_type: str, error: dict) -> bool:
    from pano360.client.schema import CORE_MODEL_FOLDERS

    name = (error.get("extra_info") or {}).get("input_name", "")
    if error.get("type") == "value_not_in_list":
        return (class_type, name) in CORE_MODEL_FOLDERS or "Loader" in class_type
    # LoadImage / LoadVideo validate their file themselves ("Invalid image file")
    return error.get("type") == "custom_validation_failed" and class_type.startswith("Load")


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_is_accepted_by_post_prompt(comfy_server, api_file):
    api = json.loads(api_file.read_text(encoding="utf-8"))
    missing = _missing_pack_nodes(comfy_server, api)
    if missing:
        pytest.skip(f"the server has no {', '.join(missing)} yet (node not implemented on this branch)")
    reply = comfy_server.post_prompt(api)
    needs, newer = min_comfyui(api_file.stem)
    if parse_version(comfy_server.system_stats()["system"]["comfyui_version"]) < needs:
        # a workflow for a newer ComfyUI: refused as a whole for one of the node types it lacks
        error = reply.get("error") or {}
        assert reply.get("status") == 400 and error.get("type") in ("missing_node_type", "invalid_prompt"), reply
        assert any(f"node {t} does not exist" in error.get("message", "") or t in str(error.get("extra_info"))
                   for t in newer), reply
        return
    errors = {nid: [e for e in entry.get("errors", []) if not _model_or_input_error(entry.get("class_type", ""), e)]
              for nid, entry in (reply.get("node_errors") or {}).items()}
    assert {k: v for k, v in errors.items() if v} == {}, reply
    if reply.get("status") == 200:   # accepted: don't let it run on the shared server
        comfy_server.post_json("/queue", {"delete": [reply["prompt_id"]]})
        comfy_server.post_json("/interrupt", {"prompt_id": reply["prompt_id"]})
    else:
        assert reply.get("node_errors"), reply   # rejected only for missing files, not as a whole


def _png(color: tuple[int, int, int], size=(16, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _run_batch(api, axes, servers, out_dir):
    from pano360.client.batch import BatchConfig, run_batch
    from pano360.client.sweep import expand

    config = BatchConfig(servers=[s.url for s in servers], out_dir=out_dir, max_queued=1, retries=1,
                         poll_interval=0.5, progress=False)
    return asyncio.run(asyncio.wait_for(run_batch(api, expand(axes), config), BATCH_TIMEOUT_S))


def _server_history(client) -> dict:
    return client.get_json("/history")


def test_batch_of_three_jobs_runs_on_two_servers(comfy_server, second_server, tmp_path):
    """Core nodes only: 3 uploaded images -> ImageInvert -> SaveImage, round-robin on two servers."""
    from PIL import Image

    from pano360.client.sweep import Axis, Target, list_input_files

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for i, color in enumerate(colors):
        (inputs / f"in{i}.png").write_bytes(_png(color))
    tag = uuid.uuid4().hex[:8]   # new file names, so the servers' caches cannot answer
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
           "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
           "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"wf_{tag}"}}}
    axes = [Axis("inputs", (Target("1", "image"),), list_input_files(inputs), kind="upload")]
    result = _run_batch(api, axes, [comfy_server, second_server], tmp_path / "out")
    assert result.ok and len(result.done) == 3, result
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    servers = set()
    for entry in manifest["jobs"].values():
        (out,) = entry["outputs"]
        data = (tmp_path / "out" / entry["name"] / out).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        source = Image.open(pathlib.Path(entry["values"]["1.image"]))
        inverted = Image.open(io.BytesIO(data)).convert("RGB")
        expected = tuple(255 - c for c in source.getpixel((0, 0)))
        assert inverted.size == source.size and inverted.getpixel((3, 3)) == expected
        servers.add(entry["server"])
    assert servers == {comfy_server.url, second_server.url}
    for client in (comfy_server, second_server):   # each prompt id reached exactly one server once
        ours = [pid for pid in _server_history(client) if pid in {e["prompt_id"] for e in manifest["jobs"].values()}]
        assert len(ours) == len(set(ours))


def test_projection_views_batch_on_two_servers(comfy_server, second_server, tmp_path):
    """workflows/api/projection_views.json (no weights): 3 jobs over two servers."""
    from pano360.client.batch import load_api_workflow
    from pano360.client.sweep import Axis, Target, list_input_files

    path = ROOT / "workflows" / "api" / "projection_views.json"
    if not path.is_file():
        pytest.skip("workflows/api/projection_views.json is not on this branch")
    api = load_api_workflow(path)
    missing = _missing_pack_nodes(comfy_server, api)
    if missing:
        pytest.skip(f"the server has no {', '.join(missing)} yet (projection nodes not merged)")
    loader = next(i for i, n in api.items() if n["class_type"] == "LoadImage")
    for node in api.values():   # the same graph at a size a busy 2-core machine runs in seconds
        if node["class_type"] == "Pano360Rig":
            node["inputs"]["size"] = 128
        if node["class_type"] == "Pano360EquirectStitcher":
            node["inputs"]["height"] = 128
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (inputs / f"pano{uuid.uuid4().hex[:6]}_{i}.png").write_bytes(_png(color, size=(128, 64)))
    axes = [Axis("inputs", (Target(loader, "image"),), list_input_files(inputs), kind="upload")]
    result = _run_batch(api, axes, [comfy_server, second_server], tmp_path / "out")
    assert result.ok and len(result.done) == 3, result
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {e["server"] for e in manifest["jobs"].values()} == {comfy_server.url, second_server.url}
    from PIL import Image

    for entry in manifest["jobs"].values():
        sizes = sorted(Image.open(tmp_path / "out" / entry["name"] / out).size for out in entry["outputs"])
        assert sizes == [(128, 128)] * 8 + [(256, 128)], entry   # 8 rig views + the stitched 2:1 panorama
