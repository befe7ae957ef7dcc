"""PanoDiT module: official key layout, adaLN-Zero initialisation, forward/backward."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

from pano360.models.pano_dit import VARIANTS, PanoDiT, PanoDiTConfig, sincos_pos_embed_2d

GOLDEN = pathlib.Path(__file__).parents[1] / "data" / "panodit_xl2_keys.json"
EXACT = 1e-6  # float32 round-off of a handful of ops on O(1) values


def tiny(**kw) -> PanoDiT:
    torch.manual_seed(0)
    return PanoDiT(PanoDiTConfig(input_size=16, patch_size=2, hidden_size=32, depth=2, num_heads=2, text_dim=24, **kw))


def randomise(model: PanoDiT) -> None:
    """Break adaLN-Zero so gradients reach every layer."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)


def test_xl2_state_dict_matches_official_golden_keys_and_shapes():
    golden = json.loads(GOLDEN.read_text())
    with torch.device("meta"):
        model = PanoDiT(VARIANTS["DiT-XL/2"])
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(golden["keys"])
    assert got == golden["keys"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == golden["num_parameters"] - 1024 * 1152  # all but the frozen x_pos_embed
    assert 935e6 < trainable < 937e6  # spec §1b: "about 936 M trainable parameters"


def test_tiny_forward_and_backward_reach_every_trainable_parameter():
    model = tiny()
    randomise(model)
    x = torch.randn(2, 4, 16, 16)
    out = model(x, torch.tensor([3.0, 700.0]), torch.randn(2, 1, 24))
    assert out.shape == (2, 8, 16, 16)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.x_pos_embed.grad is None


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny().eval()  # eval: no cross-attention dropout, so both passes are deterministic
    randomise(model)
    x, t, text = torch.randn(1, 4, 16, 16), torch.tensor([10.0]), torch.randn(1, 24)
    model(x, t, text).sum().backward()
    # (in eval the one-token cross-attention skips to_q/to_k: their gradient is None both times)
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing = True
    model(x, t, text).sum().backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert sorted(got) == sorted(ref) and len(ref) > 20
    for n, grad in got.items():
        torch.testing.assert_close(grad, ref[n], rtol=1e-5, atol=1e-6)


def test_adaln_zero_initialisation_makes_every_block_the_identity_and_output_zero():
    model = tiny()
    h = torch.randn(2, 64, 32)
    c = torch.randn(2, 32)
    text = torch.randn(2, 1, 32)
    for block in model.blocks:
        torch.testing.assert_close(block(h, c, text), h, rtol=0, atol=0)
    out = model(torch.randn(2, 4, 16, 16), torch.tensor([1.0, 999.0]), torch.randn(2, 24))
    assert torch.count_nonzero(out) == 0


def test_pos_embed_is_the_closed_form_2d_sincos_table():
    d, g = 16, 5
    table = sincos_pos_embed_2d(d, g)
    assert table.shape == (g * g, d)
    for row, col in [(0, 0), (2, 3), (4, 1)]:
        tok = table[row * g + col]
        for k in range(d // 4):
            w = 10000.0 ** (-k / (d // 4))
            assert tok[k] == pytest.approx(math.sin(col * w), abs=EXACT)
            assert tok[d // 4 + k] == pytest.approx(math.cos(col * w), abs=EXACT)
            assert tok[d // 2 + k] == pytest.approx(math.sin(row * w), abs=EXACT)
            assert tok[3 * d // 4 + k] == pytest.approx(math.cos(row * w), abs=EXACT)
    model = tiny()
    torch.testing.assert_close(model.x_pos_embed[0], sincos_pos_embed_2d(32, 8))


def test_cross_attention_over_one_text_token_is_the_value_projection():
    # Spec §1c: softmax over a single key is 1, so the result is to_out(to_v(context)).
    block = tiny().blocks[0]
    attn = block.cross_atten.eval()
    randomise(block)
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 1, 32)
    # the general softmax attention path gives the same as the one-token shortcut
    torch.testing.assert_close(attn(x, ctx), attn.attend(x, ctx), rtol=1e-5, atol=1e-6)
    ctx2 = torch.randn(2, 3, 32)  # several tokens: the general path, which differs per query
    out = attn(x, ctx2)
    torch.testing.assert_close(out, attn.attend(x, ctx2))
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_wrong_text_width_is_named_in_the_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"text must be .*24"):
        model(torch.randn(1, 4, 16, 16), torch.tensor([1.0]), torch.randn(1, 1024))


def test_unknown_variant_lists_choices():
    with pytest.raises(ValueError, match="DiT-XL/2"):
        PanoDiT.from_variant("DiT-XXL/2")
