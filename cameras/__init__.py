"""Camera paths: one :class:`CameraPath` for every system, its trajectories, keyframes,
estimation from video, rendering over a panorama, and the pose file formats.

Host-free (never imports ComfyUI).  Convention: docs/conventions.md.
"""

from .estimate import estimate_rotation_path
from .formats import read_argus_motion, read_megasam_npz, read_realestate10k, write_realestate10k
from .keyframes import Keyframe, keyframe_path, parse_keyframes
from .path import DEFAULT_FOV_DEG, FOV_RANGE_DEG, CameraPath, path_from_arrays, path_from_opencv_c2w
from .render import render_path
from .trajectories import EASINGS, constant_path, interpolate, path_from_views, yaw_sweep

__all__ = [
    "CameraPath",
    "DEFAULT_FOV_DEG",
    "FOV_RANGE_DEG",
    "path_from_arrays",
    "path_from_opencv_c2w",
    "constant_path",
    "yaw_sweep",
    "path_from_views",
    "interpolate",
    "EASINGS",
    "Keyframe",
    "parse_keyframes",
    "keyframe_path",
    "estimate_rotation_path",
    "render_path",
    "read_realestate10k",
    "write_realestate10k",
    "read_megasam_npz",
    "read_argus_motion",
]
