"""Shared test inputs for the projection tests: smooth analytic panoramas.

The test signal is a low-degree polynomial of the unit direction, so it is smooth on the
whole sphere (no seam, no pole singularity) and its exact value is known for any ray.
The geometry here is written independently of ``pano360.projection`` (straight from
docs/conventions.md, rotations by Rodrigues' formula), so tests compare the library with
the documented convention, never with itself.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def smooth_signal(d: torch.Tensor) -> torch.Tensor:
    """RGB value of unit directions ``d (..., 3)`` -> ``(..., 3)`` in about 0.1..0.9."""
    x, y, z = d.unbind(-1)
    return torch.stack([0.5 + 0.3 * x + 0.1 * y * z, 0.5 + 0.3 * y - 0.1 * x * x, 0.5 + 0.2 * z + 0.2 * x * y], -1)


def rodrigues(axis, angle: float) -> torch.Tensor:
    """Right-handed rotation by ``angle`` radians about the unit ``axis``."""
    k = torch.tensor(axis, dtype=F64)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=F64)
    return torch.eye(3, dtype=F64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def camera_to_world(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """Roll about forward (clockwise), then pitch up about right, then yaw right about up."""
    return rodrigues((0, 1, 0), yaw) @ rodrigues((1, 0, 0), -pitch) @ rodrigues((0, 0, 1), -roll)


def erp_dirs(h: int) -> torch.Tensor:
    """``(h, 2h, 3)`` unit directions of equirect pixel centres (docs/conventions.md)."""
    w = 2 * h
    lon = ((torch.arange(w, dtype=F64) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h, dtype=F64) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1)


def smooth_erp(h: int, frames: int = 1, dtype=torch.float32) -> torch.Tensor:
    """``(T, 3, h, 2h)`` smooth equirect; frame t is the signal turned by 0.35 t rad of yaw."""
    d = erp_dirs(h)
    return torch.stack([smooth_signal(d @ rodrigues((0, 1, 0), 0.35 * t)) for t in range(frames)]) \
        .permute(0, 3, 1, 2).to(dtype)


def view_dirs(yaw: float, pitch: float, roll: float, fov: float, hw) -> torch.Tensor:
    """``(h, w, 3)`` unit world rays through a pinhole view's pixel centres (radians)."""
    h, w = hw
    tx = math.tan(fov / 2)
    ty = tx * h / w
    xs = ((torch.arange(w, dtype=F64) + 0.5) / w * 2 - 1) * tx
    ys = (1 - (torch.arange(h, dtype=F64) + 0.5) / h * 2) * ty
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    cam = torch.stack([x, y, torch.ones_like(x)], -1)
    d = cam @ camera_to_world(yaw, pitch, roll).T
    return d / d.norm(dim=-1, keepdim=True)


def true_view(yaw: float, pitch: float, roll: float, fov: float, hw, frame: int = 0) -> torch.Tensor:
    """Exact ``(3, h, w)`` pinhole view of :func:`smooth_erp`'s frame (radians)."""
    d = view_dirs(yaw, pitch, roll, fov, hw)
    return smooth_signal(d @ rodrigues((0, 1, 0), 0.35 * frame)).permute(2, 0, 1).float()
