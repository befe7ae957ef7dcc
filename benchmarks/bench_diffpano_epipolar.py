"""Memory and time of DiffPano's epipolar attention against the block's plain self-attention.

    python benchmarks/bench_diffpano_epipolar.py [--views 3] [--repeats 5] [--threads 1] [--device cpu]

Question: what does an EAModule (trained path) or the training-free extended attention cost
at SD's full-resolution decoder block of a 512x1024 panorama (latent 64x128, 320 channels),
with K = 2 references and S = 8 samples per ray, next to the self-attention that block
already runs?  Peer: the same block's self-attention (q/k/v/out projections and
``F.scaled_dot_product_attention`` with SD1.5's 8 heads) on the same batch, in the same
process.  Memory is the peak above the live inputs while one call runs (CUDA: the
allocator's peak; CPU: resident memory polled every 0.2 ms, with glibc told to map every
buffer of 64 KiB or more directly so that freed tensors leave resident memory).  The epipolar geometry is built once per resolution
and call (``EpipolarPlan``) and timed separately.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pathlib
import platform
import sys
import threading
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import conftest  # noqa: E402,F401  registers this checkout as package ``pano360``
from _timing import median_time  # noqa: E402

from pano360.models.diffpano_epipolar import (  # noqa: E402
    EpipolarAttention,
    EpipolarConfig,
    EpipolarViews,
    epipolar_extended_attention,
    layer_geometry,
    nearest_references,
)
from pano360.projection import rotation_matrix  # noqa: E402

LATENT_HW = (64, 128)  # a 512x1024 panorama through SD's VAE (factor 8)
CHANNELS = 320  # SD1.5 / SD2.1 full-resolution block width
SD15_HEADS = 8  # SD1.5 attention heads (num_heads=8 in its UNet config)
CONFIG = EpipolarConfig(num_samples=8, num_refs=2)  # the K = 2, S = 8
_PAGE = os.sysconf("SC_PAGE_SIZE")
# glibc mallopt(M_MMAP_THRESHOLD): a fixed threshold makes every buffer of 64 KiB or more a
# private mapping returned to the OS on free, so resident memory follows live tensors.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 64 << 10


def track_big_buffers() -> bool:
    """Ask glibc to map large buffers directly (CPU peak memory by polling); False if not glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory above the starting level while ``fn()`` runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    start, peak, done = rss(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], rss()) - start


def views(n: int) -> EpipolarViews:
    """n panoramas 1 m apart along a corridor, turning 20 degrees each."""
    pos = torch.tensor([[0.0, 0.0, float(i)] for i in range(n)], dtype=torch.float64)
    rot = torch.stack([rotation_matrix(torch.tensor(0.35 * i, dtype=torch.float64), 0.0, 0.0) for i in range(n)])
    return EpipolarViews(rot, pos, nearest_references(pos, CONFIG.num_refs))


class SelfAttention(torch.nn.Module):
    """The peer: an SD attention (attn1) over the block's tokens."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = torch.nn.Linear(channels, channels, bias=False)
        self.to_k = torch.nn.Linear(channels, channels, bias=False)
        self.to_v = torch.nn.Linear(channels, channels, bias=False)
        self.to_out = torch.nn.Linear(channels, channels)

    def qkv(self, tokens):
        return self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)

    def forward(self, tokens):
        q, k, v = self.qkv(tokens)
        b, n, c = q.shape
        split = lambda t: t.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=3, help="panoramas in the batch (each with K=2 references)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu" and not track_big_buffers():
        raise SystemExit("CPU peak memory needs glibc's mallopt; run with --device cuda")
    torch.manual_seed(0)
    h, w = LATENT_HW
    x = torch.randn(args.views, CHANNELS, h, w, device=device)
    tokens = x.flatten(2).transpose(1, 2).contiguous()
    attn = SelfAttention(CHANNELS, SD15_HEADS).to(device)
    ea = EpipolarAttention(CHANNELS, CONFIG).to(device)
    torch.nn.init.normal_(ea.to_out.weight, std=0.02)  # a trained module does the full work
    vw = views(args.views)

    def geometry():
        return layer_geometry(vw, LATENT_HW, CONFIG, device, x.dtype)

    geom = geometry()

    def extended(tokens=tokens):
        q, k, v = attn.qkv(tokens)
        return attn.to_out(epipolar_extended_attention(q, k, v, SD15_HEADS, geom))

    rows = [
        ("self-attention (peer): q/k/v/out + SDPA, 8 heads", lambda: attn(tokens)),
        ("EAModule (trained path), K=2 S=8", lambda: ea(x, geom)),
        ("training-free extended self-attention, K=2 S=8", extended),
        ("epipolar geometry for one resolution (once per call)", geometry),
    ]
    results = []
    with torch.no_grad():
        for name, fn in rows:
            t = median_time(fn, device, args.repeats)
            m = peak_bytes(fn, device)
            results.append((name, t, m))
    base_t, base_m = results[0][1], results[0][2]
    print(f"device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), float32, batch {args.views} views of {h}x{w} tokens x {CHANNELS} ch, "
          f"median of {args.repeats} after a warm-up")
    print("| operation | time s | x self-attention | peak memory MB | x self-attention |")
    print("|---|---|---|---|---|")
    for name, t, m in results:
        print(f"| {name} | {t:.3f} | {t / base_t:.2f} | {m / 2**20:.0f} | {m / max(base_m, 1):.2f} |")


if __name__ == "__main__":
    main()
