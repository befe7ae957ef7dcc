"""Equirect <-> cube map (faces F R B L U D, py360convert's order and orientation).

Sphere convention: :mod:`pano360.projection.geometry`.  A face is the 90-degree pinhole view
of the ``cube6`` rig (F yaw 0, R yaw 90, B yaw 180, L yaw -90, U pitch 90, D pitch -90),
with pixel centres: U's bottom edge meets F's top edge, D's top edge meets F's bottom edge.

Layouts of ``T`` frames (``C`` channels, face width ``w``):

- ``stack``: ``(6*T, C, w, w)`` VIEW-MAJOR (``b = face*T + t``; one frame = 6 images F..D);
- ``horizon``: ``(T, C, w, 6w)``, faces left to right F R B L U D;
- ``dice``: ``(T, C, 3w, 4w)``, U above F, row ``L F R B``, D below F (py360convert's cross);
- ``list``: six ``(T, C, w, w)`` tensors; ``dict``: the same keyed ``"F" "R" "B" "L" "U" "D"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._sampling import (
    TAPS_PER_PIXEL,
    Progress,
    ProgressCallback,
    Taps,
    _1d_taps,
    _combine,
    bag,
    channels_last_like,
    check_mode,
    gather_rows_into,
    new_output,
    num_chunks,
    rows_per_chunk,
    table_from,
)
from .coordinates import GEOMETRY_DTYPE
from .geometry import CUBE_FACE_NAMES, CUBE_FACES, _check_size, check_erp_hw, erp_directions, rotation_matrix, rig_preset
from .perspective import cached_or_built, check_erp, erp_to_rig

LAYOUTS = ("stack", "horizon", "dice", "list", "dict")
# (column, row) of each face F R B L U D in the 4x3 dice cross (py360convert utils.cube_h2dice).
DICE_SLOTS = ((1, 1), (2, 1), (3, 1), (0, 1), (1, 0), (1, 2))

__all__ = ["erp_to_cubemap", "cubemap_to_erp", "cube_faces_from_layout", "cube_faces_to_layout", "LAYOUTS"]


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout: unknown cube-map layout {layout!r}; choose one of {list(LAYOUTS)}")
    return layout


def cube_faces_to_layout(faces: Tensor, layout: str):
    """``(6, T, C, w, w)`` faces -> the given layout (see module docstring)."""
    _check_layout(layout)
    _, t, c, w, _ = faces.shape
    if layout == "stack":
        return faces.reshape(6 * t, c, w, w)
    if layout == "horizon":
        return torch.cat(list(faces), dim=-1)
    if layout == "dice":
        out = new_output(faces, t, c, 3 * w, 4 * w, channels_last_like(faces[0])).zero_()
        for f, (sx, sy) in enumerate(DICE_SLOTS):
            out[..., sy * w : (sy + 1) * w, sx * w : (sx + 1) * w] = faces[f]
        return out
    if layout == "list":
        return list(faces)
    return dict(zip(CUBE_FACE_NAMES, faces))


def cube_faces_from_layout(cube, layout: str) -> Tensor:
    """A cube map in ``layout`` -> ``(6, T, C, w, w)``; raises on a malformed input."""
    _check_layout(layout)
    if layout in ("list", "dict"):
        if layout == "dict":
            if not isinstance(cube, dict) or set(cube) != set(CUBE_FACE_NAMES):
                got = sorted(cube) if isinstance(cube, dict) else type(cube).__name__
                raise ValueError(f"faces: expected a dict with keys {list(CUBE_FACE_NAMES)}, got {got}")
            cube = [cube[k] for k in CUBE_FACE_NAMES]
        if not isinstance(cube, (list, tuple)) or len(cube) != 6:
            got = len(cube) if isinstance(cube, (list, tuple)) else type(cube).__name__
            raise ValueError(f"faces: expected 6 faces (F R B L U D), got {got}")
        shapes = {tuple(f.shape) for f in cube}
        if len(shapes) != 1 or len(next(iter(shapes))) != 4 or cube[0].shape[-1] != cube[0].shape[-2]:
            raise ValueError(f"faces: expected 6 square (T, C, w, w) faces of one shape, got {sorted(shapes)}")
        return torch.stack(list(cube))
    if not isinstance(cube, Tensor) or cube.ndim != 4:
        got = f"shape {list(cube.shape)}" if isinstance(cube, Tensor) else type(cube).__name__
        raise ValueError(f"faces: expected a (B, C, H, W) tensor for layout {layout!r}, got {got}")
    b, c, h, w = cube.shape
    if layout == "stack":
        if b % 6 or h != w:
            raise ValueError(
                f"faces: layout 'stack' needs a batch of 6 square faces per frame (F R B L U D, "
                f"view-major), got batch {b} of {w}x{h}"
            )
        return cube.reshape(6, b // 6, c, h, w)
    if layout == "horizon":
        if w != 6 * h:
            raise ValueError(f"faces: layout 'horizon' needs width == 6 * height, got {w}x{h} (WxH)")
        return torch.stack(cube.split(h, dim=-1))
    if h % 3 or w * 3 != h * 4:
        raise ValueError(f"faces: layout 'dice' needs a 4:3 cross (width == 4/3 height), got {w}x{h} (WxH)")
    s = h // 3
    return torch.stack([cube[..., sy * s : (sy + 1) * s, sx * s : (sx + 1) * s] for sx, sy in DICE_SLOTS])


def erp_to_cubemap(erp: Tensor, face_w: int, layout: str = "stack", mode: str = "bilinear", *,
                   callback: ProgressCallback | None = None):
    """Equirect frames ``(T, C, H, 2H)`` -> cube map of ``face_w`` pixels in ``layout``
    (erp's memory layout).  callback: ``callback(done, total)`` after each chunk; may raise."""
    check_erp(erp)
    _check_layout(layout)
    face_w = _check_size(face_w, "face_w")
    t, c = erp.shape[:2]
    views = erp_to_rig(erp, rig_preset("cube6", size=face_w), mode=mode, callback=callback)  # (6T, C, w, w)
    return cube_faces_to_layout(views.reshape(6, t, c, face_w, face_w), layout)


# --------------------------------------------------------------------------- cube -> equirect


def _face_rotations() -> Tensor:
    yaw = torch.tensor([math.radians(y) for y, _ in CUBE_FACES], dtype=GEOMETRY_DTYPE)
    pitch = torch.tensor([math.radians(p) for _, p in CUBE_FACES], dtype=GEOMETRY_DTYPE)
    rot = rotation_matrix(yaw, pitch, torch.zeros_like(yaw))
    return rot.round()  # exact 0/+-1 entries for the axis-aligned faces


def _face_coords(d: Tensor, rot: Tensor, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Face index and continuous pixel coordinates ``(f, x, y)`` of directions ``d (N, 3)``."""
    cam = torch.einsum("fji,nj->nfi", rot, d)  # (N, 6, 3): R_f^T d per face
    f = cam[..., 2].argmax(-1)
    c = cam.gather(1, f[:, None, None].expand(-1, 1, 3)).squeeze(1)
    u, v = c[:, 0] / c[:, 2], c[:, 1] / c[:, 2]
    return f, (u + 1) * (w / 2) - 0.5, (1 - v) * (w / 2) - 0.5


def _cube_taps(erp_hw, w: int, mode: str, rows: tuple[int, int], device, dtype) -> Taps:
    """Taps of the equirect pixels of ``rows`` into the ``(6*w*w)`` face table.

    A tap outside its face (bilinear/bicubic near an edge) is re-projected through its
    pixel-centre direction onto the neighbouring face (nearest pixel there), so samples
    blend across cube edges instead of clamping.
    """
    rot = _face_rotations().to(device)
    d = erp_directions(erp_hw, device, GEOMETRY_DTYPE, rows=rows).reshape(-1, 3)
    f, x, y = _face_coords(d, rot, w)
    ix, wx = _1d_taps(x, mode)
    iy, wy = _1d_taps(y, mode)
    cols, rows_, weight = _combine(ix, wx, iy, wy)
    faces = f[:, None].expand_as(cols)
    outside = (cols < 0) | (cols >= w) | (rows_ < 0) | (rows_ >= w)
    if bool(outside.any()):
        fo, co, ro = faces[outside], cols[outside], rows_[outside]
        u = (co.to(GEOMETRY_DTYPE) + 0.5) * (2.0 / w) - 1
        v = 1 - (ro.to(GEOMETRY_DTYPE) + 0.5) * (2.0 / w)
        ray = torch.stack([u, v, torch.ones_like(u)], -1)
        dw = torch.einsum("nij,nj->ni", rot[fo], ray)
        f2, x2, y2 = _face_coords(dw, rot, w)
        faces = faces.clone()
        cols, rows_ = cols.clone(), rows_.clone()
        faces[outside] = f2
        cols[outside] = torch.floor(x2 + 0.5).long().clamp(0, w - 1)
        rows_[outside] = torch.floor(y2 + 0.5).long().clamp(0, w - 1)
    return Taps.make((faces * w + rows_) * w + cols, weight, dtype, 6 * w * w)


def cubemap_to_erp(faces, erp_h: int, layout: str = "stack", mode: str = "bilinear", *,
                   callback: ProgressCallback | None = None) -> Tensor:
    """Cube map (any ``layout``) -> equirect frames ``(T, C, erp_h, 2*erp_h)``, in the faces'
    memory layout.  callback: ``callback(done, total)`` after each chunk; may raise."""
    check_mode(mode)
    first = faces if isinstance(faces, Tensor) else None
    cube = cube_faces_from_layout(faces, layout)  # (6, T, C, w, w)
    if first is None:
        first = cube[0]
    erp_hw = check_erp_hw((erp_h, 2 * int(erp_h)), "erp_h")
    _, t, c, w, _ = cube.shape
    _check_size(w, "faces width")
    channels_last = channels_last_like(first)
    progress = Progress(callback, num_chunks(*erp_hw))
    key = ("c2e", tuple(erp_hw), w, mode, str(cube.device), cube.dtype)
    source = cached_or_built(key, erp_hw[0] * erp_hw[1], TAPS_PER_PIXEL[mode], 6 * w * w, erp_hw[1],
                             lambda r0, r1: _cube_taps(erp_hw, w, mode, (r0, r1), cube.device, cube.dtype),
                             cube.device, cube.dtype, cache=True)
    perm = cube.permute(0, 3, 4, 1, 2)  # (6, w, w, T, C)
    if torch.is_grad_enabled() and cube.requires_grad:
        table = perm.reshape(6 * w * w, t * c).contiguous()
        parts = []
        step = rows_per_chunk(erp_hw[1])
        for r0 in range(0, erp_hw[0], step):
            parts.append(bag(table, source.rows(r0, min(erp_hw[0], r0 + step))))
            progress.advance()
        out = torch.cat(parts).view(erp_hw[0], erp_hw[1], t, c).permute(2, 3, 0, 1)
        return out if channels_last else out.contiguous()
    out = new_output(cube, t, c, erp_hw[0], erp_hw[1], channels_last)
    gather_rows_into(table_from(perm, 6 * w * w, t * c), out, source.rows, progress, source.keep)
    source.finish()
    return out
