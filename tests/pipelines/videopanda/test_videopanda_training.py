"""VideoPanda training on procedurally generated 360° videos (tiny random Wan, CPU).

What is checked against what: the loss on fixed evaluation matrices (fixed sigmas and
noise) before and after 100 steps; the paper's four random matrices (§3.2) as the shapes
the encoder sees; the saved file against :func:`load_adapter` and the host-free sampler;
a resumed run against an uninterrupted one; exported LoRA/base keys against Wan's
official key list.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import pytest
import torch
from _vpanda_fixtures import patch_decode, patch_encode, text_encode, write_turning_panoramas
from _tiny_models import NARROW_WAN, diffusers_wan

from pano360.sampling.flow import flow_sigmas
from pano360.models.videopanda_adapter import VideoPandaAdapter, load_adapter
from pano360.models.videopanda_wan import DiffusersAttachment, diffusers_to_official_key
from pano360.pipelines.videopanda.adapter import adapter_call
from pano360.pipelines.videopanda.adapter_sampler import sample_grid_with_adapter
from pano360.media.video import count_frames
from pano360.pipelines.videopanda.batches import MatrixSource
from pano360.pipelines.videopanda.data import (
    PAPER_MATRICES,
    pixel_frames,
    plan_sample,
    regime_mask,
    scan_folder,
)
from pano360.pipelines.videopanda.train import train, training_loss
from pano360.pipelines.videopanda.train_config import ADAPTER_FILE, TrainConfig
from pano360.pipelines.videopanda.trainable import Trainable
from pano360.projection import rig_preset

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"
RIG = rig_preset("videopanda8", size=32)


@pytest.fixture
def one_thread():
    """Tiny matmuls on a shared 2-core machine run ~50x faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_turning_panoramas(tmp_path_factory.mktemp("pano_videos"))


def _source(folder, config, seed=0):
    clips = scan_folder(folder)
    return MatrixSource(clips, [count_frames(c.path) for c in clips], RIG, config, patch_encode, text_encode, "directions",
                        seed=seed, cached_clips=len(clips))


def _trainable(config, seed=0):
    model, cfg = diffusers_wan(NARROW_WAN, seed=seed, std=0.05)
    adapter = VideoPandaAdapter(cfg).init_from_base({diffusers_to_official_key(k): v for k, v in model.state_dict().items()})
    return Trainable(model, adapter, config)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def test_folder_without_captions_is_refused_naming_the_video(tmp_path, videos):
    (tmp_path / "a.mp4").write_bytes((videos / "clip0.mp4").read_bytes())
    with pytest.raises(ValueError, match=r"a\.mp4"):
        scan_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "missing")


def test_random_matrices_follow_the_paper():
    g = torch.Generator().manual_seed(0)
    regimes, firsts = [], set()
    for k in range(400):
        v, t = PAPER_MATRICES[k % 4]
        plan = plan_sample(g, [130, 80], (v, t), RIG, frame_stride=2)
        assert len(plan.views) == v == len(set(plan.views))
        assert plan.latent_frames == t and plan.skip == (plan.regime == "autoregressive")
        assert len(plan.frames) == pixel_frames(t + plan.skip)  # autoregressive: cut one latent frame later
        assert all(b - a == 2 for a, b in zip(plan.frames, plan.frames[1:]))
        assert abs(RIG.views[plan.views[0]].pitch) < 45  # reference view: a side view
        assert abs(RIG.views[plan.views[plan.column]].pitch) < 45  # the video column: a side view (§4.5)
        regimes.append(plan.regime)
        firsts.add(plan.views[0])
    for r in ("text", "column", "autoregressive"):  # §3.2: equal probability
        assert 100 < regimes.count(r) < 170
    assert firsts == set(range(6))
    assert plan_sample(g, [100], (1, 4), RIG).regime == "text"  # one view given everywhere would leave nothing
    with pytest.raises(ValueError, match="longest video"):
        plan_sample(g, [10], (3, 16), RIG)


