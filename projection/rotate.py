"""Equirect rotation and seam roll.  Convention: :mod:`pano360.projection.geometry`."""

from __future__ import annotations

import torch
from torch import Tensor

from ._sampling import (
    MAX_CACHED_CAMERAS,
    TAPS_PER_PIXEL,
    Progress,
    ProgressCallback,
    Taps,
    channels_last_like,
    check_mode,
    erp_taps,
    gather_rows,
    gather_rows_into,
    new_output,
    num_chunks,
    scratch_table_of,
)
from .coordinates import GEOMETRY_DTYPE, camera_rotation
from .geometry import directions_to_erp_xy, erp_directions
from .perspective import batched_angles, camera_groups, cached_or_built, check_erp, contiguous_range

__all__ = ["rotate_erp", "roll_erp"]


def _rotation_source(params, erp_hw, mode, device, dtype, cache: bool):
    rot = camera_rotation(*params, device)
    source_rows = erp_hw[0] * erp_hw[1]

    def build(r0: int, r1: int) -> Taps:
        d = erp_directions(erp_hw, device, GEOMETRY_DTYPE, rows=(r0, r1))
        x, y = directions_to_erp_xy(d @ rot.transpose(-1, -2), erp_hw)
        taps = erp_taps(x, y, erp_hw, mode)
        return Taps.make(taps.index, taps.weight, dtype, source_rows)

    key = ("rot", params, erp_hw, mode, str(device), dtype)
    return cached_or_built(key, source_rows, TAPS_PER_PIXEL[mode], source_rows, erp_hw[1], build, device, dtype,
                           cache)


def rotate_erp(erp: Tensor, yaw, pitch, roll, mode: str = "bilinear", *,
               callback: ProgressCallback | None = None) -> Tensor:
    """Re-centre equirect images on a rotated camera.

    erp: ``(B, C, H, 2H)``; yaw, pitch, roll: RADIANS (floats or ``(B,)``).  The output's
    forward direction is the camera ``(yaw, pitch, roll)`` of the input, so
    ``erp_to_perspective(rotate_erp(e, y, p, r), 0, 0, 0, ...)`` equals
    ``erp_to_perspective(e, y, p, r, ...)``.  callback: ``callback(done, total)`` after each
    chunk; may raise.  Returns ``(B, C, H, W)`` in erp's memory layout.
    """
    erp_hw = check_erp(erp)
    check_mode(mode)
    b, c, h, w = erp.shape
    (yaw, pitch, roll), _ = batched_angles(b, {"yaw": yaw, "pitch": pitch, "roll": roll})
    channels_last = channels_last_like(erp)
    grad = torch.is_grad_enabled() and erp.requires_grad
    groups = camera_groups([yaw, pitch, roll])
    progress = Progress(callback, len(groups) * num_chunks(h, w))
    out = None if grad else new_output(erp, b, c, h, w, channels_last)
    parts = []
    for params, idx in groups.items():
        source = _rotation_source(params, erp_hw, mode, erp.device, erp.dtype, len(groups) <= MAX_CACHED_CAMERAS)
        span = contiguous_range(idx)
        src = erp[span] if span is not None else erp[idx]
        if grad:
            parts.append((idx, gather_rows(src, erp_hw, source.rows, progress, source.keep)))
        elif span is not None:
            gather_rows_into(scratch_table_of(src), out[span], source.rows, progress, source.keep)
        else:
            part = new_output(src, len(idx), c, h, w, channels_last)
            gather_rows_into(scratch_table_of(src), part, source.rows, progress, source.keep)
            out[torch.tensor(idx, device=erp.device)] = part
        source.finish()
    if grad:
        order = [i for idx, _ in parts for i in idx]
        cat = torch.cat([v for _, v in parts])
        out = cat[torch.argsort(torch.tensor(order)).to(erp.device)]
        out = out if channels_last else out.contiguous()
    return out


def roll_erp(erp: Tensor, shift_px: int) -> Tensor:
    """Circularly shift equirect images right by ``shift_px`` columns (a yaw of
    ``-shift_px * 360 / W`` degrees; ``W // 2`` moves the seam to the centre)."""
    check_erp(erp)
    if isinstance(shift_px, bool) or int(shift_px) != shift_px:
        raise ValueError(f"shift_px: expected an integer number of columns, got {shift_px!r}")
    return torch.roll(erp, shifts=int(shift_px), dims=-1)
