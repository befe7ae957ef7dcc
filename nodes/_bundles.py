"""The typed settings bundles that small settings nodes hand to samplers (host-free).

A sampler with many knobs takes them as one optional bundle from a settings node (the way
kijai's wrappers pass ``BLOCKSWAPARGS``/context options), so the sampler itself stays small;
without the settings node the sampler uses its paper's defaults (``defaults`` arguments
below).  Nodes live in ``settings.py``; these frozen dataclasses are the values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..pipelines.lookbeyond.inbetween import (CONDITIONING_FPS, MAX_GUIDANCE, MIN_GUIDANCE, MOTION_BUCKET_ID,
                                               NOISE_AUG_STRENGTH, REINJECT_RATIO)
from ..projection.lattice import DISTORTION_POWER
from ..sampling.fusion import LATTICE_DENSITY, ROTATIONS, SPACES, SyncSchedule

__all__ = ["SamplerSettings", "FusionSettings", "WindowSettings", "DiffPanoSettings", "InbetweenSettings",
           "SAMPLER_SETTINGS", "FUSION_SETTINGS", "WINDOW_SETTINGS", "DIFFPANO_SETTINGS", "INBETWEEN_SETTINGS",
           "INBETWEEN_FUSIONS", "SEED_MAX", "EPIPOLAR_MODES", "EPIPOLAR_BLOCKS"]

# ComfyUI seeds are unsigned 64-bit (KSampler's seed widget max).
SEED_MAX = 0xFFFFFFFFFFFFFFFF

SAMPLER_SETTINGS = "PANO360_SAMPLER_SETTINGS"
FUSION_SETTINGS = "PANO360_FUSION_SETTINGS"
WINDOW_SETTINGS = "PANO360_WINDOW_SETTINGS"
INBETWEEN_SETTINGS = "PANO360_INBETWEEN_SETTINGS"
# equal: 0.5/0.5 with time-symmetric guidance; weighted: linspace(1 -> 0) (or pose similarity).
INBETWEEN_FUSIONS = ("equal", "weighted")
DIFFPANO_SETTINGS = "PANO360_DIFFPANO_SETTINGS"
# Training-free epipolar attention: off, or in the base model's own self-attention.
EPIPOLAR_MODES = ("training_free", "off")
# Which attention blocks get it: the middle block and the decoder blocks below full latent
# resolution (tokens <= 1/4 of the latent's), or every decoder block too.
EPIPOLAR_BLOCKS = ("mid_and_low_res", "all")


@dataclass(frozen=True)
class SamplerSettings:
    """Seed, steps, CFG scale and ComfyUI sampler/scheduler names."""

    seed: int = 0
    steps: int = 25
    cfg: float = 5.0
    sampler_name: str = "euler"
    scheduler: str = "normal"

    def with_seed(self, seed: int) -> "SamplerSettings":
        return SamplerSettings(seed, self.steps, self.cfg, self.sampler_name, self.scheduler)


@dataclass(frozen=True)
class FusionSettings:
    """How views are synchronised on the sphere (``sync``) and how long given cells are held
    (``noise_augmentation``: the last fraction of the steps refines them like the rest).

    space: ``equirect_canvas`` (views keep their own latents, x0 fused on an equirect canvas)
    or ``uniform_sphere`` (the sampler's latent is a Fibonacci lattice, ``sampling.fusion.
    SphereFusion``), with its view ``rotation``, ``distortion_power`` and ``lattice_density``.
    """

    sync: SyncSchedule = SyncSchedule()
    noise_augmentation: float = 0.0
    space: str = "equirect_canvas"
    rotation: str = "sphere"
    distortion_power: float = DISTORTION_POWER
    lattice_density: float = LATTICE_DENSITY

    def __post_init__(self):
        if not 0.0 <= self.noise_augmentation <= 1.0:
            raise ValueError(f"noise_augmentation must be in [0, 1], got {self.noise_augmentation}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {list(SPACES)}, got {self.space!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {list(ROTATIONS)}, got {self.rotation!r}")
        if not 0.0 <= self.distortion_power <= 16.0:
            raise ValueError(f"distortion_power must be in [0, 16], got {self.distortion_power}")
        if not 0.25 <= self.lattice_density <= 4.0:
            raise ValueError(f"lattice_density must be in [0.25, 4], got {self.lattice_density}")

    @property
    def sphere(self) -> bool:
        return self.space == "uniform_sphere"

    @property
    def hold_until(self) -> float:
        return 1.0 - self.noise_augmentation


@dataclass(frozen=True)
class WindowSettings:
    """Frames per window and frames carried into the next (``sampling.windows.plan_windows``)."""

    window: int
    overlap: int

    def __post_init__(self):
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window {self.window}, "
                             f"overlap {self.overlap}")


@dataclass(frozen=True)
class InbetweenSettings:
    """Keyframe inbetweening knobs; defaults are Look Beyond's ``videogen.py`` (svd_keyframe_interpolation's
    pipeline): equal fusion, guidance 1 -> 3, fps 7, motion bucket 127, noise aug 0.02, no noise
    re-injection (ratio 0.5 when on), Karras sigmas; cameras between the path's first and last row."""

    fusion: str = "equal"
    min_guidance: float = MIN_GUIDANCE
    max_guidance: float = MAX_GUIDANCE
    fps: int = CONDITIONING_FPS
    motion_bucket_id: int = MOTION_BUCKET_ID
    noise_aug: float = NOISE_AUG_STRENGTH
    reinject: int = 0
    reinject_ratio: float = REINJECT_RATIO
    scheduler: str = "karras"
    first_pose: int = 0
    last_pose: int = -1  # -1: the camera path's last row

    def __post_init__(self):
        if self.fusion not in INBETWEEN_FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(INBETWEEN_FUSIONS)}, got {self.fusion!r}")
        if self.min_guidance > self.max_guidance:
            raise ValueError(f"min_guidance {self.min_guidance} is above max_guidance {self.max_guidance}")


@dataclass(frozen=True)
class DiffPanoSettings:
    """The DiffPano Multi-Panorama sampler's knobs (docs/diffpano.md).

    num_refs: earlier panoramas reprojected into (and attended to by) each new one.
    epipolar / epipolar_blocks / ref_logit_bias / samples / near / far: the training-free
    epipolar attention (:data:`EPIPOLAR_MODES`, :data:`EPIPOLAR_BLOCKS`; ``far`` 0 = infinity).
    dilate_cells: latent cells the regenerated region grows by.  depth_source: ``propagate``,
    ``estimate`` (MoGe) or ``constant``.  room_distance: panorama 0's median distance (and the
    sphere radius of ``constant``), in the camera path's units after ``position_scale``.
    """

    num_refs: int = 2
    epipolar: str = "training_free"
    epipolar_blocks: str = "mid_and_low_res"
    ref_logit_bias: float = 0.0
    samples: int = 8
    near: float = 0.5
    far: float = 0.0
    dilate_cells: int = 1
    depth_source: str = "propagate"
    room_distance: float = 2.5
    position_scale: float = 1.0

    def __post_init__(self):
        if self.epipolar not in EPIPOLAR_MODES:
            raise ValueError(f"epipolar: expected one of {list(EPIPOLAR_MODES)}, got {self.epipolar!r}")
        if self.epipolar_blocks not in EPIPOLAR_BLOCKS:
            raise ValueError(f"epipolar_blocks: expected one of {list(EPIPOLAR_BLOCKS)}, got {self.epipolar_blocks!r}")
        if self.far and self.far <= self.near:
            raise ValueError(f"far ({self.far}) must be 0 (infinity) or beyond near ({self.near})")

