"""The bundled ``videofrom3d_360_scene`` workflow on tiny random models, both host versions.

The workflow's own graph and widget values (tests/host/api_graph.py), at toy sizes: the scene's
equirect edge maps along the camera path -> per rig view and frame edge views + the XLabs
ControlNet -> the Multi-View Sampler on ComfyUI's Flux -> VAE decode -> Equirect Stitcher -> Save
360° Video.  Flux, its ControlNet and the text are tiny objects built from ComfyUI's own classes
(their loaders build only full-size models); the VAE is a stand-in with ComfyUI's VAE interface."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLUX = dict(in_channels=64, out_channels=16, vec_in_dim=32, context_in_dim=48, hidden_size=128, mlp_ratio=4.0,
            num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
            qkv_bias=True, guidance_embed=True)
PANO_H = 32  # equirect edge maps 32x64; views 16x16 (a 2x2 Flux latent)


class StandInVAE:
    """ComfyUI's image VAE interface: IMAGE [B,H,W,3] <-> 16-channel latents at 1/8 (Flux's layout)."""

    latent_channels = 16

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.enc = torch.randn(16, 3, generator=g) * 0.3
        self.dec = torch.randn(3, 16, generator=g) * 0.05

    def spacial_compression_encode(self) -> int:
        return 8

    def encode(self, pixels):
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1) * 2 - 1, 8)
        return torch.einsum("oc,bchw->bohw", self.enc, x)

    def decode(self, latent):
        x = torch.nn.functional.interpolate(torch.einsum("oc,bchw->bohw", self.dec, latent), scale_factor=8)
        return ((x + 1) / 2).clamp(0, 1).movedim(1, -1)


def _tiny_flux_and_controlnet():
    import comfy.controlnet
    import comfy.ops
    from comfy.ldm.flux.controlnet import ControlNetFlux
    from comfy.ldm.flux.model import Flux, FluxParams

    from pano360.nodes import _host

    params = dict(FLUX)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:  # ComfyUI 0.33's Flux
        params["txt_ids_dims"] = []
    torch.manual_seed(0)
    net = Flux(operations=comfy.ops.manual_cast, **params)
    if net.img_in.in_features != 64:  # newer ComfyUI counts in_channels before patching
        params["in_channels"] = 16
        net = Flux(operations=comfy.ops.manual_cast, **params)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
    model = _host.build_model(net.state_dict(), "Flux", unet_config_overrides=dict(params), dtype=torch.float32,
                              source="tiny flux")
    cn = ControlNetFlux(latent_input=False, operations=comfy.ops.manual_cast, **params)
    with torch.no_grad():
        for p in cn.parameters():
            p.normal_(0, 0.05)
    # as comfy.controlnet.load_controlnet_flux_xlabs_mistoline wraps an XLabs ControlNet
    control = comfy.controlnet.ControlNet(cn, load_device=torch.device("cpu"), manual_cast_dtype=None,
                                          extra_conds=["y", "guidance"])
    return model, control


def _tiny_style_lora(comfy_in_process) -> str:
    """An XLabs-format LoRA for the tiny Flux in models/loras (the workflow's LoRA loader runs for real)."""
    from safetensors.torch import save_file

    h, mlp, r = FLUX["hidden_size"], int(FLUX["hidden_size"] * FLUX["mlp_ratio"]), 2
    g = torch.Generator().manual_seed(7)
    shapes = {"double_blocks.0.processor.qkv_lora1": (h, 3 * h), "double_blocks.0.processor.proj_lora1": (h, h),
              "double_blocks.0.processor.qkv_lora2": (h, 3 * h), "double_blocks.0.processor.proj_lora2": (h, h),
              "single_blocks.0.processor.qkv_lora": (h, 3 * h), "single_blocks.0.processor.proj_lora": (h + mlp, h)}
    sd = {}
    for key, (n_in, n_out) in shapes.items():
        sd[f"{key}.down.weight"] = torch.randn(r, n_in, generator=g) * 0.05
        sd[f"{key}.up.weight"] = torch.randn(n_out, r, generator=g) * 0.05
    folder = comfy_in_process.folder_paths.get_folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, "vf3d_tiny_style.safetensors"))
    comfy_in_process.folder_paths.filename_list_cache.pop("loras", None)
    return "vf3d_tiny_style.safetensors"


def test_360_scene_workflow_makes_a_2to1_equirect_video(comfy_in_process):
    import api_graph

    from pano360.media.spherical_mp4 import walk_boxes
    from pano360.media.video import count_frames, read_frames

    prompt = json.loads((ROOT / "workflows" / "api" / "videofrom3d_360_scene.json").read_text())
    prompt["3"]["inputs"].update(height=PANO_H, every_nth=45)  # 2 panoramas of the 46-frame path
    prompt["13"]["inputs"]["view_size"] = 16
    prompt["14"]["inputs"]["steps"] = 2
    prompt["18"]["inputs"]["height"] = PANO_H
    prompt["19"]["inputs"]["filename_prefix"] = "vf3d_test/360_scene"
    prompt["6"]["inputs"]["lora_name"] = _tiny_style_lora(comfy_in_process)
    model, control = _tiny_flux_and_controlnet()
    g = torch.Generator().manual_seed(1)
    text = [[torch.randn(1, 4, 48, generator=g), {"pooled_output": torch.randn(1, 32, generator=g)}]]
    given = {"5": (model,), "7": (None,), "8": (text,), "9": ([[text[0][0] * 0, dict(text[0][1])]],),
             "11": (StandInVAE(),), "12": (control,)}
    out = api_graph.run(prompt, ["19", "20"], given=given)
    edges, views, frames = out["3"][0], out["13"][3], out["18"][0]
    assert edges.shape == (2, PANO_H, 2 * PANO_H, 3) and float(edges.max()) > 0.5
    assert views.shape == (8 * 2, 16, 16, 3)  # videopanda8 rig, view-major
    assert out["13"][2]["samples"].shape == (16, 16, 2, 2)
    assert frames.shape == (2, PANO_H, 2 * PANO_H, 3) and torch.isfinite(frames).all()  # 2:1 equirect frames
    path = out["19"][0]
    assert os.path.isfile(path) and count_frames(path) == 2
    assert read_frames(path, [0, 1]).shape[1:3] == (PANO_H, 2 * PANO_H)
    assert any(name.endswith("sv3d") for name, _ in walk_boxes(path))  # spherical video metadata (v2)
    # the edge views steer the sampler through the ControlNet: without it the frames differ
    prompt2 = json.loads(json.dumps(prompt))
    prompt2["13"]["inputs"]["strength"] = 0.0
    other = api_graph.run(prompt2, ["18"], given=given)["18"][0]
    assert float((other - frames).abs().max()) > 1e-3
