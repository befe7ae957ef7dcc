"""What does the two-pass keyframe-inbetweening step cost, in time and in memory?

1. Time: one two-pass step (forward pass storing the temporal attention maps, backward pass on
   the time-reversed latents replaying them, CFG in each, fusion; ``keyframe_denoise``) against
   its peer, one plain SVD step (one CFG prediction, cond + uncond batched, ComfyUI's own
   attention).  Both on ComfyUI's ``SVD_img2vid`` UNet with the pack's object patches installed
   (the plain step runs them without a hook, i.e. through ComfyUI's attention).  Expected ≈ 2×.
2. Memory: the bytes of one step's stored maps, measured (``TemporalAttentionControl.nbytes``)
   on the reduced configuration and computed with ``stored_map_bytes`` for it (they must agree)
   and for full SVD at 14 × (72 × 128) latents (576 × 1024 px) and 25 frames.

The reduced configuration is SVD's block layout (4 levels, 2 ResNets per level, attention on the
first three, 64-channel heads) with channels (64, 128, 256, 256) instead of (320, 640, 1280, 1280),
random weights, 14 frames at 36 × 64 latents.  Needs ComfyUI (``COMFYUI_ROOT``):

    COMFYUI_ROOT=/path/to/ComfyUI python benchmarks/bench_keyframe_inbetween.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile

import torch
from _timing import median_time

TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS / "host"))
import comfy_env  # noqa: E402

SEED = 0
FRAMES = 14  # Look Beyond's num_frames
LATENT_HW = (36, 64)  # 288 x 512 px (the reduced run)
FULL_HW = (72, 128)  # 576 x 1024 px, SVD-XT's resolution
# SVD's UNet (diffusers config of stabilityai/stable-video-diffusion-img2vid): channels, heads per level.
SVD_CHANNELS = (320, 640, 1280, 1280)
REDUCED_CHANNELS = tuple(int(c) for c in os.environ.get("PANO360_BENCH_CHANNELS", "64,128,256,256").split(","))
HEAD_CHANNELS = 64
CONTEXT_DIM = 1024  # CLIP ViT-H image embedding
# Temporal attn1 layers per resolution level (SVD: 2 down + 3 up on levels 0-2, 1 in the mid block
# at level 3): (downscale exponent, number of layers).
SVD_TEMPORAL_LAYERS = ((0, 5), (1, 5), (2, 5), (3, 1))


def svd_config(channels) -> dict:
    return dict(sample_size=96, in_channels=8, out_channels=4,
                down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
                up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
                block_out_channels=tuple(channels), addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,
                layers_per_block=2, cross_attention_dim=CONTEXT_DIM, transformer_layers_per_block=1,
                num_attention_heads=tuple(c // HEAD_CHANNELS for c in channels), num_frames=25)


def levels(channels) -> list[tuple[int, int, int]]:
    return [(e, channels[e] // HEAD_CHANNELS, n) for e, n in SVD_TEMPORAL_LAYERS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_ROOT"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.comfyui:
        parser.error("set COMFYUI_ROOT or pass --comfyui")
    comfy_env.import_comfy(pathlib.Path(args.comfyui), pathlib.Path(tempfile.mkdtemp(prefix="pano360-bench-")))
    comfy_env.load_pack()
    import diffusers

    from pano360.models.keyframe_unet import temporal_attn1_layers
    from pano360.models.svd_unet import convert_diffusers_svd_unet_keys
    from pano360.nodes import _host
    from pano360.pipelines.lookbeyond.inbetween import (KEYFRAME_HOOK_KEY, Pass, TemporalAttentionControl,
                                                        inbetween_schedule, keyframe_denoise, stored_map_bytes)
    from pano360.sampling.hooks import HookedAttention

    torch.manual_seed(SEED)
    unet = diffusers.UNetSpatioTemporalConditionModel(**svd_config(REDUCED_CHANNELS))
    sd = convert_diffusers_svd_unet_keys(unet.state_dict())
    del unet
    layers = temporal_attn1_layers(sd)  # before loading: ComfyUI's loader empties the dict
    base = _host.build_model(sd, "SVD_img2vid", unet_config_overrides={"num_head_channels": HEAD_CHANNELS},
                             dtype=torch.float32)
    patches = {f"diffusion_model.{layer}.attn1": HookedAttention(base.get_model_object(f"diffusion_model.{layer}.attn1"),
                                                                 layer, KEYFRAME_HOOK_KEY)
               for layer in layers}
    model = _host.with_object_patches(base, patches)
    model.patch_model()  # apply the object patches (the samplers do this when they load the model)
    device = model.load_device
    if not isinstance(model.get_model_object(next(iter(patches))), HookedAttention):
        raise RuntimeError("the keyframe attention patches are not in place")
    inner = model.model
    g = torch.Generator().manual_seed(SEED)
    h, w = LATENT_HW
    x = torch.randn(FRAMES, 4, h, w, generator=g).to(device) * 10.0
    sigma = torch.full((FRAMES,), 10.0, device=device)
    cond = {"c_concat": torch.randn(FRAMES, 4, h, w, generator=g).to(device),
            "c_crossattn": torch.randn(FRAMES, 1, CONTEXT_DIM, generator=g).to(device),
            "y": torch.randn(FRAMES, 768, generator=g).to(device)}
    uncond = {k: torch.zeros_like(v) for k, v in cond.items()}

    def batched(x_in, transformer_options):
        """cond + uncond in one call, as ComfyUI's calc_cond_batch batches them."""
        c = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        options = dict(transformer_options, cond_or_uncond=[0, 1])
        out = inner.apply_model(torch.cat([x_in, x_in]), torch.cat([sigma, sigma]), transformer_options=options,
                                num_video_frames=FRAMES, **c)
        return out[:FRAMES], out[FRAMES:]

    schedule = inbetween_schedule(FRAMES, weighted=False)
    measured = {}

    def two_pass():
        control = TemporalAttentionControl()

        def run_pass(hook, x_pass, with_uncond):
            out = batched(x_pass, {KEYFRAME_HOOK_KEY: hook})
            if hook.pass_ is Pass.FORWARD:
                measured["bytes"] = control.nbytes()
            return out

        return keyframe_denoise(run_pass, x, schedule, control)

    def plain():
        c, u = batched(x, {})
        return u + 2.0 * (c - u)

    with torch.no_grad():
        # Interleaved pairs (plain, two-pass), one warm-up pair: on a shared machine the load
        # changes between runs, the ratio of back-to-back runs much less.
        dev = torch.device(device)
        plain(), two_pass()  # warm-up
        pairs = [(median_time(plain, dev, 1, warmup=False), median_time(two_pass, dev, 1, warmup=False))
                 for _ in range(args.repeats)]
    t_plain = statistics.median(p for p, _ in pairs)
    t_two = statistics.median(t for _, t in pairs)
    ratio = statistics.median(t / p for p, t in pairs)
    per_value = torch.tensor([], dtype=torch.float32).element_size()
    analytic = stored_map_bytes(LATENT_HW, FRAMES, levels(REDUCED_CHANNELS), chunks=2, bytes_per_value=per_value)
    mb = 1e6
    print(f"device {device} ({platform.processor() or platform.machine()}), threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, float32, reduced SVD {REDUCED_CHANNELS}, {FRAMES} x {LATENT_HW} latents")
    print(f"{'plain SVD step (cond+uncond)':44s} {t_plain * 1e3:10.1f} ms   1.00x")
    print(f"{'two-pass keyframe step':44s} {t_two * 1e3:10.1f} ms   {ratio:.2f}x (median of {args.repeats} back-to-back pairs)")
    print(f"{'stored maps, measured (reduced, fp32)':44s} {measured['bytes'] / mb:10.2f} MB")
    print(f"{'stored maps, stored_map_bytes (reduced, fp32)':44s} {analytic / mb:10.2f} MB")
    for frames, dtype_bytes, name in ((14, 2, "fp16"), (14, 4, "fp32"), (25, 2, "fp16")):
        full = stored_map_bytes(FULL_HW, frames, levels(SVD_CHANNELS), chunks=2, bytes_per_value=dtype_bytes)
        print(f"{f'stored maps, SVD {frames} x {FULL_HW} ({name})':44s} {full / mb:10.1f} MB")


if __name__ == "__main__":
    main()
