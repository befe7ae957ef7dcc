"""Pano360 nodes: small settings nodes that bundle a sampler's knobs into one typed output.

The Multi-View Sampler, the Autoregressive Extender and the Argus Long Video Sampler take
these bundles as optional inputs; without them they use their paper's settings.
"""

from __future__ import annotations

import math

from . import _host
from ._bundles import (DIFFPANO_SETTINGS, EPIPOLAR_BLOCKS, EPIPOLAR_MODES, FUSION_SETTINGS, INBETWEEN_FUSIONS,
                       INBETWEEN_SETTINGS, SAMPLER_SETTINGS, SEED_MAX, WINDOW_SETTINGS, DiffPanoSettings, FusionSettings,
                       InbetweenSettings, SamplerSettings, WindowSettings)
from ._common import NodeInputError, check_widgets, known, widget_errors
from ._host import io
from ..projection.lattice import DISTORTION_POWER
from ..sampling.fusion import LATTICE_DENSITY, ROTATIONS, SPACES, TILT_MAX, SyncSchedule

CATEGORY = "Pano360/sampling"
SAMPLER = io.Custom(SAMPLER_SETTINGS)
FUSION = io.Custom(FUSION_SETTINGS)
WINDOWS = io.Custom(WINDOW_SETTINGS)
INBETWEEN = io.Custom(INBETWEEN_SETTINGS)
DIFFPANO = io.Custom(DIFFPANO_SETTINGS)


class Pano360SamplerSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360SamplerSettings",
            display_name="Pano360 Sampler Settings",
            category=CATEGORY,
            description="Seed, steps, CFG, sampler and scheduler for a Pano360 sampler (Multi-View Sampler, "
                        "Autoregressive Extender, Argus Long Video). Without this node each sampler uses its "
                        "paper's settings (VideoPanda: 25 steps, CFG 8; Argus: 25 steps, CFG 3, euler, karras).",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Seed of the initial noise (windowed samplers use seed + window index)."),
                io.Int.Input("steps", default=25, min=1, max=10000, tooltip="Sampler steps (VideoPanda and Argus: 25)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (VideoPanda: 8 text-only, 4 video-conditioned; Argus: 3)."),
                io.Combo.Input("sampler_name", options=_host.sampler_names(), default="euler",
                               tooltip="ComfyUI sampler (VideoPanda used DDIM: 'ddim'; Argus: 'euler')."),
                io.Combo.Input("scheduler", options=_host.scheduler_names(), default="normal",
                               tooltip="ComfyUI scheduler, the noise levels per step (Argus: 'karras')."),
            ],
            outputs=[SAMPLER.Output("settings", tooltip="The bundle, for a Pano360 sampler's 'settings' input.")],
        )

    @classmethod
    def execute(cls, seed, steps, cfg, sampler_name, scheduler) -> io.NodeOutput:
        # ComfyUI's sampler silently replaces an unknown sampler/scheduler name by the first one.
        check_widgets(cls, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler)
        return io.NodeOutput(SamplerSettings(seed, steps, cfg, sampler_name, scheduler))


