"""Windows over a long frame axis: the one planner and the one per-window seed.

Two papers generate long videos window by window and both are this plan: windows of
``window`` frames, each starting ``window - overlap`` frames after the previous one, the
first ``overlap`` frames of every window after the first carried over from its predecessor.

- Argus (``inference.py`` / ``gradio_demo.py``, long-video mode: 25-frame windows, 5 carried,
  the last window stopping at the end of the video, so it may be shorter): 45 frames ->
  [0, 25), [20, 45).
- VideoPanda (§3.3, Fig. 3c: 16-frame windows, 1 carried; four windows = 16 + 3·15 = 61
  frames) plans ``total_frames(window, overlap, windows)`` frames and gets full windows.

Also here: :func:`window_seed` (seed of window k), the linear cross-fade of carried latents
(Argus) and :func:`windows_for_frames`.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "SEED_MODULUS",
    "Window",
    "plan_windows",
    "total_frames",
    "windows_for_frames",
    "window_seed",
    "crossfade_weights",
    "join_latents",
]

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

    @property
    def new_start(self) -> int:
        """First frame this window adds (after the carried ones)."""
        return self.start + self.carried


def plan_windows(num_frames: int, window: int, overlap: int) -> tuple[Window, ...]:
    """The windows covering ``num_frames`` frames.

    Each window starts ``window - overlap`` frames after the previous one and the last one stops
    at the end of the video (it may be shorter than ``window``).  25 frames (window 25, overlap
    5) -> one window; 45 -> [0, 25), [20, 45); 65 -> [0, 25), [20, 45), [40, 65).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    out = [Window(0, min(window, num_frames), 0)]
    while out[-1].stop < num_frames:
        start = out[-1].stop - overlap
        out.append(Window(start, min(start + window, num_frames), overlap))
    return tuple(out)


def total_frames(window: int, overlap: int, windows: int) -> int:
    """Frames covered by ``windows`` full windows: ``window + (windows - 1)·(window - overlap)``."""
    if window < 1 or windows < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1, windows >= 1, 0 <= overlap < window; got {window}, {windows}, {overlap}")
    return window + (windows - 1) * (window - overlap)


def windows_for_frames(num_frames: int, window: int, overlap: int) -> int:
    """The number of windows :func:`plan_windows` needs for ``num_frames`` frames."""
    return len(plan_windows(num_frames, window, overlap))


def window_seed(seed: int, index: int) -> int:
    """The seed of window ``index``: ``seed + index``, wrapped into the 64-bit seed range."""
    return (int(seed) + int(index)) % SEED_MODULUS


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
