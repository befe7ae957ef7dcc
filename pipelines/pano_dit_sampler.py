"""PanoDiT sampling: ancestral DDPM with learned-range variance, RePaint known-region
replacement and seam rolls, on the square latent canvas that holds the panorama band.

Re-implements the sampling math of Look Beyond's ``PanoDiT/diffusion`` (fast-DiT's copy of
OpenAI's ADM/IDDPM ``gaussian_diffusion.py`` and ``respace.py``) and the procedure of
``sample_with_text.py`` (spec ``lookbeyond-videopanda-diffpano.md`` §1c-§1e):

- linear beta schedule, 1000 steps, every table computed once in float64 (Ho et al. 2020;
  Nichol & Dhariwal 2021 for the learned-range variance);
- respacing to fewer steps keeps a subset of timesteps and recomputes
  ``beta_i = 1 - abar_i / abar_prev_kept`` (ADM ``SpacedDiffusion``); the network is
  called with the *original* timestep;
- each step: replace the known region by ``q_sample(known, t)`` (RePaint, Lugmayr et al.
  2022), predict eps and the variance value v in [-1, 1], sample x_{t-1} with
  ``log var = (v+1)/2 log beta_t + (1-(v+1)/2) log var_posterior``, then reset the known
  region to its clean value and zero the padding rows of the canvas;
- seam rolls: the canvas (and the known latent and mask) is rolled by ``roll_shift``
  columns at given fractions of the schedule (original: W/4 at 750, 500, 250) and rolled
  back at the end, so the output is aligned with the input.

Latents here are *scaled* SD-VAE latents (raw x 0.18215), as the model was trained on.
Tensors: band ``(N, C, h, w)`` with ``w == canvas size S`` and ``h <= S`` (Look Beyond:
32x64 band in a 64x64 canvas, 16 zero rows above and below); masks ``(N, 1, h, w)`` or
``(N, C, h, w)``, 1 = known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "SD_VAE_SCALE",
    "NUM_TRAIN_TIMESTEPS",
    "LOOKBEYOND_ROLL_FRACTIONS",
    "EpsVarModel",
    "DiffusionSchedule",
    "linear_betas",
    "space_timesteps",
    "make_schedule",
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
NUM_TRAIN_TIMESTEPS = 1000  # train_with_text.py: create_diffusion(timestep_respacing="")
LINEAR_BETA_START = 1e-4  # Ho et al. 2020, scaled by 1000 / T (ADM get_named_beta_schedule)
LINEAR_BETA_END = 0.02
LOOKBEYOND_ROLL_FRACTIONS = (0.75, 0.5, 0.25)  # p_sample_loop_progressive: i in [750, 500, 250]

EpsVarModel = Callable[[Tensor, Tensor], Tensor]
"""(x (N, C, S, S), t (N,) original timesteps, float) -> (N, 2C, S, S): eps, variance value."""


def linear_betas(num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """ADM's "linear" schedule: ``linspace(1e-4, 0.02)`` scaled by ``1000/T``, float64 (T,)."""
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    scale = NUM_TRAIN_TIMESTEPS / num_timesteps
    return torch.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_timesteps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, section_counts: int | Sequence[int]) -> list[int]:
    """Timesteps kept when respacing (ADM ``respace.space_timesteps``), ascending.

    The T steps are split into ``len(section_counts)`` equal sections (the first
    ``T % len`` one step longer); section k keeps ``section_counts[k]`` evenly strided
    steps, first and last included, positions rounded half-to-even like Python's round.
    """
    counts = [section_counts] if isinstance(section_counts, int) else list(section_counts)
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"section_counts must be positive, got {section_counts!r}")
    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """Gaussian diffusion tables for the kept steps, float64, index i = 0 (least noise) ..

    ``timesteps[i]`` is the original timestep the network sees at index i.
    """

    timesteps: Tensor  # (n,) int64, original timestep per index
    betas: Tensor  # (n,) respaced betas
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor  # multiplies x0
    posterior_mean_coef2: Tensor  # multiplies x_t

    @classmethod
    def from_betas(cls, betas: Tensor, timesteps: Tensor | None = None) -> "DiffusionSchedule":
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor in (0, 1]")
        n = betas.shape[0]
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        # log clipped: the posterior variance is 0 at index 0, use index 1's value there.
        post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if n > 1 else torch.log(betas)
        return cls(
            timesteps=torch.arange(n) if timesteps is None else timesteps.to(torch.int64),
            betas=betas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log,
            posterior_mean_coef1=betas * abar_prev.sqrt() / (1.0 - abar),
            posterior_mean_coef2=(1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
        )

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def _at(self, table: Tensor, i: int, like: Tensor) -> Tensor:
        return table[i].to(device=like.device, dtype=like.dtype)

    def q_sample(self, x0: Tensor, i: int, noise: Tensor) -> Tensor:
        """Sample q(x_t | x0) at index i: ``sqrt(abar) x0 + sqrt(1 - abar) noise``."""
        abar = self.alphas_cumprod[i]
        return x0 * float(abar.sqrt()) + noise * float((1.0 - abar).sqrt())

    def predict_x0(self, x_t: Tensor, i: int, eps: Tensor) -> Tensor:
        abar = self.alphas_cumprod[i]
        return x_t * float((1.0 / abar).sqrt()) - eps * float((1.0 / abar - 1.0).sqrt())

    def q_posterior(self, x0: Tensor, x_t: Tensor, i: int) -> tuple[Tensor, float, float]:
        """Mean (x_t's shape), variance and clipped log variance of q(x_{t-1} | x_t, x0)."""
        mean = x0 * float(self.posterior_mean_coef1[i]) + x_t * float(self.posterior_mean_coef2[i])
        return mean, float(self.posterior_variance[i]), float(self.posterior_log_variance_clipped[i])

    def learned_range_log_variance(self, v: Tensor, i: int) -> Tensor:
        """Log variance interpolated between the posterior (v=-1) and beta_t (v=+1)."""
        frac = (v + 1.0) / 2.0
        max_log = float(torch.log(self.betas[i]))
        min_log = float(self.posterior_log_variance_clipped[i])
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_log_variance(self, model_out: Tensor, x_t: Tensor, i: int, clip_denoised: bool = False):
        """Split the network output (N, 2C, ...) into eps and v; return
        (mean of p(x_{t-1} | x_t), its log variance, predicted x0)."""
        c = x_t.shape[1]
        if model_out.shape[1] != 2 * c:
            raise ValueError(f"model output must have {2 * c} channels (eps, variance), got {model_out.shape[1]}")
        eps, v = model_out[:, :c], model_out[:, c:]
        x0 = self.predict_x0(x_t, i, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, x_t, i)
        return mean, self.learned_range_log_variance(v, i), x0


def make_schedule(steps: int | Sequence[int] = NUM_TRAIN_TIMESTEPS, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> DiffusionSchedule:
    """The linear schedule respaced to ``steps`` (an int, or ADM section counts)."""
    base = DiffusionSchedule.from_betas(linear_betas(num_train_timesteps))
    kept = space_timesteps(num_train_timesteps, steps)
    abar = base.alphas_cumprod[kept]
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return DiffusionSchedule.from_betas(1.0 - abar / prev, torch.tensor(kept))


# --------------------------------------------------------------------------------------
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
    callback: Callable[[int], None] | None = None,
) -> Tensor:
    """Complete a panorama band with ancestral DDPM and RePaint known-region replacement.

    model: eps/variance network on the canvas (``EpsVarModel``).  known: (N, C, h, W)
    scaled latent band (only its masked part is used).  mask: (N or 1, 1 or C, h, W),
    1 = known (soft values blend).  schedule: ``make_schedule(steps)``.  canvas_size: S
    (== W).  roll_shift: columns per seam roll (default W // 4); initial_shift: roll
    before the first step (default -W // 4, as sample_with_text.py).  Randomness only from
    ``generator``, drawn in the original order (initial noise, then per step the q_sample
    noise and the step noise, each canvas-sized).  callback(k) after each step k.

    Returns the (N, C, h, W) band aligned with ``known`` (all rolls undone); float32.
    """
    if known.ndim != 4:
        raise ValueError(f"known must be (N, C, h, W), got {tuple(known.shape)}")
    n, c, h, w = known.shape
    if mask.ndim != 4 or mask.shape[-2:] != (h, w) or mask.shape[1] not in (1, c) or mask.shape[0] not in (1, n):
        raise ValueError(f"mask must be (N or 1, 1 or {c}, {h}, {w}), got {tuple(mask.shape)}")
    shift = w // 4 if roll_shift is None else int(roll_shift)
    offset = -(w // 4) if initial_shift is None else int(initial_shift)
    device = known.device
    known_c = band_to_canvas(known.float(), canvas_size)
    mask_c = band_to_canvas(mask.float().expand(n, c, h, w), canvas_size)
    rows = band_to_canvas(torch.ones(1, 1, h, w, device=device), canvas_size)  # 1 on band rows

    noise_device = generator.device if generator is not None else device

    def randn() -> Tensor:  # drawn where the generator lives (CPU seeds reproduce on any device)
        return torch.randn(known_c.shape, generator=generator, device=noise_device).to(device)

    known_r, mask_r = known_c.roll(offset, -1), mask_c.roll(offset, -1)
    x = torch.lerp(randn(), known_r, mask_r)  # z[mask] = known
    roll_steps = _roll_steps(schedule, roll_fractions, num_train_timesteps)
    for k, i in enumerate(range(schedule.num_steps - 1, -1, -1)):
        rolls = roll_steps.count(k)  # fractions that land on the same kept step all apply
        if rolls:
            x, known_r, mask_r = (y.roll(rolls * shift, -1) for y in (x, known_r, mask_r))
            offset += rolls * shift
        x = torch.lerp(x, schedule.q_sample(known_r, i, randn()), mask_r)
        t = torch.full((n,), float(schedule.timesteps[i]), device=device)
        out = model(x, t).float()
        mean, log_var, _ = schedule.p_mean_log_variance(out, x, i, clip_denoised)
        noise = randn()
        x = mean + (torch.exp(0.5 * log_var) * noise if i > 0 else 0.0)
        x = torch.lerp(x, known_r, mask_r) * rows
        if callback is not None:
            callback(k)
    return canvas_to_band(x.roll(-offset, -1), h)


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
    callback: Callable[[int], None] | None = None,
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
