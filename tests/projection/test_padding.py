"""Spherical padding: the padded border holds the sphere's own neighbours.

Reference: the smooth signal of ``tests/_projection_fixtures.py`` evaluated at the pixel
centres continued past the seam (longitude beyond +-180 degrees) and past the poles
(latitude beyond +-90 degrees, i.e. the other side of the pole), straight from
docs/conventions.md.
"""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _projection_fixtures import smooth_signal  # noqa: E402

from pano360.projection.padding import crop_erp, pad_erp  # noqa: E402

F64 = torch.float64


def continued_erp(h: int, sides: int, poles: int) -> torch.Tensor:
    """(3, h + 2 poles, 2h + 2 sides): the signal at pixel centres of the extended grid."""
    w = 2 * h
    cols = torch.arange(-sides, w + sides, dtype=F64)
    rows = torch.arange(-poles, h + poles, dtype=F64)
    lon = ((cols + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (rows + 0.5) / h) * math.pi  # beyond +-pi/2 past a pole
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    d = torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1)
    return smooth_signal(d).permute(2, 0, 1)


def test_padding_continues_across_the_seam_and_over_the_poles():
    h = 12
    erp = continued_erp(h, 0, 0)
    padded = pad_erp(erp[None], sides=5, poles=3)[0]
    torch.testing.assert_close(padded, continued_erp(h, 5, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(crop_erp(padded, 5, 3), erp)


def test_video_latents_pad_on_their_last_two_axes():
    x = torch.randn(2, 4, 3, 6, 12)
    padded = pad_erp(x, 2, 1)
    assert padded.shape == (2, 4, 3, 8, 16)
    for t in range(3):
        torch.testing.assert_close(padded[:, :, t], pad_erp(x[:, :, t], 2, 1))


def test_bad_padding_raises_naming_the_argument():
    with pytest.raises(ValueError, match="sides"):
        pad_erp(torch.zeros(1, 1, 4, 8), -1)
    with pytest.raises(ValueError, match="even width"):
        pad_erp(torch.zeros(1, 1, 4, 7), 1, 1)
    with pytest.raises(ValueError, match="poles"):
        pad_erp(torch.zeros(1, 1, 4, 8), 1, 5)
