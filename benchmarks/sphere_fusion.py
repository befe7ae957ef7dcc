"""Per-step cost of the uniform-sphere fusion against the equirect-canvas fusion.

    python benchmarks/sphere_fusion.py [--view 64] [--channels 16] [--frames 1] [--steps 25]
                                       [--repeats 7] [--threads 1] [--device cpu]

Question: what does keeping the sampler's state on a uniform lattice cost per sampler step,
next to today's fusion on an equirect canvas?  Both fuse the same rig (videopanda8) at the
same latent view size, in this process, with the same thread count:

- canvas: ``MultiViewFusion(x0, fraction)``: the views' x0 warped onto the equirect latent
  canvas, averaged, warped back and blended (what the post-CFG hook runs per step);
- sphere: ``SphereUnetWrapper`` around a model that returns its input: the views filled
  from the lattice and their x0 averaged back onto it (what the UNet wrapper adds per model
  call), with the rig turning every step (rotation "sphere").

Steady state: both use their caches (the canvas's grids, the sphere's 8 view assignments);
the one-off costs (first canvas call; building and checking the assignments) are timed
separately and also shown spread over ``--steps`` steps.  Flux-like latents by default
(16 channels, 64x64 latent views = 512 px views, the views of a 1024x2048 panorama).
Not part of the test run.
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

from pano360.projection import GRID_CACHE, rig_preset  # noqa: E402
from pano360.sampling.fusion import (  # noqa: E402
    ROTATION_SET,
    LatentLayout,
    LatticeLayout,
    MultiViewFusion,
    SphereFusion,
)
from pano360.sampling.hooks import SphereUnetWrapper  # noqa: E402


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--view", type=int, default=64, help="latent view size (64 = 512 px views of an 8x VAE)")
    p.add_argument("--channels", type=int, default=16, help="latent channels (Flux, Wan: 16; SD: 4)")
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--steps", type=int, default=25, help="steps to spread the one-off costs over")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rig = rig_preset("videopanda8")
    view_hw = (args.view, args.view)
    v, t, c = rig.num_views, args.frames, args.channels

    # canvas: x0 of all views, view-major
    x0 = torch.randn(v * t, c, *view_hw, device=device)
    canvas = MultiViewFusion(rig, LatentLayout.of(x0.shape, v))
    GRID_CACHE.clear()
    canvas_first = _timed(lambda: canvas(x0, 0.5), device)

    # sphere: a lattice latent through the wrapper, the model an identity on the views
    t0 = time.perf_counter()
    sphere = SphereFusion(rig, view_hw, rotation="sphere", device=device)
    sphere_build = time.perf_counter() - t0
    layout = LatticeLayout(t, c, sphere.n, False)
    wrapper = SphereUnetWrapper(sphere, layout)
    lattice = torch.randn(layout.shape, device=device)
    sigmas = torch.linspace(1.0, 0.0, args.steps + 1)
    cond = torch.zeros(t, 8, 32, device=device)

    def sphere_step(i: int):
        sigma = sigmas[i % args.steps].reshape(1).expand(t)
        c_ = {"c_crossattn": cond, "transformer_options": {"sample_sigmas": sigmas}}
        return wrapper(lambda xv, ts, **kw: xv, {"input": lattice, "timestep": sigma, "c": c_, "cond_or_uncond": [0]})

    canvas_step = lambda: canvas(x0, 0.5)  # noqa: E731
    for i in range(ROTATION_SET):  # every turn's assignment is cached after the constructor; warm both
        sphere_step(i)
    canvas_step()
    pairs = []
    for r in range(args.repeats):
        a = _timed(canvas_step, device)
        b = _timed(lambda: sphere_step(r), device)
        pairs.append((a, b))
    canvas_t = statistics.median(a for a, _ in pairs)
    sphere_t = statistics.median(b for _, b in pairs)
    ratio = statistics.median(b / a for a, b in pairs)

    print(f"device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, float32, "
          f"threads {torch.get_num_threads()}, rig videopanda8, {v} views x {t} frames of {view_hw[0]}x{view_hw[1]} "
          f"latents, {c} channels; canvas {canvas.canvas_hw[0]}x{canvas.canvas_hw[1]} "
          f"({canvas.canvas_hw[0] * canvas.canvas_hw[1]} pixels), lattice {sphere.n} points")
    print("| fusion | per step, steady (ms) | one-off (ms) | per step incl. one-off over "
          f"{args.steps} steps (ms) |")
    print("|---|---|---|---|")
    print(f"| equirect canvas | {canvas_t * 1e3:.2f} | {canvas_first * 1e3:.1f} (first call: grids) | "
          f"{(canvas_t + (canvas_first - canvas_t) / args.steps) * 1e3:.2f} |")
    print(f"| uniform sphere (turning rig) | {sphere_t * 1e3:.2f} | {sphere_build * 1e3:.1f} "
          f"({ROTATION_SET} assignments, coverage checked) | "
          f"{(sphere_t + sphere_build / args.steps) * 1e3:.2f} |")
    print(f"sphere / canvas per step (median of paired ratios): {ratio:.2f}x; incl. one-off costs: "
          f"{(sphere_t + sphere_build / args.steps) / (canvas_t + (canvas_first - canvas_t) / args.steps):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
