"""Camera trajectories: constant, yaw sweeps, loops through views, interpolation.

Every function returns a :class:`.path.CameraPath` (radians, pack convention; arguments
in degrees where users type them, as named).  Keyframed paths are in :mod:`.keyframes`.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import numpy as np

from ..projection import View
from .path import DEFAULT_FOV_DEG, CameraPath, path_from_arrays

__all__ = ["EASINGS", "Easing", "constant_path", "yaw_sweep", "path_from_views", "interpolate"]

Easing = Literal["linear", "ease_in_out", "ease_in", "ease_out"]

# Easing curves on [0, 1]: the cubic "smoothstep" and its halves (standard Hermite forms).
EASINGS: dict[str, Callable[[float], float]] = {
    "linear": lambda s: s,
    "ease_in_out": lambda s: s * s * (3.0 - 2.0 * s),
    "ease_in": lambda s: s * s * s,
    "ease_out": lambda s: 1.0 - (1.0 - s) ** 3,
}


def constant_path(num_frames: int, fov_deg: float = DEFAULT_FOV_DEG) -> CameraPath:
    """Every frame looking forward, upright, with one horizontal FOV (degrees)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    z = np.zeros(num_frames)
    return path_from_arrays(z, z, z, math.radians(fov_deg), f"constant fov {fov_deg:g}°")


def yaw_sweep(num_frames: int, start_yaw: float = 0.0, total_yaw: float = 360.0, pitch: float = 0.0,
              fov: float = DEFAULT_FOV_DEG, easing: Easing = "linear", loop: bool = True) -> CameraPath:
    """Turn from ``start_yaw`` by ``total_yaw`` degrees (positive = to the right) at ``pitch``
    degrees with horizontal FOV ``fov`` degrees.

    loop=True leaves out the end pose (frame ``num_frames`` would equal frame 0 for a full
    turn), so the video loops without a repeated frame; loop=False ends exactly on it.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {sorted(EASINGS)}, got {easing!r}")
    for name, value in (("start_yaw", start_yaw), ("total_yaw", total_yaw), ("pitch", pitch), ("fov", fov)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of degrees, got {value}")
    if not -90.0 <= pitch <= 90.0:
        raise ValueError(f"pitch must be in [-90, 90] degrees, got {pitch}")
    steps = num_frames if loop else max(num_frames - 1, 1)
    ease = EASINGS[easing]
    yaw = [math.radians(start_yaw + total_yaw * ease(i / steps)) for i in range(num_frames)]
    n = num_frames
    return path_from_arrays(yaw, [math.radians(pitch)] * n, [0.0] * n, math.radians(fov), "yaw sweep")


def path_from_views(views: Sequence[View], source: str = "views") -> CameraPath:
    """One frame per view (a rig's views in order, e.g. Look Beyond's loop)."""
    if not views:
        raise ValueError("views: expected at least one view, got none")
    rad = lambda k: [math.radians(getattr(v, k)) for v in views]  # noqa: E731
    return path_from_arrays(rad("yaw"), rad("pitch"), rad("roll"), rad("fov"), source)


def interpolate(path: CameraPath, between: int) -> CameraPath:
    """Insert ``between`` poses between consecutive frames, every value linear (angles as
    given, never across a wrap).  ``between = 0`` returns the path unchanged; the original
    frames keep their places ``k · (between + 1)``."""
    if between < 0:
        raise ValueError(f"between must be >= 0, got {between}")
    if between == 0 or path.num_frames == 1:
        return path
    n = path.num_frames
    t = np.arange((n - 1) * (between + 1) + 1, dtype=np.float64) / (between + 1)
    src = np.arange(n, dtype=np.float64)
    lin = lambda v: np.interp(t, src, np.asarray(v, dtype=np.float64))  # noqa: E731
    position = None
    if path.position is not None:
        pos = np.asarray(path.position, dtype=np.float64)
        position = np.stack([lin(pos[:, i]) for i in range(3)], -1)
    return path_from_arrays(lin(path.yaw), lin(path.pitch), lin(path.roll), lin(path.fov_x), path.source, position)
