"""A small z-buffer triangle rasteriser in torch (CPU or GPU).

Two steps:

- :func:`clip_near`: triangles in camera space (z forward) are clipped against the plane
  ``z = near`` (one or two triangles per crossing face, Sutherland–Hodgman for a single plane), so
  scenes that surround the camera (a ground plane under it) project correctly;
- :func:`rasterize`: screen-space triangles ``(u, v, z)`` are sampled at pixel centres
  ``(j + 0.5, i + 0.5)`` with a depth test.  Every face's candidate pixels (its bounding box) are
  enumerated in bounded chunks, barycentric edge functions decide coverage, depth is
  perspective-correct (``1/z`` is linear on screen), and the nearest face wins (ties: the lower
  face index).  Returns per-pixel face index and depth.

The G-buffer (exact hit point, barycentrics, normals) is then computed per pixel by intersecting
the pixel's ray with its face's plane (``render.py``), so coverage is the rasteriser's only job and
depth is exact to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_near", "rasterize", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 1 << 20  # candidate (face, pixel) pairs per chunk: ~1M, about 100 MB of temporaries
_COVER_EPS = 1e-7  # barycentric tolerance so shared edges leave no cracks


def clip_near(tri: Tensor, near: float) -> tuple[Tensor, Tensor]:
    """Clip camera-space triangles against ``z >= near``.

    tri: (F, 3, 3) corners (x, y, z).  Returns ``(clipped (F', 3, 3), source (F',))``: the pieces in
    front of the plane and the index of the face each came from.
    """
    if tri.numel() == 0:
        return tri, torch.zeros(0, dtype=torch.int64, device=tri.device)
    inside = tri[..., 2] >= near  # (F, 3)
    n_in = inside.sum(1)
    ids = torch.arange(tri.shape[0], device=tri.device)
    keep = n_in == 3
    out, src = [tri[keep]], [ids[keep]]

    def lerp(a: Tensor, b: Tensor) -> Tensor:  # the point on a->b at z == near
        t = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
        return a + t[:, None] * (b - a)

    def rolled(sel: Tensor, first: Tensor) -> Tensor:  # corners of tri[sel] starting at corner ``first``
        order = (first[:, None] + torch.arange(3, device=tri.device)) % 3
        return torch.gather(tri[sel], 1, order[..., None].expand(-1, 3, 3))

    one = n_in == 1  # the single inside corner first: a small triangle
    if bool(one.any()):
        t = rolled(one, inside[one].int().argmax(1))
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        out.append(torch.stack([a, lerp(a, b), lerp(a, c)], 1))
        src.append(ids[one])
    two = n_in == 2  # the single outside corner last: a quad, two triangles
    if bool(two.any()):
        t = rolled(two, ((~inside[two]).int().argmax(1) + 1) % 3)
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        bc, ac = lerp(b, c), lerp(a, c)
        out += [torch.stack([a, b, bc], 1), torch.stack([a, bc, ac], 1)]
        src += [ids[two], ids[two]]
    return torch.cat(out), torch.cat(src)


def _pixel_ranges(lo: Tensor, hi: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Integer pixel indices whose centres lie in [lo, hi], clipped to the image: (first, count)."""
    first = torch.ceil(lo - 0.5).clamp(0, size).long()
    last = torch.floor(hi - 0.5).clamp(-1, size - 1).long()
    return first, (last - first + 1).clamp(min=0)


def rasterize(screen: Tensor, hw: tuple[int, int], face_ids: Tensor | None = None, *,
              chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Depth-tested coverage of screen-space triangles.

    screen: (F, 3, 3) corners ``(u, v, z)``: pixel-edge coordinates and depth > 0.  hw: (H, W).
    face_ids: (F,) the id written for each triangle (default ``arange(F)``).  Returns
    ``(face (H, W) int64, -1 where empty; depth (H, W), +inf where empty)``, on screen's device.
    """
    h, w = hw
    device = screen.device
    # coverage only (exact hits are computed afterwards): float32 is ample (1e-4 px at 2048 px)
    dtype = torch.float32
    screen = screen.to(dtype)
    if face_ids is None:
        face_ids = torch.arange(screen.shape[0], device=device)
    zbuf = torch.full((h * w,), float("inf"), dtype=dtype, device=device)
    fbuf = torch.full((h * w,), -1, dtype=torch.int64, device=device)
    if screen.shape[0] == 0:
        return fbuf.view(h, w), zbuf.view(h, w)

    u, v, z = screen[..., 0], screen[..., 1], screen[..., 2]
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])
    x0, nx = _pixel_ranges(u.min(1).values, u.max(1).values, w)
    y0, ny = _pixel_ranges(v.min(1).values, v.max(1).values, h)
    count = nx * ny
    live = (count > 0) & (area.abs() > 0) & (z > 0).all(1)
    faces = live.nonzero().squeeze(1)
    if faces.numel() == 0:
        return fbuf.view(h, w), zbuf.view(h, w)

    # split the faces into chunks of at most ``chunk`` candidate pixels (a huge face gets its own)
    ends = torch.cumsum(count[faces], 0)
    start = 0
    while start < faces.numel():
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, base + chunk, right=True)))
        _raster_chunk(faces[start:stop], u, v, z, area, x0, nx, y0, count, face_ids, w, zbuf, fbuf)
        start = stop
    return fbuf.view(h, w), zbuf.view(h, w)


def _raster_chunk(faces, u, v, z, area, x0, nx, y0, count, face_ids, w, zbuf, fbuf) -> None:
    n = count[faces]
    f = torch.repeat_interleave(faces, n)
    offset = torch.arange(f.numel(), device=f.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    px = (x0[f] + offset % nx[f]).to(u.dtype) + 0.5
    py = (y0[f] + offset // nx[f]).to(u.dtype) + 0.5
    ua, ub, uc = u[f, 0], u[f, 1], u[f, 2]
    va, vb, vc = v[f, 0], v[f, 1], v[f, 2]
    inv_area = 1.0 / area[f]
    # barycentric weights from edge functions (signed areas), any winding
    wa = ((ub - px) * (vc - py) - (vb - py) * (uc - px)) * inv_area
    wb = ((uc - px) * (va - py) - (vc - py) * (ua - px)) * inv_area
    wc = 1.0 - wa - wb
    cover = (wa >= -_COVER_EPS) & (wb >= -_COVER_EPS) & (wc >= -_COVER_EPS)
    if not bool(cover.any()):
        return
    f, px, py = f[cover], px[cover], py[cover]
    depth = 1.0 / (wa[cover] / z[f, 0] + wb[cover] / z[f, 1] + wc[cover] / z[f, 2])
    pix = (py.long()) * w + px.long()
    old = zbuf.clone()
    zbuf.scatter_reduce_(0, pix, depth, "amin")
    win = (depth == zbuf[pix]) & (depth < old[pix])
    if bool(win.any()):
        cand = torch.full_like(fbuf, torch.iinfo(torch.int64).max)
        cand.scatter_reduce_(0, pix[win], face_ids[f[win]], "amin")
        improved = zbuf < old
        fbuf[improved] = cand[improved]
