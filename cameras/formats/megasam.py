"""MegaSaM's camera output (``<name>.npz``), the camera source Argus uses.

Arrays: ``cam_c2w`` (T, 4, 4) camera-to-world, OpenCV axes; ``intrinsic`` (3, 3).
``fov_x = 2·atan2(cx, f)`` as in Argus's ``inference.py`` (the principal point stands in for
half the image width).  Host-free.
"""

from __future__ import annotations

import math

import numpy as np

from ..path import CameraPath, PoseConversion, path_from_opencv_c2w

__all__ = ["read_megasam_npz", "MAX_POSES"]

# The most poses a file may hold: a 55-minute video at 30 fps, far beyond MegaSaM's clips and
# Argus's videos.  Checked from the array header before anything is decompressed: a 2 MB
# compressed file of 5M poses would otherwise take 640 MB as float64 and gigabytes more as the
# path built from it (issue 18); at the bound, reading and fitting peaks at about 30 MB
# (benchmarks/sweep_memory.py, docs/cameras.md).
MAX_POSES = 100_000


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
        shape = _stored_shape(data, "cam_c2w")
        if shape and shape[0] > MAX_POSES:
            raise ValueError(f"megasam npz: cam_c2w holds {shape[0]} poses; at most {MAX_POSES} are read")
        c2w, K = data["cam_c2w"], data["intrinsic"]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"megasam npz: expected cam_c2w (T,4,4) and intrinsic (3,3), got {c2w.shape}, {K.shape}")
    if not (np.isfinite(c2w).all() and np.isfinite(K).all()):
        raise ValueError("megasam npz: cam_c2w and intrinsic must hold finite numbers (found NaN or infinity)")
    fov = 2.0 * math.atan2(float(K[0, 2]), float(K[0, 0]))
    return path_from_opencv_c2w(c2w, fov, mode, source="megasam npz", relative=relative)


def _stored_shape(data: np.lib.npyio.NpzFile, name: str) -> tuple[int, ...] | None:
    """The shape in a member's ``.npy`` header, read without decompressing the array."""
    try:
        with data.zip.open(f"{name}.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}[version]
            shape, _order, _dtype = read_header(f)
    except (KeyError, ValueError, OSError, AttributeError):
        return None   # unusual archive: the array itself is checked after loading
    return tuple(shape)
