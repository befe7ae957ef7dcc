"""Sparse appearance-guided sampling (SAG): VideoFrom3D's anchor views with Flux.

Every anchor view is sampled by Flux-dev with the XLabs HED ControlNet from the same initial
noise (``sag_generate_anchor_view.py``, spec §2c).  From the second anchor on, the previous anchor
image is carried into the new view through the arc's ``corres_end`` map; during the first
``num_replacement`` of the 25 steps the latent is pinned to that warped image outside the holes::

    z ← mask · z + (1 − mask) · ((1 − t) · x₁ + t · x₀)     (step 0: z ← x₀)

with ``x₀`` the initial noise, ``x₁`` the VAE latent of the warped image and ``t`` the step's time
(= sigma, rectified flow).  ``mask`` is 1 in the holes (generate) and 0 where the warp carries
appearance (replace); it is dilated and blurred in pixels, then resized to the latent grid.

The schedule is x-flux's ``get_schedule`` with its time shift computed from
``(W/8 · H/8) / 256`` tokens (not ComfyUI's Flux shift), given to ComfyUI as explicit sigmas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .correspondence import CODE_MAX, CODE_RANGE, VALID_MIN

__all__ = [
    "SAGSettings",
    "SAG_PAPER",
    "anchor_size",
    "xflux_schedule",
    "xflux_timesteps",
    "warp_anchor",
    "latent_mask",
    "replace_latent",
    "sample_flow_with_replacement",
]

# x-flux src/flux/sampling.py get_schedule / get_lin_function
XFLUX_BASE_SHIFT = 0.5
XFLUX_MAX_SHIFT = 1.15
XFLUX_SEQ_LO, XFLUX_SEQ_HI = 256, 4096


@dataclass(frozen=True)
class SAGSettings:
    """Anchor sampling settings (defaults: ``sag_generate_anchor_view.py``).

    steps: 25.  num_replacement: steps with the warped latent pinned (12).  guidance: Flux
    distilled guidance (4.0).  true_cfg: CFG against the negative prompt (3.5) from step
    ``cfg_start_step`` (1).  control_strength: HED ControlNet weight (0.8).  dilate_kernel,
    dilate_iterations: hole dilation (5x5, 12 times).  blur_kernel, blur_sigma: (9, 3).
    """

    steps: int = 25
    num_replacement: int = 12
    guidance: float = 4.0
    true_cfg: float = 3.5
    cfg_start_step: int = 1
    control_strength: float = 0.8
    dilate_kernel: int = 5
    dilate_iterations: int = 12
    blur_kernel: int = 9
    blur_sigma: float = 3.0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 <= self.num_replacement <= self.steps:
            raise ValueError(f"SAGSettings: need steps >= 1 and 0 <= num_replacement <= steps, got "
                             f"{self.steps}, {self.num_replacement}")
        if self.blur_kernel % 2 == 0 or self.dilate_kernel < 1:
            raise ValueError("SAGSettings: blur_kernel must be odd and dilate_kernel >= 1")


SAG_PAPER = SAGSettings()


def anchor_size(width: int, height: int) -> tuple[int, int]:
    """The sampled size: each side rounded down to a multiple of 16 (x-flux ``call``; 1080×720 -> 1072×720)."""
    w, h = 16 * (int(width) // 16), 16 * (int(height) // 16)
    if w < 16 or h < 16:
        raise ValueError(f"anchor size must be at least 16x16 pixels, got {width}x{height}")
    return w, h


def xflux_schedule(steps: int, seq_len: int) -> Tensor:
    """x-flux ``get_schedule(steps, seq_len, shift=True)``: ``steps + 1`` times from 1 to 0, shifted
    by ``mu`` linear in ``seq_len`` (0.5 at 256, 1.15 at 4096), float64."""
    slope = (XFLUX_MAX_SHIFT - XFLUX_BASE_SHIFT) / (XFLUX_SEQ_HI - XFLUX_SEQ_LO)
    mu = XFLUX_BASE_SHIFT + slope * (seq_len - XFLUX_SEQ_LO)
    t = torch.linspace(1, 0, steps + 1)  # float32, as x-flux builds it
    shifted = math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)
    return shifted.double()


def xflux_timesteps(steps: int, width: int, height: int) -> Tensor:
    """x-flux's sampling schedule for an image of ``width × height`` (multiples of 16): ``steps + 1``
    times from 1 to 0 (float64; for Flux in ComfyUI they are the sigmas).  Its "seq_len" is
    ``(W/8 · H/8) / 256`` -- not the token count (quirk kept, spec §2c)."""
    return xflux_schedule(steps, (width // 8) * (height // 8) // (16 * 16))


def warp_anchor(previous: np.ndarray, corres_end: np.ndarray, settings: SAGSettings = SAG_PAPER
                ) -> tuple[np.ndarray, np.ndarray]:
    """Carry the previous anchor into the next view (``sag_generate_anchor_view.py`` ``Warp``).

    previous: (H, W, 3) uint8 image of the previous anchor.  corres_end: (h, w, 3) 16-bit codes
    (R, G, B) mapping the next view's pixels to the previous anchor's.  Returns ``(warped (H, W, 3)
    uint8, black in holes; mask (H, W) float32, 1 = hole/generate)``.  The codes are resized to
    the image (OpenCV bilinear, then only pixels whose B stayed exactly 65535 count), the hole
    mask is dilated and blurred the official way -- on a 16-bit 0/1 image, so the blur only rounds.
    """
    import cv2

    h, w = previous.shape[:2]
    bgr = np.ascontiguousarray(corres_end[..., ::-1]).astype(np.uint16)
    c = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    c = c * (c[..., 0] == CODE_MAX)[..., None]
    c = np.clip(c, 0, CODE_MAX).astype(np.uint16)
    hole = (c[..., 0] == 0).astype(np.uint16)
    kernel = np.ones((settings.dilate_kernel, settings.dilate_kernel), np.uint8)
    hole = cv2.dilate(hole, kernel, iterations=settings.dilate_iterations)
    hole = cv2.GaussianBlur(hole, (settings.blur_kernel, settings.blur_kernel), settings.blur_sigma)
    valid = c[..., 0] >= VALID_MIN
    x_ref = (c[..., 2] / CODE_RANGE * w).astype(np.int64)
    y_ref = ((CODE_MAX - c[..., 1].astype(np.int64)) / CODE_RANGE * h).astype(np.int64)
    warped = np.zeros_like(previous)
    ys, xs = np.nonzero(valid)
    warped[ys, xs] = previous[y_ref[ys, xs], x_ref[ys, xs]]
    return warped, hole.astype(np.float32)


def latent_mask(mask: np.ndarray, latent_hw: tuple[int, int]) -> Tensor:
    """The pixel hole mask on the latent grid: OpenCV nearest (``src = floor(dst · scale)``).
    (H, W) -> (h, w) float32."""
    import cv2

    small = cv2.resize(mask.astype(np.float32), (latent_hw[1], latent_hw[0]), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(np.ascontiguousarray(small))


def replace_latent(x: Tensor, t: float, noise: Tensor, warped: Tensor, mask: Tensor) -> Tensor:
    """``mask · x + (1 − mask) · ((1 − t) · warped + t · noise)`` (latents (B, C, h, w), mask (h, w))."""
    m = mask.to(x)
    return m * x + (1 - m) * ((1 - t) * warped.to(x) + t * noise.to(x))


def sample_flow_with_replacement(denoise: Callable[[Tensor, Tensor, int], Tensor], noise: Tensor, sigmas: Tensor, *,
                                 warped: Tensor | None = None, mask: Tensor | None = None, num_replacement: int = 0,
                                 callback: Callable[[int, int], None] | None = None) -> Tensor:
    """Euler sampling of a rectified-flow model with SAG's early replacement.

    denoise(x, sigma, step) -> x0 estimate (a ComfyUI-style denoiser; the flow velocity is
    ``(x − x0) / sigma``).  noise: (B, C, h, w), the start at ``sigmas[0]`` (1).  sigmas: (N + 1,)
    decreasing to 0.  warped, mask: the warped anchor latent and its hole mask (h, w), or None for
    the first anchor.  Before the model call of step ``i < num_replacement`` the latent is replaced
    (:func:`replace_latent`; step 0 restarts from ``noise``).  ``callback(done, total)`` per step.
    """
    x = noise
    n = sigmas.numel() - 1
    for i in range(n):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        if warped is not None and mask is not None and i < num_replacement:
            x = noise.clone() if i == 0 else replace_latent(x, s, noise, warped, mask)
        x0 = denoise(x, sigmas[i : i + 1].to(x), i)
        x = x + (x - x0) / s * (s_next - s)
        if callback is not None:
            callback(i + 1, n)
    return x


def anchor_sequence(hed: Tensor, corres_end: list[Tensor | None],
                    sample: Callable[[int, Tensor, Tensor | None, Tensor | None], Tensor],
                    settings: SAGSettings = SAG_PAPER,
                    callback: Callable[[int, int], None] | None = None) -> Tensor:
    """All anchor views, each carried into the next (``sag_generate_anchor_view.py`` main loop).

    hed: (K+1, H, W, 3) anchor edge maps in [0, 1] (the first frame of arc 0, then every arc's last).
    corres_end: K maps (h, w, 3) ``arc{k}/corres_end`` (anchor k+1's view onto anchor k), or None.
    sample(i, hed_i, warped, mask) -> (H, W, 3) image in [0, 1]: one anchor from its edge map and,
    from anchor 1 on, the previous anchor warped into its view ((H, W, 3) in [0, 1]) and the hole
    mask ((H, W), 1 = generate).  Returns (K+1, H, W, 3).
    """
    if len(corres_end) != hed.shape[0] - 1:
        raise ValueError(f"anchor_sequence: {hed.shape[0]} anchors need {hed.shape[0] - 1} corres_end maps, "
                         f"got {len(corres_end)}")
    out = []
    for i in range(hed.shape[0]):
        warped = mask = None
        if i > 0 and corres_end[i - 1] is not None and settings.num_replacement > 0:
            prev = (out[-1].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            w, m = warp_anchor(prev, corres_end[i - 1].cpu().numpy(), settings)
            warped, mask = torch.from_numpy(w).float() / 255.0, torch.from_numpy(m)
        out.append(sample(i, hed[i], warped, mask))
        if callback is not None:
            callback(i + 1, hed.shape[0])
    return torch.stack(out)
