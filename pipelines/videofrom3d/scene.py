"""A small procedural coarse scene bundled with the pack (no asset file, generated from code, so it
ships under the pack's licence): a street with houses (boxes with gable or flat roofs and a door),
a ground plane, a low wall and a few cone trees, laid out deterministically from a seed.

It exists so the VideoFrom3D workflow runs without any user asset, and it has what the method
needs: large planar faces, crease edges, occlusions and depth range.  Units are metres; pack axes
(x right, y up, z forward).  :func:`street_camera_path` gives a matching dolly along the street.
"""

from __future__ import annotations

import math

import torch

from ...cameras import CameraPath, path_from_arrays
from .mesh import Mesh, box_mesh, merge_meshes, quad_mesh

__all__ = ["procedural_town", "cone_mesh", "gable_roof_mesh", "street_camera_path", "look_at_angles"]


def gable_roof_mesh(lo, hi, ridge_height: float) -> Mesh:
    """A gable roof over the box footprint ``lo..hi`` (its top at ``hi[1]``), ridge along z."""
    x0, y0, z0 = lo[0], hi[1], lo[2]
    x1, z1 = hi[0], hi[2]
    xm, ytop = (x0 + x1) / 2, y0 + ridge_height
    v = torch.tensor([[x0, y0, z0], [x1, y0, z0], [x1, y0, z1], [x0, y0, z1], [xm, ytop, z0], [xm, ytop, z1]],
                     dtype=torch.float64)
    f = torch.tensor([[0, 4, 5], [0, 5, 3], [1, 2, 5], [1, 5, 4], [0, 1, 4], [3, 5, 2]])
    return Mesh(v, f)


def cone_mesh(base_centre, radius: float, height: float, segments: int = 8) -> Mesh:
    """A cone (a coarse tree) standing on ``base_centre``."""
    cx, cy, cz = base_centre
    ring = [[cx + radius * math.cos(2 * math.pi * k / segments), cy, cz + radius * math.sin(2 * math.pi * k / segments)]
            for k in range(segments)]
    v = torch.tensor(ring + [[cx, cy + height, cz], [cx, cy, cz]], dtype=torch.float64)
    apex, base = segments, segments + 1
    f = [[k, (k + 1) % segments, apex] for k in range(segments)] + [[(k + 1) % segments, k, base] for k in range(segments)]
    return Mesh(v, torch.tensor(f))


def procedural_town(seed: int = 0, houses_per_side: int = 4) -> Mesh:
    """The bundled coarse scene: a street along +z with ``houses_per_side`` houses on each side."""
    g = torch.Generator().manual_seed(seed)

    def rand(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    parts = [quad_mesh([[-40, 0, -20], [40, 0, -20], [40, 0, 80], [-40, 0, 80]])]  # ground
    depth_step = 10.0
    for side in (-1, 1):
        for k in range(houses_per_side):
            w, d, h = rand(5, 8), rand(6, 8), rand(3, 7)
            xin = side * rand(5, 6.5)  # the facade towards the street
            x0, x1 = (xin, xin + side * w) if side > 0 else (xin + side * w, xin)
            z0 = 2 + k * depth_step + rand(-1, 1)
            lo, hi = (min(x0, x1), 0.0, z0), (max(x0, x1), h, z0 + d)
            parts.append(box_mesh(lo, hi))
            if float(torch.rand((), generator=g)) < 0.6:
                parts.append(gable_roof_mesh(lo, hi, rand(1.5, 3)))
            else:  # a flat roof with an overhanging slab
                parts.append(box_mesh((lo[0] - 0.4, h, lo[2] - 0.4), (hi[0] + 0.4, h + 0.35, hi[2] + 0.4)))
            door_x = xin - side * 0.02  # a door slab standing proud of the facade
            dz = z0 + d / 2
            parts.append(box_mesh((min(door_x, door_x - side * 0.15), 0, dz - 0.6),
                                  (max(door_x, door_x - side * 0.15), 2.1, dz + 0.6)))
            tx = side * rand(3.2, 4.2)
            parts.append(cone_mesh((tx, 0.0, z0 + d + 1.5), rand(0.8, 1.3), rand(2.5, 4.5)))
    parts.append(box_mesh((-3.6, 0, 44), (3.6, 1.2, 44.5)))  # a low wall closing the street
    return merge_meshes(*parts)


def look_at_angles(position, target) -> tuple[float, float]:
    """(yaw, pitch) in radians (pack convention) of a camera at ``position`` looking at ``target``:
    forward = (sin yaw cos pitch, sin pitch, cos yaw cos pitch)."""
    dx, dy, dz = (float(t) - float(p) for p, t in zip(position, target))
    return math.atan2(dx, dz), math.atan2(dy, math.hypot(dx, dz))


def street_camera_path(num_frames: int, fov_deg: float = 60.0, start=(0.0, 1.7, -6.0), end=(1.5, 2.2, 26.0),
                       look_ahead: float = 12.0, sway: float = 0.35) -> CameraPath:
    """A dolly along the bundled street with a gentle look to the sides (positions in metres)."""
    ts = torch.linspace(0, 1, num_frames, dtype=torch.float64)
    s, e = torch.tensor(start, dtype=torch.float64), torch.tensor(end, dtype=torch.float64)
    pos = s + ts[:, None] * (e - s)
    yaw, pitch = [], []
    for t, p in zip(ts.tolist(), pos.tolist()):
        target = (p[0] + sway * look_ahead * math.sin(2 * math.pi * t), 1.6, p[2] + look_ahead)
        y, pt = look_at_angles(p, target)
        yaw.append(y)
        pitch.append(pt)
    return path_from_arrays(yaw, pitch, [0.0] * num_frames, math.radians(fov_deg), "bundled street", pos.numpy())
