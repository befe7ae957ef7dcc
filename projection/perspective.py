"""Equirect <-> perspective views, single cameras and rigs.

Sphere convention: :mod:`pano360.projection.geometry` (docs/conventions.md).  Images are
channels-first ``(B, C, H, W)`` tensors (any memory format; channels-last memory, as given
by ComfyUI's ``IMAGE.movedim(-1, 1)``, is the fast one).  Angles are RADIANS: ``(B,)``
tensors or Python floats.  Outputs follow the input's device and dtype and are
differentiable in the images (:func:`erp_to_perspective` also in the angles, when those
require grad).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor

from ._sampling import (
    GRID_CACHE,
    MAX_CACHED_CAMERAS,
    Taps,
    bag,
    check_mode,
    clamp_taps,
    empty_like_huge,
    erp_taps,
    gather,
    gather_table_into,
    scratch_table_of,
    table_of,
)
from .geometry import (
    Rig,
    check_erp_hw,
    directions_to_erp_xy,
    erp_directions,
    pinhole_rays,
    rotation_matrix,
)

Weighting = Literal["uniform", "feather"]
WEIGHTINGS = ("uniform", "feather")
# Output rows per chunk in the gather fast path: 16 rows x 512 px x 16 frames x 3 channels
# (~1.5 MB) stays in L2 while it is transposed to view-major (measured best of 4/16/64).
ROWS_PER_CHUNK = 16
# Geometry (rays, trig) is computed in float64 and only the final weights are cast: keeps
# bfloat16/float16 grids from quantising sample positions.
GEOMETRY_DTYPE = torch.float64
# Margin of the float32 coarse footprint pass (camera-space units on unit directions).
FOOTPRINT_MARGIN = 1e-5

__all__ = ["erp_to_perspective", "perspective_to_erp", "erp_to_rig", "stitch_rig", "check_erp", "WEIGHTINGS"]


# --------------------------------------------------------------------------- checks


def check_erp(erp: Tensor, name: str = "erp") -> tuple[int, int]:
    """Raise unless ``erp`` is a ``(B, C, H, 2H)`` tensor."""
    if not isinstance(erp, Tensor) or erp.ndim != 4:
        got = f"shape {list(erp.shape)}" if isinstance(erp, Tensor) else type(erp).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")
    if erp.shape[-1] != 2 * erp.shape[-2]:
        raise ValueError(
            f"{name}: an equirect panorama must be 2:1 (width == 2 * height), got "
            f"{erp.shape[-1]}x{erp.shape[-2]} (WxH)"
        )
    if erp.shape[-2] < 2:
        raise ValueError(f"{name}: an equirect panorama needs a height of at least 2 pixels, got "
                         f"{erp.shape[-1]}x{erp.shape[-2]} (WxH)")
    return erp.shape[-2], erp.shape[-1]


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")


def _check_weight(weight: str) -> str:
    if weight not in WEIGHTINGS:
        raise ValueError(f"weight: unknown weighting {weight!r}; choose one of {list(WEIGHTINGS)}")
    return weight


def _hw(out_hw: Sequence[int], name: str) -> tuple[int, int]:
    if len(out_hw) != 2 or any(int(v) != v or int(v) < 1 for v in out_hw):
        raise ValueError(f"{name}: expected (height, width) in pixels, got {out_hw!r}")
    return int(out_hw[0]), int(out_hw[1])


def _batched_angles(b: int, name_values: dict) -> tuple[list[Tensor], bool]:
    """Broadcast each angle to a ``(B,)`` tensor; return them and whether any needs grad."""
    out, grad = [], False
    for name, v in name_values.items():
        t = v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=GEOMETRY_DTYPE)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise ValueError(f"{name}: expected a float or a ({b},) tensor of radians, got shape {list(t.shape)}")
        grad = grad or t.requires_grad
        out.append(t.reshape(-1).expand(b) if t.ndim else t.expand(b))
    return out, grad


def _check_fov_rad(fov: Tensor, name: str = "fov_x") -> None:
    bad = (fov <= 0) | (fov >= math.pi) | ~torch.isfinite(fov)
    if bool(bad.any()):
        value = math.degrees(float(fov.detach()[bad][0]))
        raise ValueError(f"{name}: horizontal field of view must be in (0, 180) degrees, got {value:g} degrees")


def _groups(angles: list[Tensor]) -> dict[tuple, list[int]]:
    """Batch indices grouped by identical camera parameters (same geometry, shared taps)."""
    rows = torch.stack([a.detach().to("cpu", GEOMETRY_DTYPE) for a in angles], -1).tolist()
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(r), []).append(i)
    return groups


# --------------------------------------------------------------------------- taps


def _perspective_taps(yaw, pitch, roll, fov, out_hw, erp_hw, mode, device, dtype) -> Taps:
    """Taps of one view's pixels into the equirect (angles: 0-d tensors or floats)."""
    rays = pinhole_rays(torch.as_tensor(fov, dtype=GEOMETRY_DTYPE), out_hw, device, GEOMETRY_DTYPE)
    rot = rotation_matrix(*[torch.as_tensor(a, dtype=GEOMETRY_DTYPE) for a in (yaw, pitch, roll)])
    d = rays @ rot.to(device).transpose(-1, -2)
    x, y = directions_to_erp_xy(d, erp_hw)
    taps = erp_taps(x, y, erp_hw, mode)
    return Taps.make(taps.index, taps.weight, dtype)


