"""Pano360 nodes: the camera path every system shares.

The path itself and its file formats live in ``cameras/``; this node reads a source and
outputs a ``PANO360_CAMERA_PATH`` (a :class:`..cameras.CameraPath`).  See docs/cameras.md.
"""

from __future__ import annotations

import math
import os

from ..cameras import constant_path, estimate_rotation_path, keyframe_path, parse_keyframes
from ..cameras.formats import read_argus_motion, read_megasam_npz, read_realestate10k
from . import _host
from ._common import ANGLE_CONVENTION, NodeInputError, check_widgets, image_to_bchw
from ._host import io, progress_callback

CATEGORY = "Pano360/cameras"
CAMERA_PATH = io.Custom("PANO360_CAMERA_PATH")

PATH_SOURCES = ("manual_fov", "keyframes", "argus_motion_txt", "megasam_npz", "realestate10k_txt", "estimate_from_video")


def _input_file(node: str, name: str, value: str) -> str:
    """A file inside ComfyUI's input folder (a path relative to it); NodeInputError otherwise."""
    expected = "an existing file inside ComfyUI's input folder (a path relative to it, or 'path [output]')"
    try:
        path = _host.input_file(value)
    except ValueError:
        raise NodeInputError(node, name, expected, repr(value)) from None
    if not os.path.isfile(path):
        raise NodeInputError(node, name, expected, repr(value))
    return path


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()




