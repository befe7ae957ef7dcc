"""The host-free Euler sampler: one loop for tests, benchmarks and the library.

Shaped like k-diffusion's ``sample_euler`` (``comfy/k_diffusion/sampling.py``): a denoiser
``(x, sigma) -> x0``, a descending schedule ending at 0, and per-step corrections passed in
as callables (view fusion on the sphere, held cells), so panorama behaviour never needs a
second copy of the loop.  Inside ComfyUI the same corrections run through its own samplers
(:mod:`.hooks`).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from torch import Tensor

from .held import HeldCells
from .types import Denoiser, Fuse, ProgressCallback, report

__all__ = ["sample_euler"]


def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    fuse: Fuse | None = None,
    hold: HeldCells | None = None,
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Euler sampling over ``sigmas`` (Karras et al. 2022, Algorithm 2 without churn).

    denoiser: ``(x, sigma) -> x0``.  x: the start, ``noise * sigmas[0]`` (+ latent).
    sigmas: descending, ending at 0.  fuse: applied to every x0 with the step fraction
    (the post-CFG hook's place in ComfyUI).  hold: given cells (ComfyUI's noise mask).
    callback(done, total) after each step (progress, interrupt).
    """
    steps = len(sigmas) - 1
    for i in range(steps):
        fraction = i / steps
        sigma = sigmas[i]
        x_in = hold.before(x, sigma, fraction) if hold is not None else x
        x0 = denoiser(x_in, sigma)
        if fuse is not None:
            x0 = fuse(x0, fraction)
        if hold is not None:
            x0 = hold.after(x0, fraction)
        x = x + (x - x0) / sigma * (sigmas[i + 1] - sigma)
        report(callback, i + 1, steps)
    return x
