"""Uniform points on the sphere (a Fibonacci lattice) and their exchange with views and equirects.

SphereDiff (Park et al., AAAI 2026, arXiv 2504.14396) keeps the latent of a 360° scene on
points spread uniformly over the sphere instead of an equirect grid, whose rows crowd
together at the poles.  This module holds the geometry of that representation; the
sampling that uses it lives in ``sampling/``.

- :func:`fibonacci_lattice` ``n`` unit directions, ordered north to south, each covering
  the same solid angle ``4π / n`` (the "canonical" lattice with half-offset heights: no
  point sits on a pole).
- :func:`assign_views` which lattice point each pixel of each view holds, one point per
  pixel and at most one pixel per point in a view (SphereDiff's spherical latent sampling:
  a view is *filled* with lattice values, never interpolated, so i.i.d. noise on the
  lattice stays i.i.d. unit-variance noise in every view), and the distortion-aware weight
  of each pixel (centre of the view > edge).
- :func:`lattice_to_views` / :func:`views_to_lattice` the gather and the weighted scatter
  that move values between the lattice and the views (pure index arithmetic).
- :func:`erp_to_lattice`, :func:`perspective_to_lattice` sample images at the points;
  :func:`lattice_to_erp` interpolates the lattice onto an equirect.

Convention: :mod:`pano360.projection.geometry` (docs/conventions.md): y up, a point at
latitude ``lat`` has ``y = sin lat``; angles in RADIANS.  Lattice values are channels-first
``(B, C, N)`` tensors (the one spatial axis is the point index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ._sampling import GRID_CACHE, Taps, bag, check_mode, erp_taps, image_taps, table_of
from .coordinates import camera_plane, camera_rotation, half_extents, plane_to_view_xy
from .geometry import check_erp_hw, directions_to_erp_xy, erp_directions, rotation_matrix
from .perspective import GEOMETRY_DTYPE, batched_angles, camera_groups, check_erp, check_fov_rad, check_images

__all__ = [
    "GOLDEN_ANGLE",
    "DISTORTION_POWER",
    "fibonacci_lattice",
    "lattice_spacing",
    "view_solid_angle",
    "points_for_view",
    "points_for_erp",
    "erp_size_for_points",
    "LatticeViews",
    "assign_views",
    "lattice_to_views",
    "views_to_lattice",
    "erp_to_lattice",
    "perspective_to_lattice",
    "lattice_to_erp",
    "nearest_lattice_points",
]

# The golden angle pi (3 - sqrt 5): the longitude step of consecutive lattice points
# (Gonzalez 2010, "Measurement of areas on a sphere using Fibonacci and latitude-longitude
# lattices", Eq. 2), which spreads every band of heights evenly around the axis.
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
# Distortion-aware weight of a view pixel at angle theta from the optical axis:
# cos(theta) ** DISTORTION_POWER.  cos^3 is the pinhole's own loss of resolution: a pixel
# at theta covers cos^3(theta) of the solid angle of the centre pixel, so a view's edge
# (stretched by the perspective) counts as much as it resolves.  SphereDiff weighs view
# contributions by their distance from the view centre (its Sec. 3, "distortion-aware
# weighted averaging"; the paper gives no closed form here, this one is Pano360's).
DISTORTION_POWER = 3.0
# lattice_to_erp: each equirect pixel takes the value at its centre of a weighted
# least-squares quadratic fitted to its KERNEL_POINTS nearest lattice points (moving least
# squares of degree 2, Gaussian weights of sigma KERNEL_SIGMA spacings), a fixed linear tap
# set per pixel.  Chosen by the round-trip error of band-limited random fields (2-core CPU
# study in docs/spherical.md): at a quarter of the lattice's Nyquist frequency its error is
# ~1/15 of a Gaussian average of the 8 nearest points, at half of it ~1/5.
KERNEL_POINTS = 12
KERNEL_SIGMA = 0.6
# assign_views runs every sampler step when the views turn: float32 camera coordinates are
# ~2x faster than float64 and only decide the order of points closer than ~1e-7 rad.
ASSIGN_DTYPE = torch.float32
# Candidates of the nearest-point search lie within this many spacings of the pixel (the
# 12 nearest points of a Fibonacci lattice lie within ~2 spacings; checked on build).
_SEARCH_SPACINGS = 3.0


# --------------------------------------------------------------------------- the lattice


def _check_points(n, name: str = "n") -> int:
    if isinstance(n, bool) or int(n) != n or int(n) < 2:
        raise ValueError(f"{name}: expected an integer number of lattice points >= 2, got {n!r}")
    return int(n)


def fibonacci_lattice(n: int, device=None, dtype=torch.float32) -> Tensor:
    """``n`` unit directions spread uniformly over the sphere, ``(n, 3)``.

    Point ``i`` has height ``y_i = 1 - (2 i + 1) / n`` (so the points are ordered north to
    south and each owns a band of equal area ``4π / n``) and longitude ``i`` times
    :data:`GOLDEN_ANGLE`, wrapped to ``[-π, π)``.  Directions follow docs/conventions.md
    (``(cos lat sin lon, sin lat, cos lat cos lon)``).  Computed in float64, returned in
    ``dtype`` on ``device``.
    """
    n = _check_points(n)
    i = torch.arange(n, dtype=GEOMETRY_DTYPE, device=device)
    y = 1.0 - (2.0 * i + 1.0) / n
    lon = torch.remainder(i * GOLDEN_ANGLE + math.pi, 2 * math.pi) - math.pi
    r = torch.sqrt((1.0 - y * y).clamp_min(0.0))
    return torch.stack([r * torch.sin(lon), y, r * torch.cos(lon)], -1).to(dtype)


def lattice_spacing(n: int) -> float:
    """Mean angular spacing of ``n`` lattice points, radians: ``sqrt(4π / n)`` (the side of
    the square of the solid angle each point owns)."""
    return math.sqrt(4 * math.pi / _check_points(n))


def view_solid_angle(fov_x: float, view_hw: Sequence[int], fov_y: float | None = None) -> float:
    """Solid angle (steradians) seen by a pinhole of horizontal FOV ``fov_x`` (radians) and
    ``view_hw = (h, w)`` pixels: ``4 asin(sin(a/2) sin(b/2))`` for apex angles ``a, b``
    of the rectangular pyramid.  ``fov_y``: vertical FOV (radians) for non-square pixels;
    None: square pixels."""
    h, w = int(view_hw[0]), int(view_hw[1])
    for name, fov in (("fov_x", fov_x), ("fov_y", fov_y)):
        if fov is not None and not 0.0 < fov < math.pi:
            raise ValueError(f"{name}: field of view must be in (0, pi) radians, got {fov!r}")
    tx, ty = half_extents(fov_x, fov_y, (h, w), "centres")
    return 4.0 * math.asin(math.sin(math.atan(tx)) * math.sin(math.atan(ty)))


def points_for_view(view_hw: Sequence[int], fov_x: float, fov_y: float | None = None) -> int:
    """Lattice size at which a view of ``view_hw`` pixels and horizontal FOV ``fov_x``
    (radians; ``fov_y`` vertical for non-square pixels) holds as many points as pixels:
    ``h w 4π / Ω``.  This is the count set by the resolution of the views the model denoises."""
    h, w = int(view_hw[0]), int(view_hw[1])
    return int(round(h * w * 4 * math.pi / view_solid_angle(fov_x, view_hw, fov_y)))


def points_for_erp(erp_hw: Sequence[int]) -> int:
    """Lattice size whose density equals an equirect's at its equator: ``2 H W / π`` (an
    equator pixel covers ``(π/H)(2π/W)`` steradians)."""
    h, w = int(erp_hw[0]), int(erp_hw[1])
    return int(round(2 * h * w / math.pi))


def erp_size_for_points(n: int, align: int = 1) -> tuple[int, int]:
    """The equirect ``(H, 2H)`` whose equator density matches ``n`` points
    (:func:`points_for_erp` inverted), ``H`` rounded to a multiple of ``align``."""
    n = _check_points(n)
    if isinstance(align, bool) or int(align) != align or int(align) < 1:
        raise ValueError(f"align: expected a positive integer, got {align!r}")
    h = max(int(align), int(round(math.sqrt(math.pi * n / 4) / align)) * int(align))
    return h, 2 * h


def _lattice(n: int, device) -> Tensor:
    """Cached float64 lattice (never written in place)."""
    key = ("lattice", n, str(device))
    return GRID_CACHE.get(key, lambda: fibonacci_lattice(n, device, GEOMETRY_DTYPE))


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class LatticeViews:
    """Which lattice point each pixel of each view holds.

    index: ``(V, h, w)`` int64 lattice indices; within a view every point appears at most
    once.  weight: ``(V, h, w)`` the distortion-aware weight of each pixel (``cos(theta) **
    power``, theta the angle of its point from the view's optical axis).  extent: ``(V,)``
    how far each view's region reaches in its own normalised image plane (the largest
    ``max(|u|, |v|)`` of its points; 1 = exactly the pinhole frame, >1 = the view was widened
    to find enough points).  n: lattice size.
    """

    index: Tensor
    weight: Tensor
    extent: Tensor
    n: int

    @property
    def num_views(self) -> int:
        return self.index.shape[0]

    @property
    def view_hw(self) -> tuple[int, int]:
        return int(self.index.shape[1]), int(self.index.shape[2])

    def coverage(self) -> Tensor:
        """``(n,)`` how many views hold each point (0 = the point is in no view)."""
        counts = torch.zeros(self.n, dtype=torch.long, device=self.index.device)
        return counts.index_add_(0, self.index.reshape(-1), torch.ones_like(self.index.reshape(-1)))


def _assign(points: Tensor, rots: Tensor, tx: Tensor, ty: Tensor, h: int, w: int, power: float):
    """All views at once: (index (V, h, w), weight (V, h, w), extent (V,)).

    points: ``(n, 3)``; rots: ``(V, 3, 3)`` camera-to-world; tx, ty: ``(V,)`` half-extents of
    the pinhole frames (tan of the half FOVs)."""
    c = torch.einsum("nk,vkj->vnj", points, rots)  # world -> camera (R^T d): (V, n, 3)
    z = c[..., 2]
    front = z > 0
    zs = torch.where(front, z, torch.ones_like(z))
    u = c[..., 0] / zs / tx[:, None]
    v = c[..., 1] / zs / ty[:, None]
    rho = torch.where(front, torch.maximum(u.abs(), v.abs()), torch.full_like(u, math.inf))
    need = h * w
    near = torch.topk(rho, need, dim=1, largest=False, sorted=False)  # (V, h*w)
    extent = near.values.max(dim=1).values
    if not bool(torch.isfinite(extent).all()):
        raise ValueError(f"n: a {h}x{w} view needs {need} lattice points in front of it; the lattice "
                         f"has only {int(front.sum(1).min())} there (use more points)")
    sel = near.indices
    # Rows: the region's points sorted top to bottom (v descending), w per row; each row
    # left to right (u ascending).
    by_row = torch.gather(sel, 1, torch.argsort(-torch.gather(v, 1, sel), dim=1, stable=True))
    by_row = by_row.view(-1, h, w)
    u_rows = torch.gather(u, 1, by_row.reshape(-1, need)).view(-1, h, w)
    index = torch.gather(by_row, 2, torch.argsort(u_rows, dim=2, stable=True))
    cos_theta = torch.gather(z, 1, index.reshape(-1, need)).view(-1, h, w)
    return index, cos_theta.clamp_min(0.0) ** power, extent


def assign_views(n: int, yaw, pitch, roll, fov_x, view_hw: Sequence[int], *, fov_y=None,
                 distortion_power: float = DISTORTION_POWER, device=None, dtype=torch.float32) -> LatticeViews:
    """Fill ``V`` views with lattice points: one point per pixel, each point once per view.

    n: lattice size (:func:`fibonacci_lattice`).  yaw, pitch, roll, fov_x: RADIANS, floats or
    ``(V,)`` tensors (module convention; ``fov_x`` horizontal).  view_hw: ``(h, w)`` latent
    pixels per view.  fov_y: vertical FOVs, same form, for non-square pixels; None: square.

    Each view takes the ``h w`` points nearest its optical axis in the rectangle metric of
    its image plane (``max(|u|, |v|)``, u and v normalised to the pinhole frame), so the
    region is the view's frame, widened or narrowed until it holds exactly ``h w`` points
    (SphereDiff's FOV adjustment); the points are laid out in rows by height in the image
    plane and, within a row, left to right.  Since uniform points are denser (per unit of
    image plane) at the centre than at the border, the layout shows the centre slightly
    larger than a pinhole would (an equal-count map of the frame); ``distortion_power``
    weighs each pixel by ``cos(theta) ** power``.  Returns :class:`LatticeViews` on
    ``device`` (weights in ``dtype``).
    """
    n = _check_points(n)
    h, w = int(view_hw[0]), int(view_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"view_hw: expected (height, width) >= 1, got {view_hw!r}")
    if h * w > n:
        raise ValueError(f"n: a {h}x{w} view needs {h * w} lattice points, the lattice has {n}")
    if not math.isfinite(distortion_power) or distortion_power < 0:
        raise ValueError(f"distortion_power: expected a finite value >= 0, got {distortion_power!r}")
    angles = {"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x}
    if fov_y is not None:
        angles["fov_y"] = fov_y
    sizes = {t.shape[0] for t in angles.values() if isinstance(t, Tensor) and t.ndim == 1}
    if len(sizes) > 1:
        raise ValueError(f"{', '.join(angles)}: (V,) tensors must have one length, got {sorted(sizes)}")
    v_count = sizes.pop() if sizes else 1
    (yaw, pitch, roll, fov, *fy), _ = batched_angles(v_count, angles)
    fov = fov.to(GEOMETRY_DTYPE)
    check_fov_rad(fov)
    if fy:
        check_fov_rad(fy[0], "fov_y")
    points = _lattice(n, device).to(ASSIGN_DTYPE)
    rots = rotation_matrix(*[a.detach().to(device=device, dtype=GEOMETRY_DTYPE) for a in (yaw, pitch, roll)])
    tx = torch.tan(fov.detach().to(device) / 2)
    ty = tx * h / w if not fy else torch.tan(fy[0].detach().to(device=device, dtype=GEOMETRY_DTYPE) / 2)
    index, weight, extent = _assign(points, rots.to(ASSIGN_DTYPE), tx.to(ASSIGN_DTYPE),
                                    ty.to(ASSIGN_DTYPE), h, w, distortion_power)
    weight = weight.to(dtype)
    return LatticeViews(index, weight, extent, n)


def _check_lattice_values(values: Tensor, n: int | None = None, name: str = "values") -> None:
    if not isinstance(values, Tensor) or values.ndim != 3:
        got = f"shape {list(values.shape)}" if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{name}: expected lattice values (B, C, N), got {got}")
    if n is not None and values.shape[-1] != n:
        raise ValueError(f"{name}: expected {n} lattice points in the last axis, got {values.shape[-1]}")


def lattice_to_views(values: Tensor, views: LatticeViews) -> Tensor:
    """Fill every view with lattice values: ``(T, C, N)`` -> VIEW-MAJOR ``(V*T, C, h, w)``
    (``b = v*T + t``).  Exact copies (no interpolation), differentiable in ``values``."""
    _check_lattice_values(values, views.n)
    t, c, _ = values.shape
    v = views.num_views
    h, w = views.view_hw
    idx = views.index.to(values.device).reshape(-1)
    g = values.index_select(-1, idx)  # (T, C, V*h*w)
    return g.view(t, c, v, h, w).permute(2, 0, 1, 3, 4).reshape(v * t, c, h, w)


def views_to_lattice(x: Tensor, views: LatticeViews, cell_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weighted average of every view's pixels at their lattice points.

    x: VIEW-MAJOR ``(V*T, C, h, w)``.  cell_weight: ``(V*T,)`` positive factors per view and
    frame (e.g. given cells weigh more) or None.  Returns ``(mean (T, C, N), weight_sum (T, 1,
    N))``: ``mean`` is ``sum_p w_p x_p / sum_p w_p`` over the pixels ``p`` holding a point
    (``w_p`` = :attr:`LatticeViews.weight` times the cell weight) and 0 where no pixel holds
    it (``weight_sum`` 0 there).
    """
    check_images(x, "x")
    v = views.num_views
    h, w = views.view_hw
    if x.shape[0] % v or tuple(x.shape[-2:]) != (h, w):
        raise ValueError(f"x: expected a view-major batch of {v} views of {h}x{w} ((V*T, C, {h}, {w})), "
                         f"got {list(x.shape)}")
    t, c = x.shape[0] // v, x.shape[1]
    pix = views.weight.to(device=x.device, dtype=x.dtype).reshape(v, 1, h * w)
    if cell_weight is not None:
        if tuple(cell_weight.shape) != (v * t,):
            raise ValueError(f"cell_weight: expected shape ({v * t},), got {list(cell_weight.shape)}")
        pix = pix * cell_weight.to(device=x.device, dtype=x.dtype).reshape(v, t, 1)
    pix = pix.expand(v, t, h * w)
    idx = views.index.to(x.device).reshape(-1)
    vals = (x.reshape(v, t, c, h * w) * pix[:, :, None]).permute(1, 2, 0, 3).reshape(t, c, v * h * w)
    num = x.new_zeros(t, c, views.n).index_add_(-1, idx, vals)
    den = x.new_zeros(t, 1, views.n).index_add_(-1, idx, pix.permute(1, 0, 2).reshape(t, 1, v * h * w))
    covered = den > 0
    mean = torch.where(covered, num / torch.where(covered, den, torch.ones_like(den)), torch.zeros_like(num))
    return mean, den


# --------------------------------------------------------------------------- images -> lattice


def _erp_lattice_taps(n: int, erp_hw, mode: str, device, dtype) -> Taps:
    x, y = directions_to_erp_xy(_lattice(n, device), erp_hw)
    taps = erp_taps(x, y, erp_hw, mode)
    return Taps.make(taps.index, taps.weight, dtype)


def erp_to_lattice(erp: Tensor, n: int, mode: str = "bilinear") -> Tensor:
    """Sample equirect images at the ``n`` lattice points: ``(B, C, H, 2H)`` -> ``(B, C, n)``.

    The seam and the poles wrap (docs/conventions.md).  erp's device and dtype;
    differentiable in ``erp``.
    """
    erp_hw = check_erp(erp)
    n = _check_points(n)
    check_mode(mode)
    b, c = erp.shape[:2]
    key = ("erp2lat", n, erp_hw, mode, str(erp.device), erp.dtype)
    taps = GRID_CACHE.get(key, lambda: _erp_lattice_taps(n, erp_hw, mode, erp.device, erp.dtype))
    return bag(table_of(erp), taps).view(n, b, c).permute(1, 2, 0)


def _perspective_lattice_taps(params: tuple, n: int, view_hw, mode: str, device, dtype):
    yaw, pitch, roll, fov, *fov_y = params
    rot = camera_rotation(yaw, pitch, roll, device)
    tx, ty = half_extents(fov, fov_y[0] if fov_y else None, view_hw, "centres")
    u, v, front = camera_plane(_lattice(n, device), rot, tx, ty)
    inside = (front & (u.abs() < 1) & (v.abs() < 1)).nonzero().squeeze(1)
    px, py = plane_to_view_xy(u[inside], v[inside], view_hw, "centres")
    taps = image_taps(px, py, tuple(view_hw), mode, padding="border")
    return inside, Taps.make(taps.index, taps.weight, dtype)


def perspective_to_lattice(views: Tensor, yaw, pitch, roll, fov_x, n: int,
                           mode: str = "bilinear", *, fov_y=None) -> tuple[Tensor, Tensor]:
    """Sample pinhole views at the lattice points they see.

    views: ``(B, C, h, w)``; angles RADIANS (floats or ``(B,)``), module convention;
    ``fov_y`` vertical FOVs for non-square pixels (None: square).
    Returns ``(values (B, C, n), inside (B, 1, n))``: each view resampled at the points
    inside its frame (0 elsewhere) and 1 where the point is inside.
    """
    check_images(views, "views")
    n = _check_points(n)
    check_mode(mode)
    b, c, h, w = views.shape
    angles = {"yaw": yaw, "pitch": pitch, "roll": roll, "fov_x": fov_x}
    if fov_y is not None:
        angles["fov_y"] = fov_y
    cams, _ = batched_angles(b, angles)
    check_fov_rad(cams[3])
    if fov_y is not None:
        check_fov_rad(cams[4], "fov_y")
    out = views.new_zeros(b, c, n)
    inside = views.new_zeros(b, 1, n)
    for params, idx in camera_groups(cams).items():
        key = ("p2lat", params, n, (h, w), mode, str(views.device), views.dtype)
        points, taps = GRID_CACHE.get(key, lambda: _perspective_lattice_taps(params, n, (h, w), mode,
                                                                            views.device, views.dtype))
        vals = bag(table_of(views[idx]), taps).view(-1, len(idx), c)  # (M, g, C)
        ii = torch.tensor(idx, device=views.device)
        out[ii[:, None], :, points[None, :]] = vals.permute(1, 0, 2)
        inside[ii[:, None], :, points[None, :]] = 1.0
    return out, inside


# --------------------------------------------------------------------------- lattice -> equirect


def _mls_weights(q: Tensor, p: Tensor, spacing: float) -> Tensor:
    """Moving-least-squares (degree 2) weights of neighbours ``p (P, K, 3)`` for the value
    at unit directions ``q (P, 3)``: ``(P, K)``, summing to 1 and reproducing quadratics of
    the tangent-plane coordinates exactly."""
    up = torch.zeros_like(q)
    up[:, 1] = 1.0
    east = torch.cross(up, q, dim=-1)
    flat = east.norm(dim=-1) < 1e-9  # a query on a pole: any tangent basis will do
    east[flat] = torch.tensor([1.0, 0.0, 0.0], dtype=q.dtype, device=q.device)
    east = east / east.norm(dim=-1, keepdim=True)
    north = torch.cross(q, east, dim=-1)
    a = (p * east[:, None]).sum(-1) / spacing
    b = (p * north[:, None]).sum(-1) / spacing
    dist = torch.acos((p * q[:, None]).sum(-1).clamp(-1.0, 1.0)) / spacing
    w = torch.exp(-0.5 * (dist / KERNEL_SIGMA) ** 2)
    basis = torch.stack([torch.ones_like(a), a, b, a * a, a * b, b * b], -1)  # (P, K, 6)
    atw = basis.transpose(1, 2) * w[:, None, :]
    return torch.linalg.solve(atw @ basis, atw)[:, 0, :]


def _nearest_points(n: int, erp_hw, k: int, device) -> Tensor:
    """``(H, W, k)`` indices of each equirect pixel's ``k`` nearest lattice points, nearest
    first.  The search for a row only looks at the points whose height lies within the
    search radius (the lattice is sorted by height), so the cost is ~ pixels x sqrt(n)."""
    h, w = erp_hw
    if n < k:
        raise ValueError(f"n: the search needs at least {k} lattice points, got {n}")
    points = _lattice(n, device)
    dirs = erp_directions(erp_hw, device, GEOMETRY_DTYPE)  # (H, W, 3)
    radius = _SEARCH_SPACINGS * lattice_spacing(n)
    cos_radius = math.cos(radius)
    index = torch.empty(h, w, k, dtype=torch.long, device=device)
    for row in range(h):
        y0 = float(dirs[row, 0, 1])
        lo = max(0, int(math.floor((1.0 - min(1.0, y0 + radius)) * n / 2 - 0.5)))
        hi = min(n, int(math.ceil((1.0 - max(-1.0, y0 - radius)) * n / 2 - 0.5)) + 1)
        near = (dirs[row] @ points[lo:hi].T).topk(k, dim=1)  # cosines of the angles, (W, k)
        if float(near.values[:, -1].min()) < cos_radius:
            raise RuntimeError(f"lattice search: row {row} of {h}: the {k} nearest of {n} points lie beyond "
                               f"the search radius (increase _SEARCH_SPACINGS)")
        index[row] = near.indices + lo
    return index


def _lattice_erp_taps(n: int, erp_hw, device, dtype) -> Taps:
    """Per equirect pixel: its KERNEL_POINTS nearest lattice points and their quadratic
    moving-least-squares weights."""
    h, w = erp_hw
    k = KERNEL_POINTS
    index = _nearest_points(n, erp_hw, k, device)
    points = _lattice(n, device)
    dirs = erp_directions(erp_hw, device, GEOMETRY_DTYPE)
    spacing = lattice_spacing(n)
    weight = torch.stack([_mls_weights(dirs[row], points[index[row]], spacing) for row in range(h)])
    return Taps.make(index.reshape(h * w, k), weight.reshape(h * w, k), dtype)


def nearest_lattice_points(n: int, erp_hw: Sequence[int], device=None) -> Tensor:
    """``(H*W,)`` int64: the lattice point nearest each equirect pixel centre (row-major).
    Cached; never written in place."""
    n = _check_points(n)
    erp_hw = check_erp_hw(erp_hw)
    key = ("lat_nearest", n, erp_hw, str(device))
    return GRID_CACHE.get(key, lambda: _nearest_points(n, erp_hw, 1, device).reshape(-1))


def lattice_to_erp(values: Tensor, erp_hw: Sequence[int]) -> Tensor:
    """Interpolate lattice values onto an equirect: ``(B, C, n)`` -> ``(B, C, H, W)``.

    Each pixel is the value at its centre of a weighted least-squares quadratic (in the
    tangent plane) through its :data:`KERNEL_POINTS` nearest points (weights of sigma
    :data:`KERNEL_SIGMA` spacings): fields linear in the direction are reproduced exactly,
    smooth ones to O(spacing^4), and the seam and the poles are continuous by construction.  values' device and dtype; differentiable in ``values``.
    """
    _check_lattice_values(values)
    erp_hw = check_erp_hw(erp_hw)
    b, c, n = values.shape
    key = ("lat2erp", n, erp_hw, str(values.device), values.dtype)
    taps = GRID_CACHE.get(key, lambda: _lattice_erp_taps(n, erp_hw, values.device, values.dtype))
    table = values.permute(2, 0, 1).reshape(n, b * c)
    out = bag(table, taps)  # (H*W, B*C)
    return out.view(erp_hw[0], erp_hw[1], b, c).permute(2, 3, 0, 1)
