"""Seam handling: roll schedule, rolled denoiser, seam-blended decoding (host-free).

References: Argus's own arithmetic (degrees, `src/sampling_svd.py`) for the schedule and
the blend layout, a Gaussian-process denoiser with a *non-periodic* prior (the optimal
denoiser of a model that does not know the image wraps) for the sampling behaviour, and
a stub VAE with border artefacts for the decode.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.sampling.seam import (
    ARGUS_BLEND_RATIO,
    RollSchedule,
    roll_conditioning,
    roll_width,
    rolled_denoiser,
    seam_blend_weight,
    seam_blended_decode,
)
from pano360.sampling.sigmas import step_from_sigma

# --------------------------------------------------------------------------- schedule


def argus_final_roll_columns(n_steps: int, width: int) -> int:
    """Argus's own bookkeeping: +90° after every step but the last, then roll by
    (360 − total % 360) % 360 degrees (inference_final_rotation = 0)."""
    total_rotation = 90.0 * (n_steps - 1)
    left = (0 + 360 - total_rotation % 360) % 360
    return int((width * left) // 360)


@pytest.mark.parametrize("n_steps", [1, 2, 3, 4, 5, 25, 50])
def test_final_unroll_matches_argus_degrees(n_steps):
    assert RollSchedule().final_unroll(n_steps, 128) == argus_final_roll_columns(n_steps, 128)


def test_offsets_quarter_turn_every_step_and_every_other_step():
    assert [RollSchedule(0.25, 1).offset(i, 64) for i in range(6)] == [0, 16, 32, 48, 0, 16]
    assert [RollSchedule(0.25, 2).offset(i, 64) for i in range(6)] == [0, 0, 16, 16, 32, 32]
    # 128 latent columns (1024 px): Argus's W // 4 = 32
    assert RollSchedule().shift(128) == 32
    # a fraction that does not divide the width floors, like Argus's integer division
    assert RollSchedule(0.3, 1).shift(10) == 3


@pytest.mark.parametrize("bad", [dict(fraction=0.0), dict(fraction=1.0), dict(every=0), dict(every=1.5)])
def test_schedule_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RollSchedule(**bad)


def test_rolls_net_to_zero_after_final_unroll():
    sched, width = RollSchedule(0.25, 1), 64
    x = torch.arange(width).float()
    for n_steps in (1, 4, 7, 10):
        y = x
        for i in range(n_steps - 1):  # Argus: roll after every step but the last
            y = roll_width(y, sched.offset(i + 1, width) - sched.offset(i, width))
        y = roll_width(y, sched.final_unroll(n_steps, width))
        assert torch.equal(y, x)


def test_roll_width_moves_content_right():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert roll_width(x, 1).tolist() == [3.0, 0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- step lookup


def test_step_from_sigma_finds_each_step_and_midpoints():
    sigmas = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.2, 0.0])
    for i, s in enumerate(sigmas[:-1].tolist()):
        assert step_from_sigma(s, sigmas) == i
        # a second-order sampler's intermediate evaluation belongs to the same step
        assert step_from_sigma(math.sqrt(s * max(sigmas[i + 1].item(), 0.05)), sigmas) == i
    assert step_from_sigma(20.0, sigmas) == 0            # above the schedule
    assert step_from_sigma(0.0, sigmas) == 4              # the final 0 is not a step
    # float32 rounding of the same sigma must still match (ComfyUI casts the schedule)
    assert step_from_sigma(torch.tensor(0.9, dtype=torch.float16).item(), sigmas) == 3


# --------------------------------------------------------------------------- conditioning


def test_roll_conditioning_rolls_spatial_entries_only():
    w = 8
    c = {
        "c_concat": torch.arange(w).float().view(1, 1, 1, w),
        "c_crossattn": torch.arange(5).float().view(1, 1, 5),
        "control": {"input": [torch.arange(4).float().view(1, 1, 1, 4), None],
                    "output": [torch.arange(w).float().view(1, 1, 1, w)]},
        "transformer_options": {"a": 1},
    }
    out = roll_conditioning(c, 2, w)
    assert out["c_concat"].flatten().tolist() == [6, 7, 0, 1, 2, 3, 4, 5]
    assert out["c_crossattn"] is c["c_crossattn"]
    assert out["control"]["input"][0].flatten().tolist() == [3, 0, 1, 2]  # half width: 1 column
    assert out["control"]["input"][1] is None
    assert out["control"]["output"][0].flatten().tolist() == [6, 7, 0, 1, 2, 3, 4, 5]
    assert c["c_concat"].flatten().tolist() == list(range(w)), "input changed in place"


def test_roll_conditioning_refuses_misaligned_tensors():
    with pytest.raises(ValueError, match="c_concat"):
        roll_conditioning({"c_concat": torch.zeros(1, 4, 8, 6)}, 2, 8)
    with pytest.raises(ValueError, match="control"):
        roll_conditioning({"control": {"input": [torch.zeros(1, 1, 1, 4)]}}, 1, 8)


# --------------------------------------------------------------------------- sampling

W = 64
N_STEPS = 20
# Prior of the stub model: residual std and correlation length (columns).  A smooth
# field of amplitude 0.3 over ~3 columns: large enough that two independent ends differ
# visibly, small enough that the sample stays near the target.
PRIOR_STD, PRIOR_LENGTH = 0.3, 3.0
SIGMAS = torch.cat([torch.exp(torch.linspace(math.log(10.0), math.log(0.05), N_STEPS)), torch.zeros(1)])


def smooth_periodic_target(shape) -> torch.Tensor:
    """An analytic target continuous across the seam: a function of longitude only."""
    j = torch.arange(shape[-1], dtype=torch.float64)
    lon = ((j + 0.5) / shape[-1] - 0.5) * 2 * math.pi
    return (0.5 + 0.3 * torch.cos(lon) + 0.2 * torch.sin(2 * lon)).expand(shape).clone()


def nonperiodic_gp_denoiser():
    """The optimal (posterior-mean) denoiser for x0 = c_concat + r, r a smooth Gaussian
    field whose covariance is *not* periodic: columns 0 and W−1 are uncorrelated, as
    for a model that treats the image as a flat picture with borders.  The target comes
    in as concat conditioning, so it must turn with x."""
    j = torch.arange(W, dtype=torch.float64)
    d = j[:, None] - j[None, :]
    blur = torch.exp(-0.5 * d**2 / PRIOR_LENGTH**2)
    blur = blur / blur.sum(1, keepdim=True)
    cov = PRIOR_STD**2 * blur @ blur.T + 1e-4 * torch.eye(W, dtype=torch.float64)
    calls = []

    def denoise(x, sigma, c_concat=None):
        calls.append(float(sigma))
        s2 = float(sigma) ** 2
        gain = torch.linalg.solve(cov + s2 * torch.eye(W, dtype=torch.float64), cov)  # symmetric
        return c_concat + (x - c_concat) @ gain

    denoise.calls = calls
    return denoise


def euler(denoise, x, sigmas, cond, *, argus_state_rolls: RollSchedule | None = None):
    """Deterministic Euler (Karras et al. 2022, Alg. 1 without churn).  With
    ``argus_state_rolls`` it is Argus's loop: the *state* and the conditioning are
    rolled after every step but the last and rolled back at the end."""
    for i in range(len(sigmas) - 1):
        s = sigmas[i]
        d = (x - denoise(x, s, c_concat=cond)) / s
        x = x + (sigmas[i + 1] - s) * d
        if argus_state_rolls is not None and i < len(sigmas) - 2:
            step = argus_state_rolls.offset(i + 1, W) - argus_state_rolls.offset(i, W)
            x, cond = roll_width(x, step), roll_width(cond, step)
    if argus_state_rolls is not None:
        x = roll_width(x, argus_state_rolls.final_unroll(len(sigmas) - 1, W))
    return x


def patched(denoise, sched=RollSchedule()):
    return rolled_denoiser(denoise, lambda sigma, extra: sched.offset(step_from_sigma(sigma, SIGMAS), W))


def seam_and_interior_jumps(r: torch.Tensor) -> tuple[float, float]:
    """Mean |r[0] − r[W−1]| (across the seam) and mean |r[j] − r[j−1]| inside."""
    jumps = (r - torch.roll(r, 1, -1)).abs().flatten(0, -2).mean(0)
    return jumps[0].item(), jumps[1:].mean().item()


# A seam no rougher than the inside: with the patch the residual's jump across the seam
# is measured at 0.78× its mean interior jump; without, 5.7× (16 samples, seed 0).
SEAM_OK_RATIO = 1.5
SEAM_BAD_RATIO = 4.0


@pytest.mark.parametrize("shape", [(16, 1, 2, W), (8, 1, 2, 2, W)], ids=["4d", "5d"])
def test_patched_sampling_closes_the_seam_of_a_smooth_target(shape):
    target = smooth_periodic_target(shape)
    g = torch.Generator().manual_seed(0)
    x0 = target + SIGMAS[0] * torch.randn(shape, generator=g, dtype=torch.float64)
    plain = euler(nonperiodic_gp_denoiser(), x0, SIGMAS, target)
    rolled = euler(patched(nonperiodic_gp_denoiser()), x0, SIGMAS, target)

    seam, inside = seam_and_interior_jumps(plain - target)
    assert seam > SEAM_BAD_RATIO * inside, "the stub must show a seam without the patch"
    seam, inside = seam_and_interior_jumps(rolled - target)
    assert seam < SEAM_OK_RATIO * inside
    # the columns either side of the seam match as well as the target's own do
    target_seam = (target[..., 0] - target[..., -1]).abs().mean().item()
    sample_seam = (rolled[..., 0] - rolled[..., -1]).abs().mean().item()
    assert abs(sample_seam - target_seam) < SEAM_OK_RATIO * inside


def test_canonical_frame_patch_equals_argus_rotating_state():
    """Rolling inside the model call (ours) and rolling the sampler state (Argus) give
    the same samples for a pointwise sampler."""
    shape = (2, 1, 2, W)
    target = smooth_periodic_target(shape)
    x0 = target + SIGMAS[0] * torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = euler(patched(nonperiodic_gp_denoiser()), x0, SIGMAS, target)
    argus = euler(nonperiodic_gp_denoiser(), x0, SIGMAS, target, argus_state_rolls=RollSchedule())
    torch.testing.assert_close(ours, argus, rtol=0, atol=1e-12)
    # and it is not trivially so: without rolls the result differs
    assert (euler(nonperiodic_gp_denoiser(), x0, SIGMAS, target) - ours).abs().max() > 1e-2


def test_rolled_denoiser_sees_rolled_inputs_and_returns_canonical_frame():
    seen = {}

    def model(x, sigma, c_concat=None, c_crossattn=None):
        seen.update(x=x, c_concat=c_concat, c_crossattn=c_crossattn)
        return x * 2

    x = torch.arange(8.0).view(1, 1, 1, 8)
    text = torch.ones(1, 3, 4)
    out = rolled_denoiser(model, lambda s, e: 3)(x, torch.tensor([1.0]), c_concat=x + 10, c_crossattn=text)
    assert seen["x"].flatten().tolist() == [5, 6, 7, 0, 1, 2, 3, 4]
    assert seen["c_concat"].flatten().tolist() == [15, 16, 17, 10, 11, 12, 13, 14]
    assert seen["c_crossattn"] is text
    assert torch.equal(out, x * 2)


# --------------------------------------------------------------------------- decoding


def test_blend_weight_has_argus_layout_at_1024_ratio_16():
    w = seam_blend_weight(1024, 16)
    assert w.shape == (1024,)
    assert torch.all(w[:224] == 0) and torch.all(w[800:] == 0)
    assert torch.all(w[288:736] == 1)
    torch.testing.assert_close(w[224:288], torch.linspace(0, 1, 64))        # ramp up, 64 px
    torch.testing.assert_close(w[736:800], torch.linspace(1, 0, 64))        # ramp down
    # training's ratio 4: 256-px ramps at 128 and 640
    w4 = seam_blend_weight(1024, 4)
    assert torch.all(w4[:128] == 0) and torch.all(w4[384:640] == 1)
    torch.testing.assert_close(w4[128:384], torch.linspace(0, 1, 256))


@pytest.mark.parametrize("width,ratio", [(6, 2), (8, 16), (10, 16)])
def test_blend_weight_is_symmetric_and_bounded(width, ratio):
    w = seam_blend_weight(width, ratio)
    assert w.shape == (width,) and torch.equal(w, w.flip(0))
    assert w[0] == 0 and w.max() == 1 and w.min() >= 0


@pytest.mark.parametrize("width,ratio,named", [(7, 16, "width"), (8, 1.5, "ratio")])
def test_blend_weight_rejects_bad_arguments(width, ratio, named):
    with pytest.raises(ValueError, match=named):
        seam_blend_weight(width, ratio)


SCALE = 8      # pixels per latent column, like SD/SVD VAEs
BAD_COLS = 8   # columns the stub decoder corrupts at each border


def clean_decode(latent):
    """Nearest-neighbour 'VAE': channels 0..2 of the latent upsampled ×8, channels-last."""
    spatial = latent[:, :3]
    if latent.ndim == 5:                                    # [B,C,T,h,w] -> [B,T,H,W,C]
        up = spatial.repeat_interleave(SCALE, -1).repeat_interleave(SCALE, -2)
        return up.permute(0, 2, 3, 4, 1)
    up = spatial.repeat_interleave(SCALE, -1).repeat_interleave(SCALE, -2)
    return up.permute(0, 2, 3, 1)


def border_artefact_decode(latent):
    """The clean decode with garbage in the outer columns, as a VAE that sees the
    borders as image edges."""
    img = clean_decode(latent).clone()
    img[..., :BAD_COLS, :] = 1.0 - img[..., :BAD_COLS, :] + 0.5
    img[..., -BAD_COLS:, :] = -img[..., -BAD_COLS:, :]
    return img


@pytest.mark.parametrize("shape", [(2, 4, 3, 16), (1, 4, 2, 3, 16)], ids=["image", "video"])
def test_blended_decode_removes_border_artefacts_and_keeps_interior(shape):
    latent = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    clean = clean_decode(latent)
    plain = border_artefact_decode(latent)
    assert (plain - clean).abs().max() > 0.5
    blended = seam_blended_decode(border_artefact_decode, latent, ratio=4)
    assert blended.shape == clean.shape
    # the stub corrupts only zero-weight columns of each decode, so the blend is clean
    torch.testing.assert_close(blended, clean, rtol=0, atol=1e-6)
    # where the weight is 1 it is the plain decode, bit for bit
    ones = seam_blend_weight(plain.shape[-2], 4) == 1
    assert torch.equal(blended[..., ones, :], plain[..., ones, :])


def test_blended_decode_chunks_and_reports_progress():
    latent = torch.rand(5, 4, 2, 8, generator=torch.Generator().manual_seed(3))
    ticks = []
    chunked = seam_blended_decode(border_artefact_decode, latent, ARGUS_BLEND_RATIO, batch_chunk=2,
                                  callback=lambda done, total: ticks.append((done, total)))
    assert ticks == [(k, 6) for k in range(1, 7)]  # 3 chunks × 2 decodes
    torch.testing.assert_close(chunked, seam_blended_decode(border_artefact_decode, latent), rtol=0, atol=0)


def test_blended_decode_rejects_odd_latent_width():
    with pytest.raises(ValueError, match="even"):
        seam_blended_decode(clean_decode, torch.zeros(1, 4, 2, 7))


# --------------------------------------------------------------------------- ComfyUI-style hook


def fake_apply_model(log):
    def apply_model(x, t, c_concat=None, c_crossattn=None, transformer_options=None, **kw):
        log.append(x[0, 0, 0].tolist())
        return x + c_concat  # depends on both, position by position
    return apply_model


def hook_args(x, sigma, cond, **topts):
    return {"input": x, "timestep": torch.full((x.shape[0],), sigma), "cond_or_uncond": [0],
            "c": {"c_concat": cond, "c_crossattn": torch.zeros(1, 1, 4), "transformer_options": topts}}


def test_unet_wrapper_uses_sample_sigmas_and_returns_canonical_prediction():
    from pano360.sampling.hooks import UnetRollWrapper

    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    x = torch.arange(8.0).view(1, 1, 1, 8)
    cond = 100 * torch.arange(8.0).view(1, 1, 1, 8)
    seen = []
    hook = UnetRollWrapper(RollSchedule(0.25, 1))
    for i, s in enumerate(sigmas[:-1].tolist()):
        out = hook(fake_apply_model(seen), hook_args(x, s, cond, sample_sigmas=sigmas))
        assert torch.equal(out, x + cond), f"step {i}: prediction not in the canonical frame"
        assert seen[-1] == torch.roll(torch.arange(8.0), 2 * i).tolist(), f"step {i}: model saw the wrong roll"


def test_unet_wrapper_counts_steps_without_a_schedule_and_resets_on_new_run():
    from pano360.sampling.hooks import UnetRollWrapper

    x = torch.arange(8.0).view(1, 1, 1, 8)
    seen = []
    hook = UnetRollWrapper(RollSchedule(0.25, 1))
    for s in (8.0, 8.0, 4.0, 2.0, 9.0, 3.0):   # cond+uncond at 8, two steps, then a new run
        hook(fake_apply_model(seen), hook_args(x, s, torch.zeros_like(x)))
    first = [row[0] for row in seen]
    assert first == [0.0, 0.0, 6.0, 4.0, 0.0, 6.0]   # offsets 0, 0, 2, 4, 0 (reset), 2


def test_unet_wrapper_stacks_on_a_previous_wrapper():
    from pano360.sampling.hooks import UnetRollWrapper

    calls = []

    def previous(apply_model, args):
        calls.append(args["input"][0, 0, 0, 0].item())
        return apply_model(args["input"], args["timestep"], **args["c"]) * 2

    sigmas = torch.tensor([8.0, 4.0, 0.0])
    x = torch.arange(8.0).view(1, 1, 1, 8)
    hook = UnetRollWrapper(RollSchedule(0.5, 1), previous)
    out = hook(fake_apply_model([]), hook_args(x, 4.0, torch.zeros_like(x), sample_sigmas=sigmas))
    assert calls == [4.0]                       # the previous wrapper saw the rolled input
    assert torch.equal(out, 2 * x)
