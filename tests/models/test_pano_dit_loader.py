"""PanoDiT checkpoints: official .pt layout, restricted unpickling, safetensors, strict keys."""

from __future__ import annotations

import argparse
import fractions
import json
import os

import pytest
import torch
from safetensors import safe_open

from pano360.app import convert_panodit as pano_dit_convert
from pano360.models.pano_dit import VARIANTS, PanoDiT
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
    sd = {k: v for k, v in sd.items() if not k.startswith("blocks.27.")}
    with pytest.raises(ValueError, match="unknown PanoDiT size depth=27"):
        detect_config(sd)


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
