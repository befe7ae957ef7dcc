"""Circular decoding/encoding against decoders whose every convolution pads circularly.

The reference networks are written here: the same random convolution stacks run once with
zero padding (what ``circular_decode``/``circular_encode`` get) and once with explicit
padding that wraps the width in every layer.  With enough padding columns the pack's
pad-decode-crop equals the reference exactly; with a receptive field wider than the
padding it does not (the test shows which).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pano360.sampling.seam import circular_decode, circular_encode

LAYERS = 3  # 3x3 convolutions after the upsampling: a receptive field of 3 pixels each side


def wrap_pad(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad (..., H, W) by k: the width wraps, the height gets zeros (as the plain decoder)."""
    return F.pad(torch.cat([x[..., -k:], x, x[..., :k]], dim=-1), (0, 0, k, k))


class ToyDecoder:
    """Nearest x2 upsampling then LAYERS 3x3 convolutions, channels-last output like ComfyUI's VAE."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weights = [torch.randn(3 if i == LAYERS - 1 else 4, 4, 3, 3, generator=g) * 0.3 for i in range(LAYERS)]

    def __call__(self, z: torch.Tensor, reference: bool = False) -> torch.Tensor:
        x = F.interpolate(z, scale_factor=2, mode="nearest")
        for w in self.weights:
            # reference: the width wraps in every layer (the upsampled panorama's own seam)
            x = torch.tanh(F.conv2d(wrap_pad(x, 1), w) if reference else F.conv2d(x, w, padding=1))
        return x.movedim(1, -1)


def test_circular_decode_equals_a_decoder_that_wraps_in_every_layer():
    dec = ToyDecoder()
    z = torch.randn(2, 4, 6, 12, generator=torch.Generator().manual_seed(1))
    reach = -(-LAYERS // 2)  # latent columns the 3-pixel reach spans (x2 upsampling)
    out = circular_decode(dec, z, columns=reach)
    torch.testing.assert_close(out, dec(z, reference=True), atol=1e-6, rtol=0)
    plain = dec(z)
    assert float((plain - dec(z, reference=True))[..., :2, :].abs().max()) > 1e-2  # zero padding shows at the seam
    short = circular_decode(dec, z, columns=0)
    torch.testing.assert_close(short, plain)


def test_pole_rows_change_only_the_rows_within_the_decoders_reach_of_a_pole():
    # Continuing over a pole flips the rows, which no convolution is equivariant to, so
    # there is no per-layer reference: the decoder gets the sphere's neighbourhood as input
    # instead of zeros, and only rows within its reach of the pole can change.
    dec = ToyDecoder(1)
    z = torch.randn(1, 4, 6, 12, generator=torch.Generator().manual_seed(5))
    wrap = circular_decode(dec, z, columns=2)
    poles = circular_decode(dec, z, columns=2, pole_rows=2)
    reach_px = LAYERS  # 3x3 convolutions after the x2 upsampling
    torch.testing.assert_close(poles[:, reach_px:-reach_px], wrap[:, reach_px:-reach_px], atol=1e-6, rtol=0)
    assert float((poles[:, :reach_px] - wrap[:, :reach_px]).abs().max()) > 1e-3


def test_circular_decode_turns_with_the_panorama():
    dec = ToyDecoder(3)
    z = torch.randn(1, 4, 4, 8, generator=torch.Generator().manual_seed(2))
    shifted = circular_decode(dec, torch.roll(z, 3, dims=-1), columns=2)
    torch.testing.assert_close(shifted, torch.roll(circular_decode(dec, z, columns=2), 6, dims=-2), atol=1e-6, rtol=0)


def test_circular_decode_of_video_latents_and_batches_in_chunks():
    def decode(z):  # (b, C, T, h, w) -> (b, T, 2h, 2w, C), a 1x1 mix then x2 nearest
        return F.interpolate(z.flatten(1, 2), scale_factor=2, mode="nearest").unflatten(1, z.shape[1:3]).permute(0, 2, 3, 4, 1)

    z = torch.randn(3, 4, 2, 4, 8)
    calls = []
    out = circular_decode(decode, z, columns=1, batch_chunk=2, callback=lambda d, t: calls.append((d, t)))
    torch.testing.assert_close(out, decode(z))
    assert calls == [(1, 2), (2, 2)]


def test_circular_encode_equals_an_encoder_that_wraps_in_every_layer():
    g = torch.Generator().manual_seed(4)
    w1, w2 = torch.randn(8, 3, 3, 3, generator=g) * 0.3, torch.randn(4, 8, 3, 3, generator=g) * 0.3

    def encode(pixels, reference=False):  # (B, H, W, 3) -> (B, 4, H/2, W/2)
        x = pixels.movedim(-1, 1)
        x = torch.tanh(F.conv2d(wrap_pad(x, 1) if reference else x, w1, padding=0 if reference else 1))
        x = F.avg_pool2d(x, 2)
        return F.conv2d(wrap_pad(x, 1) if reference else x, w2, padding=0 if reference else 1)

    pixels = torch.rand(2, 8, 16, 3, generator=g)
    out = circular_encode(encode, pixels, scale=2, columns=2)
    torch.testing.assert_close(out, encode(pixels, reference=True), atol=1e-6, rtol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="columns"):
        circular_decode(lambda z: z, torch.zeros(1, 4, 4, 8), columns=-1)
    with pytest.raises(ValueError, match="latent"):
        circular_decode(lambda z: z, torch.zeros(4, 4, 8))
    with pytest.raises(ValueError, match="multiple"):
        circular_encode(lambda x: x, torch.zeros(1, 7, 16, 3), scale=2)
