"""DiffPano's epipolar attention module on a tiny diffusers UNet, against independent references.

References: the UNet without the modules (bit-exact identity of zero-initialised modules),
a closed-form epipolar point set sampled from an analytic field (what the module gathers),
``F.scaled_dot_product_attention`` with an explicit mask (the training-free attention).
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from pano360.models import diffpano_epipolar as de
from pano360.models.diffpano_epipolar import (
    EpipolarAttention,
    EpipolarAttentionSet,
    EpipolarConfig,
    EpipolarPlan,
    EpipolarViews,
    epipolar_extended_attention,
    layer_geometry,
    nearest_references,
    positional_encoding,
)
from pano360.models.diffpano_loader import load_epipolar, read_epipolar, save_epipolar
from pano360.models.diffpano_unet import epipolar_hooks

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64

# A diffusers UNet2DConditionModel small enough for CPU tests with SD's block kinds: a
# cross-attention encoder block, a mid block with attention, a CrossAttnUpBlock2D.
TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
    attention_head_dim=8, norm_num_groups=8,
)
TINY_CONFIG = EpipolarConfig(num_samples=4, num_refs=1, near=0.5, head_dim=16, norm_groups=8)
LATENT_HW = (8, 16)


def rodrigues(axis, angle: float) -> torch.Tensor:
    k = torch.tensor(axis, dtype=F64)
    k = k / k.norm()
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=F64)
    return torch.eye(3, dtype=F64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def yaw(deg: float) -> torch.Tensor:
    return rodrigues((0, 1, 0), math.radians(deg))


def three_views(references) -> EpipolarViews:
    rot = torch.stack([yaw(0), yaw(30), yaw(-20)])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.3], [-0.3, 0.1, 0.5]], dtype=F64)
    return EpipolarViews(rot, pos, torch.tensor(references))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(**TINY_UNET).eval()


def unet_inputs(batch: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, *LATENT_HW, generator=g)
    ctx = torch.randn(batch, 5, 16, generator=g)
    return x, torch.full((batch,), 500.0), ctx


def randomise_(modules: EpipolarAttentionSet, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# --------------------------------------------------------------------------- identity and gradients


def test_zero_initialised_modules_leave_the_unet_output_bit_exact(unet):
    modules = EpipolarAttentionSet.for_diffusers_unet(unet, TINY_CONFIG)
    assert modules.locations == ("mid_block.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1")
    views = three_views([[1], [0], [0]])
    x, t, ctx = unet_inputs(6)  # two groups (cond/uncond) of three views
    with torch.no_grad():
        base = unet(x, t, ctx).sample
        calls = []
        handles = [modules.module_at(loc).register_forward_hook(lambda *a: calls.append(1)) for loc in modules.locations]
        with epipolar_hooks(unet, modules, EpipolarPlan(views, TINY_CONFIG)):
            patched = unet(x, t, ctx).sample
        for h in handles:
            h.remove()
        after = unet(x, t, ctx).sample  # hooks removed on exit
    assert len(calls) == 3  # every module ran once
    assert torch.equal(patched, base)
    assert torch.equal(after, base)


def test_trained_modules_mix_only_referenced_views_and_gradients_reach_every_parameter(unet):
    modules = EpipolarAttentionSet.for_diffusers_unet(unet, TINY_CONFIG)
    randomise_(modules)
    views = three_views([[1], [0], [-1]])  # view 2 has no reference
    x, t, ctx = unet_inputs(3)
    x.requires_grad_(True)
    with torch.no_grad():
        base = unet(x, t, ctx).sample
    with epipolar_hooks(unet, modules, EpipolarPlan(views, TINY_CONFIG)):
        out = unet(x, t, ctx).sample
    assert (out[:2] - base[:2]).abs().max() > 1e-3  # the modules act
    assert torch.allclose(out[2], base[2], atol=1e-6)  # ... but not on a view without references
    grad_0 = torch.autograd.grad(out[0].sum(), x, retain_graph=True)[0]
    assert grad_0[1].abs().sum() > 0  # view 0 reads its reference, view 1
    assert grad_0[2].abs().sum() == 0  # ... and nothing of view 2
    out.square().mean().backward()
    for name, p in modules.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_output_and_gradients(unet):
    torch.manual_seed(0)
    feats = torch.randn(3, 32, 8, 16, requires_grad=True)
    plain = EpipolarAttention(32, TINY_CONFIG)
    ckpt = EpipolarAttention(32, TINY_CONFIG, gradient_checkpointing=True)
    randomise_(plain)
    ckpt.load_state_dict(plain.state_dict())
    geom = layer_geometry(three_views([[1], [2], [0]]), (8, 16), TINY_CONFIG)
    a = plain(feats, geom)
    ga = torch.autograd.grad(a.square().sum(), feats)[0]
    b = ckpt(feats, geom)
    gb = torch.autograd.grad(b.square().sum(), feats)[0]
    assert torch.allclose(a, b) and torch.allclose(ga, gb)


def test_targets_without_references_are_returned_unchanged_even_with_weights():
    torch.manual_seed(0)
    ea = EpipolarAttention(32, TINY_CONFIG)
    randomise_(ea)
    feats = torch.randn(3, 32, 8, 16)
    geom = layer_geometry(three_views([[-1], [-1], [-1]]), (8, 16), TINY_CONFIG)
    assert torch.equal(ea(feats, geom), feats)


# --------------------------------------------------------------------------- what is gathered


def field(d: torch.Tensor) -> torch.Tensor:
    """Eight smooth functions of unit directions: (..., 3) -> (..., 8)."""
    x, y, z = d.unbind(-1)
    return torch.stack([x, y, z, x * y, y * z, z * x, x * x - z * z, 0.5 * y * y + 0.3 * x], -1)


def erp_dirs(h: int, w: int) -> torch.Tensor:
    lon = ((torch.arange(w, dtype=F64) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h, dtype=F64) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    return torch.stack([lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()], -1)


# Bilinear sampling error of the degree-2 field at 32x64 (pixel ~0.1 rad) after GroupNorm
# scaling (std ~0.3 -> x3): measured 0.014; ignoring the translation would give ~1.
GATHER_TOL = 0.03


def test_module_attends_to_the_reference_features_at_the_closed_form_epipolar_points():
    # With to_q = 0 every valid sample gets the same weight, to_v = to_out = identity and no
    # positional term: the module adds the mean, over the S samples, of the reference's
    # normalised features there.  The expected points come from the pose in closed form.
    h, w, c = 32, 64, 8
    cfg = EpipolarConfig(num_samples=3, num_refs=1, near=1.0, far=4.0, spacing="linear", head_dim=8, norm_groups=1)
    ea = EpipolarAttention(c, cfg).double()
    with torch.no_grad():
        ea.to_q.weight.zero_()
        ea.to_v.weight.copy_(torch.eye(c))
        ea.to_out.weight.copy_(torch.eye(c))
        ea.pos_embed.weight.zero_()
        ea.pos_embed.bias.zero_()
    rot_ref = yaw(40) @ rodrigues((1, 0, 0), math.radians(-10))
    pos_ref = torch.tensor([0.5, -0.2, 0.8], dtype=F64)
    views = EpipolarViews(torch.stack([torch.eye(3, dtype=F64), rot_ref]),
                          torch.stack([torch.zeros(3, dtype=F64), pos_ref]), torch.tensor([[1], [0]]))
    maps = field(erp_dirs(h, w)).permute(2, 0, 1)  # (8, h, w) in each camera's own frame
    feats = torch.stack([maps * 0.0, maps])  # view 0 zero: its own features do not matter
    geom = layer_geometry(views, (h, w), cfg, dtype=F64)
    out = ea(feats, geom)[0] - feats[0]  # (8, h, w)
    # expected: mean over depths of GroupNorm(reference)(direction of the point)
    mu, var = maps.mean(), maps.var(unbiased=False)
    d = erp_dirs(h, w).reshape(-1, 3)
    want = 0
    for depth in (1.0, 2.5, 4.0):
        world = depth * d  # target at the origin, identity rotation
        local = (world - pos_ref) @ rot_ref  # rot_ref^T (P - pos_ref)
        u = local / local.norm(dim=-1, keepdim=True)
        want = want + (field(u) - mu) / torch.sqrt(var + cfg.norm_eps)
    want = (want / 3).T.reshape(c, h, w)
    assert (out - want).abs().max() < GATHER_TOL


def test_positional_encoding_values():
    pe = positional_encoding(torch.tensor([0.5]), torch.tensor([math.pi / 4]), 2)
    v = (0.5, 0.25)
    want = [*v, math.sin(math.pi * v[0]), math.sin(math.pi * v[1]), math.cos(math.pi * v[0]), math.cos(math.pi * v[1]),
            math.sin(2 * math.pi * v[0]), math.sin(2 * math.pi * v[1]), math.cos(2 * math.pi * v[0]), math.cos(2 * math.pi * v[1])]
    assert torch.allclose(pe[0], torch.tensor(want), atol=1e-6)
    assert de.pe_dim(2) == 10


def test_nearest_references_rules():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [3.5, 0, 0]])
    assert nearest_references(pos, 2).tolist() == [[1, 2], [0, 2], [3, 1], [2, 1]]
    assert nearest_references(pos, 2, "previous").tolist() == [[-1, -1], [0, -1], [1, 0], [2, 1]]
    assert nearest_references(pos[:2], 3).tolist() == [[1, -1, -1], [0, -1, -1]]
    with pytest.raises(ValueError, match="rule"):
        nearest_references(pos, 1, "random")


def test_views_are_validated():
    with pytest.raises(ValueError, match="own reference"):
        three_views([[0], [0], [1]])
    with pytest.raises(ValueError, match="indices"):
        three_views([[1], [3], [0]])
    geom = layer_geometry(three_views([[1], [0], [0]]), (8, 16), TINY_CONFIG)
    with pytest.raises(ValueError, match="whole number"):
        EpipolarAttention(32, TINY_CONFIG)(torch.randn(4, 32, 8, 16), geom)


# --------------------------------------------------------------------------- state dict and files


def test_state_dict_layout_and_safetensors_roundtrip(tmp_path, unet, caplog):
    cfg = EpipolarConfig(num_samples=4, num_refs=1, far=math.inf, head_dim=16, norm_groups=8)
    modules = EpipolarAttentionSet.for_diffusers_unet(unet, cfg)
    randomise_(modules)
    keys = set(modules.state_dict())
    params = ("norm.weight", "norm.bias", "to_q.weight", "to_k.weight", "to_v.weight",
              "pos_embed.weight", "pos_embed.bias", "to_out.weight", "to_out.bias")
    assert keys == {f"{loc}.{p}" for loc in modules.locations for p in params}
    assert modules.state_dict()["up_blocks.1.attentions.0.to_q.weight"].shape == (32, 32)
    assert modules.state_dict()["mid_block.attentions.0.pos_embed.weight"].shape == (64, de.pe_dim(cfg.pe_frequencies))
    path = tmp_path / "epipolar.safetensors"
    save_epipolar(modules, path)
    loaded = load_epipolar(path)
    assert loaded.config == cfg and math.isinf(loaded.config.far)
    assert loaded.locations == modules.locations
    for k, v in modules.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with caplog.at_level(logging.INFO):
        assert load_epipolar(path, num_samples=16).config.num_samples == 16
    assert "differ from training" in caplog.text
    with pytest.raises(ValueError, match="cannot be overridden"):
        load_epipolar(path, head_dim=32)


def test_loader_errors_name_the_file_and_the_keys(tmp_path, unet):
    from safetensors.torch import save_file

    modules = EpipolarAttentionSet.for_diffusers_unet(unet, TINY_CONFIG)
    path = tmp_path / "ok.safetensors"
    save_epipolar(modules, path)
    state, cfg = read_epipolar(path)
    meta = {"pano360_format": "diffpano_epipolar", "format_version": "1",
            "config": '{"head_dim": 16, "norm_groups": 8}'}
    missing = dict(state)
    missing.pop("up_blocks.1.attentions.0.to_k.weight")
    save_file(missing, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"missing.safetensors.*up_blocks\.1\.attentions\.0\.to_k\.weight"):
        load_epipolar(tmp_path / "missing.safetensors")
    save_file({**state, "up_blocks.1.attentions.0.extra.weight": torch.zeros(1)}, tmp_path / "extra.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"extra.safetensors.*unexpected key"):
        load_epipolar(tmp_path / "extra.safetensors")
    save_file(state, tmp_path / "nometa.safetensors")
    with pytest.raises(ValueError, match="not a DiffPano epipolar-module file"):
        load_epipolar(tmp_path / "nometa.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_epipolar(tmp_path / "junk.safetensors")


# --------------------------------------------------------------------------- training-free attention


def test_extended_attention_without_references_is_plain_self_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 8 * 16, 32) for _ in range(3))
    geom = layer_geometry(three_views([[-1], [-1], [-1]]), (8, 16), TINY_CONFIG)
    out = epipolar_extended_attention(q, k, v, 2, geom)
    split = lambda t: t.view(3, 128, 2, 16).transpose(1, 2)  # noqa: E731
    ref = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(3, 128, 32)
    assert torch.allclose(out, ref, atol=1e-5)


def test_extended_attention_equals_one_softmax_over_own_and_epipolar_tokens(monkeypatch, caplog):
    # Reference 1 is camera 0 turned by exactly 3 columns of yaw with no translation: every
    # depth sample of query token (r, c) lands on the reference token (r, c - 3), with
    # bilinear weight 1.  So the extended attention is dense attention over [own tokens,
    # reference tokens] where that one reference token counts S times (log S in its logit)
    # and every other reference token is masked.
    h, w, heads, d = 8, 16, 2, 8
    cfg = EpipolarConfig(num_samples=4, num_refs=1, head_dim=d, norm_groups=1)
    step = 360.0 / w
    views = EpipolarViews(torch.stack([yaw(0), yaw(3 * step)]), torch.zeros(2, 3, dtype=F64), torch.tensor([[1], [-1]]))
    geom = layer_geometry(views, (h, w), cfg)
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, h * w, heads * d) for _ in range(3))
    out = epipolar_extended_attention(q, k, v, heads, geom, ref_logit_bias=0.3)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    target = (rows * w + (cols - 3) % w).reshape(-1)  # reference token of each query
    bias = torch.full((h * w, h * w), -math.inf)
    bias[torch.arange(h * w), target] = math.log(cfg.num_samples) + 0.3
    mask = torch.cat([torch.zeros(h * w, h * w), bias], dim=1)
    split = lambda t: t.view(-1, h * w, heads, d).transpose(1, 2)  # noqa: E731
    keys = torch.cat([split(k[:1]), split(k[1:])], dim=2)
    vals = torch.cat([split(v[:1]), split(v[1:])], dim=2)
    want = F.scaled_dot_product_attention(split(q[:1]), keys, vals, attn_mask=mask).transpose(1, 2).reshape(1, h * w, -1)
    assert torch.allclose(out[:1], want, atol=1e-5)
    # chunking the tokens, and the plain-torch log-sum-exp path, do not change the result
    monkeypatch.setattr(de, "GATHER_CHUNK_ELEMENTS", 2 * 4 * 2 * heads * d * 5)
    assert torch.allclose(epipolar_extended_attention(q, k, v, heads, geom, ref_logit_bias=0.3), out, atol=1e-6)
    monkeypatch.setattr(de, "LOGITS_CHUNK_ELEMENTS", 2 * heads * h * w * 7)
    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", _refuse)
    with caplog.at_level(logging.INFO):
        assert torch.allclose(epipolar_extended_attention(q, k, v, heads, geom, ref_logit_bias=0.3), out, atol=1e-5)
    assert "using plain torch" in caplog.text


def _refuse(*args, **kwargs):
    raise RuntimeError("no fused kernel in this test")


def test_module_output_does_not_depend_on_token_chunking(monkeypatch):
    torch.manual_seed(0)
    ea = EpipolarAttention(32, TINY_CONFIG)
    randomise_(ea)
    feats = torch.randn(3, 32, 8, 16)
    geom = layer_geometry(three_views([[1], [2], [0]]), (8, 16), TINY_CONFIG)
    whole = ea(feats, geom)
    monkeypatch.setattr(de, "GATHER_CHUNK_ELEMENTS", 3 * 4 * 64 * 10)  # 10 tokens per chunk
    assert torch.allclose(ea(feats, geom), whole, atol=1e-6)
