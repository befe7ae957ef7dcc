"""Pano360 nodes: Look Beyond stage 2 (panorama -> perspective loop + RealEstate10K poses) and
stage 3 (keyframe-inbetweened scene video on SVD-XT: model loader and sampler).

The maths and file writing live in ``pipelines/lookbeyond/perspective_loop.py`` (poses through
``cameras/formats/realestate10k.py``); see docs/lookbeyond.md.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F

from ..cameras import CameraPath
from ..models.keyframe_unet import DELTA_LEAVES, read_delta_tensors, temporal_attention_delta, temporal_attn1_layers
from ..models.lookbeyond_pose import POSE_CHECKPOINT_FILES, LookBeyondPoseConditioner, load_pose_conditioner
from ..models.svd_unet import read_unet_source
from ..pipelines.lookbeyond.inbetween import (KEYFRAME_HOOK_KEY, LOOKBEYOND_NUM_FRAMES, LOOKBEYOND_STEPS,
                                              inbetween_poses, inbetween_schedule, keyframe_conditioning,
                                              two_pass_predictor)
from ..sampling.hooks import HookedAttention, k_diffusion_euler
from . import _host
from ._bundles import INBETWEEN_SETTINGS, SEED_MAX, InbetweenSettings
from ..cameras.formats.realestate10k import format_rows
from ..media.atomic import next_counter_name, next_free_folder
from ..pipelines.lookbeyond.perspective_loop import POSE_HEADER, loop_cameras, write_frame_folders
from ..projection import erp_to_rig, rig_preset
from ..projection.geometry import LOOKBEYOND_FOV, LOOKBEYOND_NUM, LOOKBEYOND_SIZE
from ..projection.memory import estimate_rig
from ._common import (ANGLE_CONVENTION, NodeInputError, bchw_to_image, check_widgets, describe, equirect_to_bchw,
                      image_to_bchw, node_id, output_path, widget_errors)
from ._host import io, log, output_directory, progress_callback
from .cameras import CAMERA_PATH
from .output import comfy_metadata
from .projection import require_memory
from .settings import bundle

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


# ---------------------------------------------------------------- stage 3: keyframe inbetweening

# models/lookbeyond/: svd_keyframe_interpolation's fine-tuned UNet and Look Beyond checkpoints
# (<ckpt>/unet/diffusion_pytorch_model.safetensors + model_{1,2,3}_state_dict.pth); the files of
# models/diffusion_models are listed too.
LOOKBEYOND_FOLDER = "lookbeyond"
NONE = "none"
MODES = ("temporal_attn_delta", "full", "base_only")
POSE_ENCODER = io.Custom("PANO360_LOOKBEYOND_POSE")
INBETWEEN = io.Custom(INBETWEEN_SETTINGS)
# Key of the backward-pass UNet attached to the MODEL in full mode (set_additional_models).
BACKWARD_MODEL_KEY = "pano360_keyframe_backward"
# SVD-XT's resolution; Look Beyond's videogen.py uses 512 x 512.
LOOKBEYOND_SIZE_PX = 512
VAE_FACTOR = 8  # SVD's VAE downsamples by 8 (and the pose encoder's PixelUnshuffle(8))
MIN_SIZE_PX = 16  # ComfyUI's SVD_img2vid_Conditioning width/height minimum (comfy_extras/nodes_video_model.py)

_host.register_model_folder(LOOKBEYOND_FOLDER)
_host.share_model_folder(LOOKBEYOND_FOLDER, "diffusion_models")


def _files(folder: str) -> list[str]:
    return [NONE] + _host.model_file_list(folder)


def _keyframe_patches(model, alternate: dict | None, node: str) -> dict:
    """Object patches routing every temporal attn1 of an SVD MODEL through HookedAttention."""
    layers = temporal_attn1_layers(_host.diffusion_model_keys(model))
    if not layers:
        raise NodeInputError(node, "model", "an SVD MODEL (Image Only Checkpoint Loader with svd_xt.safetensors)",
                             "a model without temporal attention layers")
    patches = {}
    for layer in layers:
        name = f"diffusion_model.{layer}.attn1"
        extra = None if alternate is None else {leaf[len("attn1."):]: alternate[f"{layer}.{leaf}"] for leaf in DELTA_LEAVES}
        patches[name] = HookedAttention(_host.model_object(model, name), layer, KEYFRAME_HOOK_KEY, extra)
    return patches


def _is_prepared(model) -> bool:
    return any(isinstance(obj, HookedAttention) and obj.key == KEYFRAME_HOOK_KEY
               for obj in _host.object_patches(model).values())


def _base_delta_tensors(model) -> dict:
    """The MODEL's own temporal attn1 to_v / to_out.0 tensors, SGM keys."""
    out = {}
    for layer in temporal_attn1_layers(_host.diffusion_model_keys(model)):
        for leaf in DELTA_LEAVES:
            module, param = f"{layer}.{leaf}".rsplit(".", 1)
            out[f"{layer}.{leaf}"] = getattr(_host.model_object(model, f"diffusion_model.{module}"), param).detach()
    return out


