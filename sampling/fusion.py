"""Training-free multi-view sampling: fuse the views' predicted clean latents on the sphere.

A rig of perspective views (``videopanda8`` by default) is denoised as one batch by any
public model (an image model for a panorama, a video model for a 360° video).  At each
step the predicted clean latents ``x0`` of all views are brought onto the sphere and back:

1. warp every view onto one shared equirect latent canvas with the rig's grids at latent
   resolution (:func:`..projection.stitch_rig`, uniform weight over each footprint),
2. average where views overlap (given cells weigh :data:`GIVEN_CANVAS_WEIGHT` times more,
   so generated neighbours take the given content at the overlap),
3. warp the canvas back to every view (:func:`..projection.erp_to_rig` at latent size),
4. blend with the view's own prediction by a synchronisation strength that depends on the
   step (:class:`SyncSchedule`).

This is the MultiDiffusion idea (Bar-Tal et al. 2023) on the sphere, as in SphereDiff
(Park et al. 2025) with an equirect canvas, over VideoPanda's rig and view mask
(Xie et al. 2025).  Given cells (the view mask) are held by :mod:`.held`; the ComfyUI hook
that calls the fusion is in :mod:`.hooks`.

Layouts (docs/conventions.md): 4-D latents are view-major ``[V*T, C, h, w]`` (image models,
SVD); 5-D video latents are ``[V, C, T, h, w]`` (Wan, HunyuanVideo).  Host-free: never
imports ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..projection import Rig, erp_to_rig, stitch_rig

# Weight of a given cell against a generated one when views are averaged on the canvas.
# Design choice (no paper value; VideoPanda's model learns this): large enough that the
# given content wins at overlaps, finite so the average stays smooth at footprint edges.
GIVEN_CANVAS_WEIGHT = 100.0
# Canvas coverage below this counts as "no view here" (the canvas sum of footprint weights).
_EPS = 1e-6
# A view at |pitch| >= 45 degrees sees mostly sky or ground (a cube face's half angle):
# the views per-view "up"/"down" prompts apply to.
POLE_PITCH = 45.0
# Canvas width is rounded up to a multiple of this (even equirect width W = 2H).
_CANVAS_ALIGN = 8

__all__ = [
    "GIVEN_CANVAS_WEIGHT",
    "POLE_PITCH",
    "LatentLayout",
    "pole_views",
    "SyncSchedule",
    "canvas_size",
    "fuse_views",
    "MultiViewFusion",
]


# ---------------------------------------------------------------------------------------
# Layout: a view×frame latent grid as a view-major batch of 2-D latents
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentLayout:
    """Shape bookkeeping of a view×frame latent grid.

    video=False: a 4-D view-major batch ``[V*T, C, h, w]`` (b = v*T + t).
    video=True: a 5-D video latent ``[V, C, T, h, w]`` (views on the batch axis).
    """

    views: int
    frames: int
    channels: int
    height: int
    width: int
    video: bool

    @staticmethod
    def of(shape: tuple[int, ...] | torch.Size, views: int) -> "LatentLayout":
        """The layout of a latent of ``shape`` holding ``views`` views; ValueError if it cannot."""
        shape = tuple(int(s) for s in shape)
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if len(shape) == 4:
            if shape[0] % views:
                raise ValueError(f"latent batch {shape[0]} is not a multiple of the rig's {views} views")
            return LatentLayout(views, shape[0] // views, shape[1], shape[2], shape[3], False)
        if len(shape) == 5:
            if shape[0] != views:
                raise ValueError(f"5-D latent batch {shape[0]} must equal the rig's {views} views")
            return LatentLayout(views, shape[2], shape[1], shape[3], shape[4], True)
        raise ValueError(f"latent must be 4-D [V*T,C,h,w] or 5-D [V,C,T,h,w], got shape {list(shape)}")

    @property
    def shape(self) -> tuple[int, ...]:
        if self.video:
            return (self.views, self.channels, self.frames, self.height, self.width)
        return (self.views * self.frames, self.channels, self.height, self.width)

    def to_grid(self, x: Tensor) -> Tensor:
        """Latent in this layout -> view-major ``(V*T, C, h, w)`` (a view when 4-D)."""
        if not self.video:
            return x
        v, c, t, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(v * t, c, h, w)

    def from_grid(self, g: Tensor) -> Tensor:
        """View-major ``(V*T, C, h, w)`` -> this layout."""
        if not self.video:
            return g
        return g.reshape(self.views, self.frames, self.channels, self.height, self.width).permute(0, 2, 1, 3, 4)

    def to_cells(self, x: Tensor) -> Tensor:
        """-> ``(V, T, C, h, w)``."""
        return self.to_grid(x).reshape(self.views, self.frames, self.channels, self.height, self.width)

    def from_cells(self, cells: Tensor) -> Tensor:
        """``(V, T, C, h, w)`` -> this layout (contiguous)."""
        v, t, c, h, w = cells.shape
        return self.from_grid(cells.reshape(v * t, c, h, w)).contiguous()


def pole_views(rig: Rig, up: bool, min_pitch: float = POLE_PITCH) -> list[int]:
    """Indices of the views looking up (pitch >= min_pitch) or down (pitch <= -min_pitch)."""
    return [i for i, v in enumerate(rig.views) if (v.pitch >= min_pitch if up else v.pitch <= -min_pitch)]


# ---------------------------------------------------------------------------------------
# Synchronisation schedule
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSchedule:
    """How strongly views are synchronised at a step.

    strength in [0, 1] (1 = every view takes the sphere average) applies while the step
    fraction ``i / steps`` lies in ``[start, end]``, 0 elsewhere.
    """

    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got start={self.start}, end={self.end}")

    def at(self, fraction: float) -> float:
        return self.strength if self.start <= fraction <= self.end else 0.0


# ---------------------------------------------------------------------------------------
# Fusion on the sphere
# ---------------------------------------------------------------------------------------


def canvas_size(rig: Rig, latent_hw: tuple[int, int], oversample: float = 1.0) -> tuple[int, int]:
    """Equirect canvas ``(H, W)`` whose pixels match the finest view's centre pixel.

    A pinhole view of horizontal FOV ``f`` and width ``w`` has a centre pixel of
    ``2 tan(f/2) / w`` radians; an equirect of width ``W`` has ``2π / W``.  W is rounded up
    to a multiple of 8 and scaled by ``oversample``; ``H = W / 2``.
    """
    if oversample <= 0:
        raise ValueError(f"oversample must be > 0, got {oversample}")
    w = latent_hw[1]
    widths = [math.pi * w / math.tan(math.radians(v.fov) / 2) for v in rig.views]
    width = max(widths) * oversample
    width = int(math.ceil(width / _CANVAS_ALIGN) * _CANVAS_ALIGN)
    return width // 2, width


def fuse_views(
    x0: Tensor, rig: Rig, canvas_hw: tuple[int, int], cell_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Average views on an equirect canvas and sample the average back into every view.

    x0: ``(V*T, C, h, w)`` view-major.  cell_weight: ``(V*T,)`` positive weights or None
    (all 1).  Returns ``(fused (V*T, C, h, w), support (V*T, 1, h, w))``: support in [0, 1]
    is how much of each view pixel's neighbourhood on the canvas was covered by some view
    (1 everywhere for rigs that cover the sphere).
    """
    n, c, h, w = x0.shape
    if cell_weight is None:
        weight = x0.new_ones(n, 1, h, w)
        stacked = torch.cat([x0, weight], dim=1)
    else:
        weight = cell_weight.to(x0).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        stacked = torch.cat([x0 * weight, weight], dim=1)
    # stitch_rig averages each channel over the views' footprints; the extra channel
    # carries the weights, so the ratio below is the weighted mean whatever stitch_rig's
    # own normalisation is.
    canvas, _ = stitch_rig(stacked, rig, canvas_hw, weight="uniform")  # (T, C+1, H, W)
    den = canvas[:, c:]
    covered = (den > _EPS).to(x0.dtype)
    mean = canvas[:, :c] / den.clamp_min(_EPS)
    back = erp_to_rig(torch.cat([mean * covered, covered], dim=1), rig, out_hw=(h, w))  # (V*T, C+1, h, w)
    support = back[:, c:]
    fused = back[:, :c] / support.clamp_min(_EPS)
    return fused, support.clamp(0.0, 1.0)


