"""Write ``lookbeyond_inbetween_golden.safetensors``: what the OFFICIAL keyframe-inbetweening
code computes on a tiny seeded SVD, so the pack's port can be held to it without the original.

Not run by the tests.  Needs checkouts of

* ``jeanne-wang/svd_keyframe_interpolation`` (commit 61fd2bf): ``attn_ctrl/attention_control.py``,
  ``custom_diffusers/pipelines/pipeline_frame_interpolation_with_noise_injection.py`` and its
  patched ``custom_diffusers/schedulers/scheduling_euler_discrete.py`` (no ``step_index``
  increment inside ``step``);
* ``YiGuYT/LookBeyond`` (commit ea00c7b): ``VideoDiffusion/videogen.py`` (pose weights and the
  ray-map fusion), ``camctrl/pose_adaptor.py`` (``CameraPoseEncoder``), ``dataset/realestate10K.py``
  (``Camera``, ``ray_condition``);

and diffusers 0.28.0 with the transformers version both repositories pin (4.36.0)::

    pip install --target /tmp/old --no-deps diffusers==0.28.0 transformers==4.36.0 \\
        huggingface_hub==0.20.3 tokenizers==0.15.2
    PYTHONPATH=/tmp/old python tests/data/make_lookbeyond_inbetween_golden.py \\
        --svd-keyframe /path/to/svd_keyframe_interpolation --lookbeyond /path/to/LookBeyond

Why 0.28.0 and not the pinned 0.27.0: 0.27.0's ``TransformerSpatioTemporalModel`` broadcasts the
temporal cross-attention context position-major (``broadcast_to(h * w, batch, ...)``) onto
batch-major hidden states, so with a CFG batch of two the temporal layers of the unconditional
half see the conditional image embedding at every other position and vice versa.  0.28.0 fixed
that (``broadcast_to(batch, h * w, ...)``), which is also what ComfyUI's SVD does; the pack is
held to the official *attention control and fusion*, not to that library bug.  0.28.0 no longer
has ``tensor2vid``, which the official pipelines import but use only to turn decoded frames into
images; this script requests latents and installs a stand-in that refuses to run.

One more library difference is removed from the reference UNets: diffusers builds the ResNet
GroupNorms inside its cross-attention SVD blocks with ``eps=1e-6``, Stability's SGM code (which
ComfyUI runs) with ``eps=1e-5`` everywhere (``normalization(channels)``); the script sets them to
1e-5 (:func:`match_sgm_group_norm_eps`), leaving ~2e-7 between the two UNets in float64.

What it builds (float64 UNets, so the comparison is not limited by rounding):

* a tiny ``UNetSpatioTemporalConditionModel`` (``tests/_tiny_models.TINY_SVD_CONFIG`` with SVD's
  256-wide time ids) three times with weights from ``tests/_seeded_weights.py``: the base
  ("xt", seed 1), "img2vid" (seed 2) and "finetuned" = img2vid + 0.2 x seed 3 on every key.
  The merged UNet is made with ``keyframe_interpolation.py``'s rule (its ``main``: add
  ``finetuned - img2vid`` of keys containing ``temporal_transformer_blocks.0.attn1.to_v`` or
  ``...attn1.to_out.0`` to the base).  Only the key/shape tables and checksums are stored.
* a tiny temporal VAE and CLIP vision tower (library default initialisation; only their
  outputs, the conditioning the UNet sees, are stored);
* the official pipelines with the official attention controllers registered as
  ``keyframe_interpolation.py`` does (store on ``ori_unet``, flip-replace on ``unet``).

Runs (5 frames, 32x48 images -> 4x6 latents, 4 or 2 Euler steps on SVD-xt's Karras sigmas):

* ``A``: svd_keyframe_interpolation, 0.5/0.5 fusion, ``noise_injection_steps=2``,
  ``noise_injection_ratio=0.5``, 4 steps.  Recorded: the conditioning, the first step's stored
  pass-1 maps and applied (flipped) pass-2 maps of every temporal ``attn1``, both raw UNet outputs,
  the fused prediction, every re-injection noise and the final latents.
* ``B``: the same with ``weighted_average=True`` (per-frame CFG, linspace(1->0) fusion), 2 steps.
* ``C``: Look Beyond's pipeline with a RealEstate10K pose file: pose-similarity weights
  (``weighted_average=True``) and the ray-map path (Plücker rays -> tiny official
  ``CameraPoseEncoder`` -> 1x1 reducer -> added to the image latents -> ``Linear(4, 4)``), the
  pose embedding broadcast to both CFG halves (the reference's own shape check fails on its
  batch-1 embedding otherwise), 2 steps, on svd_keyframe_interpolation's scheduler (Look
  Beyond's ``videogen.py`` imports the stock one, whose ``step`` increments the index a second
  time).  ``C1``: one step without ``weighted_average`` (time-symmetric guidance).
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the shared tiny configs and seeded weights
from _seeded_weights import checksum, seeded_state_dict, shapes_of  # noqa: E402
from _tiny_models import TINY_SVD_CONFIG  # noqa: E402

OUT = HERE / "lookbeyond_inbetween_golden.safetensors"
# SVD's time ids are embedded 256 wide each (ComfyUI's SVD_img2vid and diffusers' config).
UNET_CONFIG = dict(TINY_SVD_CONFIG, addition_time_embed_dim=256, projection_class_embeddings_input_dim=768)
NUM_FRAMES = 5
HEIGHT, WIDTH = 32, 48
SEEDS = {"xt": 1, "img2vid": 2, "finetune": 3, "pose": 4}
FINETUNE_SCALE = 0.2
# Sharper temporal attention than 1/sqrt(fan_in) weights give, so a flipped map differs
# clearly from an unflipped one.
GAINS = {"temporal_transformer_blocks.0.attn1.to_q.weight": 3.0, "temporal_transformer_blocks.0.attn1.to_k.weight": 3.0}
DELTA_KEYS = ("temporal_transformer_blocks.0.attn1.to_v", "temporal_transformer_blocks.0.attn1.to_out.0")
# stabilityai/stable-video-diffusion-img2vid-xt, scheduler/scheduler_config.json
SVD_XT_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_karras_sigmas": True,
}
# Tiny CameraPoseEncoder: Look Beyond's camctrl/config.yaml with narrower channels and 2 heads
# (only channels[0] is used: the encoder stops after its first level).
POSE_ENCODER_KWARGS = dict(downscale_factor=8, channels=[32, 64, 128, 128], nums_rb=2, cin=384, ksize=1, sk=True,
                           use_conv=False, compression_factor=1, temporal_attention_nhead=2,
                           attention_block_types=("Temporal_Self",), temporal_position_encoding=True,
                           temporal_position_encoding_max_len=16)
POSE_ROWS = 9  # more rows than frames: select_between_frames picks 5 of them by linspace


def _no_tensor2vid(*args, **kwargs):
    raise RuntimeError("tensor2vid stand-in: this script only requests latents")


def import_official(svd_keyframe: pathlib.Path, lookbeyond: pathlib.Path):
    import diffusers
    from diffusers.pipelines.stable_video_diffusion import pipeline_stable_video_diffusion as svd_module

    if diffusers.__version__ != "0.28.0":
        raise SystemExit(f"needs diffusers 0.28.0 (see the docstring), found {diffusers.__version__}")
    svd_module.tensor2vid = _no_tensor2vid  # imported by both official pipelines, unused for latents
    sys.path.insert(0, str(svd_keyframe))
    sys.path.insert(1, str(lookbeyond / "VideoDiffusion"))  # its attn_ctrl/ is the same file
    from attn_ctrl import attention_control
    from custom_diffusers.pipelines import pipeline_frame_interpolation_with_noise_injection as kf_pipeline
    from custom_diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    import videogen
    from camctrl.pose_adaptor import CameraPoseEncoder

    return attention_control, kf_pipeline, EulerDiscreteScheduler, videogen, CameraPoseEncoder


def unet_weights():
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        shapes = shapes_of(UNetSpatioTemporalConditionModel(**UNET_CONFIG).state_dict())
    xt = seeded_state_dict(shapes, SEEDS["xt"], GAINS)
    img2vid = seeded_state_dict(shapes, SEEDS["img2vid"], GAINS)
    tweak = seeded_state_dict(shapes, SEEDS["finetune"])
    finetuned = {k: img2vid[k] + FINETUNE_SCALE * tweak[k] for k in img2vid}
    merged = dict(xt)  # keyframe_interpolation.py main(): delta of to_v / to_out.0 only
    for name, param in finetuned.items():
        if any(d in name for d in DELTA_KEYS):
            merged[name] = merged[name] + (param - img2vid[name])
    return shapes, xt, img2vid, finetuned, merged


def tiny_encoders():
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                                       down_block_types=("DownEncoderBlock2D",) * 4, latent_channels=4).eval()
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=UNET_CONFIG["cross_attention_dim"])).eval().double()
    return vae, clip, CLIPImageProcessor()


def images():
    g = np.random.default_rng(7)
    return [Image.fromarray(g.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)) for _ in range(2)]


# Stability's sgm/modules/diffusionmodules/openaimodel.py normalization(): GroupNorm32(32, ch), eps 1e-5.
SGM_RESNET_EPS = 1e-5


def match_sgm_group_norm_eps(unet) -> None:
    """Give diffusers' SVD ResNet GroupNorms SGM's eps (see the module docstring)."""
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and ".resnets." in name:
            module.eps = SGM_RESNET_EPS


def build_pipeline(cls, unet_cls, scheduler_cls, attention_control, xt, merged, encoders):
    unet = unet_cls(**UNET_CONFIG).double().eval()  # float64 before loading: no float32 rounding
    unet.load_state_dict(xt)
    match_sgm_group_norm_eps(unet)  # before the pipeline deep-copies it into ori_unet
    vae, clip, processor = encoders
    pipe = cls(vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler_cls.from_config(SVD_XT_SCHEDULER),
               feature_extractor=processor)
    pipe.unet.load_state_dict(merged)  # as keyframe_interpolation.py / videogen.py main()
    pipe.ori_unet.double()
    ref = attention_control.AttentionStore()
    attention_control.register_temporal_self_attention_control(pipe.ori_unet, ref)
    ctrl = attention_control.AttentionStore()
    attention_control.register_temporal_self_attention_flip_control(pipe.unet, ctrl, ref)
    pipe.set_progress_bar_config(disable=True)
    return pipe, ref, ctrl


def layer_names(unet) -> list[str]:
    suffix = ".temporal_transformer_blocks.0.attn1.processor"
    names = [n[: -len(suffix)] for n in unet.attn_processors if n.endswith(suffix)]
    order = {"down": 0, "mid": 1, "up": 2}  # the controller's store order: down, mid, up
    return sorted(names, key=lambda n: (order[n.split("_")[0]], n))


class Recorder:
    """Captures every UNet call, the controllers' maps, the fused predictions and the
    generator-less noises (the re-injections) of one official pipeline run."""

    def __init__(self, pipe, ref, ctrl, pipeline_module):
        self.calls = {"ori_unet": [], "unet": []}
        self.maps = {"ori_unet": [], "unet": []}
        self.fused, self.weights, self.noises, self.latents = [], [], [], []
        for name, store in (("ori_unet", ref), ("unet", ctrl)):
            getattr(pipe, name).register_forward_hook(self._unet_hook(name, store), with_kwargs=True)
        step = pipe.multidiffusion_step

        def multidiffusion_step(*args, **kwargs):
            out = step(*args, **kwargs)
            self.fused.append(out.clone())
            self.weights.append(args[7] if len(args) > 7 else kwargs["avg_weight"])
            return out

        pipe.multidiffusion_step = multidiffusion_step
        original = pipeline_module.randn_tensor

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
            out = original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
            if generator is None:
                self.noises.append(out.clone())
            return out

        pipeline_module.randn_tensor = randn_tensor
        self._restore = lambda: setattr(pipeline_module, "randn_tensor", original)

    def close(self) -> None:
        self._restore()

    def _unet_hook(self, name, store):
        def hook(module, args, kwargs, output):
            sample = args[0]
            self.calls[name].append({"sample": sample.clone(), "t": torch.as_tensor(args[1]).clone(),
                                     "emb": kwargs["encoder_hidden_states"].clone(),
                                     "time_ids": kwargs["added_time_ids"].clone(), "out": output[0].clone()})
            self.maps[name].append({k: [m.clone() for m in v] for k, v in store.attention_store.items()})
            return None

        return hook

    def on_step_end(self, pipe, i, t, kwargs):
        self.latents.append(kwargs["latents"].clone())
        return kwargs


def maps_by_layer(maps: dict, names: list[str]) -> dict[str, torch.Tensor]:
    flat = maps["down_self"] + maps["mid_self"] + maps["up_self"]
    if len(flat) != len(names):
        raise RuntimeError(f"{len(flat)} stored maps for {len(names)} temporal layers")
    return dict(zip(names, flat))


def run(pipe, ref, ctrl, module, names, prefix, steps, noise, per_step=True, **kwargs):
    rec = Recorder(pipe, ref, ctrl, module)
    frame1, frame2 = images()
    if per_step:  # videogen.py's callback reads locals() inside a comprehension: a KeyError on Python 3.11
        kwargs["callback_on_step_end"] = rec.on_step_end
    try:
        final = pipe(image1=frame1, image2=frame2, height=HEIGHT, width=WIDTH, num_frames=NUM_FRAMES,
                     num_inference_steps=steps, generator=torch.Generator().manual_seed(42), latents=noise.clone(),
                     output_type="latent", **kwargs).frames
    finally:
        rec.close()
    p1, p2 = rec.calls["ori_unet"][0], rec.calls["unet"][0]
    out = {
        f"{prefix}.final": final, f"{prefix}.call0.fused": rec.fused[0],
        f"{prefix}.call0.pass1.v": p1["out"], f"{prefix}.call0.pass2.v": p2["out"],
        f"{prefix}.guidance": torch.as_tensor(pipe.guidance_scale, dtype=torch.float64),
        f"{prefix}.avg_weight": torch.as_tensor(rec.weights[0], dtype=torch.float64),
        f"{prefix}.calls": torch.tensor(len(rec.fused)),
    }
    out |= {f"{prefix}.latents_after_step.{i}": x for i, x in enumerate(rec.latents)}
    out |= {f"{prefix}.reinject_noise.{j}": n for j, n in enumerate(rec.noises)}
    for which, key in (("ori_unet", "pass1"), ("unet", "pass2")):
        for layer, m in maps_by_layer(rec.maps[which][0], names).items():
            out[f"{prefix}.call0.{key}.maps.{layer}"] = m
    cond = {  # what the UNets see: CFG batch [uncond (zeros), cond]
        "emb1": p1["emb"], "emb2": p2["emb"], "lat1": p1["sample"][:, :, 4:], "lat2": p2["sample"][:, :, 4:],
        "time_ids": p1["time_ids"], "timesteps": torch.stack([c["t"] for c in rec.calls["ori_unet"]]),
    }
    out |= {f"{prefix}.cond.{k}": v for k, v in cond.items()}
    return out


def pose_file_text() -> tuple[str, torch.Tensor]:
    """A RealEstate10K pose file (first line skipped by readers): cameras turning and moving,
    the first one not at the identity (so absolute and relative poses differ)."""
    g = torch.Generator().manual_seed(11)
    lines = ["https://example.invalid/pano360-golden"]
    c2ws = []
    for k in range(POSE_ROWS):
        yaw, pitch = 0.3 + 0.15 * k, 0.05 * torch.randn((), generator=g, dtype=torch.float64).item()
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        c2w = np.eye(4)
        c2w[:3, :3] = ry @ rx
        c2w[:3, 3] = [0.2 * k, -0.05 * k, 0.5 + 0.1 * k]
        w2c = np.linalg.inv(c2w)
        row = [k, 0.6, 0.9, 0.5, 0.45, 0, 0] + [float(v) for v in w2c[:3, :].reshape(-1)]
        lines.append(" ".join(repr(float(v)) if i else str(int(v)) for i, v in enumerate(row)))
        c2ws.append(c2w)
    return "\n".join(lines) + "\n", torch.tensor(np.stack(c2ws))


def pose_inputs(videogen, CameraPoseEncoder, text: str):
    """videogen.py main()'s ray-map and spatial-weight preparation (with the Camera parser for
    the spatial weights too: load_camera_parameters_matrix_posefile misreads RealEstate10K rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "pose.txt"
        path.write_text(text)
        cams = videogen.load_camera_parameters_camera_objects(str(path))
    fid1, fid2 = 0, POSE_ROWS - 1
    plucker = videogen.compute_plucker_embeddings_from_camera_dict(cams, fid1, fid2, NUM_FRAMES, HEIGHT, WIDTH, "cpu")
    selected = videogen.select_between_frames(sorted(cams), fid1, fid2, NUM_FRAMES)
    encoder = CameraPoseEncoder(**POSE_ENCODER_KWARGS)
    reducer = torch.nn.Conv2d(POSE_ENCODER_KWARGS["channels"][0], 4, kernel_size=1)
    fuser = torch.nn.Linear(4, 4)
    learned = {f"pose_encoder.{k}": v for k, v in encoder.state_dict().items() if not k.endswith("pos_encoder.pe")}
    learned |= {f"channel_reducer.{k}": v for k, v in reducer.state_dict().items()}
    learned |= {f"linear_fuser.{k}": v for k, v in fuser.state_dict().items()}
    shapes = shapes_of(learned)
    weights = seeded_state_dict(shapes, SEEDS["pose"])
    for prefix, module in (("pose_encoder.", encoder), ("channel_reducer.", reducer), ("linear_fuser.", fuser)):
        module.double().eval()
        sd = module.state_dict()  # keeps the sinusoidal pos_encoder.pe buffers
        sd.update({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
        module.load_state_dict(sd)
    with torch.no_grad():
        pe_in = plucker.unsqueeze(0).permute(0, 2, 1, 3, 4).double()  # [1, 6, T, H, W] (b c f h w)
        features = encoder(pe_in)
        reduced = reducer(features)
    pose_embeddings = reduced.reshape(1, NUM_FRAMES, *reduced.shape[1:])
    c2w = torch.tensor(np.stack([cams[f].c2w_mat for f in selected]))
    poses = dict(poses_current=c2w[None], pose_source=torch.tensor(cams[fid1].c2w_mat)[None],
                 pose_target=torch.tensor(cams[fid2].c2w_mat)[None])
    recorded = {"C.plucker": plucker, "C.pose_features": features, "C.pose_embeddings": pose_embeddings,
                "C.selected_ids": torch.tensor(selected), "pose.checksum": checksum(weights)}
    return pose_embeddings, fuser, poses, recorded, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--svd-keyframe", type=pathlib.Path, required=True, help="svd_keyframe_interpolation checkout")
    parser.add_argument("--lookbeyond", type=pathlib.Path, required=True, help="LookBeyond checkout")
    args = parser.parse_args()
    attention_control, kf_pipeline, Scheduler, videogen, CameraPoseEncoder = import_official(args.svd_keyframe, args.lookbeyond)
    from diffusers import UNetSpatioTemporalConditionModel

    shapes, xt, img2vid, finetuned, merged = unet_weights()
    encoders = tiny_encoders()
    h, w = HEIGHT // 8, WIDTH // 8
    noise = torch.randn(1, NUM_FRAMES, 4, h, w, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    tensors = {"noise": noise, "xt.checksum": checksum(xt), "img2vid.checksum": checksum(img2vid),
               "finetuned.checksum": checksum(finetuned), "merged.checksum": checksum(merged)}

    def pipeline(cls):
        return build_pipeline(cls, UNetSpatioTemporalConditionModel, Scheduler, attention_control, xt, merged,
                              copy.deepcopy(encoders))

    pipe, ref, ctrl = pipeline(kf_pipeline.FrameInterpolationWithNoiseInjectionPipeline)
    names = layer_names(pipe.unet)
    tensors |= run(pipe, ref, ctrl, kf_pipeline, names, "A", 4, noise,
                   noise_injection_steps=2, noise_injection_ratio=0.5)
    sched = Scheduler.from_config(SVD_XT_SCHEDULER)  # as from_pretrained: unknown keys ignored
    sched.set_timesteps(4)
    tensors["A.sigmas"] = sched.sigmas.clone()
    pipe, ref, ctrl = pipeline(kf_pipeline.FrameInterpolationWithNoiseInjectionPipeline)
    tensors |= run(pipe, ref, ctrl, kf_pipeline, names, "B", 2, noise, weighted_average=True)

    text, c2w_all = pose_file_text()
    pose_embeddings, fuser, poses, recorded, pose_shapes = pose_inputs(videogen, CameraPoseEncoder, text)
    tensors |= recorded
    tensors["pose.c2w"] = c2w_all
    both_halves = pose_embeddings.expand(2, *pose_embeddings.shape[1:])  # the port's broadcast
    for prefix, steps, weighted in (("C", 2, True), ("C1", 1, False)):
        pipe, ref, ctrl = pipeline(videogen.FrameInterpolationWithNoiseInjectionPipeline)
        tensors |= run(pipe, ref, ctrl, videogen, names, prefix, steps, noise, per_step=False, weighted_average=weighted,
                       pose_embeddings=both_halves, linear_fuser=fuser, **poses)
    sched.set_timesteps(2)
    tensors["B.sigmas"] = sched.sigmas.clone()  # C uses the same 2-step sigmas

    metadata = {
        "source": "jeanne-wang/svd_keyframe_interpolation@61fd2bf + YiGuYT/LookBeyond@ea00c7b, diffusers 0.28.0",
        "unet_config": json.dumps(UNET_CONFIG), "unet_shapes": json.dumps(shapes), "gains": json.dumps(GAINS),
        "seeds": json.dumps(SEEDS), "finetune_scale": repr(FINETUNE_SCALE), "delta_keys": json.dumps(DELTA_KEYS),
        "layers": json.dumps(names), "resnet_group_norm_eps": repr(SGM_RESNET_EPS), "num_frames": str(NUM_FRAMES), "image_hw": json.dumps([HEIGHT, WIDTH]),
        "pose_txt": text, "pose_encoder_kwargs": json.dumps(POSE_ENCODER_KWARGS), "pose_shapes": json.dumps(pose_shapes),
        "settings": json.dumps({"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02, "min_guidance": 1.0,
                                "max_guidance": 3.0, "A": {"steps": 4, "noise_injection_steps": 2, "ratio": 0.5},
                                "B": {"steps": 2, "weighted_average": True},
                                "C": {"steps": 2, "weighted_average": True}, "C1": {"steps": 1}}),
    }
    # B's first-step maps equal A's (same inputs; only the fusion differs): not stored twice.
    tensors = {k: v.detach().contiguous() for k, v in tensors.items() if not k.startswith("B.call0.pass1.maps")
               and not k.startswith("B.call0.pass2.maps")}
    save_file(tensors, str(OUT), metadata=metadata)
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    sys.stderr.write(f"wrote {OUT} ({len(tensors)} tensors, {total / 1e6:.2f} MB)\n")


if __name__ == "__main__":
    main()