def load_pose_weights(path: str, node: str, input_name: str) -> LookBeyondPoseConditioner:
    """Look Beyond's three pose state dicts from the folder of ``path`` (any one of them)."""
    folder = os.path.dirname(path)
    parts = {}
    for name, filename in POSE_CHECKPOINT_FILES.items():
        full = os.path.join(folder, filename)
        if not os.path.isfile(full):
            raise NodeInputError(node, input_name, f"Look Beyond's {', '.join(POSE_CHECKPOINT_FILES.values())} "
                                 "side by side", f"no {filename} in {folder}")
        parts[name] = _host.load_torch_file(full)
    try:
        return load_pose_conditioner(parts, source=folder)
    except ValueError as err:
        raise NodeInputError(node, input_name, "Look Beyond's pose encoder, reducer and fuser", str(err)) from err


class Pano360KeyframeModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360KeyframeModelLoader",
            display_name="Keyframe Inbetween Model (Look Beyond)",
            category=CATEGORY,
            description=(
                "Prepares SVD-XT for keyframe inbetweening (svd_keyframe_interpolation, Look Beyond stage 3): routes its "
                "temporal self-attention through the two-pass control and adds the backward pass's weights. "
                "temporal_attn_delta (the reference's default): adds (fine-tuned − SVD img2vid) of the temporal "
                "attention's value/output projections, one UNet in memory. full: the fine-tuned (or Look Beyond's) "
                "UNet runs the backward pass whole, a second UNet in memory. base_only: no fine-tuned weights. "
                "Optionally loads Look Beyond's pose encoder. Connect the MODEL of Image Only Checkpoint Loader "
                "(svd_xt.safetensors)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="SVD-XT from Image Only Checkpoint Loader (svd_xt.safetensors): the forward pass's UNet."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="temporal_attn_delta: xt + (finetuned − reference) on temporal attn1 to_v / to_out.0 "
                                       "(keyframe_interpolation.py); full: the fine-tuned UNet whole for the backward pass; "
                                       "base_only: SVD-XT in both passes."),
                io.Combo.Input("finetuned_unet", options=_files(LOOKBEYOND_FOLDER),
                               tooltip="svd_keyframe_interpolation's fine-tuned UNet (diffusers folder in models/lookbeyond: "
                                       "pick <name>/unet/diffusion_pytorch_model.safetensors) or Look Beyond's "
                                       "checkpoint-N/unet/…; files in models/diffusion_models are listed too."),
                io.Combo.Input("reference_unet", options=_files(LOOKBEYOND_FOLDER),
                               tooltip="For temporal_attn_delta: SVD img2vid in models/lookbeyond (svd.safetensors, the "
                                       "14-frame model the fine-tuned UNet started from; a link to "
                                       "models/checkpoints/svd.safetensors is enough). Only 48 tensors are read."),
                io.Combo.Input("pose_weights", options=_files(LOOKBEYOND_FOLDER),
                               tooltip="Optional Look Beyond pose encoder, listed from the lookbeyond model folder: pick "
                                       "model_2_state_dict.pth of a checkpoint folder; model_1 (reducer) and model_3 (fuser) are read beside it. none: no pose "
                                       "conditioning (the camera path still weights the fusion)."),
            ],
            outputs=[
                io.Model.Output("keyframe_model", tooltip="SVD-XT with the keyframe attention control (and the backward pass's weights)."),
                POSE_ENCODER.Output("pose_encoder", tooltip="Look Beyond's pose conditioner, or nothing when pose_weights is none."),
            ],
        )

    @classmethod
    def execute(cls, model, mode, finetuned_unet, reference_unet, pose_weights) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, mode=mode, finetuned_unet=finetuned_unet, reference_unet=reference_unet,
                      pose_weights=pose_weights)
        for name, value in (("finetuned_unet", finetuned_unet), ("reference_unet", reference_unet)):
            needed = mode != "base_only" and (name == "finetuned_unet" or mode == "temporal_attn_delta")
            if needed and value == NONE:
                raise NodeInputError(node, name, f"a UNet file for mode {mode}", "none")
        if mode == "temporal_attn_delta":
            out = _host.with_object_patches(model, _keyframe_patches(model, cls._merged(model, finetuned_unet, reference_unet), node))
        elif mode == "full":
            weights, config = read_unet_source(_host.model_file_path(LOOKBEYOND_FOLDER, finetuned_unet))
            from .argus import load_argus_unet

            backward = load_argus_unet(weights, config, dtype=_host.model_dtype(model), node=node, input_name="finetuned_unet")
            if temporal_attn1_layers(_host.diffusion_model_keys(backward)) != temporal_attn1_layers(_host.diffusion_model_keys(model)):
                raise NodeInputError(node, "finetuned_unet", "the same UNet architecture as model", "other temporal layers")
            backward = _host.with_object_patches(backward, _keyframe_patches(backward, None, node))
            out = _host.with_attached_models(_host.with_object_patches(model, _keyframe_patches(model, None, node)),
                                             BACKWARD_MODEL_KEY, [backward])
        else:
            out = _host.with_object_patches(model, _keyframe_patches(model, None, node))
        pose = None
        if pose_weights != NONE:
            pose = load_pose_weights(_host.model_file_path(LOOKBEYOND_FOLDER, pose_weights), node, "pose_weights")
        log.info("Keyframe inbetween model: %s, pose encoder %s", mode, "loaded" if pose is not None else "none")
        return io.NodeOutput(out, pose)

    @staticmethod
    def _merged(model, finetuned_unet: str, reference_unet: str) -> dict:
        node = "Pano360KeyframeModelLoader"
        sources = {}
        for name, value in (("finetuned_unet", finetuned_unet), ("reference_unet", reference_unet)):
            path = _host.model_file_path(LOOKBEYOND_FOLDER, value)
            try:
                sources[name] = read_delta_tensors(path, load_file=_host.load_torch_file)
            except ValueError as err:
                raise NodeInputError(node, name, "an SVD UNet or SVD checkpoint", str(err)) from err
        base = _base_delta_tensors(model)
        try:
            return temporal_attention_delta(base, sources["finetuned_unet"], sources["reference_unet"],
                                            sources=("model", finetuned_unet, reference_unet))
        except ValueError as err:
            blamed = "reference_unet" if err.args and str(err).startswith(reference_unet) else "finetuned_unet"
            raise NodeInputError(node, blamed, "a UNet of SVD's architecture", str(err)) from err


