"""Cost of VideoPanda's multi-view attention against the plain batched Wan call.

    python benchmarks/bench_videopanda_attention.py [--views 8] [--frames 16] [--latent 64]
        [--dim 128] [--layers 1] [--repeats 2] [--threads 1] [--device cpu]

Question: what does denoising the views jointly (the adapter: multi-view attention in every
block, ``models/videopanda_adapter.py``) cost over the plain batched model call that treats
the views as independent videos, at the paper's size: 8 views x 16 latent frames of 64x64
latents (512x512 views; 131 072 tokens)?  Peer: the same diffusers ``WanTransformer3DModel``
(random weights, same width and depth) on the same ``[V, 16, T, 64, 64]`` batch without the
adapter.  Each variant runs in its own process, so its peak memory (``ru_maxrss`` above the
process's level after building the inputs; CUDA: ``max_memory_allocated``) is its own.
Also timed alone: one block's self-attention and its multi-view attention on the same tokens.

At the full width of Wan 2.1 1.3B a CPU forward at this size takes hours, so the measured
model uses a reduced width (``--dim``, Wan's 128-wide heads kept, so the attention itself
costs what one head of the real model costs) and depth; the script also prints the
analytic FLOP ratio at the real 1.3B width.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import resource
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402,F401  registers this checkout as package ``pano360``

from pano360.models.videopanda_adapter import VideoPandaAdapter, VideoPandaConfig  # noqa: E402
from pano360.models.videopanda_wan import (  # noqa: E402
    DiffusersAttachment,
    diffusers_rope,
    diffusers_to_official_key,
    wan_diffusers_config,
)

TEXT_TOKENS, TEXT_DIM = 512, 4096  # Wan: UMT5-XXL context of 512 tokens
WAN_1_3B = dict(dim=1536, ffn=8960, layers=30)  # Wan2.1-T2V-1.3B config.json
FFN_RATIO = 8960 / 1536  # keep Wan 1.3B's FFN ratio at reduced widths
VARIANTS = ("plain", "adapter", "self_attn", "mv_attn")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_variant(args) -> dict:
    """Time one variant in this process; returns seconds and peak MiB above the baseline."""
    from diffusers import WanTransformer3DModel

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    heads = args.dim // 128
    cfg = VideoPandaConfig(dim=args.dim, num_heads=heads, num_layers=args.layers)
    torch.manual_seed(0)
    model = WanTransformer3DModel(**wan_diffusers_config(cfg, ffn_dim=int(args.dim * FFN_RATIO))).to(device).eval()
    v, t, hw = args.views, args.frames, args.latent
    x = torch.randn(v, 16, t, hw, hw, device=device)
    ts = torch.full((v,), 500.0, device=device)
    text = torch.randn(v, TEXT_TOKENS, TEXT_DIM, device=device)
    if args.variant == "plain":
        def fn():
            return model(x, ts, text).sample
    elif args.variant == "adapter":
        adapter = VideoPandaAdapter(cfg).init_from_base(
            {diffusers_to_official_key(k): p for k, p in model.state_dict().items()}).to(device)
        attached = DiffusersAttachment(model, adapter)
        xin = torch.cat([x, torch.randn(v, cfg.cond_channels, t, hw, hw, device=device)], 1)

        def fn():
            with attached.views(v, t):
                return model(xin, ts, text).sample
    else:
        tokens = torch.randn(v, t * (hw // 2) ** 2, args.dim, device=device)
        rotary = model.rope(x)
        if args.variant == "self_attn":
            attn = model.blocks[0].attn1

            def fn():
                return attn(tokens, None, None, rotary)
        else:
            adapter = VideoPandaAdapter(cfg).init_from_base(
                {diffusers_to_official_key(k): p for k, p in model.state_dict().items()}).to(device)
            mv, rope = adapter.mv_attn(0), diffusers_rope(rotary)

            def fn():
                return mv(tokens, v, t, rope)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        base_mib = _rss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base_cuda = torch.cuda.memory_allocated(device)
        times = []
        for _ in range(args.repeats + 1):  # the first run is the warm-up
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    peak = _rss_mib() - base_mib
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    times = sorted(times[1:])
    return {"variant": args.variant, "seconds": times[len(times) // 2], "peak_mib": peak}


def analytic_flops(views: int, frames: int, latent: int, dim: int, ffn: int, text: int = TEXT_TOKENS) -> dict:
    """Multiply-adds x 2 per block: the plain block and the multi-view attention it adds."""
    s = (latent // 2) ** 2  # tokens per frame
    n = views * frames * s
    self_attn = 2 * 4 * n * dim * dim + 2 * 2 * views * (frames * s) ** 2 * dim
    cross = 2 * 2 * n * dim * dim + 2 * 2 * text * dim * dim * views + 2 * 2 * n * text * dim
    ffn_f = 2 * 2 * n * dim * ffn
    mv = 2 * 5 * n * dim * dim + 2 * 2 * frames * (views * s) ** 2 * dim
    return {"block": self_attn + cross + ffn_f, "mv": mv, "self_attn": self_attn}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    rows = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k}={getattr(args, k)}" for k in ("views", "frames", "latent", "dim", "layers", "repeats", "threads", "device")]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows[variant] = json.loads(out)
    tokens = args.views * args.frames * (args.latent // 2) ** 2
    print(f"device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{args.threads} thread(s), float32, median of {args.repeats} after a warm-up")
    print(f"{args.views} views x {args.frames} latent frames of {args.latent}x{args.latent} latents = {tokens} tokens; "
          f"Wan width {args.dim} ({args.dim // 128} head(s) of 128), {args.layers} block(s)\n")
    print("| call | time (s) | peak memory (MiB) | vs peer |")
    print("|---|---|---|---|")
    for variant, peer in (("plain", None), ("adapter", "plain"), ("self_attn", None), ("mv_attn", "self_attn")):
        r = rows[variant]
        ratio = "" if peer is None else f"{r['seconds'] / rows[peer]['seconds']:.2f}x time, " \
                                        f"{r['peak_mib'] / max(rows[peer]['peak_mib'], 1e-9):.2f}x memory"
        print(f"| {variant} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {ratio} |")
    for name, dim, ffn in (("measured width", args.dim, int(args.dim * FFN_RATIO)),
                           ("Wan 2.1 1.3B width", WAN_1_3B["dim"], WAN_1_3B["ffn"])):
        f = analytic_flops(args.views, args.frames, args.latent, dim, ffn)
        print(f"\nanalytic, {name}: block {f['block'] / 1e12:.2f} TFLOP, multi-view attention adds "
              f"{f['mv'] / 1e12:.2f} TFLOP (+{100 * f['mv'] / f['block']:.0f}% per block; its attention alone is "
              f"{args.views / args.frames:.2f}x the self-attention's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
