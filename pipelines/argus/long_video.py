"""Argus long videos: overlapping 25-frame windows, generated one after another.

Argus (``inference.py`` / ``gradio_demo.py``, long-video mode of the demo: 25, 45, 65 frames)
generates window after window (:func:`..sampling.windows.plan_windows`).  A window's first
``overlap`` conditioning frames are the previous window's *decoded full-360°* frames instead of
the masked input; its latents are joined to the previous ones by a linear cross-fade over the
overlap (old window weight 1 → 0); everything is decoded together at the end.  CLIP tokens
always come from the original perspective frames.

The loop is a function of callables (sample a window, decode latents), so the node plugs in
ComfyUI's sampler and VAE and the tests plug in stubs.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...sampling.types import ProgressCallback, report
from ...sampling.windows import join_latents, plan_windows

__all__ = ["ARGUS_WINDOW", "ARGUS_OVERLAP", "generate_long_video"]

# Argus inference defaults: num_frames 25 per window (SVD-XT length), blend_frames 5.
ARGUS_WINDOW = 25
ARGUS_OVERLAP = 5

SampleWindow = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
Decode = Callable[[torch.Tensor], torch.Tensor]


def generate_long_video(
    conditioning: torch.Tensor,
    mask: torch.Tensor,
    frames: torch.Tensor,
    sample_window: SampleWindow,
    decode: Decode,
    *,
    window: int = ARGUS_WINDOW,
    overlap: int = ARGUS_OVERLAP,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Run Argus's windows over a whole video and return all latents (T, C, h, w).

    conditioning: (T, C, H, W) masked equirect frames, 0..1.  mask: (T, 1, H, W), 1 = known.
    frames: (T, C, h, w) perspective frames (CLIP tokens).
    sample_window(conditioning, mask, frames, index) -> latents (n, C', h', w') for one window
    of n frames (the callee adds noise augmentation, encodes, samples).
    decode(latents) -> (n, C, H, W) full-360° frames, 0..1: used to condition the next window.
    callback(done, total) after each window.
    """
    T = conditioning.shape[0]
    if mask.shape[0] != T or frames.shape[0] != T:
        raise ValueError(f"conditioning, mask, frames: frame counts differ ({T}, {mask.shape[0]}, {frames.shape[0]})")
    latents = None
    previous_decoded = None
    plan = plan_windows(T, window, overlap)
    for i, win in enumerate(plan):
        cond = conditioning[win.start : win.stop]
        if win.carried:
            cond = torch.cat([previous_decoded[-win.carried :].to(cond), cond[win.carried :]])
        new = sample_window(cond, mask[win.start : win.stop], frames[win.start : win.stop], i)
        if new.shape[0] != win.length:
            raise ValueError(f"sample_window returned {new.shape[0]} latent frames for a {win.length}-frame window")
        latents = new if latents is None else join_latents(latents, new, win.carried)
        if win.stop < T:
            previous_decoded = decode(new)
        report(callback, i + 1, len(plan))
    return latents
