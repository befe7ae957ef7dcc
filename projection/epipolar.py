"""Panorama-to-panorama geometry: spherical epipolar sampling and depth reprojection.

Convention: :mod:`.geometry` (docs/conventions.md).  A panorama camera has a camera-to-world
rotation ``rot`` (columns right, up, forward; :func:`.geometry.rotation_matrix`) and a
position ``pos`` in world units; a pixel's ray is the unit direction of its centre in the
camera frame (:func:`.geometry.erp_directions`).  **Distance** (``depth`` here) is measured
along the ray from the camera centre (what a panorama depth map such as MoGe's holds), not
along the forward axis.

Relative poses map points between camera frames: ``(R, t) = relative_pose(rot_a, pos_a,
rot_b, pos_b)`` gives ``P_b = R @ P_a + t``; ``t`` is camera a's centre seen from camera b.

Spherical epipolar geometry (DiffPano, Ye et al. 2024, §3.3; shared/specs/
lookbeyond-videopanda-diffpano.md §3c): the target ray ``d`` meets the reference camera as
the points ``lambda * R d + t``, ``lambda > 0``.  Seen from the reference centre their
directions ``normalize(R d + t / lambda)`` run along the great circle with normal
``t x (R d)``, from the epipole ``t / |t|`` (``lambda -> 0``) to the vanishing direction
``R d`` (``lambda -> inf``).  Parametrising by the inverse distance ``rho = 1 / lambda``
keeps ``lambda = inf`` finite.

Sampling wraps the equirect seam and continues across the poles (:mod:`._sampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._sampling import erp_taps
from .geometry import check_erp_hw, directions_to_erp_xy, erp_directions
from .padding import pad_erp

__all__ = [
    "DEPTH_SPACINGS",
    "relative_pose",
    "depth_samples",
    "EpipolarSamples",
    "epipolar_samples",
    "equirect_epipolar_samples",
    "epipolar_normal",
    "great_circle",
    "sample_erp_points",
    "Reprojection",
    "reproject_equirect",
]

# Geometry is computed in float64 and cast to the caller's dtype at the end (as
# projection/perspective.py does), so seam and pole coordinates do not lose pixels in fp16.
GEOMETRY_DTYPE = torch.float64
# Depth spacing along a ray.  "inverse" is uniform in disparity (equal steps in image
# motion for a given baseline, the usual choice of epipolar samplers, e.g. pixelSplat);
# "linear" is uniform in distance.  DiffPano does not state its rule (spec §3c "Unknown").
DEPTH_SPACINGS = ("inverse", "linear")
Spacing = Literal["inverse", "linear"]
# A sample closer than this (relative to the ray) to the reference centre has no direction.
_CENTRE_EPS = 1e-9

# Reprojection defaults (design choices, no paper value; docs/diffpano.md "Reprojection").
# Secant steps refining a target pixel's distance after the forward splat.
REPROJECT_ITERATIONS = 4
# A refined point counts as seen by the source when its distance to the source centre and
# the source's distance map agree to this fraction (bilinear error of a distance map on
# a flat wall is far below 1 %, see tests/projection/test_epipolar.py).
REPROJECT_TOLERANCE = 0.01
# Four neighbouring source distances whose max/min ratio exceeds this straddle a depth
# edge; the bilinear value there is a "rubber sheet" between two surfaces, not a surface.
# 1.25 keeps floors seen up to ~80 deg from their normal at 128 rows (dD/D per pixel
# = tan(incidence) * pi / H).
REPROJECT_EDGE_RATIO = 1.25
# Holes of the forward splat (magnified surfaces) are filled from their neighbours for at
# most this many 3x3 dilations before a pixel counts as unseen.
REPROJECT_FILL_STEPS = 4


# --------------------------------------------------------------------------- poses and depths


def relative_pose(rot_a: Tensor, pos_a: Tensor, rot_b: Tensor, pos_b: Tensor) -> tuple[Tensor, Tensor]:
    """The map from camera a's frame to camera b's: ``P_b = R @ P_a + t``.

    rot_*: ``(..., 3, 3)`` camera-to-world rotations; pos_*: ``(..., 3)`` camera centres (world
    units).  Broadcasts.  Returns ``R = rot_b^T rot_a (..., 3, 3)`` and
    ``t = rot_b^T (pos_a - pos_b) (..., 3)`` (camera a's centre in camera b's frame).
    """
    rot_bt = rot_b.transpose(-1, -2)
    R = rot_bt @ rot_a
    t = (rot_bt @ (pos_a - pos_b)[..., None])[..., 0]
    return R, t


def depth_samples(near: float, far: float, num: int, spacing: Spacing = "inverse",
                  device=None, dtype=torch.float32) -> Tensor:
    """``num`` distances from ``near`` to ``far`` (both included; one sample sits halfway).

    spacing: ``inverse`` (uniform in 1/distance; ``far`` may be ``inf``: the last sample is
    the vanishing direction) or ``linear``.  Returns ``(num,)``.
    """
    if isinstance(num, bool) or int(num) != num or int(num) < 1:
        raise ValueError(f"num: expected a positive number of depth samples, got {num!r}")
    if spacing not in DEPTH_SPACINGS:
        raise ValueError(f"spacing: unknown depth spacing {spacing!r}; choose one of {list(DEPTH_SPACINGS)}")
    near, far = float(near), float(far)
    if not (math.isfinite(near) and near > 0.0) or not far > near:
        raise ValueError(f"depth range: need 0 < near < far, got near={near}, far={far}")
    if spacing == "linear" and not math.isfinite(far):
        raise ValueError("depth range: linear spacing needs a finite far distance")
    n = int(num)
    ramp = torch.linspace(0.0, 1.0, n, dtype=GEOMETRY_DTYPE) if n > 1 else torch.full((1,), 0.5, dtype=GEOMETRY_DTYPE)
    if spacing == "linear":
        out = near + (far - near) * ramp
    else:
        inv = (1.0 / near) + ((0.0 if math.isinf(far) else 1.0 / far) - 1.0 / near) * ramp
        out = 1.0 / inv  # inv == 0 -> inf (the vanishing direction)
    return out.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------- epipolar sampling


@dataclass(frozen=True)
class EpipolarSamples:
    """Where the S distance samples of each target ray land in a reference equirect.

    Batch dims ``...`` are those of the relative poses (e.g. ``(B, K)``: K references per
    target); ``N`` target rays; ``S`` samples per ray, ordered from near to far.

    x, y: ``(..., N, S)`` continuous pixel coordinates in the reference equirect of size
    ``ref_hw`` (pixel centres at integers, :func:`.geometry.directions_to_erp_xy`).
    directions: ``(..., N, S, 3)`` unit directions in the reference frame.
    ray: ``(..., N, 3)`` the target ray in the reference frame (``R d``, the direction of the
    infinitely far sample).  depth: ``(S,)`` distances along the target ray.  valid:
    ``(..., N, S)`` False where a sample coincides with the reference centre.
    """

    x: Tensor
    y: Tensor
    directions: Tensor
    ray: Tensor
    depth: Tensor
    valid: Tensor
    ref_hw: tuple[int, int]

    def grid(self) -> Tensor:
        """``(..., N, S, 2)`` coordinates normalised for ``F.grid_sample(align_corners=False)``.

        ``grid_sample`` neither wraps the seam nor crosses the poles; sample with
        :func:`sample_erp_points` where that matters.
        """
        h, w = self.ref_hw
        return torch.stack([(self.x + 0.5) * (2.0 / w) - 1.0, (self.y + 0.5) * (2.0 / h) - 1.0], dim=-1)

    def parallax(self) -> Tensor:
        """``(..., N, S)`` angle (radians) between each sample's direction and the target ray
        seen from the reference: 0 at infinity, growing as the sample nears the camera."""
        cos = (self.directions * self.ray[..., None, :]).sum(-1)
        return torch.acos(cos.clamp(-1.0, 1.0))


def epipolar_samples(directions: Tensor, R: Tensor, t: Tensor, depths: Tensor,
                     ref_hw: Sequence[int]) -> EpipolarSamples:
    """Project S distance samples along target rays into a reference panorama.

    directions: ``(N, 3)`` unit target rays in the target camera frame.  R, t: ``(..., 3, 3)``
    and ``(..., 3)`` from :func:`relative_pose` (target frame -> reference frame).  depths:
    ``(S,)`` positive distances (``inf`` allowed).  ref_hw: the reference equirect size.
    Returns :class:`EpipolarSamples` in ``directions``' dtype.
    """
    ref_hw = check_erp_hw(ref_hw, "ref_hw")
    if directions.ndim != 2 or directions.shape[-1] != 3:
        raise ValueError(f"directions: expected (N, 3) unit rays, got {list(directions.shape)}")
    if R.shape[-2:] != (3, 3) or t.shape[-1] != 3 or R.shape[:-2] != t.shape[:-1]:
        raise ValueError(f"R, t: expected (..., 3, 3) and (..., 3) with the same batch dims, "
                         f"got {list(R.shape)} and {list(t.shape)}")
    if depths.ndim != 1 or not bool((depths > 0).all()):
        raise ValueError(f"depths: expected (S,) positive distances, got {depths.tolist()}")
    out_dtype = directions.dtype
    g = GEOMETRY_DTYPE
    d = directions.to(g)
    Rg, tg = R.to(device=d.device, dtype=g), t.to(device=d.device, dtype=g)
    rho = (1.0 / depths.to(device=d.device, dtype=g))  # (S,), 0 at infinity
    ray = torch.einsum("...ij,nj->...ni", Rg, d)  # (..., N, 3)
    p = ray[..., :, None, :] + rho[:, None] * tg[..., None, None, :]  # (..., N, S, 3)
    norm = p.norm(dim=-1)
    scale = 1.0 + rho * tg.norm(dim=-1)[..., None, None]
    valid = norm > _CENTRE_EPS * scale
    u = p / norm.clamp_min(_CENTRE_EPS)[..., None]
    x, y = directions_to_erp_xy(u, ref_hw)
    return EpipolarSamples(
        x=x.to(out_dtype), y=y.to(out_dtype), directions=u.to(out_dtype), ray=ray.to(out_dtype),
        depth=depths.to(out_dtype), valid=valid, ref_hw=ref_hw,
    )


def equirect_epipolar_samples(target_hw: Sequence[int], R: Tensor, t: Tensor, depths: Tensor,
                              ref_hw: Sequence[int] | None = None, dtype=torch.float32) -> EpipolarSamples:
    """:func:`epipolar_samples` for every pixel centre of a ``target_hw`` equirect.

    ``N = H * W`` in row-major order (the token order of a flattened ``(H, W)`` feature map).
    ref_hw defaults to ``target_hw``.
    """
    target_hw = check_erp_hw(target_hw, "target_hw")
    d = erp_directions(target_hw, device=R.device, dtype=GEOMETRY_DTYPE).reshape(-1, 3)
    s = epipolar_samples(d, R, t, depths, ref_hw or target_hw)
    return EpipolarSamples(s.x.to(dtype), s.y.to(dtype), s.directions.to(dtype), s.ray.to(dtype),
                           s.depth.to(dtype), s.valid, s.ref_hw)


def epipolar_normal(directions: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Unit normals ``t x (R d)`` of the epipolar great circles, ``(..., N, 3)``.

    Zero where the circle is undefined (``t = 0``: every sample is the one point ``R d``; or
    ``d`` pointing along the baseline).
    """
    ray = torch.einsum("...ij,nj->...ni", R, directions)
    n = torch.cross(t[..., None, :].expand_as(ray), ray, dim=-1)
    norm = n.norm(dim=-1, keepdim=True)
    return torch.where(norm > _CENTRE_EPS, n / norm.clamp_min(_CENTRE_EPS), torch.zeros_like(n))


