"""Circular VAE decode/encode nodes on ComfyUI's own VAE object (a random SD/Flux-architecture
autoencoder), both host versions.

Property checked (independent of the code under test): a panorama turned by k latent
columns must decode to the decoded panorama turned by k·8 pixels.  The plain decode breaks
that at the 0/360° border (zero padding); the circular decode keeps it up to what the
decoder's global attention sees of the padding.
"""

from __future__ import annotations

import torch

import tiny_comfy

SHIFT = 3  # latent columns


@torch.no_grad()
def _equivariance_error(decode, z: torch.Tensor) -> float:
    a = decode(torch.roll(z, SHIFT, dims=-1))
    b = torch.roll(decode(z), SHIFT * 8, dims=-2)
    return float((a - b).abs().mean())


def test_circular_decode_turns_with_the_panorama_where_the_plain_decode_does_not(comfy_in_process):
    from pano360.nodes.seam import Pano360CircularVAEDecode

    vae = tiny_comfy.sd_vae()
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 8, generator=g), size=(8, 16), mode="bilinear")

    def circular(latent):
        return Pano360CircularVAEDecode.execute(samples={"samples": latent}, vae=vae, wrap_columns=6, pole_rows=0,
                                                batch_chunk=0).args[0]

    plain_err = _equivariance_error(vae.decode, z)
    circ_err = _equivariance_error(circular, z)
    assert circular(z).shape == (1, 64, 128, 3)
    assert circ_err < 0.25 * plain_err, (circ_err, plain_err)
    with_poles = Pano360CircularVAEDecode.execute(samples={"samples": z}, vae=vae, wrap_columns=2, pole_rows=2,
                                                  batch_chunk=1).args[0]
    assert with_poles.shape == (1, 64, 128, 3) and bool(torch.isfinite(with_poles).all())


def test_circular_encode_gives_the_latent_vae_encode_gives_away_from_the_border(comfy_in_process):
    from pano360.nodes.seam import Pano360CircularVAEEncode

    vae = tiny_comfy.sd_vae()
    g = torch.Generator().manual_seed(1)
    pixels = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 16, generator=g), size=(64, 128),
                                             mode="bilinear").movedim(1, -1)
    latent = Pano360CircularVAEEncode.execute(pixels=pixels, vae=vae, wrap_columns=4, pole_rows=0).args[0]["samples"]
    plain = vae.encode(pixels)
    assert latent.shape == plain.shape == (1, 4, 8, 16)
    turned = Pano360CircularVAEEncode.execute(pixels=torch.roll(pixels, 8 * SHIFT, dims=-2), vae=vae, wrap_columns=4,
                                              pole_rows=0).args[0]["samples"]
    circ_err = float((turned - torch.roll(latent, SHIFT, dims=-1)).abs().mean())
    plain_err = float((vae.encode(torch.roll(pixels, 8 * SHIFT, dims=-2)) - torch.roll(plain, SHIFT, dims=-1)).abs().mean())
    assert circ_err < 0.25 * plain_err, (circ_err, plain_err)
