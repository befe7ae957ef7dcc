"""PanoDiT nodes inside a real ComfyUI 0.3.64 (skipped without one).

In process: a tiny random checkpoint through the loader, the text-feature reader and the
sampler, and the errors for bad inputs.  Over HTTP: the shipped lookbeyond_panorama
workflow with a tiny random PanoDiT, the random SD1.5 checkpoint's VAE and a .npy text
feature in place of the ViT-H text encoder.
"""

from __future__ import annotations

import copy
import io as _io
import json

import numpy as np
import pytest
import torch

from conftest import ROOT

WORKFLOW = ROOT / "workflows" / "api" / "lookbeyond_panorama.json"


def tiny_panodit_state_dict() -> dict:
    from pano360.models.pano_dit import VARIANTS, PanoDiT

    torch.manual_seed(0)
    model = PanoDiT(VARIANTS["tiny"])
    with torch.no_grad():  # break adaLN-Zero so the output depends on the inputs
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model.state_dict()


@pytest.fixture
def comfy_dirs(comfy_in_process, tmp_path, monkeypatch):
    import pano360.nodes.panodit  # noqa: F401  registers models/panodit first, so monkeypatch restores it

    folder_paths = comfy_in_process.folder_paths
    models = tmp_path / "models" / "panodit"
    models.mkdir(parents=True)
    (tmp_path / "input").mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "panodit", ([str(models)], {".pt", ".safetensors"}))
    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path / "input"))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    sd = tiny_panodit_state_dict()
    torch.save({"model": sd, "ema": sd, "opt": {}}, models / "tiny.pt")
    return tmp_path


def test_loader_reader_and_sampler_complete_a_tiny_panorama(comfy_in_process, comfy_dirs):
    from pano360.nodes import panodit as nodes

    assert "tiny.pt" in comfy_in_process.folder_paths.get_filename_list("panodit")
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
    from pano360.nodes import panodit as nodes
    from pano360.nodes._common import NodeInputError

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
    assert "inside ComfyUI's input folder" in nodes.Pano360TextFeatureFromNpy.validate_inputs("../../etc/passwd.npy")


def test_lookbeyond_panorama_workflow_runs_on_a_tiny_panodit(comfy_server, sd15_checkpoint):
    from PIL import Image

    from safetensors.torch import save_file

    prompt = json.loads(WORKFLOW.read_text())
    folder = comfy_server.base / "models" / "panodit"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "panodit_tiny.safetensors"
    save_file(tiny_panodit_state_dict(), str(checkpoint))
    try:
        entry = _run_small_lookbeyond(comfy_server, prompt, sd15_checkpoint, checkpoint.name)
    finally:  # leave the server's model lists as recorded (tests/host/test_schemas.py)
        checkpoint.unlink()
    assert comfy_server.error_message(entry) is None
    saved = entry["outputs"]["10"]["images"]
    assert len(saved) == 1
    pano = Image.open(comfy_server.base / "output" / saved[0]["subfolder"] / saved[0]["filename"])
    assert pano.size == (512, 256)
    frames = entry["outputs"]["12"]["images"]
    assert len(frames) == 3


def _run_small_lookbeyond(comfy_server, prompt: dict, sd15_checkpoint: str, panodit_file: str) -> dict:
    """The shipped workflow with test models: the SD1.5 checkpoint's VAE, a .npy text
    feature instead of the ViT-H text encoder, 3 steps, a 3-frame 64 px loop."""
    from PIL import Image

    np.save(comfy_server.base / "input" / "caption_text.npy", np.random.rand(1, 1024).astype(np.float32))
    png = _io.BytesIO()
    Image.fromarray((np.random.rand(64, 64, 3) * 255).astype(np.uint8)).save(png, format="PNG")
    comfy_server.upload_image(png.getvalue(), "view.png")
    small = copy.deepcopy(prompt)
    small["1"]["inputs"]["image"] = "view.png"
    small["3"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_checkpoint}}
    for node in small.values():  # the checkpoint's VAE is output 2
        for name, value in node["inputs"].items():
            if value == ["3", 0]:
                node["inputs"][name] = ["3", 2]
    del small["5"]
    small["6"] = {"class_type": "Pano360TextFeatureFromNpy", "inputs": {"path": "caption_text.npy"}}
    small["7"]["inputs"]["checkpoint"] = panodit_file
    small["8"]["inputs"]["steps"] = 3
    small["11"]["inputs"].update(num_frames=3, size=64)
    return comfy_server.run(small, timeout=600)
