"""Go-with-the-Flow noise warping (Burgert et al., CVPR 2025) at VideoFrom3D's resolutions.

A re-implementation of the ``NoiseWarper`` of Go-with-the-Flow (RyannDaGreat/CommonSource
``noise_warp.py``; VideoFrom3D ships a copy in ``assets/mk_noise.py``), held to it numerically on
a tiny seeded case (tests/data/make_vf3d_noise_golden.py): with the same generator seed it draws
the same random numbers in the same order, so the outputs agree to float rounding.

The state is a ``(3 + C, H, W)`` tensor: per-pixel sub-pixel offsets ``dx, dy`` (kept at zero,
the official ``xy_mode='none'``), a weight ``w > 0`` and ``C`` noise channels.  One warp by a
forward flow ``F`` (defined on the previous frame's grid):

1. *expansion* (pull): every pixel takes the state found at ``p − F(p)`` (nearest; zero outside),
   a weight of 0 there becomes 1;
2. *contraction* (push): every pixel moves to ``round(p + F(p))``; pixels that leave the frame stay
   where they are with the initial state (no offset, weight 1, zero noise);
3. pixels reached by the push take the contracted state, the others the expanded one;
4. both halves are *regaussianised* together: pixels that share one noise value (copies of one
   source) are divided by √count and get fresh zero-sum noise, so every pixel stays N(0, 1) and
   the copies stay correlated exactly as much as they should; weights are split among copies;
5. pushed pixels are merged with weights: ``Σ w·n / √Σ w²`` (variance-preserving), weights summed;
6. weights are renormalised to mean 1, lifted by 1e-5 and raised to the power 0.9999.

VideoFrom3D (``mk_noise.py``): flows come from the 240×360 correspondence maps, are upsampled
×8 (bilinear) to 1920×2880, noise is warped there with 16 channels and area-downsampled by 32
(×32 to keep unit variance) to the 60×90 CogVideoX latent grid; 1 + 12 frames per arc.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NoiseWarpSettings",
    "VF3D_NOISE",
    "initial_state",
    "state_noise",
    "warp_state",
    "resize_flow",
    "downscale_noise",
    "warp_noise_sequence",
    "mix_new_noise",
]

_X, _Y, _W = 0, 1, 2  # state channels: offset x, offset y, weight; noise from 3 on
_WEIGHT_FLOOR = 1e-5  # noise_warp.py warp_xyωc: output[ω] += ε
_WEIGHT_POWER = 0.9999  # noise_warp.py warp_xyωc: output[ω] **= .9999


@dataclass(frozen=True)
class NoiseWarpSettings:
    """Resolutions of the warped-noise pipeline.

    channels: noise channels (CogVideoX latent: 16).  flow_scale: the flow is upsampled by this
    before warping (``FLOW = 2**3``).  downscale: the warped noise is area-downsampled by this
    (``round(FRAME * FLOW) * LATENT = round(0.5 * 8) * 8 = 32``).  Source: VideoFrom3D
    ``assets/mk_noise.py`` ``main``.
    """

    channels: int = 16
    flow_scale: int = 8
    downscale: int = 32

    def __post_init__(self) -> None:
        for name in ("channels", "flow_scale", "downscale"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"NoiseWarpSettings.{name} must be >= 1, got {getattr(self, name)}")


VF3D_NOISE = NoiseWarpSettings()


def initial_state(channels: int, height: int, width: int, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """A fresh state: zero offsets, unit weights, N(0, 1) noise.  Returns (3 + C, H, W)."""
    noise = torch.randn(channels, height, width, generator=generator, dtype=dtype, device=device)
    zeros = torch.zeros(2, height, width, dtype=dtype, device=noise.device)
    ones = torch.ones(1, height, width, dtype=dtype, device=noise.device)
    return torch.cat([zeros, ones, noise])


def state_noise(state: Tensor) -> Tensor:
    """The noise a state stands for: ``n·w / √(w²)`` at the state's own resolution (the official
    ``NoiseWarper.noise`` with ``scale_factor = 1``).  (3 + C, H, W) -> (C, H, W)."""
    w = state[_W : _W + 1]
    return state[3:] * w / torch.sqrt(w * w)


def _pull_nearest(image: Tensor, flow: Tensor) -> Tensor:
    """``out(p) = image(p − flow(p))``, nearest pixel, zeros outside.  (C, H, W), (2, H, W)."""
    c, h, w = image.shape
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device)[:, None]
    gx = (-flow[0] + xs) / (w - 1) * 2 - 1  # the grid of grid_sample(align_corners=True)
    gy = (-flow[1] + ys) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].to(image.dtype)
    return F.grid_sample(image[None], grid, mode="nearest", align_corners=True)[0]


def _push_add(image: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Scatter-add every pixel to ``p + shift`` (integer shifts); out-of-frame targets are dropped."""
    c, h, w = image.shape
    tx = shift_x.long() + torch.arange(w, device=image.device)
    ty = shift_y.long() + torch.arange(h, device=image.device)[:, None]
    keep = ((tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)).flatten()
    index = (ty * w + tx).flatten()[keep]
    values = image.reshape(c, h * w).t()[keep]
    out = torch.zeros(h * w, c, dtype=image.dtype, device=image.device)
    out.index_add_(0, index, values)
    return out.t().reshape(c, h, w)