def _cached_perspective_taps(params: tuple, out_hw, erp_hw, mode, device, dtype, cache: bool = True) -> Taps:
    key = ("e2p", params, tuple(out_hw), tuple(erp_hw), mode, str(device), dtype)
    return GRID_CACHE.get(key, lambda: _perspective_taps(*params, out_hw, erp_hw, mode, device, dtype), cache)


def _erp_directions_t32(erp_hw, device) -> Tensor:
    """Cached ``(3, H*W)`` float32 equirect pixel directions (the footprint's coarse pass)."""
    key = ("erp_dirs_t32", tuple(erp_hw), str(device))
    return GRID_CACHE.get(key, lambda: erp_directions(erp_hw, device, GEOMETRY_DTYPE)
                          .reshape(-1, 3).T.to(torch.float32).contiguous())


def _erp_directions_at(pixels: Tensor, erp_hw) -> Tensor:
    """``erp_directions(erp_hw, dtype=GEOMETRY_DTYPE)`` at flat pixel indices, ``(N, 3)``
    (the same formula element by element)."""
    h, w = erp_hw
    col = (pixels % w).to(GEOMETRY_DTYPE)
    row = torch.div(pixels, w, rounding_mode="floor").to(GEOMETRY_DTYPE)
    lon = ((col + 0.5) / w - 0.5) * (2 * math.pi)
    lat = (0.5 - (row + 0.5) / h) * math.pi
    cl = torch.cos(lat)
    return torch.stack([cl * torch.sin(lon), torch.sin(lat), cl * torch.cos(lon)], -1)


def _footprint(yaw, pitch, roll, fov, view_hw, erp_hw, mode, weight, device, dtype):
    """Where one view lands on the equirect.

    Returns ``(pixels (N,) flat equirect indices, taps into the view, view_weight (N,))``;
    ``view_weight`` is 1 (uniform) or ``(1 - u^2)(1 - v^2)`` (feather, u, v in (-1, 1) the
    normalised image-plane coordinates), zero outside the view.
    """
    h, w = view_hw
    rot = rotation_matrix(*[torch.as_tensor(a, dtype=GEOMETRY_DTYPE) for a in (yaw, pitch, roll)]).to(device)
    tx = math.tan(float(fov) / 2)
    ty = tx * h / w
    # Coarse pass in float32 over the whole canvas, with a margin far above float32
    # rounding (~1e-7 on unit vectors): a superset of the footprint.  The exact float64
    # test below then runs on those candidates only (same result as on every pixel).
    c32 = rot.T.to(torch.float32) @ _erp_directions_t32(erp_hw, device)  # (3, N): R^T d
    m = FOOTPRINT_MARGIN
    z32 = c32[2]
    cand = (z32 > -m) & (c32[0].abs() <= z32 * tx + m * (1 + tx)) & (c32[1].abs() <= z32 * ty + m * (1 + ty))
    cand = cand.nonzero().squeeze(1)
    d = _erp_directions_at(cand, erp_hw)
    c = d @ rot  # world -> camera: R^T d, as row vectors
    z = c[:, 2]
    front = z > 1e-12
    zs = torch.where(front, z, torch.ones_like(z))
    u = c[:, 0] / zs / tx
    v = c[:, 1] / zs / ty
    inside = (front & (u.abs() < 1) & (v.abs() < 1)).nonzero().squeeze(1)
    pixels = cand[inside]
    u, v = u[inside], v[inside]
    x = (u + 1) * (w / 2) - 0.5
    y = (1 - v) * (h / 2) - 0.5
    taps = clamp_taps(x, y, (h, w), mode)
    vw = torch.ones_like(u) if weight == "uniform" else (1 - u * u) * (1 - v * v)
    return pixels, Taps.make(taps.index, taps.weight, dtype), vw.to(dtype)


