"""Equirect -> perspective views: single cameras and rigs.

Sphere convention: :mod:`pano360.projection.geometry` (docs/conventions.md).  Images are
channels-first ``(B, C, H, W)`` tensors in any memory layout; the output follows the input's
layout: channels-last memory in (as given by ComfyUI's ``IMAGE.movedim(-1, 1)``) gives
channels-last memory out, anything else gives a contiguous output.  Both layouts run at the
same speed (issue 10; benchmarks/projection.py).  Angles are RADIANS: ``(B,)`` tensors or
Python floats.  Outputs follow the input's device and dtype and are differentiable in the
images (:func:`erp_to_perspective` also in the angles, when those require grad).

Memory: the sampling geometry is built :data:`._sampling.CHUNK_PIXELS` output pixels at a
time, so a request needs its output plus a bounded working set (docs/projection.md
"Memory"; :mod:`.memory` estimates it before anything is allocated).  ``callback(done,
total)`` is called after each chunk and may raise to cancel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ._sampling import (
    GRID_CACHE,
    MAX_CACHED_CAMERAS,
    TAPS_PER_PIXEL,
    Progress,
    ProgressCallback,
    RowTaps,
    Taps,
    channels_last_like,
    check_mode,
    erp_taps,
    gather,
    gather_rows,
    gather_rows_into,
    new_output,
    num_chunks,
    scratch_table_of,
    stored_rows,
)
from .coordinates import GEOMETRY_DTYPE, camera_rotation, view_source_xy
from .geometry import (
    Rig,
    View,
    _check_size,
    check_erp_hw,
    check_grid,
    directions_to_erp_xy,
    pinhole_rays,
    rotation_matrix,
)

__all__ = ["erp_to_perspective", "erp_to_rig", "check_erp"]


# --------------------------------------------------------------------------- checks


def check_erp(erp: Tensor, name: str = "erp") -> tuple[int, int]:
    """Raise unless ``erp`` is a ``(B, C, H, 2H)`` tensor within :data:`.geometry.MAX_SIDE`."""
    if not isinstance(erp, Tensor) or erp.ndim != 4:
        got = f"shape {list(erp.shape)}" if isinstance(erp, Tensor) else type(erp).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")
    return check_erp_hw(erp.shape[-2:], name)


def check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")
    _check_size(x.shape[-2], f"{name} height")
    _check_size(x.shape[-1], f"{name} width")


def check_hw(out_hw: Sequence[int], name: str) -> tuple[int, int]:
    if len(out_hw) != 2:
        raise ValueError(f"{name}: expected (height, width) in pixels, got {out_hw!r}")
    try:
        return _check_size(out_hw[0], f"{name}[0]"), _check_size(out_hw[1], f"{name}[1]")
    except ValueError as e:
        raise ValueError(f"{name}: expected (height, width) in pixels, got {out_hw!r} ({e})") from None


def batched_angles(b: int, name_values: dict) -> tuple[list[Tensor], bool]:
    """Broadcast each angle to a ``(B,)`` tensor; return them and whether any needs grad."""
    out, grad = [], False
    for name, v in name_values.items():
        t = v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=GEOMETRY_DTYPE)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise ValueError(f"{name}: expected a float or a ({b},) tensor of radians, got shape {list(t.shape)}")
        grad = grad or t.requires_grad
        out.append(t.reshape(-1).expand(b) if t.ndim else t.expand(b))
    return out, grad


def check_fov_rad(fov: Tensor, name: str = "fov_x") -> None:
    bad = (fov <= 0) | (fov >= math.pi) | ~torch.isfinite(fov)
    if bool(bad.any()):
        value = math.degrees(float(fov.detach()[bad][0]))
        axis = "vertical" if name == "fov_y" else "horizontal"
        raise ValueError(f"{name}: {axis} field of view must be in (0, 180) degrees, got {value:g} degrees")


def camera_groups(angles: list[Tensor]) -> dict[tuple, list[int]]:
    """Batch indices grouped by identical camera parameters (same geometry, shared taps)."""
    rows = torch.stack([a.detach().to("cpu", GEOMETRY_DTYPE) for a in angles], -1).tolist()
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(r), []).append(i)
    return groups


def camera_args(names: dict, fov_y) -> tuple[dict, bool]:
    """The angle arguments to batch, with ``fov_y`` only when given."""
    if fov_y is None:
        return names, False
    return {**names, "fov_y": fov_y}, True


def view_params(view: View, h: int, w: int) -> tuple:
    """``(yaw, pitch, roll, fov_x, fov_y)`` radians of a rig view at ``h x w`` (``fov_y``
    ``None`` for square pixels)."""
    fov_y = None if view.fov_y is None else math.radians(view.fov_y)
    return (*(math.radians(a) for a in (view.yaw, view.pitch, view.roll, view.fov)), fov_y)


def contiguous_range(idx: list[int]) -> slice | None:
    return slice(idx[0], idx[-1] + 1) if idx == list(range(idx[0], idx[-1] + 1)) else None


# --------------------------------------------------------------------------- taps


@dataclass(frozen=True)
class TapSource:
    """Row taps for one camera: stored ones from the cache, or built chunk by chunk (and then
    kept in ``keep`` for the cache under ``key`` when they fit its budget)."""

    rows: RowTaps
    keep: Taps | None = None
    key: tuple | None = None

    def finish(self) -> None:
        if self.keep is not None:
            GRID_CACHE.put(self.key, self.keep)


def cached_or_built(key: tuple, n: int, k: int, source_rows: int, width: int, build: RowTaps, device,
                    dtype, cache: bool) -> TapSource:
    """A :class:`TapSource`: the cached taps of ``key``, or ``build`` with a buffer to keep them
    when ``cache`` and they fit the cache's budget (otherwise they are streamed and dropped)."""
    if cache:
        hit = GRID_CACHE.peek(key)
        if hit is not None:
            return TapSource(stored_rows(hit, width))
        if GRID_CACHE.accepts(Taps.nbytes_for(n, k, source_rows, dtype)):
            return TapSource(build, Taps.empty(n, k, source_rows, dtype, device), key)
    return TapSource(build)


