"""The two-pass keyframe inbetweening against the official code, without ComfyUI.

Reference: ``tests/data/lookbeyond_inbetween_golden.safetensors``, written by the official
``svd_keyframe_interpolation`` / Look Beyond pipelines (``tests/data/make_lookbeyond_inbetween_golden.py``)
on a tiny seeded SVD UNet.  Here diffusers' own ``UNetSpatioTemporalConditionModel`` (the
twin the reference ran, float64) is driven by the pack's host-free code: the attention hook
(store, flip, replace), the per-frame CFG and fusion (``keyframe_denoise``), the schedules,
the delta merge (``models/keyframe_unet.py``), the pose weights and the pack's one Euler loop
with noise re-injection (``sampling.euler``).  The pack's ComfyUI path is checked against the same
file in ``tests/host/test_lookbeyond_inbetween_host.py``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch
from safetensors import safe_open

from pano360.cameras.formats.realestate10k import parse_rows
from pano360.models.keyframe_unet import temporal_attention_delta
from pano360.models.svd_unet import convert_diffusers_svd_unet_keys, diffusers_to_sgm_key, infer_svd_unet_layout
from pano360.pipelines.lookbeyond.inbetween import (
    COND,
    UNCOND,
    Pass,
    TemporalAttentionControl,
    inbetween_schedule,
    keyframe_denoise,
    pose_similarity_weights,
    select_between,
)
from pano360.sampling.euler import NoiseReinjection, sample_euler

diffusers = pytest.importorskip("diffusers")

TESTS = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TESTS))
from _seeded_weights import checksum, seeded_state_dict  # noqa: E402

GOLDEN = TESTS / "data" / "lookbeyond_inbetween_golden.safetensors"
# The bar: the pack's step equals the official one to 1e-5.  Both sides run float64
# here, so the observed error is ~1e-12; timesteps are float32 on both sides, as in the reference.
TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def regenerate_unets(meta):
    """The golden file's xt / img2vid / finetuned weights (diffusers keys), float64."""
    shapes, seeds, gains = (json.loads(meta[k]) for k in ("unet_shapes", "seeds", "gains"))
    xt = seeded_state_dict(shapes, seeds["xt"], gains)
    img2vid = seeded_state_dict(shapes, seeds["img2vid"], gains)
    tweak = seeded_state_dict(shapes, seeds["finetune"])
    scale = float(meta["finetune_scale"])
    finetuned = {k: img2vid[k] + scale * tweak[k] for k in img2vid}
    return xt, img2vid, finetuned


@pytest.fixture(scope="module")
def weights(golden):
    tensors, meta = golden
    xt, img2vid, finetuned = regenerate_unets(meta)
    for name, sd in (("xt", xt), ("img2vid", img2vid), ("finetuned", finetuned)):
        assert torch.allclose(checksum(sd), tensors[f"{name}.checksum"], rtol=1e-12), \
            f"regenerated {name} weights differ from the golden file's: rerun its script"
    # The pack's temporal_attn_delta merge, in ComfyUI (SGM) key space, mapped back to diffusers keys.
    layout = infer_svd_unet_layout(xt)
    to_sgm = {k: diffusers_to_sgm_key(k, layout) for k in xt}
    merged_sgm = temporal_attention_delta(*(convert_diffusers_svd_unet_keys(sd) for sd in (xt, finetuned, img2vid)))
    from_sgm = {v: k for k, v in to_sgm.items()}
    merged = dict(xt) | {from_sgm[k]: v for k, v in merged_sgm.items()}
    return xt, merged, meta


class HookProcessor:
    """diffusers attention processor for a temporal ``attn1``: hands the call to the current hook."""

    def __init__(self, layer: str, state: dict):
        self.layer, self.state = layer, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return self.state["hook"](attn, self.layer, hidden_states, self.state["labels"])


