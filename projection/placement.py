"""Perspective views -> equirect: placing views on the sphere and stitching rigs.

Sphere convention: :mod:`pano360.projection.geometry` (docs/conventions.md).  Views are
``(B, C, h, w)`` in any memory layout; outputs follow it (channels-last in, channels-last
out; otherwise contiguous), as in :mod:`.perspective`.

A view covers only part of the canvas (its *footprint*).  The canvas is processed in bands
of rows; in each band a cheap float32 pass over the band finds candidate pixels and the
exact float64 test runs on those only (the same pixels as testing every pixel in float64),
in chunks of :data:`._sampling.CHUNK_PIXELS`.  Memory is the output plus a bounded working
set, whatever the canvas or the number of views (docs/projection.md "Memory").

Where a view's border is sampled: ``padding="border"`` repeats the edge pixel (the default,
and the better choice wherever views are blended or averaged: a rim fading to black would
darken every seam between views); ``padding="zeros"`` reads black past the edge, so the rim
blends toward black within half a pixel of the frame border, as Argus's ``pers2equi_batch``
(torch ``grid_sample`` zero padding) does for its conditioning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ._sampling import (
    CHUNK_PIXELS,
    GRID_CACHE,
    MAX_CACHED_CAMERAS,
    ROWS_PER_CHUNK,
    TAPS_PER_PIXEL,
    Progress,
    ProgressCallback,
    Taps,
    _nbytes,
    bag,
    channels_last_like,
    check_mode,
    check_padding,
    empty_like_huge,
    image_taps,
    new_output,
    scratch_table_of,
    table_from,
    table_of,
    write_rows,
)
from .coordinates import GEOMETRY_DTYPE, camera_plane, camera_rotation, half_extents, plane_to_view_xy
from .geometry import Rig, check_erp_hw, check_grid, directions_to_erp_xy, erp_lon_lat
from .perspective import (
    batched_angles,
    camera_args,
    camera_groups,
    check_fov_rad,
    check_images,
    contiguous_range,
    view_params,
)

WEIGHTINGS = ("uniform", "feather")
# Margin of the float32 coarse footprint pass (camera-space units on unit directions), far
# above float32 rounding (~1e-7 on unit vectors): the coarse pass keeps a superset.
FOOTPRINT_MARGIN = 1e-5
# Canvas pixels per band of the coarse pass in perspective_to_erp (~30 MB of float32 work).
FOOTPRINT_BAND_PIXELS = 1 << 20
# Points sampled along each edge of a view's frustum to bound its footprint on the canvas.
BORDER_SAMPLES = 1025
# The stitcher gathers a view's frames for at most this many bytes of footprint at once.
STITCH_APPLY_BYTES = 16 << 20

__all__ = ["perspective_to_erp", "stitch_rig", "WEIGHTINGS"]


def check_weight(weight: str) -> str:
    if weight not in WEIGHTINGS:
        raise ValueError(f"weight: unknown weighting {weight!r}; choose one of {list(WEIGHTINGS)}")
    return weight


# --------------------------------------------------------------------------- footprints


def _bounds(rot: Tensor, tx: float, ty: float, erp_hw, erp_grid: str) -> tuple[int, int, Tensor]:
    """Rows ``r0:r1`` and the ascending column indices of a box on the canvas that contains
    the view's footprint (with a margin), from dense samples of the frustum's border.

    Each border edge is a great-circle arc; between samples its equirect position moves by at
    most the largest step between neighbouring samples, which (plus two pixels) is the margin.
    A view that contains a pole reaches that pole's row across every column.
    """
    h, w = erp_hw
    s = torch.linspace(-1, 1, BORDER_SAMPLES, dtype=GEOMETRY_DTYPE, device=rot.device)
    one = torch.ones_like(s)
    loop = torch.cat([torch.stack([s, one], -1), torch.stack([one, -s], -1),  # top, right edge
                      torch.stack([-s, -one], -1), torch.stack([-one, s], -1)])  # bottom, left: one closed loop
    rays = torch.stack([loop[:, 0] * tx, loop[:, 1] * ty, torch.ones_like(loop[:, 0])], -1)
    d = rays @ rot.T
    x, y = directions_to_erp_xy(d, erp_hw, erp_grid)
    lon = torch.atan2(d[:, 0], d[:, 2])
    step = torch.diff(torch.cat([lon, lon[:1]]))
    step = torch.remainder(step + math.pi, 2 * math.pi) - math.pi  # unwrap around the closed loop
    winding = float(step.sum())
    dy = torch.diff(torch.cat([y, y[:1]])).abs().max()
    margin = float(dy) + 2
    poles = []
    for sign in (1.0, -1.0):
        c = rot[1] * sign  # camera coordinates of the pole (0, sign, 0): R^T p = row 1 of R
        if c[2] > 0 and abs(c[0] / c[2]) <= tx and abs(c[1] / c[2]) <= ty:
            poles.append(sign)
    r0 = 0 if 1.0 in poles else max(0, math.floor(float(y.min()) - margin))
    r1 = h if -1.0 in poles else min(h, math.ceil(float(y.max()) + margin) + 1)
    if poles or abs(winding) > math.pi:  # the border winds around a pole: every longitude
        return r0, r1, torch.arange(w, device=rot.device)
    unwrapped = lon[0] + torch.cat([step.new_zeros(1), torch.cumsum(step[:-1], 0)])
    # 360 degrees of longitude span W columns (centres) or W - 1 (corners: columns 0 and W - 1
    # both lie on the seam); column x = lon / per_col + centre
    period = w if erp_grid == "centres" else w - 1
    per_col = 2 * math.pi / period
    centre = (w / 2 - 0.5) if erp_grid == "centres" else (w - 1) / 2
    dx = float(step.abs().max()) / per_col + 2
    first = math.floor(centre + float(unwrapped.min()) / per_col - dx)
    last = math.ceil(centre + float(unwrapped.max()) / per_col + dx)
    if last - first + 1 >= period:
        return r0, r1, torch.arange(w, device=rot.device)
    cols = torch.remainder(torch.arange(first, last + 1, device=rot.device), period)
    if erp_grid == "corners" and bool((cols == 0).any()):
        cols = torch.cat([cols, cols.new_tensor([w - 1])])
    return r0, r1, torch.unique(cols)


def _erp_trig(erp_hw, grid: str, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float64 ``cos lat, sin lat`` per row and ``sin lon, cos lon`` per column (cached)."""
    def build():
        lon, lat = erp_lon_lat(erp_hw, device, GEOMETRY_DTYPE, grid=grid)
        return torch.cos(lat), torch.sin(lat), torch.sin(lon), torch.cos(lon)
    return GRID_CACHE.get(("erp_trig", tuple(erp_hw), grid, str(device)), build)


