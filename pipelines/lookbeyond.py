"""Look Beyond stage 2 input: a panorama as a loop of perspective frames with cameras.

Look Beyond (``Pano2Perspect/panorama2cube.py``) renders 12 frames at yaws
``linspace(180, -180, 12)``, FOV 90°, pitch 0, 1024×1024, named ``00000.png`` …
``00011.png`` (5 digits), and the video stage (``VideoDiffusion/videogen.py``) reads each
frame's camera from a RealEstate10K ``pose.txt`` (``dataset/realestate10K.py:Camera``):

* the first line is skipped (a YouTube URL in RealEstate10K);
* each row is ``frame_id fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2``:
  intrinsics normalised by the image width (fx, cx) and height (fy, cy), then the
  world-to-camera matrix, 3×4 row-major;
* ``frame_id`` is matched as a string against ``str(int(basename(frame_path)))``, so
  the ids are plain integers (``0``, ``1``, …), not zero-padded.

Axes.  RealEstate10K cameras use OpenCV axes: x right, **y down**, z forward (the video
stage's ``ray_condition`` builds directions ``((u − cx)/fx, (v − cy)/fy, 1)``).  The pack
uses x right, **y up**, z forward (docs/conventions.md) with camera-to-world
``R = R_y(yaw) · R_x(−pitch) · R_z(−roll)`` (:func:`projection.rotation_matrix`).
Flipping y in both the camera and the world frame, ``F = diag(1, −1, 1)``, gives the
OpenCV camera-to-world ``R_cv = F · R · F``.  For a pure yaw ``θ`` (the Look Beyond loop)
``R_cv = R_y(θ)`` with rows ``[[cos θ, 0, sin θ], [0, 1, 0], [−sin θ, 0, cos θ]]``,
exactly the pose the spec derives (shared/specs/lookbeyond-videopanda-diffpano.md §1e),
and the signs agree: ``+yaw`` turns right in both (the camera's forward axis, the third
column, moves towards +x); ``+pitch`` looks up, i.e. towards −y in OpenCV.  The
translation is 0 (all cameras sit at the sphere centre); ``w2c = R_cvᵀ``.

Host-free: no ComfyUI.  File writing is atomic per folder (a hidden temporary folder
beside the target, renamed when complete).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..projection import View, rotation_matrix

__all__ = [
    "OPENCV_FROM_PACK",
    "POSE_HEADER",
    "CameraRow",
    "opencv_camera_to_world",
    "normalized_intrinsics",
    "camera_rows",
    "loop_cameras",
    "interpolate_views",
    "format_pose_txt",
    "parse_pose_txt",
    "frame_name",
    "next_free_folder",
    "write_frame_folders",
]

# Pack (x right, y up, z forward) -> OpenCV / RealEstate10K (x right, y down, z forward).
OPENCV_FROM_PACK = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
# The first line of a RealEstate10K pose file is skipped by readers (a URL there).
POSE_HEADER = "pano360://lookbeyond_loop  (RealEstate10K pose format; this first line is skipped by readers)"
# Look Beyond names frames with 5 digits (panorama2cube.py: f"{idx:05d}.png").
FRAME_DIGITS = 5


@dataclass(frozen=True)
class CameraRow:
    """One ``pose.txt`` row: ``frame_id``, normalised ``(fx, fy, cx, cy)``, ``w2c`` (3, 4)."""

    frame_id: int
    intrinsics: tuple[float, float, float, float]
    w2c: tuple[tuple[float, ...], ...]

    def w2c_tensor(self) -> Tensor:
        return torch.tensor(self.w2c, dtype=torch.float64)


def opencv_camera_to_world(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """Camera-to-world rotations ``(..., 3, 3)`` in OpenCV axes for pack angles (radians).

    ``F · R · F`` with ``R`` from :func:`projection.rotation_matrix` and
    ``F = diag(1, −1, 1)``; see the module docstring.  float64 in, float64 out
    recommended (pose files are written with 9 significant digits).
    """
    r = rotation_matrix(yaw, pitch, roll)
    f = OPENCV_FROM_PACK.to(device=r.device, dtype=r.dtype)
    return f @ r @ f


def normalized_intrinsics(fov_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """``(fx/W, fy/H, cx/W, cy/H)`` of a centred pinhole with square pixels and horizontal
    FOV ``fov_deg`` (the pack's convention): 0.5, 0.5, 0.5, 0.5 for a square 90° view."""
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    focal_px = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return focal_px / width, focal_px / height, 0.5, 0.5


def interpolate_views(views: Sequence[View], between: int) -> list[View]:
    """Insert ``between`` cameras between consecutive views, angles and FOV linear in
    degrees (the loop turns by −32.7° per frame, never across a wrap).  ``between = 0``
    returns the views unchanged; the originals keep their places ``k · (between + 1)``."""
    if between < 0:
        raise ValueError(f"between must be >= 0, got {between}")
    views = list(views)
    out = []
    for a, b in zip(views[:-1], views[1:]):
        for k in range(between + 1):
            t = k / (between + 1)
            out.append(View(a.yaw + t * (b.yaw - a.yaw), a.pitch + t * (b.pitch - a.pitch),
                            a.roll + t * (b.roll - a.roll), a.fov + t * (b.fov - a.fov), a.width, a.height))
    out.append(views[-1])
    return out


def camera_rows(views: Sequence[View], frame_ids: Sequence[int] | None = None) -> list[CameraRow]:
    """The RealEstate10K camera of each view: normalised intrinsics, w2c = R_cvᵀ, t = 0."""
    if frame_ids is None:
        frame_ids = range(len(views))
    if len(frame_ids) != len(views):
        raise ValueError(f"frame_ids: expected {len(views)} ids, got {len(frame_ids)}")
    yaw, pitch, roll = (torch.tensor([math.radians(getattr(v, k)) for v in views], dtype=torch.float64)
                        for k in ("yaw", "pitch", "roll"))
    w2c_rot = opencv_camera_to_world(yaw, pitch, roll).transpose(-1, -2)
    rows = []
    for fid, view, rot in zip(frame_ids, views, w2c_rot):
        w2c = torch.cat([rot, torch.zeros(3, 1, dtype=torch.float64)], dim=1)
        rows.append(CameraRow(int(fid), normalized_intrinsics(view.fov, view.width, view.height),
                              tuple(tuple(float(v) for v in r) for r in w2c.tolist())))
    return rows


def loop_cameras(views: Sequence[View], between: int = 0) -> tuple[list[int], list[CameraRow]]:
    """Frame ids of the rendered views and the ``pose.txt`` rows for a loop.

    between = 0: ids ``0 … V−1``, one row per frame (Look Beyond's layout).
    between = n: the frames get ids ``k · (n + 1)`` and the rows hold ``n`` interpolated
    cameras between consecutive frames, so the video stage, which picks its
    ``num_frames`` cameras among the rows between two keyframe ids, finds
    ``n + 2`` of them (n = 12 for SVD's 14 frames).
    """
    if between < 0:
        raise ValueError(f"between must be >= 0, got {between}")
    ids = [k * (between + 1) for k in range(len(views))]
    all_views = interpolate_views(views, between)
    return ids, camera_rows(all_views, range(len(all_views)))


def _num(v: float) -> str:
    text = f"{v + 0.0:.9g}"  # + 0.0 turns -0.0 into 0.0
    return "0" if text in ("-0", "0") else text


def format_pose_txt(rows: Sequence[CameraRow], header: str = POSE_HEADER) -> str:
    """The ``pose.txt`` text: ``header`` line, then one row per camera."""
    if "\n" in header:
        raise ValueError("header must be a single line")
    lines = [header]
    for row in rows:
        fields = [str(row.frame_id)] + [_num(v) for v in row.intrinsics] + ["0", "0"]
        fields += [_num(v) for r in row.w2c for v in r]
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


def parse_pose_txt(text: str) -> list[CameraRow]:
    """Read a RealEstate10K pose file as Look Beyond does: skip the first line, 19
    numbers per row (``frame_id fx fy cx cy _ _`` + 12 of w2c); blank lines ignored."""
    rows = []
    for n, line in enumerate(text.splitlines()[1:], start=2):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 19:
            raise ValueError(f"pose.txt line {n}: expected 19 numbers, got {len(tokens)}")
        values = [float(t) for t in tokens]
        w2c = tuple(tuple(values[7 + 4 * r: 11 + 4 * r]) for r in range(3))
        rows.append(CameraRow(int(values[0]), tuple(values[1:5]), w2c))
    return rows


def frame_name(frame_id: int) -> str:
    """``00000.png`` … (Look Beyond's 5-digit names; ids beyond 99999 get more digits)."""
    return f"{int(frame_id):0{FRAME_DIGITS}d}.png"


def next_free_folder(parent: str, prefix: str) -> str:
    """``<parent>/<prefix>_NNNNN`` with NNNNN one past the highest existing counter."""
    os.makedirs(parent, exist_ok=True)
    pattern = re.compile(re.escape(prefix) + r"_(\d{5,})$")
    counters = [int(m.group(1)) for name in os.listdir(parent) if (m := pattern.match(name))]
    return os.path.join(parent, f"{prefix}_{max(counters, default=0) + 1:05d}")


def _to_uint8(frame: Tensor) -> np.ndarray:
    """``(H, W, C)`` float 0..1 -> uint8 array (RGB, or grey for C = 1)."""
    arr = (frame.detach().to("cpu", torch.float32).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def write_frame_folders(folders: Sequence[str], frames: Sequence[Tensor], frame_ids: Sequence[int],
                        pose_text: str, callback: Callable[[int], None] | None = None) -> list[str]:
    """Write each folder's frames (``(F, H, W, C)`` float 0..1, named by ``frame_ids``)
    and ``pose.txt``, all or nothing.

    Everything is written into hidden temporary folders beside the targets first; only
    when every frame of every folder is written are they renamed into place.  On any
    failure the temporary folders are removed and nothing appears.  Existing targets are
    never overwritten (``FileExistsError``).  callback(k) after the k-th frame written
    (it may raise to cancel, e.g. ComfyUI's interrupt).
    """
    if len(folders) != len(frames):
        raise ValueError(f"frames: expected one stack per folder ({len(folders)}), got {len(frames)}")
    for folder in folders:
        if os.path.exists(folder):
            raise FileExistsError(f"output folder already exists: {folder}")
    temps: list[str] = []
    written = 0
    try:
        for folder, stack in zip(folders, frames):
            if stack.shape[0] != len(frame_ids):
                raise ValueError(f"frames: expected {len(frame_ids)} frames per folder, got {stack.shape[0]}")
            parent, name = os.path.split(os.path.abspath(folder))
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
            temps.append(tmp)
            for fid, frame in zip(frame_ids, stack):
                Image.fromarray(_to_uint8(frame)).save(os.path.join(tmp, frame_name(fid)))
                if callback is not None:
                    callback(written)
                written += 1
            with open(os.path.join(tmp, "pose.txt"), "w", encoding="utf-8", newline="\n") as fh:
                fh.write(pose_text)
        done = []
        for tmp, folder in zip(temps, folders):
            os.rename(tmp, folder)
            done.append(folder)
        return done
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
