"""Shifted rectified-flow schedule: analytic log-SNR facts (Hoogeboom et al. 2023; SD3 §5.3.2)."""

from __future__ import annotations

import math

import pytest
import torch

from pano360.sampling.flow import (
    WAN21_SHIFT,
    WAN21_TOKENS,
    flow_sigmas,
    log_snr,
    noised,
    sample_sigmas,
    shift_for_tokens,
    shifted_sigma,
    time_shift,
    velocity_target,
    x0_from_velocity,
)

U = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 8.0, 16.0])
def test_time_shift_moves_the_log_snr_by_minus_two_log_shift_everywhere(shift):
    delta = log_snr(time_shift(U, shift)) - log_snr(U)
    torch.testing.assert_close(delta, torch.full_like(U, -2 * math.log(shift)), rtol=0, atol=1e-9)


def test_interpolated_shift_goes_from_the_low_shift_at_the_data_to_the_high_shift_at_the_noise():
    torch.testing.assert_close(shifted_sigma(U, 8.0, 8.0), shifted_sigma(U, 8.0), rtol=0, atol=1e-12)
    delta = log_snr(shifted_sigma(U, 16.0, 2.0)) - log_snr(U)
    expect = -2 * ((1 - U) * math.log(2.0) + U * math.log(16.0))
    torch.testing.assert_close(delta, expect, rtol=0, atol=1e-9)


def test_sampling_sigmas_run_from_noise_to_data_monotonically():
    s = flow_sigmas(25, 9.8)
    assert s.shape == (26,) and s[0] == 1.0 and s[-1] == 0.0
    assert torch.all(s[1:] < s[:-1])
    torch.testing.assert_close(s[12], torch.tensor(9.8 * 0.52 / (1 + 8.8 * 0.52)), rtol=0, atol=1e-6)


def test_training_sigmas_follow_the_shifted_distribution():
    g = torch.Generator().manual_seed(0)
    s = sample_sigmas(20000, 8.0, generator=g)
    # median of u is 1/2 -> median sigma = time_shift(1/2) = 8/9
    assert abs(s.median().item() - 8.0 / 9.0) < 0.01


def test_velocity_round_trip_recovers_the_data():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    x = noised(x0, eps, sigma)
    torch.testing.assert_close(x0_from_velocity(x, velocity_target(x0, eps), sigma), x0)
    torch.testing.assert_close(noised(x0, eps, torch.ones(3)), eps)


def test_shift_scales_with_the_square_root_of_the_token_count():
    assert shift_for_tokens(WAN21_SHIFT, WAN21_TOKENS, WAN21_TOKENS) == WAN21_SHIFT
    # VideoPanda's training matrices hold 48 cells (3x16 ... 8x6); 512^2 views -> 32x32 patches
    assert shift_for_tokens(WAN21_SHIFT, 48 * 1024, WAN21_TOKENS) == pytest.approx(9.80, abs=0.01)
    assert shift_for_tokens(WAN21_SHIFT, 4 * WAN21_TOKENS, WAN21_TOKENS) == pytest.approx(16.0)
    with pytest.raises(ValueError):
        time_shift(0.5, 0.0)
