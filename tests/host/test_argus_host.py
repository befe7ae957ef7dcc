"""Argus inside a real ComfyUI: the UNet loader against diffusers, and the bundled workflow.

Reference for the loader: diffusers' own ``UNetSpatioTemporalConditionModel`` with the same
random weights and inputs.  ComfyUI's detection matches only the full-size SVD config, so the
loader always builds ComfyUI's ``SVD_img2vid`` from the detected sizes (nodes/_host.py); this
is how the tiny configuration below loads.
"""

from __future__ import annotations

import asyncio
import json
import math
import pathlib
import shutil

import pytest
import torch
from _tiny_models import TINY_SVD_CONFIG

OUTPUT_TOL = 1e-4  # float32, same maths in a different operation order
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNetSpatioTemporalConditionModel(**TINY_SVD_CONFIG).eval()
    with torch.no_grad():  # diffusers zero-initialises some layers; make every weight matter
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path_factory.mktemp("argus") / "argus-tiny"
    unet.save_pretrained(folder / "unet")
    return unet, folder


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding, cos first (SGM's and diffusers' flip_sin_to_cos convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def test_tiny_diffusers_unet_loads_through_argus_loader_and_matches_diffusers(comfy_in_process, tiny_unet):
    from pano360.models.svd_unet import read_unet_source
    from pano360.nodes.argus import load_argus_unet

    unet, folder = tiny_unet
    weights, config = read_unet_source(str(folder))
    patcher = load_argus_unet(weights, config, dtype=torch.float32)
    comfy_unet = patcher.model.diffusion_model
    assert type(patcher.model).__name__ == "SVD_img2vid"

    T, h, w = 3, 8, 16
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, T, 8, h, w, generator=g)
    tokens = torch.randn(1, T, 16, generator=g)  # Argus: T CLIP tokens as the context
    ids = torch.tensor([[4.0, 127.0, 0.02]])
    t = torch.tensor(0.7)
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=tokens, added_time_ids=ids).sample[0]
        y = _timestep_embedding(ids[0], 8).reshape(1, -1).expand(T, -1)
        out = comfy_unet(
            sample[0], timesteps=t.expand(T), context=tokens.expand(T, -1, -1), y=y,
            num_video_frames=T, image_only_indicator=torch.zeros(1, T),
        )
    assert out.shape == ref.shape == (T, 4, h, w)
    assert (out - ref).abs().max().item() < OUTPUT_TOL * max(1.0, ref.abs().max().item())


def test_unet_file_with_a_missing_key_is_refused_by_name(comfy_in_process, tiny_unet, tmp_path):
    from safetensors.torch import load_file, save_file

    from pano360.nodes._common import NodeInputError
    from pano360.nodes.argus import load_argus_unet

    _, folder = tiny_unet
    sd = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    gone = "up_blocks.1.attentions.0.temporal_transformer_blocks.0.ff.net.2.weight"
    del sd[gone]
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken))
    with pytest.raises(NodeInputError, match=gone.replace(".", r"\.")):
        load_argus_unet(str(broken), json.loads((folder / "unet" / "config.json").read_text()))


def test_argus_workflow_validates_against_object_info(comfy_server):
    info = comfy_server.object_info()
    prompt = json.loads((ROOT / "workflows" / "api" / "argus_video_to_360.json").read_text())
    for node_id, node in prompt.items():
        cls = node["class_type"]
        assert cls in info, f"node {node_id}: {cls} is not a registered node"
        spec = info[cls]["input"]
        names = set(spec.get("required", {})) | set(spec.get("optional", {}))
        for name, value in node["inputs"].items():
            assert name in names, f"node {node_id} ({cls}): no input {name!r}; has {sorted(names)}"
            if isinstance(value, list):
                assert value[0] in prompt, f"node {node_id}: input {name} links to missing node {value[0]}"
        missing = set(spec.get("required", {})) - set(node["inputs"])
        assert not missing, f"node {node_id} ({cls}): required inputs not set: {sorted(missing)}"


