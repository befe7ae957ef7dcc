"""The 360° LoRA workflows run end to end on tiny random configs, on both host versions.

Each bundled API workflow runs node by node with ComfyUI's own node code
(tests/host/api_graph.py): the stock LoRA loader loads a real LoRA file, the pack's seam
and RoPE patches and the circular decode run, ComfyUI's sampler samples and the Save 360
node writes the file and its scores.  Only what no test can have is replaced: the model
loaders give tiny models of ComfyUI's own classes (random weights), the text encoders (whose
sizes ComfyUI's configs fix: T5-XXL, umT5, Gemma) give seeded random embeddings, and the
latent size, frames and steps are cut down.  The LTX-2.3 workflow needs ComfyUI's LTX-2 nodes
(0.33 and later); on 0.3.64 it is checked to be refused for exactly those node types.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

import api_graph
import tiny_comfy
from api_graph import node_classes

ROOT = pathlib.Path(__file__).resolve().parents[2]
API = ROOT / "workflows" / "api"


def _api(name: str) -> dict:
    return json.loads((API / f"{name}.json").read_text(encoding="utf-8"))


def _nodes_of(api: dict, class_type: str) -> list[dict]:
    return [n for n in api.values() if n["class_type"] == class_type]


@pytest.fixture()
def loras(comfy_in_process, tmp_path, monkeypatch):
    """A temporary first loras folder; ComfyUI's folder table is as it was afterwards (the
    recorded schemas list the loras folder's files)."""
    fp = comfy_in_process.folder_paths
    folder = tmp_path / "loras"
    folder.mkdir()
    paths, extensions = fp.folder_names_and_paths["loras"]
    monkeypatch.setitem(fp.folder_names_and_paths, "loras", ([str(folder), *paths], extensions))
    monkeypatch.setattr(fp, "filename_list_cache", {})
    return folder


def _run(api: dict, given: dict) -> dict:
    """Every node's outputs by class_type; ``given``: outputs of node types a test stands in for."""
    stand_ins = {nid: given[n["class_type"]] for nid, n in api.items() if n["class_type"] in given}
    results = api_graph.run(api, list(api), given=stand_ins)
    return {api[nid]["class_type"]: out for nid, out in results.items()}


def _patched_keys(model) -> set[str]:
    return {k for k in model.patches if model.patches[k]}


def test_flux_360_lora_panorama_runs_end_to_end(comfy_in_process, loras):
    api = _api("flux_360_lora_panorama")
    base = tiny_comfy.flux_base_model()
    (lora_node,) = _nodes_of(api, "LoraLoaderModelOnly")
    lora_keys = tiny_comfy.lora_for(base, loras / lora_node["inputs"]["lora_name"], ("img_attn.qkv", "linear1"))
    (latent,) = _nodes_of(api, "EmptySD3LatentImage")
    latent["inputs"].update(width=64, height=32)
    (sampler,) = _nodes_of(api, "KSampler")
    sampler["inputs"]["steps"] = 2
    by_type = _run(api, {
        "UNETLoader": (tiny_comfy.patcher(base),),
        "DualCLIPLoader": (tiny_comfy.StubClip(tiny_comfy.TINY_FLUX["context_in_dim"], tiny_comfy.TINY_FLUX["vec_in_dim"]),),
        "VAELoader": (tiny_comfy.flux_vae(),),
    })
    assert set(lora_keys) <= _patched_keys(by_type["LoraLoaderModelOnly"][0])  # the stock loader mapped every key
    rope = by_type["Pano360SphericalRoPE"][0]
    assert "diffusion_model.pe_embedder" in rope.object_patches
    image = by_type["Pano360CircularVAEDecode"][0]
    assert image.shape == (1, 32, 64, 3) and bool(torch.isfinite(image).all())
    path = by_type["Pano360Save360Image"][0]
    assert pathlib.Path(path).is_file() and path.endswith(".png")


