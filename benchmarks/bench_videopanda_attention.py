"""Cost of VideoPanda's multi-view attention against the plain batched Wan call.

    python benchmarks/bench_videopanda_attention.py [--views 8] [--frames 16] [--latent 64]
        [--dim 128] [--layers 1] [--repeats 2] [--threads 1] [--device cpu]

Question: what does denoising the views jointly (the adapter: multi-view attention in every
block, ``models/videopanda_adapter.py``) cost over the plain batched model call that treats
the views as independent videos, at the paper's size: 8 views x 16 latent frames of 64x64
latents (512x512 views; 131 072 tokens)?  Peer: the same diffusers ``WanTransformer3DModel``
(random weights, same width and depth) on the same ``[V, 16, T, 64, 64]`` batch without the
adapter.  Each variant's peak memory is measured in its own process over one call (CPU: the
resident-set high-water mark ``VmHWM``, reset before the call, above the resident size
before it; CUDA: ``max_memory_allocated`` above the allocated size before it).
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
import statistics
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


def _status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), MiB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``clear_refs`` value 5), so the next
    peak is this call's."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def build_calls(args) -> dict:
    """``{variant: zero-argument callable}`` on one seeded model and input (each variant its own
    copy of the model, so the adapter's processors never touch the plain one)."""
    from diffusers import WanTransformer3DModel

    device = torch.device(args.device)
    cfg = VideoPandaConfig(dim=args.dim, num_heads=args.dim // 128, num_layers=args.layers)
    v, t, hw = args.views, args.frames, args.latent

    def model():
        torch.manual_seed(0)
        return WanTransformer3DModel(**wan_diffusers_config(cfg, ffn_dim=int(args.dim * FFN_RATIO))).to(device).eval()

    def adapter_for(m):
        return VideoPandaAdapter(cfg).init_from_base(
            {diffusers_to_official_key(k): p for k, p in m.state_dict().items()}).to(device)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(v, 16, t, hw, hw, generator=g).to(device)
    ts = torch.full((v,), 500.0, device=device)
    text = torch.randn(v, TEXT_TOKENS, TEXT_DIM, generator=g).to(device)
    calls = {}
    wanted = set(args.only or VARIANTS)
    if "plain" in wanted:
        plain = model()
        calls["plain"] = lambda: plain(x, ts, text).sample
    if "adapter" in wanted:
        joint = model()
        attached = DiffusersAttachment(joint, adapter_for(joint))
        xin = torch.cat([x, torch.randn(v, cfg.cond_channels, t, hw, hw, generator=g).to(device)], 1)

        def adapter_call():
            with attached.views(v, t):
                return joint(xin, ts, text).sample

        calls["adapter"] = adapter_call
    if wanted & {"self_attn", "mv_attn"}:
        base = model()
        tokens = torch.randn(v, t * (hw // 2) ** 2, args.dim, generator=g).to(device)
        rotary = base.rope(x)
        attn = base.blocks[0].attn1
        mv, rope = adapter_for(base).mv_attn(0), diffusers_rope(rotary)
        calls["self_attn"] = lambda: attn(tokens, None, None, rotary)
        calls["mv_attn"] = lambda: mv(tokens, v, t, rope)
    return {k: calls[k] for k in VARIANTS if k in calls and k in wanted}


def peak_memory(args) -> dict:
    """One call of ``args.only[0]`` in this (fresh) process: peak MiB above the level before it."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fn = build_calls(args)[args.only[0]]
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize(device)
            return {"peak_mib": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
        _reset_peak_rss()
        base = _status_mib("VmRSS")
        fn()
        return {"peak_mib": _status_mib("VmHWM") - base}


def paired_times(args) -> dict:
    """Median seconds of every variant, the plain/adapter and self/multi-view pairs timed in
    alternation (pairs cancel the drift of a shared machine), after one warm-up each."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    calls = build_calls(args)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {k: [] for k in calls}
    with torch.no_grad():
        for fn in calls.values():
            fn()
        for _ in range(args.repeats):
            for k, fn in calls.items():
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory:
        print(json.dumps(peak_memory(args)))
        return 0
    shared = [f"--{k}={getattr(args, k)}" for k in ("views", "frames", "latent", "dim", "layers", "threads", "device")]
    memory = {}
    for variant in VARIANTS:  # each in a fresh process: ru_maxrss is a per-process high-water mark
        out = subprocess.run([sys.executable, __file__, "--memory", "--only", variant, *shared], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        memory[variant] = json.loads(out)["peak_mib"]
    seconds = paired_times(args)
    tokens = args.views * args.frames * (args.latent // 2) ** 2
    print(f"device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{args.threads} thread(s), float32, median of {args.repeats} alternating runs after a warm-up")
    print(f"{args.views} views x {args.frames} latent frames of {args.latent}x{args.latent} latents = {tokens} tokens; "
          f"Wan width {args.dim} ({args.dim // 128} head(s) of 128), {args.layers} block(s)\n")
    print("| call | time (s) | peak memory (MiB) | vs peer |")
    print("|---|---|---|---|")
    for variant, peer in (("plain", None), ("adapter", "plain"), ("self_attn", None), ("mv_attn", "self_attn")):
        ratio = "" if peer is None else (f"{seconds[variant] / seconds[peer]:.2f}x time, "
                                         f"{memory[variant] / max(memory[peer], 1e-9):.2f}x memory")
        print(f"| {variant} | {seconds[variant]:.2f} | {memory[variant]:.0f} | {ratio} |")
    for name, dim, ffn in (("measured width", args.dim, int(args.dim * FFN_RATIO)),
                           ("Wan 2.1 1.3B width", WAN_1_3B["dim"], WAN_1_3B["ffn"])):
        f = analytic_flops(args.views, args.frames, args.latent, dim, ffn)
        print(f"\nanalytic, {name}: block {f['block'] / 1e12:.2f} TFLOP, multi-view attention adds "
              f"{f['mv'] / 1e12:.2f} TFLOP (+{100 * f['mv'] / f['block']:.0f}% per block; its attention alone is "
              f"{args.views / args.frames:.2f}x the self-attention's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
