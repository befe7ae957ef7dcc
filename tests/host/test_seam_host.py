"""Seam nodes and the Look Beyond loop inside a real ComfyUI (0.3.64).

In process: the roll patch on a real ComfyUI MODEL (a tiny random SD1.5-style UNet built
from ComfyUI's own classes) under ComfyUI's own sampler; the blended decode node on 4-D
and 5-D latents; the perspective loop node writing into ComfyUI's output folder.
Over HTTP: the shipped seamless-panorama workflow on a random SD1.5 checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import ROOT

WORKFLOW = ROOT / "workflows" / "api" / "seamless_panorama.json"

# A tiny SD1.5-style UNet (same classes and code paths as SD1.5, 32 channels).
TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "channel_mult": [1, 2],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 32, "num_heads": 2,
    "transformer_depth_output": [1, 1, 1, 1], "use_temporal_attention": False, "use_temporal_resblock": False,
}


CFG = 5.0


@pytest.fixture(scope="module")
def tiny_model(comfy_in_process):
    """A ComfyUI ModelPatcher around a seeded random tiny SD1.5-style UNet (EPS)."""
    import comfy.model_patcher
    import comfy.supported_models

    model = comfy.supported_models.SD15(dict(TINY_UNET)).get_model({})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def sample(model, noise, steps, callback=None):
    import comfy.sample

    g = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 77, 32, generator=g), {}]]
    negative = [[torch.zeros(1, 77, 32), {}]]
    return comfy.sample.sample(model, noise, steps, CFG, "euler", "karras", positive, negative,
                               torch.zeros_like(noise), seed=0, disable_pbar=True, callback=callback)


def test_roll_patch_turns_model_input_every_step_under_ksampler(comfy_in_process, tiny_model):
    from pano360.nodes.seam import Pano360SeamRollPatch

    seen, predicted = [], []

    def spy(apply_model, args):  # installed first: the patch wraps it, so it sees what the UNet sees
        seen.append(args["input"].clone())
        out = apply_model(args["input"], args["timestep"], **args["c"])
        predicted.append((out.clone(), list(args["cond_or_uncond"])))
        return out

    spied = tiny_model.clone()
    spied.set_model_unet_function_wrapper(spy)
    patched = comfy_in_process.run_node(Pano360SeamRollPatch, model=spied, enable=True,
                                        roll_fraction=0.25, every_k_steps=1).result[0]
    assert spied.model_options["model_function_wrapper"] is spy, "the input model was modified"

    states, denoised = [], []

    def callback(step, x0, x, total):
        states.append(x.clone())
        denoised.append(x0.clone())

    noise = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(2))
    out = sample(patched, noise, 4, callback=callback)
    assert len(seen) == len(states) == 4 and torch.isfinite(out).all()
    for step, (model_input, x) in enumerate(zip(seen, states)):
        # cond and uncond are batched together; both see the canonical state turned by 4·step columns
        for half in model_input.chunk(2):
            torch.testing.assert_close(half, torch.roll(x, 4 * step, dims=-1), rtol=0, atol=0)
        # the sampler's prediction is CFG of the model's outputs turned back
        out_model, order = predicted[step]
        halves = dict(zip(order, (torch.roll(h, -4 * step, dims=-1) for h in out_model.chunk(2))))
        cfg = halves[1] + CFG * (halves[0] - halves[1])  # 0 = positive, 1 = negative (comfy/samplers.py)
        torch.testing.assert_close(denoised[step], cfg, rtol=1e-5, atol=1e-5)

    plain = sample(tiny_model, noise, 4)
    assert (plain - out).abs().max() > 1e-3, "the patch changed nothing"


def test_roll_patch_disabled_passes_model_through(comfy_in_process, tiny_model):
    from pano360.nodes.seam import Pano360SeamRollPatch

    out = comfy_in_process.run_node(Pano360SeamRollPatch, model=tiny_model, enable=False,
                                    roll_fraction=0.25, every_k_steps=1).result[0]
    assert out is tiny_model


class StubVAE:
    """Duck-typed ComfyUI VAE: ×8 nearest upsampling, channels last; 5-D gives [B,T,H,W,C]."""

    def __init__(self):
        self.calls = 0

    def decode(self, latent):
        self.calls += 1
        up = latent[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)
        img = up.movedim(1, -1).clone()
        img[..., :8, :] = 0.0  # a border artefact on the left
        return img


@pytest.mark.parametrize("shape,expected", [((2, 4, 4, 8), (2, 32, 64, 3)), ((1, 4, 3, 4, 8), (3, 32, 64, 3))],
                         ids=["image", "video"])
def test_blended_decode_node_shapes_and_seam(comfy_in_process, shape, expected):
    from pano360.nodes.seam import Pano360SeamBlendedVAEDecode

    latent = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    vae = StubVAE()
    image = comfy_in_process.run_node(Pano360SeamBlendedVAEDecode, samples={"samples": latent}, vae=vae,
                                      blend_ratio=4.0, batch_chunk=1).result[0]
    assert image.shape == expected and vae.calls == 2 * shape[0]
    clean = latent[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2).movedim(1, -1).reshape(expected)
    torch.testing.assert_close(image, clean, rtol=0, atol=1e-6)


def test_blended_decode_node_names_bad_latent(comfy_in_process):
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.seam import Pano360SeamBlendedVAEDecode

    with pytest.raises(NodeInputError, match="samples"):
        comfy_in_process.run_node(Pano360SeamBlendedVAEDecode, samples={"samples": torch.zeros(1, 4, 4, 7)},
                                  vae=StubVAE(), blend_ratio=16.0, batch_chunk=0)


def test_perspective_loop_node_writes_frames_and_poses(comfy_in_process):
    pytest.importorskip("pano360.projection.geometry", reason="projection core not merged")
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop
    from pano360.cameras.formats import parse_rows as parse_pose_txt

    h = 32
    lon = ((torch.arange(2 * h) + 0.5) / (2 * h) - 0.5) * 2 * math.pi
    pano = torch.stack([0.5 + 0.4 * torch.cos(lon), 0.5 + 0.4 * torch.sin(lon), 0.5 + 0 * lon], -1)
    pano = pano.expand(1, h, 2 * h, 3).contiguous()
    out = comfy_in_process.run_node(Pano360LookBeyondPerspectiveLoop, panorama=pano, num_frames=4, fov=90.0, size=16,
                                    cameras_between=0, folder_prefix="lookbeyond/test", save=True).result
    frames, folder, pose_text = out
    assert frames.shape == (4, 16, 16, 3)
    assert folder.startswith(comfy_in_process.folder_paths.get_output_directory())
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "00002.png", "00003.png", "pose.txt"]
    rows = parse_pose_txt(open(os.path.join(folder, "pose.txt")).read())
    assert [r.frame_id for r in rows] == [0, 1, 2, 3]
    # each frame's centre shows the panorama at its yaw (linspace(180, -180, 4))
    for k, yaw in enumerate(np.linspace(180, -180, 4)):
        centre = frames[k, 7:9, 7:9].mean((0, 1))
        expected = torch.tensor([0.5 + 0.4 * math.cos(math.radians(yaw)), 0.5 + 0.4 * math.sin(math.radians(yaw)), 0.5])
        torch.testing.assert_close(centre, expected, rtol=0, atol=0.03)
    assert not [n for n in os.listdir(os.path.dirname(folder)) if n.startswith(".")], "temporary folder left behind"


def test_camera_path_node_reads_the_perspective_loops_own_pose_file(comfy_in_process):
    """The Perspective Loop's pose.txt goes back through the Camera Path node (the pack's one
    RealEstate10K reader) and gives the loop's cameras: yaw linspace(180, -180, N), pitch and
    roll 0, FOV 90 (compared as rotations, so 180 and -180 are the same camera)."""
    from pano360.nodes.cameras import Pano360CameraPath
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop
    from pano360.projection import rotation_matrix

    h = 16
    pano = torch.rand(1, h, 2 * h, 3, generator=torch.Generator().manual_seed(0))
    n = 5
    _, folder, _ = comfy_in_process.run_node(Pano360LookBeyondPerspectiveLoop, panorama=pano, num_frames=n, fov=90.0,
                                             size=8, cameras_between=0, folder_prefix="lookbeyond/readback",
                                             save=True).result
    out_dir = comfy_in_process.folder_paths.get_output_directory()
    file = os.path.relpath(os.path.join(folder, "pose.txt"), out_dir) + " [output]"
    kw = dict(fov_deg=60.0, num_frames=n, keyframes="", fov_file="", pose_conversion="exact", estimate_fov=False,
              yaw_offset_deg=0.0)
    path = comfy_in_process.run_node(Pano360CameraPath, source="realestate10k_txt", file=file, relative_to_first=False,
                                     **kw).result[0]
    yaw = torch.tensor(np.radians(np.linspace(180, -180, n)), dtype=torch.float64)
    expected = rotation_matrix(yaw, torch.zeros_like(yaw), torch.zeros_like(yaw))
    torch.testing.assert_close(path.rotations(), expected, rtol=0, atol=1e-7)  # pose.txt keeps 9 digits
    # the loop's FOV 90 is Look Beyond's (border pixel centres on the frustum edges, issue 17):
    # through the pixel edges of 8-pixel frames that is 2 atan(tan 45 * 8 / 7)
    assert path.fov_x == pytest.approx([2 * math.atan(8 / 7)] * n)
    assert torch.equal(path.positions(), torch.zeros(n, 3))
    relative = comfy_in_process.run_node(Pano360CameraPath, source="realestate10k_txt", file=file,
                                         relative_to_first=True, **kw).result[0]
    assert relative.yaw[0] == pytest.approx(0.0) and relative.yaw[1] == pytest.approx(math.radians(-90.0))


def test_seamless_panorama_workflow_runs_on_random_sd15(comfy_server, sd15_checkpoint):
    from pano360.client.schema import SchemaSet
    from pano360.client.validate import errors_only, validate_prompt

    prompt = json.loads(WORKFLOW.read_text())
    schemas = SchemaSet([comfy_server.object_info()])
    assert not errors_only(validate_prompt(prompt, schemas)), "the shipped workflow does not validate"

    small = copy.deepcopy(prompt)
    for node in small.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = sd15_checkpoint
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=128, height=64)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
    entry = comfy_server.run(small, timeout=600)
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert len(images) == 1
    path = comfy_server.base / "output" / images[0]["subfolder"] / images[0]["filename"]
    from PIL import Image

    assert Image.open(path).size == (128, 64)


@pytest.mark.parametrize("prefix", ["../escape", "/abs/path", "a/../../b", ".", "./.", ""])
def test_perspective_loop_refuses_folders_outside_output(comfy_in_process, prefix):
    pytest.importorskip("pano360.projection.geometry", reason="projection core not merged")
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop

    assert "folder_prefix" in Pano360LookBeyondPerspectiveLoop.validate_inputs(folder_prefix=prefix)
    with pytest.raises(NodeInputError, match="folder_prefix"):
        comfy_in_process.run_node(Pano360LookBeyondPerspectiveLoop, panorama=torch.rand(1, 8, 16, 3), num_frames=2,
                                  fov=90.0, size=8, cameras_between=0, folder_prefix=prefix, save=True)


def test_perspective_loop_prefix_with_a_trailing_slash_writes_inside_output(comfy_in_process):
    """A trailing slash names the same prefix as without it (``os.path`` normalisation, as
    ComfyUI's own save check does): the numbered folder lands inside the output folder."""
    from pano360.nodes.lookbeyond import Pano360LookBeyondPerspectiveLoop

    out_dir = os.path.realpath(comfy_in_process.folder_paths.get_output_directory())
    _, folder, _ = comfy_in_process.run_node(Pano360LookBeyondPerspectiveLoop, panorama=torch.rand(1, 8, 16, 3),
                                             num_frames=2, fov=90.0, size=8, cameras_between=0,
                                             folder_prefix="lookbeyond/trailing/", save=True).result
    assert os.path.commonpath([out_dir, os.path.realpath(folder)]) == out_dir
    assert os.path.relpath(os.path.dirname(os.path.realpath(folder)), out_dir) == "lookbeyond"
    assert os.path.basename(folder).startswith("trailing_")
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "pose.txt"]