def _cached_footprint(params: tuple, view_hw, erp_hw, mode, weight, device, dtype, cache: bool = True):
    key = ("p2e", params, tuple(view_hw), tuple(erp_hw), mode, weight, str(device), dtype)
    return GRID_CACHE.get(key, lambda: _footprint(*params, view_hw, erp_hw, mode, weight, device, dtype), cache)


@dataclass(frozen=True)
class _StitchPlan:
    """Per view ``(pixels, taps)`` with the normalised stitch weight folded into the tap
    weights (so the stitch is a plain sum), and the ``(H*W,)`` coverage (1 = covered)."""

    views: tuple
    coverage: Tensor


def _stitch_plan(rig: Rig, view_hw, erp_hw, mode, weight, device, dtype) -> _StitchPlan:
    parts, wsum = [], torch.zeros(erp_hw[0] * erp_hw[1], dtype=GEOMETRY_DTYPE, device=device)
    for view in rig.views:
        params = tuple(math.radians(a) for a in (view.yaw, view.pitch, view.roll, view.fov))
        pixels, taps, vw = _footprint(*params, view_hw, erp_hw, mode, weight, device, GEOMETRY_DTYPE)
        wsum.index_add_(0, pixels, vw)
        parts.append((pixels, taps, vw))
    covered = wsum > 0
    views = []
    for pixels, taps, vw in parts:
        norm = vw / wsum[pixels]
        views.append((pixels, Taps.make(taps.index, taps.weight * norm[:, None], dtype)))
    return _StitchPlan(tuple(views), covered.to(dtype))


def _cached_stitch_plan(rig: Rig, view_hw, erp_hw, mode, weight, device, dtype) -> _StitchPlan:
    key = ("stitch", rig.key(), tuple(view_hw), tuple(erp_hw), mode, weight, str(device), dtype)
    return GRID_CACHE.get(key, lambda: _stitch_plan(rig, view_hw, erp_hw, mode, weight, device, dtype))


# --------------------------------------------------------------------------- equirect -> views


def _differentiable_perspective(erp, yaw, pitch, roll, fov, out_hw, mode):
    """Autograd path for angles that require grad: geometry in the angles' dtype, not cached."""
    h, w = out_hw
    erp_hw = erp.shape[-2:]
    b = erp.shape[0]
    outs = []
    for i in range(b):
        rays = pinhole_rays(fov[i], out_hw, erp.device, fov.dtype)
        rot = rotation_matrix(yaw[i], pitch[i], roll[i])
        d = rays @ rot.transpose(-1, -2)
        x, y = directions_to_erp_xy(d, erp_hw)
        taps = erp_taps(x, y, tuple(erp_hw), mode)
        outs.append(gather(erp[i : i + 1], taps).view(h, w, -1))
    return torch.stack(outs).permute(0, 3, 1, 2)


