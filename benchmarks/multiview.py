"""Overhead of the multi-view fusion per sampler step, against the plain batched model call.

    python benchmarks/multiview.py [--frames 1] [--repeats 5] [--device cpu]

Question: how much does fusing the views on the sphere (warp to an equirect latent canvas,
average, warp back) add to one sampler step of a rig batch?  Peer: the same Euler step on
the same ``[V*T, 4, 64, 64]`` batch with the same model and no fusion.  Models: a small
conv UNet stub, and diffusers' ``UNet2DConditionModel`` at SD1.5's block layout with a
fifth of its widths (random weights).  Plain and fused steps are timed in alternation and
the overhead is the median of the paired differences over the median plain step (pairs
cancel the drift of a shared machine); the fusion alone is timed too.  Not part of the
test run.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402,F401  registers this checkout as package ``pano360``

from pano360.sampling.fusion import LatentLayout, MultiViewFusion  # noqa: E402
from pano360.projection import rig_preset  # noqa: E402

LATENT_HW = (64, 64)  # SD1.5 latents of VideoPanda's 512x512 views
CHANNELS = 4
TEXT_TOKENS, TEXT_DIM = 77, 768  # CLIP-L
# SD1.5's UNet has block widths (320, 640, 1280, 1280) and 2 layers per block; a fifth of
# the widths and 1 layer keeps a CPU step in seconds (the real one is ~50x slower, so the
# fusion's share would be ~50x smaller still).
UNET_WIDTHS = (64, 128, 256, 256)


class ConvStub(torch.nn.Module):
    """A small conv UNet-like stub: 3 convs down, 3 up, ~0.5M parameters."""

    def __init__(self, width: int = 64):
        super().__init__()
        c = CHANNELS
        self.down = torch.nn.Sequential(
            torch.nn.Conv2d(c, width, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1), torch.nn.SiLU(),
        )
        self.up = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(width, c, 3, padding=1),
        )

    def forward(self, x, sigma):
        return self.up(self.down(x / (1 + sigma**2) ** 0.5))


class DiffusersUNet(torch.nn.Module):
    """diffusers UNet2DConditionModel, SD1.5 block layout at a fifth of the widths, as an x0 denoiser."""

    def __init__(self, batch: int):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel(
            sample_size=LATENT_HW[0], in_channels=CHANNELS, out_channels=CHANNELS,
            block_out_channels=UNET_WIDTHS, layers_per_block=1,
            cross_attention_dim=TEXT_DIM, attention_head_dim=8,
        )
        self.text = torch.randn(batch, TEXT_TOKENS, TEXT_DIM)

    def forward(self, x, sigma):
        c_in = 1 / (1 + sigma**2) ** 0.5
        eps = self.unet(x * c_in, sigma.log().expand(x.shape[0]) * 250, self.text).sample
        return x - sigma * eps


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (grid caches, allocator)
    return statistics.median(_timed(fn, device) for _ in range(repeats))


def paired(plain, fused, repeats: int, device: torch.device) -> tuple[float, float]:
    """(median plain time, median of fused - plain over alternating pairs)."""
    plain(), fused()  # warm-up
    pairs = [(_timed(plain, device), _timed(fused, device)) for _ in range(repeats)]
    return statistics.median(p for p, _ in pairs), statistics.median(f - p for p, f in pairs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1, help="frames per view (T)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="stub,unet", help="comma list of stub, unet")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine, OpenMP threads that wait for each "
                        "other inflate small ops by orders of magnitude)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rig = rig_preset("videopanda8")
    batch = rig.num_views * args.frames
    x = torch.randn(batch, CHANNELS, *LATENT_HW, device=device)
    sigma = torch.tensor(1.0, device=device)
    fusion = MultiViewFusion(rig, LatentLayout.of(x.shape, rig.num_views))

    rows = []
    with torch.inference_mode():
        t_fuse = median_time(lambda: fusion(x, 0.5), args.repeats, device)
        for name in args.models.split(","):
            model = (ConvStub() if name == "stub" else DiffusersUNet(batch)).to(device).eval()
            if name == "unet":
                model.text = model.text.to(device)

            def plain():
                x0 = model(x, sigma)
                return x + (x - x0) / sigma * (-0.1)

            def fused():
                x0 = fusion(model(x, sigma), 0.5)
                return x + (x - x0) / sigma * (-0.1)

            t_plain, t_extra = paired(plain, fused, args.repeats, device)
            rows.append((name, t_plain, t_extra))

    print(f"device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"float32, rig videopanda8, batch {batch} = 8 views x {args.frames} frames, latents {LATENT_HW}, "
          f"canvas {fusion.canvas_hw}, threads {torch.get_num_threads()}")
    print(f"fusion alone: {t_fuse * 1e3:.1f} ms per step")
    print("| model | batch | plain step (ms) | fused - plain (ms, paired median) | overhead | fusion alone / plain |")
    print("|---|---|---|---|---|---|")
    for name, tp, te in rows:
        label = "conv stub (0.5M params)" if name == "stub" else "diffusers UNet2DConditionModel, SD1.5 layout, 1/5 widths"
        print(f"| {label} | {batch} | {tp * 1e3:.1f} | {te * 1e3:.1f} | {100 * te / tp:+.1f}% | {100 * t_fuse / tp:.2f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
