"""The Euler loop's noise re-injection, its k-diffusion form for ComfyUI, and HookedAttention.

References: hand-computed Euler steps of a denoiser that predicts x0 = 0 (x scales by
sigma_next / sigma), and an ``nn.Module`` attention computed by hand.  The loop is held to the
official svd_keyframe_interpolation code in tests/pipelines/lookbeyond/test_inbetween_official.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pano360.sampling.euler import NoiseReinjection, sample_euler
from pano360.sampling.hooks import HookedAttention, k_diffusion_euler, seeded_noise_sampler

SIGMAS = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0], dtype=torch.float64)


def zero_denoiser(calls):
    def denoise(x, sigma):
        calls.append(float(sigma))
        return torch.zeros_like(x)

    return denoise


def test_reinjection_resamples_the_leading_steps_once_per_outer_step():
    calls, after = [], {}
    noises = [torch.full((1,), v, dtype=torch.float64) for v in (1.0, 2.0, 3.0, 4.0)]
    sample_euler(zero_denoiser(calls), torch.ones(1, dtype=torch.float64), SIGMAS,
                 reinject=NoiseReinjection(2, 0.5, lambda sn, s: noises.pop(0)),
                 on_step=lambda i, x, x0: after.setdefault(i, x.item()))
    # int(4 * 0.5) = 2 leading steps, 2 redos each: sigma 8 three times, sigma 4 three times, then 2 and 1.
    assert calls == [8.0] * 3 + [4.0] * 3 + [2.0, 1.0]
    # By hand: x -> x * s1/s0; redo: (x + n * sqrt(s0^2 - s1^2)) * s1/s0.
    expect = 1.0
    for s0, s1, ns in ((8.0, 4.0, (1.0, 2.0)), (4.0, 2.0, (3.0, 4.0))):
        expect *= s1 / s0
        for n in ns:
            expect = (expect + n * math.sqrt(s0**2 - s1**2)) * s1 / s0
    assert after[1] == pytest.approx(expect)
    assert after[2] == pytest.approx(expect * 0.5)  # step 2 (not resampled): 2 -> 1


def test_no_reinjection_by_default_and_ratio_checked():
    calls = []
    sample_euler(zero_denoiser(calls), torch.ones(1), SIGMAS.float())
    assert len(calls) == 4
    with pytest.raises(ValueError, match="ratio must be in"):
        NoiseReinjection(1, 1.5, lambda sn, s: None)


def test_k_diffusion_form_reports_steps_and_seeds_its_noise():
    seen = []

    def model(x, sigma, **extra):
        assert extra == {"seed": 3} and sigma.shape == (2,)
        return torch.zeros_like(x)

    sampler = k_diffusion_euler(reinject_repeats=1, reinject_ratio=0.25)
    x0 = torch.ones(2, 3)
    a = sampler(model, x0, SIGMAS.float(), extra_args={"seed": 3}, callback=lambda d: seen.append((d["i"], d["sigma"])))
    b = sampler(model, x0, SIGMAS.float(), extra_args={"seed": 3})
    assert torch.equal(a, b) and [i for i, _ in seen] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="needs a seed"):
        sampler(model, x0, SIGMAS.float(), extra_args={})
    noise = seeded_noise_sampler(x0, 3)
    assert not torch.equal(noise(None, None), noise(None, None))  # a stream, not one draw


class TinyAttention(nn.Module):
    """ComfyUI's CrossAttention surface: to_q/to_k/to_v/to_out and heads."""

    def __init__(self, dim=4, heads=2):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        n, t, c = x.shape
        split = lambda y: y.reshape(n, t, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(c // self.heads), -1) @ split(v)
        return self.to_out(out.transpose(1, 2).reshape(n, t, c))


def test_hooked_attention_is_transparent_without_a_hook_and_keeps_weight_keys():
    torch.manual_seed(0)
    inner = TinyAttention()
    wrapped = HookedAttention(inner, "blk", "my_hook", alternate={"to_v.weight": torch.eye(4)})
    x = torch.randn(3, 5, 4)
    assert torch.equal(wrapped(x, transformer_options={}), inner(x))
    assert list(wrapped.state_dict()) == list(inner.state_dict())  # alternate buffers are not persistent
    assert wrapped.to_v is inner.to_v  # shared: a weight patch reaches both


def test_hooked_attention_hands_the_call_to_the_hook_with_layer_labels_and_alternate():
    inner = TinyAttention()
    wrapped = HookedAttention(inner, "blk", "my_hook", alternate={"to_v.weight": torch.eye(4)})
    seen = {}

    def hook(attention, layer, x, labels, alternate):
        seen.update(attention=attention, layer=layer, labels=labels, alternate=alternate)
        return x * 2

    x = torch.randn(2, 5, 4)
    out = wrapped(x, transformer_options={"my_hook": hook, "cond_or_uncond": [1, 0]})
    assert torch.equal(out, x * 2)
    assert seen["attention"] is wrapped and seen["layer"] == "blk" and seen["labels"] == [1, 0]
    assert torch.equal(seen["alternate"]["to_v.weight"], torch.eye(4))
    with pytest.raises(RuntimeError, match="plain self-attention"):
        wrapped(x, context=x, transformer_options={"my_hook": hook})