def great_circle(normal: Tensor, num: int = 256) -> Tensor:
    """``num`` unit directions evenly around the great circle with unit ``normal (..., 3)``.

    Returns ``(..., num, 3)`` (feed to :func:`.geometry.directions_to_erp_xy` to draw it).
    """
    helper = torch.zeros_like(normal)
    helper[..., 1] = 1.0
    near_pole = normal[..., 1].abs() > 0.9
    helper[near_pole] = torch.tensor([1.0, 0.0, 0.0], dtype=normal.dtype, device=normal.device)
    a = F.normalize(torch.cross(normal, helper, dim=-1), dim=-1)
    b = torch.cross(normal, a, dim=-1)
    theta = torch.arange(num, dtype=normal.dtype, device=normal.device) * (2 * math.pi / num)
    return torch.cos(theta)[:, None] * a[..., None, :] + torch.sin(theta)[:, None] * b[..., None, :]


# --------------------------------------------------------------------------- sampling


def sample_erp_points(src: Tensor, x: Tensor, y: Tensor, source_index: Tensor | None = None,
                      mode: Literal["bilinear", "nearest"] = "bilinear") -> Tensor:
    """Sample equirect images at arbitrary points, wrapping the seam and crossing the poles.

    src: ``(B, C, H, W)``.  x, y: ``(M, P)`` pixel coordinates (pixel centres at integers).
    source_index: ``(M,)`` long, which image of ``src`` row ``m`` reads (default ``m``,
    needs ``M == B``).  Returns ``(M, P, C)`` (channels last: one feature vector per point).
    Differentiable in ``src``.
    """
    if src.ndim != 4:
        raise ValueError(f"src: expected (B, C, H, W), got {list(src.shape)}")
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x, y: expected two (M, P) tensors, got {list(x.shape)} and {list(y.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    b, c, h, w = src.shape
    m, p = x.shape
    if source_index is None:
        if m != b:
            raise ValueError(f"x: {m} rows need source_index for {b} source images")
        source_index = torch.arange(b, device=src.device)
    source_index = source_index.to(device=src.device, dtype=torch.long)
    if source_index.shape != (m,):
        raise ValueError(f"source_index: expected ({m},), got {list(source_index.shape)}")
    if m and (int(source_index.min()) < 0 or int(source_index.max()) >= b):
        raise ValueError(f"source_index: values must lie in [0, {b}), got {source_index.tolist()}")
    taps = erp_taps(x.to(GEOMETRY_DTYPE), y.to(GEOMETRY_DTYPE), (h, w), mode)
    k = taps.index.shape[-1]
    index = taps.index.reshape(m, p * k) + (source_index * (h * w))[:, None]
    table = src.permute(0, 2, 3, 1).reshape(b * h * w, c)
    offsets = torch.arange(0, m * p * k, k, device=src.device)
    out = F.embedding_bag(index.reshape(-1), table, offsets,
                          per_sample_weights=taps.weight.reshape(-1).to(device=src.device, dtype=src.dtype),
                          mode="sum")
    return out.view(m, p, c)


# --------------------------------------------------------------------------- reprojection


@dataclass(frozen=True)
class Reprojection:
    """A panorama seen from another camera position.

    image: ``(B, C, H, W)``, zero where not visible.  distance: ``(B, 1, H, W)`` distance
    along the target rays, zero where not visible.  visible: ``(B, 1, H, W)`` bool, True
    where the target pixel's surface is seen by the source (False: disoccluded, or at a
    depth edge).
    """

    image: Tensor
    distance: Tensor
    visible: Tensor


def _splat_min(r: Tensor, x: Tensor, y: Tensor, hw: tuple[int, int]) -> Tensor:
    """Z-buffer: the smallest ``r (B, N)`` landing on the pixel nearest each ``(x, y)``.

    Nearest (not a 2x2 footprint): a footprint would grow foreground objects by a pixel
    and seed silhouette pixels with the foreground; holes are filled from the far side.
    """
    b = r.shape[0]
    h, w = hw
    index = erp_taps(x, y, hw, "nearest").index.reshape(b, -1).long()
    zbuf = r.new_full((b, h * w), math.inf)
    zbuf.scatter_reduce_(1, index, r, reduce="amin", include_self=True)
    return zbuf.view(b, 1, h, w)


def _wrap_pad(z: Tensor) -> Tensor:
    """Pad ``(B, 1, H, W)`` by one pixel: columns wrap the seam (:func:`.padding.pad_erp`),
    rows get ``-inf`` (no neighbour over the pole for a max-pool)."""
    return F.pad(pad_erp(z, 1), (0, 0, 1, 1), value=-math.inf)


def _fill_holes(z: Tensor, steps: int) -> Tensor:
    """Fill ``inf`` pixels with the largest finite 3x3 neighbour (seam-wrapped), ``steps`` times.

    Holes of a forward splat are magnified surfaces or disocclusions; both reveal the
    farther side, so the largest neighbour is the better starting guess for refinement.
    """
    for _ in range(steps):
        hole = torch.isinf(z)
        if not bool(hole.any()):
            break
        grown = F.max_pool2d(_wrap_pad(torch.where(hole, torch.full_like(z, -math.inf), z)), 3, stride=1)
        z = torch.where(hole & torch.isfinite(grown), grown, z)
    return z


def reproject_equirect(image: Tensor, distance: Tensor, R: Tensor, t: Tensor,
                       out_hw: Sequence[int] | None = None, *, iterations: int = REPROJECT_ITERATIONS,
                       tolerance: float = REPROJECT_TOLERANCE, edge_ratio: float = REPROJECT_EDGE_RATIO,
                       fill_steps: int = REPROJECT_FILL_STEPS) -> Reprojection:
    """Render a panorama with a distance map from another camera position.

    image: ``(B, C, H, W)`` source panoramas; distance: ``(B, 1, H, W)`` or ``(B, H, W)``
    positive distances along the source rays (world units of ``t``).  R, t: ``(B, 3, 3)``,
    ``(B, 3)`` (or unbatched) from :func:`relative_pose` (source frame -> target frame).
    out_hw: target equirect size (default the source's).

    Forward-splat the source points into a target z-buffer (4 nearest pixels, nearest
    point wins), fill splat holes from neighbours, then refine each target pixel's distance
    along its own ray by the secant method until the point lies on the source's distance
    map, and read the source there (backward warping, bilinear).  A pixel is visible when
    the refined point is within ``tolerance`` of the source surface, not on a depth edge
    of the source and within ``edge_ratio`` of the splatted distance.  Within one pixel of a
    silhouette a pixel-centre ray that grazes the occluder may side with either surface
    (mixed pixels); dilate the unseen region where that matters.  Returns :class:`Reprojection`; differentiable in ``image``.
    """
    if image.ndim != 4:
        raise ValueError(f"image: expected (B, C, H, W), got {list(image.shape)}")
    b, c, h, w = image.shape
    src_hw = check_erp_hw((h, w), "image")
    if distance.ndim == 3:
        distance = distance[:, None]
    if distance.shape != (b, 1, h, w):
        raise ValueError(f"distance: expected ({b}, 1, {h}, {w}) like image, got {list(distance.shape)}")
    out_hw = check_erp_hw(out_hw or src_hw, "out_hw")
    if R.shape == (3, 3):
        R, t = R.expand(b, 3, 3), t.expand(b, 3)
    if R.shape != (b, 3, 3) or t.shape != (b, 3):
        raise ValueError(f"R, t: expected ({b}, 3, 3) and ({b}, 3), got {list(R.shape)} and {list(t.shape)}")
    if not bool((distance > 0).all()) or not bool(torch.isfinite(distance).all()):
        raise ValueError("distance: expected finite positive distances everywhere")
    g = GEOMETRY_DTYPE
    dev = image.device
    R, t = R.to(device=dev, dtype=g), t.to(device=dev, dtype=g)
    dist = distance.to(g)
    src_dirs = erp_directions(src_hw, device=dev, dtype=g).reshape(-1, 3)
    tgt_dirs = erp_directions(out_hw, device=dev, dtype=g).reshape(-1, 3)

    # 1. forward splat: source points in the target frame, nearest wins.
    pts = dist.reshape(b, -1, 1) * src_dirs  # (B, HW, 3) source frame
    pts = torch.einsum("bij,bnj->bni", R, pts) + t[:, None]
    r = pts.norm(dim=-1)
    x, y = directions_to_erp_xy(pts, out_hw)
    z = _splat_min(r, x, y, out_hw)
    # Background points leak through the holes of a magnified foreground; a splat much
    # farther than a neighbour's may be such a leak, so it seeds nothing.
    leak = torch.isfinite(z) & (z > edge_ratio * -F.max_pool2d(_wrap_pad(-z), 3, stride=1))
    z = _fill_holes(torch.where(leak, torch.full_like(z, math.inf), z), fill_steps)
    unseeded = leak | torch.isinf(z)  # leaks stay unseen even where a fill reached them
    z = z.reshape(b, -1)  # (B, N)
    seeded = ~unseeded.reshape(b, -1)
    z = torch.where(seeded, z, torch.ones_like(z))
    seed = z

    # 2. refine along each target ray: f(z) = |P_src(z)| - D_src(direction of P_src(z)).
    Rt = R.transpose(-1, -2)

    def residual(zz: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p = zz[..., None] * tgt_dirs - t[:, None]  # target frame, relative to the source centre
        p = torch.einsum("bij,bnj->bni", Rt, p)  # source frame
        rs = p.norm(dim=-1)
        sx, sy = directions_to_erp_xy(p, src_hw)
        return rs - sample_erp_points(dist, sx, sy)[..., 0], sx, sy

    z0, (f0, _, _) = z, residual(z)
    z1 = z * 1.01
    f1, _, _ = residual(z1)
    for _ in range(max(int(iterations), 0)):
        slope = (f1 - f0) / (z1 - z0)
        ok = slope.abs() > 1e-12
        z2 = torch.where(ok, z1 - f1 / torch.where(ok, slope, torch.ones_like(slope)), z1)
        z2 = torch.where(z2 > 0, z2, 0.5 * z1)
        z0, f0 = z1, f1
        z1 = z2
        f1, _, _ = residual(z1)
    f, sx, sy = residual(z1)

    # 3. visibility: on the source surface, away from depth edges.
    taps = erp_taps(sx, sy, src_hw, "bilinear")
    d4 = dist.reshape(b, -1).gather(1, taps.index.reshape(b, -1).long()).view(b, -1, 4)
    smooth = d4.amax(-1) <= edge_ratio * d4.amin(-1)
    # The refined point must stay near the splat's surface: a pixel whose ray grazes a
    # foreground silhouette can find a background point the source sees beside it.
    near_seed = (z1 <= edge_ratio * seed) & (seed <= edge_ratio * z1)
    visible = seeded & smooth & near_seed & (f.abs() <= tolerance * z1) & (z1 > 0)

    colour = sample_erp_points(image, sx.to(image.dtype), sy.to(image.dtype))  # (B, N, C)
    mask = visible[..., None].to(image.dtype)
    out = (colour * mask).permute(0, 2, 1).reshape(b, c, *out_hw)
    out_dist = torch.where(visible, z1, torch.zeros_like(z1)).to(distance.dtype).view(b, 1, *out_hw)
    return Reprojection(image=out, distance=out_dist, visible=visible.view(b, 1, *out_hw))
