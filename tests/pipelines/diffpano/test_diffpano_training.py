"""DiffPano training, tiny on the CPU: both stages run, the epipolar stage lowers its loss on
synthetic posed panoramas, checkpoints resume to the same weights, and the data pipeline
(roll augmentation, posed folders with RealEstate10K poses) keeps the cameras right."""

from __future__ import annotations

import csv
import hashlib
import math

import pytest
import torch

from pano360.models.diffpano_epipolar import EpipolarConfig
from pano360.models.diffpano_loader import load_epipolar
from pano360.models.lora import linear_targets, read_kohya_lora
from pano360.pipelines.diffpano.synthetic import Ball, BoxRoom, render_room
from pano360.pipelines.diffpano.training import (
    Components,
    PanoramaSet,
    SequenceSet,
    TrainConfig,
    roll_panorama,
    synthetic_sequences,
    train,
)
from pano360.projection.geometry import rotation_matrix

diffusers = pytest.importorskip("diffusers")

TINY_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
)
TINY_EPIPOLAR = EpipolarConfig(num_samples=4, num_refs=2, head_dim=16, norm_groups=8)
HEIGHT = 16  # panoramas 16x32 -> latents 8x16 through the tiny VAE (factor 2)
SD_LATENT_SCALE = 0.18215  # SD1.x VAE scaling_factor


def components(seed: int = 0) -> Components:
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**TINY_UNET)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                                  latent_channels=4, norm_num_groups=8, layers_per_block=1)
    # SD's training schedule (scaled_linear 0.00085..0.012, 1000 steps)
    sched = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

    def encode_images(x):
        return vae.encode(x * 2 - 1).latent_dist.mean * SD_LATENT_SCALE

    def encode_prompts(captions):  # a fixed text state per caption
        out = []
        for c in captions:
            g = torch.Generator().manual_seed(int(hashlib.sha256(c.encode()).hexdigest()[:8], 16))
            out.append(torch.randn(5, 16, generator=g))
        return torch.stack(out)

    return Components(unet, encode_images, encode_prompts, sched.alphas_cumprod, "epsilon")


def epipolar_config(**kw) -> TrainConfig:
    base = dict(stage="epipolar", steps=50, learning_rate=1e-2, views=3, height=HEIGHT, save_every=100,
                epipolar=TINY_EPIPOLAR)
    base.update(kw)
    return TrainConfig(**base)


def test_epipolar_stage_lowers_the_loss_on_synthetic_posed_panoramas(tmp_path):
    data = synthetic_sequences(2, 4, HEIGHT, seed=1)
    comp = components()
    result = train(comp, data, epipolar_config(), tmp_path)
    losses = torch.tensor(result.losses)
    assert len(losses) == 50 and bool(torch.isfinite(losses).all())
    # measured on this machine: mean of the first 10 steps 1.02, of the last 10 0.77
    assert float(losses[-10:].mean()) < 0.9 * float(losses[:10].mean())
    with open(tmp_path / "loss.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "loss"] and len(rows) == 51 and float(rows[-1][1]) == pytest.approx(result.losses[-1], rel=1e-5)
    modules = load_epipolar(result.output)
    assert modules.locations == ("mid_block.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1")
    assert float(modules.module_at("up_blocks.1.attentions.0").to_out.weight.abs().max()) > 0  # trained
    for p in comp.unet.parameters():  # the base stays frozen
        assert p.grad is None


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    data = synthetic_sequences(1, 4, HEIGHT, seed=2)
    whole = train(components(), data, epipolar_config(steps=6, save_every=3), tmp_path / "whole")
    train(components(), data, epipolar_config(steps=3, save_every=3), tmp_path / "split")
    resumed = train(components(), data, epipolar_config(steps=6, save_every=3), tmp_path / "split")
    assert len(resumed.losses) == 3  # only steps 4..6 ran
    assert resumed.losses == whole.losses[3:]
    a, b = load_epipolar(whole.output).state_dict(), load_epipolar(resumed.output).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "split").glob("checkpoint-*")) == ["checkpoint-0000003", "checkpoint-0000006"]


