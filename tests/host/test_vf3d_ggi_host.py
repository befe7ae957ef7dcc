"""GGI on the host: ComfyUI 0.33's native CogVideoX, built from the converted checkpoint with the
pack's configuration, equals diffusers' transformer (the official code's model) on a tiny config;
on 0.3.64 (no native CogVideoX) the diffusers adapter runs the same sampler."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch
from safetensors import safe_open

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
# same weights, float32, two implementations of the same layers: agreement to float32 rounding
MODEL_TOL = 1e-5


def _golden():
    spec = importlib.util.spec_from_file_location("make_vf3d_ggi_golden", DATA / "make_vf3d_ggi_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with safe_open(str(DATA / "vf3d_ggi_golden.safetensors"), "pt") as f:
        g = {k: f.get_tensor(k) for k in f.keys()}
    sd = {k[len("transformer."):]: v for k, v in g.items() if k.startswith("transformer.")}
    return mod, g, sd


def _native_cogvideox_available() -> bool:
    try:
        import comfy.ldm.cogvideo.model  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.comfy_min_version((0, 33))  # comfy/ldm/cogvideo: new in 0.33; deselected on 0.3.64
def test_native_cogvideox_with_the_pack_config_equals_diffusers(comfy_in_process):
    if not _native_cogvideox_available():
        pytest.skip("this ComfyUI has no native CogVideoX (0.3.64): the diffusers adapter is used")
    import comfy.ops
    from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel

    from pano360.models.ggi_transformer import DiffusersGGI, comfy_unet_config, convert_ggi_to_comfy

    gen, g, sd = _golden()
    cfg = dict(gen.TINY_CONFIG)
    full_cfg = dict(cfg, out_channels=16, temporal_compression_ratio=4, temporal_interpolation_scale=1.0)
    unet = {k: v for k, v in comfy_unet_config(full_cfg).items() if k != "image_model"}
    native = CogVideoXTransformer3DModel(**unet, operations=comfy.ops.disable_weight_init).eval()
    native.load_state_dict(convert_ggi_to_comfy(sd), strict=True)
    ref = DiffusersGGI.from_state_dict(cfg, sd)
    x = torch.randn(2, 48, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    ctx = torch.cat([g["neg"], g["pos"]])
    t = torch.tensor([999, 500])
    with torch.no_grad():
        torch.testing.assert_close(native(x, t, ctx), ref(x, t, ctx), atol=MODEL_TOL, rtol=0)
    # why the scale must be 1: ComfyUI's CogVideoX-1.0 rotary multiplies positions by it, the
    # official (diffusers) pipeline does not -- compare the rotary tables themselves
    from pano360.models.ggi_transformer import rotary_embedding

    cos_ref, _ = rotary_embedding(cfg, (8, 12), 3)
    cos_ours, _ = native._get_rotary_emb(4, 6, 3, device="cpu")
    torch.testing.assert_close(cos_ours, cos_ref.float(), atol=1e-6, rtol=0)
    native.spatial_interpolation_scale = 1.875  # what ComfyUI's detection leaves in place
    cos_bad, _ = native._get_rotary_emb(4, 6, 3, device="cpu")
    assert float((cos_bad - cos_ref).abs().max()) > 0.1

def test_sampler_runs_on_this_host(comfy_in_process):
    from pano360.models.ggi_transformer import DiffusersGGI
    from pano360.pipelines.videofrom3d.ggi import GGISettings, ggi_condition, sample_ggi

    gen, g, sd = _golden()
    model = DiffusersGGI.from_state_dict(gen.TINY_CONFIG, sd)
    ctx = torch.cat([g["neg"], g["pos"]])
    hed = g["cond_latents"].permute(0, 2, 1, 3, 4)
    start = g["image_latents"][:, :1].permute(0, 2, 1, 3, 4)
    end = g["image_latents"][:, -1:].permute(0, 2, 1, 3, 4)
    out = sample_ggi(lambda x, t: model(x, t, ctx), g["mixed"].permute(0, 2, 1, 3, 4),
                     ggi_condition(start, end, hed), GGISettings(steps=4))
    torch.testing.assert_close(out, g["result"].permute(0, 2, 1, 3, 4), atol=2e-5, rtol=0)
