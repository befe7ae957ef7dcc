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

from ._sampling import GRID_CACHE, Taps, _1d_taps, _combine, bag, check_mode, empty_like_huge, gather_table_into
from .geometry import CUBE_FACE_NAMES, CUBE_FACES, check_erp_hw, erp_directions, rotation_matrix, rig_preset
from .perspective import GEOMETRY_DTYPE, ROWS_PER_CHUNK, check_erp, erp_to_rig

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
        out = faces.new_zeros(t, c, 3 * w, 4 * w)
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


def erp_to_cubemap(erp: Tensor, face_w: int, layout: str = "stack", mode: str = "bilinear"):
    """Equirect frames ``(T, C, H, 2H)`` -> cube map of ``face_w`` pixels in ``layout``."""
    check_erp(erp)
    _check_layout(layout)
    if isinstance(face_w, bool) or int(face_w) != face_w or face_w < 1:
        raise ValueError(f"face_w: expected a positive integer, got {face_w!r}")
    t, c = erp.shape[:2]
    views = erp_to_rig(erp, rig_preset("cube6", size=int(face_w)), mode=mode)  # (6T, C, w, w)
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


def _cube_taps(erp_hw, w: int, mode: str, device, dtype) -> Taps:
    """Taps of every equirect pixel into the ``(6*w*w)`` face table.

    A tap outside its face (bilinear/bicubic near an edge) is re-projected through its
    pixel-centre direction onto the neighbouring face (nearest pixel there), so samples
    blend across cube edges instead of clamping.
    """
    rot = _face_rotations().to(device)
    d = erp_directions(erp_hw, device, GEOMETRY_DTYPE).reshape(-1, 3)
    f, x, y = _face_coords(d, rot, w)
    ix, wx = _1d_taps(x, mode)
    iy, wy = _1d_taps(y, mode)
    cols, rows, weight = _combine(ix, wx, iy, wy)
    faces = f[:, None].expand_as(cols)
    outside = (cols < 0) | (cols >= w) | (rows < 0) | (rows >= w)
    if bool(outside.any()):
        fo, co, ro = faces[outside], cols[outside], rows[outside]
        u = (co.to(GEOMETRY_DTYPE) + 0.5) * (2.0 / w) - 1
        v = 1 - (ro.to(GEOMETRY_DTYPE) + 0.5) * (2.0 / w)
        ray = torch.stack([u, v, torch.ones_like(u)], -1)
        dw = torch.einsum("nij,nj->ni", rot[fo], ray)
        f2, x2, y2 = _face_coords(dw, rot, w)
        faces = faces.clone()
        cols, rows = cols.clone(), rows.clone()
        faces[outside] = f2
        cols[outside] = torch.floor(x2 + 0.5).long().clamp(0, w - 1)
        rows[outside] = torch.floor(y2 + 0.5).long().clamp(0, w - 1)
    return Taps.make((faces * w + rows) * w + cols, weight, dtype)


def cubemap_to_erp(faces, erp_h: int, layout: str = "stack", mode: str = "bilinear") -> Tensor:
    """Cube map (any ``layout``) -> equirect frames ``(T, C, erp_h, 2*erp_h)``, channels-last memory."""
    check_mode(mode)
    cube = cube_faces_from_layout(faces, layout)  # (6, T, C, w, w)
    erp_hw = check_erp_hw((erp_h, 2 * int(erp_h)), "erp_h")
    _, t, c, w, _ = cube.shape
    key = ("c2e", tuple(erp_hw), w, mode, str(cube.device), cube.dtype)
    taps = GRID_CACHE.get(key, lambda: _cube_taps(erp_hw, w, mode, cube.device, cube.dtype))
    table = cube.permute(0, 3, 4, 1, 2).reshape(6 * w * w, t * c)
    if torch.is_grad_enabled() and cube.requires_grad:
        vals = bag(table, taps)
        return vals.view(erp_hw[0], erp_hw[1], t, c).permute(2, 3, 0, 1)
    out = empty_like_huge(cube, t, erp_hw[0], erp_hw[1], c)
    gather_table_into(table, t, c, taps, out, ROWS_PER_CHUNK)
    return out.permute(0, 3, 1, 2)
