"""Pano360 nodes: DiffPano, several consistent panoramas along a camera path.

Training-free on any panorama model (``Pano360DiffPanoMultiPanorama``): panorama 0 is
generated (or given); each next one holds what the nearest earlier panoramas see,
reprojected with their distances, and generates the rest, optionally with epipolar
attention to them.  Trained DiffPano modules (``Pano360DiffPanoModuleLoader`` +
``Pano360DiffPanoApplyModule``) patch an SD UNet so a stock KSampler denoises a camera
path's panoramas jointly, as in the paper.  The math is host-free in
``pipelines/diffpano/`` and ``models/diffpano_*.py``; docs/diffpano.md.
"""

from __future__ import annotations

import math

import torch

from ..models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, EpipolarViews, nearest_references
from ..models.diffpano_loader import load_epipolar
from ..pipelines.diffpano.patches import WRAPPER_KEY, EpipolarUNetWrapper, comfy_attention_blocks, extended_attention_patch
from ..pipelines.diffpano.sequence import LatentStepSampler, SequenceConfig, depth_source, generate_sequence
from ..sampling.seam import seam_blended_decode
from ..sampling.windows import window_seed
from . import _host
from ._bundles import DiffPanoSettings, SamplerSettings
from ._common import ANGLE_CONVENTION, NodeInputError, bchw_to_image, check_widgets, describe, image_to_bchw, mask_to_bhw
from ._host import io
from .cameras import CAMERA_PATH
from .settings import DIFFPANO, SAMPLER, bundle

CATEGORY = "Pano360/diffpano"
MODULE_FOLDER = "diffpano"
DIFFPANO_MODULE = io.Custom("PANO360_DIFFPANO_MODULE")
MOGE_MODEL = io.Custom("MOGE_MODEL")  # ComfyUI 0.33's Load MoGe Model output
# SD1.5 defaults for a panorama (DiffPano fine-tunes SD; steps/CFG are not published).
DEFAULT_SAMPLING = SamplerSettings(seed=0, steps=25, cfg=7.0, sampler_name="euler", scheduler="normal")
# VAE downsampling of SD / SDXL / Flux latents.
LATENT_FACTOR = 8
REFERENCE_RULES = ("nearest", "previous")


def _camera_path(path, node: str):
    from ..cameras import CameraPath

    if not isinstance(path, CameraPath):
        raise NodeInputError(node, "camera_path", "a PANO360_CAMERA_PATH (from Camera Path)", describe(path))
    if not path.has_position:
        _host.log.info("%s: the camera path has no positions; every panorama is taken at the same place", node)
    return path


def _epipolar_config(dp: DiffPanoSettings) -> EpipolarConfig:
    return EpipolarConfig(num_samples=dp.samples, num_refs=dp.num_refs, near=dp.near,
                          far=math.inf if not dp.far else dp.far)


def _attention_blocks(model, dp: DiffPanoSettings, node: str) -> list[tuple[str, int]]:
    try:
        blocks = comfy_attention_blocks(_host.diffusion_model(model))
    except ValueError as e:
        raise NodeInputError(node, "diffpano", "epipolar_attention 'off' for this model (training-free epipolar "
                             "attention needs an SD-style UNet: SD1.5, SD2.x, SDXL)", str(e)) from None
    keep = [b.block for name, b in blocks.items()
            if dp.epipolar_blocks == "all" or name.startswith("mid_block") or b.factor >= 2]
    if not keep:
        raise NodeInputError(node, "diffpano", "epipolar_blocks 'all' or epipolar_attention 'off' (no attention "
                             f"block of this UNet is in '{dp.epipolar_blocks}')",
                             f"a UNet whose attention blocks are {sorted(blocks) or 'none'}")
    return sorted(set(keep))


