"""What does one PanoDiT denoising step cost, and what does the text cross-attention add?

Peer: diffusers' ``DiTTransformer2DModel`` (Peebles & Xie's class-conditional DiT, no
cross-attention) of the same size on the same 64x64 latent canvas.  Measured: one forward
pass of each (batch 1), and one full sampler step (``sample_panodit`` with RePaint and the
schedule maths) over the PanoDiT forward alone.

Random weights, fixed shapes and seed, warm-up, synchronised timing, median of repeats;
prints a table with device, dtype and torch version.

    python benchmarks/bench_panodit.py                       # DiT-B/2 size, CPU
    python benchmarks/bench_panodit.py --variant DiT-XL/2 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (registers this checkout as `pano360`)

from pano360.models.pano_dit import VARIANTS, PanoDiT  # noqa: E402
from pano360.pipelines.lookbeyond.panorama import sample_panodit  # noqa: E402
from pano360.sampling.gaussian_diffusion import make_schedule  # noqa: E402

SEED = 0
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="DiT-B/2", choices=sorted(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from diffusers import DiTTransformer2DModel

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(SEED)
    cfg = VARIANTS[args.variant]
    ours = PanoDiT(cfg).to(device, dtype).eval()
    peer = DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_layers=cfg.depth,
        sample_size=cfg.input_size, patch_size=cfg.patch_size, num_embeds_ada_norm=1000,
    ).to(device, dtype).eval()
    s = cfg.input_size
    x = torch.randn(1, cfg.in_channels, s, s, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    text = torch.randn(1, 1, cfg.text_dim, device=device, dtype=dtype)
    label = torch.tensor([1], device=device)
    known = torch.randn(1, cfg.in_channels, s // 2, s, device=device)
    mask = torch.zeros(1, 1, s // 2, s, device=device)
    mask[..., s // 2 :] = 1
    schedule = make_schedule(2)

    def step():  # two sampler steps = two forwards + RePaint + schedule maths
        sample_panodit(lambda a, b: ours(a.to(dtype), b, text), known, mask, schedule, canvas_size=s,
                       generator=torch.Generator().manual_seed(SEED), roll_fractions=())

    with torch.inference_mode():
        t_peer = timed(lambda: peer(x, timestep=t, class_labels=label), device, args.repeats)
        t_ours = timed(lambda: ours(x, t, text), device, args.repeats)
        t_step = timed(step, device, args.repeats) / 2
    print(f"device {device} ({platform.processor() or platform.machine()}), dtype {args.dtype}, "
          f"torch {torch.__version__}, {args.variant}, canvas {s}x{s}, batch 1, median of {args.repeats}")
    print("| what | time | ratio |")
    print("|---|---|---|")
    print(f"| diffusers DiTTransformer2DModel forward (peer) | {t_peer * 1e3:.1f} ms | 1.00 |")
    print(f"| PanoDiT forward (+ text cross-attention) | {t_ours * 1e3:.1f} ms | {t_ours / t_peer:.2f} |")
    print(f"| PanoDiT sampler step (forward + RePaint + DDPM) | {t_step * 1e3:.1f} ms | {t_step / t_peer:.2f} |")


if __name__ == "__main__":
    main()
