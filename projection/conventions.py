"""Converters between Pano360's sphere convention and other libraries'.

Pano360 (docs/conventions.md): centre column = forward, +yaw right, +pitch up, +roll
clockwise, horizontal FOV through the *outer edges* of the border pixels (pixel centres).

- **py360convert** ``e2p(e_img, fov_deg, u_deg, v_deg, out_hw, in_rot_deg)``: ``u_deg`` =
  yaw, ``v_deg`` = pitch (same signs, README "- Left / + Right", "- Down / + Up");
  ``in_rot_deg`` = roll (same sign; checked numerically in tests/projection/test_projection_reference.py); its
  FOV spans the *centres* of the border pixels (``linspace(-tan, tan, w)`` in
  ``utils.xyzpers``), so the same rays need ``tan(fov_py / 2) = (1 - 1/w) tan(fov / 2)``.
- **Argus** (``src/pers2equi.py``): same yaw/pitch/roll
  signs, radians, FOV in degrees; equirect longitude runs from -180 deg at column 0 to
  +180 deg at the last column (endpoints included, not pixel centres); cached trajectories
  ``motion/<name>.txt`` are 3 x T rows ``[pitch, yaw, roll]`` in radians.
"""

from __future__ import annotations

import math
from typing import Sequence

from .geometry import View

__all__ = [
    "view_to_py360convert",
    "view_from_py360convert",
    "view_to_argus",
    "views_from_argus_motion",
    "erp_x_to_argus_x",
    "argus_x_to_erp_x",
]


def _fov_pixel_edges_to_centres(fov_deg: float, n: int) -> float:
    return math.degrees(2 * math.atan((1 - 1 / n) * math.tan(math.radians(fov_deg) / 2)))


def _fov_pixel_centres_to_edges(fov_deg: float, n: int) -> float:
    return math.degrees(2 * math.atan(math.tan(math.radians(fov_deg) / 2) / (1 - 1 / n)))


def view_to_py360convert(view: View) -> dict:
    """Keyword arguments for ``py360convert.e2p`` sampling exactly ``view``'s rays
    (``fov_deg`` as ``(h_fov, v_fov)``)."""
    if view.width < 2 or view.height < 2:
        raise ValueError(f"view: py360convert needs at least 2x2 pixels, got {view.width}x{view.height}")
    fov_v = math.degrees(2 * math.atan(math.tan(math.radians(view.fov) / 2) * view.height / view.width))
    return {
        "fov_deg": (_fov_pixel_edges_to_centres(view.fov, view.width), _fov_pixel_edges_to_centres(fov_v, view.height)),
        "u_deg": view.yaw,
        "v_deg": view.pitch,
        "in_rot_deg": view.roll,
        "out_hw": (view.height, view.width),
    }


def view_from_py360convert(fov_deg, u_deg: float, v_deg: float, out_hw: Sequence[int], in_rot_deg: float = 0.0) -> View:
    """The :class:`View` of a ``py360convert.e2p`` call (horizontal FOV; a ``(h, v)`` pair
    must describe square pixels)."""
    h, w = int(out_hw[0]), int(out_hw[1])
    h_fov = fov_deg if isinstance(fov_deg, (int, float)) else fov_deg[0]
    return View(u_deg, v_deg, in_rot_deg, _fov_pixel_centres_to_edges(float(h_fov), w), w, h)


def view_to_argus(view: View) -> dict:
    """Argus ``pers2equi`` parameters: yaw/pitch/roll in radians, ``fov_x`` in degrees."""
    return {
        "yaw": math.radians(view.yaw),
        "pitch": math.radians(view.pitch),
        "roll": math.radians(view.roll),
        "fov_x": view.fov,
        "width": view.width,
        "height": view.height,
    }


def views_from_argus_motion(motion: Sequence[Sequence[float]], fov_x_deg: float, width: int, height: int) -> list[View]:
    """Argus ``motion/<name>.txt`` (3 x T rows ``[pitch, yaw, roll]``, radians) -> views."""
    if len(motion) != 3:
        raise ValueError(f"motion: expected 3 rows [pitch, yaw, roll], got {len(motion)} rows")
    pitch, yaw, roll = motion
    if not (len(pitch) == len(yaw) == len(roll)):
        raise ValueError(f"motion: rows have different lengths {[len(pitch), len(yaw), len(roll)]}")
    return [View(math.degrees(y), math.degrees(p), math.degrees(r), fov_x_deg, width, height)
            for p, y, r in zip(pitch, yaw, roll)]


def erp_x_to_argus_x(x: float, width: int) -> float:
    """Pano360 equirect column coordinate (pixel centres) -> Argus's (endpoint grid)."""
    lon = ((x + 0.5) / width - 0.5) * 2 * math.pi
    return (lon + math.pi) / (2 * math.pi) * (width - 1)


def argus_x_to_erp_x(x: float, width: int) -> float:
    """Argus equirect column coordinate -> Pano360's (pixel centres)."""
    lon = x / (width - 1) * 2 * math.pi - math.pi
    return (lon / (2 * math.pi) + 0.5) * width - 0.5