class MultiViewFusion:
    """The per-step fusion: a callable ``(x0, step_fraction) -> x0``.

    rig: the views (``rig.num_views`` must equal the latent's views).  layout: the
    latent's :class:`LatentLayout`.  schedule: :class:`SyncSchedule`.  given: latents at
    given cells in the *sampler's* latent space (ComfyUI: after ``process_latent_in``),
    same layout as the samples, or None.  given_mask: ``[V, T]`` (1 = given).  hold_until:
    the step fraction until which given cells are held (1 - noise augmentation); while held
    the fusion puts the given values in place of the model's prediction at those cells
    (ComfyUI's post-CFG functions see the model's own prediction there) and weighs them by
    :data:`GIVEN_CANVAS_WEIGHT`.

    The only state is a one-entry cache of ``given`` and weights on the samples'
    device/dtype; the fusion never changes its inputs.
    """

    def __init__(
        self,
        rig: Rig,
        layout: LatentLayout,
        *,
        schedule: SyncSchedule = SyncSchedule(),
        canvas_hw: tuple[int, int] | None = None,
        given: Tensor | None = None,
        given_mask: Tensor | None = None,
        hold_until: float = 1.0,
    ):
        if rig.num_views != layout.views:
            raise ValueError(f"rig has {rig.num_views} views but the latent holds {layout.views}")
        if given_mask is not None and tuple(given_mask.shape) != (layout.views, layout.frames):
            raise ValueError(
                f"given_mask must be [{layout.views}, {layout.frames}], got {list(given_mask.shape)}"
            )
        if given is not None and tuple(given.shape) != layout.shape:
            raise ValueError(f"given must have the latent's shape {list(layout.shape)}, got {list(given.shape)}")
        self.rig, self.layout, self.schedule = rig, layout, schedule
        self.canvas_hw = canvas_hw or canvas_size(rig, (layout.height, layout.width))
        self.hold_until = float(hold_until)
        self._given = None if given is None or given_mask is None or not bool(given_mask.any()) else given
        self._mask = None if self._given is None else given_mask.reshape(-1).to(torch.float32)
        self._cache: tuple | None = None  # (device, dtype, given_grid, keep (N,1,1,1), weight (N,))

    def _prepared(self, ref: Tensor):
        key = (ref.device, ref.dtype)
        if self._cache is None or self._cache[:2] != key:
            grid = self.layout.to_grid(self._given).to(device=ref.device, dtype=ref.dtype)
            keep = self._mask.to(device=ref.device, dtype=ref.dtype)
            weight = 1.0 + (GIVEN_CANVAS_WEIGHT - 1.0) * keep
            self._cache = (*key, grid, keep.reshape(-1, 1, 1, 1), weight)
        return self._cache[2:]

    def __call__(self, x0: Tensor, fraction: float) -> Tensor:
        strength = self.schedule.at(fraction)
        if strength == 0.0:
            return x0
        grid = self.layout.to_grid(x0)
        weight = None
        if self._given is not None and fraction < self.hold_until:
            given, keep, weight = self._prepared(grid)
            grid = torch.lerp(grid, given, keep)
        fused, support = fuse_views(grid, self.rig, self.canvas_hw, weight)
        out = torch.lerp(grid, fused, support * strength)
        return self.layout.from_grid(out)