class DiffusersTwin:
    """The base and merged diffusers UNets with the pack's hook in their temporal ``attn1`` layers."""

    SUFFIX = ".temporal_transformer_blocks.0.attn1.processor"

    def __init__(self, config: dict, base: dict, merged: dict, eps: float):
        self.state: dict = {}
        self.unets = {}
        for pass_, sd in ((Pass.FORWARD, base), (Pass.BACKWARD, merged)):
            unet = diffusers.UNetSpatioTemporalConditionModel(**config).double().eval()
            unet.load_state_dict(sd)
            for name, module in unet.named_modules():  # as the golden script: SGM's ResNet eps
                if isinstance(module, torch.nn.GroupNorm) and ".resnets." in name:
                    module.eps = eps
            procs = {n: HookProcessor(n[: -len(self.SUFFIX)], self.state) if n.endswith(self.SUFFIX) else p
                     for n, p in unet.attn_processors.items()}
            unet.set_attn_processor(procs)
            self.unets[pass_] = unet

    def runner(self, cond: dict, sigma: torch.Tensor, timestep: torch.Tensor, output: str = "denoised"):
        """run_pass for keyframe_denoise: the reference's CFG batch [uncond, cond] in one call."""

        def run_pass(hook, x_pass, with_uncond):
            k = 1 if hook.pass_ is Pass.FORWARD else 2
            emb, lat = cond[f"emb{k}"], cond[f"lat{k}"]  # (2, 1, D), (2, T, 4, h, w): [uncond, cond]
            rows = slice(0, 2) if with_uncond else slice(1, 2)
            self.state.update(hook=hook, labels=[UNCOND, COND] if with_uncond else [COND])
            scaled = x_pass / (sigma**2 + 1) ** 0.5  # scheduler.scale_model_input
            sample = torch.cat([scaled[None].expand(rows.stop - rows.start, *scaled.shape), lat[rows]], dim=2)
            with torch.no_grad():
                v = self.unets[hook.pass_](sample, timestep, encoder_hidden_states=emb[rows],
                                           added_time_ids=cond["time_ids"][rows]).sample
            if output == "denoised":  # EulerDiscreteScheduler.step, v_prediction
                v = v * (-sigma / (sigma**2 + 1) ** 0.5) + x_pass / (sigma**2 + 1)
            return (v[-1], v[0]) if with_uncond else (v[0], None)

        return run_pass


class RecordingControl(TemporalAttentionControl):
    def __init__(self):
        super().__init__()
        self.stored, self.replayed = {}, {}

    def store(self, layer, labels, probs):
        self.stored.setdefault(layer, []).append((list(labels), probs.clone()))
        super().store(layer, labels, probs)

    def replay(self, layer, labels):
        out = super().replay(layer, labels)
        self.replayed.setdefault(layer, []).append((list(labels), out.clone()))
        return out


@pytest.fixture(scope="module")
def twin(weights):
    xt, merged, meta = weights
    return DiffusersTwin(json.loads(meta["unet_config"]), xt, merged, float(meta["resnet_group_norm_eps"]))


def _cond(tensors, prefix):
    return {k: tensors[f"{prefix}.cond.{k}"] for k in ("emb1", "emb2", "lat1", "lat2", "time_ids")}


def _sample(twin, tensors, prefix, schedule, reinject=0, ratio=0.5):
    """The pack's loop from the golden noise; returns (final latents, number of model calls)."""
    sigmas = tensors[("B" if prefix == "C" else prefix) + ".sigmas"]  # C ran on B's 2-step sigmas
    cond = _cond(tensors, prefix)
    noises = [tensors[f"{prefix}.reinject_noise.{j}"][0] for j in range(4) if f"{prefix}.reinject_noise.{j}" in tensors]
    calls = []

    def denoiser(x, sigma):
        calls.append(sigma)
        timestep = 0.25 * sigma.log()  # the scheduler's continuous timestep, float32
        return keyframe_denoise(twin.runner(cond, sigma, timestep), x, schedule, TemporalAttentionControl())

    x = tensors["noise"][0] * (sigmas.max() ** 2 + 1) ** 0.5  # prepare_latents * init_noise_sigma
    final = sample_euler(denoiser, x, sigmas, reinject=NoiseReinjection(reinject, ratio, lambda sn, s: noises.pop(0)))
    assert not noises, "not every recorded re-injection noise was used"
    return final, len(calls)


def test_regenerated_merge_equals_the_official_delta_rule(golden, weights):
    tensors, _ = golden
    _, merged, _ = weights
    assert torch.allclose(checksum(merged), tensors["merged.checksum"], rtol=1e-12)


@pytest.fixture(scope="module")
def first_step(golden, twin):
    """The pack's first two-pass prediction of run A (v-space), with what each pass saw."""
    tensors, _ = golden
    sigma, timestep = tensors["A.sigmas"][0], tensors["A.cond.timesteps"][0]
    assert timestep == 0.25 * sigma.log()
    x = tensors["noise"][0] * (tensors["A.sigmas"].max() ** 2 + 1) ** 0.5
    runner = twin.runner(_cond(tensors, "A"), sigma, timestep, output="v")
    raw = {}

    def run_pass(hook, x_pass, with_uncond):
        raw[hook.pass_] = runner(hook, x_pass, with_uncond)
        return raw[hook.pass_]

    control = RecordingControl()
    fused = keyframe_denoise(run_pass, x, inbetween_schedule(x.shape[0], weighted=False), control)
    return fused, control, raw


