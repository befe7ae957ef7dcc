"""Pano360 nodes: projection (equirect <-> perspective views, cube maps, rigs, stitching).

Thin V3 wrappers: each ``execute`` converts ComfyUI's ``IMAGE [B,H,W,C]`` to the library's
``(B,C,H,W)`` (a free view), calls one function of ``..projection`` and converts back.
Sphere convention: docs/conventions.md.  View x frame batches are VIEW-MAJOR
(``b = view * T + frame``).
"""

from __future__ import annotations

import math

import torch

from ..projection import (
    RIG_PRESETS,
    Rig,
    View,
    cubemap_to_erp,
    erp_to_cubemap,
    erp_to_rig,
    rig_from_json,
    rig_preset,
    roll_erp,
    rotate_erp,
    stitch_rig,
)
from ..projection.memory import (
    MemoryEstimate,
    estimate_cubemap_to_erp,
    estimate_erp_to_cubemap,
    estimate_rig,
    estimate_rotate_erp,
    estimate_stitch_rig,
)
from ._common import (ANGLE_CONVENTION, NodeInputError, check_fits, check_widgets, describe, equirect_to_bchw,
                      image_to_bchw, widget_errors)
from ._host import free_bytes, io, progress_callback

CATEGORY = "Pano360/projection"
RigType = io.Custom("PANO360_RIG")
MODES = ["bilinear", "bicubic", "nearest"]
MODE_TOOLTIP = ("Interpolation. bilinear: most accurate on smooth content; bicubic: sharper, may "
                "overshoot slightly (clamped to 0..1); nearest: no blending.")
MAX_SIZE = 8192
RIG_CHOICES = ["videopanda8", "lookbeyond_loop", "cube6", "horizontal_n", "single_view", "custom_json"]
VIEW_MAJOR = "View-major batch: index = view * frames + frame (each view's frames are contiguous)."


def _panorama(image, node_id: str, name: str = "panorama") -> torch.Tensor:
    """IMAGE -> (B, C, H, W) view; raises NodeInputError unless it is 2:1."""
    return equirect_to_bchw(image, node_id, name)


def _rig(rig, node_id: str) -> Rig:
    if not isinstance(rig, Rig):
        raise NodeInputError(node_id, "rig", "a PANO360_RIG (from Pano360Rig)", describe(rig))
    return rig