def test_regime_masks_are_figure_3():
    assert not regime_mask("text", 4, 3, 1).any()
    col = regime_mask("column", 4, 3, 1)
    assert col[1].all() and col.sum() == 3
    ar = regime_mask("autoregressive", 4, 3, 1)
    assert ar[1].all() and ar[:, 0].all() and ar.sum() == 3 + 3


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def test_a_100_step_run_lowers_the_loss_on_every_paper_matrix_and_the_sampler_loads_its_adapter(
        videos, tmp_path, one_thread):
    config = TrainConfig(steps=100, view_size=32, precision="fp32", lr=1e-3, save_every=50, sample_every=100,
                         sample_steps=3)
    shapes = []

    class Recording(MatrixSource):
        def batch(self, matrix, **kw):
            b = super().batch(matrix, **kw)
            shapes.append((b.latents.shape[0], b.latents.shape[2], b.plan.regime))
            return b

    model = _trainable(config)
    held_out = _source(videos, config, seed=123)
    evals = [held_out.batch(m, train=False) for m in PAPER_MATRICES for _ in range(2)]

    def eval_loss():
        total = 0.0
        with torch.no_grad():
            for i, b in enumerate(evals):
                for s in (0.3, 0.6, 0.9):
                    total += float(training_loss(model, b, generator=torch.Generator().manual_seed(i), device="cpu",
                                                 sigma=s))
        return total / (3 * len(evals))

    before = eval_loss()
    clips = scan_folder(videos)
    source = Recording(clips, [count_frames(c.path) for c in clips], RIG, config, patch_encode, text_encode,
                       "directions", seed=0, cached_clips=len(clips))
    result = train(model, source, tmp_path / "run", decode=patch_decode, resume_run=False)
    after = eval_loss()
    assert len(result.losses) == 100
    assert after < 0.95 * before, (before, after)
    assert {(v, t) for v, t, _ in shapes} == set(PAPER_MATRICES)
    assert {r for *_, r in shapes} == {"text", "column", "autoregressive"}
    assert (tmp_path / "run" / "samples" / "step_000100.png").is_file()

    loaded = load_adapter(str(result.adapter_path))
    assert loaded.training.steps == 100 and loaded.training.matrices == PAPER_MATRICES
    for k, v in model.adapter.state_dict().items():
        assert torch.equal(loaded.adapter.state_dict()[k], v)
    # the loaded adapter drives the host-free sampler on the paper's inference matrix width (8 views)
    fresh, _ = diffusers_wan(NARROW_WAN, std=0.05)
    attached = DiffusersAttachment(fresh, loaded.adapter)
    call = adapter_call(RIG, regime_mask("column", 8, 2, 0), (8, 16, 2, 4, 4), "directions",
                        given=torch.zeros(8, 16, 2, 4, 4))

    def velocity(x, t, txt):
        with attached.views(8, 2):
            return fresh(x, t, txt).sample

    with torch.no_grad():
        out = sample_grid_with_adapter(velocity, call, torch.randn(8, 16, 2, 4, 4), flow_sigmas(2, 9.8),
                                       text=text_encode("a panorama")[None])
    assert out.shape == (8, 16, 2, 4, 4) and torch.all(out[0] == 0)


def test_resuming_continues_the_run_exactly(videos, tmp_path, one_thread):
    config = TrainConfig(steps=4, view_size=32, precision="fp32", matrices=((2, 2), (3, 1)), save_every=2,
                         sample_every=100, sample_steps=2)
    straight = _trainable(config)
    train(straight, _source(videos, config), tmp_path / "a", resume_run=False)
    half = _trainable(replace_steps(config, 2))
    train(half, _source(videos, config), tmp_path / "b", resume_run=False)
    resumed = _trainable(config)
    train(resumed, _source(videos, config, seed=99), tmp_path / "b", resume_run=True)  # the source's state is restored
    for k, v in straight.adapter.state_dict().items():
        torch.testing.assert_close(resumed.adapter.state_dict()[k], v, rtol=0, atol=0)


