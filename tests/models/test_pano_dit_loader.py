"""PanoDiT checkpoints: official .pt layout, restricted unpickling, safetensors, strict keys."""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import os

import pytest
import torch
from safetensors import safe_open

from pano360.app import convert_panodit as pano_dit_convert
from pano360.models.pano_dit import VARIANTS, PanoDiT, PanoDiTConfig
from pano360.models.pano_dit_loader import ForbiddenPickleError, detect_config, load_panodit, load_state_dict


def tiny_model(seed: int) -> PanoDiT:
    torch.manual_seed(seed)
    return PanoDiT(VARIANTS["tiny"])


def official_checkpoint(path, model: PanoDiT, ema: PanoDiT) -> None:
    """The layout train_with_text.py writes: model, ema, AdamW state and the argparse args."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    model(torch.randn(1, 4, 64, 64), torch.tensor([5]), torch.randn(1, 1, 1024)).sum().backward()
    opt.step()
    args = argparse.Namespace(model="DiT-XL/2", image_size=512, vae="ema", global_seed=0, resume_from=None)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}, path)


class _Exploit:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_official_pt_layout_loads_and_prefers_ema(tmp_path):
    path = str(tmp_path / "0050000.pt")
    model, ema = tiny_model(0), tiny_model(1)
    official_checkpoint(path, model, ema)
    loaded, info = load_panodit(path)
    assert info["variant"] == "tiny" and info["key"] == "ema"
    assert info["args"]["model"] == "DiT-XL/2" and info["args"]["image_size"] == 512
    for k, v in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    as_model, info = load_panodit(path, key="model")
    assert info["key"] == "model"
    assert torch.equal(as_model.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    assert not loaded.training and not loaded.x_pos_embed.requires_grad


@pytest.mark.parametrize("zip_format", [True, False])
def test_forbidden_pickled_object_is_refused_and_never_run(tmp_path, zip_format):
    marker = tmp_path / "executed"
    _Exploit.marker = str(marker)
    path = str(tmp_path / "evil.pt")
    torch.save({"ema": tiny_model(0).state_dict(), "args": _Exploit()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ForbiddenPickleError, match=r"evil\.pt: refused .*(posix|nt)\.system.*argparse\.Namespace"):
        load_panodit(path)
    assert not marker.exists()


def test_unlisted_class_is_refused_with_its_name(tmp_path):
    path = str(tmp_path / "odd.pt")
    torch.save({"ema": {}, "args": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ForbiddenPickleError, match="fractions.Fraction"):
        load_state_dict(path)


def test_mismatched_state_dict_names_file_missing_and_unexpected_keys(tmp_path):
    sd = tiny_model(0).state_dict()
    sd.pop("blocks.1.cross_atten.to_k.weight")
    sd["blocks.0.y_embedder.weight"] = torch.zeros(1)
    path = str(tmp_path / "broken.pt")
    torch.save({"ema": sd}, path)
    with pytest.raises(ValueError) as err:
        load_panodit(path)
    msg = str(err.value)
    assert "broken.pt" in msg
    assert "missing keys ['blocks.1.cross_atten.to_k.weight']" in msg
    assert "unexpected keys ['blocks.0.y_embedder.weight']" in msg


def test_convert_command_writes_safetensors_that_load_strictly(tmp_path):
    src, dst = str(tmp_path / "ckpt.pt"), str(tmp_path / "panodit_tiny.safetensors")
    model, ema = tiny_model(0), tiny_model(1)
    official_checkpoint(src, model, ema)
    parser = argparse.ArgumentParser()
    pano_dit_convert.add_arguments(parser)
    assert pano_dit_convert.run(parser.parse_args([src, dst, "--key", "model"])) == 0
    with safe_open(dst, "pt") as f:
        meta = f.metadata()
    assert meta["pano360.variant"] == "tiny" and meta["pano360.source_key"] == "model"
    assert json.loads(meta["pano360.train_args"])["image_size"] == 512
    loaded, info = load_panodit(dst)
    assert info["key"] == "state_dict"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not os.path.exists(dst + ".partial")


def test_ddp_prefix_is_stripped(tmp_path):
    path = str(tmp_path / "ddp.pt")
    torch.save({"ema": {f"module.{k}": v for k, v in tiny_model(0).state_dict().items()}}, path)
    assert load_panodit(path)[1]["variant"] == "tiny"


def test_variant_detected_from_xl2_shapes():
    with torch.device("meta"):
        sd = PanoDiT(VARIANTS["DiT-XL/2"]).state_dict()
    name, cfg = detect_config(sd)
    assert name == "DiT-XL/2" and cfg == VARIANTS["DiT-XL/2"]
    # one block fewer is a size of its own now (issue 17 item 4), read from the shapes
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.27.")}
    name, cfg = detect_config(sd)
    assert cfg.depth == 27 and cfg.num_heads == 16 and name.startswith("custom")
    gap = {k: v for k, v in sd.items() if not k.startswith("blocks.3.")}
    with pytest.raises(ValueError, match=r"blocks must be numbered 0\.\.25"):
        detect_config(gap)


# Shape-varied tiny configurations that no VARIANTS entry has: the loader must read every size
# from the weights (issue 17 item 4).  Each is (config, num_heads override or None).
ODD_CONFIGS = [
    (PanoDiTConfig(depth=3, hidden_size=128, patch_size=4, num_heads=2, input_size=32, text_dim=24,
                   mlp_ratio=2.0, frequency_embedding_size=32), None),   # 128 / 64-channel heads = 2
    (PanoDiTConfig(depth=1, hidden_size=48, patch_size=2, num_heads=3, input_size=16, in_channels=8,
                   learn_sigma=False, text_dim=16), 3),                   # 48: heads only by override
]


@pytest.mark.parametrize("cfg, heads", ODD_CONFIGS)
def test_a_checkpoint_of_any_size_loads_and_computes_like_the_model_that_wrote_it(tmp_path, cfg, heads):
    torch.manual_seed(0)
    model = PanoDiT(cfg).eval()
    path = str(tmp_path / "odd.pt")
    torch.save({"ema": model.state_dict(), "args": argparse.Namespace(model="DiT-XL/2")}, path)
    loaded, info = load_panodit(path, num_heads=heads)
    assert info["config"] == cfg and info["variant"].startswith("custom")
    x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    t, text = torch.tensor([3, 700]), torch.randn(2, 1, cfg.text_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, text), model(x, t, text), rtol=0, atol=0)


def test_heads_of_an_odd_width_need_a_stored_config_or_an_override(tmp_path):
    cfg, _ = ODD_CONFIGS[1]
    path = str(tmp_path / "odd.pt")
    torch.save(PanoDiT(cfg).state_dict(), path)
    with pytest.raises(ValueError, match=r"odd\.pt: cannot tell the number of attention heads .*give num_heads"):
        load_panodit(path)
    # a converted safetensors file stores its config, heads included
    src, dst = str(tmp_path / "odd_ema.pt"), str(tmp_path / "odd.safetensors")
    torch.save({"ema": PanoDiT(cfg).state_dict()}, src)
    from pano360.models.pano_dit_loader import convert_to_safetensors

    with pytest.raises(ValueError, match="give num_heads"):
        convert_to_safetensors(src, dst)
    model, _ = load_panodit(src, num_heads=3)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, dst,
              metadata={"pano360.config": json.dumps(dataclasses.asdict(cfg))})
    assert load_panodit(dst)[1]["config"].num_heads == 3


def test_missing_key_choice_is_named(tmp_path):
    path = str(tmp_path / "plain.pt")
    torch.save(tiny_model(0).state_dict(), path)
    with pytest.raises(ValueError, match="key 'ema' not in checkpoint; it is a plain state dict .*use 'auto'"):
        load_state_dict(path, key="ema")
    path = str(tmp_path / "model_only.pt")
    torch.save({"model": tiny_model(0).state_dict(), "opt": {}}, path)
    with pytest.raises(ValueError, match=r"key 'ema' not in checkpoint; it has \['model'\]$"):
        load_state_dict(path, key="ema")


def test_legacy_non_zip_checkpoint_loads_too(tmp_path):
    path = str(tmp_path / "legacy.pt")
    sd = tiny_model(0).state_dict()
    torch.save({"ema": sd, "args": argparse.Namespace(model="DiT-XL/2")}, path, _use_new_zipfile_serialization=False)
    loaded, info = load_panodit(path)
    assert info["key"] == "ema" and torch.equal(loaded.final_layer.linear.weight, sd["final_layer.linear.weight"])


@pytest.mark.parametrize("data", [b"hello, not a checkpoint", b"", b"\x80\x02}q\x00."], ids=["text", "empty", "bare-pickle"])
def test_a_file_that_is_no_torch_checkpoint_is_a_clear_error_naming_it(tmp_path, data):
    path = tmp_path / "broken.pt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"broken\.pt: not a readable torch checkpoint") as info:
        load_panodit(str(path))
    assert not isinstance(info.value, ForbiddenPickleError)   # nothing was refused: the file is broken


def test_sft_files_listed_by_comfyui_are_read_as_safetensors(tmp_path):
    # ComfyUI lists .sft (short for .safetensors) in every model folder.
    from safetensors.torch import save_file

    model = tiny_model(3)
    path = str(tmp_path / "panodit.sft")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded, info = load_panodit(path)
    assert info["variant"] == "tiny"
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_convert_command_reports_a_refused_checkpoint_without_a_traceback(tmp_path, caplog):
    marker = tmp_path / "executed"
    _Exploit.marker = str(marker)
    src, dst = str(tmp_path / "evil.pt"), str(tmp_path / "out.safetensors")
    torch.save({"ema": tiny_model(0).state_dict(), "args": _Exploit()}, src)
    parser = argparse.ArgumentParser()
    pano_dit_convert.add_arguments(parser)
    assert pano_dit_convert.run(parser.parse_args([src, dst])) == 2
    assert "evil.pt: refused to load" in caplog.text
    assert not marker.exists() and not os.path.exists(dst) and not os.path.exists(dst + ".partial")
