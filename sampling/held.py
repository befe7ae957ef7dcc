"""Held (given) cells: latents a sampler keeps at known values while it generates the rest.

One concept with two uses: VideoPanda's view mask (a conditioning video at one view, the
row carried into an autoregressive window) and every inpainting-style stage of the pack.
:class:`HeldCells` is the rule of ComfyUI's ``KSamplerX0Inpaint`` (``comfy/samplers.py``):
before the model, kept cells of ``x`` are the given latent noised to the current sigma;
after it, kept cells of the prediction are the given latent.  :func:`given_grid` places a
given view (or the whole grid) into a view×frame latent; :func:`held_on_lattice` places
given pinhole views onto the points of a lattice latent (the ``uniform_sphere`` space).

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..projection import Rig
from ..projection.lattice import perspective_to_lattice
from .fusion import LatentLayout, rig_fovs_y

__all__ = ["one_view_frames", "given_grid", "held_on_lattice", "HeldCells"]


def one_view_frames(given: Tensor, layout: LatentLayout) -> Tensor | None:
    """A single view's latents as ``(T, C, h, w)``, or None when ``given`` is not one view.

    One view is ``(T, C, h, w)`` for 4-D layouts and ``(1, C, T, h, w)`` for 5-D ones, with
    the layout's frames, channels and size.
    """
    cell = (layout.channels, layout.height, layout.width)
    if not layout.video and given.ndim == 4 and tuple(given.shape) == (layout.frames, *cell):
        return given
    if layout.video and given.ndim == 5 and tuple(given.shape) == (1, layout.channels, layout.frames, *cell[1:]):
        return given[0].permute(1, 0, 2, 3)
    return None


def given_grid(given: Tensor, layout: LatentLayout, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Given latents as a full grid in ``layout``'s format, and the ``[V, T]`` cells they fill.

    given: the full grid (``layout.shape``; fills every cell the mask marks), or one view
    (:func:`one_view_frames`), placed at the mask's *columns*: the views given at every
    frame (the input video of the ``first_column`` regimes).  Other cells of the returned
    grid are zero.  ValueError on any other shape, or for one view when no view is given at
    every frame.
    """
    mask = (mask > 0.5).to(torch.float32)
    if tuple(given.shape) == layout.shape:
        return given, mask
    frames = one_view_frames(given, layout)
    if frames is None:
        one = (layout.frames, layout.channels, layout.height, layout.width)
        if layout.video:
            one = (1, layout.channels, layout.frames, layout.height, layout.width)
        raise ValueError(
            f"given latents must be the whole grid {list(layout.shape)} or one view {list(one)}, "
            f"got {list(given.shape)}"
        )
    columns = mask.bool().all(dim=1)
    if not bool(columns.any()):
        raise ValueError("one view of given latents needs a view mask with a view given at every frame (a column)")
    cells = torch.zeros(layout.views, layout.frames, *frames.shape[1:], dtype=frames.dtype, device=frames.device)
    cells[columns] = frames
    filled = torch.zeros_like(mask)
    filled[columns] = 1.0
    return layout.from_cells(cells), filled


def held_on_lattice(grid: Tensor, mask: Tensor, rig: Rig, n: int) -> tuple[Tensor, Tensor]:
    """Given pinhole views placed on the points of an ``n``-point lattice, per frame.

    grid: VIEW-MAJOR ``(V*T, C, h, w)`` latents (the given cells' values; others ignored).
    mask: ``[V, T]``, 1 = given.  Each given view is sampled (bilinear) at the lattice points
    inside its frame (:func:`..projection.lattice.perspective_to_lattice`); where several
    given views of a frame see a point their values are averaged.  Returns ``(values (T, C,
    n), held (T, 1, n))``, held 1 where some given view sees the point (values 0 elsewhere).
    """
    v = rig.num_views
    if tuple(mask.shape) != (v, grid.shape[0] // v) or grid.shape[0] % v:
        raise ValueError(f"mask: expected [{v}, {grid.shape[0] // max(v, 1)}] for a grid of {grid.shape[0]} views "
                         f"x frames, got {list(mask.shape)}")
    t, c = grid.shape[0] // v, grid.shape[1]
    values = grid.new_zeros(t, c, n)
    count = grid.new_zeros(t, 1, n)
    cells = (mask > 0.5).nonzero().tolist()
    if cells:
        yaw, pitch, roll, fov = rig.angles(dtype=torch.float64)
        idx = torch.tensor([vi * t + ti for vi, ti in cells])
        vs = torch.tensor([vi for vi, _ in cells])
        fov_y = rig_fovs_y(rig, tuple(grid.shape[-2:]))
        vals, inside = perspective_to_lattice(grid[idx.to(grid.device)], yaw[vs], pitch[vs], roll[vs], fov[vs], n,
                                              fov_y=None if fov_y is None else fov_y[vs])
        frames = torch.tensor([ti for _, ti in cells], device=grid.device)
        values.index_add_(0, frames, vals)
        count.index_add_(0, frames, inside)
    held = (count > 0).to(grid.dtype)
    return values / count.clamp_min(1.0), held


@dataclass(frozen=True)
class HeldCells:
    """Hold given cells, the rule of ComfyUI's ``KSamplerX0Inpaint`` for EPS-style scaling.

    latent: the given values (same shape as the samples; other cells ignored).  keep:
    broadcastable to the samples, 1 = given (ComfyUI ``1 - noise_mask``).  noise: the
    sampler's initial noise.  until: cells are held while the step fraction is below it;
    afterwards they are denoised like the rest from ``latent + sigma * noise`` (noise
    augmentation at that sigma).
    """

    latent: Tensor
    keep: Tensor
    noise: Tensor
    until: float = 1.0

    def active(self, fraction: float) -> bool:
        return fraction < self.until

    def before(self, x: Tensor, sigma: Tensor, fraction: float) -> Tensor:
        """Model input: kept cells replaced by the given latent noised to ``sigma``."""
        if not self.active(fraction):
            return x
        return torch.lerp(x, self.latent + sigma * self.noise, self.keep)

    def after(self, x0: Tensor, fraction: float) -> Tensor:
        """Model output: kept cells replaced by the given latent."""
        if not self.active(fraction):
            return x0
        return torch.lerp(x0, self.latent, self.keep)
