"""Equirect rotation and seam roll.  Convention: :mod:`pano360.projection.geometry`."""

from __future__ import annotations

import torch
from torch import Tensor

from ._sampling import GRID_CACHE, MAX_CACHED_CAMERAS, Taps, bag, check_mode, empty_like_huge, erp_taps, scratch_table_of, table_of
from .geometry import directions_to_erp_xy, erp_directions, rotation_matrix
from .perspective import GEOMETRY_DTYPE, _batched_angles, _groups, check_erp

__all__ = ["rotate_erp", "roll_erp"]


def _rotation_taps(params, erp_hw, mode, device, dtype) -> Taps:
    d = erp_directions(erp_hw, device, GEOMETRY_DTYPE)
    rot = rotation_matrix(*[torch.as_tensor(a, dtype=GEOMETRY_DTYPE) for a in params]).to(device)
    x, y = directions_to_erp_xy(d @ rot.transpose(-1, -2), erp_hw)
    taps = erp_taps(x, y, erp_hw, mode)
    return Taps.make(taps.index, taps.weight, dtype)


def rotate_erp(erp: Tensor, yaw, pitch, roll, mode: str = "bilinear") -> Tensor:
    """Re-centre equirect images on a rotated camera.

    erp: ``(B, C, H, 2H)``; yaw, pitch, roll: RADIANS (floats or ``(B,)``).  The output's
    forward direction is the camera ``(yaw, pitch, roll)`` of the input, so
    ``erp_to_perspective(rotate_erp(e, y, p, r), 0, 0, 0, ...)`` equals
    ``erp_to_perspective(e, y, p, r, ...)``.  Returns ``(B, C, H, W)``, channels-last memory.
    """
    erp_hw = check_erp(erp)
    check_mode(mode)
    b, c, h, w = erp.shape
    (yaw, pitch, roll), _ = _batched_angles(b, {"yaw": yaw, "pitch": pitch, "roll": roll})
    grad = torch.is_grad_enabled() and erp.requires_grad
    out = empty_like_huge(erp, b, h, w, c) if not grad else None
    parts = []
    groups = _groups([yaw, pitch, roll])
    for params, idx in groups.items():
        key = ("rot", params, erp_hw, mode, str(erp.device), erp.dtype)
        taps = GRID_CACHE.get(key, lambda: _rotation_taps(params, erp_hw, mode, erp.device, erp.dtype),
                              len(groups) <= MAX_CACHED_CAMERAS)
        src = erp[idx]
        vals = bag(table_of(src) if grad else scratch_table_of(src), taps).view(h, w, len(idx), c).permute(2, 0, 1, 3)
        if grad:
            parts.append((idx, vals))
        else:
            out[idx] = vals
    if grad:
        order = [i for idx, _ in parts for i in idx]
        cat = torch.cat([v for _, v in parts])
        out = cat[torch.argsort(torch.tensor(order)).to(erp.device)]
    return out.permute(0, 3, 1, 2)


def roll_erp(erp: Tensor, shift_px: int) -> Tensor:
    """Circularly shift equirect images right by ``shift_px`` columns (a yaw of
    ``-shift_px * 360 / W`` degrees; ``W // 2`` moves the seam to the centre)."""
    check_erp(erp)
    if isinstance(shift_px, bool) or int(shift_px) != shift_px:
        raise ValueError(f"shift_px: expected an integer number of columns, got {shift_px!r}")
    return torch.roll(erp, shifts=int(shift_px), dims=-1)
