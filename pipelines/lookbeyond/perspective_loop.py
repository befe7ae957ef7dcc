"""Look Beyond stage 2: a panorama as a loop of perspective frames with cameras.

Look Beyond (``Pano2Perspect/panorama2cube.py``) renders 12 frames at yaws
``linspace(180, -180, 12)``, FOV 90°, pitch 0, 1024×1024, named ``00000.png`` …
``00011.png`` (5 digits), and the video stage (``VideoDiffusion/videogen.py``) reads each
frame's camera from a RealEstate10K ``pose.txt`` (:mod:`...cameras.formats.realestate10k`,
the pack's one reader and writer of that format).

For a pure yaw ``θ`` (the Look Beyond loop) the OpenCV camera-to-world rotation is
``R_y(θ)`` with rows ``[[cos θ, 0, sin θ], [0, 1, 0], [−sin θ, 0, cos θ]]``, the pose Look
Beyond's ``Equirec2Perspec`` renders at ``THETA = θ``; ``+yaw`` turns right
in both conventions and ``+pitch`` looks up (towards −y in OpenCV).  All cameras sit at the
sphere centre (translation 0).

Host-free: no ComfyUI.  Folders appear only when complete (:func:`...media.atomic.atomic_folder`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Mapping, Sequence

from torch import Tensor

from ...cameras.formats.realestate10k import CameraRow, rows_from_path
from ...cameras.trajectories import interpolate, path_from_views
from ...media.atomic import NameChooser, atomic_folder
from ...media.images import save_png, to_uint8
from ...projection import View
from ...sampling.types import ProgressCallback, report

__all__ = ["POSE_HEADER", "FRAME_DIGITS", "loop_cameras", "frame_name", "write_frame_folders"]

# The first line of a RealEstate10K pose file is skipped by readers (a URL there).
POSE_HEADER = "pano360://lookbeyond_loop  (RealEstate10K pose format; this first line is skipped by readers)"
# Look Beyond names frames with 5 digits (panorama2cube.py: f"{idx:05d}.png").
FRAME_DIGITS = 5


def loop_cameras(views: Sequence[View], between: int = 0) -> tuple[list[int], list[CameraRow]]:
    """Frame ids of the rendered views and the ``pose.txt`` rows for a loop.

    between = 0: ids ``0 … V−1``, one row per frame (Look Beyond's layout).
    between = n: the frames get ids ``k · (n + 1)`` and the rows hold ``n`` interpolated
    cameras between consecutive frames, so the video stage, which picks its
    ``num_frames`` cameras among the rows between two keyframe ids, finds
    ``n + 2`` of them (n = 12 for SVD's 14 frames).  Views share one size.
    """
    if between < 0:
        raise ValueError(f"between must be >= 0, got {between}")
    ids = [k * (between + 1) for k in range(len(views))]
    path = interpolate(path_from_views(views, "lookbeyond loop"), between)
    return ids, rows_from_path(path, views[0].width, views[0].height)


def frame_name(frame_id: int) -> str:
    """``00000.png`` … (Look Beyond's 5-digit names; ids beyond 99999 get more digits)."""
    return f"{int(frame_id):0{FRAME_DIGITS}d}.png"


def write_frame_folders(folders: Sequence[str], frames: Sequence[Tensor], frame_ids: Sequence[int],
                        pose_text: str, callback: ProgressCallback | None = None,
                        next_free: NameChooser | None = None, text: Mapping[str, str] | None = None) -> list[str]:
    """Write each folder's frames (``(F, H, W, C)`` float 0..1, named by ``frame_ids``)
    and ``pose.txt``; each folder appears only when every folder's frames are written.
    Returns the folders written.

    Existing targets are never overwritten: ``FileExistsError``, or with ``next_free`` (e.g.
    ``media.atomic.next_counter_name``) a taken folder name moves on to the next free one.
    callback(done, total) after each frame written (it may raise to cancel, e.g. ComfyUI's
    interrupt).  text: PNG text chunks of every frame (ComfyUI's prompt/workflow JSON).
    """
    if len(folders) != len(frames):
        raise ValueError(f"frames: expected one stack per folder ({len(folders)}), got {len(frames)}")
    for stack in frames:
        if stack.shape[0] != len(frame_ids):
            raise ValueError(f"frames: expected {len(frame_ids)} frames per folder, got {stack.shape[0]}")
    total = len(folders) * len(frame_ids)
    written = 0
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    targets = [atomic_folder(folder, next_free=next_free) for folder in folders]
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(target) for target in targets]
        for tmp, frames_of_folder in zip(temps, frames):
            for fid, frame in zip(frame_ids, frames_of_folder):
                save_png(to_uint8(frame), os.path.join(tmp, frame_name(fid)), pnginfo=info)
                written += 1
                report(callback, written, total)
            with open(os.path.join(tmp, "pose.txt"), "w", encoding="utf-8", newline="\n") as fh:
                fh.write(pose_text)
    return [target.path for target in targets]
