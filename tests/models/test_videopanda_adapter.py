"""VideoPanda adapter on diffusers' WanTransformer3DModel (host-free).

References: diffusers' own Wan attention (``WanAttention`` + ``WanAttnProcessor``) for the
multi-view attention at one view, diffusers' ``convert_wan_transformer_to_diffusers`` for
the key names, and ComfyUI's 1.3B key list (``tests/data/wan21_t2v_1_3B_comfy_keys.json``,
made by ``tests/data/make_wan21_t2v_keys.py``) for the official layout.
"""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from _tiny_models import NARROW_WAN, diffusers_wan

from pano360.models.videopanda_adapter import (
    WAN21_T2V_1_3B,
    TrainingFacts,
    VideoPandaAdapter,
    VideoPandaConfig,
    config_from_wan_state_dict,
    load_adapter,
    read_adapter_header,
    save_adapter,
)
from pano360.models.videopanda_wan import (
    DiffusersAttachment,
    diffusers_rope,
    diffusers_to_official_key,
    official_to_diffusers_key,
)

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
# float32 attention computed with a different grouping/order than diffusers' processor.
ATTN_TOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls on a shared 2-core machine run much faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _official(model) -> dict:
    return {diffusers_to_official_key(k): v for k, v in model.state_dict().items()}


def _inputs(views: int, frames: int, hw: int = 8, batch: int = 1, seed: int = 1, text_dim: int = 24):
    g = torch.Generator().manual_seed(seed)
    n = batch * views
    x = torch.randn(n, 16, frames, hw, hw, generator=g)
    t = torch.full((n,), 700.0)
    ctx = torch.randn(n, 5, text_dim, generator=g)
    cond = torch.randn(n, 5, frames, hw, hw, generator=g)
    return x, t, ctx, cond


