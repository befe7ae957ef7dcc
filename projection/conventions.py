"""Converters between Pano360's sphere convention and other libraries'.

Pano360 (docs/conventions.md): centre column = forward, +yaw right, +pitch up, +roll
clockwise, horizontal FOV through the *outer edges* of the border pixels (pixel centres).

- **py360convert** ``e2p(e_img, fov_deg, u_deg, v_deg, out_hw, in_rot_deg)``: ``u_deg`` =
  yaw, ``v_deg`` = pitch (same signs, README "- Left / + Right", "- Down / + Up");
  ``in_rot_deg`` = roll (same sign; checked numerically in tests/projection/test_projection_reference.py); its
  FOVs span the *centres* of the border pixels (``linspace(-tan, tan, n)`` in
  ``utils.xyzpers``), so the same rays need ``tan(fov_py / 2) = (1 - 1/n) tan(fov / 2)`` on
  each axis (a ``(h_fov, v_fov)`` pair maps to ``fov`` and ``fov_y``); its equirect grid is
  pixel centres like the pack's.
- **Argus** (``src/pers2equi.py``): same yaw/pitch/roll
  signs, radians, FOV in degrees through the outer pixel edges (``grid_sample``,
  ``align_corners=False``); the equirect grid is corner-aligned (longitude ``linspace(-180,
  180, W)``, latitude ``linspace(90, -90, H)``) and the frame is read with ZERO padding:
  ``perspective_to_erp(..., **ARGUS_PLACEMENT)`` reproduces ``pers2equi_batch``; cached
  trajectories ``motion/<name>.txt`` are 3 x T rows ``[pitch, yaw, roll]`` in radians.
- **Look Beyond** (``Pano2Perspect/lib/Equirec2Perspec.py``): ``THETA`` = yaw, ``PHI`` =
  pitch (same signs, no roll); both FOVs span the border pixel *centres*
  (``linspace(-tan, tan, n)``) and the vertical FOV is LINEAR in the horizontal one
  (``hFOV = FOV * height / width``, so non-square views have non-square pixels); the equirect
  grid is corner-aligned (``lon / 180 * (W - 1) / 2 + (W - 1) / 2``); ``cv2.remap`` bicubic
  with ``BORDER_WRAP``.  :func:`view_from_lookbeyond` gives its rays on the pack's grids;
  ``erp_to_perspective(..., **LOOKBEYOND_SAMPLING)`` with the :func:`lookbeyond_camera`
  angles samples its exact coordinates.
"""

from __future__ import annotations

import math
from typing import Sequence

from .geometry import View, fov_centres_to_corners, fov_corners_to_centres

# Keyword arguments of perspective_to_erp reproducing Argus's pers2equi_batch exactly (its
# grid_sample's zero padding and its linspace longitudes; the view grid is pixel centres).
ARGUS_PLACEMENT = {"padding": "zeros", "grid": "centres", "erp_grid": "corners"}
# Keyword arguments of erp_to_perspective sampling Look Beyond's coordinates exactly.
LOOKBEYOND_SAMPLING = {"grid": "corners", "erp_grid": "corners"}

__all__ = [
    "ARGUS_PLACEMENT",
    "LOOKBEYOND_SAMPLING",
    "view_to_py360convert",
    "view_from_py360convert",
    "view_from_lookbeyond",
    "lookbeyond_camera",
    "view_to_argus",
    "views_from_argus_motion",
    "erp_x_to_argus_x",
    "argus_x_to_erp_x",
]


def view_to_py360convert(view: View) -> dict:
    """Keyword arguments for ``py360convert.e2p`` sampling exactly ``view``'s rays
    (``fov_deg`` as ``(h_fov, v_fov)``)."""
    if view.width < 2 or view.height < 2:
        raise ValueError(f"view: py360convert needs at least 2x2 pixels, got {view.width}x{view.height}")
    fov_v = math.degrees(view.fov_y_radians())
    return {
        "fov_deg": (fov_centres_to_corners(view.fov, view.width), fov_centres_to_corners(fov_v, view.height)),
        "u_deg": view.yaw,
        "v_deg": view.pitch,
        "in_rot_deg": view.roll,
        "out_hw": (view.height, view.width),
    }


def view_from_py360convert(fov_deg, u_deg: float, v_deg: float, out_hw: Sequence[int], in_rot_deg: float = 0.0) -> View:
    """The :class:`View` of a ``py360convert.e2p`` call: a single ``fov_deg`` is py360convert's
    for both axes; a ``(h_fov, v_fov)`` pair gives a view with ``fov_y`` unless it describes
    square pixels."""
    h, w = int(out_hw[0]), int(out_hw[1])
    if isinstance(fov_deg, (int, float)):
        h_fov = v_fov = float(fov_deg)
    else:
        h_fov, v_fov = float(fov_deg[0]), float(fov_deg[1])
    fov = fov_corners_to_centres(h_fov, w)
    fov_y = fov_corners_to_centres(v_fov, h)
    square = math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * h / w))
    return View(u_deg, v_deg, in_rot_deg, fov, w, h, None if math.isclose(fov_y, square, rel_tol=1e-12) else fov_y)


def lookbeyond_camera(fov_deg: float, theta_deg: float, phi_deg: float, height: int, width: int) -> dict:
    """Look Beyond's ``GetPerspective(FOV, THETA, PHI, height, width)`` as
    :func:`.perspective.erp_to_perspective` arguments on its own grids (with
    :data:`LOOKBEYOND_SAMPLING`): radians, ``fov_y`` linear in ``fov_x``."""
    return {"yaw": math.radians(theta_deg), "pitch": math.radians(phi_deg), "roll": 0.0,
            "fov_x": math.radians(fov_deg), "fov_y": math.radians(fov_deg * height / width),
            "out_hw": (int(height), int(width))}


def view_from_lookbeyond(fov_deg: float, theta_deg: float, phi_deg: float, height: int, width: int) -> View:
    """The :class:`View` (pack grids) with exactly the rays of Look Beyond's
    ``GetPerspective(FOV, THETA, PHI, height, width)``: both FOVs mapped from border pixel
    centres to outer pixel edges, the vertical one linear in the horizontal (``fov_y`` set only
    where that is not square pixels)."""
    h, w = int(height), int(width)
    fov = fov_corners_to_centres(fov_deg, w)
    fov_y = fov_corners_to_centres(fov_deg * h / w, h)
    square = math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * h / w))
    return View(theta_deg, phi_deg, 0.0, fov, w, h, None if math.isclose(fov_y, square, rel_tol=1e-12) else fov_y)


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