def _to_image(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, C, H, W) library output (channels-last memory) -> IMAGE; bicubic is clamped."""
    out = x.movedim(1, -1).to(torch.float32).contiguous()
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def require_memory(estimate: MemoryEstimate, node_id: str, input_name: str, device=None) -> None:
    """Refuse a request before anything is allocated when its estimated peak memory
    (``projection.memory``, docs/projection.md "Memory") exceeds what ComfyUI counts as free,
    naming the input that sets the size."""
    check_fits(estimate.total, free_bytes(device), node_id, input_name, f"an {estimate.op} request",
               f"use a smaller '{input_name}' or fewer frames; {estimate.describe()}")


def _mode_input():
    return io.Combo.Input("mode", options=MODES, default="bilinear", tooltip=MODE_TOOLTIP)


# --------------------------------------------------------------------------- rig


class Pano360Rig(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360Rig",
            display_name="Pano360 Rig",
            category=CATEGORY,
            description=(
                "A camera rig: a list of pinhole views (yaw, pitch, roll, horizontal FOV, width, height) at the "
                "sphere centre. Presets: videopanda8 (6 horizontal 90° views every 60° + up/down 100°, 512 px), "
                "lookbeyond_loop (12 yaws from 180° to -180°, 90°, 1024 px), cube6 (faces F R B L U D), "
                "horizontal_n (n views around the horizon), single_view (one view from the angle widgets), "
                "custom_json ([{yaw, pitch, roll, fov, width, height}, ...] in degrees and pixels)."
            ),
            inputs=[
                io.Combo.Input("preset", options=RIG_CHOICES, default="videopanda8",
                               tooltip="Which rig. The other widgets apply only where noted in their tooltips."),
                io.Int.Input("size", default=0, min=0, max=MAX_SIZE, step=8,
                             tooltip="View width and height in pixels for the presets; 0 keeps the preset's own "
                                     "(videopanda8 512, lookbeyond_loop 1024, cube6/horizontal_n/single_view 512)."),
                io.Int.Input("count", default=8, min=1, max=64,
                             tooltip="horizontal_n: number of views, evenly spaced in yaw from 0°."),
                io.Float.Input("yaw", default=0.0, min=-360.0, max=360.0, step=1.0,
                               tooltip="single_view: camera yaw. " + ANGLE_CONVENTION),
                io.Float.Input("pitch", default=0.0, min=-90.0, max=90.0, step=1.0,
                               tooltip="single_view and horizontal_n: camera pitch. " + ANGLE_CONVENTION),
                io.Float.Input("roll", default=0.0, min=-180.0, max=180.0, step=1.0,
                               tooltip="single_view: camera roll. " + ANGLE_CONVENTION),
                io.Float.Input("fov", default=90.0, min=1.0, max=179.0, step=1.0,
                               tooltip="single_view and horizontal_n: horizontal field of view in degrees, "
                                       "in (0, 180)."),
                io.String.Input("custom_json", default="", multiline=True,
                                tooltip='custom_json: a JSON list of views, e.g. [{"yaw": 0, "pitch": 0, "roll": 0, '
                                        '"fov": 90, "width": 512, "height": 512}, ...]; missing keys take those '
                                        'defaults. ' + ANGLE_CONVENTION),
            ],
            outputs=[RigType.Output("rig", tooltip="The rig (PANO360_RIG): view 0 is the reference view.")],
        )

    @classmethod
    def validate_inputs(cls, preset="videopanda8", custom_json=""):
        # A linked input arrives as None (its value is not known before the run): not checked here.
        if message := widget_errors(cls.define_schema(), preset=preset):
            return message
        if preset == "custom_json" and custom_json is not None:
            try:
                rig_from_json(custom_json)
            except ValueError as e:
                return f"Pano360Rig: input 'custom_json': {e}"
        if preset is not None and preset not in RIG_CHOICES:
            return f"Pano360Rig: input 'preset': expected one of {RIG_CHOICES}, got {preset!r}"
        return True

    @classmethod
    def execute(cls, preset, size, count, yaw, pitch, roll, fov, custom_json) -> io.NodeOutput:
        check_widgets(cls, preset=preset, size=size, count=count, yaw=yaw, pitch=pitch, roll=roll, fov=fov)
        try:
            return io.NodeOutput(build_rig(preset, size, count, yaw, pitch, roll, fov, custom_json))
        except ValueError as e:  # a linked custom_json is only known here (validate_inputs skips it)
            name = "custom_json" if preset == "custom_json" else "preset"
            raise NodeInputError("Pano360Rig", name, "a valid rig", str(e)) from None


def build_rig(preset: str, size: int, count: int, yaw: float, pitch: float, roll: float, fov: float,
              custom_json: str) -> Rig:
    """The rig a :class:`Pano360Rig` node's widgets describe (host-free, used by tests)."""
    sized = {"size": size} if size else {}
    if preset == "custom_json":
        return rig_from_json(custom_json)
    if preset == "single_view":
        s = size or 512
        return Rig("single_view", (View(yaw, pitch, roll, fov, s, s),))
    if preset == "horizontal_n":
        return rig_preset("horizontal_n", n=count, fov=fov, pitch=pitch, **sized)
    if preset in RIG_PRESETS:
        return rig_preset(preset, **sized)
    raise ValueError(f"preset: unknown rig {preset!r}; choose one of {RIG_CHOICES}")


# --------------------------------------------------------------------------- equirect <-> views


