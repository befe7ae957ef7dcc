"""Types every sampler, stage and long loop of the pack shares.

``ProgressCallback`` is the one progress signature: ``callback(done, total)`` after each unit
of work (a step, a window, a frame, a chunk), ``done`` counting finished units from 1.  It may
raise to cancel (ComfyUI's interrupt); ``nodes/_host.progress_callback`` makes one that drives
ComfyUI's progress bar.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

__all__ = ["ProgressCallback", "Denoiser", "Fuse", "report"]

ProgressCallback = Callable[[int, int], None]
# (x, sigma) -> x0 estimate (k-diffusion's denoiser convention)
Denoiser = Callable[[Tensor, Tensor], Tensor]
# (x0, step fraction in [0, 1]) -> x0 after a per-step correction (view fusion, ...)
Fuse = Callable[[Tensor, float], Tensor]


def report(callback: ProgressCallback | None, done: int, total: int) -> None:
    """Call ``callback(done, total)`` when there is one."""
    if callback is not None:
        callback(done, total)
