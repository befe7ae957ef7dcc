"""``python -m pano360 train-diffpano`` end to end on a tiny diffusers Stable Diffusion folder
(random weights, a hand-made CLIP vocabulary): both stages, resume, and the errors."""

from __future__ import annotations

import json
import logging
import string

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from pano360.cli import main  # noqa: E402

HEIGHT = 16
TOKENS = 8


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """unet/ vae/ text_encoder/ tokenizer/ scheduler/ of a tiny SD, as diffusers lays them out."""
    root = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=32,
    ).save_pretrained(root / "unet")
    diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                            norm_num_groups=8, layers_per_block=1).save_pretrained(root / "vae")
    diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + " ,.":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    raw = tmp_path_factory.mktemp("vocab")
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"),
                               model_max_length=TOKENS).save_pretrained(root / "tokenizer")
    transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=TOKENS, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).save_pretrained(root / "text_encoder")
    return root


def _images(folder, n=2):
    from pano360.media.images import save_png, to_uint8

    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        save_png(to_uint8(torch.rand(HEIGHT, 2 * HEIGHT, 3, generator=g)), folder / f"pano_{i}.png")
    (folder / "pano_0.txt").write_text("a kitchen")
    return folder


def test_both_stages_run_from_the_command_line_and_chain(sd_folder, tmp_path, caplog):
    from pano360.models.diffpano_loader import load_epipolar
    from pano360.models.lora import KOHYA_UNET_PREFIX
    from safetensors.torch import load_file

    data = _images(tmp_path / "panos")
    common = ["--base", str(sd_folder), "--height", str(HEIGHT), "--device", "cpu", "--save-every", "2"]
    assert main(["train-diffpano", "--stage", "lora", "--data", str(data), "--out", str(tmp_path / "s1"),
                 "--steps", "2", "--rank", "2", *common]) == 0
    lora = tmp_path / "s1" / "pano_sd_lora.safetensors"
    assert all(k.startswith(KOHYA_UNET_PREFIX) for k in load_file(str(lora)))
    with caplog.at_level(logging.INFO):
        assert main(["train-diffpano", "--stage", "epipolar", "--synthetic", "1", "--lora", str(lora),
                     "--out", str(tmp_path / "s2"), "--steps", "3", "--views", "3", "--samples", "4", *common]) == 0
    modules = load_epipolar(tmp_path / "s2" / "diffpano_epipolar.safetensors")
    assert modules.config.num_samples == 4 and "mid_block.attentions.0" in modules.locations
    assert "loss" in caplog.text and (tmp_path / "s2" / "loss.csv").is_file()
    assert "into 32 UNet layers" in caplog.text  # the stage-1 LoRA merged
    # rerun with more steps: resumes from checkpoint 3 (written at the end), runs steps 4-5 only
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["train-diffpano", "--stage", "epipolar", "--synthetic", "1", "--lora", str(lora),
                     "--out", str(tmp_path / "s2"), "--steps", "5", "--views", "3", "--samples", "4", *common]) == 0
    assert "resumed from checkpoint-0000003" in caplog.text


def test_command_errors_name_what_is_missing(sd_folder, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["train-diffpano", "--stage", "epipolar", "--base", str(sd_folder), "--out", str(tmp_path / "x")]) == 2
    assert "needs --data (posed sequences) or --synthetic N" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["train-diffpano", "--stage", "epipolar", "--synthetic", "1", "--base", str(tmp_path),
                     "--out", str(tmp_path / "y"), "--height", str(HEIGHT)]) == 2
    assert "not a diffusers Stable Diffusion folder" in caplog.text