def test_first_step_stores_flips_replaces_and_fuses_like_the_official_controllers(golden, first_step):
    tensors, meta = golden
    fused, control, _ = first_step
    assert (fused - tensors["A.call0.fused"][0]).abs().max().item() < TOL
    for layer in json.loads(meta["layers"]):
        (labels, stored), = control.stored[layer]
        (labels2, replayed), = control.replayed[layer]
        assert labels == labels2 == [UNCOND, COND]  # the reference's CFG batch order
        ref1, ref2 = tensors[f"A.call0.pass1.maps.{layer}"], tensors[f"A.call0.pass2.maps.{layer}"]
        assert stored.shape == ref1.shape
        assert (stored - ref1).abs().max().item() < TOL, layer
        assert (replayed - ref2).abs().max().item() < TOL, layer
        assert (replayed - stored).abs().max().item() > 0.1, f"{layer}: flipping changed nothing; the test cannot tell"


def test_first_step_raw_passes_match(golden, first_step):
    """Each pass's UNet output on its own (before CFG and fusion)."""
    tensors, _ = golden
    _, _, raw = first_step
    for pass_, key in ((Pass.FORWARD, "pass1"), (Pass.BACKWARD, "pass2")):
        cond, uncond = raw[pass_]
        assert (torch.stack([uncond, cond]) - tensors[f"A.call0.{key}.v"]).abs().max().item() < TOL, key


def test_four_step_loop_with_noise_reinjection_matches(golden, twin):
    tensors, _ = golden
    schedule = inbetween_schedule(tensors["noise"].shape[1], weighted=False)
    final, calls = _sample(twin, tensors, "A", schedule, reinject=2, ratio=0.5)
    assert calls == int(tensors["A.calls"]) == 8  # 4 steps + 2 x 2 re-injections, no double index advance
    assert (final - tensors["A.final"][0]).abs().max().item() < TOL


def test_weighted_average_schedule_and_loop_match(golden, twin):
    tensors, _ = golden
    schedule = inbetween_schedule(tensors["noise"].shape[1], weighted=True)
    assert torch.allclose(schedule.guidance, tensors["B.guidance"].flatten())
    assert torch.allclose(schedule.weight, tensors["B.avg_weight"].flatten())
    final, _ = _sample(twin, tensors, "B", schedule)
    assert (final - tensors["B.final"][0]).abs().max().item() < TOL


def _pose_schedule(tensors, meta, weighted):
    rows = parse_rows(meta["pose_txt"])
    c2w = torch.linalg.inv(torch.stack([torch.cat([r.w2c_tensor(), torch.tensor([[0, 0, 0, 1.0]], dtype=torch.float64)])
                                        for r in rows]))
    picked = select_between(len(rows), tensors["noise"].shape[1])
    assert picked == tensors["C.selected_ids"].tolist()
    weights = pose_similarity_weights(c2w[picked], c2w[0], c2w[-1])
    return inbetween_schedule(len(picked), weighted=weighted, pose_weights=weights)


def test_pose_similarity_weights_and_guidance_match_lookbeyond(golden):
    tensors, meta = golden
    weighted = _pose_schedule(tensors, meta, True)
    assert (weighted.guidance - tensors["C.guidance"].flatten()).abs().max().item() < TOL
    assert (weighted.weight - tensors["C.avg_weight"].flatten()).abs().max().item() < TOL
    symmetric = _pose_schedule(tensors, meta, False)
    assert (symmetric.guidance - tensors["C1.guidance"].flatten()).abs().max().item() < TOL
    assert torch.all(symmetric.weight == 0.5)


def test_pose_conditioned_loop_matches_lookbeyond(golden, twin):
    """Look Beyond's pipeline: pose-fused image latents (both CFG halves) and pose weights."""
    tensors, meta = golden
    final, _ = _sample(twin, tensors, "C", _pose_schedule(tensors, meta, True))
    assert (final - tensors["C.final"][0]).abs().max().item() < TOL


def test_select_between_needs_a_camera_per_frame():
    assert select_between(144, 14, 0, 143) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99, 110, 121, 132, 143]
    with pytest.raises(ValueError, match="12 cameras between rows 0 and 11, need at least 14"):
        select_between(12, 14)