def _erp_directions_at(pixels: Tensor, erp_hw, grid: str = "centres") -> Tensor:
    """``erp_directions(erp_hw, dtype=GEOMETRY_DTYPE, grid=grid)`` at flat pixel indices,
    ``(N, 3)``: the same products of the same per-row and per-column factors, bit for bit."""
    w = erp_hw[1]
    clat, slat, slon, clon = _erp_trig(erp_hw, grid, pixels.device)
    row, col = torch.div(pixels, w, rounding_mode="floor"), pixels % w
    cl = clat[row]
    return torch.stack([cl * slon[col], slat[row], cl * clon[col]], -1)


@dataclass(frozen=True)
class Camera:
    """One view's placement geometry: camera-to-world rotation, image-plane half extents, and
    a box on the canvas (rows, ascending columns) containing its footprint."""

    rot: Tensor
    tx: float
    ty: float
    view_hw: tuple[int, int]
    grid: str
    rows: tuple[int, int]
    cols: Tensor

    @staticmethod
    def of(params: tuple, view_hw, grid: str, erp_hw, erp_grid: str, device) -> "Camera":
        """The camera of ``params = (yaw, pitch, roll, fov_x, fov_y)`` over an ``erp_hw`` canvas."""
        yaw, pitch, roll, fov_x, fov_y = params
        tx, ty = half_extents(fov_x, fov_y, view_hw, grid)
        rot = camera_rotation(yaw, pitch, roll, device)
        r0, r1, cols = _bounds(rot, tx, ty, erp_hw, erp_grid)
        return Camera(rot, tx, ty, tuple(view_hw), grid, (r0, r1), cols)