def erp_to_perspective(erp: Tensor, yaw, pitch, roll, fov_x, out_hw: Sequence[int],
                       mode: str = "bilinear") -> Tensor:
    """Sample one pinhole view per batch item from equirect images.

    erp: ``(B, C, H, 2H)``.  yaw, pitch, roll, fov_x: RADIANS, floats or ``(B,)`` tensors
    (module convention; ``fov_x`` horizontal, in (0, pi)).  out_hw: ``(h, w)``.
    mode: ``nearest`` | ``bilinear`` | ``bicubic``.  Returns ``(B, C, h, w)`` with
    channels-last memory, erp's device and dtype.  Seam and poles wrap.
    """
    erp_hw = check_erp(erp)
    out_hw = _hw(out_hw, "out_hw")
    check_mode(mode)
    b, c = erp.shape[:2]
    (yaw, pitch, roll, fov), angle_grad = _batched_angles(
        b, {"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x})
    _check_fov_rad(fov)
    if angle_grad and torch.is_grad_enabled():
        return _differentiable_perspective(erp, yaw, pitch, roll, fov, out_hw, mode)
    h, w = out_hw
    groups = _groups([yaw, pitch, roll, fov])
    if len(groups) == 1:
        (params,) = groups
        taps = _cached_perspective_taps(params, out_hw, erp_hw, mode, erp.device, erp.dtype)
        return _apply_erp_taps(erp, taps, out_hw)
    parts, order = [], []
    cache = len(groups) <= MAX_CACHED_CAMERAS
    for params, idx in groups.items():
        taps = _cached_perspective_taps(params, out_hw, erp_hw, mode, erp.device, erp.dtype, cache)
        parts.append(_apply_erp_taps(erp[idx], taps, out_hw).permute(0, 2, 3, 1))
        order.extend(idx)
    inverse = torch.empty(b, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(b)
    out = torch.cat(parts)[inverse.to(erp.device)]
    return out.permute(0, 3, 1, 2)


def _apply_erp_taps(erp: Tensor, taps: Taps, out_hw) -> Tensor:
    """All frames through the same taps -> ``(B, C, h, w)`` channels-last."""
    b, c = erp.shape[:2]
    h, w = out_hw
    if torch.is_grad_enabled() and erp.requires_grad:
        return gather(erp, taps).view(h, w, b, c).permute(2, 3, 0, 1)
    out = empty_like_huge(erp, b, h, w, c)
    gather_table_into(scratch_table_of(erp), b, c, taps, out, ROWS_PER_CHUNK)
    return out.permute(0, 3, 1, 2)


def erp_to_rig(erp: Tensor, rig: Rig, out_hw: Sequence[int] | None = None, mode: str = "bilinear") -> Tensor:
    """Split equirect frames into every view of ``rig``.

    erp: ``(T, C, H, 2H)``.  out_hw overrides every view's size (the FOV is kept).
    Returns ``(V*T, C, h, w)`` VIEW-MAJOR (``b = v*T + t``), channels-last memory.
    """
    erp_hw = check_erp(erp)
    check_mode(mode)
    h, w = rig.sizes(out_hw)
    t, c = erp.shape[:2]
    grad = torch.is_grad_enabled() and erp.requires_grad
    table = None if grad else scratch_table_of(erp)
    out = None if grad else empty_like_huge(erp, rig.num_views * t, h, w, c)
    parts = []
    for i, view in enumerate(rig.views):
        params = tuple(math.radians(a) for a in (view.yaw, view.pitch, view.roll, view.fov))
        taps = _cached_perspective_taps(params, (h, w), erp_hw, mode, erp.device, erp.dtype)
        if grad:
            parts.append(gather(erp, taps).view(h, w, t, c).permute(2, 0, 1, 3))
        else:
            gather_table_into(table, t, c, taps, out[i * t : (i + 1) * t], ROWS_PER_CHUNK)
    if grad:
        out = torch.cat(parts)
    return out.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- views -> equirect


def perspective_to_erp(views: Tensor, yaw, pitch, roll, fov_x, erp_hw: Sequence[int],
                       mode: str = "bilinear", weight: str = "uniform") -> tuple[Tensor, Tensor]:
    """Place each pinhole view on its own equirect canvas (no averaging).

    views: ``(B, C, h, w)``; angles RADIANS (floats or ``(B,)``), module convention.
    Returns ``(erp (B, C, H, W), weight (B, 1, H, W))``: the view resampled where it covers
    the sphere (0 elsewhere) and its weight there (``uniform``: 1; ``feather``: falls
    smoothly to 0 at the view's border), 0 outside.
    """
    _check_images(views, "views")
    erp_hw = check_erp_hw(erp_hw)
    check_mode(mode)
    _check_weight(weight)
    b, c, h, w = views.shape
    (yaw, pitch, roll, fov), _ = _batched_angles(b, {"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x})
    _check_fov_rad(fov)
    hh, ww = erp_hw
    out = empty_like_huge(views, b, hh * ww, c).zero_()
    wmap = empty_like_huge(views, b, hh * ww).zero_()
    groups = _groups([yaw, pitch, roll, fov])
    cache = len(groups) <= MAX_CACHED_CAMERAS
    for params, idx in groups.items():
        pixels, taps, vw = _cached_footprint(params, (h, w), erp_hw, mode, weight, views.device, views.dtype, cache)
        vals = gather(views[idx], taps)  # (N, g, C)
        ii = torch.tensor(idx, device=views.device)
        out[ii[:, None], pixels[None, :]] = vals.transpose(0, 1)
        wmap[ii[:, None], pixels[None, :]] = vw[None, :].expand(len(idx), -1)
    return out.view(b, hh, ww, c).permute(0, 3, 1, 2), wmap.view(b, 1, hh, ww)


def stitch_rig(views: Tensor, rig: Rig, erp_hw: Sequence[int], weight: str = "uniform",
               mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Stitch a rig's views back into equirect frames.

    views: ``(V*T, C, h, w)`` VIEW-MAJOR (any ``h, w``: the rig's FOVs are kept).
    weight: ``uniform`` (plain average where views overlap, VideoPanda's protocol) or
    ``feather`` (each view's weight falls smoothly to zero at its border).
    Returns ``(erp (T, C, H, W) channels-last memory, coverage (T, 1, H, W))``; coverage is
    1 where at least one view covers the pixel and 0 elsewhere (those pixels are 0).
    """
    _check_images(views, "views")
    erp_hw = check_erp_hw(erp_hw)
    check_mode(mode)
    _check_weight(weight)
    nv = rig.num_views
    if views.shape[0] % nv:
        raise ValueError(
            f"views: batch {views.shape[0]} is not a multiple of the rig's {nv} views "
            f"(expected V*T view-major images for rig {rig.name!r})"
        )
    t = views.shape[0] // nv
    _, c, h, w = views.shape
    hh, ww = erp_hw
    plan = _cached_stitch_plan(rig, (h, w), erp_hw, mode, weight, views.device, views.dtype)
    grad = torch.is_grad_enabled() and views.requires_grad
    acc = empty_like_huge(views, hh * ww, t * c).zero_()
    buffer = None
    for i, (pixels, taps) in enumerate(plan.views):
        src = views[i * t : (i + 1) * t]
        if grad:
            table = table_of(src)
        else:
            if buffer is None:
                buffer = empty_like_huge(views, h, w, t, c)
            buffer.copy_(src.permute(2, 3, 0, 1))
            table = buffer.view(h * w, t * c)
        vals = bag(table, taps)
        acc = acc.index_add(0, pixels, vals) if grad else acc.index_add_(0, pixels, vals)
    coverage = empty_like_huge(views, t, 1, hh, ww).copy_(plan.coverage.view(1, 1, hh, ww).expand(t, 1, hh, ww))
    if grad:
        erp = acc.view(hh, ww, t, c).permute(2, 0, 1, 3)
    else:  # (H*W, T*C) -> (T, H, W, C) in row chunks that stay in cache
        erp = empty_like_huge(views, t, hh, ww, c)
        acc = acc.view(hh, ww, t, c)
        for r0 in range(0, hh, ROWS_PER_CHUNK):
            erp[:, r0 : r0 + ROWS_PER_CHUNK].copy_(acc[r0 : r0 + ROWS_PER_CHUNK].permute(2, 0, 1, 3))
    return erp.permute(0, 3, 1, 2), coverage
