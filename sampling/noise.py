"""Initial noise defined on the sphere for equirect latents.

i.i.d. Gaussian noise per equirect latent pixel is already seam-consistent (nothing marks
the 0/360° column), but it puts as many independent values on a polar row as on the
equator, where a row is a small circle: the noise is far denser per solid angle near the
poles.  :func:`spherical_noise` draws i.i.d. values on points spread uniformly over the
sphere (a Fibonacci lattice, :data:`NOISE_DENSITY` points per equator pixel) and gives
every equirect pixel its nearest point's value: exact copies (unit variance), distinct
values along the equator, shared values where pixels crowd together towards the poles.
It is an option for training-free generation of equirect latents; models tuned on equirect
images (360° LoRAs) were trained with per-pixel noise and should keep it.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..projection.geometry import check_erp_hw
from ..projection.lattice import nearest_lattice_points, points_for_erp

__all__ = ["NOISE_DENSITY", "spherical_noise"]

# Lattice points per equator pixel.  At 2 the nearest-point map gives every pixel within
# 60 degrees of the equator its own point (rows there are at least half the equator's
# length); sharing starts where rows are shorter (measured on 64x128: 0% shared pixels
# below 30 degrees of latitude, 16% at 30-60, 84% above 60; docs/spherical.md).
NOISE_DENSITY = 2.0


def spherical_noise(shape: tuple[int, ...] | torch.Size, seed: int) -> Tensor:
    """Noise of ``shape`` (``(..., H, 2H)``, e.g. ``[B, C, H, W]`` or ``[B, C, T, H, W]``),
    float32 on the CPU like ComfyUI's ``prepare_noise``: for every leading index an
    independent lattice of ``NOISE_DENSITY * points_for_erp((H, W))`` N(0, 1) values, read
    by each pixel from its nearest point.  Deterministic in ``seed``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise ValueError(f"shape: expected (..., H, W) with leading axes, got {list(shape)}")
    h, w = check_erp_hw(shape[-2:], "shape")
    n = int(round(NOISE_DENSITY * points_for_erp((h, w))))
    lead = math.prod(shape[:-2])
    generator = torch.Generator().manual_seed(int(seed))
    values = torch.randn(lead, n, generator=generator)
    return values[:, nearest_lattice_points(n, (h, w))].reshape(shape)
