"""Pano360 nodes: Argus, perspective video -> 360° video with Stable Video Diffusion.

The maths lives in ``pipelines/argus.py``, ``pipelines/camera_path.py``,
``pipelines/argus_windows.py`` and ``models/argus_unet.py``; these nodes convert ComfyUI's data
and call them.  See docs/argus.md.
"""

from __future__ import annotations

import math
import os

import torch

from ..models.argus_unet import (
    SVD_HEAD_CHANNELS,
    convert_diffusers_svd_unet_keys,
    head_channels_from_config,
    is_diffusers_svd_unet,
    read_unet_source,
    strip_sgm_prefix,
)
from ..pipelines.argus import (
    ARGUS_ERP_HW,
    ARGUS_FPS,
    ARGUS_INPUT_LONG_SIDE,
    ARGUS_MOTION_BUCKET,
    ARGUS_NOISE_AUG,
    ArgusConditioning,
    argus_conditioning,
    place_frames_on_sphere,
    resize_long_side,
)
from ..pipelines.argus_windows import ARGUS_OVERLAP, ARGUS_WINDOW, generate_long_video, plan_windows, window_seed
from ..pipelines.camera_path import (
    CameraPath,
    constant_path,
    estimate_rotation_path,
    path_from_argus_motion,
    path_from_keyframes,
    path_from_megasam_npz,
    path_from_realestate10k,
)
from ..pipelines.seam import ARGUS_BLEND_RATIO, seam_blended_decode
from . import _host
from ._common import (ANGLE_CONVENTION, NodeInputError, bchw_to_image, describe, image_to_bchw, known,
                      mask_to_bhw, widget_errors)
from ._host import io, log, progress_callback

CATEGORY = "Pano360/argus"
CAMERA_PATH = io.Custom("PANO360_CAMERA_PATH")
# models/argus/<name>/unet/... (diffusers folders) or single files; the files of
# models/diffusion_models are listed under it too.
ARGUS_FOLDER = "argus"

# Perspective Video -> Equirect output size limits (px): a 64 px wide sphere up to 8K.
ERP_WIDTH_RANGE = (64, 8192)
ERP_HEIGHT_RANGE = (32, 4096)

PATH_SOURCES = ("manual_fov", "keyframes", "argus_motion_txt", "megasam_npz", "realestate10k_txt", "estimate_from_video")

_host.register_model_folder(ARGUS_FOLDER)
_host.share_model_folder(ARGUS_FOLDER, "diffusion_models")


def _input_file(node: str, name: str, value: str) -> str:
    """A file inside ComfyUI's input folder (a path relative to it); NodeInputError otherwise."""
    expected = "an existing file inside ComfyUI's input folder (a path relative to it)"
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
            display_name="Camera Path (Argus)",
            category=CATEGORY,
            description=(
                "Per-frame camera rotation (yaw, pitch, roll) and horizontal FOV of a perspective video, for "
                "placing its frames on the sphere. Sources: a fixed FOV with no motion; keyframes; Argus's "
                "motion/fov txt files; a MegaSaM npz; a RealEstate10K camera file; or an estimate from the "
                "video itself (rotation-only alignment of consecutive frames, no extra models). Poses from "
                "files are made relative to frame 0, as Argus expects."
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
                io.String.Input("keyframes", default="0:yaw=0,pitch=0,roll=0", multiline=True,
                                tooltip="For source keyframes: 'frame:name=value,...' separated by ';', names yaw, pitch, "
                                        "roll, fov; linear in between. " + ANGLE_CONVENTION),
                io.String.Input("file", default="",
                                tooltip="For the file sources: path of the motion txt (3 rows pitch, yaw, roll in radians), "
                                        "MegaSaM npz, or RealEstate10K txt; a path relative to ComfyUI's input folder "
                                        "(files outside it are refused)."),
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
                path_from_keyframes(keyframes, 1)
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
                yaw_offset_deg, video=None) -> io.NodeOutput:
        node = cls.__name__
        frames = image_to_bchw(video, node, "video") if video is not None else None
        n = frames.shape[0] if frames is not None else num_frames
        try:
            if source == "manual_fov":
                path = constant_path(n, fov_deg)
            elif source == "keyframes":
                path = path_from_keyframes(keyframes, n, fov_deg)
            elif source == "argus_motion_txt":
                motion = _read_text(_input_file(node, "file", file))
                fov = _read_text(_input_file(node, "fov_file", fov_file)) if fov_file else None
                path = path_from_argus_motion(motion, fov, fov_deg)
            elif source == "megasam_npz":
                path = path_from_megasam_npz(_input_file(node, "file", file), pose_conversion)
            elif source == "realestate10k_txt":
                path = path_from_realestate10k(_read_text(_input_file(node, "file", file)), pose_conversion)
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