class Pano360DiffPanoMultiPanorama(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360DiffPanoMultiPanorama",
            display_name="DiffPano Multi-Panorama",
            category=CATEGORY,
            description=(
                "One panorama per camera of a path, consistent where they see the same things (DiffPano, training-free). "
                "Panorama 0 is generated from the prompt (or given); each next one starts from the nearest earlier "
                "panoramas reprojected to its position with their distance maps: what they see is held, only the "
                "disoccluded rest is generated, and (SD UNets) its self-attention also looks along its epipolar curves "
                "in them. Works with any panorama model (SD + a 360 LoRA, Flux + a panorama LoRA with the epipolar "
                "attention off). Decoded with the seam-blended decode."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (SD1.5/2.x/SDXL/Flux; with a 360 LoRA for best panoramas)."),
                io.Conditioning.Input("positive", tooltip="The prompt, for every panorama."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Vae.Input("vae", tooltip="The model's VAE: panoramas are decoded to reproject them and encoded to hold them."),
                CAMERA_PATH.Input("camera_path",
                                  tooltip="One camera per panorama: positions (x, y, z; keyframes or a RealEstate10K file) "
                                          "and rotations. " + ANGLE_CONVENTION),
                io.Latent.Input("latent", tooltip="An empty equirect latent of batch 1 (width = 2 x height, e.g. 1024x512 "
                                                  "for SD1.5): the size of every panorama."),
                SAMPLER.Input("settings", optional=True,
                              tooltip="Seed, steps, CFG, sampler, scheduler (Pano360 Sampler Settings); panorama i uses "
                                      "seed + i. Not connected: 25 steps, CFG 7, euler, seed 0."),
                DIFFPANO.Input("diffpano", optional=True,
                               tooltip="References, epipolar attention and distances (Pano360 DiffPano Settings). Not "
                                       "connected: 2 references, training-free epipolar attention, propagated distances."),
                io.Image.Input("first_panorama", optional=True,
                               tooltip="Use this equirect image as panorama 0 instead of generating it (resized to the latent's size)."),
                io.Mask.Input("distance", optional=True,
                              tooltip="Panorama 0's distance map (distance along each ray, in the camera path's units after "
                                      "position_scale; a MASK of any positive values). Not connected: estimated with "
                                      "moge_model, or a room of room_distance."),
                MOGE_MODEL.Input("moge_model", optional=True,
                                 tooltip="ComfyUI 0.33's MoGe model (Load MoGe Model), for depth_source 'estimate' or "
                                         "panorama 0's distances."),
                DIFFPANO_MODULE.Input("module", optional=True,
                                      tooltip="Trained DiffPano epipolar modules (DiffPano Module Loader): used instead of the "
                                              "training-free epipolar attention."),
            ],
            outputs=[
                io.Image.Output("panoramas", tooltip="The panoramas [N,H,W,3], one per camera."),
                io.Mask.Output("held", tooltip="Per panorama, the pixels taken from earlier panoramas [N,H,W] (1 = held)."),
                io.Latent.Output("latents", tooltip="The panoramas' latents [N,C,h,w] (e.g. for another decoder)."),
                io.Image.Output("distance_preview", tooltip="Each panorama's distance map as an image (near = bright, "
                                                            "1 / distance scaled to the nearest)."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, camera_path, latent, settings=None, diffpano=None,
                first_panorama=None, distance=None, moge_model=None, module=None) -> io.NodeOutput:
        node = cls.__name__
        path = _camera_path(camera_path, node)
        sampling = bundle(settings, SamplerSettings, DEFAULT_SAMPLING, node, "settings")
        dp = bundle(diffpano, DiffPanoSettings, DiffPanoSettings(), node, "diffpano")
        empty = _empty_latent(model, latent, node)
        h, w = empty.shape[-2] * LATENT_FACTOR, empty.shape[-1] * LATENT_FACTOR
        if module is not None and not isinstance(module, EpipolarAttentionSet):
            raise NodeInputError(node, "module", "a PANO360_DIFFPANO_MODULE (from DiffPano Module Loader)", describe(module))
        if dp.depth_source == "estimate" and moge_model is None:
            raise NodeInputError(node, "moge_model", "a MoGe model (Load MoGe Model) for depth_source 'estimate'", "nothing")
        first = _first_panorama(first_panorama, (h, w), node)
        first_distance = _distance(distance, (h, w), node)
        n = path.num_frames
        rotations = path.rotations(dtype=torch.float64)
        positions = path.positions(dtype=torch.float64) * dp.position_scale
        cfg = _epipolar_config(dp)
        blocks = _attention_blocks(model, dp, node) if dp.epipolar == "training_free" and module is None else []
        use_refs = module is not None or bool(blocks)
        progress = _host.sampling_progress(model, n * sampling.steps)

        def denoise(samples, noise_mask, views: EpipolarViews | None, index: int):
            patched = model
            if views is not None:
                patched = model.clone()
                if module is not None:
                    _host.add_diffusion_model_wrapper(patched, WRAPPER_KEY, EpipolarUNetWrapper(module, views, cfg))
                else:
                    attn = extended_attention_patch(views, cfg, dp.ref_logit_bias)
                    for name, number in blocks:
                        patched.set_model_attn1_replace(attn, name, number)
            return _host.sample(patched, samples, seed=window_seed(sampling.seed, index), steps=sampling.steps,
                                cfg=sampling.cfg, sampler_name=sampling.sampler_name, scheduler=sampling.scheduler,
                                positive=positive, negative=negative, noise_mask=noise_mask,
                                callback=progress(index * sampling.steps))

        def encode(image):  # (1, 3, H, W) -> raw latent
            return vae.encode(bchw_to_image(image)[..., :3]).to(empty)

        def decode(lat):  # raw latent -> (1, 3, H, W)
            return image_to_bchw(seam_blended_decode(vae.decode, lat), node, "vae")[:, :3].float()

        estimate = None
        if moge_model is not None:
            def estimate(image):  # (3, H, W) -> (1, H, W)
                return _host.moge_panorama_distance(moge_model, bchw_to_image(image[None])).float()[None].cpu()
        sampler = LatentStepSampler(encode, decode, denoise, empty, rotations, positions, use_refs, first)
        depth = depth_source(dp.depth_source, radius=dp.room_distance, first_distance=first_distance, estimate=estimate)
        seq = SequenceConfig(num_refs=dp.num_refs, latent_factor=LATENT_FACTOR, dilate_cells=dp.dilate_cells)
        with torch.no_grad():
            result = generate_sequence(n, sampler, depth, rotations, positions, seq)
        latents = torch.cat([sampler.latents[i] for i in range(n)])
        return io.NodeOutput(bchw_to_image(result.images), result.held[:, 0].float(), {"samples": latents},
                             bchw_to_image(_disparity_preview(result.distances)))


def _empty_latent(model, latent, node: str) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise NodeInputError(node, "latent", "a LATENT", describe(latent))
    samples = _host.fix_empty_latent(model, latent["samples"])
    if samples.ndim != 4 or samples.shape[0] != 1 or samples.shape[-1] != 2 * samples.shape[-2]:
        raise NodeInputError(node, "latent", "one equirect image latent [1,C,h,2h] (e.g. Empty Latent Image 1024x512)",
                             describe(samples))
    return samples


def _first_panorama(image, hw, node: str):
    if image is None:
        return None
    x = image_to_bchw(image, node, "first_panorama")[:1, :3].float()
    if tuple(x.shape[-2:]) != hw:
        x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0.0, 1.0)


def _distance(mask, hw, node: str):
    if mask is None:
        return None
    d = mask_to_bhw(mask, node, "distance")[:1].float()
    if not bool((d > 0).all()) or not bool(torch.isfinite(d).all()):
        raise NodeInputError(node, "distance", "finite positive distances everywhere", describe(mask))
    if tuple(d.shape[-2:]) != hw:
        d = torch.nn.functional.interpolate(d[None], size=hw, mode="bilinear", align_corners=False)[0]
    return d


def _disparity_preview(distances: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) distances -> (N, 3, H, W) grey, 1 / distance over its maximum per panorama."""
    inv = 1.0 / distances.clamp_min(1e-6)
    inv = inv / inv.amax(dim=(1, 2, 3), keepdim=True)
    return inv.expand(-1, 3, -1, -1)


class Pano360DiffPanoModuleLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        _host.register_model_folder(MODULE_FOLDER)
        return io.Schema(
            node_id="Pano360DiffPanoModuleLoader",
            display_name="DiffPano Module Loader",
            category=CATEGORY,
            description="Load trained DiffPano spherical epipolar-aware modules (python -m pano360 train-diffpano; "
                        "safetensors in models/diffpano). No official weights were released.",
            inputs=[
                io.Combo.Input("module_name", options=_host.model_file_list(MODULE_FOLDER),
                               tooltip="A modules file from ComfyUI/models/diffpano (pano360 layout, docs/diffpano.md)."),
                io.Int.Input("samples", default=0, min=0, max=64,
                             tooltip="Points per ray (S); 0 = the value the modules were trained with."),
                io.Int.Input("num_refs", default=0, min=0, max=8,
                             tooltip="Reference panoramas per panorama (K); 0 = the value the modules were trained with."),
            ],
            outputs=[DIFFPANO_MODULE.Output("module", tooltip="The modules, for DiffPano Apply Module or the Multi-Panorama sampler.")],
        )

    @classmethod
    def execute(cls, module_name, samples=0, num_refs=0) -> io.NodeOutput:
        check_widgets(cls, module_name=module_name, samples=samples, num_refs=num_refs)
        overrides = {k: v for k, v in (("num_samples", samples), ("num_refs", num_refs)) if v}
        try:
            modules = load_epipolar(_host.model_file_path(MODULE_FOLDER, module_name), **overrides)
        except ValueError as e:
            raise NodeInputError(cls.__name__, "module_name", "a DiffPano modules file", str(e)) from None
        return io.NodeOutput(modules)


class Pano360DiffPanoApplyModule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360DiffPanoApplyModule",
            display_name="DiffPano Apply Module",
            category=CATEGORY,
            description="Insert trained DiffPano epipolar modules after the attention blocks of an SD UNet's middle "
                        "block and decoder, for the cameras of a path: a KSampler on a latent batch of one panorama per "
                        "camera (in path order) then denoises them jointly, each attending along its epipolar curves to "
                        "its nearest panoramas.",
            inputs=[
                io.Model.Input("model", tooltip="The SD UNet the modules were trained on (with its Pano-SD LoRA if any)."),
                DIFFPANO_MODULE.Input("module", tooltip="From DiffPano Module Loader."),
                CAMERA_PATH.Input("camera_path", tooltip="One camera per batch item, in order (positions and rotations)."),
                io.Float.Input("position_scale", default=1.0, min=0.001, max=1000.0, step=0.01,
                               tooltip="Multiplies the path's positions into the units the modules were trained in (metres)."),
                io.Combo.Input("references", options=list(REFERENCE_RULES), default="nearest",
                               tooltip="nearest: each panorama attends to its nearest others; previous: only to earlier ones."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model; sample a batch of len(camera_path) panoramas.")],
        )

    @classmethod
    def execute(cls, model, module, camera_path, position_scale=1.0, references="nearest") -> io.NodeOutput:
        node = cls.__name__
        check_widgets(cls, position_scale=position_scale, references=references)
        if not isinstance(module, EpipolarAttentionSet):
            raise NodeInputError(node, "module", "a PANO360_DIFFPANO_MODULE (from DiffPano Module Loader)", describe(module))
        path = _camera_path(camera_path, node)
        try:
            comfy_attention_blocks(_host.diffusion_model(model))
        except ValueError as e:
            raise NodeInputError(node, "model", "an SD-style UNet (SD1.5/2.x)", str(e)) from None
        positions = path.positions(dtype=torch.float64) * position_scale
        refs = nearest_references(positions, module.config.num_refs, references)
        views = EpipolarViews(path.rotations(dtype=torch.float64), positions, refs)
        patched = model.clone()
        _host.add_diffusion_model_wrapper(patched, WRAPPER_KEY, EpipolarUNetWrapper(module, views))
        return io.NodeOutput(patched)


NODES = [Pano360DiffPanoMultiPanorama, Pano360DiffPanoModuleLoader, Pano360DiffPanoApplyModule]
