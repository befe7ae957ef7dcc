"""Image conversion and writing: the one float -> uint8 rule and atomic PNGs.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .atomic import NameChooser, atomic_path

__all__ = ["to_uint8", "save_png"]


def to_uint8(x: torch.Tensor | np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Float pixels in 0..1 -> uint8 numpy, clamped and rounded (``round(255 x)``, as ComfyUI's
    ``SaveImage`` up to its truncation).

    channels_last: ``x`` is ``[..., H, W, C]`` (ComfyUI IMAGE); False: ``(..., C, H, W)``, moved
    to channels-last.  Returns ``[..., H, W, C]`` uint8.
    """
    t = torch.as_tensor(x).detach()
    if not channels_last:
        t = t.movedim(-3, -1)
    return (t.to("cpu", torch.float32).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def save_png(array: np.ndarray, path: str | os.PathLike, *, replace: bool = False, pnginfo=None,
             compress_level: int = 4, next_free: NameChooser | None = None) -> str:
    """Write a uint8 ``[H, W, C]`` array (C = 1, 3 or 4) as PNG, atomically; returns the path
    written (with ``next_free``, the first free name from ``path`` on, :class:`.atomic.atomic_path`)."""
    from PIL import Image

    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        got = f"{type(array).__name__} {getattr(array, 'dtype', '')} {list(getattr(array, 'shape', []))}"
        raise ValueError(f"image must be a uint8 array [H, W, C] with C in 1, 3, 4, got {got}")
    with (target := atomic_path(path, ".png", replace=replace, next_free=next_free)) as tmp:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
            tmp, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
    return target.path
