"""Spherical initial noise: unit variance, i.i.d. along the equator, shared near the poles."""

from __future__ import annotations


import pytest
import torch

from pano360.sampling.noise import spherical_noise


def test_noise_is_unit_gaussian_and_seeded():
    a = spherical_noise((2, 4, 32, 64), seed=3)
    assert a.shape == (2, 4, 32, 64) and a.dtype == torch.float32
    assert torch.equal(a, spherical_noise((2, 4, 32, 64), seed=3))
    assert not torch.equal(a, spherical_noise((2, 4, 32, 64), seed=4))
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1.0) < 0.05
    # channels and batch items are independent draws
    assert abs(float(torch.corrcoef(a[:, :2].reshape(2, -1))[0, 1])) < 0.05


def test_equator_pixels_are_independent_and_polar_rows_share_values():
    h = 32
    x = spherical_noise((1, 1, h, 2 * h), seed=0)[0, 0]
    lat = (0.5 - (torch.arange(h) + 0.5) / h) * 180
    for r in range(h):
        distinct = x[r].unique().numel()
        if abs(float(lat[r])) < 30:
            assert distinct == 2 * h  # every equator pixel its own value
    # the top row is a circle of circumference 2 pi sin(2.8 deg): few values around it
    assert x[0].unique().numel() < 8
    # neighbouring equator columns are uncorrelated (no duplicated pixels)
    eq = x[h // 2 - 4: h // 2 + 4]
    assert abs(float(torch.corrcoef(torch.stack([eq[:, :-1].flatten(), eq[:, 1:].flatten()]))[0, 1])) < 0.15


def test_video_shapes_and_bad_shapes():
    assert spherical_noise((1, 4, 3, 16, 32), seed=1).shape == (1, 4, 3, 16, 32)
    with pytest.raises(ValueError, match="2:1"):
        spherical_noise((1, 4, 16, 16), seed=1)