def perspective_source(params: tuple, out_hw, erp_hw, mode: str, grid: str, erp_grid: str, device, dtype,
                       cache: bool = True) -> TapSource:
    """Taps of one view's pixels into the equirect; ``params = (yaw, pitch, roll, fov_x, fov_y)``."""
    yaw, pitch, roll, fov_x, fov_y = params
    rot = camera_rotation(yaw, pitch, roll, device)
    source_rows = erp_hw[0] * erp_hw[1]

    def build(r0: int, r1: int) -> Taps:
        x, y = view_source_xy(rot, fov_x, fov_y, out_hw, erp_hw, grid=grid, erp_grid=erp_grid, rows=(r0, r1))
        taps = erp_taps(x, y, erp_hw, mode, erp_grid)
        return Taps.make(taps.index, taps.weight, dtype, source_rows)

    key = ("e2p", params, tuple(out_hw), tuple(erp_hw), mode, grid, erp_grid, str(device), dtype)
    n = out_hw[0] * out_hw[1]
    return cached_or_built(key, n, TAPS_PER_PIXEL[mode], source_rows, out_hw[1], build, device, dtype, cache)


# --------------------------------------------------------------------------- equirect -> views


def _differentiable_perspective(erp, yaw, pitch, roll, fov, fov_y, out_hw, mode, grid, erp_grid, channels_last):
    """Autograd path for angles that require grad: geometry in the angles' dtype, not cached."""
    h, w = out_hw
    erp_hw = tuple(erp.shape[-2:])
    outs = []
    for i in range(erp.shape[0]):
        rays = pinhole_rays(fov[i], out_hw, erp.device, fov.dtype, fov_y=None if fov_y is None else fov_y[i],
                            grid=grid)
        rot = rotation_matrix(yaw[i], pitch[i], roll[i])
        x, y = directions_to_erp_xy(rays @ rot.transpose(-1, -2), erp_hw, erp_grid)
        taps = erp_taps(x, y, erp_hw, mode, erp_grid)
        outs.append(gather(erp[i : i + 1], taps).view(h, w, -1))
    out = torch.stack(outs).permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


