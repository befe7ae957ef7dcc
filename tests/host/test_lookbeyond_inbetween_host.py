"""Look Beyond stage 3 inside a real ComfyUI: keyframe inbetweening on ComfyUI's own SVD UNet.

Reference: ``tests/data/lookbeyond_inbetween_golden.safetensors``, written by the official
svd_keyframe_interpolation / Look Beyond pipelines on diffusers' twin of a tiny seeded SVD
(``tests/data/make_lookbeyond_inbetween_golden.py``).  Here the same weights run in ComfyUI's
``SVD_img2vid`` model (built by ``_host.build_model``), prepared by the Keyframe Inbetween Model
node (object patches on every temporal attn1, the delta merged from files on disk) and sampled
through ComfyUI's ``CFGGuider``/``KSAMPLER`` machinery with the pack's guider and Euler loop.

Tolerances: one UNet call of ComfyUI's SVD and diffusers' differ by ~3e-7 in float64 (ComfyUI
computes its timestep embeddings in float32); in ComfyUI 0.3.64 the loops match to ~5e-7.
ComfyUI 0.33 keeps the sampler state in float32 (``CFGGuider.outer_sample`` casts the noise):
the first step's maps still match to 1e-5 and the 4-step loop (where the later steps damp the
first step's error) to ~9e-6 on latents of magnitude 2.6, but the 2-step weighted loop, whose
result is the second step's x0 with guidance up to 3, differs by ~1.7e-4.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _seeded_weights import seeded_state_dict  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "lookbeyond_inbetween_golden.safetensors"
STEP_TOL = 1e-5  # the bar for the step (maps, fused prediction)
LOOP_TOL = 1e-5  # relative to max(1, |reference|): float32 sampler state in ComfyUI 0.33 (module docstring)
# The 2-step weighted loop on a host that keeps the sampler state in float32 (ComfyUI 0.33,
# module docstring); 0.3.64 meets LOOP_TOL there too.
FLOAT32_LOOP_TOL = 1e-4
HEAD_CHANNELS = 16  # TINY_SVD_CONFIG: 32 / 2 and 64 / 4 channels per head
FPS, MOTION, AUG = 7, 127, 0.02


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def weights(golden):
    _, meta = golden
    shapes, seeds, gains = (json.loads(meta[k]) for k in ("unet_shapes", "seeds", "gains"))
    xt = seeded_state_dict(shapes, seeds["xt"], gains)
    img2vid = seeded_state_dict(shapes, seeds["img2vid"], gains)
    tweak = seeded_state_dict(shapes, seeds["finetune"])
    finetuned = {k: img2vid[k] + float(meta["finetune_scale"]) * tweak[k] for k in img2vid}
    return xt, img2vid, finetuned, json.loads(meta["unet_config"])


@pytest.fixture(scope="module")
def model_files(comfy_in_process, weights):
    """The fine-tuned UNet (diffusers folder), SVD img2vid (a whole SGM checkpoint) and, for
    full mode, the merged UNet, in the in-process ComfyUI's model folders."""
    from pano360.models.keyframe_unet import temporal_attention_delta
    from pano360.models.svd_unet import convert_diffusers_svd_unet_keys, diffusers_to_sgm_key, infer_svd_unet_layout

    xt, img2vid, finetuned, config = weights
    models = pathlib.Path(comfy_in_process.folder_paths.models_dir)
    for name, sd in (("tiny_finetuned", finetuned),):
        folder = models / "lookbeyond" / name / "unet"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config))
    sgm = convert_diffusers_svd_unet_keys(img2vid)
    save_file({**{f"model.diffusion_model.{k}": v.contiguous() for k, v in sgm.items()},
               "first_stage_model.decoder.conv_in.bias": torch.zeros(4)}, str(models / "lookbeyond" / "tiny_svd.safetensors"))
    # full mode with the merged UNet must equal temporal_attn_delta mode
    layout = infer_svd_unet_layout(xt)
    merged = temporal_attention_delta(*(convert_diffusers_svd_unet_keys(sd) for sd in (xt, finetuned, img2vid)))
    back = {diffusers_to_sgm_key(k, layout): k for k in xt}
    folder = models / "lookbeyond" / "tiny_merged" / "unet"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({**xt, **{back[k]: v for k, v in merged.items()}}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    yield {"finetuned": "tiny_finetuned/unet/diffusion_pytorch_model.safetensors", "reference": "tiny_svd.safetensors",
           "merged": "tiny_merged/unet/diffusion_pytorch_model.safetensors", "merged_sgm": merged}
    # leave the model lists as recorded (tests/host/test_schemas.py compares the live schemas)
    import shutil

    for name in ("tiny_finetuned", "tiny_merged", "tiny_svd.safetensors", "not_svd.safetensors"):
        path = models / "lookbeyond" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _base(weights, dtype):
    from pano360.models.svd_unet import convert_diffusers_svd_unet_keys
    from pano360.nodes import _host

    sd = {k: v.to(dtype) for k, v in convert_diffusers_svd_unet_keys(weights[0]).items()}
    return _host.build_model(sd, "SVD_img2vid", unet_config_overrides={"num_head_channels": HEAD_CHANNELS}, dtype=dtype)


@pytest.fixture(scope="module")
def delta_model(comfy_in_process, weights, model_files):
    from pano360.nodes.lookbeyond import Pano360KeyframeModelLoader

    out = comfy_in_process.run_node(Pano360KeyframeModelLoader, model=_base(weights, torch.float64),
                                    mode="temporal_attn_delta", finetuned_unet=model_files["finetuned"],
                                    reference_unet=model_files["reference"], pose_weights="none")
    return out.result[0]


def _golden_conds(tensors, prefix):
    out = {}
    for k in "12":
        emb, lat = tensors[f"{prefix}.cond.emb{k}"], tensors[f"{prefix}.cond.lat{k}"]  # [uncond, cond]
        for half, name in ((1, "positive"), (0, "negative")):
            extra = {"concat_latent_image": lat[half], "fps": FPS, "motion_bucket_id": MOTION, "augmentation_level": AUG}
            out[f"{name}{k}"] = [[emb[half][None], extra]]
    return out


def _golden_sample(model, tensors, prefix, schedule, reinject=0, sigmas=None, extra=None):
    """The pack's guider and Euler loop on the golden noise, conditioning and re-injection noise."""
    import comfy.samplers

    from pano360.nodes import _host
    from pano360.nodes.lookbeyond import BACKWARD_MODEL_KEY
    from pano360.pipelines.lookbeyond.inbetween import two_pass_predictor
    from pano360.sampling.hooks import k_diffusion_euler

    noises = [tensors[f"{prefix}.reinject_noise.{j}"][0] for j in range(8)
              if reinject and f"{prefix}.reinject_noise.{j}" in tensors]
    backward = BACKWARD_MODEL_KEY if extra else None
    guider = _host.multi_pass_guider(model, _golden_conds(tensors, prefix), two_pass_predictor(schedule, backward), extra)
    sampler = comfy.samplers.KSAMPLER(k_diffusion_euler(reinject, 0.5), extra_options={"noise_sampler": lambda sn, s: noises.pop(0)})
    noise = tensors["noise"][0]
    state = []
    out = guider.sample(noise, torch.zeros_like(noise), sampler, tensors[f"{sigmas or prefix}.sigmas"], seed=0,
                        callback=lambda i, x0, x, n: state.append(x.dtype))
    assert not noises
    _golden_sample.state_dtype = state[0]  # what the host keeps the sampler state in
    return out * model.get_model_object("latent_format").scale_factor  # back to the sampler's latent space


def test_delta_loader_merges_the_files_into_the_temporal_attention_patches(comfy_in_process, delta_model, model_files):
    from pano360.pipelines.lookbeyond.inbetween import KEYFRAME_HOOK_KEY
    from pano360.sampling.hooks import HookedAttention

    patches = {k: v for k, v in delta_model.object_patches.items() if isinstance(v, HookedAttention)}
    assert sorted(patches) == [f"diffusion_model.{layer}.attn1" for layer in (
        "input_blocks.1.1.time_stack.0", "middle_block.1.time_stack.0", "output_blocks.2.1.time_stack.0",
        "output_blocks.3.1.time_stack.0")]
    for name, patch in patches.items():
        assert patch.key == KEYFRAME_HOOK_KEY
        layer = name[len("diffusion_model."):-len(".attn1")]
        for leaf, value in patch.alternate().items():
            assert torch.equal(value, model_files["merged_sgm"][f"{layer}.attn1.{leaf}"].to(value.dtype)), (layer, leaf)


def test_first_two_pass_step_stores_flips_replaces_and_fuses_like_the_official_code(comfy_in_process, golden,
                                                                                    delta_model, monkeypatch):
    """Maps of every temporal attn1 and the fused prediction of the first step (converted to v)."""
    from pano360.models.svd_unet import diffusers_to_sgm_key, infer_svd_unet_layout
    from pano360.pipelines.lookbeyond import inbetween
    from pano360.pipelines.lookbeyond.inbetween import inbetween_schedule

    tensors, meta = golden
    records = []

    class Recording(inbetween.TemporalAttentionControl):
        def store(self, layer, labels, probs):
            records.append(("store", layer, list(labels), probs.clone()))
            super().store(layer, labels, probs)

        def replay(self, layer, labels):
            out = super().replay(layer, labels)
            records.append(("replay", layer, list(labels), out.clone()))
            return out

    monkeypatch.setattr(inbetween, "TemporalAttentionControl", Recording)
    sigmas = tensors["A.sigmas"][:2].clone()
    _golden_sample(delta_model, {**tensors, "X.sigmas": sigmas}, "A", inbetween_schedule(5, weighted=False), sigmas="X")
    x_t = tensors["noise"][0] * (sigmas[0] ** 2 + 1) ** 0.5
    layout = infer_svd_unet_layout(json.loads(meta["unet_shapes"]))
    seen = set()
    for kind, layer, labels, maps in records:
        diffusers_layer = next(d for d in json.loads(meta["layers"]) if diffusers_to_sgm_key(
            f"{d}.temporal_transformer_blocks.0.attn1.to_q.weight", layout).startswith(layer + "."))
        ref = tensors[f"A.call0.pass{1 if kind == 'store' else 2}.maps.{diffusers_layer}"]  # rows [uncond S, cond S]
        s = ref.shape[0] // 2
        by_label = {1: ref[:s], 0: ref[s:]}
        expect = torch.cat([by_label[label] for label in labels])
        assert (maps - expect).abs().max().item() < STEP_TOL, (kind, layer, labels)
        seen.add((kind, layer))
    assert len(seen) == 8  # 4 layers, stored and replayed


def test_four_step_loop_with_noise_reinjection_matches_the_official_pipeline(comfy_in_process, golden, delta_model):
    from pano360.pipelines.lookbeyond.inbetween import inbetween_schedule

    tensors, _ = golden
    out = _golden_sample(delta_model, tensors, "A", inbetween_schedule(5, weighted=False), reinject=2)
    ref = tensors["A.final"][0]
    assert (out - ref).abs().max().item() < LOOP_TOL * max(1.0, ref.abs().max().item())


def test_weighted_fusion_matches_and_full_mode_with_the_merged_unet_equals_delta_mode(comfy_in_process, golden,
                                                                                      weights, model_files, delta_model):
    from pano360.nodes import _host
    from pano360.nodes.lookbeyond import BACKWARD_MODEL_KEY, Pano360KeyframeModelLoader
    from pano360.pipelines.lookbeyond.inbetween import inbetween_schedule

    tensors, _ = golden
    schedule = inbetween_schedule(5, weighted=True)
    delta = _golden_sample(delta_model, tensors, "B", schedule)
    ref = tensors["B.final"][0]
    tol = LOOP_TOL if _golden_sample.state_dtype == torch.float64 else FLOAT32_LOOP_TOL
    assert (delta - ref).abs().max().item() < tol * max(1.0, ref.abs().max().item())
    full = comfy_in_process.run_node(Pano360KeyframeModelLoader, model=_base(weights, torch.float64), mode="full",
                                     finetuned_unet=model_files["merged"], reference_unet="none",
                                     pose_weights="none").result[0]
    (backward,) = _host.attached_models(full, BACKWARD_MODEL_KEY)
    assert backward.model is not full.model  # a second UNet, loaded with the first
    out = _golden_sample(full, tensors, "B", schedule, extra={BACKWARD_MODEL_KEY: backward})
    assert (out - delta).abs().max().item() < 1e-6


# ---------------------------------------------------------------- the nodes, with stub encoders

TOKEN_DIM = 16


class StubClipVision:
    def encode_image(self, image, crop=True):
        feats = image.mean((1, 2))
        return type("Out", (), {"image_embeds": feats.repeat(1, TOKEN_DIM)[:, :TOKEN_DIM]})()


class StubVAE:
    def encode(self, pixels):  # [B,H,W,C] -> [B,4,H/8,W/8]
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([x, x[:, :1]], 1)

    def decode(self, latent):  # [B,4,h,w] -> [B,8h,8w,3]
        x = torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest")
        return x.clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def float_model(comfy_in_process, weights, model_files):
    from pano360.nodes.lookbeyond import Pano360KeyframeModelLoader

    return comfy_in_process.run_node(Pano360KeyframeModelLoader, model=_base(weights, torch.float32),
                                     mode="temporal_attn_delta", finetuned_unet=model_files["finetuned"],
                                     reference_unet=model_files["reference"], pose_weights="none").result[0]


def _loop_path(rows: int):
    from pano360.cameras.formats.realestate10k import read_realestate10k
    from pano360.cameras.trajectories import interpolate, path_from_views
    from pano360.cameras.formats.realestate10k import write_realestate10k
    from pano360.projection import rig_preset

    views = rig_preset("lookbeyond_loop", size=64, n=rows).views
    return read_realestate10k(write_realestate10k(path_from_views(views), 64, 64), relative=False)


def _run_sampler(comfy_in_process, model, **overrides):
    from pano360.nodes.lookbeyond import Pano360KeyframeInbetween

    g = torch.Generator().manual_seed(0)
    inputs = dict(model=model, clip_vision=StubClipVision(), vae=StubVAE(), first_frame=torch.rand(1, 64, 64, 3, generator=g),
                  last_frame=torch.rand(1, 64, 64, 3, generator=g), num_frames=3, width=32, height=24, steps=1, seed=1)
    inputs.update(overrides)
    return comfy_in_process.run_node(Pano360KeyframeInbetween, **inputs).result[0]["samples"]


def test_zero_initialised_pose_encoder_leaves_the_sampler_output_unchanged(comfy_in_process, float_model):
    from pano360.models.lookbeyond_pose import LookBeyondPoseConditioner, PoseEncoderConfig

    path = _loop_path(9)
    plain = _run_sampler(comfy_in_process, float_model, camera_path=path)
    zero = LookBeyondPoseConditioner.zero_initialised(PoseEncoderConfig(channels=32, heads=2))
    posed = _run_sampler(comfy_in_process, float_model, camera_path=path, pose_encoder=zero)
    assert plain.shape == (3, 4, 3, 4) and torch.isfinite(plain).all()
    assert torch.equal(plain, posed)
    trained = LookBeyondPoseConditioner(PoseEncoderConfig(channels=32, heads=2))  # random weights: it must matter
    assert not torch.equal(plain, _run_sampler(comfy_in_process, float_model, camera_path=path, pose_encoder=trained))


def test_cancel_stops_the_sampler_between_steps(comfy_in_process, float_model):
    """ComfyUI's Cancel, pressed when the first of three steps is reported, stops the sampler
    before the second step (ComfyUI's InterruptProcessingException, no latent returned)."""
    mm = comfy_in_process.model_management
    with comfy_in_process.cancel_after_progress(1) as progress, pytest.raises(mm.InterruptProcessingException):
        _run_sampler(comfy_in_process, float_model, steps=3)
    assert progress == [1]


def test_bad_inputs_name_the_node_and_the_input(comfy_in_process, float_model):
    from pano360.models.lookbeyond_pose import LookBeyondPoseConditioner, PoseEncoderConfig
    from pano360.nodes._common import NodeInputError

    node = "Pano360KeyframeInbetween"
    with pytest.raises(NodeInputError, match=f"{node}: input 'last_frame': expected the size of first_frame"):
        _run_sampler(comfy_in_process, float_model, last_frame=torch.rand(1, 32, 64, 3))
    with pytest.raises(NodeInputError, match=f"{node}: input 'camera_path': .*2 cameras between rows 0 and 1, need at least 3"):
        _run_sampler(comfy_in_process, float_model, camera_path=_loop_path(2))  # a pose file with too few lines
    with pytest.raises(NodeInputError, match=f"{node}: input 'camera_path': .*need at least 14"):
        _run_sampler(comfy_in_process, float_model, camera_path=_loop_path(12), num_frames=14)  # Look Beyond's 12 rows
    zero = LookBeyondPoseConditioner.zero_initialised(PoseEncoderConfig(channels=32, heads=2))
    with pytest.raises(NodeInputError, match=f"{node}: input 'camera_path': expected a camera path for the pose encoder"):
        _run_sampler(comfy_in_process, float_model, pose_encoder=zero)
    with pytest.raises(NodeInputError, match=f"{node}: input 'num_frames': expected at most 16 frames"):
        _run_sampler(comfy_in_process, float_model, pose_encoder=zero, camera_path=_loop_path(30), num_frames=17)


def _loader(model, mode, finetuned_unet, reference_unet, pose_weights) -> dict:
    return dict(model=model, mode=mode, finetuned_unet=finetuned_unet, reference_unet=reference_unet, pose_weights=pose_weights)


def test_loader_names_missing_and_foreign_weight_files(comfy_in_process, weights, model_files):
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.lookbeyond import Pano360KeyframeModelLoader

    base = _base(weights, torch.float32)
    with pytest.raises(NodeInputError, match="input 'reference_unet': expected a UNet file for mode temporal_attn_delta"):
        comfy_in_process.run_node(Pano360KeyframeModelLoader, **_loader(base, "temporal_attn_delta", model_files["finetuned"], "none", "none"))
    bad = pathlib.Path(comfy_in_process.folder_paths.models_dir) / "lookbeyond" / "not_svd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(NodeInputError, match="input 'finetuned_unet': .*no temporal attention"):
        comfy_in_process.run_node(Pano360KeyframeModelLoader, **_loader(base, "temporal_attn_delta", "not_svd.safetensors", model_files["reference"], "none"))
    with pytest.raises(NodeInputError, match="input 'pose_weights': .*no model_1_state_dict.pth"):
        comfy_in_process.run_node(Pano360KeyframeModelLoader, **_loader(base, "base_only", "none", "none", "not_svd.safetensors"))


# ---------------------------------------------------------------- the bundled workflow

WORKFLOW = ROOT / "workflows" / "api" / "lookbeyond_scene_video.json"


class _Server:
    """What ComfyUI's PromptExecutor needs of a server: somewhere to send progress messages."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs):
        pass


def test_scene_video_workflow_runs_in_comfy_executor_and_writes_a_video(comfy_in_process, float_model, model_files,
                                                                         monkeypatch):
    """The bundled API workflow through ComfyUI's own executor and core nodes (LoadImage,
    ImageFromBatch, VAEDecode, SaveWEBM); only the SVD checkpoint loader is
    replaced (a tiny SVD MODEL, stub CLIP vision and VAE: no SVD weights can be downloaded), at
    test sizes (64 px loop, 32 px video, 2 steps)."""
    import execution
    import nodes as comfy_nodes

    # ComfyUI's main.py imports its utils/ package first; here comfy/ (which nodes.py puts first
    # on sys.path) would shadow it with comfy/utils.py when server.py imports utils.install_util.
    monkeypatch.syspath_prepend(str(comfy_in_process.root))
    import utils.install_util  # noqa: F401
    from comfy_extras import nodes_images, nodes_video
    from PIL import Image

    import pano360.nodes as pack

    class TinySVDCheckpoint:
        RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
        FUNCTION = "load"
        CATEGORY = "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": ("STRING", {})}}

        def load(self, ckpt_name):
            return (float_model.clone(), StubClipVision(), StubVAE())

    mapping = {"ImageOnlyCheckpointLoader": TinySVDCheckpoint, "ImageFromBatch": nodes_images.ImageFromBatch,
               "SaveWEBM": nodes_video.SaveWEBM}
    mapping |= {n.__name__: n for n in pack.all_nodes()}
    for name, cls in mapping.items():
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, name, cls)
    prompt = json.loads(WORKFLOW.read_text())
    image_name = prompt["1"]["inputs"]["image"]
    Image.fromarray((torch.rand(32, 64, 3).numpy() * 255).astype("uint8")).save(
        pathlib.Path(comfy_in_process.folder_paths.get_input_directory()) / image_name)
    prompt["2"]["inputs"]["size"] = 64
    prompt["7"]["inputs"].update(finetuned_unet=model_files["finetuned"], reference_unet=model_files["reference"])
    prompt["8"]["inputs"].update(width=32, height=32, steps=2)
    import inspect

    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:  # ComfyUI 0.33 (main.py's defaults)
        executor = execution.PromptExecutor(_Server(), cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    else:
        executor = execution.PromptExecutor(_Server())
    executor.execute(prompt, "lookbeyond-test", {}, ["10"])
    assert executor.success, executor.status_messages
    output = pathlib.Path(comfy_in_process.folder_paths.get_output_directory())
    videos = sorted(output.glob("pano360/lookbeyond_scene_video*.webm"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    import av

    with av.open(str(videos[0])) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height, frames) == (32, 32, prompt["8"]["inputs"]["num_frames"])
        assert float(stream.average_rate) == prompt["10"]["inputs"]["fps"]
    loops = sorted(output.glob("lookbeyond/loop_*/pose.txt"))
    assert len(loops) == 1 and len(loops[0].read_text().splitlines()) == 1 + prompt["5"]["inputs"]["num_frames"]
