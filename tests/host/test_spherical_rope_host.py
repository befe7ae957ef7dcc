"""Spherical RoPE on ComfyUI's own Flux and Wan networks (random weights), both host versions.

The node's patch goes through ComfyUI's ModelPatcher (object patch + DIFFUSION_MODEL
wrapper) and ``BaseModel.apply_model``.  The attention inputs are captured at the first
attention call (after RoPE) by replacing the model module's ``optimized_attention`` with a
recording pass-through.  The latent is constant along its width, so the queries and keys
of one token row are equal at every column and any score difference between column pairs
comes from the positional encoding alone.
"""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
import torch

import tiny_comfy

# Scores of float32 q/k after float32 rotations, summed over 16-32 channels.
SCORE_TOL = 1e-4


def _patcher(kind: str):
    import comfy.ldm.flux.model
    import comfy.model_patcher
    import comfy.supported_models as sm

    if kind == "flux":
        fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
        extra = {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}
        model = sm.Flux({"image_model": "flux", **tiny_comfy.TINY_FLUX, **extra}).get_model({})
    else:
        model = sm.WAN21_T2V({"image_model": "wan2.1", **tiny_comfy.TINY_WAN}).get_model({})
    tiny_comfy.random_init_(model)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def _inputs(kind: str, rows: int = 8, cols: int = 16):
    """A latent constant along the width (varies by row, and by frame for Wan) and its conds."""
    g = torch.Generator().manual_seed(0)
    if kind == "flux":
        x = torch.randn(1, 4, rows, 1, generator=g).expand(1, 4, rows, cols).contiguous()
        return x, {"c_crossattn": torch.randn(1, 3, 8, generator=g), "y": torch.randn(1, 8, generator=g)}
    x = torch.randn(1, 4, 2, rows, 1, generator=g).expand(1, 4, 2, rows, cols).contiguous()
    return x, {"c_crossattn": torch.randn(1, 8, 8, generator=g)}


def _run(patcher, kind: str, rope_options: dict | None = None):
    """apply_model through the patcher; returns (output, q, k of the first attention call)."""
    import comfy.ldm.flux.math
    import comfy.ldm.wan.model

    module = comfy.ldm.flux.math if kind == "flux" else comfy.ldm.wan.model
    original = module.optimized_attention
    seen = []

    def record(q, k, v, heads, *args, **kwargs):
        seen.append((q.detach().clone(), k.detach().clone()))
        return original(q, k, v, heads, *args, **kwargs)

    x, conds = _inputs(kind)
    options = dict(patcher.model_options.get("transformer_options", {}))
    # what comfy/sampler_helpers.py prepare_sampling does before a sampler runs
    options["wrappers"] = patcher.wrappers
    if rope_options is not None:
        options["rope_options"] = rope_options
    patcher.patch_model()
    try:
        with mock.patch.object(module, "optimized_attention", record), torch.no_grad():
            out = patcher.model.apply_model(x, torch.tensor([0.5]), transformer_options=options, **conds)
    finally:
        patcher.unpatch_model()
    return out, *seen[0]


