"""The host-free Euler sampler: one loop for tests, benchmarks and the library.

Shaped like k-diffusion's ``sample_euler`` (``comfy/k_diffusion/sampling.py``): a denoiser
``(x, sigma) -> x0``, a descending schedule ending at 0, and per-step corrections passed in
as callables (view fusion on the sphere, held cells), so panorama behaviour never needs a
second copy of the loop.  Inside ComfyUI the same corrections run through its own samplers
(:mod:`.hooks`).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .held import HeldCells
from .types import Denoiser, Fuse, ProgressCallback, report

__all__ = ["NoiseReinjection", "sample_euler"]

# (sigma_next, sigma) -> standard normal noise shaped like the sample
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class NoiseReinjection:
    """Resampling of the first steps (svd_keyframe_interpolation,
    ``pipeline_frame_interpolation_with_noise_injection.py``): after the step from sigma_i to
    sigma_i+1, ``repeats`` times add noise of std ``sqrt(sigma_i^2 - sigma_i+1^2)`` (back to
    sigma_i's level) and redo the step, for the first ``int(steps * ratio)`` steps.  The sigma
    index advances once per outer step (the reference's patched scheduler does not advance it
    inside ``step``; its loop does, once)."""

    repeats: int
    ratio: float
    noise: NoiseSampler

    def __post_init__(self):
        if self.repeats < 0:
            raise ValueError(f"noise re-injection repeats must be >= 0, got {self.repeats}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"noise re-injection ratio must be in [0, 1], got {self.ratio}")

    def leading_steps(self, num_steps: int) -> int:
        """How many leading steps are resampled: ``int(steps * ratio)`` (reference)."""
        return int(num_steps * self.ratio) if self.repeats else 0


def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    fuse: Fuse | None = None,
    hold: HeldCells | None = None,
    reinject: NoiseReinjection | None = None,
    callback: ProgressCallback | None = None,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Euler sampling over ``sigmas`` (Karras et al. 2022, Algorithm 2 without churn).

    denoiser: ``(x, sigma) -> x0``.  x: the start, ``noise * sigmas[0]`` (+ latent).
    sigmas: descending, ending at 0.  fuse: applied to every x0 with the step fraction
    (the post-CFG hook's place in ComfyUI).  hold: given cells (ComfyUI's noise mask).
    reinject: resample the first steps (:class:`NoiseReinjection`).  callback(done, total)
    after each step (progress, interrupt); on_step(i, x, x0) after each step too (previews,
    k-diffusion callbacks).
    """
    steps = len(sigmas) - 1
    resampled = reinject.leading_steps(steps) if reinject is not None else 0
    for i in range(steps):
        fraction = i / steps
        sigma, sigma_next = sigmas[i], sigmas[i + 1]

        def step(x: Tensor) -> tuple[Tensor, Tensor]:
            x_in = hold.before(x, sigma, fraction) if hold is not None else x
            x0 = denoiser(x_in, sigma)
            if fuse is not None:
                x0 = fuse(x0, fraction)
            if hold is not None:
                x0 = hold.after(x0, fraction)
            return x + (x - x0) / sigma * (sigma_next - sigma), x0

        x, x0 = step(x)
        if i < resampled:
            rise = torch.sqrt(sigma**2 - sigma_next**2) if isinstance(sigma, Tensor) else math.sqrt(sigma**2 - sigma_next**2)
            for _ in range(reinject.repeats):
                x, x0 = step(x + reinject.noise(sigma_next, sigma).to(x) * rise)
        if on_step is not None:
            on_step(i, x, x0)
        report(callback, i + 1, steps)
    return x
