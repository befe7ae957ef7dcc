"""``python -m pano360 train-videofrom3d-lora`` end to end on tiny random models (CPU): the fixed-draw
evaluation loss goes down, the files have the official / kohya layouts, a resumed run equals an
uninterrupted one, and bad inputs fail with the argument named.

(The step's arithmetic is held to the official code in tests/pipelines/videofrom3d/
test_vf3d_style_lora.py; loading the files back through ComfyUI's loaders is
tests/host/test_vf3d_style_lora_host.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pano360.cli import main
from pano360.models.flux import Flux, FluxParams, XLabsControlNet

# head dim 128 (Flux's, so the default 16/56/56 rotary split applies), everything else tiny
TINY = FluxParams(in_channels=64, vec_in_dim=8, context_in_dim=12, hidden_size=128, mlp_ratio=2.0, num_heads=1,
                  depth=2, depth_single_blocks=5)
# 4 levels: 8x downsampling, as Flux's VAE (the ControlNet's hint block reduces its image 8x too)
VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[32, 32, 32, 32],
           down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1,
           norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
           use_post_quant_conv=False)
SIZE = 64  # long side of the crops in pixels: latents of at most 8x8, 16 tokens


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is several times faster than contending for the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random(module, std, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("vf3d_lora")
    save_file(_random(Flux(TINY), 0.05, 0).state_dict(), str(root / "flux.safetensors"))
    save_file(_random(XLabsControlNet(TINY, 2), 0.05, 1).state_dict(), str(root / "controlnet.safetensors"))
    torch.manual_seed(2)
    AutoencoderKL(**VAE).save_pretrained(str(root / "vae"))
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "edges").mkdir()
    yy, xx = np.mgrid[0:80, 0:120]
    for i in range(2):
        img = np.stack([(xx * (i + 1)) % 255, (yy * 3) % 255, rng.integers(0, 255, xx.shape)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"ref{i}.png")
        edge = ((xx % 16 == 0) | (yy % 16 == 0)).astype(np.uint8) * 255
        Image.fromarray(np.stack([edge] * 3, -1)).save(root / "edges" / f"ref{i}.png")
    g = torch.Generator().manual_seed(3)
    save_file({"txt": torch.randn(4, 12, generator=g), "vec": torch.randn(8, generator=g)}, str(root / "text.safetensors"))
    return root


def _args(files, out, *extra):
    return ["train-videofrom3d-lora", "--images", str(files / "images"), "--edges", str(files / "edges"),
            "--text-embedding", str(files / "text.safetensors"), "--flux", str(files / "flux.safetensors"),
            "--controlnet", str(files / "controlnet.safetensors"), "--vae", str(files / "vae"), "--out", str(out),
            "--size", str(SIZE), "--precision", "fp32", "--device", "cpu", "--lr", "3e-3", *extra]


def test_training_lowers_the_fixed_draw_loss_and_writes_the_three_files(files, tmp_path):
    out = tmp_path / "run"
    assert main(_args(files, out, "--steps", "30", "--save-every", "15", "--eval-every", "15")) == 0
    logged = json.loads((out / "training_log.json").read_text())
    evals = [v for _, v in logged["eval_loss"]]
    assert [s for s, _ in logged["eval_loss"]] == [0, 15, 30] and len(logged["train_loss"]) == 30
    assert evals[-1] < 0.9 * evals[0], evals  # measured: the curve falls steadily on this tiny model
    for step in (15, 30):
        folder = out / f"checkpoint-{step}"
        flux_lora = load_file(str(folder / "lora.safetensors"))
        cn_lora = load_file(str(folder / "controlnet.lora.safetensors"))
        kohya = load_file(str(folder / "lora_comfyui.safetensors"))
        # official layout: all double blocks, single blocks 1-4, rank 16, down/up only
        assert len(flux_lora) == (2 * 4 + 4 * 2) * 2
        assert flux_lora["double_blocks.1.processor.qkv_lora2.down.weight"].shape == (16, 128)
        assert flux_lora["single_blocks.4.processor.qkv_lora.up.weight"].shape == (3 * 128, 16)
        assert flux_lora["single_blocks.1.processor.proj_lora.down.weight"].shape == (16, 128 + 256)
        assert "single_blocks.0.processor.qkv_lora.up.weight" not in flux_lora
        assert set(k.split(".processor.")[0] for k in cn_lora) == {"double_blocks.0", "double_blocks.1"}
        # kohya copy: same numbers, the single blocks' qkv up padded with zero rows to linear1's height
        up = kohya["lora_unet_single_blocks_4_linear1.lora_up.weight"]
        assert up.shape == (3 * 128 + 256, 16) and torch.count_nonzero(up[3 * 128:]) == 0
        assert torch.equal(up[: 3 * 128], flux_lora["single_blocks.4.processor.qkv_lora.up.weight"])
        assert float(kohya["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 16.0
    assert not torch.equal(load_file(str(out / "checkpoint-15" / "lora.safetensors"))["double_blocks.0.processor."
                                                                                        "qkv_lora1.up.weight"],
                           flux_lora["double_blocks.0.processor.qkv_lora1.up.weight"])


def test_resumed_run_equals_an_uninterrupted_one(files, tmp_path):
    main(_args(files, tmp_path / "straight", "--steps", "6", "--save-every", "3", "--eval-every", "100"))
    main(_args(files, tmp_path / "resumed", "--steps", "3", "--save-every", "3", "--eval-every", "100"))
    main(_args(files, tmp_path / "resumed", "--steps", "6", "--save-every", "3", "--eval-every", "100"))
    a = load_file(str(tmp_path / "straight" / "checkpoint-6" / "lora.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-6" / "lora.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads((tmp_path / "straight" / "training_log.json").read_text())["train_loss"]
    lb = json.loads((tmp_path / "resumed" / "training_log.json").read_text())["train_loss"]
    assert la == lb


def test_bf16_gradient_checkpointing_run_is_finite(files, tmp_path):
    args = _args(files, tmp_path / "bf16", "--steps", "2", "--save-every", "2", "--eval-every", "2",
                 "--gradient-checkpointing")
    args[args.index("fp32")] = "bf16"
    assert main(args) == 0
    lora = load_file(str(tmp_path / "bf16" / "checkpoint-2" / "lora.safetensors"))
    assert all(v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all() for v in lora.values())


def test_errors_name_the_argument(files, tmp_path):
    with pytest.raises(SystemExit, match="--edges"):
        args = _args(files, tmp_path / "x", "--steps", "1")
        i = args.index("--edges")
        main(args[:i] + args[i + 2:])
    bad = tmp_path / "bad_text.safetensors"
    save_file({"context": torch.zeros(2, 12)}, str(bad))
    with pytest.raises(SystemExit, match="--text-embedding"):
        args = _args(files, tmp_path / "y", "--steps", "1")
        args[args.index("--text-embedding") + 1] = str(bad)
        main(args)
    wrong = tmp_path / "wrong_dim.safetensors"
    save_file({"txt": torch.zeros(2, 7), "vec": torch.zeros(8)}, str(wrong))
    with pytest.raises(SystemExit, match="txt \\(tokens, 12\\)"):
        args = _args(files, tmp_path / "z", "--steps", "1")
        args[args.index("--text-embedding") + 1] = str(wrong)
        main(args)