# ---------------------------------------------------------------- nodes, with stub encoders

# SVD's own time-id width (ComfyUI's SVD_img2vid embeds each id with 256 channels), so the
# tiny model runs through ComfyUI's sampler with real SVD conditioning.
TINY_SAMPLING_CONFIG = dict(TINY_SVD_CONFIG, addition_time_embed_dim=256, projection_class_embeddings_input_dim=768)
TOKEN_DIM = TINY_SVD_CONFIG["cross_attention_dim"]


class StubClipVision:
    """``encode_image(image [B,H,W,C], crop)`` -> ``.image_embeds`` (B, TOKEN_DIM)."""

    def __init__(self):
        self.crops = []

    def encode_image(self, image, crop=True):
        self.crops.append(crop)
        feats = image.mean((1, 2))  # (B, C)
        return type("Out", (), {"image_embeds": feats.repeat(1, TOKEN_DIM)[:, :TOKEN_DIM]})()


class StubVAE:
    """8× down/up sampling, 4 latent channels: enough to check shapes and data flow."""

    def encode(self, pixels):  # [B,H,W,C] -> [B,4,H/8,W/8]
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([x, x[:, :1]], 1)

    def decode(self, latent):  # [B,4,h,w] -> [B,8h,8w,3]
        x = torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest")
        return x.clamp(0, 1).movedim(1, -1)