class Pano360PerspectiveToEquirect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360PerspectiveToEquirect",
            display_name="Perspective Video → Equirect (Argus)",
            category=CATEGORY,
            description=(
                "Places each frame of a perspective video on the sphere at its camera rotation and FOV: one "
                "equirect frame per input frame, black where the frame does not reach, and a mask of where it "
                "does (Argus's conditioning input)."
            ),
            inputs=[
                io.Image.Input("frames", tooltip="The perspective video frames [T,H,W,C], 0..1."),
                CAMERA_PATH.Input("camera_path", tooltip="Per-frame rotation and FOV (Camera Path node). " + ANGLE_CONVENTION),
                io.Int.Input("width", default=ARGUS_ERP_HW[1], min=ERP_WIDTH_RANGE[0], max=ERP_WIDTH_RANGE[1], step=16,
                             tooltip="Equirect width in pixels (2 × height). Argus generates 1024 × 512."),
                io.Int.Input("height", default=ARGUS_ERP_HW[0], min=ERP_HEIGHT_RANGE[0], max=ERP_HEIGHT_RANGE[1], step=8,
                             tooltip="Equirect height in pixels. Argus generates 512 (a multiple of 8 for the VAE)."),
                io.Int.Input("input_long_side", default=ARGUS_INPUT_LONG_SIDE, min=0, max=8192,
                             tooltip="Frames are first resized so their longer side is this many pixels (antialiased), "
                                     "as Argus does (512); 0 places them at their own size."),
            ],
            outputs=[
                io.Image.Output("equirect", tooltip="Masked equirect frames [T,H,W,C]: the input frames on the sphere, black elsewhere."),
                io.Mask.Output("mask", tooltip="[T,H,W], 1 where the input frame covers the sphere, 0 elsewhere."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width=None, height=None):
        # ComfyUI skips its min/max checks for inputs named here, so the ranges are checked too;
        # a linked input arrives as None and is checked when the node runs.
        if message := widget_errors(cls.define_schema(), width=width, height=height):
            return message
        if known(width, height) and width != 2 * height:
            return f"width must be 2 × height for an equirect, got {width}×{height}"
        return True

    @classmethod
    def execute(cls, frames, camera_path, width, height, input_long_side) -> io.NodeOutput:
        x = image_to_bchw(frames, cls.__name__, "frames")
        if not isinstance(camera_path, CameraPath):
            raise NodeInputError(cls.__name__, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
        path = camera_path.fit_to(x.shape[0])
        x = resize_long_side(x.float(), input_long_side)
        erp, mask = place_frames_on_sphere(x, path, (height, width))
        return io.NodeOutput(bchw_to_image(erp), mask[:, 0].contiguous())


class Pano360ArgusUNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360ArgusUNetLoader",
            display_name="Argus UNet Loader",
            category=CATEGORY,
            description=(
                "Loads the released Argus UNet (a diffusers UNetSpatioTemporalConditionModel, fine-tuned SVD) as a "
                "ComfyUI MODEL: the diffusers keys are renamed to ComfyUI's SVD layout, so ComfyUI's samplers and "
                "memory management apply. Put the folder in models/argus/<name>/unet/ (config.json + "
                "diffusion_pytorch_model.safetensors) or a single safetensors file in models/argus or "
                "models/diffusion_models. Take VAE and CLIP vision from svd.safetensors (Image Only Checkpoint Loader)."
            ),
            inputs=[
                io.Combo.Input("unet_name", options=_host.model_file_list(ARGUS_FOLDER),
                               tooltip="The Argus UNet weights: a file in models/argus (a diffusers folder's "
                                       "<name>/unet/diffusion_pytorch_model.safetensors, or a single file); files in "
                                       "models/diffusion_models are listed too."),
                io.Combo.Input("weight_dtype", options=["default", "fp16", "bf16", "fp32"], default="default",
                               tooltip="Weight precision in memory; default lets ComfyUI choose for your device."),
            ],
            outputs=[io.Model.Output(tooltip="The Argus UNet as an SVD img2vid MODEL (V-prediction EDM).")],
        )

    @classmethod
    def execute(cls, unet_name, weight_dtype) -> io.NodeOutput:
        weights, config = read_unet_source(_host.model_file_path(ARGUS_FOLDER, unet_name))
        dtype = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[weight_dtype]
        return io.NodeOutput(load_argus_unet(weights, config, dtype))


def load_argus_unet(weights: str, config: dict | None = None, dtype=None):
    """Load a diffusers or SGM SVD UNet file as a ComfyUI MODEL (used by the loader and tests)."""
    source = os.path.basename(weights)
    sd = _host.load_torch_file(weights)
    try:
        if is_diffusers_svd_unet(sd.keys()):
            sd = convert_diffusers_svd_unet_keys(sd, source=source)
        else:
            sd = strip_sgm_prefix(sd)
        head = head_channels_from_config(config) if config else SVD_HEAD_CHANNELS
        log.info("Argus UNet %s: %d tensors, head width %d", source, len(sd), head)
        return _host.load_svd_unet_state_dict(sd, head_channels=head, dtype=dtype, source=source)
    except ValueError as err:
        raise NodeInputError("Pano360ArgusUNetLoader", "unet_name", "a complete SVD UNet", str(err)) from err


def _conditioning_lists(cond: ArgusConditioning):
    def one(c: ArgusConditioning):
        return [[c.clip_tokens, {"concat_latent_image": c.concat_latents, "fps": c.fps,
                                 "motion_bucket_id": c.motion_bucket_id, "augmentation_level": c.augmentation_level}]]

    return one(cond), one(cond.unconditional())


def _encoders(clip_vision, vae):
    def encode_image(frames_bchw):  # Argus: straight resize to 224 × 224, no crop
        return clip_vision.encode_image(frames_bchw.movedim(1, -1), crop=False).image_embeds

    def encode_latent(erp_bchw):
        return vae.encode(erp_bchw.movedim(1, -1)[..., :3])

    return encode_image, encode_latent


def _check_video_inputs(node, equirect, mask, frames):
    erp = image_to_bchw(equirect, node, "equirect")
    m = mask_to_bhw(mask, node, "mask")
    pers = image_to_bchw(frames, node, "frames")
    T, _, H, W = erp.shape
    if m.shape != (T, H, W):
        raise NodeInputError(node, "mask", f"[{T},{H},{W}] (one per equirect frame)", describe(mask))
    if pers.shape[0] != T:
        raise NodeInputError(node, "frames", f"{T} frames (as many as equirect)", describe(frames))
    if W != 2 * H or H % 8:
        raise NodeInputError(node, "equirect", "width 2 × height and height a multiple of 8", f"{W}×{H}")
    return erp, m[:, None].to(erp), pers


class Pano360ArgusConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360ArgusConditioning",
            display_name="Argus Conditioning",
            category=CATEGORY,
            description=(
                "Argus's per-frame conditioning for the SVD UNet: each masked equirect frame is noise-augmented "
                "inside its mask and VAE-encoded (concatenated to the noisy latent), each perspective frame gives "
                "one CLIP image token (T tokens of cross-attention), plus SVD's fps / motion / augmentation ids. "
                "The negative is all zeros, as in Argus. Sample with KSampler, euler + karras, 25 steps, CFG 3."
            ),
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="CLIP vision of svd.safetensors (Image Only Checkpoint Loader)."),
                io.Vae.Input("vae", tooltip="VAE of svd.safetensors."),
                io.Image.Input("equirect", tooltip="Masked equirect frames [T,H,W,C] from Perspective Video → Equirect."),
                io.Mask.Input("mask", tooltip="[T,H,W], 1 where the input frame covers the sphere."),
                io.Image.Input("frames", tooltip="The perspective frames [T,h,w,C] (CLIP tokens; resized to 224 × 224 without crop)."),
                io.Int.Input("fps", default=ARGUS_FPS, min=1, max=1024,
                             tooltip="SVD's fps id (the model sees fps − 1). Argus samples frames at about 5 fps."),
                io.Int.Input("motion_bucket_id", default=ARGUS_MOTION_BUCKET, min=1, max=1023,
                             tooltip="SVD's motion bucket; Argus uses 127."),
                io.Float.Input("noise_aug", default=ARGUS_NOISE_AUG, min=0.0, max=1.0, step=0.005,
                               tooltip="Noise added inside the mask before encoding, in [−1, 1] pixel units (Argus 0.02); "
                                       "also passed to the model as its augmentation id."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the augmentation noise."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="Per-frame CLIP tokens + concat latents + time ids."),
                io.Conditioning.Output("negative", tooltip="Zeros for CLIP tokens and concat latents (Argus's unconditional branch)."),
                io.Latent.Output("latent", tooltip="Empty latent [T,4,H/8,W/8] to sample."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision, vae, equirect, mask, frames, fps, motion_bucket_id, noise_aug, seed) -> io.NodeOutput:
        erp, m, pers = _check_video_inputs(cls.__name__, equirect, mask, frames)
        enc_image, enc_latent = _encoders(clip_vision, vae)
        cond = argus_conditioning(enc_image, enc_latent, erp, m, pers, noise_aug=noise_aug, fps=fps,
                                  motion_bucket_id=motion_bucket_id,
                                  generator=torch.Generator().manual_seed(seed))
        positive, negative = _conditioning_lists(cond)
        T, _, H, W = erp.shape
        latent = torch.zeros([T, 4, H // 8, W // 8])
        return io.NodeOutput(positive, negative, {"samples": latent})


class Pano360ArgusLongVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360ArgusLongVideo",
            display_name="Argus Long Video Sampler",
            category=CATEGORY,
            description=(
                "Argus for videos longer than one window: samples overlapping windows (25 frames, 5 overlapping) "
                "one after another. Each window after the first is conditioned, in its first frames, on the "
                "previous window's decoded full-360° frames; overlapping latents are cross-faded. Output: the "
                "latents of the whole video, for Seam-Blended VAE Decode. Connect a Seam Roll Patch model."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The Argus UNet (Argus UNet Loader), usually through Seam Roll Patch."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP vision of svd.safetensors."),
                io.Vae.Input("vae", tooltip="VAE of svd.safetensors (encodes conditioning, decodes between windows)."),
                io.Image.Input("equirect", tooltip="Masked equirect frames [T,H,W,C] from Perspective Video → Equirect."),
                io.Mask.Input("mask", tooltip="[T,H,W], 1 where the input frame covers the sphere."),
                io.Image.Input("frames", tooltip="The perspective frames [T,h,w,C] (CLIP tokens)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed; window i uses seed + i (wrapping at 2^64)."),
                io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Sampling steps per window (Argus: 25)."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, tooltip="Guidance scale (Argus: 3)."),
                io.Combo.Input("sampler_name", options=_host.sampler_names(), default="euler",
                               tooltip="Sampler (Argus: euler, deterministic)."),
                io.Combo.Input("scheduler", options=_host.scheduler_names(), default="karras",
                               tooltip="Noise schedule (Argus: karras over SVD's sigma 0.002–700)."),
                io.Int.Input("window", default=ARGUS_WINDOW, min=2, max=128, tooltip="Frames per window (Argus: 25)."),
                io.Int.Input("overlap", default=ARGUS_OVERLAP, min=0, max=64,
                             tooltip="Frames shared by consecutive windows (Argus: 5); must be below window."),
                io.Int.Input("fps", default=ARGUS_FPS, min=1, max=1024, tooltip="SVD's fps id (the model sees fps − 1)."),
                io.Int.Input("motion_bucket_id", default=ARGUS_MOTION_BUCKET, min=1, max=1023, tooltip="SVD's motion bucket (127)."),
                io.Float.Input("noise_aug", default=ARGUS_NOISE_AUG, min=0.0, max=1.0, step=0.005,
                               tooltip="Noise inside the mask before encoding, [−1, 1] units (Argus 0.02)."),
                io.Float.Input("blend_ratio", default=ARGUS_BLEND_RATIO, min=2.0, max=256.0, step=1.0,
                               tooltip="Seam-blended decoding of each window's frames that condition the next (ramps width / ratio px)."),
            ],
            outputs=[io.Latent.Output("latent", tooltip="Latents of all frames [T,4,H/8,W/8], windows cross-faded.")],
        )

    @classmethod
    def validate_inputs(cls, window=None, overlap=None):
        # No **kwargs: ComfyUI would then skip its min/max/list checks of every input (steps,
        # sampler_name, ...); window and overlap, named here, are range-checked here. A linked
        # input arrives as None and is checked when the node runs.
        if message := widget_errors(cls.define_schema(), window=window, overlap=overlap):
            return message
        if known(window, overlap) and (window < 2 or not 0 <= overlap < window):
            return f"need window >= 2 and 0 <= overlap < window, got overlap {overlap} and window {window}"
        return True

    @classmethod
    def execute(cls, model, clip_vision, vae, equirect, mask, frames, seed, steps, cfg, sampler_name, scheduler,
                window, overlap, fps, motion_bucket_id, noise_aug, blend_ratio) -> io.NodeOutput:
        erp, m, pers = _check_video_inputs(cls.__name__, equirect, mask, frames)
        enc_image, enc_latent = _encoders(clip_vision, vae)
        windows = plan_windows(erp.shape[0], window, overlap)
        log.info("Argus long video: %d frames in %d windows", erp.shape[0], len(windows))

        def sample_window(cond_erp, cond_mask, cond_frames, i):
            cond = argus_conditioning(enc_image, enc_latent, cond_erp, cond_mask, cond_frames, noise_aug=noise_aug,
                                      fps=fps, motion_bucket_id=motion_bucket_id,
                                      generator=torch.Generator().manual_seed(window_seed(seed, i)))
            positive, negative = _conditioning_lists(cond)
            n, _, H, W = cond_erp.shape
            empty = torch.zeros([n, 4, H // 8, W // 8])
            return _host.sample_latent(model, window_seed(seed, i), steps, cfg, sampler_name, scheduler, positive, negative, empty)

        def decode(latents):
            return seam_blended_decode(vae.decode, latents, blend_ratio).movedim(-1, 1)

        latents = generate_long_video(erp, m, pers, sample_window, decode, window=window, overlap=overlap)
        return io.NodeOutput({"samples": latents})


NODES = [Pano360CameraPath, Pano360PerspectiveToEquirect, Pano360ArgusUNetLoader, Pano360ArgusConditioning,
         Pano360ArgusLongVideo]