def footprint_band(cam: Camera, erp_hw, r0: int, r1: int, mode: str, weight: str, padding: str, erp_grid: str,
                   with_taps: bool = True):
    """Where ``cam``'s view lands on canvas rows ``r0:r1``.

    Returns ``(pixels (N,) flat canvas indices, taps into the view or None, view_weight (N,))``
    with float64 weights; ``view_weight`` is 1 (uniform) or ``(1 - u^2)(1 - v^2)`` (feather,
    ``u, v`` in (-1, 1) the normalised image-plane coordinates).
    """
    w = erp_hw[1]
    rot, tx, ty = cam.rot, cam.tx, cam.ty
    cols = cam.cols
    r0, r1 = max(r0, cam.rows[0]), min(r1, cam.rows[1])
    if r1 <= r0:
        cand = cols.new_zeros(0)
    else:
        # Coarse pass in float32 over the footprint's box, separable in rows and columns:
        # R^T d with d = (cos lat sin lon, sin lat, cos lat cos lon); a superset of the
        # footprint thanks to the margin.  The exact float64 test below runs on these only.
        lon, lat = erp_lon_lat(erp_hw, rot.device, GEOMETRY_DTYPE, grid=erp_grid, rows=(r0, r1))
        lon = lon[cols]
        a = (torch.cos(lat)[:, None] * torch.sin(lon)[None, :]).to(torch.float32)
        b = (torch.cos(lat)[:, None] * torch.cos(lon)[None, :]).to(torch.float32)
        sl = torch.sin(lat).to(torch.float32)[:, None]
        r = rot.to(torch.float32)
        cx = r[0, 0] * a + r[1, 0] * sl + r[2, 0] * b
        cy = r[0, 1] * a + r[1, 1] * sl + r[2, 1] * b
        z32 = r[0, 2] * a + r[1, 2] * sl + r[2, 2] * b
        m = FOOTPRINT_MARGIN
        keep = (z32 > -m) & (cx.abs() <= z32 * tx + m * (1 + tx)) & (cy.abs() <= z32 * ty + m * (1 + ty))
        ij = keep.nonzero()
        cand = (ij[:, 0] + r0) * w + cols[ij[:, 1]]  # ascending: rows, then ascending columns
    pixels, index, tap_weight, view_weight = [], [], [], []
    for s in range(0, cand.numel(), CHUNK_PIXELS):
        p = cand[s : s + CHUNK_PIXELS]
        u, v, front = camera_plane(_erp_directions_at(p, erp_hw, erp_grid), rot, tx, ty)
        inside = (front & (u.abs() < 1) & (v.abs() < 1)).nonzero().squeeze(1)
        p, u, v = p[inside], u[inside], v[inside]
        pixels.append(p)
        view_weight.append(torch.ones_like(u) if weight == "uniform" else (1 - u * u) * (1 - v * v))
        if with_taps:
            x, y = plane_to_view_xy(u, v, cam.view_hw, cam.grid)
            taps = image_taps(x, y, cam.view_hw, mode, padding)
            index.append(taps.index)
            tap_weight.append(taps.weight)
    if not pixels:
        empty = cand.new_zeros(0)
        pixels, view_weight = [empty], [empty.to(GEOMETRY_DTYPE)]
        k = TAPS_PER_PIXEL[mode]
        index, tap_weight = [empty.view(0, 1).expand(0, k)], [view_weight[0].view(0, 1).expand(0, k)]
    taps = Taps(torch.cat(index), torch.cat(tap_weight)) if with_taps else None
    return torch.cat(pixels), taps, torch.cat(view_weight)


