"""Render passes of a coarse scene: G-buffer (face, hit point, depth, normal, barycentrics),
normal-shaded and line-art images, HED-like soft edges, correspondences and flow.

Perspective views go through the rasteriser (:mod:`.raster`) for coverage; equirect views
rasterise six 90° cube faces and look each panorama pixel up in the face its direction falls on.
Either way the hit point is then computed exactly by intersecting the pixel's ray with its face's
plane, so depth and correspondences are exact to float rounding (sub-pixel, tested against
closed-form scenes).

Edge maps follow what VideoFrom3D draws with Blender's Line Art (spec §2e; ``assets/readme.md``):
silhouette/occlusion contours (depth jumps and scene borders) and crease edges (neighbouring faces
meeting at more than ``crease_deg``), found on the G-buffer; :func:`soft_edges` turns them into the
soft, thick white-on-black lines of the HED maps the official pipeline feeds to the ControlNet and
the inbetweener, with kornia's filters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...cameras import CameraPath
from ...projection.geometry import rotation_matrix
from ...projection.pinhole import camera_rays, erp_rays, project_points, world_to_camera
from .mesh import Mesh
from .raster import DEFAULT_CHUNK, clip_near, rasterize

__all__ = [
    "GBuffer",
    "EdgeSettings",
    "NEAR_PLANE",
    "render_gbuffer",
    "render_erp_gbuffer",
    "line_art",
    "soft_edges",
    "normal_image",
    "reproject",
    "forward_flow",
]

NEAR_PLANE = 1e-3  # world units; faces closer than this to the camera are clipped
_BARY_EPS = 1e-9  # a hit counts as inside its triangle up to this barycentric slack
_CUBE_FACES = ((0.0, 0.0), (math.pi / 2, 0.0), (math.pi, 0.0), (-math.pi / 2, 0.0), (0.0, math.pi / 2), (0.0, -math.pi / 2))


@dataclass(frozen=True)
class GBuffer:
    """Per-pixel render of T views.

    face: (T, H, W) int64, -1 where no surface.  point: (T, H, W, 3) world hit points.
    depth: (T, H, W) distance along the camera's forward axis (pinhole) or along the ray
    (equirect); +inf where empty.  normal: (T, H, W, 3) unit world normals facing the camera.
    bary: (T, H, W, 3) barycentric coordinates of ``point`` in its face.  All zeros where empty.
    """

    face: Tensor
    point: Tensor
    depth: Tensor
    normal: Tensor
    bary: Tensor

    @property
    def mask(self) -> Tensor:
        return self.face >= 0

    def select(self, index) -> "GBuffer":
        """The views at ``index`` (a slice or an index tensor), kept batched."""
        return GBuffer(self.face[index], self.point[index], self.depth[index], self.normal[index], self.bary[index])


@dataclass(frozen=True)
class _Poses:
    """A camera path as tensors: rotation (T, 3, 3), position (T, 3), fov_x (T,)."""

    rotation: Tensor
    position: Tensor
    fov_x: Tensor

    @classmethod
    def of(cls, path: CameraPath, device=None, dtype=torch.float64) -> "_Poses":
        if not path.has_position:
            raise ValueError(f"camera path ({path.source or 'unnamed'}): rendering a 3D scene needs camera "
                             "positions (a path with x, y, z per frame)")
        return cls(path.rotations(device, dtype), path.positions(device, dtype),
                   torch.tensor(path.fov_x, device=device, dtype=dtype))

    @property
    def num_frames(self) -> int:
        return int(self.rotation.shape[0])

    def select(self, index) -> "_Poses":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return _Poses(self.rotation[index], self.position[index], self.fov_x[index])


def _hit(tri: Tensor, face: Tensor, origin: Tensor, rays: Tensor) -> GBuffer:
    """Exact ray/plane hits of every pixel's face.  tri (F,3,3) world corners; face (T,H,W);
    origin (T,3); rays (T,H,W,3)."""
    dtype = rays.dtype
    tri = tri.to(rays.device, dtype)
    valid = face >= 0
    f = face.clamp(min=0)
    a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]  # (T, H, W, 3)
    n = torch.linalg.cross(b - a, c - a)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    o = origin[:, None, None, :].to(dtype)
    denom = (n * rays).sum(-1)
    t = (n * (a - o)).sum(-1) / torch.where(denom == 0, torch.full_like(denom, 1e-30), denom)
    point = o + t[..., None] * rays
    n = torch.where((denom > 0)[..., None], -n, n)  # towards the viewer
    # barycentrics of the hit point in its face
    v0, v1, v2 = b - a, c - a, point - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    den = (d00 * d11 - d01 * d01).clamp_min(1e-30)
    bb = (d11 * d20 - d01 * d21) / den
    bc = (d00 * d21 - d01 * d20) / den
    bary = torch.stack([1 - bb - bc, bb, bc], -1)
    zero3 = torch.zeros_like(point)
    return GBuffer(
        face=face,
        point=torch.where(valid[..., None], point, zero3),
        depth=torch.where(valid, t, torch.full_like(t, float("inf"))),
        normal=torch.where(valid[..., None], n, zero3),
        bary=torch.where(valid[..., None], bary, zero3),
    )


def _face_buffer(tri: Tensor, cams: _Poses, hw: tuple[int, int], chunk: int) -> Tensor:
    tri = tri.to(cams.rotation.device, cams.rotation.dtype)
    faces = []
    for i in range(cams.num_frames):
        cam_tri = world_to_camera(tri.reshape(-1, 3), cams.rotation[i : i + 1], cams.position[i : i + 1])[0]
        cam_tri = cam_tri.reshape(-1, 3, 3)
        clipped, src = clip_near(cam_tri, NEAR_PLANE)
        screen = project_points(clipped.reshape(1, -1, 3), cams.fov_x[i : i + 1], hw)[0].reshape(-1, 3, 3)
        faces.append(rasterize(screen, hw, src, chunk=chunk)[0])
    return torch.stack(faces)


def render_gbuffer(mesh: Mesh, path: CameraPath, hw: tuple[int, int], *, device=None, chunk: int = DEFAULT_CHUNK,
                   callback: Callable[[int, int], None] | None = None) -> GBuffer:
    """Pinhole G-buffers of a path's T views at (H, W) (the path needs positions); depth is
    camera-space z; float64 on ``device``.  ``callback(done, total)`` after each view."""
    cams = _Poses.of(path, device)
    out = []
    tri = mesh.triangles().to(cams.rotation.device, cams.rotation.dtype)
    for i in range(cams.num_frames):
        cam = cams.select(i)
        face = _face_buffer(tri, cam, hw, chunk)
        out.append(_hit(tri, face, cam.position, camera_rays(cam.rotation, cam.fov_x, hw)))
        if callback is not None:
            callback(i + 1, cams.num_frames)
    return _stack(out)


def render_erp_gbuffer(mesh: Mesh, path: CameraPath, erp_hw: tuple[int, int], *, device=None,
                       chunk: int = DEFAULT_CHUNK, callback: Callable[[int, int], None] | None = None) -> GBuffer:
    """Equirect G-buffers (pack sphere convention, each camera's forward at the centre column) of a
    path's T camera positions and orientations; depth is the distance along the ray."""
    cams = _Poses.of(path, device)
    h, w = erp_hw
    size = max(8, -(-w // 4))  # cube face: about the panorama's angular resolution
    dev, dt = cams.rotation.device, cams.rotation.dtype
    yaw = torch.tensor([f[0] for f in _CUBE_FACES], dtype=dt, device=dev)
    pitch = torch.tensor([f[1] for f in _CUBE_FACES], dtype=dt, device=dev)
    face_rot = rotation_matrix(yaw, pitch, torch.zeros_like(yaw))  # (6, 3, 3) relative to the camera
    tri = mesh.triangles().to(dev, dt)
    out = []
    for i in range(cams.num_frames):
        cam = cams.select(i)
        rays = erp_rays(cam.rotation, erp_hw)  # (1, H, W, 3) world
        rots = cam.rotation[0] @ face_rot  # (6, 3, 3)
        cube = _Poses(rots, cam.position.expand(6, 3), torch.full((6,), math.pi / 2, dtype=dt, device=dev))
        faces = _face_buffer(tri, cube, (size, size), chunk)  # (6, S, S)
        local = torch.einsum("fji,hwj->fhwi", rots, rays[0])  # ray in each cube camera's frame
        best = local[..., 2].argmax(0)  # (H, W): the face the ray looks through most directly
        lc = torch.gather(local, 0, best[None, ..., None].expand(1, h, w, 3))[0]
        uvz = project_points(lc.reshape(1, -1, 3), torch.tensor([math.pi / 2], dtype=dt, device=dev), (size, size))
        col = uvz[0, :, 0].floor().clamp(0, size - 1).long()
        row = uvz[0, :, 1].floor().clamp(0, size - 1).long()
        # the nearest cube pixel may show a neighbouring face: try the 3x3 neighbourhood's faces and
        # keep the nearest exact hit that lies inside its triangle
        unit = rays / rays.norm(dim=-1, keepdim=True)
        best_g = None
        for dr in (0, -1, 1):
            for dc in (0, -1, 1):
                r = (row + dr).clamp(0, size - 1)
                c = (col + dc).clamp(0, size - 1)
                face = faces[best.reshape(-1), r, c].reshape(1, h, w)
                cand = _hit(tri, face, cam.position, unit)
                ok = cand.mask & (cand.bary >= -_BARY_EPS).all(-1) & (cand.depth > 0)
                cand = _where(ok, cand, None)
                best_g = cand if best_g is None else _where(cand.depth < best_g.depth, cand, best_g)
        g = best_g
        out.append(g)
        if callback is not None:
            callback(i + 1, cams.num_frames)
    return _stack(out)


def _where(cond: Tensor, a: GBuffer, b: GBuffer | None) -> GBuffer:
    """Per pixel ``a`` where ``cond`` else ``b`` (an empty pixel when ``b`` is None)."""
    if b is None:
        empty_face = torch.full_like(a.face, -1)
        b = GBuffer(empty_face, torch.zeros_like(a.point), torch.full_like(a.depth, float("inf")),
                    torch.zeros_like(a.normal), torch.zeros_like(a.bary))
    c3 = cond[..., None]
    return GBuffer(torch.where(cond, a.face, b.face), torch.where(c3, a.point, b.point),
                   torch.where(cond, a.depth, b.depth), torch.where(c3, a.normal, b.normal),
                   torch.where(c3, a.bary, b.bary))


def _stack(parts: list[GBuffer]) -> GBuffer:
    return GBuffer(*(torch.cat([getattr(p, k) for p in parts]) for k in ("face", "point", "depth", "normal", "bary")))


# ----------------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeSettings:
    """Line-art settings.

    crease_deg: faces meeting at more than this angle draw a crease line (Blender Line Art's crease
    default is 140° between faces, i.e. 40° between normals).  depth_ratio: a neighbour whose point
    lies farther than this fraction of the depth off the pixel's face plane is across a silhouette.  width_px: line width at 1080 px image width
    (scaled with the image).  blur_px: HED-like softening (Gaussian sigma) at 1080 px.
    """

    crease_deg: float = 40.0
    depth_ratio: float = 0.02
    width_px: float = 2.0
    blur_px: float = 1.6

    def __post_init__(self) -> None:
        if not 0.0 < self.crease_deg < 180.0:
            raise ValueError(f"EdgeSettings.crease_deg must lie in (0, 180), got {self.crease_deg}")
        if self.depth_ratio <= 0 or self.width_px <= 0 or self.blur_px < 0:
            raise ValueError("EdgeSettings: depth_ratio and width_px must be > 0, blur_px >= 0")


def line_art(g: GBuffer, settings: EdgeSettings = EdgeSettings()) -> Tensor:
    """Binary line art (T, H, W) float 0/1: silhouettes, scene borders and creases, one pixel wide
    on the nearer side of each edge."""
    face, depth, normal = g.face, g.depth, g.normal
    cos_crease = math.cos(math.radians(settings.crease_deg))
    lines = torch.zeros(face.shape, dtype=torch.float32, device=face.device)
    for dim in (1, 2):  # neighbours below and to the right
        n = face.shape[dim]
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[dim], b[dim] = slice(0, n - 1), slice(1, n)
        fa, fb = face[tuple(a)], face[tuple(b)]
        da, db = depth[tuple(a)], depth[tuple(b)]
        na, nb = normal[tuple(a)], normal[tuple(b)]
        pa, pb = g.point[tuple(a)], g.point[tuple(b)]
        both = (fa >= 0) & (fb >= 0)
        border = (fa >= 0) != (fb >= 0)
        # a silhouette: the neighbour's point lies far off this pixel's face plane (a steep but
        # continuous surface does not count, an occluding contour does)
        off = torch.maximum(((pb - pa) * na).sum(-1).abs(), ((pa - pb) * nb).sum(-1).abs())
        jump = both & (fa != fb) & (off > settings.depth_ratio * torch.minimum(da, db))
        crease = both & (fa != fb) & ((na * nb).sum(-1) < cos_crease)
        edge = border | jump | crease
        near_a = (da <= db)  # the nearer side (a foreground pixel at a border is always nearer)
        la = torch.zeros_like(lines)
        lb = torch.zeros_like(lines)
        la[tuple(a)] = (edge & near_a).float()
        lb[tuple(b)] = (edge & ~near_a).float()
        lines = torch.maximum(lines, torch.maximum(la, lb))
    return lines


def soft_edges(lines: Tensor, settings: EdgeSettings = EdgeSettings()) -> Tensor:
    """HED-like soft edges from binary line art: widened (kornia dilation) and blurred (kornia
    Gaussian), normalised so a line's centre is 1.  (T, H, W) -> (T, H, W) in [0, 1]."""
    import kornia

    scale = lines.shape[-1] / 1080.0
    x = lines[:, None].float()
    radius = max(0, round(settings.width_px * scale / 2 - 0.5))
    if radius > 0:
        kernel = torch.ones(2 * radius + 1, 2 * radius + 1, device=x.device)
        x = kornia.morphology.dilation(x, kernel)
    sigma = settings.blur_px * scale
    if sigma > 0:
        k = 2 * math.ceil(3 * sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
        # a straight line of the drawn width blurred the same way peaks here
        probe = torch.zeros(1, 1, k + 2 * radius + 2, k + 2 * radius + 2, device=x.device)
        c = probe.shape[-1] // 2
        probe[..., c - radius : c + radius + 1] = 1
        peak = kornia.filters.gaussian_blur2d(probe, (k, k), (sigma, sigma), border_type="reflect")[0, 0, c, c]
        x = (x / peak).clamp(0, 1)
    return x[:, 0]


def normal_image(g: GBuffer, path: CameraPath, lines: Tensor | None = None) -> Tensor:
    """Camera-space normals shaded as RGB (x right, y up, z towards the viewer; 0.5 + 0.5·n), black
    where empty, with optional white line art on top (the look of VideoFrom3D's ``normal/`` renders).
    Returns (T, H, W, 3) in [0, 1]."""
    rot = path.rotations(g.normal.device, g.normal.dtype)
    n_cam = torch.einsum("tji,thwj->thwi", rot, g.normal)
    rgb = 0.5 + 0.5 * torch.stack([n_cam[..., 0], n_cam[..., 1], -n_cam[..., 2]], -1)
    rgb = torch.where(g.mask[..., None], rgb, torch.zeros_like(rgb)).float()
    if lines is not None:
        rgb = torch.maximum(rgb, lines[..., None].float())
    return rgb.clamp(0, 1)


# ----------------------------------------------------------------------- correspondences


def reproject(g: GBuffer, ref: CameraPath, ref_g: GBuffer, *, rel_tol: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Where every pixel's surface point lies in a pinhole reference view, and whether it is seen there.

    g: G-buffer of T views.  ref: a path of T reference cameras (one per view; ``select`` repeats one).
    ref_g: the reference views' pinhole G-buffer (T, H_ref, W_ref), for occlusion.  Returns
    ``(xy (T, H, W, 2) pixel-edge coordinates in the reference view, valid (T, H, W))``; a point is
    valid when it has a surface, lies in front of the reference camera inside its image and is not
    hidden there: the reference pixel it falls in shows the same face, or nothing nearer than
    ``(1 + rel_tol)`` times the point's depth.
    """
    t, h, w = g.face.shape
    hr, wr = ref_g.face.shape[1:]
    cams = _Poses.of(ref, g.point.device, g.point.dtype)
    pts = g.point.reshape(t, -1, 3)
    uvz = project_points(world_to_camera(pts, cams.rotation, cams.position), cams.fov_x, (hr, wr)).reshape(t, h, w, 3)
    u, v, z = uvz[..., 0], uvz[..., 1], uvz[..., 2]
    inside = g.mask & (z > NEAR_PLANE) & (u >= 0) & (u < wr) & (v >= 0) & (v < hr)
    u, v = torch.where(inside, u, torch.zeros_like(u)), torch.where(inside, v, torch.zeros_like(v))
    pix = (v.floor().clamp(0, hr - 1).long() * wr + u.floor().clamp(0, wr - 1).long()).reshape(t, -1)
    seen = torch.gather(ref_g.depth.reshape(t, -1), 1, pix).reshape(t, h, w)
    seen_face = torch.gather(ref_g.face.reshape(t, -1), 1, pix).reshape(t, h, w)
    visible = inside & ((seen_face == g.face) | (z <= seen * (1 + rel_tol)))
    return uvz[..., :2], visible


def forward_flow(g: GBuffer, path: CameraPath, *, rel_tol: float = 1e-2) -> tuple[Tensor, Tensor]:
    """Forward optical flow of a pinhole sequence: for frame t (t < T−1), where each pixel's surface
    point moves in frame t+1.  Returns ``(flow (T−1, 2, H, W) in pixels, valid (T−1, H, W))``;
    valid where the point is seen in frame t+1."""
    h, w = g.face.shape[1:]
    nxt = path.select(range(1, path.num_frames))
    xy, valid = reproject(g.select(slice(0, -1)), nxt, g.select(slice(1, None)), rel_tol=rel_tol)
    xs = torch.arange(w, dtype=xy.dtype, device=xy.device) + 0.5
    ys = torch.arange(h, dtype=xy.dtype, device=xy.device)[:, None] + 0.5
    flow = torch.stack([xy[..., 0] - xs, xy[..., 1] - ys], 1)
    return torch.where(valid[:, None], flow, torch.zeros_like(flow)), valid
