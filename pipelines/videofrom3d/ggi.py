"""Geometry-guided generative inbetweening (GGI): VideoFrom3D's 48-channel CogVideoX-5B-I2V.

One arc at a time (``ggi.py``, ``mypipes/pipe_intp2.py``; spec §2c–d), at the fixed 480×720×49
size the learned positional embedding allows (13 latent frames of 60×90):

- input channels: 16 noisy latents, 16 anchor-image latents (start anchor in latent frame 0,
  zeros in frames 1–11, end anchor in frame 12), 16 HED-video latents (the arc's 46 edge maps plus 3
  copies of the last, so the real last frame and the end anchor share the final latent frame); all
  latents are VAE samples × 0.7 (the 5B VAE's scaling factor);
- initial latents: the arc's warped noise mixed with fresh noise at ``degradation`` 0.5
  (variance-preserving);
- CogVideoX's DDIM (v-prediction, zero terminal SNR, trailing spacing), 30 steps, CFG 6 against an
  empty negative prompt (the image and HED latents go to both branches);
- arcs are chained: each keeps its first 46 frames and its last generated frame starts the next arc.

The model is a callable ``velocity(x, timestep) -> v`` on a batch of two (negative, positive), so the
same loop serves ComfyUI's native CogVideoX and diffusers' transformer (models/ggi_transformer.py).
Layout here is ComfyUI's: latents (B, C, T, h, w).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .arcs import ARC_FRAMES, resample_hed
from .noise_warp import mix_new_noise

__all__ = [
    "GGISettings",
    "GGI_PAPER",
    "GGI_FRAMES",
    "GGI_HW",
    "GGI_LATENT_FRAMES",
    "GGI_PAD_FRAMES",
    "COGVIDEOX_VAE_SCALE",
    "CogVideoXDDIMSchedule",
    "hed_clip",
    "anchor_latents",
    "ggi_condition",
    "initial_latents",
    "sample_ggi",
    "chain_arcs",
    "prompt_text",
]

GGI_FRAMES = 49  # ggi.py --num_frames
GGI_HW = (480, 720)  # ggi.py --height/--width; fixed by the learned positional embedding
GGI_LATENT_FRAMES = 13  # (49 - 1) / 4 + 1
GGI_PAD_FRAMES = 3  # ggi.py: cond_images + [cond_images[[-1]]] * 3; videos[:-3] kept
COGVIDEOX_VAE_SCALE = 0.7  # THUDM/CogVideoX-5b-I2V vae/config.json scaling_factor


@dataclass(frozen=True)
class GGISettings:
    """steps (30), guidance (CFG 6, constant), degradation (0.5), seed (43): ``ggi.py`` defaults."""

    steps: int = 30
    guidance: float = 6.0
    degradation: float = 0.5
    seed: int = 43

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"GGISettings.steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.degradation <= 1.0:
            raise ValueError(f"GGISettings.degradation must lie in [0, 1], got {self.degradation}")


GGI_PAPER = GGISettings()


# --------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class CogVideoXDDIMSchedule:
    """CogVideoX's DDIM schedule (diffusers ``CogVideoXDDIMScheduler`` with the configuration of
    ``THUDM/CogVideoX-5b-I2V`` ``scheduler/scheduler_config.json``: scaled-linear betas 0.00085–0.012
    over 1000 steps, ``snr_shift_scale`` 1.0, zero terminal SNR, trailing spacing, ``set_alpha_to_one``).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    snr_shift_scale: float = 1.0

    def alphas_cumprod(self) -> Tensor:
        betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps,
                               dtype=torch.float64) ** 2
        a = torch.cumprod(1.0 - betas, 0)
        a = a / (self.snr_shift_scale + (1 - self.snr_shift_scale) * a)
        s = a.sqrt()  # rescale to zero terminal SNR (Lin et al. 2024, Alg. 1)
        s0, st = s[0].clone(), s[-1].clone()
        s = (s - st) * s0 / (s0 - st)
        return s**2

    def timesteps(self, steps: int) -> Tensor:
        """Trailing spacing: ``round(arange(T, 0, −T/steps)) − 1`` (int64, descending)."""
        ratio = self.num_train_timesteps / steps
        t = torch.round(torch.arange(self.num_train_timesteps, 0, -ratio, dtype=torch.float64)) - 1
        return t.to(torch.int64)

    def step(self, v: Tensor, t: int, x: Tensor, steps: int) -> Tensor:
        """One deterministic DDIM step (eta 0) with a v-prediction."""
        a = self.alphas_cumprod()
        prev = t - self.num_train_timesteps // steps
        a_t = a[t]
        a_prev = a[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * v
        c_x = ((1 - a_prev) / (1 - a_t)).sqrt()
        c_0 = a_prev.sqrt() - a_t.sqrt() * c_x
        return (c_x * x + c_0 * x0).to(x.dtype)


# ----------------------------------------------------------------------------- conditioning


def hed_clip(hed: Tensor, frames: int = GGI_FRAMES, pad: int = GGI_PAD_FRAMES) -> Tensor:
    """An arc's edge maps as the HED video GGI encodes: resampled to ``frames − pad`` (nearest,
    ``rp.resize_list``) plus ``pad`` copies of the last, scaled to [−1, 1].
    hed: (N, H, W, 3) in [0, 1].  Returns (frames, H, W, 3)."""
    if hed.ndim != 4 or hed.shape[-1] != 3:
        raise ValueError(f"hed_clip: expected (N, H, W, 3) edge maps, got {tuple(hed.shape)}")
    clip = resample_hed(hed, frames - pad)
    clip = torch.cat([clip] + [clip[-1:]] * pad)
    return clip * 2 - 1


def anchor_latents(start: Tensor, end: Tensor, latent_frames: int = GGI_LATENT_FRAMES) -> Tensor:
    """The image-latent channels: start anchor in frame 0, zeros, end anchor in the last frame
    (``pipe_intp2.prepare_latents``).  start, end: (B, C, 1, h, w) or (B, C, h, w).  Returns
    (B, C, latent_frames, h, w)."""
    if start.ndim == 4:
        start, end = start[:, :, None], end[:, :, None]
    if start.shape != end.shape or start.shape[2] != 1:
        raise ValueError(f"anchor_latents: start and end must be single-frame latents of one shape, got "
                         f"{tuple(start.shape)} and {tuple(end.shape)}")
    b, c, _, h, w = start.shape
    middle = start.new_zeros(b, c, latent_frames - 2, h, w)
    return torch.cat([start, middle, end], dim=2)


def ggi_condition(start: Tensor, end: Tensor, hed_latents: Tensor) -> Tensor:
    """The 32 conditioning channels appended to the noisy latents: anchor layout, then HED video.
    Latents already scaled (× 0.7).  hed_latents: (B, C, T, h, w).  Returns (B, 2C, T, h, w)."""
    image = anchor_latents(start, end, hed_latents.shape[2])
    if image.shape != hed_latents.shape:
        raise ValueError(f"ggi_condition: anchor latents {tuple(image.shape)} and HED latents "
                         f"{tuple(hed_latents.shape)} differ")
    return torch.cat([image, hed_latents], dim=1)


def initial_latents(noises: Tensor, degradation: float, generator: torch.Generator | None = None) -> Tensor:
    """Warped noise (``noises.npy``, (T, h, w, C)) mixed with fresh noise.  Returns (1, C, T, h, w)."""
    if noises.ndim != 4:
        raise ValueError(f"initial_latents: expected (T, h, w, C) warped noise, got {tuple(noises.shape)}")
    x = noises.permute(3, 0, 1, 2)[None].float()
    return mix_new_noise(x, degradation, generator)


# ----------------------------------------------------------------------------------- sampling

Velocity = Callable[[Tensor, Tensor], Tensor]  # (x (2B, 48, T, h, w), timestep (2B,)) -> v (2B, 16, T, h, w)


def sample_ggi(velocity: Velocity, latents: Tensor, condition: Tensor, settings: GGISettings = GGI_PAPER, *,
               schedule: CogVideoXDDIMSchedule = CogVideoXDDIMSchedule(),
               callback: Callable[[int, int], None] | None = None) -> Tensor:
    """Denoise one arc.

    velocity: the model on a batch ``[negative, positive]`` (its contexts are the caller's).
    latents: (B, 16, T, h, w) initial latents.  condition: (B, 32, T, h, w) from :func:`ggi_condition`.
    Returns (B, 16, T, h, w) model-space latents (divide by 0.7 for the VAE).
    """
    timesteps = schedule.timesteps(settings.steps)
    x = latents
    cond2 = torch.cat([condition, condition])
    for i, t in enumerate(timesteps.tolist()):
        inp = torch.cat([torch.cat([x, x]), cond2.to(x)], dim=1)
        v = velocity(inp, torch.full((inp.shape[0],), t, device=x.device, dtype=torch.int64)).float()
        v_neg, v_pos = v.chunk(2)
        v = v_neg + settings.guidance * (v_pos - v_neg)
        x = schedule.step(v, t, x.float(), settings.steps).to(latents.dtype)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x


def chain_arcs(run_arc: Callable[[int, Tensor, Tensor], Tensor], anchors: Sequence[Tensor],
               keep: int = ARC_FRAMES) -> Tensor:
    """Inbetween consecutive anchors arc by arc (``ggi.py`` main loop).

    run_arc(k, start_image, end_image) -> (49, H, W, 3) frames of arc k.  anchors: K+1 images
    (H, W, 3).  Arc k starts from anchor 0 (k = 0) or the previous arc's *last generated* frame,
    ends at anchor k+1, and contributes its first ``keep`` (46) frames.  Returns (K·keep, H, W, 3).
    """
    if len(anchors) < 2:
        raise ValueError(f"chain_arcs: need at least 2 anchor images, got {len(anchors)}")
    out, start = [], anchors[0]
    for k in range(len(anchors) - 1):
        frames = run_arc(k, start, anchors[k + 1])
        out.append(frames[:keep])
        start = frames[-1]
    return torch.cat(out)


def arc_inputs(hed: Tensor, noises: Tensor | None, settings: GGISettings, generator: torch.Generator,
               latent_hw: tuple[int, int], channels: int = 16) -> tuple[Tensor, Tensor]:
    """One arc's HED clip (49, H, W, 3) in [0, 1] (for the VAE) and initial latents (1, C, 13, h, w):
    the arc's warped noise mixed at ``degradation``, or plain noise when the arc has none."""
    clip = (hed_clip(hed) + 1) / 2
    if noises is None:
        noises = torch.randn(GGI_LATENT_FRAMES, *latent_hw, channels, generator=generator)
    if tuple(noises.shape) != (GGI_LATENT_FRAMES, *latent_hw, channels):
        raise ValueError(f"warped noise: expected {(GGI_LATENT_FRAMES, *latent_hw, channels)} (F, H, W, C), "
                         f"got {tuple(noises.shape)}")
    return clip, initial_latents(noises, settings.degradation, generator)


def prompt_text(text: str, caption: str | None = None) -> str:
    """GGI's prompt: a caption of the first anchor when one is given (``ggi.py`` uses BLIP-2's,
    stripped, whenever ``--prompt`` is absent), otherwise the typed text as it is."""
    return text if caption is None else caption.strip()