class Pano360FusionSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360FusionSettings",
            display_name="Pano360 Fusion Settings",
            category=CATEGORY,
            description="How the Multi-View Sampler and the Autoregressive Extender synchronise views on the sphere, "
                        "and how long given cells are held. Without this node: full synchronisation at every step on an "
                        "equirect canvas, given cells held to the end. space 'uniform_sphere' keeps the sampler's state "
                        "on points spread uniformly over the sphere (SphereDiff's idea, docs/spherical.md).",
            inputs=[
                io.Float.Input("sync_strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How strongly views are synchronised on the sphere at each step: 1 = every view "
                                       "takes the average of all views where they overlap, 0 = views sampled independently."),
                io.Float.Input("sync_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps (0 = first step) from which views are synchronised."),
                io.Float.Input("sync_end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps (1 = last step) until which views are synchronised. "
                                       "Ending a little early (e.g. 0.9) keeps the finest detail of each view unblurred."),
                io.Float.Input("noise_augmentation", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Given cells are held for the first (1 - this) fraction of the steps, then refined "
                                       "from their noised values with the rest (VideoPanda's noise augmentation against "
                                       "drift; 0 = given cells stay exactly as given)."),
                io.Combo.Input("space", options=list(SPACES), default="equirect_canvas", optional=True,
                               tooltip="equirect_canvas: every view keeps its own latent and the views' predictions are "
                                       "averaged on an equirect canvas. uniform_sphere: the sampler's latent is a set of "
                                       "points spread uniformly over the sphere (no pole over-sampling); the views are "
                                       "filled from it every step and their predictions averaged back onto it, so the "
                                       "views can turn between steps. Output views and an equirect latent either way."),
                io.Combo.Input("view_rotation", options=list(ROTATIONS), default="sphere", optional=True,
                               tooltip="uniform_sphere only: how the rig moves between steps so no view border stays in "
                                       f"place. none; yaw (turn about the vertical); sphere (turn and tilt up to "
                                       f"{math.degrees(TILT_MAX):g}°, every view re-aimed level, so the poles are seen by "
                                       "different views). A rig that would leave part of the sphere unseen is refused."),
                io.Float.Input("distortion_power", default=DISTORTION_POWER, min=0.0, max=16.0, step=0.5, optional=True,
                               tooltip="uniform_sphere only: a view pixel at angle θ from the view's centre counts "
                                       "cos(θ)^power in the average (3 = the pinhole's own resolution loss; 0 = all "
                                       "pixels equal). Higher trusts view centres more."),
                io.Float.Input("lattice_density", default=LATTICE_DENSITY, min=0.25, max=4.0, step=0.05, optional=True,
                               tooltip="uniform_sphere only: points on the sphere relative to the views' resolution "
                                       "(1 = the widest view holds as many points as pixels). Below 1 views overlap "
                                       "more; above 1 they cover less and may leave gaps (refused)."),
            ],
            outputs=[FUSION.Output("fusion", tooltip="The bundle, for a Pano360 sampler's 'fusion' input.")],
        )

    @classmethod
    def validate_inputs(cls, sync_start=0.0, sync_end=1.0):
        # A linked input arrives as None (its value is not known before the run): execute checks it.
        if message := widget_errors(cls.define_schema(), sync_start=sync_start, sync_end=sync_end):
            return message
        if known(sync_start, sync_end) and sync_start > sync_end:
            return f"Pano360FusionSettings: input 'sync_start': expected <= sync_end ({sync_end}), got {sync_start}"
        return True

    @classmethod
    def execute(cls, sync_strength, sync_start, sync_end, noise_augmentation, space="equirect_canvas",
                view_rotation="sphere", distortion_power=DISTORTION_POWER,
                lattice_density=LATTICE_DENSITY) -> io.NodeOutput:
        check_widgets(cls, sync_strength=sync_strength, sync_start=sync_start, sync_end=sync_end,
                      noise_augmentation=noise_augmentation, space=space, view_rotation=view_rotation,
                      distortion_power=distortion_power, lattice_density=lattice_density)
        if sync_start > sync_end:
            raise NodeInputError("Pano360FusionSettings", "sync_start", f"<= sync_end ({sync_end})", str(sync_start))
        return io.NodeOutput(FusionSettings(SyncSchedule(sync_strength, sync_start, sync_end), noise_augmentation,
                                            space, view_rotation, distortion_power, lattice_density))


