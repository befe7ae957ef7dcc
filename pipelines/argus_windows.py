"""Argus long videos: overlapping 25-frame windows, generated one after another.

Argus (``inference.py`` / ``gradio_demo.py``, long-video mode of the demo: 25, 45, 65 frames)
generates window after window.  A window starts ``window - overlap`` frames after the previous
one (the last window may be shorter); its first ``overlap`` conditioning frames are the previous
window's *decoded full-360°* frames instead of the masked input; its latents are joined to the
previous ones by a linear cross-fade over the overlap (old window weight 1 → 0); everything is
decoded together at the end.  CLIP tokens always come from the original perspective frames.

The loop is a function of callables (sample a window, decode latents), so the node plugs in
ComfyUI's sampler and VAE and the tests plug in stubs.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "ARGUS_WINDOW",
    "ARGUS_OVERLAP",
    "Window",
    "plan_windows",
    "crossfade_weights",
    "join_latents",
    "generate_long_video",
    "window_seed",
]

# Argus inference defaults: num_frames 25 per window (SVD-XT length), blend_frames 5.
ARGUS_WINDOW = 25
ARGUS_OVERLAP = 5
# ComfyUI seeds are unsigned 64-bit (KSampler's seed widget max 0xffffffffffffffff), the range
# torch.Generator.manual_seed accepts.
SEED_MODULUS = 2**64


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the video; the first ``carried`` of them overlap the previous
    window (0 for the first window)."""

    start: int
    stop: int
    carried: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def plan_windows(num_frames: int, window: int = ARGUS_WINDOW, overlap: int = ARGUS_OVERLAP) -> tuple[Window, ...]:
    """The windows Argus runs for a video of ``num_frames`` frames.

    Each window starts ``window - overlap`` frames after the previous one and the last one stops
    at the end of the video (it may be shorter than ``window``).  25 frames -> one window;
    45 -> [0, 25), [20, 45); 65 -> [0, 25), [20, 45), [40, 65).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    out = [Window(0, min(window, num_frames), 0)]
    while out[-1].stop < num_frames:
        start = out[-1].stop - overlap
        out.append(Window(start, min(start + window, num_frames), overlap))
    return tuple(out)


def window_seed(seed: int, index: int) -> int:
    """The seed of window ``index``: ``seed + index``, wrapped into the 64-bit seed range."""
    return (seed + index) % SEED_MODULUS


def crossfade_weights(overlap: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(overlap,) weights of the *previous* window over the overlap: linear 1 → 0 (Argus
    ``torch.linspace(1, 0, blend_frames)``)."""
    return torch.linspace(1.0, 0.0, overlap, dtype=dtype, device=device)


def join_latents(previous: torch.Tensor, new: torch.Tensor, carried: int) -> torch.Tensor:
    """Append a window's latents (n, C, h, w) to the video so far (m, C, h, w), cross-fading the
    ``carried`` overlapping frames.  Returns (m + n - carried, C, h, w)."""
    if carried == 0:
        return torch.cat([previous, new])
    if carried > min(previous.shape[0], new.shape[0]):
        raise ValueError(f"carried={carried} exceeds the windows ({previous.shape[0]}, {new.shape[0]} frames)")
    w = crossfade_weights(carried, previous.dtype, previous.device).view(-1, 1, 1, 1)
    mixed = w * previous[-carried:] + (1 - w) * new[:carried]
    return torch.cat([previous[:-carried], mixed, new[carried:]])


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
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run Argus's windows over a whole video and return all latents (T, C, h, w).

    conditioning: (T, C, H, W) masked equirect frames, 0..1.  mask: (T, 1, H, W), 1 = known.
    frames: (T, C, h, w) perspective frames (CLIP tokens).
    sample_window(conditioning, mask, frames, index) -> latents (n, C', h', w') for one window
    of n frames (the callee adds noise augmentation, encodes, samples).
    decode(latents) -> (n, C, H, W) full-360° frames, 0..1: used to condition the next window.
    callback(i) after window i.
    """
    T = conditioning.shape[0]
    if mask.shape[0] != T or frames.shape[0] != T:
        raise ValueError(f"conditioning, mask, frames: frame counts differ ({T}, {mask.shape[0]}, {frames.shape[0]})")
    latents = None
    previous_decoded = None
    for i, win in enumerate(plan_windows(T, window, overlap)):
        cond = conditioning[win.start : win.stop]
        if win.carried:
            cond = torch.cat([previous_decoded[-win.carried :].to(cond), cond[win.carried :]])
        new = sample_window(cond, mask[win.start : win.stop], frames[win.start : win.stop], i)
        if new.shape[0] != win.length:
            raise ValueError(f"sample_window returned {new.shape[0]} latent frames for a {win.length}-frame window")
        latents = new if latents is None else join_latents(latents, new, win.carried)
        if win.stop < T:
            previous_decoded = decode(new)
        if callback is not None:
            callback(i)
    return latents
