"""Look Beyond stage 1: complete a panorama band with PanoDiT, RePaint and seam rolls.

The procedure of Look Beyond's ``PanoDiT/sample_with_text.py`` on the pack's one DDPM loop
(:func:`...sampling.gaussian_diffusion.p_sample_loop`) and its one roll mechanism
(:class:`...sampling.seam.RollSchedule`):

- each step: replace the known region by ``q_sample(known, t)`` (RePaint, Lugmayr et al.
  2022), predict eps and the variance value, sample x_{t-1}, then reset the known region to
  its clean value and zero the padding rows of the canvas;
- seam rolls: the canvas (and the known latent and mask) is rolled by ``roll_shift``
  columns at given fractions of the schedule (original: W/4 at 750, 500, 250, after an
  initial -W/4) and rolled back at the end, so the output is aligned with the input.

Latents here are *scaled* SD-VAE latents (raw x 0.18215), as the model was trained on.
Tensors: band ``(N, C, h, w)`` with ``w == canvas size S`` and ``h <= S`` (Look Beyond:
32x64 band in a 64x64 canvas, 16 zero rows above and below); masks ``(N, 1, h, w)`` or
``(N, C, h, w)``, 1 = known.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ...sampling.gaussian_diffusion import NUM_TRAIN_TIMESTEPS, DiffusionSchedule, EpsVarModel, make_schedule, p_sample_loop
from ...sampling.seam import RollSchedule, roll_width
from ...sampling.types import ProgressCallback

__all__ = [
    "SD_VAE_SCALE",
    "LOOKBEYOND_ROLL_FRACTIONS",
    "band_to_canvas",
    "canvas_to_band",
    "lookbeyond_known_mask",
    "lookbeyond_output_orientation",
    "sample_panodit",
    "latent_mask",
    "parse_fractions",
    "complete_panorama",
]

SD_VAE_SCALE = 0.18215  # SD-VAE latent scale; extract_features.py and sample_with_text.py
LOOKBEYOND_ROLL_FRACTIONS = (0.75, 0.5, 0.25)  # p_sample_loop_progressive: i in [750, 500, 250]

# Canvas and Look Beyond's layout
# --------------------------------------------------------------------------------------


def band_to_canvas(band: Tensor, size: int) -> Tensor:
    """Zero-pad a (N, C, h, S) band to the (N, C, S, S) canvas, centred vertically."""
    n, c, h, w = band.shape
    if w != size or h > size or (size - h) % 2:
        raise ValueError(f"band must be (N, C, h, {size}) with {size} - h even and >= 0, got {tuple(band.shape)}")
    pad = (size - h) // 2
    return torch.nn.functional.pad(band, (0, 0, pad, pad))


def canvas_to_band(canvas: Tensor, band_h: int) -> Tensor:
    """Rows of the canvas that hold the band: (N, C, S, S) -> (N, C, band_h, S)."""
    top = (canvas.shape[-2] - band_h) // 2
    return canvas[..., top : top + band_h, :]


def lookbeyond_known_mask(h: int, w: int) -> Tensor:
    """sample_with_text.py's known region in input orientation: the full height of the
    right half of the panorama (longitudes 0..180°, a 180° strip), (1, 1, h, w) float."""
    mask = torch.zeros(1, 1, h, w)
    mask[..., w // 2 :] = 1.0
    return mask


def lookbeyond_output_orientation(band: Tensor) -> Tensor:
    """Turn an input-aligned result into the original script's output orientation: its
    rolls (-W/4 before, +W/4 x 3 during, +W/4 after) leave input column c at c - W/4."""
    return torch.roll(band, shifts=-band.shape[-1] // 4, dims=-1)


# --------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------


def _roll_steps(schedule: DiffusionSchedule, fractions: Sequence[float], num_train: int) -> list[int]:
    """Loop positions k (0 = first, noisiest step) before which the canvas is rolled: for
    each fraction f, the first step whose original timestep is <= f * num_train."""
    order = schedule.timesteps.flip(0).tolist()  # noisiest first
    out = []
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"roll fractions must be in [0, 1], got {f}")
        limit = round(f * num_train)
        hits = [k for k, t in enumerate(order) if t <= limit]
        if hits:
            out.append(hits[0])
    return out


def sample_panodit(
    model: EpsVarModel,
    known: Tensor,
    mask: Tensor,
    schedule: DiffusionSchedule,
    *,
    canvas_size: int,
    generator: torch.Generator | None = None,
    roll_fractions: Sequence[float] = LOOKBEYOND_ROLL_FRACTIONS,
    roll_shift: int | None = None,
    initial_shift: int | None = None,
    clip_denoised: bool = False,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Complete a panorama band with ancestral DDPM and RePaint known-region replacement.

    model: eps/variance network on the canvas (``EpsVarModel``).  known: (N, C, h, W)
    scaled latent band (only its masked part is used).  mask: (N or 1, 1 or C, h, W),
    1 = known (soft values blend).  schedule: ``make_schedule(steps)``.  canvas_size: S
    (== W).  roll_shift: columns per seam roll (default W // 4); initial_shift: roll
    before the first step, a multiple of roll_shift (default -roll_shift, as
    sample_with_text.py).  Randomness only from ``generator``, drawn in the original order
    (initial noise, then per step the q_sample noise and the step noise, each canvas-sized).
    callback(done, total) after each step.

    Returns the (N, C, h, W) band aligned with ``known`` (all rolls undone); float32.
    """
    if known.ndim != 4:
        raise ValueError(f"known must be (N, C, h, W), got {tuple(known.shape)}")
    n, c, h, w = known.shape
    if mask.ndim != 4 or mask.shape[-2:] != (h, w) or mask.shape[1] not in (1, c) or mask.shape[0] not in (1, n):
        raise ValueError(f"mask must be (N or 1, 1 or {c}, {h}, {w}), got {tuple(mask.shape)}")
    shift = w // 4 if roll_shift is None else int(roll_shift)
    if not 0 < shift < w:
        raise ValueError(f"roll_shift must be in 1..{w - 1} columns, got {shift}")
    initial = -shift if initial_shift is None else int(initial_shift)
    if initial % shift:
        raise ValueError(f"initial_shift must be a multiple of roll_shift ({shift}), got {initial}")
    rolls = RollSchedule(fraction=shift / w, at_steps=tuple(_roll_steps(schedule, roll_fractions, num_train_timesteps)),
                         start=initial // shift)
    device = known.device
    known_c = band_to_canvas(known.float(), canvas_size)
    mask_c = band_to_canvas(mask.float().expand(n, c, h, w), canvas_size)
    rows = band_to_canvas(torch.ones(1, 1, h, w, device=device), canvas_size)  # 1 on band rows
    noise_device = generator.device if generator is not None else device

    def randn() -> Tensor:  # drawn where the generator lives (CPU seeds reproduce on any device)
        return torch.randn(known_c.shape, generator=generator, device=noise_device).to(device)

    # The canvas lives in the rolled frame, as in the original loop (its noise is drawn there).
    frame = {"offset": rolls.turns(0) * shift}
    held = {"known": roll_width(known_c, frame["offset"]), "mask": roll_width(mask_c, frame["offset"])}

    def before(x: Tensor, k: int, i: int) -> Tensor:
        delta = rolls.turns(k) * shift - frame["offset"]
        if delta:
            x = roll_width(x, delta)
            held["known"], held["mask"] = roll_width(held["known"], delta), roll_width(held["mask"], delta)
            frame["offset"] += delta
        return torch.lerp(x, schedule.q_sample(held["known"], i, randn()), held["mask"])  # RePaint

    def after(x: Tensor, k: int, i: int) -> Tensor:
        return torch.lerp(x, held["known"], held["mask"]) * rows

    x = torch.lerp(randn(), held["known"], held["mask"])  # z[mask] = known
    x = p_sample_loop(model, x, schedule, noise=randn, before=before, after=after,
                      clip_denoised=clip_denoised, callback=callback)
    return canvas_to_band(roll_width(x, -frame["offset"]), h)


# --------------------------------------------------------------------------------------
# Stage: raw VAE latents in, raw VAE latents out
# --------------------------------------------------------------------------------------

KNOWN_CELL_THRESHOLD = 0.5  # a latent cell is known when at least half its pixels are known


def latent_mask(mask: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """A known-region mask at any resolution -> (B, 1, h, w) binary latent mask.

    mask: (B, H, W), 1 = known, with H/W == h/w (latent-sized or pixel-sized, e.g. 8x).
    Pixel masks are area-averaged to latent cells and thresholded at
    ``KNOWN_CELL_THRESHOLD`` so RePaint replaces whole cells exactly.
    """
    h, w = latent_hw
    if mask.ndim != 3 or mask.shape[-2] * w != mask.shape[-1] * h:
        raise ValueError(f"mask must be (B, H, W) with the latent's aspect {h}x{w}, got {tuple(mask.shape)}")
    m = mask.float()[:, None]
    if m.shape[-2:] != (h, w):
        m = torch.nn.functional.adaptive_avg_pool2d(m, (h, w))
    return (m >= KNOWN_CELL_THRESHOLD).float()


def parse_fractions(text: str) -> tuple[float, ...]:
    """"0.75, 0.5, 0.25" -> (0.75, 0.5, 0.25); empty -> (); each in [0, 1]."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"roll fractions must be comma-separated numbers in [0, 1], got {text!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"roll fractions must be in [0, 1], got {value} in {text!r}")
        out.append(value)
    return tuple(out)


def complete_panorama(
    network: Callable[[Tensor, Tensor, Tensor], Tensor],
    raw_latent: Tensor,
    mask: Tensor,
    text: Tensor,
    *,
    canvas_size: int,
    steps: int,
    generator: torch.Generator,
    roll_fractions: Sequence[float] = LOOKBEYOND_ROLL_FRACTIONS,
    roll_shift_fraction: float = 0.25,
    lookbeyond_orientation: bool = False,
    callback: ProgressCallback | None = None,
) -> Tensor:
    """Look Beyond stage 1 on raw SD-VAE latents.

    network: ``(x (N,C,S,S), t (N,), text (N,1,D)) -> (N, 2C, S, S)`` (a PanoDiT).
    raw_latent: (N, C, S/2, S) unscaled latents of a 2:1 equirect (256x512 px for S=64).
    mask: (N or 1, 1, S/2, S), 1 = known.  text: (N or 1, [L,] D) text feature.
    roll_shift_fraction: seam roll as a fraction of the width (0.25 = W/4, the original);
    the initial roll is its negative.  lookbeyond_orientation: return the original
    script's output orientation (``lookbeyond_output_orientation``) instead of the input's.
    Returns (N, C, S/2, S) raw latents for a standard VAE decode.
    """
    n = raw_latent.shape[0]
    if text.shape[0] not in (1, n) or text.ndim not in (2, 3):
        raise ValueError(f"text must be (1 or {n}, [L,] D), got {tuple(text.shape)}")
    text = (text[:, None] if text.ndim == 2 else text).float().expand(n, -1, -1)
    shift = round(roll_shift_fraction * canvas_size)
    band = sample_panodit(
        lambda x, t: network(x, t, text),
        raw_latent.float() * SD_VAE_SCALE,
        mask,
        make_schedule(steps),
        canvas_size=canvas_size,
        generator=generator,
        roll_fractions=roll_fractions,
        roll_shift=shift,
        initial_shift=-shift,
        callback=callback,
    )
    if lookbeyond_orientation:
        band = lookbeyond_output_orientation(band)
    return band / SD_VAE_SCALE