def _small_inputs(T=3, H=32):
    from pano360.cameras import constant_path
    from pano360.pipelines.argus.conditioning import place_frames_on_sphere

    frames = torch.rand(T, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    erp, mask = place_frames_on_sphere(frames, constant_path(T, 90.0), (H, 2 * H))
    return erp.movedim(1, -1), mask[:, 0], frames.movedim(1, -1)


def test_perspective_to_equirect_node_outputs_masked_frames(comfy_in_process):
    from pano360.nodes.argus import Pano360PerspectiveToEquirect
    from pano360.cameras import keyframe_path

    frames = torch.rand(4, 12, 16, 3)
    path = keyframe_path("0:yaw=0; 3:yaw=90", 4, fov_deg=60.0)
    out = comfy_in_process.run_node(Pano360PerspectiveToEquirect, frames=frames, camera_path=path, width=128, height=64,
                                   input_long_side=0)
    erp, mask = out.result
    assert erp.shape == (4, 64, 128, 3) and mask.shape == (4, 64, 128)
    cols = [mask[t].nonzero()[:, 1].float().mean().item() for t in range(4)]
    assert cols == sorted(cols) and cols[-1] - cols[0] == pytest.approx(32, abs=1)  # 90° = W/4 to the right
    assert erp[mask == 0].abs().max() == 0


def test_camera_path_node_names_the_bad_input(comfy_in_process):
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.cameras import Pano360CameraPath

    kw = dict(fov_deg=90.0, num_frames=5, keyframes="0:yaw=0", file="", fov_file="", pose_conversion="exact",
              estimate_fov=False, yaw_offset_deg=10.0)
    out = comfy_in_process.run_node(Pano360CameraPath, source="keyframes", **dict(kw, keyframes="0:yaw=0; 4:yaw=40"))
    path, text = out.result
    assert path.num_frames == 5 and math.degrees(path.yaw[4]) == pytest.approx(50.0)
    assert text.splitlines()[5].startswith("4 50.000")
    with pytest.raises(NodeInputError, match="'keyframes'"):
        comfy_in_process.run_node(Pano360CameraPath, source="keyframes", **dict(kw, keyframes="0:zoom=2"))
    assert "unknown name 'zoom'" in Pano360CameraPath.validate_inputs(source="keyframes", keyframes="0:zoom=2")
    assert "not a number" in Pano360CameraPath.validate_inputs(source="keyframes", keyframes="0:yaw=left")
    assert Pano360CameraPath.validate_inputs(source="keyframes", keyframes="0:yaw=0; 24:yaw=90,fov=60") is True
    assert Pano360CameraPath.validate_inputs(source="manual_fov", keyframes="0:zoom=2") is True   # not used
    with pytest.raises(NodeInputError, match="'file'"):
        comfy_in_process.run_node(Pano360CameraPath, source="megasam_npz", **dict(kw, file="no_such.npz"))
    with pytest.raises(NodeInputError, match="'video'"):
        comfy_in_process.run_node(Pano360CameraPath, source="estimate_from_video", **kw)


def test_conditioning_node_builds_svd_conds_and_zero_negative(comfy_in_process):
    from pano360.nodes.argus import Pano360ArgusConditioning

    erp, mask, frames = _small_inputs()
    clip = StubClipVision()
    out = comfy_in_process.run_node(
        Pano360ArgusConditioning, clip_vision=clip, vae=StubVAE(), equirect=erp, mask=mask, frames=frames,
        fps=5, motion_bucket_id=127, noise_aug=0.02, seed=3,
    )
    positive, negative, latent = out.result
    assert clip.crops == [False]  # straight resize to 224², as Argus
    tokens, extra = positive[0]
    assert tokens.shape == (1, 3, TOKEN_DIM)
    assert extra["concat_latent_image"].shape == (3, 4, 4, 8)
    assert (extra["fps"], extra["motion_bucket_id"], extra["augmentation_level"]) == (5, 127, 0.02)
    assert negative[0][0].abs().sum() == 0 and negative[0][1]["concat_latent_image"].abs().sum() == 0
    assert latent["samples"].shape == (3, 4, 4, 8) and latent["samples"].abs().sum() == 0


@pytest.fixture(scope="module")
def tiny_sampling_model(comfy_in_process, tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    from pano360.models.svd_unet import read_unet_source
    from pano360.nodes.argus import load_argus_unet

    torch.manual_seed(0)
    unet = diffusers.UNetSpatioTemporalConditionModel(**TINY_SAMPLING_CONFIG)
    folder = tmp_path_factory.mktemp("argus_sampling") / "tiny"
    unet.save_pretrained(folder / "unet")
    weights, config = read_unet_source(str(folder))
    return load_argus_unet(weights, config, dtype=torch.float32)


def test_long_video_node_samples_windows_with_comfy_sampler(comfy_in_process, tiny_sampling_model):
    from pano360.nodes._bundles import SamplerSettings, WindowSettings
    from pano360.nodes.argus import Pano360ArgusLongVideo

    erp, mask, frames = _small_inputs(T=7)
    out = comfy_in_process.run_node(
        Pano360ArgusLongVideo, model=tiny_sampling_model, clip_vision=StubClipVision(), vae=StubVAE(),
        equirect=erp, mask=mask, frames=frames, fps=5, motion_bucket_id=127, noise_aug=0.02, blend_ratio=16.0,
        settings=SamplerSettings(seed=1, steps=2, cfg=3.0, sampler_name="euler", scheduler="karras"),
        window_settings=WindowSettings(window=5, overlap=2),
    )
    samples = out.result[0]["samples"]
    assert samples.shape == (7, 4, 4, 8)
    assert torch.isfinite(samples).all() and samples.abs().sum() > 0


def test_sgm_layout_single_file_with_prefix_loads_the_same_weights(comfy_in_process, tiny_unet, tmp_path):
    from safetensors.torch import load_file, save_file

    from pano360.models.svd_unet import convert_diffusers_svd_unet_keys
    from pano360.nodes.argus import load_argus_unet

    _, folder = tiny_unet
    diffusers_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sgm = convert_diffusers_svd_unet_keys(load_file(str(diffusers_file)))
    single = tmp_path / "argus_sgm.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in sgm.items()}, str(single))
    config = json.loads((folder / "unet" / "config.json").read_text())
    a = load_argus_unet(str(diffusers_file), config, dtype=torch.float32).model.diffusion_model.state_dict()
    b = load_argus_unet(str(single), config, dtype=torch.float32).model.diffusion_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_lists_argus_and_diffusion_models_files(comfy_in_process):
    import pano360.nodes.argus  # noqa: F401  (registers the folder)
    from pano360.nodes import _host

    fp = comfy_in_process.folder_paths
    argus_dir = pathlib.Path(fp.get_folder_paths("argus")[0]) / "pretrained-weights" / "unet"
    other_dir = pathlib.Path(fp.get_folder_paths("diffusion_models")[0])
    argus_dir.mkdir(parents=True, exist_ok=True)
    other_dir.mkdir(parents=True, exist_ok=True)
    made = [argus_dir / "diffusion_pytorch_model.safetensors", other_dir / "argus_single.safetensors"]
    try:
        for f in made:
            f.write_bytes(b"")
        names = _host.model_file_list("argus")
        assert "pretrained-weights/unet/diffusion_pytorch_model.safetensors" in names
        assert "argus_single.safetensors" in names
        assert _host.model_file_path("argus", "argus_single.safetensors") == str(made[1])
    finally:  # the in-process ComfyUI is shared by the session: leave its model folders empty
        for f in made:
            f.unlink(missing_ok=True)
        shutil.rmtree(argus_dir.parent, ignore_errors=True)


def test_camera_path_reruns_when_its_file_changes(comfy_in_process):
    import os
    import pathlib

    import folder_paths

    from pano360.nodes.cameras import Pano360CameraPath

    f = pathlib.Path(folder_paths.get_input_directory()) / "motion_fingerprint.txt"
    f.write_text("0 0\n0 0\n0 0\n")
    try:
        first = Pano360CameraPath.fingerprint_inputs(source="argus_motion_txt", file=f.name, fov_file="")
        os.utime(f, (1, 1))
        assert Pano360CameraPath.fingerprint_inputs(source="argus_motion_txt", file=f.name, fov_file="") != first
    finally:
        f.unlink()


def test_camera_path_refuses_files_outside_the_input_folder(comfy_in_process, tmp_path):
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.cameras import Pano360CameraPath

    outside = tmp_path / "secret.txt"
    outside.write_text("0 0\n0 0\n0 0\n")
    kw = dict(fov_deg=90.0, num_frames=2, keyframes="", fov_file="", pose_conversion="exact",
              estimate_fov=False, yaw_offset_deg=0.0)
    for value in (str(outside), "../" * 12 + str(outside).lstrip("/")):
        with pytest.raises(NodeInputError, match="inside ComfyUI's input folder"):
            comfy_in_process.run_node(Pano360CameraPath, source="argus_motion_txt", file=value, **kw)


def test_comfyui_still_range_checks_inputs_of_nodes_with_validate_inputs(comfy_in_process, monkeypatch):
    # ComfyUI 0.3.64 (execution.validate_inputs) skips its own min/max/list checks for every
    # input a node's validate_inputs accepts, and for all inputs when it takes **kwargs.
    import inspect

    import execution
    import nodes as comfy_nodes

    from pano360.nodes import argus, cameras, panodit, settings
    from pano360.nodes.cameras import Pano360CameraPath

    for node in argus.NODES + panodit.NODES + cameras.NODES + settings.NODES:
        if "validate_inputs" in vars(node):
            assert inspect.getfullargspec(node.validate_inputs).varkw is None, node.__name__

    monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, "Pano360CameraPath", Pano360CameraPath)
    inputs = dict(source="manual_fov", fov_deg=500.0, num_frames=25, keyframes="", file="", fov_file="",
                  pose_conversion="exact", estimate_fov=False, yaw_offset_deg=0.0, relative_to_first=True)
    ok, errors, _ = asyncio.run(execution.validate_inputs("p", {"1": {"class_type": "Pano360CameraPath",
                                                                      "inputs": inputs}}, "1", {}))
    assert not ok and [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_bigger_than_max", "fov_deg")]
