"""Posed cameras in a 3D scene: world <-> camera coordinates, pinhole projection, per-pixel rays.

World and camera axes follow docs/conventions.md: x right, y up, z forward; a camera's
camera-to-world rotation is ``R = R_y(yaw) R_x(-pitch) R_z(-roll)`` (columns: right, up, forward;
:func:`.geometry.rotation_matrix`, ``CameraPath.rotations()``) and its centre is ``position`` in
world units.  Pinhole images have square pixels, a horizontal ``fov_x`` and row 0 at the top.

Pixel coordinates here are *pixel-edge* coordinates: pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)``.  Batched over T cameras; outputs follow the inputs'
device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .geometry import erp_directions, pinhole_rays

__all__ = ["world_to_camera", "project_points", "camera_rays", "erp_rays"]


def world_to_camera(points: Tensor, rotation: Tensor, position: Tensor) -> Tensor:
    """points: (N, 3) or (T, N, 3) world.  rotation: (T, 3, 3) camera-to-world.  position: (T, 3).
    Returns (T, N, 3) camera coordinates ``R^T (p - c)``."""
    rel = points.to(rotation.dtype) - position[:, None, :]
    return rel @ rotation  # row-wise (p - c) R == (R^T (p - c))^T


def project_points(cam_xyz: Tensor, fov_x: Tensor, hw: Sequence[int]) -> Tensor:
    """Pinhole projection of camera-space points.

    cam_xyz: (T, N, 3) with z > 0 forward.  fov_x: (T,) radians.  hw: (H, W).  Returns (T, N, 3)
    ``(u, v, z)``: pixel-edge coordinates (u right, v down) and depth z.
    """
    h, w = int(hw[0]), int(hw[1])
    tx = torch.tan(fov_x / 2)[:, None]
    ty = tx * (h / w)
    z = cam_xyz[..., 2]
    u = (cam_xyz[..., 0] / (z * tx) + 1.0) * (w / 2)
    v = (1.0 - cam_xyz[..., 1] / (z * ty)) * (h / 2)
    return torch.stack([u, v, z], dim=-1)


def camera_rays(rotation: Tensor, fov_x: Tensor, hw: Sequence[int]) -> Tensor:
    """World-space rays through the pixel centres of T pinhole cameras, scaled so that their
    camera-space z is 1 (a hit at ray parameter ``t`` has depth ``t``).  Returns (T, H, W, 3)."""
    rays = pinhole_rays(fov_x, hw, device=rotation.device, dtype=rotation.dtype)
    return torch.einsum("tij,thwj->thwi", rotation, rays)


def erp_rays(rotation: Tensor, erp_hw: Sequence[int]) -> Tensor:
    """World-space unit directions of equirect pixel centres for T camera orientations (each
    camera's forward axis at the panorama's centre column).  Returns (T, H, W, 3)."""
    d = erp_directions(erp_hw, device=rotation.device, dtype=rotation.dtype)
    return torch.einsum("tij,hwj->thwi", rotation, d)
