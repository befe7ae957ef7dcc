"""Spherical rotary position embedding for DiTs on equirect latents: a width axis that wraps.

A DiT with RoPE (Flux, Chroma, Wan, Lumina 2 / Z-Image, Qwen-Image) sees an equirect
latent as a flat picture: the tokens of its first and last columns, neighbours on the
sphere, are as far apart as two tokens can be.  RoPE rotates each pair of query/key
channels by ``omega_k * position``; the attention score of two tokens depends on
``omega_k * (p1 - p2)``.  Replacing every width frequency by the nearest multiple of
``2 pi / P`` (``P`` = positions per turn, the latent's width in tokens) makes every
rotation periodic in ``P``: column ``W - 1`` is then exactly as far from column 0 as
column 1 is (SHERPA's "circular RoPE", 2026, replaces the high-frequency band the same way and
keeps the low one; Pano360 rounds every frequency so the wrap is exact, and frequencies
below half a turn per panorama become constant).  The other axes (time, height, the text
tokens' index) keep the model's own rope.

``wrap_pole`` also scales the width harmonics of each token row by the sine of its
colatitude (rounded to integers, so the wrap stays exact): near a pole, where a whole
token row is a small circle on the sphere, neighbouring columns get nearly the same
position, as they are nearly the same direction.  Scores within a row remain functions of
the column distance; across rows of different harmonics they are not exactly shift
invariant (an approximation: a single rotation per channel pair cannot give both).

ComfyUI's ``transformer_options["rope_options"]`` (0.33: ``scale_x``, ``shift_x``, ... in
the Flux, Wan, Lumina and Kandinsky models) only scales and shifts positions linearly, which
cannot make them periodic; the patch therefore replaces the model's ``EmbedND`` module (the
same class in every one of these models and on both supported hosts) with
:class:`SphericalRoPE`, and reads the scales from ``rope_options`` where present.  The
module needs the token grid of the latent being denoised, which the model wrapper installed
next to it provides through :data:`CURRENT_GRID` for the duration of one model call
(context-local: no state on the module, safe with several devices or threads).

Nothing here imports ComfyUI; ``rope_fn`` is the host's own ``comfy.ldm.flux.math.rope``,
passed in so the axes that do not wrap are bit-identical to the unpatched model.
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "MODES",
    "FAMILIES",
    "TokenGrid",
    "RopeFamily",
    "CURRENT_GRID",
    "family_of",
    "token_grid",
    "grid_for_latent",
    "wrapped_harmonics",
    "wrapped_rope",
    "SphericalRoPE",
    "grid_wrapper",
]

RopeFn = Callable[[Tensor, int, float], Tensor]  # comfy.ldm.flux.math.rope(pos, dim, theta)

MODES = ("wrap", "wrap_pole")
# Devices computing the rotation angles in float64 (as ComfyUI's own rope() does where the
# device supports it); others compute on the CPU.
_FLOAT64_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TokenGrid:
    """Where an equirect latent's tokens sit on the model's RoPE axes.

    width_axis, height_axis: indices into the last axis of the position ids.  period:
    width positions per full turn (tokens x the width scale).  rows: token rows of the
    equirect; row ``r`` has height position ``row0 + r * row_step``.
    """

    width_axis: int
    height_axis: int
    period: float
    rows: int
    row0: float = 0.0
    row_step: float = 1.0

    def __post_init__(self):
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"period: expected a positive number of width positions per turn, got {self.period!r}")
        if self.rows < 1:
            raise ValueError(f"rows: expected at least one token row, got {self.rows!r}")
        if self.row_step == 0:
            raise ValueError("row_step: must not be 0")


@dataclass(frozen=True)
class RopeFamily:
    """How one family of ComfyUI DiTs lays out image tokens on its RoPE axes.

    embedder: attribute of the diffusion model holding its ``EmbedND``.  centered: image
    positions run from ``-(n // 2)`` (Qwen-Image) instead of 0.  rope_options: the model
    reads ComfyUI 0.33's ``transformer_options["rope_options"]`` scales and shifts.
    """

    embedder: str
    centered: bool
    rope_options: bool
    width_axis: int = 2
    height_axis: int = 1


# ComfyUI diffusion-model classes (comfy/ldm/*/model.py, 0.3.64 and 0.33.0) and their
# layouts: Flux.process_img / Chroma (ids = txt, img; axes index, h, w), WanModel.rope_encode
# (t, h, w), Lumina NextDiT pos_ids (cap index, h, w), QwenImageTransformer2DModel.process_img
# (index/t, h, w centred, no rope_options).  Subclasses (Flux-derived, Wan VACE/camera/S2V,
# ...) match through their MRO.
FAMILIES = {
    "Flux": RopeFamily("pe_embedder", centered=False, rope_options=True),
    "Chroma": RopeFamily("pe_embedder", centered=False, rope_options=False),
    "WanModel": RopeFamily("rope_embedder", centered=False, rope_options=True),
    "NextDiT": RopeFamily("rope_embedder", centered=False, rope_options=True),
    "QwenImageTransformer2DModel": RopeFamily("pe_embedder", centered=True, rope_options=False),
}


def family_of(diffusion_model: object) -> RopeFamily:
    """The :class:`RopeFamily` of a ComfyUI diffusion model (by class, through its MRO);
    ValueError naming the class and the supported ones otherwise."""
    for cls in type(diffusion_model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    raise ValueError(f"model: spherical RoPE supports the DiT families {sorted(FAMILIES)}; "
                     f"this model's network is {type(diffusion_model).__name__}")


CURRENT_GRID: ContextVar[TokenGrid | None] = ContextVar("pano360_spherical_rope_grid", default=None)


@contextlib.contextmanager
def token_grid(grid: TokenGrid) -> Iterator[TokenGrid]:
    """Make ``grid`` the token grid of the model call run inside the ``with`` block."""
    token = CURRENT_GRID.set(grid)
    try:
        yield grid
    finally:
        CURRENT_GRID.reset(token)


def grid_for_latent(shape: Sequence[int], patch: Sequence[int] | int, family: RopeFamily,
                    rope_options: dict | None = None) -> TokenGrid:
    """The :class:`TokenGrid` of an equirect latent ``(..., h, w)`` for ``family``.

    patch: the model's patch size (an int, or a tuple whose last two entries are height
    and width).  rope_options: ComfyUI 0.33's ``transformer_options["rope_options"]`` or None.
    ValueError unless the latent is 2:1 in tokens and whole patches.
    """
    h, w = int(shape[-2]), int(shape[-1])
    ph, pw = (int(patch), int(patch)) if isinstance(patch, int) else (int(patch[-2]), int(patch[-1]))
    if h % ph or w % pw:
        raise ValueError(f"latent: spherical RoPE needs whole patches; {h}x{w} (HxW) is not a multiple of "
                         f"the model's {ph}x{pw} patch")
    rows, cols = h // ph, w // pw
    if cols != 2 * rows:
        raise ValueError(f"latent: spherical RoPE is for equirect latents (width = 2 x height); "
                         f"got {rows}x{cols} tokens (HxW)")
    opts = (rope_options or {}) if family.rope_options else {}
    scale_x, scale_y = float(opts.get("scale_x", 1.0)), float(opts.get("scale_y", 1.0))
    row0 = float(opts.get("shift_y", 0.0)) - (rows // 2 if family.centered else 0)
    return TokenGrid(family.width_axis, family.height_axis, period=cols * scale_x, rows=rows,
                     row0=row0, row_step=scale_y)


def wrapped_harmonics(dim: int, theta: float, period: float) -> Tensor:
    """``(dim // 2,)`` float64 integers ``m_k``: RoPE frequency ``k`` of a ``dim``-channel
    axis, ``theta ** (-2k/dim)``, as a whole number of turns per ``period`` positions
    (``round(omega_k * period / 2 pi)``; the rotation is then ``m_k * 2 pi * p / period``)."""
    if dim % 2:
        raise ValueError(f"dim: RoPE needs an even number of channels per axis, got {dim}")
    scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64)
    omega = 1.0 / (theta ** scale)
    return torch.round(omega * period / (2 * math.pi))


def _rotations(angle: Tensor) -> Tensor:
    """Angles ``(..., d)`` -> rotation matrices ``(..., d, 2, 2)`` in ComfyUI's rope layout
    (``[[cos, -sin], [sin, cos]]``), float32."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angle.shape, 2, 2).to(torch.float32)


def wrapped_rope(ids: Tensor, dim: int, theta: float, grid: TokenGrid, pole: bool) -> Tensor:
    """Rope matrices ``(B, N, dim // 2, 2, 2)`` of the width axis of position ``ids (B, N, axes)``.

    Every frequency is a whole number of turns per ``grid.period`` positions; with ``pole``
    the harmonics of a token in image row ``r`` are ``round(m_k sin(colatitude_r))``
    (tokens outside the rows, e.g. Qwen's text tokens, keep ``m_k``).
    """
    out_device = ids.device
    # float64 like ComfyUI's rope(); devices without float64 (MPS, ...) compute on the CPU
    device = ids.device if ids.device.type in _FLOAT64_DEVICES else torch.device("cpu")
    ids = ids.to(device)
    pos = ids[..., grid.width_axis].to(torch.float64)
    harmonics = wrapped_harmonics(dim, theta, grid.period).to(device)
    turn = pos * (2 * math.pi / grid.period)  # (B, N)
    if not pole:
        return _rotations(turn[..., None] * harmonics).to(out_device)
    row = (ids[..., grid.height_axis].to(torch.float64) - grid.row0) / grid.row_step
    inside = (row > -0.5) & (row < grid.rows - 0.5)
    colat = (torch.round(row).clamp(0, grid.rows - 1) + 0.5) * (math.pi / grid.rows)
    factor = torch.where(inside, torch.sin(colat), torch.ones_like(colat))
    m = torch.round(factor[..., None] * harmonics)  # (B, N, d)
    return _rotations(turn[..., None] * m).to(out_device)


class SphericalRoPE(nn.Module):
    """Drop-in for ComfyUI's ``comfy.ldm.flux.layers.EmbedND`` with a wrapping width axis.

    dim, theta, axes_dim: the replaced module's.  rope_fn: the host's ``rope(pos, dim,
    theta)`` (used unchanged for every other axis).  mode: ``wrap`` or ``wrap_pole``.  The
    token grid comes from :data:`CURRENT_GRID` (set by the model wrapper for each call);
    RuntimeError when it is missing.  Output: ``(B, 1, N, sum(axes_dim) // 2, 2, 2)``, like
    ``EmbedND``.
    """

    def __init__(self, dim: int, theta: float, axes_dim: Sequence[int], rope_fn: RopeFn, mode: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: unknown spherical RoPE mode {mode!r}; choose one of {list(MODES)}")
        self.dim = dim
        self.theta = theta
        self.axes_dim = list(axes_dim)
        self.rope_fn = rope_fn
        self.mode = mode

    def forward(self, ids: Tensor) -> Tensor:
        grid = CURRENT_GRID.get()
        if grid is None:
            raise RuntimeError("Pano360 spherical RoPE: the model was called without its token grid "
                               "(the patch's model wrapper did not run; apply the patch with Pano360 Spherical RoPE)")
        n_axes = ids.shape[-1]
        if grid.width_axis >= n_axes or grid.height_axis >= n_axes:
            raise RuntimeError(f"Pano360 spherical RoPE: position ids have {n_axes} axes, the grid expects the "
                               f"width on axis {grid.width_axis}")
        parts = []
        for i in range(n_axes):
            if i == grid.width_axis:
                parts.append(wrapped_rope(ids, self.axes_dim[i], self.theta, grid, self.mode == "wrap_pole"))
            else:
                parts.append(self.rope_fn(ids[..., i], self.axes_dim[i], self.theta))
        return torch.cat(parts, dim=-3).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, theta={self.theta}, axes_dim={self.axes_dim}, mode={self.mode}"


def _transformer_options(args: tuple, kwargs: dict) -> dict:
    """The ``transformer_options`` of a diffusion model's ``forward`` call: a keyword
    (Lumina's NextDiT) or the last positional argument (Flux, Chroma, Wan, Qwen-Image in
    0.3.64 and 0.33); {} when absent."""
    if isinstance(kwargs.get("transformer_options"), dict):
        return kwargs["transformer_options"]
    if args and isinstance(args[-1], dict):
        return args[-1]
    return {}


def grid_wrapper(family: RopeFamily, patch: Sequence[int] | int) -> Callable:
    """A ComfyUI ``DIFFUSION_MODEL`` wrapper ``(executor, *args, **kwargs)`` that gives
    :class:`SphericalRoPE` the token grid of the latent ``args[0]`` (and of
    ``rope_options``) for the duration of the call.  Holds no state."""

    def wrapper(executor, *args, **kwargs):
        options = _transformer_options(args, kwargs)
        grid = grid_for_latent(tuple(args[0].shape), patch, family, options.get("rope_options"))
        with token_grid(grid):
            return executor(*args, **kwargs)

    return wrapper
