"""Posed pinhole and equirect cameras for rendering a 3D scene (pack convention).

World and camera axes follow docs/conventions.md: x right, y up, z forward; a camera's
camera-to-world rotation is ``R = R_y(yaw) R_x(-pitch) R_z(-roll)`` (columns: right, up, forward,
:func:`pano360.projection.geometry.rotation_matrix`) and its centre is ``position`` in world units.
Pinhole images have square pixels, a horizontal ``fov_x`` and row 0 at the top.

Pixel coordinates here are *pixel-edge* coordinates: pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)`` (what VideoFrom3D's correspondence codes store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...projection.geometry import erp_directions, pinhole_rays, rotation_matrix

__all__ = ["PosedCameras", "project_points", "camera_rays", "erp_rays"]


@dataclass(frozen=True)
class PosedCameras:
    """T posed cameras.

    rotation: (T, 3, 3) camera-to-world.  position: (T, 3) camera centres.  fov_x: (T,) horizontal
    field of view, radians (ignored by equirect rendering).
    """

    rotation: Tensor
    position: Tensor
    fov_x: Tensor

    def __post_init__(self) -> None:
        t = self.rotation.shape[0]
        if self.rotation.shape != (t, 3, 3) or self.position.shape != (t, 3) or self.fov_x.shape != (t,):
            raise ValueError(
                f"PosedCameras: expected rotation (T,3,3), position (T,3), fov_x (T,), got "
                f"{tuple(self.rotation.shape)}, {tuple(self.position.shape)}, {tuple(self.fov_x.shape)}"
            )
        if not bool(((self.fov_x > 0) & (self.fov_x < math.pi)).all()):
            raise ValueError("PosedCameras: fov_x must lie in (0, pi) radians")

    @classmethod
    def from_angles(cls, yaw, pitch, roll, position, fov_x) -> "PosedCameras":
        """From per-frame angles (radians, pack convention), positions (T, 3) and fov_x (T,) or float."""
        rot = rotation_matrix(torch.as_tensor(yaw, dtype=torch.float64), torch.as_tensor(pitch, dtype=torch.float64),
                              torch.as_tensor(roll, dtype=torch.float64))
        position = torch.as_tensor(position, dtype=torch.float64)
        rot = rot.reshape(-1, 3, 3)
        fov = torch.as_tensor(fov_x, dtype=torch.float64).reshape(-1).expand(rot.shape[0]).clone()
        return cls(rot, position.reshape(-1, 3), fov)

    @property
    def num_frames(self) -> int:
        return int(self.rotation.shape[0])

    def select(self, index) -> "PosedCameras":
        """The cameras at ``index`` (an int, a slice or an index tensor), kept batched."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return PosedCameras(self.rotation[index], self.position[index], self.fov_x[index])

    def to(self, device=None, dtype=None) -> "PosedCameras":
        return PosedCameras(self.rotation.to(device, dtype), self.position.to(device, dtype), self.fov_x.to(device, dtype))

    def world_to_camera(self, points: Tensor) -> Tensor:
        """points: (..., N, 3) world, broadcast against the T cameras as (T, N, 3).  Returns (T, N, 3)
        camera coordinates ``R^T (p - c)``."""
        rel = points.to(self.rotation.dtype) - self.position[:, None, :]
        return rel @ self.rotation  # (p - c) R == (R^T (p - c))^T row-wise


def project_points(cam_xyz: Tensor, fov_x: Tensor, hw: tuple[int, int]) -> Tensor:
    """Pinhole projection of camera-space points.

    cam_xyz: (T, N, 3) with z > 0 forward.  fov_x: (T,) radians.  hw: (H, W).  Returns (T, N, 3)
    ``(u, v, z)``: pixel-edge coordinates and depth (z).
    """
    h, w = hw
    tx = torch.tan(fov_x / 2)[:, None]
    ty = tx * (h / w)
    z = cam_xyz[..., 2]
    u = (cam_xyz[..., 0] / (z * tx) + 1.0) * (w / 2)
    v = (1.0 - cam_xyz[..., 1] / (z * ty)) * (h / 2)
    return torch.stack([u, v, z], dim=-1)


def camera_rays(cams: PosedCameras, hw: tuple[int, int]) -> Tensor:
    """World-space ray directions through the pixel centres, scaled so that their camera-space
    z is 1 (so a hit at ray parameter ``t`` has depth ``t``).  Returns (T, H, W, 3)."""
    rays = pinhole_rays(cams.fov_x, hw, device=cams.rotation.device, dtype=cams.rotation.dtype)  # (T,H,W,3)
    return torch.einsum("tij,thwj->thwi", cams.rotation, rays)


def erp_rays(cams: PosedCameras, erp_hw: tuple[int, int]) -> Tensor:
    """World-space unit directions of equirect pixel centres for each camera's orientation
    (the camera's forward axis is the panorama's centre column).  Returns (T, H, W, 3)."""
    d = erp_directions(erp_hw, device=cams.rotation.device, dtype=cams.rotation.dtype)
    return torch.einsum("tij,hwj->thwi", cams.rotation, d)
