"""Pano360 nodes: 360° files that players recognise, a perspective sweep, and the viewer.

The file formats live in ``media/spherical_mp4.py`` (V1 + V2 spherical metadata) and
``media/gpano.py`` (GPano XMP), camera paths in ``cameras/``; the viewer
is ``web/pano360.js``.  Save/preview nodes return ``ui.pano360`` items
``{filename, subfolder, type, kind, stereo}`` that the viewer loads through ``/view``.
See docs/output.md.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..cameras import EASINGS, CameraPath, keyframe_path, render_path, yaw_sweep
from ..cameras.render import render_peak_bytes
from ..media.atomic import next_counter_name
from ..media.gpano import GPanoFields, save_jpeg, save_png
from ..media.images import to_uint8
from ..media.spherical_mp4 import STEREO_MODES, SphericalMetadata, save_360_video
from ..media.video import DEFAULT_CRF
from ..metrics import PanoramaScores, score_panorama
from ._common import (ANGLE_CONVENTION, NodeInputError, check_fits, check_widgets, describe, equirect_to_bchw,
                      image_to_bchw, node_id, output_path)
from ._host import (
    free_bytes,
    input_directory,
    intermediate_device,
    io,
    metadata_disabled,
    output_directory,
    progress_callback,
    save_image_path,
    temp_directory,
)

CATEGORY = "Pano360/output"
STEREO_CHOICES = list(STEREO_MODES)
# Width / height of a full equirect frame for each stereo layout (each eye is 2:1).
STEREO_ASPECT = {"mono": 2.0, "top-bottom": 1.0, "left-right": 4.0}
STEREO_TOOLTIP = (
    "Frame layout written into the metadata: mono (one 2:1 equirect), top-bottom (left eye on top, "
    "frame 1:1) or left-right (left eye on the left, frame 4:1)."
)
# x264's constant rate factor scale: 0 lossless .. 51 worst (DEFAULT_CRF 18: visually lossless).
CRF_RANGE = (0, 51)
PREVIEW_CRF = 23  # a temporary preview: smaller and faster than the saved file
METRICS = io.Custom("PANO360_METRICS")
METRICS_TOOLTIP = ("Optional scores from a Pano360 sampler (its 'metrics' output), shown under the saved file's own "
                   "seam and pole scores.")


def scores_text(images: torch.Tensor, stereo_mode: str, metrics, node: str) -> str:
    """The UI line of a saved result: its own seam/pole scores (left eye for stereo
    layouts) and, when connected, the sampler's."""
    if metrics is not None and not isinstance(metrics, PanoramaScores):
        raise NodeInputError(node, "metrics", "PANO360_METRICS from a Pano360 sampler", describe(metrics))
    x = images[..., :3].movedim(-1, 1).float()
    h, w = x.shape[-2:]
    if stereo_mode == "top-bottom":
        x = x[..., : h // 2, :]
    elif stereo_mode == "left-right":
        x = x[..., : w // 2]
    line = "saved: " + score_panorama(x).text()
    if metrics is not None:
        line += "\nsampler (latent): " + metrics.text()
    return line


PREVIEW_PREFIX = "Pano360/preview"  # in ComfyUI's temp folder
# Perspective Sweep frames rendered per projection call: bounds the sampling memory of long
# paths and sets how often the progress bar moves and Cancel is checked.
SWEEP_CHUNK = 8


def images_to_uint8(images: torch.Tensor, node_id: str, input_name: str) -> np.ndarray:
    """IMAGE ``[B,H,W,C]`` 0..1 -> uint8 ``[B,H,W,3]`` (RGBA drops alpha, grey is repeated)."""
    x = image_to_bchw(images, node_id, input_name).movedim(1, -1)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return to_uint8(x[..., :3])


def _save_target(filename_prefix: str, w: int, h: int, node: str) -> tuple[str, str, int, str]:
    """ComfyUI's ``(folder, name, counter, subfolder)`` for a prefix checked to lie inside the
    output folder (:func:`._common.output_path` names the input; ComfyUI's own check would not)."""
    output_path(output_directory(), filename_prefix, node, "filename_prefix")
    folder, name, counter, subfolder, _ = save_image_path(filename_prefix, output_directory(), w, h)
    return folder, name, counter, subfolder


def _counter_of(file: str) -> int:
    """The counter of a ``<name>_<counter>_.<ext>`` file name."""
    return int(file.rsplit("_", 2)[-2])


def check_stereo_frame(images: torch.Tensor, stereo_mode: str, node_id: str, input_name: str) -> None:
    h, w = images.shape[1], images.shape[2]
    if stereo_mode not in STEREO_ASPECT:
        raise NodeInputError(node_id, "stereo_mode", f"one of {STEREO_CHOICES}", repr(stereo_mode))
    if w != round(h * STEREO_ASPECT[stereo_mode]):
        raise NodeInputError(node_id, input_name, f"{stereo_mode} equirect frames of width {STEREO_ASPECT[stereo_mode]:g} "
                             "x height (each eye 2:1)", f"{w}x{h}")


def _frame_progress(num_frames: int, every: int = 8):
    """A per-frame ``callback(done, total)`` that updates ComfyUI's progress bar (and honours
    Cancel) every ``every`` frames and on the last one."""
    bar = progress_callback(num_frames)

    def callback(done: int, total: int | None = None) -> None:
        if done % every == 0 or done == num_frames:
            bar(done, num_frames)

    return callback


def pano_item(filename: str, subfolder: str, folder_type: str, kind: str, stereo: str = "mono") -> dict:
    """One entry of ``ui.pano360`` (what web/pano360.js loads via /view)."""
    return {"filename": filename, "subfolder": subfolder, "type": folder_type, "kind": kind, "stereo": stereo}


def comfy_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """ComfyUI's file metadata: ``prompt`` plus each ``extra_pnginfo`` key (``workflow``, the
    batch client's marker), JSON text, as SaveImage writes PNG text chunks and SaveVideo
    writes MP4 tags; nothing under ``--disable-metadata``."""
    if metadata_disabled():
        return {}
    text = {}
    if prompt is not None:
        text["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        text[key] = json.dumps(value)
    return text


class Pano360Save360Video(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360Save360Video",
            display_name="Save 360° Video",
            category=CATEGORY,
            description=(
                "Saves equirect frames as an H.264 MP4 (yuv420p) in ComfyUI's output folder with spherical "
                "metadata on the video track in both forms players read: Google's V1 XML box and V2 st3d/sv3d "
                "boxes, so YouTube, VR headsets and 360° players show it as a 360° video. The file appears only "
                "when complete. Shows the result in the 360° viewer with its seam and pole scores (is the 0/360° "
                "border seamless, are the poles clean?), and a connected sampler's scores."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Equirect video frames [T,H,W,C] (2:1 for mono). Width and height must be even (H.264 yuv420p)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0, tooltip="Frames per second of the video."),
                io.Int.Input("crf", default=DEFAULT_CRF, min=CRF_RANGE[0], max=CRF_RANGE[1],
                             tooltip="Quality: x264 constant rate factor, 0 = lossless, 18 = visually lossless, 23 = x264 default, 51 = worst. Lower = bigger file."),
                io.Combo.Input("stereo_mode", options=STEREO_CHOICES, default="mono", tooltip=STEREO_TOOLTIP),
                io.String.Input("filename_prefix", default="Pano360/video",
                                tooltip="Prefix of the file in the output folder; may contain a subfolder and %date:...% style values like Save Image."),
                METRICS.Input("metrics", optional=True, tooltip=METRICS_TOOLTIP),
            ],
            outputs=[io.String.Output("path", tooltip="Absolute path of the saved MP4 (for API and batch users).")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps: float, crf: int, stereo_mode: str, filename_prefix: str,
                metrics=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, fps=fps, crf=crf, stereo_mode=stereo_mode)
        frames = images_to_uint8(images, node, "images")
        t, h, w, _ = frames.shape
        if h % 2 or w % 2:
            raise NodeInputError(node, "images", "even width and height (H.264 yuv420p); resize first", f"{w}x{h}")
        check_stereo_frame(images, stereo_mode, node, "images")
        folder, name, counter, subfolder = _save_target(filename_prefix, w, h, node)
        path = save_360_video(frames, output_path(output_directory(), os.path.join(folder, f"{name}_{counter:05}_.mp4"),
                                                  node, "filename_prefix"),
                              fps, crf, SphericalMetadata(stereo_mode=stereo_mode), callback=_frame_progress(t),
                              next_free=next_counter_name, tags=comfy_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo))
        file = os.path.basename(path)
        saved = {"filename": file, "subfolder": subfolder, "type": "output"}
        ui = {"images": [saved], "animated": (True,), "pano360": [pano_item(file, subfolder, "output", "video", stereo_mode)],
              "text": (scores_text(images, stereo_mode, metrics, node),)}
        return io.NodeOutput(path, ui=ui)


class Pano360Save360Image(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360Save360Image",
            display_name="Save 360° Image",
            category=CATEGORY,
            description=(
                "Saves equirect panoramas as PNG or JPEG with Google's GPano XMP (projection, full pano size, "
                "cropped area, initial heading), so photo viewers and sites open them as 360° panoramas. PNGs "
                "keep ComfyUI's workflow metadata (drop the file on ComfyUI to restore the graph). Shows the "
                "result in the 360° viewer with its seam and pole scores (is the 0/360° border seamless, are the "
                "poles clean?), and a connected sampler's scores."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Equirect panoramas [B,H,W,C], width = 2 × height. Each batch item becomes one file."),
                io.Combo.Input("format", options=["png", "jpeg"], default="png",
                               tooltip="png: lossless, keeps the workflow. jpeg: much smaller, no workflow."),
                io.Int.Input("jpeg_quality", default=95, min=1, max=100, tooltip="JPEG quality 1..100 (ignored for PNG)."),
                io.Float.Input("initial_yaw", default=0.0, min=-180.0, max=180.0, step=1.0,
                               tooltip="Where viewers open, as a yaw from the image centre (written as GPano InitialViewHeadingDegrees). " + ANGLE_CONVENTION),
                io.String.Input("filename_prefix", default="Pano360/pano", tooltip="Prefix of the file in the output folder, as Save Image."),
                METRICS.Input("metrics", optional=True, tooltip=METRICS_TOOLTIP),
            ],
            outputs=[io.String.Output("paths", tooltip="Absolute paths of the saved files, one per line.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, format: str, jpeg_quality: int, initial_yaw: float, filename_prefix: str,
                metrics=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, format=format, jpeg_quality=jpeg_quality, initial_yaw=initial_yaw)
        pixels = images_to_uint8(images, node, "images")
        b, h, w, _ = pixels.shape
        if w != 2 * h:
            raise NodeInputError(node, "images", "equirect panoramas with width = 2 × height", f"{w}x{h}")
        if format not in ("png", "jpeg"):
            raise NodeInputError(node, "format", "png or jpeg", repr(format))
        fields = GPanoFields(w, h, initial_heading_deg=initial_yaw)
        text = comfy_metadata(cls.hidden.prompt, cls.hidden.extra_pnginfo) if format == "png" else {}
        folder, name, counter, subfolder = _save_target(filename_prefix, w, h, node)
        saved, paths = [], []
        progress = _frame_progress(b, every=1)
        for i in range(b):
            path = output_path(output_directory(), os.path.join(
                folder, f"{name}_{counter:05}_.{'png' if format == 'png' else 'jpg'}"), node, "filename_prefix")
            if format == "png":
                path = save_png(pixels[i], path, fields, text, next_free=next_counter_name)
            else:
                path = save_jpeg(pixels[i], path, fields, quality=jpeg_quality, next_free=next_counter_name)
            file = os.path.basename(path)
            counter = _counter_of(file) + 1
            saved.append({"filename": file, "subfolder": subfolder, "type": "output"})
            paths.append(path)
            progress(i + 1, b)   # files done so far (sampling.types.ProgressCallback)
        ui = {"images": saved, "pano360": [pano_item(s["filename"], subfolder, "output", "image") for s in saved],
              "text": (scores_text(images, "mono", metrics, node),)}
        return io.NodeOutput("\n".join(paths), ui=ui)


class Pano360PerspectiveSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360PerspectiveSweep",
            display_name="Perspective Sweep (360 → flat video)",
            category=CATEGORY,
            description=(
                "Renders an equirect image or video as a normal perspective video along a camera path, for "
                "platforms without 360° support: a yaw sweep (turn around), keyframes of yaw/pitch/roll/FOV eased "
                "between, or a connected Camera Path. A still panorama gives `frames` frames; a video gives one "
                "output frame per input frame."
            ),
            inputs=[
                io.Image.Input("panorama", tooltip="Equirect image (batch of 1) or video frames [T,H,W,C], width = 2 × height."),
                io.Combo.Input("path", options=["yaw_sweep", "keyframes"], default="yaw_sweep",
                               tooltip="yaw_sweep: turn from start_yaw by total_yaw. keyframes: follow the keyframes text. "
                                       "Ignored when a camera_path is connected."),
                io.Int.Input("frames", default=96, min=1, max=10000,
                             tooltip="Number of output frames for a still panorama (a video input uses its own frame count)."),
                io.Float.Input("start_yaw", default=0.0, min=-360.0, max=360.0, step=1.0,
                               tooltip="yaw_sweep: yaw of the first frame. " + ANGLE_CONVENTION),
                io.Float.Input("total_yaw", default=360.0, min=-3600.0, max=3600.0, step=1.0,
                               tooltip="yaw_sweep: degrees turned over the video (+ = to the right; 360 = one loop, the last frame stops one step short so it loops seamlessly)."),
                io.Float.Input("pitch", default=0.0, min=-90.0, max=90.0, step=1.0, tooltip="yaw_sweep: camera pitch. " + ANGLE_CONVENTION),
                io.Float.Input("fov", default=90.0, min=1.0, max=179.0, step=1.0, tooltip="yaw_sweep: horizontal field of view in degrees."),
                io.Combo.Input("easing", options=list(EASINGS), default="linear",
                               tooltip="Speed profile: linear (constant), ease_in_out (slow start and end), ease_in, ease_out. For keyframes it applies to each segment."),
                io.String.Input("keyframes", multiline=True,
                                default="0: yaw=0, pitch=0, fov=90\n48: yaw=90, pitch=10, fov=70\n95: yaw=180, pitch=0, fov=90",
                                tooltip="keyframes: 'frame: name=value, ...' per line or separated by ';' (frame 0-based; names "
                                        "yaw, pitch, roll, fov in degrees; # comments), each name eased between the keyframes "
                                        "that set it. Yaw is interpolated as written (0→360 is a full right turn). " + ANGLE_CONVENTION),
                io.Int.Input("width", default=1280, min=16, max=8192, step=2, tooltip="Output frame width in pixels."),
                io.Int.Input("height", default=720, min=16, max=8192, step=2, tooltip="Output frame height in pixels."),
                io.Custom("PANO360_CAMERA_PATH").Input("camera_path", optional=True,
                                                       tooltip="A camera path (Camera Path node) to follow instead of "
                                                               "path; fitted to the frame count. " + ANGLE_CONVENTION),
            ],
            outputs=[io.Image.Output("images", display_name="frames",
                                     tooltip="Perspective frames [N,height,width,C]; feed Create Video → Save Video.")],
        )

    @classmethod
    def execute(cls, panorama, path: str, frames: int, start_yaw: float, total_yaw: float, pitch: float,
                fov: float, easing: str, keyframes: str, width: int, height: int, camera_path=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, path=path, frames=frames, start_yaw=start_yaw, total_yaw=total_yaw, pitch=pitch, fov=fov,
                      easing=easing, width=width, height=height)
        erp = equirect_to_bchw(panorama, node, "panorama")
        n = erp.shape[0] if erp.shape[0] > 1 else frames
        try:
            if camera_path is not None:
                if not isinstance(camera_path, CameraPath):
                    raise NodeInputError(node, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
                cam = camera_path.fit_to(n)
            elif path == "yaw_sweep":
                cam = yaw_sweep(n, start_yaw, total_yaw, pitch, fov, easing)
            elif path == "keyframes":
                cam = keyframe_path(keyframes, n, easing=easing, fov_deg=fov)
            else:
                raise NodeInputError(node, "path", "yaw_sweep or keyframes", repr(path))
        except NodeInputError:
            raise
        except ValueError as err:
            raise NodeInputError(node, "keyframes" if path == "keyframes" else "path settings",
                                 "a valid camera path", str(err)) from err
        # The frames go straight into the IMAGE the node returns (no list of chunks concatenated
        # at the end, no clamped copy): the peak is the output plus one chunk, checked first.
        channels = erp.shape[1]
        check_fits(render_peak_bytes(n, (height, width), channels, SWEEP_CHUNK), free_bytes(), node,
                   "frames" if erp.shape[0] == 1 else "panorama", f"{n} frames of {width}x{height}",
                   "lower frames, width or height, or render the path in parts")
        image = torch.empty(n, height, width, channels, dtype=torch.float32, device=intermediate_device())
        steps = -(-n // SWEEP_CHUNK)
        render_path(erp.to(torch.float32), cam, (height, width), chunk=SWEEP_CHUNK, callback=progress_callback(steps),
                    out=image.movedim(-1, 1))
        return io.NodeOutput(image.clamp_(0.0, 1.0))


class Pano360Preview360(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360Preview360",
            display_name="Preview 360°",
            category=CATEGORY,
            description=(
                "Shows an equirect image, an equirect video (IMAGE frames) or a saved 360° MP4 in an interactive "
                "360° viewer on the node: drag to look around, wheel to zoom, play/pause for video. Images and "
                "frames go to ComfyUI's temp folder (a batch of frames becomes a temporary MP4); nothing is "
                "saved to the output folder."
            ),
            inputs=[
                io.Image.Input("images", optional=True,
                               tooltip="Equirect image(s) [B,H,W,C]. One image is shown as a still; with as_video on, a batch is shown as a video."),
                io.String.Input("video_path", optional=True, default="", force_input=True,
                                tooltip="Path of a saved MP4 (e.g. the path output of Save 360° Video); must lie in ComfyUI's output, temp or input folder."),
                io.Boolean.Input("as_video", default=True, tooltip="Show an IMAGE batch of more than one frame as a video (on) or as separate stills (off)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0, tooltip="Frame rate of the preview video made from an IMAGE batch."),
                io.Combo.Input("stereo_mode", options=STEREO_CHOICES, default="mono", tooltip=STEREO_TOOLTIP + " The viewer shows the left eye."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, as_video: bool, fps: float, stereo_mode: str, images=None, video_path: str = "") -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, fps=fps, stereo_mode=stereo_mode)
        items = []
        if video_path:
            items.append(_served_file_item(video_path, node, stereo_mode))
        if images is not None:
            pixels = images_to_uint8(images, node, "images")
            b, h, w, _ = pixels.shape
            if as_video and b > 1:
                if h % 2 or w % 2:
                    raise NodeInputError(node, "images", "even width and height for a video preview", f"{w}x{h}")
                folder, name, counter, subfolder, _ = save_image_path(PREVIEW_PREFIX, temp_directory(), w, h)
                path = output_path(temp_directory(), os.path.join(folder, f"{name}_{counter:05}_.mp4"), node, "images")
                file = os.path.basename(save_360_video(pixels, path, fps, PREVIEW_CRF,
                                                       SphericalMetadata(stereo_mode=stereo_mode),
                                                       callback=_frame_progress(b), next_free=next_counter_name))
                items.append(pano_item(file, subfolder, "temp", "video", stereo_mode))
            else:
                folder, name, counter, subfolder, _ = save_image_path(PREVIEW_PREFIX, temp_directory(), w, h)
                for i in range(b):
                    path = output_path(temp_directory(), os.path.join(folder, f"{name}_{counter:05}_.png"), node, "images")
                    file = os.path.basename(save_png(pixels[i], path, GPanoFields(w, h), compress_level=1,
                                                     next_free=next_counter_name))
                    counter = _counter_of(file) + 1
                    items.append(pano_item(file, subfolder, "temp", "image", stereo_mode))
        if not items:
            raise NodeInputError(node, "images/video_path", "an IMAGE or the path of a saved MP4", "neither")
        return io.NodeOutput(ui={"pano360": items})


def _served_file_item(path: str, node: str, stereo_mode: str) -> dict:
    """The /view address (type, subfolder, filename) of a file in one of ComfyUI's folders.

    Where the path lies is checked before whether it exists, so the error never tells whether
    some file outside ComfyUI's folders exists."""
    real = os.path.realpath(path) if isinstance(path, str) else ""
    for folder_type, root in (("output", output_directory()), ("temp", temp_directory()), ("input", input_directory())):
        root = os.path.realpath(root)
        if real and os.path.commonpath([root, real]) == root:
            if not os.path.isfile(real):
                raise NodeInputError(node, "video_path", f"an existing file in ComfyUI's {folder_type} folder", repr(path))
            subfolder = os.path.relpath(os.path.dirname(real), root)
            kind = "video" if real.lower().endswith((".mp4", ".webm", ".mov", ".m4v")) else "image"
            return pano_item(os.path.basename(real), "" if subfolder == "." else subfolder, folder_type, kind, stereo_mode)
    raise NodeInputError(node, "video_path", "a file inside ComfyUI's output, temp or input folder (the viewer loads it via /view)",
                         repr(path))


NODES = [Pano360Save360Video, Pano360Save360Image, Pano360PerspectiveSweep, Pano360Preview360]