def _frame(image, node: str, name: str) -> torch.Tensor:
    x = image_to_bchw(image, node, name)[:, :3]
    if x.shape[0] != 1:
        raise NodeInputError(node, name, "one image (pick a frame with Image From Batch)", f"{x.shape[0]} images")
    return x.float()


def _resized(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)


class Pano360KeyframeInbetween(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360KeyframeInbetween",
            display_name="Keyframe Inbetween (Look Beyond)",
            category=CATEGORY,
            description=(
                "Look Beyond stage 3: a video from a first and a last frame with SVD-XT keyframe inbetweening "
                "(svd_keyframe_interpolation). Each step runs the UNet forward in time from the first frame and backward "
                "from the last one, with the backward pass reusing the forward pass's temporal attention flipped, and "
                "fuses the two. A camera path (e.g. the Perspective Loop's pose.txt through Camera Path, "
                "relative_to_first off) weights the fusion by pose similarity and, with Look Beyond's pose encoder, "
                "conditions the image latents on Plücker rays. Outputs latents for VAE Decode."
            ),
            inputs=[
                io.Model.Input("model", tooltip="SVD-XT from Keyframe Inbetween Model (or straight from Image Only "
                                                "Checkpoint Loader: then both passes use SVD-XT)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP vision of the SVD checkpoint (Image Only Checkpoint Loader)."),
                io.Vae.Input("vae", tooltip="VAE of the SVD checkpoint."),
                io.Image.Input("first_frame", tooltip="The first keyframe [1,H,W,C] (e.g. frame 00000 of the Perspective Loop)."),
                io.Image.Input("last_frame", tooltip="The last keyframe [1,H,W,C], the same size as first_frame (e.g. frame 00011)."),
                io.Int.Input("num_frames", default=LOOKBEYOND_NUM_FRAMES, min=2, max=128,
                             tooltip="Frames of the video, keyframes included (Look Beyond: 14; SVD-XT was trained on 25)."),
                io.Int.Input("width", default=LOOKBEYOND_SIZE_PX, min=MIN_SIZE_PX, max=4096, step=VAE_FACTOR,
                             tooltip="Video width in pixels, a multiple of 8 (Look Beyond: 512; SVD-XT: 1024). The keyframes are resized."),
                io.Int.Input("height", default=LOOKBEYOND_SIZE_PX, min=MIN_SIZE_PX, max=4096, step=VAE_FACTOR,
                             tooltip="Video height in pixels, a multiple of 8 (Look Beyond: 512; SVD-XT: 576)."),
                io.Int.Input("steps", default=LOOKBEYOND_STEPS, min=1, max=1000,
                             tooltip="Euler steps (Look Beyond: 50). Each step costs two UNet passes."),
                io.Int.Input("seed", default=42, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Seed of the initial noise, the keyframes' noise augmentation and re-injected noise."),
                CAMERA_PATH.Input("camera_path", optional=True,
                                  tooltip="Optional cameras (Camera Path node): the frames take num_frames of its rows "
                                          "between the settings' first_pose and last_pose. " + ANGLE_CONVENTION),
                POSE_ENCODER.Input("pose_encoder", optional=True,
                                   tooltip="Optional Look Beyond pose encoder (Keyframe Inbetween Model); needs a camera path "
                                           "and at most 16 frames."),
                INBETWEEN.Input("settings", optional=True,
                                tooltip="Optional Pano360 Inbetween Settings; without it, Look Beyond's settings."),
            ],
            outputs=[io.Latent.Output("latent", tooltip="Latents of the video [num_frames,4,H/8,W/8], for VAE Decode.")],
        )

    @classmethod
    def execute(cls, model, clip_vision, vae, first_frame, last_frame, num_frames, width, height, steps, seed,
                camera_path=None, pose_encoder=None, settings=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, num_frames=num_frames, width=width, height=height, steps=steps, seed=seed)
        s = bundle(settings, InbetweenSettings, InbetweenSettings(), node, "settings")
        first, last = _frame(first_frame, node, "first_frame"), _frame(last_frame, node, "last_frame")
        if first.shape != last.shape:
            raise NodeInputError(node, "last_frame", f"the size of first_frame ({first.shape[-1]}×{first.shape[-2]})",
                                 f"{last.shape[-1]}×{last.shape[-2]}")
        if width % VAE_FACTOR or height % VAE_FACTOR:
            raise NodeInputError(node, "width" if width % VAE_FACTOR else "height", "a multiple of 8", f"{width}×{height}")
        first, last = _resized(first, height, width), _resized(last, height, width)
        poses = cls._poses(camera_path, pose_encoder, num_frames, (height, width), s, node)
        schedule = inbetween_schedule(num_frames, s.fusion == "weighted", s.min_guidance, s.max_guidance,
                                      poses.similarity() if poses is not None else None)
        # A copy on the compute device: the loader's (cached) module is not moved.
        pose = None if pose_encoder is None else (copy.deepcopy(pose_encoder).to(_host.torch_device()),
                                                  poses.rays((height, width)))
        cond = keyframe_conditioning(
            lambda f: clip_vision.encode_image(f.movedim(1, -1), crop=False).image_embeds,
            lambda f: vae.encode(f.movedim(1, -1)), first, last, noise_aug=s.noise_aug,
            generator=torch.Generator().manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF), pose=pose)
        if not _is_prepared(model):
            log.warning("Keyframe Inbetween: the model has no keyframe attention control (Keyframe Inbetween Model); "
                        "running both passes on it as given (base_only)")
            model = _host.with_object_patches(model, _keyframe_patches(model, None, node))
        backward = _host.attached_models(model, BACKWARD_MODEL_KEY)
        extra = {BACKWARD_MODEL_KEY: backward[0]} if backward else {}
        guider = _host.multi_pass_guider(model, _conds(cond, s), two_pass_predictor(schedule, BACKWARD_MODEL_KEY if backward else None), extra)
        latent = torch.zeros([num_frames, 4, height // VAE_FACTOR, width // VAE_FACTOR])
        sigmas = _host.calculate_sigmas(model, s.scheduler, steps)
        progress = _host.sampling_progress(model, steps)(0)

        def callback(step, x0, x, total_steps):
            progress(step, x0, x, total_steps)
            _host.check_interrupt()  # Cancel between steps (each step is two or more UNet passes)

        samples = _host.sample_with_guider(guider, latent, k_diffusion_euler(s.reinject, s.reinject_ratio), sigmas, seed,
                                           callback=callback)
        return io.NodeOutput({"samples": samples})

    @staticmethod
    def _poses(camera_path, pose_encoder, num_frames, hw, s: InbetweenSettings, node: str):
        if pose_encoder is not None and not isinstance(pose_encoder, LookBeyondPoseConditioner):
            raise NodeInputError(node, "pose_encoder", "Look Beyond's pose encoder (Keyframe Inbetween Model)", describe(pose_encoder))
        if camera_path is None:
            if pose_encoder is not None:
                raise NodeInputError(node, "camera_path", "a camera path for the pose encoder", "nothing")
            return None
        if not isinstance(camera_path, CameraPath):
            raise NodeInputError(node, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
        if pose_encoder is not None and num_frames > pose_encoder.config.max_frames:
            raise NodeInputError(node, "num_frames", f"at most {pose_encoder.config.max_frames} frames with Look Beyond's "
                                 "pose encoder (its frame encoding length)", str(num_frames))
        last = camera_path.num_frames - 1 if s.last_pose < 0 else s.last_pose
        try:
            return inbetween_poses(camera_path, num_frames, hw, s.first_pose, last)
        except ValueError as err:
            raise NodeInputError(node, "camera_path", f"{num_frames} cameras (one per frame) between rows "
                                 f"{s.first_pose} and {last}", str(err)) from err


def _conds(cond, s: InbetweenSettings) -> dict:
    """ComfyUI conditioning lists of both passes; the unconditional branch has a zero CLIP embedding."""
    extra = {"fps": s.fps, "motion_bucket_id": s.motion_bucket_id, "augmentation_level": s.noise_aug}
    out = {}
    for k, clip, concat, uncond in zip("12", cond.clip, cond.concat, cond.uncond_concat):
        tokens = clip[:, None].float()  # (1, 1, D)
        out[f"positive{k}"] = [[tokens, {"concat_latent_image": concat.float(), **extra}]]
        out[f"negative{k}"] = [[torch.zeros_like(tokens), {"concat_latent_image": uncond.float(), **extra}]]
    return out


NODES = [Pano360LookBeyondPerspectiveLoop, Pano360KeyframeModelLoader, Pano360KeyframeInbetween]
