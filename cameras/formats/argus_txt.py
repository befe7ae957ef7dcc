"""Argus's cached camera files (``dataset/video_dataset.py``).

``motion/<name>.txt``: a 3 × T array, rows pitch, yaw, roll in radians (Argus's angles have
the pack's signs).  ``fov/<name>.txt``: ``fovx fovy`` in degrees.  Host-free.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ..path import CameraPath, path_from_arrays

__all__ = ["read_argus_motion", "write_argus_motion"]


def _numbers(text: str, name: str) -> np.ndarray:
    """Whitespace-separated numbers, one row per line -> 2-D float64 array."""
    try:
        out = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{name}: cannot read numbers from {text[:80]!r}: {err}") from err
    if not np.isfinite(out).all():
        raise ValueError(f"{name}: numbers must be finite")
    return out


def read_argus_motion(motion: str, fov: str | None = None, fov_deg: float | None = None) -> CameraPath:
    """motion: the text of ``motion/<name>.txt``; fov: the text of ``fov/<name>.txt``, or give
    ``fov_deg``."""
    m = _numbers(motion, "motion")
    if m.shape[0] != 3:
        raise ValueError(f"motion: expected 3 rows (pitch, yaw, roll) × T frames, got shape {m.shape}")
    if fov is not None:
        f = _numbers(fov, "fov").reshape(-1)
        if f.size < 1:
            raise ValueError("fov: expected 'fovx fovy' in degrees, got nothing")
        fov_deg = float(f[0])
    if fov_deg is None:
        raise ValueError("fov: give the fov txt file or fov_deg")
    pitch, yaw, roll = m
    return path_from_arrays(yaw, pitch, roll, math.radians(fov_deg), "argus motion txt")


def write_argus_motion(path: CameraPath, aspect: float = 1.0) -> tuple[str, str]:
    """(motion text, fov text) of ``path``: rows pitch, yaw, roll (radians); ``fovx fovy``
    degrees of the first frame with ``fovy`` from the image aspect (height / width)."""
    motion = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in (path.pitch, path.yaw, path.roll)) + "\n"
    fx = path.fov_x[0]
    fy = 2.0 * math.atan(math.tan(fx / 2.0) * aspect)
    return motion, f"{math.degrees(fx):.6g} {math.degrees(fy):.6g}\n"