def _footprint(yaw, pitch, roll, fov, view_hw, erp_hw, mode, weight, device, dtype, *, fov_y=None,
               padding: str = "border", grid: str = "centres", erp_grid: str = "centres"):
    """The whole-canvas footprint of one view (``footprint_band`` over every row), weights
    cast to ``dtype``: ``(pixels, taps, view_weight)``."""
    cam = Camera.of((yaw, pitch, roll, fov, fov_y), view_hw, grid, erp_hw, erp_grid, device)
    pixels, taps, vw = footprint_band(cam, erp_hw, 0, erp_hw[0], mode, weight, padding, erp_grid)
    return pixels, Taps.make(taps.index, taps.weight, dtype, view_hw[0] * view_hw[1]), vw.to(dtype)


def _bands(h: int, rows: int) -> list[tuple[int, int]]:
    return [(r0, min(h, r0 + rows)) for r0 in range(0, h, rows)]


# --------------------------------------------------------------------------- placement


def _place(views_g: Tensor, idx: Tensor, footprint, out: Tensor, wmap: Tensor) -> None:
    """Write one camera group's resampled views into ``out (B, C, H, W)`` and ``wmap``."""
    pixels, taps, vw = footprint
    g, c = views_g.shape[:2]
    table = scratch_table_of(views_g) if not (torch.is_grad_enabled() and views_g.requires_grad) \
        else table_of(views_g)
    b, _, hh, ww = out.shape
    channels_last = channels_last_like(out)
    flat = out.permute(0, 2, 3, 1).reshape(b, hh * ww, c) if channels_last else out.view(b, c, hh * ww)
    for s in range(0, pixels.numel(), CHUNK_PIXELS):
        e = min(pixels.numel(), s + CHUNK_PIXELS)
        p = pixels[s:e]
        vals = bag(table, taps, s, e).view(e - s, g, c).transpose(0, 1)  # (g, n, C)
        if channels_last:
            flat[idx[:, None], p[None, :]] = vals
        else:  # advanced indices around a slice: the indexed shape is (g, n, C) as well
            flat[idx[:, None], :, p[None, :]] = vals
        wmap.view(b, hh * ww)[idx[:, None], p[None, :]] = vw[s:e][None, :].expand(g, -1)


