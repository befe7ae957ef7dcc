"""PanoDiT nodes against a real ComfyUI (skipped without one): a tiny random checkpoint
through the loader, the text-feature reader and the sampler."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.environ.get("COMFYUI_ROOT")
if not ROOT or not os.path.isfile(os.path.join(ROOT, "comfy", "model_management.py")):
    pytest.skip("ComfyUI not found: set COMFYUI_ROOT to a ComfyUI 0.3.64 checkout", allow_module_level=True)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if "comfy.model_management" not in sys.modules:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # tests run on the CPU even where CUDA exists

import folder_paths  # noqa: E402

from pano360.models.pano_dit import VARIANTS, PanoDiT  # noqa: E402
from pano360.nodes import panodit as nodes  # noqa: E402
from pano360.nodes._common import NodeInputError  # noqa: E402


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch):
    models = tmp_path / "models" / "panodit"
    models.mkdir(parents=True)
    (tmp_path / "input").mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "panodit", ([str(models)], {".pt", ".safetensors"}))
    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path / "input"))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    torch.manual_seed(0)
    model = PanoDiT(VARIANTS["tiny"])
    with torch.no_grad():  # break adaLN-Zero so the output depends on the inputs
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "opt": {}}, models / "tiny.pt")
    return tmp_path


def test_loader_reader_and_sampler_complete_a_tiny_panorama(comfy_dirs):
    assert "tiny.pt" in folder_paths.get_filename_list("panodit")
    handle = nodes.Pano360PanoDiTLoader.execute("tiny.pt", "auto", "fp32").result[0]
    assert handle.variant == "tiny" and handle.source_key == "ema"

    np.save(comfy_dirs / "input" / "caption.npy", np.random.rand(1, 1024).astype(np.float32))
    assert nodes.Pano360TextFeatureFromNpy.validate_inputs("caption.npy") is True
    cond = nodes.Pano360TextFeatureFromNpy.execute("caption.npy").result[0]
    assert cond[0][1]["pooled_output"].shape == (1, 1024)

    known = torch.randn(1, 4, 32, 64)
    mask = torch.zeros(1, 256, 512)
    mask[:, :, 256:] = 1.0  # pixel-space mask: the right half is known
    out = nodes.Pano360PanoDiTSampler.execute(
        handle, cond, steps=4, seed=3, seam_rolls=True, roll_at="0.75, 0.5, 0.25", roll_width=0.25,
        output_orientation="input", known_latent={"samples": known}, known_mask=mask,
    ).result[0]["samples"]
    assert out.shape == (1, 4, 32, 64) and torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 32:], known[..., 32:], rtol=1e-6, atol=1e-6)  # raw latents kept
    again = nodes.Pano360PanoDiTSampler.execute(
        handle, cond, steps=4, seed=3, seam_rolls=True, roll_at="0.75", roll_width=0.25,
        output_orientation="lookbeyond", known_latent={"samples": known}, known_mask=mask,
    ).result[0]["samples"]
    torch.testing.assert_close(again[..., 16:48], known[..., 32:], rtol=1e-6, atol=1e-6)  # strip centred


def test_wrong_pooled_width_and_bad_inputs_are_named(comfy_dirs):
    handle = nodes.Pano360PanoDiTLoader.execute("tiny.pt", "model", "fp32").result[0]
    cond = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]  # an SD1.5 CLIP-L encode
    kwargs = dict(steps=2, seed=0, seam_rolls=False, roll_at="", roll_width=0.25, output_orientation="input")
    with pytest.raises(NodeInputError, match=r"'text'.*pooled_output \[B,1024\].*\[1, 768\]"):
        nodes.Pano360PanoDiTSampler.execute(handle, cond, **kwargs)
    cond = [[torch.zeros(1, 1, 1024), {"pooled_output": torch.zeros(1, 1024)}]]
    with pytest.raises(NodeInputError, match="known_latent"):
        nodes.Pano360PanoDiTSampler.execute(handle, cond, known_latent={"samples": torch.zeros(1, 4, 64, 64)}, **kwargs)
    assert "roll_at" in nodes.Pano360PanoDiTSampler.validate_inputs(roll_at="0.5, 2")
    np.save(comfy_dirs / "input" / "wrong.npy", np.zeros((1, 768), np.float32))
    with pytest.raises(NodeInputError, match=r"\(1,1024\)"):
        nodes.Pano360TextFeatureFromNpy.execute("wrong.npy")
    assert "inside the input folder" in nodes.Pano360TextFeatureFromNpy.validate_inputs("../../etc/passwd.npy")