def replace_steps(config: TrainConfig, steps: int) -> TrainConfig:
    from dataclasses import replace

    return replace(config, steps=steps)


@pytest.mark.parametrize("mode", ["lora", "self_attn"])
def test_base_training_exports_official_wan_keys(videos, tmp_path, mode, one_thread):
    config = TrainConfig(steps=1, view_size=32, precision="fp32", matrices=((2, 2),), base_training=mode,
                         base_lora_rank=2, new_layers="lora", new_lora_rank=2, save_every=1, sample_every=100)
    model = _trainable(config)
    result = train(model, _source(videos, config), tmp_path / mode, resume_run=False)
    loaded = load_adapter(str(result.adapter_path))
    golden = json.loads((DATA / "wan21_t2v_1_3B_comfy_keys.json").read_text())
    if mode == "lora":
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in loaded.base_lora}
        assert {f"{m}.weight" for m in modules} <= set(golden)
        assert "blocks.1.ffn.2" in modules and "blocks.0.self_attn.q" in modules and not loaded.base_weights
    else:
        assert set(loaded.base_weights) == {k for k in golden if ".self_attn." in k and k.startswith(("blocks.0.", "blocks.1."))}
    # multi-view LoRA is merged into full weights in the file: it loads as a plain adapter
    assert all(".lora_" not in k for k in loaded.adapter.state_dict())


def test_command_line_training_on_tiny_files(videos, tmp_path, one_thread):
    from diffusers import AutoencoderKLWan
    from safetensors.torch import save_file

    from pano360.app import train_videopanda as cli

    model, _ = diffusers_wan(NARROW_WAN, std=0.05)
    base = tmp_path / "wan2.1_t2v_tiny.safetensors"  # official/ComfyUI layout, with ComfyUI's prefix
    save_file({f"model.diffusion_model.{diffusers_to_official_key(k)}": v.contiguous()
               for k, v in model.state_dict().items()}, str(base))
    torch.manual_seed(0)
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).save_pretrained(str(tmp_path / "vae"))
    emb = tmp_path / "emb"
    emb.mkdir()
    for stem in ("clip0", "clip1"):
        save_file({"context": text_encode(stem)}, str(emb / f"{stem}.safetensors"))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--data", str(videos), "--out", str(tmp_path / "out"), "--base", str(base), "--vae", str(tmp_path / "vae"),
            "--text-embeddings", str(emb), "--steps", "2", "--matrices", "2x2", "--view-size", "32",
            "--precision", "fp32", "--sample-steps", "2", "--device", "cpu"]
    with pytest.raises(ValueError, match="empty.safetensors"):
        cli.run(parser.parse_args(argv))
    save_file({"context": text_encode("")}, str(emb / "empty.safetensors"))
    assert cli.run(parser.parse_args(argv)) == 0
    loaded = load_adapter(str(tmp_path / "out" / ADAPTER_FILE))
    assert loaded.training.steps == 2 and loaded.adapter.config.dim == NARROW_WAN["dim"]
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_matrices("3by16")


def test_gradient_checkpointing_keeps_the_gradients_and_bf16_trains(videos, one_thread):
    config = TrainConfig(steps=1, view_size=32, precision="fp32", matrices=((3, 2),))
    batch = _source(videos, config).batch((3, 2), regime="column")
    grads = []
    for checkpointing in (False, True):
        model = _trainable(TrainConfig(**{**config.__dict__, "gradient_checkpointing": checkpointing}))
        model.transformer.train()
        training_loss(model, batch, generator=torch.Generator().manual_seed(0), device="cpu").backward()
        grads.append({n: p.grad.clone() for n, p in model.adapter.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7)
    assert any(g.abs().max() > 0 for g in grads[0].values())
    bf16 = _trainable(TrainConfig(**{**config.__dict__, "precision": "bf16"}))
    assert next(bf16.transformer.parameters()).dtype == torch.bfloat16  # the frozen base
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # what trains stays fp32
    loss = training_loss(bf16, batch, generator=torch.Generator().manual_seed(0), device="cpu")
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in bf16.parameters() if p.grad is not None)
