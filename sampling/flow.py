"""Rectified-flow schedule with a shifted log-SNR, for Wan-style velocity models.

Wan 2.1 is a rectified-flow model (Esser et al. 2024, "SD3"): ``x_sigma = (1 - sigma) x0 +
sigma eps`` and the network predicts the velocity ``v = eps - x0``, the rectified-flow
counterpart of v-prediction (Salimans & Ho 2022: both targets mix noise and signal and stay
bounded at high noise, the stability VideoPanda §3.1 wanted from v).  ComfyUI samples it
as a ``CONST`` model: ``x0 = x - sigma v`` (``comfy/model_sampling.py``).

Log-SNR of ``x_sigma``: ``lambda = 2 log((1 - sigma) / sigma)``.  The time shift
``sigma = s u / (1 + (s - 1) u)`` (SD3 §5.3.2; ComfyUI ``time_snr_shift``) moves it by
exactly ``-2 log s`` at every ``u``: the shifted log-SNR of simple diffusion (Hoogeboom et
al. 2023, §3.1), which VideoPanda §3.1 / App. A.2 uses to shift its schedule towards more
noise because it generates more frames than its base.  The interpolated variant shifts by
``s_low`` near the data and by ``s`` near the noise, log-linearly in ``u`` (simple
diffusion's "interpolated" schedule; VideoPanda's ablation folder ``eps_vs_vinterpSNR``
suggests it, spec §2c).

How much shift: SD3's resolution rule scales the shift by ``sqrt(m / n)`` for ``m`` instead of
``n`` tokens (:func:`shift_for_tokens`).  Pano360 anchors it at ComfyUI's Wan 2.1 shift 8.0
(``comfy/supported_models.py`` ``WAN21_T2V.sampling_settings``) for Wan's native
832×480×81 output, 21×30×52 = 32 760 tokens (:data:`WAN21_SHIFT`, :data:`WAN21_TOKENS`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "WAN21_SHIFT",
    "WAN21_TOKENS",
    "time_shift",
    "log_snr",
    "shifted_sigma",
    "shift_for_tokens",
    "flow_sigmas",
    "noised",
    "velocity_target",
    "x0_from_velocity",
    "sample_sigmas",
]

# ComfyUI comfy/supported_models.py WAN21_T2V sampling_settings {"shift": 8.0}; Wan2.1's
# README recommends sample_shift 8-12 for the 1.3B text-to-video model.
WAN21_SHIFT = 8.0
# Wan 2.1's native output 832x480, 81 frames -> VAE latents 104x60x21 (8x spatial, 4x causal
# temporal) -> patches (1, 2, 2): 52 * 30 * 21 tokens.
WAN21_TOKENS = 52 * 30 * 21


def time_shift(u: Tensor | float, shift: float) -> Tensor | float:
    """``s u / (1 + (s - 1) u)``: the rectified-flow time shift (log-SNR - 2 log s)."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * u / (1 + (shift - 1) * u)


def log_snr(sigma: Tensor) -> Tensor:
    """``2 log((1 - sigma) / sigma)`` of ``x = (1 - sigma) x0 + sigma eps``."""
    return 2 * (torch.log1p(-sigma) - torch.log(sigma))


def shifted_sigma(u: Tensor, shift: float, shift_low: float | None = None) -> Tensor:
    """Sigma at uniform time ``u`` in [0, 1] (1 = noise) of the shifted schedule.

    shift_low None: the plain shift.  Otherwise the interpolated shift
    ``log s(u) = (1 - u) log shift_low + u log shift``.
    """
    if shift_low is None:
        return time_shift(u, shift)
    if shift_low <= 0 or shift <= 0:
        raise ValueError(f"shift and shift_low must be > 0, got {shift}, {shift_low}")
    s = torch.exp((1 - u) * math.log(shift_low) + u * math.log(shift))
    return s * u / (1 + (s - 1) * u)


def shift_for_tokens(shift: float, tokens: int, reference_tokens: int) -> float:
    """``shift * sqrt(tokens / reference_tokens)`` (SD3 §5.3.2, eq. 23's resolution rule)."""
    if tokens < 1 or reference_tokens < 1:
        raise ValueError(f"token counts must be >= 1, got {tokens}, {reference_tokens}")
    return shift * math.sqrt(tokens / reference_tokens)


def flow_sigmas(steps: int, shift: float, shift_low: float | None = None, device=None) -> Tensor:
    """Descending sampling sigmas ``(steps + 1,)`` from 1 to 0, uniform in ``u`` through the
    shifted schedule (ComfyUI's ``simple`` scheduler on ``ModelSamplingDiscreteFlow`` up to
    its 1000-step table)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)
    return shifted_sigma(u, shift, shift_low).to(torch.float32)


def sample_sigmas(n: int, shift: float, shift_low: float | None = None, *, generator: torch.Generator | None = None,
                  device=None) -> Tensor:
    """Training sigmas ``(n,)``: ``u ~ U(0, 1)`` through the shifted schedule."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return shifted_sigma(u, shift, shift_low).to(torch.float32)


def _b(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.reshape(sigma.shape + (1,) * (like.ndim - sigma.ndim)).to(like.dtype)


def noised(x0: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    """``(1 - sigma) x0 + sigma eps``; sigma broadcasts from the leading dims."""
    s = _b(sigma, x0)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """The flow target ``eps - x0``."""
    return eps - x0


def x0_from_velocity(x: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """``x - sigma v`` (ComfyUI ``CONST.calculate_denoised``)."""
    return x - _b(sigma, x) * v