def perspective_to_erp(views: Tensor, yaw, pitch, roll, fov_x, erp_hw: Sequence[int], mode: str = "bilinear",
                       weight: str = "uniform", *, fov_y=None, padding: str = "border", grid: str = "centres",
                       erp_grid: str = "centres", callback: ProgressCallback | None = None) -> tuple[Tensor, Tensor]:
    """Place each pinhole view on its own equirect canvas (no averaging).

    views: ``(B, C, h, w)``; angles RADIANS (floats or ``(B,)``), module convention; fov_y:
    vertical FOV for non-square pixels (``None``: square).  padding: ``border`` (clamp to the
    edge pixel) or ``zeros`` (black past the frame border: Argus's ``pers2equi_batch``).
    grid / erp_grid: the view's and the canvas's pixel grid (``centres`` | ``corners``; Argus
    places on ``corners``, its ``linspace(-180, 180, W)`` longitudes; :func:`.coordinates.
    perspective_to_erp_coords` shows the sampled coordinates).  callback: ``callback(done,
    total)`` after each chunk; may raise to cancel.
    Returns ``(erp (B, C, H, W), weight (B, 1, H, W))``: the view resampled where it covers
    the sphere (0 elsewhere) and its weight there (``uniform``: 1; ``feather``: falls
    smoothly to 0 at the view's border), 0 outside.  ``erp`` follows the views' layout.
    """
    check_images(views, "views")
    erp_hw = check_erp_hw(erp_hw)
    check_mode(mode)
    check_weight(weight)
    check_padding(padding)
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    b, c, h, w = views.shape
    names, has_fov_y = camera_args({"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x}, fov_y)
    angles, _ = batched_angles(b, names)
    check_fov_rad(angles[3])
    if has_fov_y:
        check_fov_rad(angles[4], "fov_y")
    hh, ww = erp_hw
    out = new_output(views, b, c, hh, ww, channels_last_like(views)).zero_()
    wmap = empty_like_huge(views, b, 1, hh, ww).zero_()
    groups = camera_groups(angles)
    cache = len(groups) <= MAX_CACHED_CAMERAS
    bands = _bands(hh, max(1, FOOTPRINT_BAND_PIXELS // ww))
    progress = Progress(callback, len(groups) * len(bands))
    for key, idx in groups.items():
        params = key if has_fov_y else (*key, None)
        span = contiguous_range(idx)
        views_g = views[span] if span is not None else views[idx]
        ii = torch.tensor(idx, device=views.device)
        cache_key = ("p2e", params, (h, w), erp_hw, mode, weight, padding, grid, erp_grid, str(views.device),
                     views.dtype)
        hit = GRID_CACHE.peek(cache_key) if cache else None
        if hit is not None:
            _place(views_g, ii, hit, out, wmap)
            progress.advance(len(bands))
            continue
        cam = Camera.of(params, (h, w), grid, erp_hw, erp_grid, views.device)
        kept, kept_bytes = ([] if cache else None), 0
        for r0, r1 in bands:
            pixels, taps, vw = footprint_band(cam, erp_hw, r0, r1, mode, weight, padding, erp_grid)
            part = (pixels, Taps.make(taps.index, taps.weight, views.dtype, h * w), vw.to(views.dtype))
            _place(views_g, ii, part, out, wmap)
            if kept is not None:
                kept.append(part)
                kept_bytes += _nbytes(part)
                if not GRID_CACHE.accepts(kept_bytes):
                    kept = None
            progress.advance()
        if kept is not None:
            GRID_CACHE.put(cache_key, (torch.cat([p for p, _, _ in kept]),
                                       Taps(torch.cat([t.index for _, t, _ in kept]),
                                            torch.cat([t.weight for _, t, _ in kept])),
                                       torch.cat([v for _, _, v in kept])))
    return out, wmap


# --------------------------------------------------------------------------- stitching


@dataclass(frozen=True)
class _StitchPlan:
    """Per view ``(pixels, taps)`` with the normalised stitch weight folded into the tap
    weights (so the stitch is a plain sum), and the ``(H*W,)`` coverage (1 = covered)."""

    views: tuple
    coverage: Tensor


def _stitch_weight_sum(cams, erp_hw, bands, mode, weight, erp_grid, progress) -> Tensor:
    """``(H*W,)`` float64 sum of every view's stitch weight (pass 1: footprints without taps)."""
    wsum = torch.zeros(erp_hw[0] * erp_hw[1], dtype=GEOMETRY_DTYPE, device=cams[0].rot.device)
    for cam in cams:
        for r0, r1 in bands:
            pixels, _, vw = footprint_band(cam, erp_hw, r0, r1, mode, weight, "border", erp_grid, with_taps=False)
            wsum.index_add_(0, pixels, vw)
            progress.advance()
    return wsum


def _stitch_view_parts(cam, wsum, erp_hw, bands, mode, weight, erp_grid, dtype, view_pixels, progress):
    """Yield one view's ``(pixels, taps)`` band by band, stitch weights folded in (pass 2)."""
    for r0, r1 in bands:
        pixels, taps, vw = footprint_band(cam, erp_hw, r0, r1, mode, weight, "border", erp_grid)
        norm = vw / wsum[pixels]
        yield pixels, Taps.make(taps.index, taps.weight * norm[:, None], dtype, view_pixels)
        progress.advance()


def stitch_rig(views: Tensor, rig: Rig, erp_hw: Sequence[int], weight: str = "uniform", mode: str = "bilinear", *,
               grid: str = "centres", erp_grid: str = "centres",
               callback: ProgressCallback | None = None) -> tuple[Tensor, Tensor]:
    """Stitch a rig's views back into equirect frames.

    views: ``(V*T, C, h, w)`` VIEW-MAJOR (any ``h, w``: the rig's FOVs are kept).
    weight: ``uniform`` (plain average where views overlap, VideoPanda's protocol) or
    ``feather`` (each view's weight falls smoothly to zero at its border).  Views are
    sampled with edge clamping.  grid / erp_grid, callback: as :func:`perspective_to_erp`.
    Returns ``(erp (T, C, H, W) in the views' memory layout, coverage (T, 1, H, W))``;
    coverage is 1 where at least one view covers the pixel and 0 elsewhere (those pixels are 0).

    Views are visited one at a time, each only over its footprint; the footprints are built
    in bands of canvas rows (pass 1 sums the weights, pass 2 builds the taps) and kept as a
    plan in the grid cache when they fit its budget.
    """
    check_images(views, "views")
    erp_hw = check_erp_hw(erp_hw)
    check_mode(mode)
    check_weight(weight)
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    nv = rig.num_views
    if views.shape[0] % nv:
        raise ValueError(
            f"views: batch {views.shape[0]} is not a multiple of the rig's {nv} views "
            f"(expected V*T view-major images for rig {rig.name!r})"
        )
    t = views.shape[0] // nv
    _, c, h, w = views.shape
    hh, ww = erp_hw
    dtype, device = views.dtype, views.device
    grad = torch.is_grad_enabled() and views.requires_grad
    key = ("stitch", rig.key(), (h, w), erp_hw, mode, weight, grid, erp_grid, str(device), dtype)
    plan = GRID_CACHE.peek(key)
    bands = _bands(hh, max(1, FOOTPRINT_BAND_PIXELS // ww))
    wsum = cams = None
    if plan is None:
        cams = [Camera.of(view_params(v, h, w), (h, w), grid, erp_hw, erp_grid, device) for v in rig.views]
        progress = Progress(callback, 2 * nv * len(bands))
        wsum = _stitch_weight_sum(cams, erp_hw, bands, mode, weight, erp_grid, progress)
    else:
        progress = Progress(callback, nv)
    kept, kept_bytes = ([] if plan is None else None), 0
    acc = torch.zeros(hh * ww, t * c, dtype=dtype, device=device) if grad else \
        empty_like_huge(views, hh * ww, t * c).zero_()
    apply_rows = max(1, STITCH_APPLY_BYTES // (t * c * dtype.itemsize))
    buffer = None
    for v in range(nv):
        src = views[v * t : (v + 1) * t]
        if grad:
            table = table_of(src)
        else:  # one reused buffer for every view's table (no fresh pages per view)
            if buffer is None:
                buffer = empty_like_huge(views, h * w, t * c)
            table = table_from(src.permute(2, 3, 0, 1), h * w, t * c, buffer)
        parts = [plan.views[v]] if plan is not None else \
            _stitch_view_parts(cams[v], wsum, erp_hw, bands, mode, weight, erp_grid, dtype, h * w, progress)
        view_parts = []
        for pixels, taps in parts:
            for s in range(0, pixels.numel(), apply_rows):
                e = min(pixels.numel(), s + apply_rows)
                vals = bag(table, taps, s, e)
                acc = acc.index_add(0, pixels[s:e], vals) if grad else acc.index_add_(0, pixels[s:e], vals)
            if kept is not None:
                view_parts.append((pixels, taps))
                kept_bytes += _nbytes(view_parts[-1])
                if not GRID_CACHE.accepts(kept_bytes):
                    kept = None
        if plan is not None:
            progress.advance()
        elif kept is not None:
            kept.append((torch.cat([p for p, _ in view_parts]),
                         Taps(torch.cat([q.index for _, q in view_parts]), torch.cat([q.weight for _, q in view_parts]))))
    covered = (wsum > 0).to(dtype) if plan is None else plan.coverage
    if kept is not None and GRID_CACHE.accepts(kept_bytes + _nbytes(covered)):
        GRID_CACHE.put(key, _StitchPlan(tuple(kept), covered))
    coverage = empty_like_huge(views, t, 1, hh, ww).copy_(covered.view(1, 1, hh, ww).expand(t, 1, hh, ww))
    channels_last = channels_last_like(views)
    if grad:
        out = acc.view(hh, ww, t, c).permute(2, 3, 0, 1)
        return (out if channels_last else out.contiguous()), coverage
    out = new_output(views, t, c, hh, ww, channels_last)
    for r0 in range(0, hh, ROWS_PER_CHUNK):  # (H*W, T*C) -> (T, C, H, W) in row chunks that stay in cache
        r1 = min(hh, r0 + ROWS_PER_CHUNK)
        write_rows(out, r0, r1, acc[r0 * ww : r1 * ww])
    return out, coverage