def _regaussianize(noise: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pixels sharing one value of channel 0 form a group of copies; each gets ``n / √count`` plus
    fresh noise minus its group mean.  Returns (noise, counts (1, H, W))."""
    c, h, w = noise.shape
    _, inverse, counts = torch.unique(noise[0].flatten(), return_inverse=True, return_counts=True)
    fresh = torch.randn(noise.shape, generator=generator, dtype=noise.dtype, device=noise.device)
    sums = torch.zeros(counts.numel(), c, dtype=noise.dtype, device=noise.device)
    sums.index_add_(0, inverse, fresh.reshape(c, -1).t())
    means = (sums / counts[:, None].to(noise.dtype))[inverse].t().reshape(c, h, w)
    count_image = counts.to(noise.dtype)[inverse].reshape(1, h, w)
    return noise / count_image.sqrt() + (fresh - means), count_image


def warp_state(state: Tensor, flow: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One warp of a state by a forward flow.

    state: (3 + C, H, W).  flow: (2, H, W) ``(dx, dy)`` in pixels of this grid.  Returns a new
    (3 + C, H, W) state; draws one ``(C, H, 2W)`` block of fresh noise from ``generator``.
    """
    if state.ndim != 3 or state.shape[0] < 4 or flow.shape != (2, *state.shape[1:]):
        raise ValueError(f"warp_state: expected state (3+C, H, W) and flow (2, H, W), got {tuple(state.shape)} "
                         f"and {tuple(flow.shape)}")
    _, h, w = state.shape
    flow = flow.to(state.dtype)
    init = torch.zeros_like(state)
    init[_W] = 1

    # 1. expansion: pull every channel from p - F(p)
    expand = _pull_nearest(state, flow)
    expand[_W] = torch.where(expand[_W] == 0, torch.ones_like(expand[_W]), expand[_W])

    # 2. contraction: push to round(p + F(p)); pixels leaving the frame keep the initial state
    shrink = state.clone()
    shrink[:2] += flow
    xs = torch.arange(w, dtype=state.dtype, device=state.device)
    ys = torch.arange(h, dtype=state.dtype, device=state.device)[:, None]
    px, py = (xs + shrink[_X]).round(), (ys + shrink[_Y]).round()
    inside = ((px >= 0) & (px < w) & (py >= 0) & (py < h))[None]
    shrink = torch.where(inside, shrink, init)
    shift = shrink[:2].round()
    shrink[:2] = 0  # sub-pixel offsets are dropped (xy_mode='none')
    reached = _push_add(torch.ones(1, h, w, dtype=state.dtype, device=state.device), shift[0], shift[1]) > 0
    expand = torch.where(reached, init, expand)

    # 3.-4. regaussianise both halves together, split the weights among copies
    both = torch.cat([shrink, expand], dim=2)
    both[3:], counts = _regaussianize(both[3:], generator)
    both[_W] = torch.nan_to_num(both[_W] / counts[0])
    shrink, expand = both[:, :, :w], both[:, :, w:]

    # 5. merge the pushed pixels
    weight = shrink[_W : _W + 1]
    merged = torch.empty_like(shrink)
    merged[_W : _W + 1] = _push_add(weight, shift[0], shift[1])
    merged[:2] = _push_add(shrink[:2] * weight, shift[0], shift[1]) / merged[_W : _W + 1]
    merged[3:] = _push_add(shrink[3:] * weight, shift[0], shift[1]) / _push_add(weight**2, shift[0], shift[1]).sqrt()
    out = torch.where(reached, merged, expand)

    # 6. keep the weights near 1
    out[_W] = out[_W] / out[_W].mean() + _WEIGHT_FLOOR
    out[_W] = out[_W] ** _WEIGHT_POWER
    return out


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of a flow and of its values.  (2, h, w) -> (2, *size).

    The official ``NoiseWarper.__call__`` scales dx by the height ratio and dy by the width ratio;
    the two are equal for the aspect-preserving ×8 it is used with, and here each axis uses its own.
    """
    h, w = flow.shape[1:]
    out = F.interpolate(flow[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    out[0] *= size[1] / w
    out[1] *= size[0] / h
    return out


def downscale_noise(noise: Tensor, factor: int) -> Tensor:
    """Area-downsample by ``factor`` and multiply by it, which keeps unit variance for independent
    pixels (``mk_noise.py`` ``downscale_noise``).  (C, H, W) -> (C, ⌈H/f⌉, ⌈W/f⌉)."""
    h, w = noise.shape[-2:]
    size = (-(-h // factor), -(-w // factor))
    return F.interpolate(noise[None], size=size, mode="area")[0] * factor


def warp_noise_sequence(flows: Sequence[Tensor] | Tensor, settings: NoiseWarpSettings = VF3D_NOISE, *,
                        generator: torch.Generator | None = None,
                        callback: Callable[[int, int], None] | None = None) -> Tensor:
    """Warped noise for a sequence: one fresh noise, then one warp per flow.

    flows: K flows (2, h, w) in pixels of the flow grid (:data:`~.correspondence.NO_FLOW` values are
    kept as they are, as the official chain does).  Returns (K + 1, C, h·s/d, w·s/d) float32 with
    ``s = settings.flow_scale``, ``d = settings.downscale``.  ``callback(done, total)`` after each warp.
    """
    flows = list(flows)
    if not flows:
        raise ValueError("warp_noise_sequence: need at least one flow")
    h, w = flows[0].shape[-2:]
    big = (h * settings.flow_scale, w * settings.flow_scale)
    state = initial_state(settings.channels, *big, generator=generator, device=flows[0].device)
    out = [downscale_noise(state_noise(state), settings.downscale)]
    for i, flow in enumerate(flows):
        if flow.shape != (2, h, w):
            raise ValueError(f"warp_noise_sequence: flow {i} has shape {tuple(flow.shape)}, expected {(2, h, w)}")
        state = warp_state(state, resize_flow(flow, big), generator)
        out.append(downscale_noise(state_noise(state), settings.downscale))
        if callback is not None:
            callback(i + 1, len(flows))
    return torch.stack(out)


def mix_new_noise(noise: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """Variance-preserving blend with fresh noise: ``(fresh·α + noise·(1−α)) / √(α² + (1−α)²)``.

    VideoFrom3D's "degradation" (``ggi.py``, α = 0.5); α → 1 destroys the warped noise.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"degradation must lie in [0, 1], got {alpha}")
    fresh = torch.randn(noise.shape, generator=generator, dtype=noise.dtype, device=noise.device)
    return (fresh * alpha + noise * (1.0 - alpha)) / (alpha**2 + (1.0 - alpha) ** 2) ** 0.5