def _row_scores(q: torch.Tensor, k: torch.Tensor, kind: str, row: int, cols: int = 16):
    """Score of the query at column a with the key at column b, same token row, all heads."""
    if kind == "flux":  # (B, heads, text + rows*cols, d); 3 text tokens first
        qi, ki = q[0].permute(1, 0, 2).reshape(q.shape[2], -1), k[0].permute(1, 0, 2).reshape(k.shape[2], -1)
        base = 3 + row * (cols // 2)
    else:  # (B, frames*rows*cols tokens, heads*d); frame 0 first
        qi, ki = q[0], k[0]
        base = row * (cols // 2)
    return lambda a, b: float(qi[base + a] @ ki[base + b])


def _rope_node(patcher, mode: str):
    from pano360.nodes.spherical import Pano360SphericalRoPE

    return Pano360SphericalRoPE.execute(model=patcher, mode=mode).args[0]


@pytest.mark.parametrize("kind", ["flux", "wan"])
def test_wrapped_rope_makes_the_seam_columns_neighbours(comfy_in_process, kind):
    patcher = _patcher(kind)
    base_out, q0, k0 = _run(patcher, kind)
    wrapped = _rope_node(patcher, "wrap")
    out, q, k = _run(wrapped, kind)
    w = 16 // 2  # token columns
    for row in (0, 2):
        plain, score = _row_scores(q0, k0, kind, row), _row_scores(q, k, kind, row)
        # query at column 0, key at W-1 (one step left around the circle) = query at 4, key at 3
        assert score(0, w - 1) == pytest.approx(score(4, 3), abs=SCORE_TOL)
        assert score(w - 1, 0) == pytest.approx(score(3, 4), abs=SCORE_TOL)
        assert score(0, w - 2) == pytest.approx(score(5, 3), abs=SCORE_TOL)
        # unpatched, the seam pair is as far apart as a query and key can be
        assert abs(plain(0, w - 1) - plain(4, 3)) > 100 * abs(score(0, w - 1) - score(4, 3)) + 1e-6
    assert not torch.equal(out, base_out)
    # the input patcher and its network are untouched: bit for bit the same output again
    again, _, _ = _run(patcher, kind)
    assert torch.equal(again, base_out)


@pytest.mark.parametrize("kind", ["flux", "wan"])
def test_off_returns_the_model_unchanged_bit_for_bit(comfy_in_process, kind):
    patcher = _patcher(kind)
    base_out, q0, _ = _run(patcher, kind)
    same = _rope_node(patcher, "off")
    assert same is patcher
    out, q, _ = _run(same, kind)
    assert torch.equal(out, base_out) and torch.equal(q, q0)


def test_pole_variant_collapses_the_polar_token_row(comfy_in_process):
    patcher = _rope_node(_patcher("flux"), "wrap_pole")
    _, q, k = _run(patcher, "flux")
    w = 8
    top = _row_scores(q, k, "flux", 0)
    # row 0 of 4 token rows sits at colatitude 22.5 deg: its harmonics shrink, the wrap stays exact
    assert top(0, w - 1) == pytest.approx(top(4, 3), abs=SCORE_TOL)
    wrap = _rope_node(_patcher("flux"), "wrap")
    _, qw, kw = _run(wrap, "flux")
    far_pole = abs(top(0, w // 2) - top(0, 0))
    far_wrap = abs(_row_scores(qw, kw, "flux", 0)(0, w // 2) - _row_scores(qw, kw, "flux", 0)(0, 0))
    assert far_pole < far_wrap  # the far side of the pole looks nearer than with the plain wrap


@pytest.mark.comfy_min_version((0, 33, 0))  # transformer_options["rope_options"] is newer than 0.3.64
def test_rope_options_scale_is_honoured_where_the_host_has_it(comfy_in_process):
    import comfy.ldm.flux.model

    assert "rope_options" in open(comfy.ldm.flux.model.__file__).read()
    patcher = _rope_node(_patcher("flux"), "wrap")
    _, q, k = _run(patcher, "flux", rope_options={"scale_x": 2.0, "shift_x": 5.0})
    score = _row_scores(q, k, "flux", 1)
    assert score(0, 7) == pytest.approx(score(4, 3), abs=SCORE_TOL)


def test_the_patch_runs_inside_comfyuis_sampler(comfy_in_process):
    import comfy.sample

    patcher = _patcher("flux")
    x, conds = _inputs("flux")
    cond = [[conds["c_crossattn"], {"pooled_output": conds["y"]}]]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def sample(model):
        return comfy.sample.sample(model, noise, 2, 1.0, "euler", "simple", cond, cond, torch.zeros_like(x),
                                   disable_pbar=True, seed=1)

    plain = sample(patcher)
    wrapped = sample(_rope_node(patcher, "wrap"))
    assert wrapped.shape == plain.shape and bool(torch.isfinite(wrapped).all())
    assert not torch.equal(wrapped, plain)
    assert torch.equal(sample(patcher), plain)  # the input model stays unpatched


def test_families_of_comfyuis_dits_and_a_unet_refused(comfy_in_process):
    import comfy.ldm.lumina.model
    import comfy.ldm.qwen_image.model

    from pano360.models.spherical_rope import FAMILIES, family_of
    from pano360.nodes._common import NodeInputError

    qwen = object.__new__(comfy.ldm.qwen_image.model.QwenImageTransformer2DModel)
    assert family_of(qwen) is FAMILIES["QwenImageTransformer2DModel"]
    assert family_of(object.__new__(comfy.ldm.lumina.model.NextDiT)) is FAMILIES["NextDiT"]
    unet = tiny_comfy.sd15_patcher()
    with pytest.raises(NodeInputError, match="UNetModel"):
        _rope_node(unet, "wrap")


def test_spherical_noise_drives_samplercustomadvanced(comfy_in_process):
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    from pano360.nodes.spherical import Pano360SphericalNoise
    from pano360.sampling.noise import spherical_noise

    noise = Pano360SphericalNoise.execute(noise_seed=7).args[0]
    latent = {"samples": torch.zeros(1, 4, 8, 16)}
    drawn = noise.generate_noise(latent)
    assert torch.equal(drawn, spherical_noise((1, 4, 8, 16), 7)) and noise.seed == 7
    # the same interface ComfyUI's own RandomNoise offers (what SamplerCustomAdvanced calls)
    assert Noise_RandomNoise(7).generate_noise(latent).shape == drawn.shape
    with pytest.raises(ValueError, match="2 × height"):
        noise.generate_noise({"samples": torch.zeros(1, 4, 8, 8)})
