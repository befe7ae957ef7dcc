"""The CogVideoX VAE on both hosts (issue 12, GGI on ComfyUI 0.3.64).

- CogVideoX's VAE file (diffusers keys) through the pack's loader gives a ComfyUI VAE on either
  version: encode/decode shapes as ComfyUI's video VAEs and values equal to diffusers'
  ``AutoencoderKLCogVideoX`` on the same weights; stock VAE Encode / VAE Decode accept it.
- On 0.33, ComfyUI's native ``comfy.ldm.cogvideo.vae`` on the same weights agrees with diffusers
  (an independent implementation), and the real 5B layout is routed to it.
- The GGI half of the bundled ``videofrom3d_scene_video`` workflow runs on tiny models with the
  workflow's own node graph and widget values (tests/host/api_graph.py).
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
# 4 levels (8x spatial, 4x causal temporal as CogVideoX), 32 channels (GroupNorm 32), 1 layer per block
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=16, norm_num_groups=32,
                scaling_factor=0.7)
HW = (32, 48)  # GGI test size (latents 4x6)
ENC_TOL = 1e-4   # float32, same weights: the adapter is diffusers itself (layout and range only)


def _tiny_vae_sd():
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    ref = AutoencoderKLCogVideoX(**TINY_VAE).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in ref.named_parameters():  # random but tame: norm gains near 1, everything else small
            gain = p.ndim == 1 and n.endswith("weight")
            p.copy_((1.0 if gain else 0.0) + (0.1 if gain else 0.05) * torch.randn(p.shape, generator=g))
    return ref, {k: v.contiguous() for k, v in ref.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_vae_file(comfy_in_process):
    ref, sd = _tiny_vae_sd()
    folder = comfy_in_process.folder_paths.get_folder_paths("vae")[0]
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, "vf3d_tiny_cogvideox_vae.safetensors"))
    comfy_in_process.folder_paths.filename_list_cache.pop("vae", None)
    return ref, "vf3d_tiny_cogvideox_vae.safetensors"


def _frames(t=9, hw=HW, seed=2):
    return torch.rand(t, *hw, 3, generator=torch.Generator().manual_seed(seed))


def test_loader_node_gives_a_comfyui_vae_equal_to_diffusers(comfy_in_process, tiny_vae_file):
    import nodes as comfy_nodes

    from pano360.nodes import videofrom3d as vf

    ref, name = tiny_vae_file
    vae = vf.Pano360VF3DCogVideoXVAELoader.execute(vae_name=name, tiling=False, backend="auto")[0]
    frames = _frames()
    lat = comfy_nodes.VAEEncode().encode(vae, frames)[0]["samples"]
    assert lat.shape == (1, 16, 3, HW[0] // 8, HW[1] // 8)  # 9 frames -> 1 + 8/4 latent frames
    with torch.no_grad():
        want = ref.encode(frames.movedim(-1, 0)[None] * 2 - 1).latent_dist.mean
        torch.testing.assert_close(lat.float(), want, atol=ENC_TOL, rtol=0)
        images = comfy_nodes.VAEDecode().decode(vae, {"samples": lat})[0]
        assert images.shape == (9, *HW, 3) and float(images.min()) >= 0 and float(images.max()) <= 1
        dec = ((ref.decode(lat.float()).sample + 1) / 2).clamp(0, 1)[0].movedim(0, -1)
        torch.testing.assert_close(images.float(), dec, atol=ENC_TOL, rtol=0)
    assert vae.spacial_compression_encode() == 8 and vae.temporal_compression_decode() == 4
    assert vae.downscale_ratio[0](49) == 13 and vae.upscale_ratio[0](13) == 49


def test_loader_refuses_other_files_by_name(comfy_in_process, tmp_path):
    from pano360.nodes import videofrom3d as vf
    from pano360.nodes._common import NodeInputError

    folder = comfy_in_process.folder_paths.get_folder_paths("vae")[0]
    os.makedirs(folder, exist_ok=True)
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, os.path.join(folder, "vf3d_not_cogvideox.safetensors"))
    comfy_in_process.folder_paths.filename_list_cache.pop("vae", None)
    with pytest.raises(NodeInputError, match="vae_name"):
        vf.Pano360VF3DCogVideoXVAELoader.execute(vae_name="vf3d_not_cogvideox.safetensors", tiling=True, backend="auto")


@pytest.mark.comfy_min_version((0, 33))  # comfy/ldm/cogvideo/vae.py: new in 0.33; deselected on 0.3.64
def test_native_cogvideox_vae_agrees_with_diffusers_and_takes_the_5b_layout(comfy_in_process):
    try:
        from comfy.ldm.cogvideo.vae import AutoencoderKLCogVideoX as Native
    except ImportError:
        pytest.skip("this ComfyUI has no native CogVideoX VAE (0.3.64): the diffusers path is the only one")
    from diffusers import AutoencoderKLCogVideoX

    from pano360.models.cogvideox_vae import cogvideox_vae_config, is_native_layout

    ref, sd = _tiny_vae_sd()
    native = Native(block_out_channels=TINY_VAE["block_out_channels"], layers_per_block=1, latent_channels=16).eval()
    native.load_state_dict(sd, strict=True)
    x = _frames().movedim(-1, 0)[None] * 2 - 1  # 9 frames: CogVideoX's 8k + 1
    z = torch.randn(1, 16, 3, HW[0] // 8, HW[1] // 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        # the same layers: equal in one pass (no frame chunks) and in diffusers' decode batching
        ref.num_sample_frames_batch_size = native.num_sample_frames_batch_size = 64
        torch.testing.assert_close(native.encode(x), ref.encode(x).latent_dist.mean, atol=ENC_TOL, rtol=0)
        torch.testing.assert_close(native._decode_batched(z), ref.decode(z).sample, atol=ENC_TOL, rtol=0)
        # ... but by default each chunks the frames its own way (diffusers 9 + 8k, ComfyUI 1 + 8k; ComfyUI
        # decodes rolling), and neither is chunk-invariant: why the loader offers backend "diffusers"
        ref.num_sample_frames_batch_size = native.num_sample_frames_batch_size = 8
        gap = float((native.encode(x) - ref.encode(x).latent_dist.mean).abs().max())
        assert gap > 100 * ENC_TOL, gap
    with torch.device("meta"):
        full = AutoencoderKLCogVideoX()  # CogVideoX-5B's layout (the defaults of vae/config.json)
    assert is_native_layout(cogvideox_vae_config(full.state_dict()))
    assert not is_native_layout(cogvideox_vae_config(sd))


def test_ggi_half_of_the_scene_workflow_runs_on_tiny_models(comfy_in_process, tiny_vae_file, monkeypatch, tmp_path):
    """Nodes 3 and 13-18 of workflows/api/videofrom3d_scene_video.json with the workflow's widget values
    (arcs at toy sizes): the GGI Loader reads a tiny checkpoint folder, the CogVideoX VAE Loader the tiny
    VAE file; the text encoder and the SAG anchors come in as tensors (no tiny T5 / Flux VAE loads)."""
    from diffusers import CogVideoXTransformer3DModel

    import api_graph
    import pano360.nodes.videofrom3d as vf
    from pano360.models.ggi_transformer import ggi_config
    from pano360.pipelines.videofrom3d.noise_warp import NoiseWarpSettings

    prompt = json.loads((ROOT / "workflows" / "api" / "videofrom3d_scene_video.json").read_text())
    assert prompt["17"]["class_type"] == "Pano360VF3DCogVideoXVAELoader"  # the loader that works on both hosts
    prompt["17"]["inputs"]["vae_name"] = tiny_vae_file[1]
    prompt["17"]["inputs"]["tiling"] = False
    # a tiny GGI checkpoint folder (config.json + one shard) in models/videofrom3d
    cfg = dict(ggi_config(), num_attention_heads=3, attention_head_dim=16, num_layers=1, time_embed_dim=16,
               text_embed_dim=8, sample_width=HW[1] // 8, sample_height=HW[0] // 8, max_text_seq_length=4)
    torch.manual_seed(3)
    net = CogVideoXTransformer3DModel(**cfg)
    folder = os.path.join(comfy_in_process.folder_paths.get_folder_paths("videofrom3d")[0], "tiny-ggi", "transformer")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    prompt["13"]["inputs"]["checkpoint"] = "tiny-ggi"
    prompt["2"]["inputs"]["arcs"] = 1
    prompt["18"]["inputs"]["steps"] = 2
    monkeypatch.setattr(vf, "GGI_HW", HW)
    monkeypatch.setattr(vf, "EDGE_HW", (64, 96))
    monkeypatch.setattr(vf, "CORRES_HW", (8, 12))
    monkeypatch.setattr(vf, "NOISE", NoiseWarpSettings(channels=16, flow_scale=2, downscale=4))
    g = torch.Generator().manual_seed(4)
    given = {
        "11": (torch.rand(2, *HW, 3, generator=g),),  # the SAG anchors (Flux: not tiny-loadable here)
        "14": (None,),  # CLIPLoader (T5-XXL)
        "15": ([[torch.randn(1, 4, 8, generator=g), {}]],),
        "16": ([[torch.randn(1, 4, 8, generator=g), {}]],),
    }
    prompt["3"]["inputs"]["save_prefix"] = ""
    out = api_graph.run(prompt, ["18"], given=given)
    frames = out["18"][0]
    assert frames.shape == (46, *HW, 3) and torch.isfinite(frames).all()
