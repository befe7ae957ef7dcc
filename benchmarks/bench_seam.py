"""What do the seam tricks cost?

1. Rotation during denoising: one denoiser call through :func:`rolled_denoiser` (latent
   and concat conditioning rolled, prediction rolled back) against the plain call of the
   same diffusers ``UNet2DConditionModel`` (peer), on a 2:1 latent.
2. Seam-blended decoding: :func:`seam_blended_decode` against one plain decode of the same
   diffusers ``AutoencoderKL`` (peer).  The expected ratio is about 2 (two decodes).

Random weights (diffusers' default init), fixed shapes and seed, warm-up, synchronised
timing, median of repeats; prints a table with device, dtype and torch version.

    python benchmarks/bench_seam.py                 # small configs, CPU
    python benchmarks/bench_seam.py --full --device cuda   # SD1.5-sized UNet and VAE, 512x1024
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys

import torch
from _timing import median_time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (registers this checkout as `pano360`)

from pano360.sampling.seam import RollSchedule, rolled_denoiser, seam_blended_decode  # noqa: E402

SEED = 0
# SD1.5 shapes (diffusers configs of runwayml/stable-diffusion-v1-5): UNet 320/640/1280/1280,
# 8 heads, cross-attention 768; VAE 128/256/512/512, 4 latent channels.
FULL_UNET = dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)
FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2)
SMALL_UNET = dict(block_out_channels=(32, 64, 64, 64), cross_attention_dim=32, attention_head_dim=4)
SMALL_VAE = dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--full", action="store_true", help="SD1.5-sized models at 512x1024")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(SEED)
    h, w = (64, 128) if args.full else (16, 32)           # latent of 512x1024 / 128x256 px
    unet_cfg, vae_cfg = (FULL_UNET, FULL_VAE) if args.full else (SMALL_UNET, SMALL_VAE)
    blocks = len(unet_cfg["block_out_channels"])
    unet = UNet2DConditionModel(
        sample_size=h, in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1), **unet_cfg,
    ).to(device, dtype).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, **vae_cfg,
    ).to(device, dtype).eval()

    x = torch.randn(2, 4, h, w, device=device, dtype=dtype)  # cond + uncond
    context = torch.randn(2, 77, unet_cfg["cross_attention_dim"], device=device, dtype=dtype)
    sigma = torch.tensor([5.0, 5.0], device=device, dtype=dtype)

    def denoiser(x_in, s, c_crossattn=None, c_concat=None):
        return unet(x_in, s, encoder_hidden_states=c_crossattn).sample

    schedule = RollSchedule()
    patched = rolled_denoiser(denoiser, lambda s, extra: schedule.offset(1, w))
    concat = torch.randn_like(x)

    def decode(latent):
        return vae.decode(latent).sample.movedim(1, -1)  # channels last, like ComfyUI's VAE

    latent = torch.randn(1, 4, h, w, device=device, dtype=dtype)
    with torch.inference_mode():
        rows = [
            ("UNet call (peer)", median_time(lambda: denoiser(x, sigma, context, concat), device, args.repeats)),
            ("UNet call, rolled", median_time(lambda: patched(x, sigma, c_crossattn=context, c_concat=concat),
                                              device, args.repeats)),
            ("VAE decode (peer)", median_time(lambda: decode(latent), device, args.repeats)),
            ("seam-blended decode", median_time(lambda: seam_blended_decode(decode, latent, 16.0, pixel_width_dim=-2),
                                                device, args.repeats)),
        ]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"dtype {args.dtype}, torch {torch.__version__}, latent {h}x{w} ({8 * h}x{8 * w} px), "
          f"{'SD1.5-sized' if args.full else 'small'} models, median of {args.repeats}")
    print(f"| {'step':<22} | {'time':>10} | ratio to peer |")
    print(f"|{'-' * 24}|{'-' * 12}|---------------|")
    for i, (name, t) in enumerate(rows):
        peer = rows[i - i % 2][1]
        print(f"| {name:<22} | {t * 1e3:>7.1f} ms | {t / peer:>13.2f} |")


if __name__ == "__main__":
    main()