class Pano360CameraPath(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360CameraPath",
            display_name="Camera Path",
            category=CATEGORY,
            description=(
                "Per-frame camera rotation (yaw, pitch, roll), horizontal FOV and (from files and keyframes "
                "with x/y/z) position, the one camera path every Pano360 system takes. Sources: a fixed FOV "
                "with no motion; keyframes; Argus's motion/fov txt files; a MegaSaM npz; a RealEstate10K "
                "camera file (e.g. the pose.txt of Look Beyond Perspective Loop); or an estimate from the "
                "video itself (rotation-only alignment of consecutive frames, no extra models). Poses from "
                "files are made relative to frame 0 unless relative_to_first is off."
            ),
            inputs=[
                io.Combo.Input("source", options=list(PATH_SOURCES), default="manual_fov",
                               tooltip="Where the path comes from (see the node description)."),
                io.Float.Input("fov_deg", default=90.0, min=10.0, max=170.0, step=0.5,
                               tooltip="Horizontal field of view in degrees, for manual_fov, keyframes without fov, "
                                       "argus_motion_txt without a fov file, and estimate_from_video unless estimate_fov is on. "
                                       "Argus's demo default is 90."),
                io.Int.Input("num_frames", default=25, min=1, max=4096,
                             tooltip="Number of frames when no video is connected (manual_fov, keyframes). With a video, "
                                     "the path is fitted to its frame count (cut, or the last pose held)."),
                io.String.Input("keyframes", default="0: yaw=0, pitch=0, roll=0", multiline=True,
                                tooltip="For source keyframes: 'frame: name=value, ...' separated by ';' or new lines, "
                                        "names yaw, pitch, roll, fov (degrees) and x, y, z (position); each name linear "
                                        "between the keyframes that set it. " + ANGLE_CONVENTION),
                io.String.Input("file", default="",
                                tooltip="For the file sources: path of the motion txt (3 rows pitch, yaw, roll in radians), "
                                        "MegaSaM npz, or RealEstate10K txt; a path relative to ComfyUI's input folder, or "
                                        "to its output folder with ' [output]' appended (e.g. "
                                        "'lookbeyond/loop_00001/pose.txt [output]'); files elsewhere are refused."),
                io.String.Input("fov_file", default="",
                                tooltip="For argus_motion_txt: the fov txt ('fovx fovy' in degrees). Empty uses fov_deg."),
                io.Combo.Input("pose_conversion", options=["exact", "argus"], default="exact",
                               tooltip="For MegaSaM/RealEstate10K poses: 'exact' reads the relative rotation in this pack's "
                                       "Euler order; 'argus' reproduces Argus's inference.py reading (exact for single-axis "
                                       "motion, approximate when yaw, pitch and roll combine)."),
                io.Boolean.Input("estimate_fov", default=False,
                                 tooltip="For estimate_from_video: also search the FOV (30–120°); needs some camera motion. "
                                         "Off uses fov_deg."),
                io.Float.Input("yaw_offset_deg", default=0.0, min=-180.0, max=180.0, step=1.0,
                               tooltip="Added to every frame's yaw (Argus's yaw_start). " + ANGLE_CONVENTION),
                io.Boolean.Input("relative_to_first", default=True,
                                 tooltip="For the file sources: on, frame 0 looks forward from the origin and the others "
                                         "follow (what Argus expects); off, the file's own world frame is kept (y up)."),
                io.Image.Input("video", optional=True,
                               tooltip="The perspective video frames [T,H,W,C]; needed for estimate_from_video, and fits the "
                                       "path to its frame count otherwise."),
            ],
            outputs=[
                CAMERA_PATH.Output("camera_path", tooltip="Per-frame yaw, pitch, roll and FOV (radians inside)."),
                io.String.Output("path_text", tooltip="The path as text: one line per frame, degrees."),
            ],
        )

    @classmethod
    def validate_inputs(cls, source="manual_fov", keyframes=None):
        """Keyframe text is checked before the queue runs (a linked keyframes input is checked in
        execute).  No ``**kwargs``, and only inputs without ranges: ComfyUI 0.3.64 skips its own
        min/max/list checks for every input a validate_inputs accepts (execution.validate_inputs)."""
        if source is not None and source not in PATH_SOURCES:
            return f"source: expected one of {', '.join(PATH_SOURCES)}, got {source!r}"
        if source == "keyframes" and isinstance(keyframes, str):
            try:
                parse_keyframes(keyframes)
            except ValueError as err:
                return f"keyframes: {err}"
        return True

    @classmethod
    def fingerprint_inputs(cls, source, file="", fov_file="", **kw):
        """Re-run when a camera file changes on disk (its modification time), not only when the
        widget text changes."""
        stamps = []
        for value in (file, fov_file):
            try:
                path = _host.input_file(value)
            except ValueError:  # empty or outside the input folder: execute reports it
                path = None
            stamps.append(os.path.getmtime(path) if path and os.path.isfile(path) else None)
        return (source, *stamps)

    @classmethod
    def execute(cls, source, fov_deg, num_frames, keyframes, file, fov_file, pose_conversion, estimate_fov,
                yaw_offset_deg, relative_to_first=True, video=None) -> io.NodeOutput:
        node = "Pano360CameraPath"
        check_widgets(cls, source=source, fov_deg=fov_deg, num_frames=num_frames, pose_conversion=pose_conversion,
                      yaw_offset_deg=yaw_offset_deg)
        frames = image_to_bchw(video, node, "video") if video is not None else None
        n = frames.shape[0] if frames is not None else num_frames
        try:
            if source == "manual_fov":
                path = constant_path(n, fov_deg)
            elif source == "keyframes":
                path = keyframe_path(keyframes, n, fov_deg=fov_deg)
            elif source == "argus_motion_txt":
                motion = _read_text(_input_file(node, "file", file))
                fov = _read_text(_input_file(node, "fov_file", fov_file)) if fov_file else None
                path = read_argus_motion(motion, fov, fov_deg)
            elif source == "megasam_npz":
                path = read_megasam_npz(_input_file(node, "file", file), pose_conversion, relative_to_first)
            elif source == "realestate10k_txt":
                path = read_realestate10k(_read_text(_input_file(node, "file", file)), pose_conversion, relative_to_first)
            elif source == "estimate_from_video":
                if frames is None:
                    raise NodeInputError(node, "video", "a video for source estimate_from_video", "nothing")
                fov = None if estimate_fov else math.radians(fov_deg)
                path = estimate_rotation_path(frames, fov, callback=progress_callback(max(1, n - 1)))
            else:
                raise NodeInputError(node, "source", f"one of {', '.join(PATH_SOURCES)}", repr(source))
        except NodeInputError:
            raise
        except ValueError as err:  # a library error about the content of one input
            blamed = {"keyframes": "keyframes", "estimate_from_video": "video", "manual_fov": "fov_deg"}.get(source, "file")
            raise NodeInputError(node, blamed, f"a valid {source} camera path", str(err)) from err
        path = path.fit_to(n).offset(yaw=math.radians(yaw_offset_deg))
        return io.NodeOutput(path, path.to_text())


NODES = [Pano360CameraPath]