def test_lora_stage_exports_kohya_keys_for_every_attention_projection(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, HEIGHT, 2 * HEIGHT, generator=g)
    data = PanoramaSet(images, ["a room"] * 3, HEIGHT)
    comp = components()
    cfg = TrainConfig(stage="lora", steps=5, learning_rate=1e-3, height=HEIGHT, rank=2, save_every=5)
    before = {k: v.clone() for k, v in comp.unet.state_dict().items()}
    result = train(comp, data, cfg, tmp_path)
    after = comp.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)  # UNet restored
    paths = linear_targets(comp.unet)
    assert len(paths) == 4 * 2 * 4  # 1 down + 1 mid + 2 up transformer blocks, attn1/attn2, 4 projections
    factors = read_kohya_lora(result.output, paths)
    assert set(factors) == set(paths)
    assert all(f[0].shape[0] == 2 and f[2] == 2.0 for f in factors.values())  # rank 2, alpha = rank
    assert any(float(f[1].abs().max()) > 0 for f in factors.values())  # trained


def test_roll_panorama_keeps_every_pixel_on_its_world_ray():
    room = BoxRoom(half=(3.0, 1.5, 4.0), balls=(Ball((0.8, -0.4, 1.6), 0.6),),
                   freqs=((1.3, 0.7, 0.0), (-0.9, 0.0, 1.1), (0.0, 0.8, 0.6)), phases=(0.0, 0.5, 1.0))
    rot = rotation_matrix(torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64), 0.0)
    pos = torch.tensor([0.2, 0.0, -0.5], dtype=torch.float64)
    img, _ = render_room(room, rot, pos, (16, 32))
    rolled, turned = roll_panorama(img, rot, 5)
    want, _ = render_room(room, turned, pos, (16, 32))  # the room seen by the turned camera
    assert torch.allclose(rolled, want, atol=1e-5)


def test_posed_sequence_folders_read_realestate10k_poses(tmp_path):
    from pano360.cameras import path_from_arrays
    from pano360.cameras.formats.realestate10k import write_realestate10k
    from pano360.media.images import save_png, to_uint8
    from pano360.projection.geometry import angles_from_rotation

    data = synthetic_sequences(1, 3, HEIGHT, seed=3)
    seq = data.sequences[0]
    folder = tmp_path / "scene_a"
    folder.mkdir()
    for i, frame in enumerate(seq.frames):
        save_png(to_uint8(frame.permute(1, 2, 0)), folder / f"{i:03d}.png")
    ang = angles_from_rotation(seq.rotations)
    path = path_from_arrays(ang[:, 0], ang[:, 1], ang[:, 2], math.radians(90), position=seq.positions.numpy())
    (folder / "poses.txt").write_text(write_realestate10k(path, 2 * HEIGHT, HEIGHT))
    (folder / "caption.txt").write_text("a tiny room\n")
    back = SequenceSet.from_folder(tmp_path, HEIGHT, "default")
    got = back.sequences[0]
    assert got.caption == "a tiny room" and len(got.frames) == 3
    # the file may carry another world frame: relative poses must be the same
    from pano360.projection.epipolar import relative_pose

    for i, j in ((0, 1), (1, 2)):
        want = relative_pose(seq.rotations[i], seq.positions[i], seq.rotations[j], seq.positions[j])
        have = relative_pose(got.rotations[i], got.positions[i], got.rotations[j], got.positions[j])
        assert torch.allclose(want[0], have[0], atol=1e-6) and torch.allclose(want[1], have[1], atol=1e-4)
    with pytest.raises(ValueError, match="no pose file"):
        (folder / "poses.txt").unlink()
        SequenceSet.from_folder(tmp_path, HEIGHT, "default")


def test_config_errors():
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="full")
    with pytest.raises(ValueError, match="at least 2 views"):
        TrainConfig(stage="epipolar", views=1)
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        train(components(), synthetic_sequences(1, 3, HEIGHT), epipolar_config(steps=1, mixed_precision="fp16"), "/tmp/x")
