"""MegaSaM's camera output (``<name>.npz``), the camera source Argus uses.

Arrays: ``cam_c2w`` (T, 4, 4) camera-to-world, OpenCV axes; ``intrinsic`` (3, 3).
``fov_x = 2·atan2(cx, f)`` as in Argus's ``inference.py`` (the principal point stands in for
half the image width).  Host-free.
"""

from __future__ import annotations

import math

import numpy as np

from ..path import CameraPath, PoseConversion, path_from_opencv_c2w

__all__ = ["read_megasam_npz"]


def read_megasam_npz(path_or_file, mode: PoseConversion = "exact", relative: bool = True) -> CameraPath:
    """The camera path of a MegaSaM ``.npz`` (a path or a binary file object); never unpickles."""
    try:
        data = np.load(path_or_file, allow_pickle=False)
    except (ValueError, EOFError) as err:  # text, truncated, or an object array (never unpickled)
        raise ValueError(f"megasam npz: not an .npz archive of arrays ({err.__class__.__name__})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"megasam npz: not an .npz archive (a single {type(data).__name__} array)")
    with data:
        missing = [k for k in ("cam_c2w", "intrinsic") if k not in data.files]
        if missing:
            raise ValueError(f"megasam npz: missing arrays {missing}; has {data.files}")
        c2w, K = data["cam_c2w"], data["intrinsic"]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"megasam npz: expected cam_c2w (T,4,4) and intrinsic (3,3), got {c2w.shape}, {K.shape}")
    fov = 2.0 * math.atan2(float(K[0, 2]), float(K[0, 0]))
    return path_from_opencv_c2w(c2w, fov, mode, source="megasam npz", relative=relative)
