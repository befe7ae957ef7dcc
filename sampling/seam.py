"""Seam handling for any latent diffusion model: rotation during denoising and
seam-blended decoding (Argus, ICCV 2025, ``src/sampling_svd.py``; see
``shared/specs/argus-videofrom3d.md`` §1d).

An equirect image wraps around: its left and right borders are the same meridian
(longitude ±180°, docs/conventions.md).  Ordinary image models treat the borders as
the edge of the world, so content on the two sides of the 0/360° seam is generated
independently and rarely matches.  Two tricks fix that without retraining:

**Rotation during denoising.**  Argus rolls the latent (and its concat conditioning)
by a quarter of the width after every sampling step but the last, then rolls the
result back so the net rotation is zero.  The model therefore sees the seam at a
different place every step and has to make every column pair coherent.

Here the sampler's state ``x`` never leaves the canonical frame.  Instead the
*denoiser call* is wrapped: ``x`` and every spatial conditioning tensor are rolled by
the step's cumulative offset before the model runs, and the prediction is rolled back
after.  For a sampler whose update is pointwise in space (Euler, Heun, DPM-Solver, LMS…: they
combine ``x`` and predictions element by element) a roll, a permutation of columns,
commutes with the update: running the loop on rolled tensors and un-rolling at the end
gives the same numbers as running it in the canonical frame with rolled model calls, as
long as every model call sees the roll Argus's loop would show it.  That holds exactly for
first-order samplers; a second-order sampler's correction call sits at the next step's
sigma and sees the next turn (:class:`.hooks.UnetRollWrapper` says what that changes).
Ancestral samplers add fresh noise each step; the noise is drawn in a different frame
but has the same distribution, so the result is equivalent in law, not bit for bit.
The canonical-frame design is what a ComfyUI model patch can do (ComfyUI's samplers own
``x``), needs no final un-roll, keeps noise masks, previews and callbacks in the
user's frame, and has no interpolation: rolls are whole latent columns.

**Seam-blended decoding** ("extended decoding" in Argus).  Decode the latent once as is
and once rolled by half its width (then un-roll the pixels by half the pixel width).
The first decode is clean in the middle and has the VAE's border artefacts at the
seam; the second is clean at the seam.  A horizontal weight that is 1 over the middle
and 0 at both borders, with linear ramps ``width / ratio`` pixels wide, blends them
so the seam columns come from the rolled decode's interior.

**Circular decoding and encoding.**  Pad the latent with wrapped columns (and rows
continued over the poles), decode once and crop: for a decoder whose receptive field
reaches at most the padding, the result equals a decoder with circular padding in every
layer (:func:`circular_decode`, :func:`circular_encode`).

Host-free: never imports ComfyUI.  Widths are the last tensor axis of latents
(``[B, C, H, W]`` image/SVD latents, ``[B, C, T, H, W]`` video latents) and the
second-to-last of channels-last pixels (``[B, H, W, C]``, ``[B, T, H, W, C]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..projection.padding import crop_erp, pad_erp
from .types import ProgressCallback, report

__all__ = [
    "ARGUS_ROLL_FRACTION",
    "ARGUS_BLEND_RATIO",
    "SPATIAL_COND_KEYS",
    "RollSchedule",
    "roll_width",
    "roll_conditioning",
    "rolled_denoiser",
    "seam_blend_weight",
    "seam_blended_decode",
    "CIRCULAR_COLUMNS",
    "circular_decode",
    "circular_encode",
]

# Argus rolls by latent_width // 4 (90°) after every step but the last
# (src/sampling_svd.py, `rotation_during_inference`).
ARGUS_ROLL_FRACTION = 0.25
# Argus's inference script uses --blend_decoding_ratio 16: ramps width/16 wide
# (scripts/test/inference.sh; training used 4).
ARGUS_BLEND_RATIO = 16.0

# Keys of a ComfyUI model call's conditioning dict (``c``) that are laid out like the
# latent and must turn with it: concat latents (SD inpaint, SVD, Argus), image
# conditions, inpaint masks fed to the model, per-token denoise masks (LTXV), control
# and VACE videos, pose latents (comfy/model_base.py, 0.3.64, `extra_conds`).
SPATIAL_COND_KEYS = (
    "c_concat",
    "image_cond",
    "concat_mask",
    "denoise_mask",
    "control_video",
    "vace_context",
    "pose_latents",
)

# Latent columns the circular codec wraps on each side by default.  PanoWan decodes with 2
# wrapped latent columns (pipelines/wan_video.py, latent_padding_size=2) and HunyuanWorld
# blends 6 (demo_panogen.py, blend_extend=6); 4 reaches past the 3x3-conv stacks of a
# decoder's last levels at about 3% of a 256-column latent.
CIRCULAR_COLUMNS = 4

# Absolute slack when flooring fraction · width (float rounding of decimal fractions).
FRACTION_EPS = 1e-9


# ---------------------------------------------------------------------------
# Roll schedule
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RollSchedule:
    """Which cumulative roll the model sees at each sampling step: the pack's one roll
    mechanism, for ComfyUI models (:class:`.hooks.UnetRollWrapper`) and PanoDiT alike.

    fraction: roll per turn as a fraction of the width, in (0, 1).  0.25 = 90° (Argus).
    every: turn after every ``every`` steps (1 = after every step, Argus).
    at_steps: instead of ``every``, one turn just before each listed step (a step listed
    twice turns twice); Look Beyond turns at fixed points of its 1000-step schedule.
    start: turns applied before the first step (Look Beyond: -1, a quarter turn back).

    Argus's loop rolls the latent after step ``i`` when ``i`` is not the last step, so
    step ``i`` (0-based) sees the cumulative roll ``(i // every) · shift``; steps are
    counted from the first step actually sampled.
    """

    fraction: float = ARGUS_ROLL_FRACTION
    every: int = 1
    at_steps: tuple[int, ...] | None = None
    start: int = 0

    def __post_init__(self):
        if not (0.0 < self.fraction < 1.0):
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        if int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got {self.every}")
        if self.at_steps is not None and any(int(k) != k or k < 0 for k in self.at_steps):
            raise ValueError(f"at_steps must be step indices >= 0, got {self.at_steps}")

    def shift(self, width: int) -> int:
        """Columns per turn for a tensor ``width`` columns wide (floor, as Argus's
        ``width // 4``); at least 1."""
        if width < 2:
            raise ValueError(f"width must be >= 2 to roll, got {width}")
        # the epsilon keeps e.g. 0.3 · 10 = 2.9999999999999996 from flooring one column short
        return max(1, math.floor(self.fraction * width + FRACTION_EPS))

    def turns(self, step: int) -> int:
        """Turns done when ``step`` is evaluated (``start`` included)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.at_steps is None:
            return self.start + step // self.every
        return self.start + sum(1 for k in self.at_steps if k <= step)

    def offset(self, step: int, width: int) -> int:
        """Cumulative roll (columns, in ``[0, width)``) the model sees at ``step``."""
        return self.turns(step) * self.shift(width) % width

    def final_unroll(self, total_steps: int, width: int) -> int:
        """The roll that brings an Argus-style rolled latent back to the canonical frame
        after ``total_steps`` steps (no roll follows the last step): minus the last
        step's offset, in ``[0, width)``."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        return -self.offset(total_steps - 1, width) % width


def roll_width(x: Tensor, shift: int) -> Tensor:
    """Roll a latent ``(..., W)`` by ``shift`` columns to the right (content at column
    ``j`` moves to ``j + shift``, wrapping).  A new tensor; ``x`` is not changed."""
    return torch.roll(x, shifts=int(shift), dims=-1)


def _roll_control(control: Mapping[str, Any], shift: int, width: int) -> dict:
    """Roll ControlNet residuals (``{"input"|"middle"|"output": [Tensor | None]}``),
    each by ``shift`` scaled to its own width.  Raises if a residual's width does not
    divide the latent width evenly (the roll would not be a whole number of columns)."""
    out = {}
    for name, items in control.items():
        rolled = []
        for t in items:
            if t is None:
                rolled.append(None)
                continue
            w = t.shape[-1]
            if (shift * w) % width:
                raise ValueError(
                    f"control['{name}']: residual width {w} cannot follow a roll of {shift} "
                    f"of {width} latent columns by whole columns; use a roll fraction whose "
                    f"shift is a multiple of {width // math.gcd(width, w)} columns"
                )
            rolled.append(roll_width(t, shift * w // width))
        out[name] = rolled
    return out


def roll_conditioning(c: Mapping[str, Any], shift: int, width: int,
                      keys: tuple[str, ...] = SPATIAL_COND_KEYS) -> dict:
    """Roll the spatial entries of a model call's keyword arguments.

    c: keyword arguments of a denoiser call (ComfyUI's ``c``: ``c_concat``,
    ``c_crossattn``, ``control``, ``transformer_options``…).  Tensors under ``keys``
    must have the latent's width on their last axis and are rolled by ``shift``;
    ``control`` residuals are rolled by the same angle at their own width; everything
    else (text, pooled vectors, options) is passed through.  Returns a new dict.
    """
    out = dict(c)
    for key in keys:
        value = out.get(key)
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise ValueError(f"conditioning '{key}': expected a tensor, got {type(value).__name__}")
        if value.shape[-1] != width:
            raise ValueError(
                f"conditioning '{key}': last axis must be the latent width {width} to roll "
                f"with it, got shape {list(value.shape)}"
            )
        out[key] = roll_width(value, shift)
    if isinstance(out.get("control"), Mapping):
        out["control"] = _roll_control(out["control"], shift, width)
    return out


Denoiser = Callable[..., Tensor]  # (x, sigma, **extra) -> denoised, x's shape


def rolled_denoiser(denoiser: Denoiser, shift_for: Callable[[Tensor, Mapping[str, Any]], int],
                    keys: tuple[str, ...] = SPATIAL_COND_KEYS) -> Denoiser:
    """Wrap ``denoiser(x, sigma, **extra) -> denoised`` so it sees rolled inputs and
    returns its prediction in the canonical frame.

    shift_for(sigma, extra) -> columns to roll this call by (e.g. from a
    :class:`RollSchedule` and :func:`.sigmas.step_from_sigma`).  ``x``: ``(B, C, H, W)`` or
    ``(B, C, T, H, W)``, width last.  Spatial entries of ``extra`` are rolled with
    ``x`` (:func:`roll_conditioning`); the output is rolled back by the same shift.
    """

    def wrapped(x: Tensor, sigma: Tensor, **extra) -> Tensor:
        width = x.shape[-1]
        shift = int(shift_for(sigma, extra)) % width
        if shift == 0:
            return denoiser(x, sigma, **extra)
        out = denoiser(roll_width(x, shift), sigma, **roll_conditioning(extra, shift, width, keys))
        return roll_width(out, -shift)

    return wrapped


# ---------------------------------------------------------------------------
# Seam-blended decoding
# ---------------------------------------------------------------------------


def seam_blend_weight(width: int, ratio: float = ARGUS_BLEND_RATIO, *,
                      device=None, dtype=torch.float32) -> Tensor:
    """Weight ``(width,)`` of the plain decode: 0 at both borders, 1 over the middle,
    linear ramps between (the rolled decode gets ``1 - weight``).

    Argus's layout (``decode_latents``): each half of the image is
    ``[zeros(flat), linspace(0, 1, ramp), ones(flat)]`` mirrored, with
    ``ramp ≈ width / ratio`` and ``flat = (width/2 - width//ratio) // 2``; for
    width 1024 and ratio 16 the ramps are 64 px wide starting at 224 and 736 px.
    ratio: >= 2 (2 = ramps over the whole half, no flat parts).
    """
    if width < 4 or width % 2:
        raise ValueError(f"width must be even and >= 4, got {width}")
    if not ratio >= 2:
        raise ValueError(f"ratio must be >= 2, got {ratio}")
    half = width // 2
    ramp_target = min(half, max(2, int(width // ratio)))
    flat = (half - ramp_target) // 2
    ramp = half - 2 * flat  # absorbs the rounding so the half is exactly covered
    left = torch.cat([
        torch.zeros(flat, dtype=torch.float64),
        torch.linspace(0.0, 1.0, ramp, dtype=torch.float64),
        torch.ones(flat, dtype=torch.float64),
    ])
    return torch.cat([left, left.flip(0)]).to(device=device, dtype=dtype)


def seam_blended_decode(decode: Callable[[Tensor], Tensor], latent: Tensor,
                        ratio: float = ARGUS_BLEND_RATIO, *, pixel_width_dim: int = -2,
                        batch_chunk: int = 0,
                        callback: ProgressCallback | None = None) -> Tensor:
    """Decode an equirect latent without a visible 0/360° seam.

    decode: latent ``(b, C, [T,] h, w)`` -> pixels with the width on
    ``pixel_width_dim`` (ComfyUI's VAE: ``[b, H, W, C]`` or ``[b, T, H, W, C]``, so
    -2); the pixel width must be a whole multiple of the latent width.
    latent: ``(B, C, H, W)`` or ``(B, C, T, H, W)``; width (last axis) even.
    batch_chunk: decode this many batch items per call (0 = all at once).
    callback(done, total): after each of the ``2 · ceil(B / batch_chunk)`` decodes.
    Returns the blended pixels, the layout ``decode`` returns, batch on axis 0.
    Where the weight is 1 (the middle) the result is the plain decode, exactly.
    """
    if latent.ndim not in (4, 5):
        raise ValueError(f"latent must be 4-D [B,C,H,W] or 5-D [B,C,T,H,W], got shape {list(latent.shape)}")
    w_lat = latent.shape[-1]
    if w_lat < 2 or w_lat % 2:
        raise ValueError(f"latent width must be even to roll by half, got {w_lat}")
    if batch_chunk < 0:
        raise ValueError(f"batch_chunk must be >= 0, got {batch_chunk}")
    half_lat = w_lat // 2
    chunk = batch_chunk or latent.shape[0]
    pieces = []
    step = 0
    total = 2 * -(-latent.shape[0] // chunk)
    for start in range(0, latent.shape[0], chunk):
        part = latent[start:start + chunk]
        plain = decode(part)
        step += 1
        report(callback, step, total)
        rolled = decode(roll_width(part, half_lat))
        step += 1
        report(callback, step, total)
        if rolled.shape != plain.shape:
            raise ValueError(f"decode gave shape {list(rolled.shape)} for the rolled latent and "
                             f"{list(plain.shape)} for the plain one")
        w_px = plain.shape[pixel_width_dim]
        if w_px % w_lat:
            raise ValueError(f"pixel width {w_px} is not a multiple of latent width {w_lat}")
        rolled = torch.roll(rolled, shifts=-half_lat * (w_px // w_lat), dims=pixel_width_dim)
        weight = seam_blend_weight(w_px, ratio, device=plain.device, dtype=plain.dtype)
        dim = pixel_width_dim % plain.ndim
        weight = weight.reshape([-1] + [1] * (plain.ndim - 1 - dim))
        # Not torch.lerp: weight·plain + (1 − weight)·rolled is exactly ``plain`` where weight is 1.
        pieces.append(plain * weight + rolled * (1.0 - weight))
    return torch.cat(pieces, dim=0)


# ---------------------------------------------------------------------------
# Circular decoding and encoding
# ---------------------------------------------------------------------------


def _check_pad_counts(columns: int, pole_rows: int) -> None:
    for name, value in (("columns", columns), ("pole_rows", pole_rows)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def circular_decode(decode: Callable[[Tensor], Tensor], latent: Tensor, columns: int = CIRCULAR_COLUMNS,
                    pole_rows: int = 0, *, pixel_width_dim: int = -2, batch_chunk: int = 0,
                    callback: ProgressCallback | None = None) -> Tensor:
    """Decode an equirect latent as if the decoder's convolutions wrapped around the sphere.

    The latent is padded with ``columns`` wrapped columns on each side and ``pole_rows``
    rows continued over each pole (:func:`..projection.padding.pad_erp`), decoded once, and
    the padding's pixels are cropped.  For a decoder whose receptive field reaches at most
    ``columns`` latent columns this equals decoding with circular padding in every layer
    (global layers, such as a VAE's mid-block attention, see the padding once more).
    ``pole_rows`` gives the decoder the rows beyond each pole (turned by half the width)
    instead of zeros; a flip is no convolution's symmetry, so there is no per-layer
    equivalent for them.  One decode of ``W + 2 columns`` instead of the blended decode's two.

    decode: latent ``(b, C, [T,] h, w)`` -> pixels with the width on ``pixel_width_dim``
    and the height just before it (ComfyUI's VAE: ``[b, H, W, C]`` or ``[b, T, H, W, C]``).
    Returns the pixels in ``decode``'s layout, batch on axis 0.
    """
    if latent.ndim not in (4, 5):
        raise ValueError(f"latent must be 4-D [B,C,H,W] or 5-D [B,C,T,H,W], got shape {list(latent.shape)}")
    _check_pad_counts(columns, pole_rows)
    if batch_chunk < 0:
        raise ValueError(f"batch_chunk must be >= 0, got {batch_chunk}")
    h_lat, w_lat = latent.shape[-2:]
    padded = pad_erp(latent, columns, pole_rows)
    chunk = batch_chunk or latent.shape[0]
    total = -(-latent.shape[0] // chunk)
    pieces = []
    for k, start in enumerate(range(0, latent.shape[0], chunk)):
        pixels = decode(padded[start:start + chunk])
        report(callback, k + 1, total)
        wd = pixel_width_dim % pixels.ndim
        w_px, h_px = pixels.shape[wd], pixels.shape[wd - 1]
        if w_px % padded.shape[-1] or h_px % padded.shape[-2]:
            raise ValueError(f"decoded size {h_px}x{w_px} is not a whole multiple of the padded latent "
                             f"{padded.shape[-2]}x{padded.shape[-1]}")
        sx, sy = w_px // padded.shape[-1], h_px // padded.shape[-2]
        pixels = pixels.narrow(wd, columns * sx, w_lat * sx).narrow(wd - 1, pole_rows * sy, h_lat * sy)
        pieces.append(pixels)
    return torch.cat(pieces, dim=0)


def circular_encode(encode: Callable[[Tensor], Tensor], pixels: Tensor, scale: int,
                    columns: int = CIRCULAR_COLUMNS, pole_rows: int = 0) -> Tensor:
    """Encode equirect pixels as if the encoder's convolutions wrapped around the sphere.

    pixels: channels-last ``(..., H, W, C)`` (ComfyUI IMAGE ``[B, H, W, C]``, or video frames
    ``[T, H, W, C]``).  scale: the encoder's spatial downscale (8 for SD/Flux/Wan 2.1 VAEs).
    The pixels are padded by ``columns * scale`` wrapped columns and ``pole_rows * scale``
    rows over each pole, encoded, and the latent's padding (``columns``, ``pole_rows``)
    cropped.  encode: pixels -> latent ``(b, C, [T,] h, w)``.
    """
    _check_pad_counts(columns, pole_rows)
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if pixels.ndim < 3:
        raise ValueError(f"pixels must be channels-last (..., H, W, C), got shape {list(pixels.shape)}")
    h, w = pixels.shape[-3:-1]
    if h % scale or w % scale:
        raise ValueError(f"pixel size {h}x{w} must be a multiple of the encoder's scale {scale}")
    chw = pixels.movedim(-1, -3)
    padded = pad_erp(chw, columns * scale, pole_rows * scale).movedim(-3, -1)
    latent = encode(padded.contiguous())
    if latent.shape[-1] != w // scale + 2 * columns or latent.shape[-2] != h // scale + 2 * pole_rows:
        raise ValueError(f"encode gave a {latent.shape[-2]}x{latent.shape[-1]} latent for {padded.shape[-3]}x"
                         f"{padded.shape[-2]} pixels; expected the scale {scale}")
    return crop_erp(latent, columns, pole_rows)