def _randomise(adapter: VideoPandaAdapter, seed: int = 3, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


# ---------------------------------------------------------------------------------------


def test_zero_initialised_adapter_leaves_diffusers_wan_output_bit_identical():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    x, t, ctx, cond = _inputs(views=3, frames=2)
    with torch.no_grad():
        plain = model(x, t, ctx).sample
        attached = DiffusersAttachment(model, adapter)
        with attached.views(3, 2):
            patched = model(torch.cat([x, cond], 1), t, ctx).sample
    assert torch.equal(patched, plain)


def test_trained_adapter_changes_output_and_detach_restores_the_model():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    _randomise(adapter)
    x, t, ctx, cond = _inputs(views=3, frames=2)
    with torch.no_grad():
        plain = model(x, t, ctx).sample
        attached = DiffusersAttachment(model, adapter)
        with attached.views(3, 2):
            patched = model(torch.cat([x, cond], 1), t, ctx).sample
        attached.detach()
        again = model(x, t, ctx).sample
    assert (patched - plain).abs().max() > 1e-2
    assert torch.equal(again, plain)


def test_multiview_attention_at_one_view_and_frame_is_the_blocks_self_attention():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    attn1 = model.blocks[1].attn1
    g = torch.Generator().manual_seed(5)
    rotary = model.rope(torch.zeros(2, 16, 1, 8, 8))  # one latent frame of 4x4 patches: (1, 16, 1, d) each
    x = torch.randn(2, 16, cfg.dim, generator=g)  # (B, L, D): B separate views, one frame each
    with torch.no_grad():
        base = attn1(x, None, None, rotary)
        mv = adapter.mv_attn(1).attention(x, views=1, frames=1, rope=diffusers_rope(rotary))
    torch.testing.assert_close(mv, base, rtol=0, atol=ATTN_TOL)


def test_multiview_attention_at_one_view_attends_within_each_frame():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    attn1 = model.blocks[0].attn1
    frames, per_frame = 3, 16
    video = torch.zeros(1, 16, frames, 8, 8)
    cos, sin = model.rope(video)  # (1, 48, 1, d)
    x = torch.randn(2, frames * per_frame, cfg.dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        mv = adapter.mv_attn(0).attention(x, views=1, frames=frames, rope=diffusers_rope((cos, sin)))
        for f in range(frames):
            sl = slice(f * per_frame, (f + 1) * per_frame)
            ref = attn1(x[:, sl], None, None, (cos[:, sl], sin[:, sl]))
            torch.testing.assert_close(mv[:, sl], ref, rtol=0, atol=ATTN_TOL)


def test_a_tokens_multiview_output_depends_on_the_other_views_at_its_frame_only():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    _randomise(adapter)
    mv = adapter.mv_attn(0)
    views, frames, per_frame = 3, 2, 16
    cos, sin = model.rope(torch.zeros(1, 16, frames, 8, 8))
    x = torch.randn(views, frames * per_frame, cfg.dim, generator=torch.Generator().manual_seed(7), requires_grad=True)
    out = mv(x, views, frames, diffusers_rope((cos, sin)))
    out[0, :per_frame].sum().backward()  # view 0, frame 0
    grad = x.grad.abs().sum(dim=-1)  # (V, L)
    assert grad[1, :per_frame].sum() > 1e-4 and grad[2, :per_frame].sum() > 1e-4  # other views, same frame
    assert torch.all(grad[:, per_frame:] == 0)  # no other frame
    # with one view per group the views are independent
    x.grad = None
    out = mv(x, 1, frames, diffusers_rope((cos, sin)))
    out[0, :per_frame].sum().backward()
    assert torch.all(x.grad[1:] == 0)


def test_the_full_model_mixes_views_only_through_the_adapter():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    x, t, ctx, cond = _inputs(views=2, frames=1, hw=4)
    attached = DiffusersAttachment(model, adapter)

    def grad_from_view1() -> torch.Tensor:
        inp = torch.cat([x, cond], 1).requires_grad_(True)
        with attached.views(2, 1):
            model(inp, t, ctx).sample[0].sum().backward()
        return inp.grad[1, :16].abs().sum()

    assert grad_from_view1() == 0  # zero init: views are independent videos
    _randomise(adapter)
    assert grad_from_view1() > 1e-4


def test_conditioning_channels_reach_the_tokens_through_zero_initialised_layers():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    cond = torch.zeros(2, cfg.cond_channels, 2, 4, 4)
    cond[0, 3] = 1.0  # mask: view 0 given at both frames
    cond[0, 4] = 0.1  # its noise-augmentation sigma
    assert torch.equal(adapter.cond_tokens(cond), torch.zeros(2, cfg.dim, 2, 2, 2))
    _randomise(adapter)
    tokens = adapter.cond_tokens(cond)
    # rays/mask conv: the conv bias plus the mask; sigma embedding only where the mask is 1
    no_sigma = cond.clone()
    no_sigma[:, 4] = 0.0
    diff = tokens - adapter.cond_tokens(no_sigma)
    assert diff[0].abs().max() > 1e-4 and torch.all(diff[1] == 0)


def test_calls_outside_a_views_context_and_mismatched_shapes_are_refused():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    x, t, ctx, cond = _inputs(views=2, frames=1, hw=4)
    attached = DiffusersAttachment(model, adapter)
    with pytest.raises(RuntimeError, match="views"):
        model(torch.cat([x, cond], 1), t, ctx)
    with attached.views(2, 1), pytest.raises(ValueError, match="conditioning channels"):
        model(x, t, ctx)
    with pytest.raises(ValueError, match="dim"):
        DiffusersAttachment(model, VideoPandaAdapter(VideoPandaConfig(dim=64, num_heads=2, num_layers=2)))


# ---------------------------------------------------------------------------------------
# Keys and configuration
# ---------------------------------------------------------------------------------------


def test_key_mapping_agrees_with_diffusers_own_wan_converter():
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model, _ = diffusers_wan(NARROW_WAN, std=None)
    sd = model.state_dict()
    official = {diffusers_to_official_key(k): v for k, v in sd.items()}
    converted = convert_wan_transformer_to_diffusers(dict(official))
    assert set(converted) == set(sd)
    for k, v in converted.items():
        assert v is sd[k]
    assert all(official_to_diffusers_key(diffusers_to_official_key(k)) == k for k in sd)


def test_official_1_3B_keys_map_onto_diffusers_1_3B_model_with_equal_shapes():
    from diffusers import WanTransformer3DModel

    from pano360.models.videopanda_wan import wan_diffusers_config

    golden = json.loads((DATA / "wan21_t2v_1_3B_comfy_keys.json").read_text())
    with torch.device("meta"):
        model = WanTransformer3DModel(**wan_diffusers_config(WAN21_T2V_1_3B, ffn_dim=8960))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    mapped = {official_to_diffusers_key(k): s for k, s in golden.items()}
    assert mapped == shapes


def test_config_is_read_from_the_official_1_3B_shapes():
    golden = json.loads((DATA / "wan21_t2v_1_3B_comfy_keys.json").read_text())
    sd = {f"model.diffusion_model.{k}": torch.empty(s, device="meta") for k, s in golden.items()}
    assert config_from_wan_state_dict(sd) == WAN21_T2V_1_3B
    with pytest.raises(ValueError, match="image-to-video"):
        config_from_wan_state_dict({**sd, "model.diffusion_model.img_emb.proj.0.weight": torch.empty(1)})


def test_1_3B_adapter_has_the_documented_keys_and_size():
    with torch.device("meta"):
        adapter = VideoPandaAdapter(WAN21_T2V_1_3B)
    sd = adapter.state_dict()
    d = 1536
    assert list(sd["cond_embedding.weight"].shape) == [d, 4, 1, 2, 2]
    assert list(sd["sigma_embedding.0.weight"].shape) == [d, 256]
    assert list(sd["blocks.29.mv_attn.proj_out.weight"].shape) == [d, d]
    per_block = 5 * (d * d + d) + 2 * d
    assert sum(v.numel() for v in sd.values()) == 30 * per_block + (d * 4 * 4 + d) + (256 * d + d + d * d + d)
    golden = json.loads((DATA / "wan21_t2v_1_3B_comfy_keys.json").read_text())
    for i in (0, 29):  # every copied tensor has its source's shape
        for name in ("q.weight", "k.bias", "o.weight", "norm_q.weight"):
            assert list(sd[f"blocks.{i}.mv_attn.{name}"].shape) == golden[f"blocks.{i}.self_attn.{name}"]


def test_init_from_base_copies_each_blocks_self_attention():
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base({f"model.diffusion_model.{k}": v for k, v in _official(model).items()})
    for i in range(cfg.num_layers):
        attn, mv = model.blocks[i].attn1, adapter.mv_attn(i)
        assert torch.equal(mv.q.weight, attn.to_q.weight) and torch.equal(mv.o.bias, attn.to_out[0].bias)
        assert torch.equal(mv.norm_k.weight, attn.norm_k.weight)
        assert torch.all(mv.proj_out.weight == 0)


def test_adapter_only_on_chosen_blocks():
    model, cfg = diffusers_wan(NARROW_WAN)
    cfg = VideoPandaConfig(**{**cfg.__dict__, "mv_blocks": (1,)})
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    assert adapter.mv_attn(0) is None and adapter.mv_attn(1) is not None
    assert not any(k.startswith("blocks.0.") for k in adapter.state_dict())
    with pytest.raises(ValueError, match="mv_blocks"):
        VideoPandaConfig(num_layers=2, mv_blocks=(2,))


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def test_adapter_file_round_trip_keeps_weights_config_and_training_facts(tmp_path):
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg).init_from_base(_official(model))
    _randomise(adapter)
    facts = TrainingFacts(shift=9.8, shift_tokens=49152, noise_aug_sigma=0.05, steps=100,
                          matrices=((3, 16), (4, 12), (6, 8), (8, 6)), base_training="lora")
    extra = {"base.blocks.0.self_attn.q.weight": torch.ones(cfg.dim, cfg.dim),
             "base_lora.blocks.0.ffn.0.lora_down.weight": torch.ones(4, cfg.dim)}
    path = str(tmp_path / "a.safetensors")
    save_adapter(path, adapter, facts, extra)
    assert read_adapter_header(path) == (cfg, facts)
    loaded = load_adapter(path)
    assert loaded.training == facts
    for k, v in adapter.state_dict().items():
        assert torch.equal(loaded.adapter.state_dict()[k], v)
    assert set(loaded.base_weights) == {"blocks.0.self_attn.q.weight"}
    assert set(loaded.base_lora) == {"blocks.0.ffn.0.lora_down.weight"}


def test_foreign_or_inconsistent_adapter_files_are_refused_with_the_reason(tmp_path):
    from safetensors.torch import save_file

    foreign = str(tmp_path / "lora.safetensors")
    save_file({"x": torch.zeros(1)}, foreign, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a Pano360 VideoPanda adapter"):
        read_adapter_header(foreign)
    model, cfg = diffusers_wan(NARROW_WAN)
    adapter = VideoPandaAdapter(cfg)
    path = str(tmp_path / "a.safetensors")
    save_adapter(path, adapter, TrainingFacts())
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del tensors["blocks.1.mv_attn.q.weight"]
    save_file(tensors, path, metadata=meta)
    with pytest.raises(ValueError, match=r"missing \['blocks.1.mv_attn.q.weight'\]"):
        load_adapter(path)
    with pytest.raises(ValueError, match="base"):
        save_adapter(path, adapter, TrainingFacts(), {"blocks.0.x": torch.zeros(1)})
