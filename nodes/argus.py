"""Pano360 nodes: Argus, perspective video -> 360° video with Stable Video Diffusion.

The maths lives in ``pipelines/argus/`` (conditioning, long video), ``cameras/`` (the camera
path) and ``models/svd_unet.py`` (the UNet key converter); these nodes convert ComfyUI's data
and call them.  See docs/argus.md.
"""

from __future__ import annotations

import os

import torch

from ..cameras.path import CameraPath
from ..models.svd_unet import (
    SVD_HEAD_CHANNELS,
    convert_diffusers_svd_unet_keys,
    head_channels_from_config,
    is_diffusers_svd_unet,
    read_unet_source,
    strip_sgm_prefix,
)
from ..pipelines.argus.conditioning import (
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
from ..pipelines.argus.long_video import ARGUS_OVERLAP, ARGUS_WINDOW, generate_long_video
from ..sampling.seam import ARGUS_BLEND_RATIO, seam_blended_decode
from ..sampling.windows import plan_windows, window_seed
from . import _host
from ._bundles import SEED_MAX, SamplerSettings, WindowSettings
from ._common import (ANGLE_CONVENTION, NodeInputError, bchw_to_image, check_widgets, describe, image_to_bchw,
                      known, mask_to_bhw, node_id, widget_errors)
from ._host import io, log
from .cameras import CAMERA_PATH
from .settings import SAMPLER, WINDOWS, bundle

CATEGORY = "Pano360/argus"
# models/argus/<name>/unet/... (diffusers folders) or single files; the files of
# models/diffusion_models are listed under it too.
ARGUS_FOLDER = "argus"

# Perspective Video -> Equirect output size limits (px): a 64 px wide sphere up to 8K.
ERP_WIDTH_RANGE = (64, 8192)
ERP_HEIGHT_RANGE = (32, 4096)

# Argus's sampler settings (inference.sh / sampling_svd.py): 25 euler steps, Karras sigmas, CFG 3.
ARGUS_SAMPLING = SamplerSettings(seed=0, steps=25, cfg=3.0, sampler_name="euler", scheduler="karras")
ARGUS_WINDOWS = WindowSettings(ARGUS_WINDOW, ARGUS_OVERLAP)

_host.register_model_folder(ARGUS_FOLDER)
_host.share_model_folder(ARGUS_FOLDER, "diffusion_models")


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
        node = node_id(cls)
        check_widgets(cls, width=width, height=height, input_long_side=input_long_side)
        x = image_to_bchw(frames, node, "frames")
        if not isinstance(camera_path, CameraPath):
            raise NodeInputError(node, "camera_path", "a PANO360_CAMERA_PATH", describe(camera_path))
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
        check_widgets(cls, weight_dtype=weight_dtype)   # 'fp8' was a bare KeyError
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
        return _host.build_model(sd, "SVD_img2vid", unet_config_overrides={"num_head_channels": int(head)},
                                 dtype=dtype, source=source, require=_svd_family)
    except ValueError as err:
        raise NodeInputError("Pano360ArgusUNetLoader", "unet_name", "a complete SVD UNet", str(err)) from err


def _svd_family(unet_config: dict) -> str | None:
    """Refuse UNets without SVD's temporal layers (ComfyUI detection's ``use_temporal_attention``)."""
    return None if unet_config.get("use_temporal_attention") else "not an SVD-family UNet (no temporal layers found)"


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
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
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
        check_widgets(cls, fps=fps, motion_bucket_id=motion_bucket_id, noise_aug=noise_aug, seed=seed)
        erp, m, pers = _check_video_inputs(node_id(cls), equirect, mask, frames)
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
                SAMPLER.Input("settings", optional=True,
                              tooltip="Seed, steps, CFG, sampler, scheduler (Pano360 Sampler Settings); window i uses "
                                      "seed + i. Not connected: Argus's 25 euler steps, Karras sigmas, CFG 3, seed 0."),
                WINDOWS.Input("window_settings", optional=True,
                              tooltip="Frames per window and overlap (Pano360 Window Settings). Not connected: Argus's "
                                      "25-frame windows with 5 overlapping."),
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
    def execute(cls, model, clip_vision, vae, equirect, mask, frames, fps, motion_bucket_id, noise_aug, blend_ratio,
                settings=None, window_settings=None) -> io.NodeOutput:
        node = node_id(cls)
        check_widgets(cls, fps=fps, motion_bucket_id=motion_bucket_id, noise_aug=noise_aug, blend_ratio=blend_ratio)
        sampling = bundle(settings, SamplerSettings, ARGUS_SAMPLING, node, "settings")
        win = bundle(window_settings, WindowSettings, ARGUS_WINDOWS, node, "window_settings")
        window, overlap = win.window, win.overlap
        erp, m, pers = _check_video_inputs(node, equirect, mask, frames)
        enc_image, enc_latent = _encoders(clip_vision, vae)
        windows = plan_windows(erp.shape[0], window, overlap)
        log.info("Argus long video: %d frames in %d windows", erp.shape[0], len(windows))

        def sample_window(cond_erp, cond_mask, cond_frames, i):
            cond = argus_conditioning(enc_image, enc_latent, cond_erp, cond_mask, cond_frames, noise_aug=noise_aug,
                                      fps=fps, motion_bucket_id=motion_bucket_id,
                                      generator=torch.Generator().manual_seed(window_seed(sampling.seed, i)))
            positive, negative = _conditioning_lists(cond)
            n, _, H, W = cond_erp.shape
            empty = torch.zeros([n, 4, H // 8, W // 8])
            return _host.sample_latent(model, window_seed(sampling.seed, i), sampling.steps, sampling.cfg,
                                       sampling.sampler_name, sampling.scheduler, positive, negative, empty)

        def decode(latents):
            return seam_blended_decode(vae.decode, latents, blend_ratio).movedim(-1, 1)

        latents = generate_long_video(erp, m, pers, sample_window, decode, window=window, overlap=overlap)
        return io.NodeOutput({"samples": latents})


NODES = [Pano360PerspectiveToEquirect, Pano360ArgusUNetLoader, Pano360ArgusConditioning,
         Pano360ArgusLongVideo]
