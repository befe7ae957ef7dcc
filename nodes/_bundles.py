"""The typed settings bundles that small settings nodes hand to samplers (host-free).

A sampler with many knobs takes them as one optional bundle from a settings node (the way
kijai's wrappers pass ``BLOCKSWAPARGS``/context options), so the sampler itself stays small;
without the settings node the sampler uses its paper's defaults (``defaults`` arguments
below).  Nodes live in ``settings.py``; these frozen dataclasses are the values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..projection.lattice import DISTORTION_POWER
from ..sampling.fusion import LATTICE_DENSITY, ROTATIONS, SPACES, SyncSchedule

__all__ = ["SamplerSettings", "FusionSettings", "WindowSettings", "SAMPLER_SETTINGS", "FUSION_SETTINGS",
           "WINDOW_SETTINGS", "SEED_MAX"]

# ComfyUI seeds are unsigned 64-bit (KSampler's seed widget max).
SEED_MAX = 0xFFFFFFFFFFFFFFFF

SAMPLER_SETTINGS = "PANO360_SAMPLER_SETTINGS"
FUSION_SETTINGS = "PANO360_FUSION_SETTINGS"
WINDOW_SETTINGS = "PANO360_WINDOW_SETTINGS"


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
