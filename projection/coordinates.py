"""Sampling coordinates: where each output pixel of a conversion reads its source.

The tap builders of :mod:`.perspective` compute exactly these coordinates (chunk by chunk),
so the public functions here show what a conversion samples, for inspection and for
matching other projects' grids (docs/conventions.md "Grids").  Coordinates are continuous
pixel coordinates with pixel ``j`` at ``x = j`` (its centre); ``x = -0.5`` is the left edge
of a ``centres`` image.  Geometry is float64 (:data:`GEOMETRY_DTYPE`).

Conventions: :mod:`.geometry` (angles in radians, ``fov_x`` / ``fov_y`` through the outer
pixel edges on the ``centres`` grid, through the border pixel centres on the ``corners`` grid).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .geometry import (
    check_erp_hw,
    check_grid,
    directions_to_erp_xy,
    erp_directions,
    pinhole_rays,
    rotation_matrix,
)

# Geometry (rays, trig) is computed in float64 and only the final weights are cast: keeps
# bfloat16/float16 grids from quantising sample positions.
GEOMETRY_DTYPE = torch.float64

__all__ = ["GEOMETRY_DTYPE", "erp_to_perspective_coords", "perspective_to_erp_coords"]


def camera_rotation(yaw, pitch, roll, device=None) -> Tensor:
    """Camera-to-world ``(3, 3)`` float64 rotation of one camera (radians, floats or 0-d)."""
    return rotation_matrix(*[torch.as_tensor(a, dtype=GEOMETRY_DTYPE) for a in (yaw, pitch, roll)]).to(device)


def half_extents(fov_x: float, fov_y: float | None, view_hw: Sequence[int], grid: str) -> tuple[float, float]:
    """``(tan(fov_x / 2), tan(fov_y / 2))`` of a view's image plane at ``z = 1``; without
    ``fov_y`` the pixels are square (see :func:`.geometry.pinhole_rays`)."""
    h, w = view_hw
    tx = math.tan(float(fov_x) / 2)
    if fov_y is not None:
        return tx, math.tan(float(fov_y) / 2)
    if grid == "centres":
        return tx, tx * h / w
    return tx, (tx * (h - 1) / (w - 1) if w > 1 else tx)


def view_source_xy(rot: Tensor, fov_x, fov_y, out_hw: Sequence[int], erp_hw: Sequence[int], *, grid: str,
                   erp_grid: str, rows: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Equirect pixel coordinates ``(x, y)``, each ``(h', w)``, sampled by a view's pixels
    (rows ``rows`` only).  rot: camera-to-world ``(3, 3)``; fov_x, fov_y: radians."""
    rays = pinhole_rays(torch.as_tensor(fov_x, dtype=GEOMETRY_DTYPE), out_hw, rot.device, GEOMETRY_DTYPE,
                        fov_y=None if fov_y is None else torch.as_tensor(fov_y, dtype=GEOMETRY_DTYPE),
                        grid=grid, rows=rows)
    return directions_to_erp_xy(rays @ rot.transpose(-1, -2), erp_hw, erp_grid)


def plane_to_view_xy(u: Tensor, v: Tensor, view_hw: Sequence[int], grid: str) -> tuple[Tensor, Tensor]:
    """Normalised image-plane coordinates (``u`` right, ``v`` up, ``+-1`` at the ends of the
    FOV) -> the view's continuous pixel coordinates ``(x, y)``."""
    h, w = view_hw
    if grid == "centres":
        return (u + 1) * (w / 2) - 0.5, (1 - v) * (h / 2) - 0.5
    return (u + 1) * ((w - 1) / 2), (1 - v) * ((h - 1) / 2)


def camera_plane(d: Tensor, rot: Tensor, tx: float, ty: float) -> tuple[Tensor, Tensor, Tensor]:
    """World directions ``d (N, 3)`` -> normalised plane coordinates ``(u, v)`` of the camera
    and whether the direction is in front of it (``z > 0``)."""
    c = d @ rot  # world -> camera: R^T d, as row vectors
    z = c[:, 2]
    front = z > 1e-12
    zs = torch.where(front, z, torch.ones_like(z))
    return c[:, 0] / zs / tx, c[:, 1] / zs / ty, front


def erp_to_perspective_coords(yaw: float, pitch: float, roll: float, fov_x: float, out_hw: Sequence[int],
                              erp_hw: Sequence[int], *, fov_y: float | None = None, grid: str = "centres",
                              erp_grid: str = "centres") -> tuple[Tensor, Tensor]:
    """Where :func:`.perspective.erp_to_perspective` samples the equirect for one camera.

    Angles in radians (module convention); ``fov_y`` ``None`` = square pixels.  grid: the
    view's pixel grid, erp_grid: the equirect's (``centres`` | ``corners``).  Returns float64
    ``(x, y)``, each ``(h, w)``: equirect column and row coordinates (column ``j`` at ``x = j``;
    ``x`` wraps with period ``W``).
    """
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    erp_hw = check_erp_hw(erp_hw)
    return view_source_xy(camera_rotation(yaw, pitch, roll), fov_x, fov_y, out_hw, erp_hw, grid=grid,
                          erp_grid=erp_grid)


def perspective_to_erp_coords(yaw: float, pitch: float, roll: float, fov_x: float, view_hw: Sequence[int],
                              erp_hw: Sequence[int], *, fov_y: float | None = None, grid: str = "centres",
                              erp_grid: str = "centres") -> tuple[Tensor, Tensor, Tensor]:
    """Where :func:`.perspective.perspective_to_erp` samples a view for each equirect pixel.

    Returns float64 ``(x, y)`` (view column and row coordinates, NaN outside the footprint)
    and ``inside`` (bool), each ``(H, W)``.  A pixel is inside when its direction is in front
    of the camera and strictly within the FOV on both axes (``|u| < 1``, ``|v| < 1``).
    """
    check_grid(grid)
    check_grid(erp_grid, "erp_grid")
    erp_hw = check_erp_hw(erp_hw)
    rot = camera_rotation(yaw, pitch, roll)
    tx, ty = half_extents(fov_x, fov_y, view_hw, grid)
    d = erp_directions(erp_hw, None, GEOMETRY_DTYPE, grid=erp_grid).reshape(-1, 3)
    u, v, front = camera_plane(d, rot, tx, ty)
    inside = front & (u.abs() < 1) & (v.abs() < 1)
    x, y = plane_to_view_xy(u, v, view_hw, grid)
    nan = torch.full_like(x, float("nan"))
    return (torch.where(inside, x, nan).view(erp_hw), torch.where(inside, y, nan).view(erp_hw),
            inside.view(erp_hw))
