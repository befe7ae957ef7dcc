"""Spherical padding of equirect tensors: across the seam and over the poles.

An equirect's left and right borders are the same meridian, and the row above row 0 is
row 0 seen from the other side of the pole (longitude + 180°).  Padding with those values
instead of zeros or reflections lets any local operator (a convolution, a VAE decoder)
see the sphere's own neighbourhood at the borders; cropping the result afterwards gives
the seamless, pole-consistent output.  Convention: docs/conventions.md (row 0 at the
north pole, pixel centres; the same continuation as the sampling taps in ``_sampling.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pad_erp", "crop_erp"]


def _check_pad(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 0:
        raise ValueError(f"{name}: expected a non-negative integer number of pixels, got {value!r}")
    return int(value)


def pad_erp(x: Tensor, sides: int, poles: int = 0) -> Tensor:
    """Pad equirect tensors ``(..., H, W)`` by ``sides`` columns on each side (wrapping
    around the seam) and ``poles`` rows at the top and bottom (continuing over the pole).

    Row ``-1 - r`` is row ``r`` turned by half the width (``W`` must then be even), the
    bottom likewise; the corners are the wrapped pole rows.  Works on any leading axes
    (images ``(B, C, H, W)``, video latents ``(B, C, T, H, W)``).  Returns
    ``(..., H + 2 poles, W + 2 sides)``; exact copies (differentiable, any dtype/device).
    """
    if not isinstance(x, Tensor) or x.ndim < 2:
        got = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x: expected an equirect tensor (..., H, W), got {got}")
    sides, poles = _check_pad(sides, "sides"), _check_pad(poles, "poles")
    h, w = x.shape[-2:]
    if sides > w:
        raise ValueError(f"sides: padding {sides} columns needs at least as many columns, got width {w}")
    if poles:
        if poles > h:
            raise ValueError(f"poles: padding {poles} rows needs at least as many rows, got height {h}")
        if w % 2:
            raise ValueError(f"x: continuing over a pole turns rows by half the width, which needs an even "
                             f"width, got {w}")
        top = torch.roll(x[..., :poles, :].flip(-2), w // 2, dims=-1)
        bottom = torch.roll(x[..., h - poles:, :].flip(-2), w // 2, dims=-1)
        x = torch.cat([top, x, bottom], dim=-2)
    if sides:
        x = torch.cat([x[..., w - sides:], x, x[..., :sides]], dim=-1)
    return x


def crop_erp(x: Tensor, sides: int, poles: int = 0) -> Tensor:
    """Undo :func:`pad_erp` (after any operator that kept the padded size, possibly scaled):
    drop ``sides`` columns on each side and ``poles`` rows at the top and bottom."""
    sides, poles = _check_pad(sides, "sides"), _check_pad(poles, "poles")
    h, w = x.shape[-2:]
    if 2 * sides >= w or 2 * poles >= h:
        raise ValueError(f"crop_erp: cannot drop {sides} columns and {poles} rows per side of a {h}x{w} tensor")
    return x[..., poles:h - poles, sides:w - sides]
