"""PanoDiT sampler: schedule math against diffusers' DDPMScheduler, RePaint, seam rolls."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from pano360.pipelines.lookbeyond.panorama import (
    band_to_canvas,
    canvas_to_band,
    lookbeyond_known_mask,
    lookbeyond_output_orientation,
    sample_panodit,
)
from pano360.sampling.gaussian_diffusion import linear_betas, make_schedule, space_timesteps

# diffusers keeps alphas_cumprod in float32 (a 1000-term product); ours is float64.
FLOAT32_SCHEDULE_TOL = dict(rtol=2e-4, atol=2e-5)


def diffusers_scheduler(timesteps: list[int]) -> DDPMScheduler:
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        variance_type="learned_range",
        clip_sample=False,
        prediction_type="epsilon",
    )
    sched.set_timesteps(timesteps=sorted(timesteps, reverse=True))
    return sched


def test_linear_betas_are_ho_et_al_in_float64():
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert linear_betas(500)[-1].item() == pytest.approx(0.04)  # scaled by 1000 / T


def test_space_timesteps_hand_computed_cases():
    assert space_timesteps(1000, 4) == [0, 333, 666, 999]
    assert space_timesteps(1000, 1000) == list(range(1000))
    # Two sections of 5: 2 steps stride 4 -> 0, 4; 3 steps stride 2 -> 5, 7, 9.
    assert space_timesteps(10, [2, 3]) == [0, 4, 5, 7, 9]
    # 999/2 = 499.5 rounds half to even -> 500.
    assert space_timesteps(1000, 3) == [0, 500, 999]
    with pytest.raises(ValueError, match="cannot take"):
        space_timesteps(10, 11)


@pytest.mark.parametrize("steps", [1000, 25])
def test_step_matches_diffusers_learned_range_ddpm(steps):
    sched = make_schedule(steps)
    kept = sched.timesteps.tolist()
    ref = diffusers_scheduler(kept)
    torch.manual_seed(0)
    x_t = torch.randn(2, 4, 6, 6)
    eps = torch.randn(2, 4, 6, 6)
    v = torch.rand(2, 4, 6, 6) * 2 - 1
    model_out = torch.cat([eps, v], dim=1)
    for i in sorted({len(kept) - 1, len(kept) // 2, 3, 1}):
        t = kept[i]
        mean, log_var, _ = sched.p_mean_log_variance(model_out, x_t, i)
        torch.testing.assert_close(log_var, ref._get_variance(t, predicted_variance=v), **FLOAT32_SCHEDULE_TOL)
        expected = ref.step(model_out, t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(mean + torch.exp(0.5 * log_var) * noise, expected, **FLOAT32_SCHEDULE_TOL)
    # Last step (t = 0): the posterior mean only, no noise, in both.
    mean, _, _ = sched.p_mean_log_variance(model_out, x_t, 0)
    torch.testing.assert_close(mean, ref.step(model_out, 0, x_t).prev_sample, **FLOAT32_SCHEDULE_TOL)


def test_posterior_and_q_sample_match_diffusers_tables():
    sched = make_schedule(1000)
    ref = diffusers_scheduler(list(range(1000)))
    torch.testing.assert_close(sched.alphas_cumprod.float(), ref.alphas_cumprod, **FLOAT32_SCHEDULE_TOL)
    x0, noise = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    for i in (0, 250, 999):
        torch.testing.assert_close(
            sched.q_sample(x0, i, noise), ref.add_noise(x0, noise, torch.tensor([i])), **FLOAT32_SCHEDULE_TOL
        )


def test_respaced_betas_keep_the_original_alphas_cumprod():
    full, short = make_schedule(1000), make_schedule(50)
    torch.testing.assert_close(short.alphas_cumprod, full.alphas_cumprod[short.timesteps], rtol=1e-12, atol=0)


def oracle(target_canvas: torch.Tensor, sched):
    """A perfect eps-predictor for a known clean canvas (v = -1: posterior variance)."""

    def model(x, t):
        i = int((sched.timesteps == int(t[0])).nonzero()[0])
        abar = sched.alphas_cumprod[i].item()
        eps = (x - abar**0.5 * target_canvas) / (1 - abar) ** 0.5
        return torch.cat([eps, -torch.ones_like(eps)], dim=1)

    return model


def test_exact_eps_oracle_recovers_a_row_only_target():
    # A target constant along longitude is roll-invariant, so the oracle stays exact with rolls.
    sched = make_schedule(20)
    band = torch.linspace(-1, 1, 8).view(1, 1, 8, 1).expand(1, 4, 8, 16).contiguous()
    target = band_to_canvas(band, 16)
    out = sample_panodit(
        oracle(target, sched),
        torch.zeros_like(band),
        torch.zeros(1, 1, 8, 16),
        sched,
        canvas_size=16,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(out, band, rtol=1e-4, atol=1e-4)


def test_known_region_is_preserved_exactly_and_padding_is_zero():
    sched = make_schedule(10)
    seen = []

    def model(x, t):
        seen.append(x.clone())
        return torch.cat([torch.sin(x * 3), torch.tanh(x)], dim=1)

    known = torch.randn(2, 4, 8, 16)
    mask = lookbeyond_known_mask(8, 16)
    calls = []
    out = sample_panodit(
        model, known, mask, sched, canvas_size=16, generator=torch.Generator().manual_seed(1),
        callback=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(k, 10) for k in range(1, 11)]
    assert out.shape == known.shape
    assert torch.equal(out[..., 8:], known[..., 8:])
    assert not torch.allclose(out[..., :8], known[..., :8])
    for x in seen[1:]:  # after the first step the padding rows are zero (sample_with_text.py)
        assert torch.count_nonzero(x[:, :, :4]) == 0 and torch.count_nonzero(x[:, :, 12:]) == 0


def test_seam_rolls_fire_at_750_500_250_and_net_to_zero():
    sched = make_schedule(1000)
    positions = {}
    predict_zero = oracle(torch.zeros(1, 4, 64, 64), sched)  # keeps the unknown region tame

    def model(x, t):
        positions[int(t[0])] = int(x[0, 0, 24].argmax())  # where the marker column is now (a band row)
        return predict_zero(x, t)

    known = torch.zeros(1, 4, 32, 64)
    known[:, :, :, 40] = 1e4  # a marker column, far above any noise even at t = 999  # a marker column, far above any noise
    mask = torch.zeros(1, 1, 32, 64)
    mask[..., 40] = 1.0
    out = sample_panodit(model, known, mask, sched, canvas_size=64, generator=torch.Generator().manual_seed(0))
    assert positions[999] == positions[751] == 40 - 16  # initial roll -W/4
    assert positions[750] == positions[501] == 40
    assert positions[500] == positions[251] == 40 + 16
    assert positions[250] == positions[0] == (40 + 32) % 64
    assert torch.equal(out[:, :, :, 40], known[:, :, :, 40])  # rolled back: aligned with the input
    assert torch.isfinite(out).all()


def test_no_roll_fires_when_fractions_are_empty():
    positions = set()
    sched = make_schedule(8)
    predict_zero = oracle(torch.zeros(1, 4, 64, 64), sched)

    def model(x, t):
        positions.add(int(x[0, 0, 24].argmax()))
        return predict_zero(x, t)

    known = torch.zeros(1, 4, 32, 64)
    known[:, :, :, 5] = 1e4
    mask = (known[:, :1] > 0).float()
    sample_panodit(model, known, mask, sched, canvas_size=64, roll_fractions=(), initial_shift=0)
    assert positions == {5}


def test_lookbeyond_output_orientation_puts_the_input_centre_at_quarter_width():
    band = torch.zeros(1, 1, 32, 64)
    band[..., 32] = 1.0  # input centre column
    assert int(lookbeyond_output_orientation(band)[0, 0, 0].argmax()) == 16
    # and the known 180° strip (right half) ends up centred
    strip = lookbeyond_output_orientation(lookbeyond_known_mask(32, 64))
    assert torch.equal(strip[0, 0, 0].nonzero().flatten(), torch.arange(16, 48))


def test_canvas_round_trip_and_bad_shapes():
    band = torch.randn(1, 4, 32, 64)
    canvas = band_to_canvas(band, 64)
    assert canvas.shape == (1, 4, 64, 64) and torch.count_nonzero(canvas[:, :, :16]) == 0
    assert torch.equal(canvas_to_band(canvas, 32), band)
    with pytest.raises(ValueError, match="band must be"):
        band_to_canvas(torch.randn(1, 4, 32, 60), 64)
    with pytest.raises(ValueError, match="mask must be"):
        sample_panodit(lambda x, t: x, band, torch.ones(1, 1, 16, 64), make_schedule(2), canvas_size=64)


def test_fractions_landing_on_one_kept_step_all_apply():
    # Two kept steps (t = 999, 0): all three fractions fire before the t = 0 step.
    positions = []
    sched = make_schedule(2)
    predict_zero = oracle(torch.zeros(1, 4, 64, 64), sched)

    def model(x, t):
        positions.append(int(x[0, 0, 24].argmax()))
        return predict_zero(x, t)

    known = torch.zeros(1, 4, 32, 64)
    known[:, :, :, 40] = 1e4
    out = sample_panodit(model, known, (known[:, :1] > 0).float(), sched, canvas_size=64)
    assert positions == [40 - 16, (40 - 16 + 3 * 16) % 64]
    assert torch.equal(out[..., 40], known[..., 40])  # and rolled back by all three
    torch.testing.assert_close(out, known, rtol=0, atol=1e-6)  # the oracle's x0 = 0 elsewhere
