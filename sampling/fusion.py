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

This is the MultiDiffusion idea (Bar-Tal et al. 2023) on the sphere over VideoPanda's rig
and view mask (Xie et al. 2025).  The ``uniform_sphere`` space (:class:`SphereFusion`,
SphereDiff's idea, Park et al. 2025) keeps the sampler's state itself on points spread
uniformly over the sphere instead (docs/spherical.md).  Given cells (the view mask) are
held by :mod:`.held`; the ComfyUI hooks that call the fusions are in :mod:`.hooks`.

Layouts (docs/conventions.md): 4-D latents are view-major ``[V*T, C, h, w]`` (image models,
SVD); 5-D video latents are ``[V, C, T, h, w]`` (Wan, HunyuanVideo).  Host-free: never
imports ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..projection import Rig, erp_to_rig, rotation_matrix, stitch_rig
from ..projection.lattice import (
    DISTORTION_POWER,
    GOLDEN_ANGLE,
    LatticeViews,
    assign_views,
    fibonacci_lattice,
    lattice_to_views,
    points_for_view,
    view_solid_angle,
    views_to_lattice,
)
from .types import Denoiser

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
    "pole_region",
    "SyncSchedule",
    "canvas_size",
    "fuse_views",
    "MultiViewFusion",
    "SPACES",
    "ROTATIONS",
    "ROTATION_SET",
    "TILT_MAX",
    "LATTICE_DENSITY",
    "LatticeLayout",
    "lattice_size",
    "rig_rotation",
    "turned_views",
    "rig_fov_y",
    "rig_fovs_y",
    "SphereFusion",
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


def pole_region(n: int, up: bool, min_pitch: float = POLE_PITCH) -> Tensor:
    """``(n,)`` float: 1 at the lattice points above latitude ``min_pitch`` degrees (``up``)
    or below ``-min_pitch``: where the sky / ground prompts apply in the sphere space."""
    y = fibonacci_lattice(n, dtype=torch.float64)[:, 1]
    limit = math.sin(math.radians(min_pitch))
    return (y >= limit if up else y <= -limit).to(torch.float32)


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


# ---------------------------------------------------------------------------------------
# Uniform-sphere fusion: the sampler's state on a Fibonacci lattice (SphereDiff-style)
# ---------------------------------------------------------------------------------------
#
# In the ``uniform_sphere`` space the sampler's latent *is* the lattice
# (:class:`LatticeLayout`): noise, schedule and CFG run on points spread uniformly over the
# sphere.  For every model call the views are filled from the lattice (each view pixel holds
# one point, each point at most once per view: exact copies, so the noise a view sees stays
# i.i.d.), the model denoises the views, and their x0 are averaged back onto the points with
# distortion-aware weights (:func:`..projection.lattice.views_to_lattice`).  Because the
# state lives on the sphere the views may move between steps: the rig turns through
# :data:`ROTATION_SET` rotations, so no view border and no view's own error stays in place.

SPACES = ("equirect_canvas", "uniform_sphere")
ROTATIONS = ("none", "yaw", "sphere")
# Rotations the rig turns through: step i uses rotation i mod ROTATION_SET.  Enough to move
# every view's border and every pole view across the sphere, few enough that all view
# assignments are built (and checked for coverage) once.
ROTATION_SET = 8
# "sphere" rotations also tilt the rig's up axis by up to this angle, then re-aim every view
# level (yaw and pitch of its new direction, roll kept), so image models still see level
# horizons while the poles are seen by different views at different steps.  30 degrees keeps
# videopanda8 and cube-like rigs covering every point (checked at construction; measured in
# docs/spherical.md).
TILT_MAX = math.radians(30.0)
# Default lattice size: this fraction of the size at which the rig's widest view holds as
# many points as pixels (projection.lattice.points_for_view).  Below 1, every view's region
# reaches a little past its frame, so edge-to-edge rigs (cube6) leave no point unseen.
LATTICE_DENSITY = 0.9


@dataclass(frozen=True)
class LatticeLayout:
    """Shape bookkeeping of a lattice latent.

    video=False: ``[T, C, 1, N]`` (image models, one batch item per frame).
    video=True: ``[1, C, T, 1, N]`` (video models: one item, frames on axis 2).
    """

    frames: int
    channels: int
    n: int
    video: bool

    @staticmethod
    def of(shape: tuple[int, ...] | torch.Size) -> "LatticeLayout":
        """The layout of a lattice latent of ``shape``; ValueError if it is not one."""
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4 and shape[2] == 1:
            return LatticeLayout(shape[0], shape[1], shape[3], False)
        if len(shape) == 5 and shape[0] == 1 and shape[3] == 1:
            return LatticeLayout(shape[2], shape[1], shape[4], True)
        raise ValueError(f"expected a lattice latent [T, C, 1, N] or [1, C, T, 1, N], got shape {list(shape)}")

    @property
    def shape(self) -> tuple[int, ...]:
        if self.video:
            return (1, self.channels, self.frames, 1, self.n)
        return (self.frames, self.channels, 1, self.n)

    @property
    def items(self) -> int:
        """Batch items of one lattice latent (frames for 4-D, 1 for 5-D)."""
        return 1 if self.video else self.frames

    def values(self, x: Tensor) -> Tensor:
        """One lattice latent -> ``(T, C, N)``."""
        return x[0, :, :, 0].transpose(0, 1) if self.video else x[:, :, 0]

    def latent(self, values: Tensor) -> Tensor:
        """``(T, C, N)`` -> one lattice latent (contiguous)."""
        if self.video:
            return values.transpose(0, 1)[None, :, :, None, :].contiguous()
        return values[:, :, None, :].contiguous()

    def views_layout(self, views: int, view_hw: tuple[int, int]) -> LatentLayout:
        """The :class:`LatentLayout` of the view grid filled from this lattice."""
        return LatentLayout(views, self.frames, self.channels, int(view_hw[0]), int(view_hw[1]), self.video)


def lattice_size(rig: Rig, view_hw: tuple[int, int], density: float = LATTICE_DENSITY) -> int:
    """Default lattice size for ``rig`` at ``view_hw`` latent pixels per view (see
    :data:`LATTICE_DENSITY`)."""
    if not 0.0 < density <= 4.0:
        raise ValueError(f"density: expected a value in (0, 4], got {density!r}")
    # the view seeing the largest solid angle sets the count (fewest pixels per steradian)
    widest = max(rig.views, key=lambda v: view_solid_angle(math.radians(v.fov), view_hw, rig_fov_y(v, view_hw)))
    return max(2, int(round(density * points_for_view(view_hw, math.radians(widest.fov), rig_fov_y(widest, view_hw)))))


def rig_fov_y(view, view_hw: tuple[int, int]) -> float | None:
    """A rig view's vertical FOV in radians at ``view_hw``, or None for square pixels."""
    return None if view.fov_y is None else view.fov_y_radians(*view_hw)


def rig_fovs_y(rig: Rig, view_hw: tuple[int, int]) -> Tensor | None:
    """``(V,)`` float64 vertical FOVs (radians) of a rig with non-square-pixel views, else None."""
    if all(v.fov_y is None for v in rig.views):
        return None
    return torch.tensor([v.fov_y_radians(*view_hw) for v in rig.views], dtype=torch.float64)


def rig_rotation(k: int, rotation: str) -> Tensor:
    """World rotation ``(3, 3)`` float64 of the rig's ``k``-th turn (``k`` mod
    :data:`ROTATION_SET`): identity for ``none`` and ``k = 0``; a yaw of ``k`` golden angles
    for ``yaw``; that yaw after a tilt of ``TILT_MAX sin(k golden angle)`` for ``sphere``."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: unknown view rotation {rotation!r}; choose one of {list(ROTATIONS)}")
    k = k % ROTATION_SET
    if rotation == "none" or k == 0:
        return torch.eye(3, dtype=torch.float64)
    yaw = torch.tensor(k * GOLDEN_ANGLE, dtype=torch.float64)
    tilt = torch.tensor(TILT_MAX * math.sin(k * GOLDEN_ANGLE) if rotation == "sphere" else 0.0, dtype=torch.float64)
    return rotation_matrix(yaw, tilt, torch.zeros((), dtype=torch.float64))


def turned_views(rig: Rig, k: int, rotation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(yaw, pitch, roll, fov)`` radians ``(V,)`` of the rig after its ``k``-th turn, every
    view re-aimed at its turned direction and kept level (its own roll)."""
    yaw, pitch, roll, fov = rig.angles(dtype=torch.float64)
    rot = rig_rotation(k, rotation)
    forward = rotation_matrix(yaw, pitch, roll)[..., :, 2] @ rot.T  # (V, 3)
    new_pitch = torch.asin(forward[:, 1].clamp(-1.0, 1.0))
    flat = torch.hypot(forward[:, 0], forward[:, 2]) < 1e-9  # straight up/down: keep the turned yaw
    turn = float(torch.atan2(rot[0, 2], rot[2, 2]))
    new_yaw = torch.where(flat, yaw + turn, torch.atan2(forward[:, 0], forward[:, 2]))
    return new_yaw, new_pitch, roll, fov


class SphereFusion:
    """Views filled from a lattice state and their x0 fused back onto it.

    rig: the views.  view_hw: latent pixels per view.  n: lattice size (default
    :func:`lattice_size`).  rotation: ``none``, ``yaw`` or ``sphere`` (the rig turns every
    step, :func:`rig_rotation`).  distortion_power: view pixels weigh ``cos(theta) **
    power`` (:data:`..projection.lattice.DISTORTION_POWER`).  schedule: sync strength
    ``s`` over the steps raises the weights to ``1/s`` (sharper towards the view that sees a
    point most centrally); at ``s = 0`` each point takes that view alone.

    Every assignment the rotation uses is built and checked here: a point no view holds
    raises ValueError naming the rig.  State: the assignment cache and
    :attr:`last_disagreement` (the views' spread at the last step, set by
    :class:`..hooks.SphereUnetWrapper`).
    """

    def __init__(self, rig: Rig, view_hw: tuple[int, int], *, n: int | None = None, rotation: str = "sphere",
                 distortion_power: float = DISTORTION_POWER, schedule: SyncSchedule = SyncSchedule(), device=None):
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation: unknown view rotation {rotation!r}; choose one of {list(ROTATIONS)}")
        self.rig, self.view_hw = rig, (int(view_hw[0]), int(view_hw[1]))
        self.rotation, self.power, self.schedule, self.device = rotation, float(distortion_power), schedule, device
        self.n = int(n) if n is not None else lattice_size(rig, self.view_hw)
        self._cache: dict[int, LatticeViews] = {}
        self.last_disagreement: float | None = None
        for k in range(self.turns):
            holes = int((self.views(k).coverage() == 0).sum())
            if holes:
                hint = " or use view rotation 'yaw'/'none'" if rotation == "sphere" else ""
                raise ValueError(f"rig: {rig.name!r} at {self.view_hw[0]}x{self.view_hw[1]} leaves {holes} of {self.n} "
                                 f"lattice points in no view (turn {k} of {self.turns}); widen the views' FOV, add "
                                 f"views or lower the lattice density{hint}")

    @property
    def turns(self) -> int:
        """Distinct view sets this fusion uses."""
        return 1 if self.rotation == "none" else ROTATION_SET

    def views(self, step: int) -> LatticeViews:
        """The view assignment used at sampler step ``step``."""
        k = step % self.turns
        if k not in self._cache:
            yaw, pitch, roll, fov = turned_views(self.rig, k, self.rotation)
            self._cache[k] = assign_views(self.n, yaw, pitch, roll, fov, self.view_hw,
                                          fov_y=rig_fovs_y(self.rig, self.view_hw),
                                          distortion_power=self.power, device=self.device)
        return self._cache[k]

    def fill(self, values: Tensor, views: LatticeViews, layout: LatticeLayout) -> Tensor:
        """Lattice values ``(T, C, N)`` -> the view grid in the model's layout
        (``[V*T, C, h, w]`` or ``[V, C, T, h, w]``)."""
        grid = lattice_to_views(values, views)
        return layout.views_layout(views.num_views, self.view_hw).from_grid(grid)

    def fuse(self, x0_views: Tensor, views: LatticeViews, layout: LatticeLayout, fraction: float) -> Tensor:
        """The views' x0 in the model's layout -> lattice values ``(T, C, N)``."""
        grid = layout.views_layout(views.num_views, self.view_hw).to_grid(x0_views)
        s = self.schedule.at(fraction)
        if s >= 1.0:
            weighted = views
        elif s > 0.0:
            weighted = LatticeViews(views.index, views.weight ** (1.0 / s), views.extent, views.n)
        else:
            flat_w, flat_i = views.weight.reshape(-1), views.index.reshape(-1)
            best = flat_w.new_zeros(views.n).scatter_reduce(0, flat_i, flat_w, "amax", include_self=False)
            winner = (flat_w >= best[flat_i]).to(flat_w.dtype).view_as(views.weight)
            weighted = LatticeViews(views.index, winner, views.extent, views.n)
        fused, _ = views_to_lattice(grid, weighted)
        return fused

    def denoiser(self, view_denoiser: Denoiser, layout: LatticeLayout,
                 step_of: Callable[[Tensor], tuple[int, float]]) -> Denoiser:
        """A denoiser of lattice latents for host-free sampling: ``view_denoiser`` on the
        views of the step ``step_of(sigma) = (step, fraction)``, fused back."""

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            step, fraction = step_of(sigma)
            views = self.views(step)
            x0v = view_denoiser(self.fill(layout.values(x), views, layout), sigma)
            return layout.latent(self.fuse(x0v, views, layout, fraction))

        return denoise