class Pano360WindowSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360WindowSettings",
            display_name="Pano360 Window Settings",
            category=CATEGORY,
            description="Frames per window and frames carried into the next window, for the windowed samplers "
                        "(Autoregressive Extender, Argus Long Video). Without this node each uses its paper's "
                        "windows: VideoPanda 16 frames with 1 carried, Argus 25 frames with 5 overlapping.",
            inputs=[
                io.Int.Input("window", default=16, min=2, max=1024,
                             tooltip="Frames per window (latent frames for 5-D video latents; VideoPanda 16, Argus 25)."),
                io.Int.Input("overlap", default=1, min=0, max=1023,
                             tooltip="Frames shared by consecutive windows (VideoPanda 1, Argus 5); below window."),
            ],
            outputs=[WINDOWS.Output("windows", tooltip="The bundle, for a windowed sampler's 'window_settings' input.")],
        )

    @classmethod
    def validate_inputs(cls, window=16, overlap=1):
        if message := widget_errors(cls.define_schema(), window=window, overlap=overlap):
            return message
        if known(window, overlap) and overlap >= window:
            return f"Pano360WindowSettings: input 'overlap': expected < window ({window}), got {overlap}"
        return True

    @classmethod
    def execute(cls, window, overlap) -> io.NodeOutput:
        check_widgets(cls, window=window, overlap=overlap)
        if overlap >= window:
            raise NodeInputError("Pano360WindowSettings", "overlap", f"< window ({window})", str(overlap))
        return io.NodeOutput(WindowSettings(window, overlap))