def test_wan_360_lora_video_runs_end_to_end_with_a_converted_panowan_style_lora(comfy_in_process, loras, tmp_path):
    from pano360.models.lora_keys import convert_lora_file

    api = _api("wan_360_lora_video")
    base = tiny_comfy.wan_base_model()
    (lora_node,) = _nodes_of(api, "LoraLoaderModelOnly")
    # a LoRA saved the DiffSynth/PEFT way (bare keys), converted with `python -m pano360 lora-keys`
    raw = tmp_path / "latest-lora.safetensors"
    keys = tiny_comfy.lora_for(base, raw, ("self_attn.q", "ffn.0"))
    from safetensors.torch import load_file, save_file

    bare = {k[len("diffusion_model."):].replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
            for k, v in load_file(str(raw)).items()}
    save_file(bare, str(raw))
    convert_lora_file(str(raw), str(loras / lora_node["inputs"]["lora_name"]))
    (latent,) = _nodes_of(api, "EmptyHunyuanLatentVideo")
    latent["inputs"].update(width=64, height=32, length=5)
    (sampler,) = _nodes_of(api, "KSampler")
    sampler["inputs"]["steps"] = 2
    by_type = _run(api, {
        "UNETLoader": (tiny_comfy.patcher(base),),
        "CLIPLoader": (tiny_comfy.StubClip(tiny_comfy.TINY_WAN["text_dim"]),),
        "VAELoader": (tiny_comfy.wan_vae(),),
    })
    assert set(keys) <= _patched_keys(by_type["LoraLoaderModelOnly"][0])
    frames = by_type["Pano360CircularVAEDecode"][0]
    assert frames.shape == (5, 32, 64, 3) and bool(torch.isfinite(frames).all())
    path = by_type["Pano360Save360Video"][0]
    assert pathlib.Path(path).is_file() and path.endswith(".mp4")


def test_ltx_360_video_needs_comfyuis_ltx2_nodes(comfy_in_process):
    api = _api("ltx_360_video")
    classes = node_classes()
    # ComfyUI's LTX-2 nodes, and the ManualSigmas its LTX-2.3 templates use, are newer than 0.3.64
    from pano360.client.workflows_cli import min_comfyui

    newer = set(min_comfyui("ltx_360_video")[1])
    missing = sorted({n["class_type"] for n in api.values()} - set(classes))
    if newer <= set(classes):
        assert missing == [], missing  # 0.33: every node type of the workflow exists
    else:
        assert set(missing) == newer, missing  # 0.3.64: refused for exactly those node types


def _model_files(api: dict) -> list[str]:
    return sorted({v for n in api.values() for v in n["inputs"].values()
                   if isinstance(v, str) and v.endswith((".safetensors", ".sft", ".ckpt", ".pt"))})


@pytest.mark.parametrize("name", ["flux_360_lora_panorama", "wan_360_lora_video", "ltx_360_video"])
def test_workflow_passes_comfyuis_own_prompt_validation(comfy_in_process, monkeypatch, name):
    """ComfyUI's own ``execution.validate_prompt`` (what POST /prompt runs: node types,
    links and their types, widget types, ranges and choices) accepts the API workflow, with
    its model files present in the model folders.  On 0.3.64 the LTX-2.3 workflow is the one
    exception, refused for a missing node type."""
    import asyncio

    import execution
    import folder_paths
    import nodes

    api = _api(name)
    classes = node_classes()
    for class_type, cls in classes.items():
        if class_type not in nodes.NODE_CLASS_MAPPINGS:
            monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, class_type, cls)
    files = _model_files(api)
    listed = folder_paths.get_filename_list
    monkeypatch.setattr(folder_paths, "get_filename_list", lambda folder: sorted(set(listed(folder)) | set(files)))
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("sphere-test", api, None))[:4]
    missing = sorted({n["class_type"] for n in api.values()} - set(nodes.NODE_CLASS_MAPPINGS))
    if name == "ltx_360_video" and missing:
        # 0.3.64 says "invalid_prompt: Cannot execute because node X does not exist", later
        # versions "missing_node_type"; either way for the first of the missing LTX-2 nodes
        assert not valid and error["type"] in ("missing_node_type", "invalid_prompt"), error
        assert any(f"{m} does not exist" in error["message"] or m in str(error.get("extra_info")) for m in missing), error
        return
    assert (valid, error, node_errors) == (True, None, {}), (error, node_errors)
    saver = [nid for nid, n in api.items() if n["class_type"].startswith("Pano360Save360")]
    assert outputs == saver
