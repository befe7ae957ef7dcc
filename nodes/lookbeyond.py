"""Pano360 nodes: Look Beyond stage 2 (panorama -> perspective loop + RealEstate10K poses).

The maths and file writing live in ``pipelines/lookbeyond/perspective_loop.py`` (poses through
``cameras/formats/realestate10k.py``); see docs/lookbeyond.md.
"""

from __future__ import annotations

import os

from ..cameras.formats.realestate10k import format_rows
from ..media.atomic import next_counter_name, next_free_folder
from ..pipelines.lookbeyond.perspective_loop import POSE_HEADER, loop_cameras, write_frame_folders
from ..projection import erp_to_rig, rig_preset
from ..projection.geometry import LOOKBEYOND_FOV, LOOKBEYOND_NUM, LOOKBEYOND_SIZE
from ..projection.memory import estimate_rig
from ._common import (ANGLE_CONVENTION, NodeInputError, bchw_to_image, check_widgets, describe, equirect_to_bchw,
                      node_id, output_path)
from ._host import io, output_directory, progress_callback
from .projection import require_memory
from .output import comfy_metadata

CATEGORY = "Pano360/lookbeyond"
RIG_TYPE = "PANO360_RIG"
# cameras_between = 12 gives the 14 cameras per keyframe pair of SVD's 14-frame
# inbetweening (Look Beyond videogen.py --num_frames 14).
SVD_INBETWEEN = 12


class Pano360LookBeyondPerspectiveLoop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360LookBeyondPerspectiveLoop",
            display_name="Look Beyond Perspective Loop",
            category=CATEGORY,
            description=(
                "Look Beyond stage 2 input: renders an equirect panorama as a loop of perspective frames "
                "(default: 12 frames turning left from yaw 180° to −180°, FOV 90°, 1024×1024, as the paper's "
                "panorama2cube.py) and saves them as 00000.png, 00001.png… with a RealEstate10K pose.txt "
                "(OpenCV axes, normalised intrinsics, world-to-camera) into a new folder under ComfyUI's "
                "output folder, ready for the keyframe-interpolation video stage. The folder appears only "
                "when complete. Also outputs the frames."
            ),
            inputs=[
                io.Image.Input("panorama", tooltip="Equirect panorama(s) [B,H,W,C], width = 2 × height. Each panorama gets its own folder."),
                io.Int.Input("num_frames", default=LOOKBEYOND_NUM, min=1, max=360,
                             tooltip="Number of frames in the loop; yaws run linearly from 180° to −180° (frames 0 and N−1 look the same way, closing the loop). " + ANGLE_CONVENTION),
                io.Float.Input("fov", default=LOOKBEYOND_FOV, min=1.0, max=179.0, step=0.5,
                               tooltip="Horizontal field of view of every frame in Look Beyond's convention: the "
                                       "border pixel centres lie on the frustum edges (its Equirec2Perspec; 90 = "
                                       "its frames exactly). " + ANGLE_CONVENTION),
                io.Int.Input("size", default=LOOKBEYOND_SIZE, min=8, max=8192, step=8,
                             tooltip="Width and height of each square frame in pixels (Look Beyond: 1024; its video stage resizes to 512)."),
                io.Int.Input("cameras_between", default=0, min=0, max=1000,
                             tooltip=(f"0: one pose row per frame, ids 0,1,2… (the paper's layout). n > 0: frames get ids k·(n+1) and "
                                      f"pose.txt gets n interpolated cameras between consecutive frames, so the video stage finds "
                                      f"n+2 cameras between two keyframes ({SVD_INBETWEEN} for SVD's 14 frames).")),
                io.String.Input("folder_prefix", default="lookbeyond/loop",
                                tooltip="Folder under ComfyUI's output folder; a counter is appended (loop_00001, loop_00002…)."),
                io.Boolean.Input("save", default=True, tooltip="Off: only output the frames, write nothing."),
                io.Custom(RIG_TYPE).Input("rig", optional=True,
                                          tooltip="Optional rig (from Pano360 Rig) replacing num_frames/fov/size: any list of views, e.g. with pitch."),
            ],
            outputs=[
                io.Image.Output("frames", tooltip="The perspective frames [N·B,H,W,C], view-major: index = frame·B + panorama (for one panorama simply the frames in order)."),
                io.String.Output("folder", tooltip="The written folder(s), one per line (empty when save is off)."),
                io.String.Output("pose_txt", tooltip="The pose.txt text (RealEstate10K format; the first line is a placeholder readers skip)."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, folder_prefix: str | None = "lookbeyond/loop") -> bool | str:
        # No **kwargs: ComfyUI 0.3.64 would then skip its min/max/choice checks of every input.
        # A linked input arrives as None (its value is not known before the run): execute checks it.
        if folder_prefix is None:
            return True
        try:
            output_path(output_directory(), folder_prefix, node_id(cls), "folder_prefix")
        except NodeInputError as err:
            return str(err)
        return True

    @classmethod
    def execute(cls, panorama, num_frames: int, fov: float, size: int, cameras_between: int, folder_prefix: str,
                save: bool, rig=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, num_frames=num_frames, fov=fov, size=size, cameras_between=cameras_between)
        erp = equirect_to_bchw(panorama, node, "panorama")
        given_rig = rig
        if rig is None:
            rig = rig_preset("lookbeyond_loop", size=size, n=num_frames, fov=fov)
        elif not hasattr(rig, "views"):
            raise NodeInputError(node, "rig", "a PANO360_RIG", describe(rig))
        try:
            estimate = estimate_rig(rig, erp.shape[0], erp.shape[1], erp.shape[-2:], dtype=erp.dtype)
        except ValueError as err:
            raise NodeInputError(node, "rig", "views of one common size", str(err)) from err
        require_memory(estimate, node, "size" if given_rig is None else "rig", erp.device)
        views = erp_to_rig(erp, rig, callback=progress_callback(1))  # (V*B, C, h, w) view-major
        frame_ids, rows = loop_cameras(rig.views, cameras_between)
        pose_text = format_rows(rows, POSE_HEADER)
        images = bchw_to_image(views)
        written: list[str] = []
        if save:
            target = output_path(output_directory(), folder_prefix, node, "folder_prefix")
            batch = erp.shape[0]
            per_pano = [images[b::batch] for b in range(batch)]          # view-major -> frames of pano b
            parent, prefix = os.path.split(target)
            first = next_free_folder(parent, prefix)
            start = int(first.rsplit("_", 1)[1])
            folders = [os.path.join(parent, f"{prefix}_{start + b:05d}") for b in range(batch)]
            written = write_frame_folders(folders, per_pano, frame_ids, pose_text,
                                          callback=progress_callback(batch * len(frame_ids)),
                                          next_free=next_counter_name,
                                          text=comfy_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo))
        return io.NodeOutput(images, "\n".join(written), pose_text)


NODES = [Pano360LookBeyondPerspectiveLoop]