def erp_to_perspective(erp: Tensor, yaw, pitch, roll, fov_x, out_hw: Sequence[int], mode: str = "bilinear", *,
                       fov_y=None, grid: str = "centres", erp_grid: str = "centres",
                       callback: ProgressCallback | None = None) -> Tensor:
    """Sample one pinhole view per batch item from equirect images.

    erp: ``(B, C, H, 2H)``.  yaw, pitch, roll, fov_x: RADIANS, floats or ``(B,)`` tensors
    (module convention; ``fov_x`` horizontal, in (0, pi)).  fov_y: vertical FOV, same form,
    for non-square pixels (``None``: square).  out_hw: ``(h, w)``.  mode: ``nearest`` |
    ``bilinear`` | ``bicubic``.  grid / erp_grid: the view's and the equirect's pixel grid,
    ``centres`` (the pack's) or ``corners`` (``linspace(-tan, tan, n)``; docs/conventions.md
    "Grids"; :func:`.coordinates.erp_to_perspective_coords` shows the sampled coordinates).
    callback: ``callback(done, total)`` after each chunk; may raise to cancel.
    Returns ``(B, C, h, w)`` in erp's memory layout, device and dtype.  Seam and poles wrap.
    """
    erp_hw = check_erp(erp)
    out_hw = check_hw(out_hw, "out_hw")
    check_mode(mode)
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    b, c = erp.shape[:2]
    h, w = out_hw
    names, has_fov_y = camera_args({"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x}, fov_y)
    angles, angle_grad = batched_angles(b, names)
    check_fov_rad(angles[3])
    if has_fov_y:
        check_fov_rad(angles[4], "fov_y")
    channels_last = channels_last_like(erp)
    if angle_grad and torch.is_grad_enabled():
        return _differentiable_perspective(erp, *angles[:4], angles[4] if has_fov_y else None, out_hw, mode, grid,
                                           erp_grid, channels_last)
    groups = camera_groups(angles)
    cache = len(groups) <= MAX_CACHED_CAMERAS
    progress = Progress(callback, len(groups) * num_chunks(h, w))
    grad = torch.is_grad_enabled() and erp.requires_grad
    out = None if grad else new_output(erp, b, c, h, w, channels_last)
    parts, order = [], []
    for key, idx in groups.items():
        params = key if has_fov_y else (*key, None)
        source = perspective_source(params, out_hw, erp_hw, mode, grid, erp_grid, erp.device, erp.dtype, cache)
        if grad:
            parts.append(gather_rows(erp[idx], out_hw, source.rows, progress, source.keep))
            order.extend(idx)
            source.finish()
            continue
        span = contiguous_range(idx)
        if span is not None:
            gather_rows_into(scratch_table_of(erp[span]), out[span], source.rows, progress, source.keep)
        else:
            sub = erp[idx]
            part = new_output(sub, len(idx), c, h, w, channels_last)
            gather_rows_into(scratch_table_of(sub), part, source.rows, progress, source.keep)
            out[torch.tensor(idx, device=erp.device)] = part
        source.finish()
    if grad:
        inverse = torch.empty(b, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(b)
        out = torch.cat(parts)[inverse.to(erp.device)]
        out = out if channels_last else out.contiguous()
    return out


def erp_to_rig(erp: Tensor, rig: Rig, out_hw: Sequence[int] | None = None, mode: str = "bilinear", *,
               grid: str = "centres", erp_grid: str = "centres", callback: ProgressCallback | None = None) -> Tensor:
    """Split equirect frames into every view of ``rig``.

    erp: ``(T, C, H, 2H)``.  out_hw overrides every view's size (the FOV is kept; views with
    square pixels keep them).  grid / erp_grid, callback: as :func:`erp_to_perspective`.
    Returns ``(V*T, C, h, w)`` VIEW-MAJOR (``b = v*T + t``) in erp's memory layout.
    """
    erp_hw = check_erp(erp)
    check_mode(mode)
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    h, w = rig.sizes(out_hw)
    t, c = erp.shape[:2]
    channels_last = channels_last_like(erp)
    progress = Progress(callback, rig.num_views * num_chunks(h, w))
    grad = torch.is_grad_enabled() and erp.requires_grad
    table = None if grad else scratch_table_of(erp)
    out = None if grad else new_output(erp, rig.num_views * t, c, h, w, channels_last)
    parts = []
    for i, view in enumerate(rig.views):
        source = perspective_source(view_params(view, h, w), (h, w), erp_hw, mode, grid, erp_grid, erp.device,
                                    erp.dtype)
        if grad:
            parts.append(gather_rows(erp, (h, w), source.rows, progress, source.keep))
        else:
            gather_rows_into(table, out[i * t : (i + 1) * t], source.rows, progress, source.keep)
        source.finish()
    if grad:
        out = torch.cat(parts)
        out = out if channels_last else out.contiguous()
    return out

