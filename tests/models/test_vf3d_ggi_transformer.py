"""GGI: checkpoint-1350's keys, LoRA merging, ComfyUI key conversion, and the whole arc sampler held
to the official pipeline on a tiny transformer (golden data from tests/data/make_vf3d_ggi_*.py)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch
from safetensors import safe_open

from pano360.models.ggi_transformer import (
    DiffusersGGI,
    comfy_unet_config,
    convert_ggi_to_comfy,
    ggi_config,
    merge_peft_lora,
    read_sharded_safetensors,
)
from pano360.pipelines.videofrom3d.ggi import (
    CogVideoXDDIMSchedule,
    GGISettings,
    anchor_latents,
    chain_arcs,
    ggi_condition,
    hed_clip,
    initial_latents,
    sample_ggi,
)

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
# float32 on CPU, same operations in the same order except layout permutes: 4 DDIM steps agree to
# float32 rounding
LATENT_TOL = 2e-5


def _keys():
    return json.loads((DATA / "vf3d_ggi_keys.json").read_text())


def _meta_state(shapes: dict) -> dict:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def test_merged_checkpoint_1350_has_the_plain_48_channel_layout():
    keys = _keys()
    merged = merge_peft_lora(_meta_state(keys["checkpoint_1350"]))
    assert {k: list(v.shape) for k, v in merged.items()} == keys["merged"]
    assert keys["merged"]["patch_embed.proj.weight"] == [3072, 48, 2, 2]


def test_comfy_conversion_gives_comfyui_native_keys():
    keys = _keys()
    comfy = convert_ggi_to_comfy(_meta_state(keys["merged"]))
    assert {k: list(v.shape) for k, v in comfy.items()} == keys["comfy"]
    with pytest.raises(ValueError, match="merge the LoRA"):
        convert_ggi_to_comfy(_meta_state(keys["checkpoint_1350"]))


def test_lora_merge_equals_base_plus_low_rank_update():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
    a, bb = torch.randn(2, 4, generator=g), torch.randn(5, 2, generator=g)
    sd = {"blk.to_q.base_layer.weight": w, "blk.to_q.base_layer.bias": b,
          "blk.to_q.lora_A.default.weight": a, "blk.to_q.lora_B.default.weight": bb, "other.weight": w}
    merged = merge_peft_lora(sd, scale=0.5)
    x = torch.randn(3, 4, generator=g)
    expect = x @ w.T + b + 0.5 * (x @ a.T) @ bb.T  # PEFT's forward: base + scale * B(A x)
    torch.testing.assert_close(x @ merged["blk.to_q.weight"].T + merged["blk.to_q.bias"], expect)
    assert set(merged) == {"blk.to_q.weight", "blk.to_q.bias", "other.weight"}
    with pytest.raises(ValueError, match="lora_A, lora_B"):
        merge_peft_lora({"x.lora_A.default.weight": a, "x.base_layer.weight": w})


def test_sharded_checkpoint_reads_all_shards(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, str(tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    sd = read_sharded_safetensors(tmp_path)
    assert set(sd) == {"a", "b"}
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        read_sharded_safetensors(tmp_path / "missing")


def test_ggi_config_checks_the_channel_count(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"in_channels": 32, "num_layers": 42}))
    with pytest.raises(ValueError, match="48"):
        ggi_config(cfg)
    cfg.write_text(json.dumps({"in_channels": 48, "num_layers": 42, "_class_name": "CogVideoXTransformer3DModel"}))
    assert ggi_config(cfg)["in_channels"] == 48
    unet = comfy_unet_config(ggi_config())
    assert unet["spatial_interpolation_scale"] == 1.0 and unet["use_rotary_positional_embeddings"]


def test_ddim_schedule_matches_diffusers_cogvideox_scheduler():
    from diffusers import CogVideoXDDIMScheduler

    gen = _golden_module()
    ref = CogVideoXDDIMScheduler(**gen.SCHEDULER_5B)
    ref.set_timesteps(30)
    ours = CogVideoXDDIMSchedule()
    assert ours.timesteps(30).tolist() == ref.timesteps.tolist()
    torch.testing.assert_close(ours.alphas_cumprod().float(), ref.alphas_cumprod.float())
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(2, 16, 3, 4, 6, generator=g), torch.randn(2, 16, 3, 4, 6, generator=g)
    for t in ref.timesteps.tolist()[:3] + ref.timesteps.tolist()[-2:]:
        expect = ref.step(v, t, x, return_dict=False)[0]
        torch.testing.assert_close(ours.step(v, t, x, 30), expect, atol=1e-6, rtol=1e-6)


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_vf3d_ggi_golden", DATA / "make_vf3d_ggi_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arc_sampler_matches_the_official_pipeline():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    gen = _golden_module()
    with safe_open(str(DATA / "vf3d_ggi_golden.safetensors"), "pt") as f:
        g = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    sd = {k[len("transformer."):]: v for k, v in g.items() if k.startswith("transformer.")}
    model = DiffusersGGI.from_state_dict(gen.TINY_CONFIG, sd)

    # anchors through the stand-in VAE, sampled with one generator in order (start, end), x 0.7
    vae_gen = torch.Generator().manual_seed(int(meta["seed"]))
    anchors = []
    for img in (g["start"], g["end"]):
        video = (img * 2 - 1)[None, :, None]
        mean = gen.standin_mean(video)
        dist = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, float(meta["standin_logvar"]))], 1))
        anchors.append(dist.sample(vae_gen) * 0.7)
    hed = g["cond_latents"].permute(0, 2, 1, 3, 4)
    layout = anchor_latents(anchors[0], anchors[1], hed.shape[2])
    torch.testing.assert_close(layout, g["image_latents"].permute(0, 2, 1, 3, 4))

    condition = ggi_condition(anchors[0], anchors[1], hed)
    ctx = torch.cat([g["neg"], g["pos"]])

    def velocity(x, t):
        return model(x, t, ctx)

    settings = GGISettings(steps=int(meta["steps"]), guidance=float(meta["cfg"]))
    out = sample_ggi(velocity, g["mixed"].permute(0, 2, 1, 3, 4), condition, settings)
    torch.testing.assert_close(out, g["result"].permute(0, 2, 1, 3, 4), atol=LATENT_TOL, rtol=0)


def test_hed_clip_pads_three_copies_of_the_last_frame():
    hed = torch.rand(46, 4, 6, 3)
    clip = hed_clip(hed)
    assert clip.shape == (49, 4, 6, 3)
    torch.testing.assert_close(clip[:46], hed * 2 - 1)
    assert all(torch.equal(clip[k], clip[45]) for k in (46, 47, 48))
    assert hed_clip(torch.rand(40, 4, 6, 3)).shape[0] == 49


def test_initial_latents_are_warped_noise_blended_with_fresh_noise():
    noises = torch.randn(13, 6, 9, 16)
    x = initial_latents(noises, 0.0)
    torch.testing.assert_close(x[0], noises.permute(3, 0, 1, 2))
    y = initial_latents(noises, 0.5, torch.Generator().manual_seed(0))
    corr = float((y[0] * noises.permute(3, 0, 1, 2)).mean())
    assert abs(corr - 0.5**0.5) < 0.05


def test_chain_keeps_46_frames_and_restarts_from_the_last_generated_frame():
    anchors = [torch.full((2, 2, 3), float(k)) for k in range(3)]
    starts = []

    def run_arc(k, start, end):
        starts.append(float(start.mean()))
        frames = torch.linspace(float(start.mean()), float(end.mean()) + 0.5, 49)
        return frames[:, None, None, None].expand(49, 2, 2, 3)

    video = chain_arcs(run_arc, anchors)
    assert video.shape[0] == 92
    assert starts == [0.0, 1.5]  # arc 1 starts from arc 0's last generated frame, not anchor 1
