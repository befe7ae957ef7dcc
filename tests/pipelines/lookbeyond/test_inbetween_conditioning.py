"""Keyframe conditioning and camera selection against Look Beyond's videogen.py.

Reference: ``tests/data/lookbeyond_inbetween_golden.safetensors`` (official pipelines): the
image latents the UNets saw without poses (run A) and with Look Beyond's ray-map fusion (run C),
the rows ``select_between_frames`` picked and the pose-similarity guidance.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch
from safetensors import safe_open

from pano360.cameras.formats.realestate10k import parse_rows, read_realestate10k
from pano360.models.lookbeyond_pose import LookBeyondPoseConditioner, PoseEncoderConfig
from pano360.pipelines.lookbeyond.inbetween import inbetween_poses, inbetween_schedule, keyframe_conditioning

TESTS = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TESTS))
from _seeded_weights import seeded_state_dict  # noqa: E402

GOLDEN = TESTS / "data" / "lookbeyond_inbetween_golden.safetensors"
TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _file_c2w(text):
    rows = parse_rows(text)
    bottom = torch.tensor([[0.0, 0, 0, 1]], dtype=torch.float64)
    return torch.linalg.inv(torch.stack([torch.cat([r.w2c_tensor(), bottom]) for r in rows]))


def test_poses_from_the_one_reader_select_like_videogen_and_keep_absolute_cameras(golden):
    tensors, meta = golden
    path = read_realestate10k(meta["pose_txt"], relative=False)
    poses = inbetween_poses(path, 5, (32, 48))
    picked = tensors["C.selected_ids"].tolist()
    c2w = _file_c2w(meta["pose_txt"])
    assert (poses.c2w - c2w[picked]).abs().max().item() < 1e-9  # the file's own (absolute) cameras
    assert (poses.source - c2w[0]).abs().max() < 1e-9 and (poses.target - c2w[-1]).abs().max() < 1e-9
    schedule = inbetween_schedule(5, weighted=True, pose_weights=poses.similarity())
    assert (schedule.guidance - tensors["C.guidance"].flatten()).abs().max().item() < TOL
    relative = inbetween_poses(read_realestate10k(meta["pose_txt"], relative=True), 5, (32, 48))
    assert (relative.rays((4, 6)) - poses.rays((4, 6))).abs().max() > 0.1  # relative poses are other rays


def test_too_few_cameras_for_the_frames_is_an_error_naming_the_counts(golden):
    _, meta = golden
    path = read_realestate10k(meta["pose_txt"], relative=False)
    with pytest.raises(ValueError, match="9 cameras between rows 0 and 8, need at least 14"):
        inbetween_poses(path, 14, (32, 48))


def test_backwards_row_range_runs_the_cameras_in_reverse(golden):
    _, meta = golden
    path = read_realestate10k(meta["pose_txt"], relative=False)
    ahead, back = inbetween_poses(path, 5, (32, 48)), inbetween_poses(path, 5, (32, 48), first=8, last=0)
    assert torch.equal(back.c2w, ahead.c2w.flip(0)) and torch.equal(back.source, ahead.target)


class Encoders:
    """Records what it is given; returns fixed outputs."""

    def __init__(self, latents):
        self.latents, self.images, self.pixels = list(latents), [], []

    def image(self, frame):
        self.images.append(frame)
        return frame.mean((2, 3)).repeat(1, 4)

    def latent(self, frame):
        self.pixels.append(frame)
        return self.latents.pop(0)


def test_noise_augmentation_is_one_draw_for_both_frames_in_half_pixel_units():
    first, last = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    enc = Encoders([torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)])
    cond = keyframe_conditioning(enc.image, enc.latent, first, last, noise_aug=0.02,
                                 generator=torch.Generator().manual_seed(0))
    n1, n2 = enc.pixels[0] - first, enc.pixels[1] - last
    assert torch.allclose(n1, n2, atol=1e-7)
    assert n1.std().item() == pytest.approx(0.01, rel=0.1)  # 0.02 in [-1, 1] = 0.01 in 0..1
    assert torch.equal(enc.images[0], first)  # CLIP sees the clean frame
    assert all(u.abs().max() == 0 for u in cond.uncond_concat)


def test_pose_fusion_matches_videogen_for_both_passes_and_branches(golden):
    tensors, meta = golden
    weights = seeded_state_dict(json.loads(meta["pose_shapes"]), json.loads(meta["seeds"])["pose"])
    conditioner = LookBeyondPoseConditioner(PoseEncoderConfig(channels=32, heads=2)).double()
    for name in ("pose_encoder", "channel_reducer", "linear_fuser"):
        target = getattr(conditioner, name)
        sd = target.state_dict()
        sd.update({k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")})
        target.load_state_dict(sd)
    plain = [tensors["A.cond.lat1"][1, :1], tensors["A.cond.lat2"][1, :1]]  # the VAE latents (run A, same images)
    enc = Encoders(plain)
    cond = keyframe_conditioning(enc.image, enc.latent, torch.zeros(1, 3, 32, 48), torch.zeros(1, 3, 32, 48),
                                 noise_aug=0.02, generator=torch.Generator(), pose=(conditioner, tensors["C.plucker"]))
    for k, pass_ in ((1, 0), (2, 1)):
        assert (cond.concat[pass_] - tensors[f"C.cond.lat{k}"][1]).abs().max().item() < TOL
        assert (cond.uncond_concat[pass_] - tensors[f"C.cond.lat{k}"][0]).abs().max().item() < TOL


def test_zero_initialised_pose_conditioner_gives_the_plain_latents():
    conditioner = LookBeyondPoseConditioner.zero_initialised(PoseEncoderConfig(channels=32, heads=2))
    latents = [torch.randn(1, 4, 2, 3), torch.randn(1, 4, 2, 3)]
    cond = keyframe_conditioning(Encoders([]).image, Encoders(list(latents)).latent, torch.rand(1, 3, 16, 24),
                                 torch.rand(1, 3, 16, 24), noise_aug=0.02, generator=torch.Generator(),
                                 pose=(conditioner, torch.randn(5, 6, 16, 24)))
    for got, want in zip(cond.concat, latents):
        assert torch.equal(got, want.expand(5, -1, -1, -1))
    assert all(u.abs().max() == 0 for u in cond.uncond_concat)


def test_host_predictor_evaluates_each_pass_on_its_conds_model_and_hook():
    """two_pass_predictor: forward on the main model with positive1/negative1, backward on the
    backward model with positive2/negative2 and the time-reversed latents; fused like keyframe_denoise."""
    from pano360.pipelines.lookbeyond.inbetween import KEYFRAME_HOOK_KEY, Pass, two_pass_predictor

    calls = []

    def evaluate(model_key, names, x, options):
        hook = options[KEYFRAME_HOOK_KEY]
        calls.append((model_key, tuple(names), hook.pass_, x.clone()))
        base = 1.0 if hook.pass_ is Pass.FORWARD else 2.0
        return [x * 0 + base, x * 0][: len(names)]  # cond = base, uncond = 0

    x = torch.arange(3.0)[:, None, None, None].expand(3, 1, 1, 1)
    out = two_pass_predictor(inbetween_schedule(3, weighted=True), "backward")(evaluate, x, torch.tensor(1.0))
    assert [(m, n, p) for m, n, p, _ in calls] == [(None, ("positive1", "negative1"), Pass.FORWARD),
                                                 ("backward", ("positive2", "negative2"), Pass.BACKWARD)]
    assert torch.equal(calls[1][3], x.flip(0))
    g = torch.linspace(1, 3, 3)  # weighted: guidance per frame in each pass's own order
    w = torch.linspace(1, 0, 3)
    expect = w * g + (1 - w) * (2 * g).flip(0)
    assert torch.allclose(out.flatten(), expect.double().to(out.dtype))
    calls.clear()
    two_pass_predictor(inbetween_schedule(3, weighted=False, min_guidance=1.0, max_guidance=1.0))(evaluate, x, torch.tensor(1.0))
    assert [n for _, n, _, _ in calls] == [("positive1",), ("positive2",)]  # no CFG: conditional only
