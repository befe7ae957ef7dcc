"""RealEstate10K camera files: the pose format of Look Beyond's video stage.

Layout (RealEstate10K; Look Beyond ``VideoDiffusion/dataset/realestate10K.py:Camera``):

* the first line is skipped by readers (a YouTube URL in RealEstate10K; the Perspective Loop
  node writes a one-line description there);
* each further line is ``frame_id fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2``:
  intrinsics normalised by the image width (fx, cx) and height (fy, cy), then the
  world-to-camera matrix, 3×4 row-major, OpenCV axes (x right, **y down**, z forward);
* ``frame_id`` is matched as a string against ``str(int(basename(frame_path)))`` by Look
  Beyond, so ids are plain integers (RealEstate10K stores timestamps there).

The pack's axes have y up (docs/conventions.md); flipping y in both the camera and the world
frame (:func:`..projection.geometry.flip_camera_y`) converts rotations, and positions flip
their y.  ``fov_x = 2·atan(0.5 / fx)`` (normalised fx, square pixels assumed for writing).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..path import CameraPath, PoseConversion, path_from_opencv_c2w

__all__ = ["POSE_FIELDS", "CameraRow", "parse_rows", "format_rows", "rows_from_path", "read_realestate10k",
           "write_realestate10k"]

POSE_FIELDS = 19  # frame id, 4 intrinsics, 2 distortion zeros, 12 of the 3x4 matrix
DEFAULT_HEADER = "pano360 camera path (RealEstate10K pose format; this first line is skipped by readers)"


@dataclass(frozen=True)
class CameraRow:
    """One line: ``frame_id``, normalised ``(fx, fy, cx, cy)``, ``w2c`` (3, 4) OpenCV axes."""

    frame_id: int
    intrinsics: tuple[float, float, float, float]
    w2c: tuple[tuple[float, ...], ...]

    def w2c_tensor(self) -> torch.Tensor:
        return torch.tensor(self.w2c, dtype=torch.float64)


def parse_rows(text: str) -> list[CameraRow]:
    """The rows of a RealEstate10K file: the first line is skipped (as Look Beyond's reader
    does), blank lines are ignored, every other line must hold 19 finite numbers."""
    rows = []
    for n, line in enumerate(text.splitlines()[1:], start=2):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != POSE_FIELDS:
            raise ValueError(f"realestate10k: line {n} has {len(tokens)} fields, expected {POSE_FIELDS}")
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise ValueError(f"realestate10k: line {n} holds something that is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"realestate10k: line {n} holds a number that is not finite")
        if values[0] != int(values[0]):
            raise ValueError(f"realestate10k: line {n}: the frame id must be an integer, got {tokens[0]}")
        w2c = tuple(tuple(values[7 + 4 * r: 11 + 4 * r]) for r in range(3))
        rows.append(CameraRow(int(values[0]), tuple(values[1:5]), w2c))
    if not rows:
        raise ValueError("realestate10k: no camera lines (the first line is a header and is skipped)")
    return rows


def _num(v: float) -> str:
    text = f"{v + 0.0:.9g}"  # + 0.0 turns -0.0 into 0.0
    return "0" if text in ("-0", "0") else text


def format_rows(rows: Sequence[CameraRow], header: str = DEFAULT_HEADER) -> str:
    """The file text: ``header`` line, then one line per camera (9 significant digits)."""
    if "\n" in header:
        raise ValueError("header must be a single line")
    lines = [header]
    for row in rows:
        fields = [str(row.frame_id)] + [_num(v) for v in row.intrinsics] + ["0", "0"]
        fields += [_num(v) for r in row.w2c for v in r]
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


def rows_from_path(path: CameraPath, width: int, height: int, frame_ids: Sequence[int] | None = None) -> list[CameraRow]:
    """The RealEstate10K camera of each frame: normalised intrinsics of a centred pinhole with
    square pixels and the path's horizontal FOV, ``w2c = [R_cvᵀ | −R_cvᵀ p_cv]``."""
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    ids = list(range(path.num_frames)) if frame_ids is None else [int(i) for i in frame_ids]
    if len(ids) != path.num_frames:
        raise ValueError(f"frame_ids: expected {path.num_frames} ids, got {len(ids)}")
    c2w = path.camera_to_world(dtype=torch.float64, opencv=True)
    rot_t = c2w[:, :3, :3].transpose(-1, -2)
    w2c = torch.cat([rot_t, -(rot_t @ c2w[:, :3, 3:])], dim=2)
    rows = []
    for fid, fov, m in zip(ids, path.fov_x, w2c):
        focal = 0.5 * width / math.tan(fov / 2.0)
        intr = (focal / width, focal / height, 0.5, 0.5)
        rows.append(CameraRow(fid, intr, tuple(tuple(float(v) for v in r) for r in m.tolist())))
    return rows


def write_realestate10k(path: CameraPath, width: int, height: int, frame_ids: Sequence[int] | None = None,
                        header: str = DEFAULT_HEADER) -> str:
    """The file text for ``path`` rendered at ``width`` × ``height`` pixels."""
    return format_rows(rows_from_path(path, width, height, frame_ids), header)


def read_realestate10k(text: str, mode: PoseConversion = "exact", relative: bool = True) -> CameraPath:
    """A RealEstate10K file as a :class:`CameraPath` (rotations, positions, ``fov_x``).

    relative: poses relative to the first camera (it looks forward from the origin; Argus's
    convention); False keeps the file's world frame (y flipped to point up).  mode: see
    :func:`..path.angles_from_opencv_c2w`.
    """
    rows = parse_rows(text)
    w2c = np.stack([np.asarray(r.w2c, dtype=np.float64) for r in rows])
    rot = w2c[:, :, :3]
    c2w = np.zeros((len(rows), 4, 4))
    c2w[:, :3, :3] = np.swapaxes(rot, -1, -2)
    c2w[:, :3, 3] = -(np.swapaxes(rot, -1, -2) @ w2c[:, :, 3:])[..., 0]
    c2w[:, 3, 3] = 1.0
    fx = np.array([r.intrinsics[0] for r in rows])
    if (fx <= 0).any():
        raise ValueError("realestate10k: fx must be positive")
    fov = 2.0 * np.arctan(0.5 / fx)
    return path_from_opencv_c2w(c2w, fov, mode, source="realestate10k", relative=relative)