class Pano360EquirectToPerspective(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360EquirectToPerspective",
            display_name="Pano360 Equirect → Perspective",
            category=CATEGORY,
            description=("Renders every view of a rig (one view: Pano360Rig single_view) from equirect panoramas. "
                         "A video (IMAGE batch of T frames) gives V*T images, view-major. Sampling wraps across "
                         "the 0/360° seam and continues over the poles."),
            inputs=[
                io.Image.Input("panorama", tooltip="Equirect image or video frames [T,H,W,C], width == 2 x height. "
                                                  + ANGLE_CONVENTION),
                RigType.Input("rig", tooltip="The views to render (Pano360Rig)."),
                _mode_input(),
                io.Int.Input("width", default=0, min=0, max=MAX_SIZE, step=8,
                             tooltip="Override every view's width in pixels (FOV kept); 0 keeps the rig's."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE, step=8,
                             tooltip="Override every view's height in pixels (horizontal FOV kept); 0 keeps the rig's."),
            ],
            outputs=[
                io.Image.Output("views", tooltip="V*T perspective images. " + VIEW_MAJOR),
                io.Int.Output("frames", tooltip="T, the number of frames per view."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width=0, height=0):
        # A linked input arrives as None (its value is not known before the run): execute checks it.
        if message := widget_errors(cls.define_schema(), width=width, height=height):
            return message
        if width is not None and height is not None and (width == 0) != (height == 0):
            return "Pano360EquirectToPerspective: inputs 'width'/'height': set both or neither (0 keeps the rig's)"
        return True

    @classmethod
    def execute(cls, panorama, rig, mode, width, height) -> io.NodeOutput:
        node = "Pano360EquirectToPerspective"
        check_widgets(cls, mode=mode, width=width, height=height)
        erp, rig = _panorama(panorama, node), _rig(rig, node)
        if (width == 0) != (height == 0):
            raise NodeInputError(node, "width/height", "both set or both 0 (0 keeps the rig's)",
                                 f"width {width}, height {height}")
        size = (height, width) if width and height else None
        if size is None and len({(v.height, v.width) for v in rig.views}) > 1:
            raise NodeInputError(node, "width", "a size for rigs whose views differ in size", "0")
        b, c = erp.shape[:2]
        require_memory(estimate_rig(rig, b, c, erp.shape[-2:], size, mode, erp.dtype), node,
                       "width" if size else "rig", erp.device)
        views = erp_to_rig(erp, rig, size, mode=mode, callback=progress_callback(1))
        return io.NodeOutput(_to_image(views, mode), erp.shape[0])


class Pano360EquirectStitcher(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360EquirectStitcher",
            display_name="Pano360 Equirect Stitcher",
            category=CATEGORY,
            description=("Stitches a rig's perspective views back into equirect panoramas. The number of frames is "
                         "the batch divided by the rig's views (batch = V*T, view-major). 'uniform' averages "
                         "overlapping views (VideoPanda's protocol); 'feather' weights each view down to zero at "
                         "its border. Uncovered pixels are black and 0 in the coverage mask."),
            inputs=[
                io.Image.Input("views", tooltip="V*T perspective images. " + VIEW_MAJOR),
                RigType.Input("rig", tooltip="The rig the views were rendered with (Pano360Rig)."),
                io.Int.Input("height", default=512, min=8, max=MAX_SIZE // 2, step=8,
                             tooltip="Output panorama height in pixels; the width is 2 x height."),
                io.Combo.Input("weight", options=["uniform", "feather"], default="uniform",
                               tooltip="uniform: plain average where views overlap (VideoPanda's protocol, "
                                       "with mode bicubic); feather: smooth blend that hides seams between views."),
                _mode_input(),
            ],
            outputs=[
                io.Image.Output("panorama", tooltip="T equirect frames [T, height, 2*height, C]."),
                io.Mask.Output("coverage", tooltip="1 where at least one view covers the pixel, 0 elsewhere."),
            ],
        )

    @classmethod
    def execute(cls, views, rig, height, weight, mode) -> io.NodeOutput:
        node = "Pano360EquirectStitcher"
        check_widgets(cls, height=height, weight=weight, mode=mode)
        x, rig = image_to_bchw(views, node, "views"), _rig(rig, node)
        if x.shape[0] % rig.num_views:
            raise NodeInputError(node, "views", f"a batch that is a multiple of the rig's {rig.num_views} views "
                                 "(V*T, view-major)", f"batch {x.shape[0]}")
        require_memory(estimate_stitch_rig(rig, x.shape[0] // rig.num_views, x.shape[1], (height, 2 * height),
                                           tuple(x.shape[-2:]), mode, x.dtype), node, "height", x.device)
        erp, coverage = stitch_rig(x, rig, (height, 2 * height), weight=weight, mode=mode,
                                   callback=progress_callback(1))
        return io.NodeOutput(_to_image(erp, mode), coverage[:, 0].contiguous())


# --------------------------------------------------------------------------- cube maps


class Pano360EquirectToCubemap(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360EquirectToCubemap",
            display_name="Pano360 Equirect → Cubemap",
            category=CATEGORY,
            description=("Equirect panoramas to cube maps, faces F R B L U D (py360convert's order and orientation). "
                         "stack: a batch of 6 faces per frame (view-major: 6*T images); horizon: one 6:1 strip per "
                         "frame; dice: one 4:3 cross per frame."),
            inputs=[
                io.Image.Input("panorama", tooltip="Equirect image or frames, width == 2 x height. " + ANGLE_CONVENTION),
                io.Int.Input("face_size", default=0, min=0, max=MAX_SIZE // 2, step=8,
                             tooltip="Face width in pixels; 0 uses panorama height / 2 (about the same resolution)."),
                io.Combo.Input("layout", options=["stack", "horizon", "dice"], default="stack",
                               tooltip="stack: 6*T square faces (face-major); horizon: [T, w, 6w]; dice: [T, 3w, 4w]."),
                _mode_input(),
            ],
            outputs=[io.Image.Output("cubemap", tooltip="The cube map in the chosen layout.")],
        )

    @classmethod
    def execute(cls, panorama, face_size, layout, mode) -> io.NodeOutput:
        check_widgets(cls, face_size=face_size, layout=layout, mode=mode)
        erp = _panorama(panorama, "Pano360EquirectToCubemap")
        face = face_size or max(1, erp.shape[-2] // 2)
        require_memory(estimate_erp_to_cubemap(erp.shape[0], erp.shape[1], erp.shape[-2:], face, mode, erp.dtype,
                                               layout=layout), "Pano360EquirectToCubemap", "face_size", erp.device)
        cube = erp_to_cubemap(erp, face, layout, mode=mode, callback=progress_callback(1))
        return io.NodeOutput(_to_image(cube, mode))


class Pano360CubemapToEquirect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360CubemapToEquirect",
            display_name="Pano360 Cubemap → Equirect",
            category=CATEGORY,
            description=("Cube maps (faces F R B L U D) back to equirect panoramas. Samples blend across cube edges "
                         "and wrap across the 0/360° seam."),
            inputs=[
                io.Image.Input("cubemap", tooltip="stack: 6*T square faces (face-major); horizon: [T, w, 6w]; "
                                                  "dice: [T, 3w, 4w]."),
                io.Combo.Input("layout", options=["stack", "horizon", "dice"], default="stack",
                               tooltip="Layout of the input cube map."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE // 2, step=8,
                             tooltip="Output panorama height in pixels (width 2 x height); 0 uses 2 x face width."),
                _mode_input(),
            ],
            outputs=[io.Image.Output("panorama", tooltip="T equirect frames.")],
        )

    @classmethod
    def execute(cls, cubemap, layout, height, mode) -> io.NodeOutput:
        node = "Pano360CubemapToEquirect"
        check_widgets(cls, layout=layout, height=height, mode=mode)   # an unknown layout was a bare KeyError
        x = image_to_bchw(cubemap, node, "cubemap")
        face = {"stack": x.shape[-1], "horizon": x.shape[-2], "dice": x.shape[-2] // 3}[layout]
        frames = max(1, x.shape[0] // 6) if layout == "stack" else x.shape[0]
        try:
            estimate = estimate_cubemap_to_erp(frames, x.shape[1], face, height or 2 * face, mode, x.dtype)
        except ValueError as e:
            raise NodeInputError(node, "cubemap", f"a '{layout}' cube map", str(e)) from None
        require_memory(estimate, node, "height", x.device)
        try:
            erp = cubemap_to_erp(x, height or 2 * face, layout, mode=mode, callback=progress_callback(1))
        except ValueError as e:
            raise NodeInputError(node, "cubemap", f"a '{layout}' cube map", str(e)) from None
        return io.NodeOutput(_to_image(erp, mode))


# --------------------------------------------------------------------------- rotation


class Pano360RotateEquirect(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360RotateEquirect",
            display_name="Pano360 Rotate Equirect",
            category=CATEGORY,
            description=("Re-centres panoramas on a rotated camera: the output's centre shows what the camera "
                         "(yaw, pitch, roll) sees; a pure yaw shifts the image sideways."),
            inputs=[
                io.Image.Input("panorama", tooltip="Equirect image or frames, width == 2 x height."),
                io.Float.Input("yaw", default=0.0, min=-360.0, max=360.0, step=1.0,
                               tooltip="New forward direction, yaw. " + ANGLE_CONVENTION),
                io.Float.Input("pitch", default=0.0, min=-180.0, max=180.0, step=1.0,
                               tooltip="New forward direction, pitch. " + ANGLE_CONVENTION),
                io.Float.Input("roll", default=0.0, min=-180.0, max=180.0, step=1.0,
                               tooltip="Camera roll. " + ANGLE_CONVENTION),
                _mode_input(),
            ],
            outputs=[io.Image.Output("rotated", tooltip="The rotated panoramas, same size.")],
        )

    @classmethod
    def execute(cls, panorama, yaw, pitch, roll, mode) -> io.NodeOutput:
        check_widgets(cls, yaw=yaw, pitch=pitch, roll=roll, mode=mode)   # NaN/inf rotated into a black image
        erp = _panorama(panorama, "Pano360RotateEquirect")
        require_memory(estimate_rotate_erp(erp.shape[0], erp.shape[1], erp.shape[-2:], mode, erp.dtype),
                       "Pano360RotateEquirect", "panorama", erp.device)
        out = rotate_erp(erp, math.radians(yaw), math.radians(pitch), math.radians(roll), mode=mode,
                         callback=progress_callback(1))
        return io.NodeOutput(_to_image(out, mode))


class Pano360SeamCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Pano360SeamCheck",
            display_name="Pano360 Seam Check",
            category=CATEGORY,
            description=("Rolls panoramas by half their width so the 0/360° seam (left/right border) sits in the "
                         "middle, where a visible discontinuity is easy to spot."),
            inputs=[io.Image.Input("panorama", tooltip="Equirect image or frames, width == 2 x height.")],
            outputs=[io.Image.Output("rolled", tooltip="The panoramas shifted by W/2 columns (seam in the centre).")],
        )

    @classmethod
    def execute(cls, panorama) -> io.NodeOutput:
        erp = _panorama(panorama, "Pano360SeamCheck")
        return io.NodeOutput(roll_erp(erp, erp.shape[-1] // 2).movedim(1, -1).contiguous())


NODES = [
    Pano360Rig,
    Pano360EquirectToPerspective,
    Pano360EquirectStitcher,
    Pano360EquirectToCubemap,
    Pano360CubemapToEquirect,
    Pano360RotateEquirect,
    Pano360SeamCheck,
]