class Pano360InbetweenSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = InbetweenSettings()
        return io.Schema(
            node_id="Pano360InbetweenSettings",
            display_name="Pano360 Inbetween Settings",
            category=CATEGORY,
            description="Guidance, fusion, SVD conditioning, noise re-injection and camera rows for the Keyframe "
                        "Inbetween sampler (Look Beyond). Without this node it uses Look Beyond's videogen.py settings: "
                        "equal fusion, guidance 1 to 3, fps 7, motion bucket 127, noise aug 0.02, no re-injection, "
                        "Karras sigmas, every camera of the path.",
            inputs=[
                io.Combo.Input("fusion", options=list(INBETWEEN_FUSIONS), default=d.fusion,
                               tooltip="How the forward (keyframe 1) and backward (keyframe 2) predictions are mixed: "
                                       "'equal' 0.5/0.5 with time-symmetric guidance; 'weighted' linearly from the first "
                                       "keyframe's pass to the second's (with a camera path: by pose similarity)."),
                io.Float.Input("min_guidance", default=d.min_guidance, min=0.0, max=20.0, step=0.1,
                               tooltip="CFG scale at the pass's own keyframe (reference: 1). 'equal' fusion averages "
                                       "the ramp with its time flip."),
                io.Float.Input("max_guidance", default=d.max_guidance, min=0.0, max=20.0, step=0.1,
                               tooltip="CFG scale at the far end of each pass (reference: 3). At most 1 everywhere: "
                                       "no unconditional branch (the reference's rule)."),
                io.Int.Input("fps", default=d.fps, min=1, max=1024,
                             tooltip="SVD's fps conditioning (the model sees fps − 1; reference 7). Not the video's "
                                     "playback rate (set that in the video save node, e.g. Save WEBM; Look Beyond exports at 24)."),
                io.Int.Input("motion_bucket_id", default=d.motion_bucket_id, min=1, max=1023,
                             tooltip="SVD's motion bucket (reference 127): higher, more motion."),
                io.Float.Input("noise_aug", default=d.noise_aug, min=0.0, max=1.0, step=0.005,
                               tooltip="Noise added to both keyframes before VAE encoding, std in [−1, 1] pixel units "
                                       "(reference 0.02); also SVD's augmentation id."),
                io.Int.Input("reinject", default=d.reinject, min=0, max=20,
                             tooltip="Noise re-injections per step over the first steps (svd_keyframe_interpolation's "
                                     "script: 5; Look Beyond: 0). Each costs one more two-pass step."),
                io.Float.Input("reinject_ratio", default=d.reinject_ratio, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the steps (from the first) that get re-injections (reference 0.5)."),
                io.Combo.Input("scheduler", options=_host.scheduler_names(), default=d.scheduler,
                               tooltip="ComfyUI noise schedule over SVD's sigma range (reference: 'karras', SVD-XT's "
                                       "Karras sigmas 0.002–700)."),
                io.Int.Input("first_pose", default=d.first_pose, min=0, max=100000,
                             tooltip="Camera path row of the first keyframe (with a Perspective Loop pose.txt of "
                                     "cameras_between n, frame k is row k·(n+1))."),
                io.Int.Input("last_pose", default=d.last_pose, min=-1, max=100000,
                             tooltip="Camera path row of the last keyframe; −1 = the path's last row. The sampler "
                                     "spreads its frames over the rows in between (as Look Beyond's select_between_frames)."),
            ],
            outputs=[INBETWEEN.Output("settings", tooltip="The bundle, for the Keyframe Inbetween sampler's 'settings' input.")],
        )

    @classmethod
    def validate_inputs(cls, min_guidance=None, max_guidance=None):
        if message := widget_errors(cls.define_schema(), min_guidance=min_guidance, max_guidance=max_guidance):
            return message
        if known(min_guidance, max_guidance) and min_guidance > max_guidance:
            return f"Pano360InbetweenSettings: input 'min_guidance': expected <= max_guidance ({max_guidance}), got {min_guidance}"
        return True

    @classmethod
    def execute(cls, fusion, min_guidance, max_guidance, fps, motion_bucket_id, noise_aug, reinject, reinject_ratio,
                scheduler, first_pose, last_pose) -> io.NodeOutput:
        check_widgets(cls, fusion=fusion, min_guidance=min_guidance, max_guidance=max_guidance, fps=fps,
                      motion_bucket_id=motion_bucket_id, noise_aug=noise_aug, reinject=reinject,
                      reinject_ratio=reinject_ratio, scheduler=scheduler, first_pose=first_pose, last_pose=last_pose)
        if min_guidance > max_guidance:
            raise NodeInputError("Pano360InbetweenSettings", "min_guidance", f"<= max_guidance ({max_guidance})",
                                 str(min_guidance))
        return io.NodeOutput(InbetweenSettings(fusion, min_guidance, max_guidance, fps, motion_bucket_id, noise_aug,
                                               reinject, reinject_ratio, scheduler, first_pose, last_pose))

class Pano360DiffPanoSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Pano360DiffPanoSettings",
            display_name="Pano360 DiffPano Settings",
            category=CATEGORY,
            description="How the DiffPano Multi-Panorama sampler links each new panorama to the earlier ones: how many "
                        "it reprojects and holds, the training-free epipolar attention, and where distances come from. "
                        "Without this node: 2 references, training-free epipolar attention on the middle and "
                        "low-resolution decoder blocks, distances propagated from a 2.5 m room.",
            inputs=[
                io.Int.Input("num_refs", default=2, min=1, max=4,
                             tooltip="Earlier panoramas (nearest cameras first) reprojected into each new one and held "
                                     "where they see; with epipolar attention on, also attended to (each adds one "
                                     "latent to the batch)."),
                io.Combo.Input("epipolar_attention", options=list(EPIPOLAR_MODES), default="training_free",
                               tooltip="training_free: the new panorama's self-attention also looks along its epipolar "
                                       "curves in the references (SD-style UNets: SD1.5/2.x/SDXL; no new weights). "
                                       "off: only the held reprojection links the panoramas (any model, e.g. Flux)."),
                io.Combo.Input("epipolar_blocks", options=list(EPIPOLAR_BLOCKS), default="mid_and_low_res",
                               tooltip="mid_and_low_res: the middle block and the decoder blocks at 1/2 to 1/8 of the "
                                       "latent (cheap); all: also the full-resolution decoder blocks (4x the tokens)."),
                io.Float.Input("reference_weight", default=0.0, min=-4.0, max=4.0, step=0.1,
                               tooltip="Log-weight of a reference token against one of the panorama's own tokens in "
                                       "the epipolar attention: 0 = equal footing, +1 = e times more, -1 = e times less."),
                io.Int.Input("samples", default=8, min=1, max=64,
                             tooltip="Points sampled along each ray between near and far (DiffPano's S)."),
                io.Float.Input("near", default=0.5, min=0.01, max=100.0, step=0.01,
                               tooltip="Nearest sampled distance along a ray, in the camera path's units (after position_scale)."),
                io.Float.Input("far", default=0.0, min=0.0, max=10000.0, step=0.5,
                               tooltip="Farthest sampled distance; 0 = infinity (the last sample is the ray's vanishing "
                                       "direction). Samples are uniform in inverse distance."),
                io.Int.Input("dilate_cells", default=1, min=0, max=8,
                             tooltip="Latent cells the regenerated (disoccluded) region grows by, so the seam between held "
                                     "and new content is generated too."),
                io.Combo.Input("depth_source", options=["propagate", "estimate", "constant"], default="propagate",
                               tooltip="propagate: panorama 0's distances (the distance input, or a room of room_distance) "
                                       "carried to later panoramas by reprojection. estimate: ComfyUI 0.33's MoGe panorama "
                                       "depth on every panorama (needs moge_model), scaled to the carried distances. "
                                       "constant: every panorama a sphere of room_distance."),
                io.Float.Input("room_distance", default=2.5, min=0.1, max=1000.0, step=0.1,
                               tooltip="Typical distance to the walls, in the camera path's units (after position_scale): "
                                       "panorama 0's median distance when estimated, the sphere radius otherwise."),
                io.Float.Input("position_scale", default=1.0, min=0.001, max=1000.0, step=0.01,
                               tooltip="Multiplies the camera path's positions (e.g. RealEstate10K's arbitrary units) to "
                                       "the units of distances (metres for DiffPano's indoor scenes)."),
            ],
            outputs=[DIFFPANO.Output("diffpano", tooltip="The bundle, for the DiffPano Multi-Panorama sampler's 'diffpano' input.")],
        )

    @classmethod
    def validate_inputs(cls, near=0.5, far=0.0):
        if message := widget_errors(cls.define_schema(), near=near, far=far):
            return message
        if known(near, far) and far and far <= near:
            return f"Pano360DiffPanoSettings: input 'far': expected 0 (infinity) or more than near ({near}), got {far}"
        return True

    @classmethod
    def execute(cls, num_refs, epipolar_attention, epipolar_blocks, reference_weight, samples, near, far, dilate_cells,
                depth_source, room_distance, position_scale) -> io.NodeOutput:
        check_widgets(cls, num_refs=num_refs, epipolar_attention=epipolar_attention, epipolar_blocks=epipolar_blocks,
                      reference_weight=reference_weight, samples=samples, near=near, far=far, dilate_cells=dilate_cells,
                      depth_source=depth_source, room_distance=room_distance, position_scale=position_scale)
        if far and far <= near:
            raise NodeInputError(cls.__name__, "far", f"0 (infinity) or more than near ({near})", str(far))
        return io.NodeOutput(DiffPanoSettings(num_refs, epipolar_attention, epipolar_blocks, reference_weight, samples,
                                              near, far, dilate_cells, depth_source, room_distance, position_scale))


def bundle(value, cls_, default, node: str, name: str):
    """The bundle at input ``name`` of ``node``, or ``default`` when nothing is connected."""
    if value is None:
        return default
    if not isinstance(value, cls_):
        from ._common import describe

        raise NodeInputError(node, name, f"a {cls_.__name__} bundle from its settings node", describe(value))
    return value


NODES = [Pano360SamplerSettings, Pano360FusionSettings, Pano360WindowSettings, Pano360DiffPanoSettings,
         Pano360InbetweenSettings]
