"""DiffPano inside a real ComfyUI: epipolar modules in ComfyUI's own UNetModel class, checked
against the untouched model (bit-exact at zero init) and against the same weights in a
diffusers UNet with the training hooks; the sampler nodes on a random-weight SD1.5."""

from __future__ import annotations

import math

import pytest
import torch

# A tiny UNet in both implementations: diffusers' UNet2DConditionModel and ComfyUI's
# UNetModel with the same structure (ComfyUI's GroupNorm has 32 groups, so 32/64 channels).
TINY_DIFFUSERS = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16, attention_head_dim=8, norm_num_groups=32,
)
TINY_COMFY = dict(
    in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2],
    transformer_depth=[1, 0], transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1,
    context_dim=16, num_heads=8, use_linear_in_transformer=False, use_spatial_transformer=True,
    image_size=16, legacy=False,
)
# diffusers and ComfyUI compute the same network in a different operation order.
IMPL_TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_pair(comfy_in_process):
    diffusers = pytest.importorskip("diffusers")
    import comfy.ops
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**TINY_DIFFUSERS).eval()
    unet = UNetModel(**TINY_COMFY, operations=comfy.ops.disable_weight_init, device="cpu", dtype=torch.float32).eval()
    sd = ref.state_dict()
    mapping = comfy.utils.unet_to_diffusers(TINY_COMFY)  # diffusers key -> ComfyUI key
    unet.load_state_dict({comfy_key: sd[key] for key, comfy_key in mapping.items() if key in sd}, strict=True)
    return ref, unet


def _views():
    from pano360.models.diffpano_epipolar import EpipolarViews
    from pano360.projection import rotation_matrix

    rot = torch.stack([rotation_matrix(torch.tensor(a, dtype=torch.float64), 0.0, 0.0) for a in (0.0, 0.5)])
    return EpipolarViews(rot, torch.tensor([[0.0, 0, 0], [0.4, 0, 0.3]], dtype=torch.float64), torch.tensor([[1], [0]]))


def _call(unet, wrapper, x, t, ctx):
    import comfy.patcher_extension as ext

    options = {"cond_or_uncond": [0]}
    if wrapper is not None:
        options["wrappers"] = {ext.WrappersMP.DIFFUSION_MODEL: {"diffpano": [wrapper]}}
    with torch.no_grad():
        return unet(x, t, context=ctx, transformer_options=options)


def test_epipolar_modules_in_comfyui_unet_zero_exact_and_equal_to_the_diffusers_hooks(tiny_pair):
    from pano360.models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig, EpipolarPlan
    from pano360.models.diffpano_unet import epipolar_hooks
    from pano360.pipelines.diffpano.patches import EpipolarUNetWrapper, comfy_attention_blocks

    ref, unet = tiny_pair
    assert list(comfy_attention_blocks(unet)) == ["mid_block.attentions.0", "up_blocks.1.attentions.0",
                                                  "up_blocks.1.attentions.1"]
    g = torch.Generator().manual_seed(1)
    x, t, ctx = torch.randn(2, 4, 8, 16, generator=g), torch.tensor([10.0, 500.0]), torch.randn(2, 5, 16, generator=g)
    base = _call(unet, None, x, t, ctx)
    with torch.no_grad():
        assert (base - ref(x, t, ctx).sample).abs().max() < IMPL_TOL  # the two UNets agree
    cfg = EpipolarConfig(num_samples=4, num_refs=1, head_dim=16)
    modules = EpipolarAttentionSet.for_diffusers_unet(ref, cfg)
    assert torch.equal(_call(unet, EpipolarUNetWrapper(modules, _views()), x, t, ctx), base)
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    patched = _call(unet, EpipolarUNetWrapper(modules, _views()), x, t, ctx)
    with torch.no_grad(), epipolar_hooks(ref, modules, EpipolarPlan(_views(), cfg)):
        want = ref(x, t, ctx).sample
    assert (patched - base).abs().max() > 0.1
    assert (patched - want).abs().max() < IMPL_TOL
    assert torch.equal(_call(unet, None, x, t, ctx), base)  # no hook left behind


# --------------------------------------------------------------------------- the nodes on random SD1.5

import os  # noqa: E402
import pathlib  # noqa: E402

# A random VAE does not reconstruct what it encodes, so on random weights the panoramas can
# agree only in latent space: each panorama's latent at its held cells must be exactly the
# encoded reprojection of the earlier panoramas (pixel-space agreement is the analytic test
# tests/pipelines/diffpano/test_diffpano_sequence.py).  Independent samples differ there by
# the random UNet's spread.
# ComfyUI scales latents in and out of the model's space (SD: x 0.18215): float32 rounding.
HELD_EXACT = 1e-4
ROOM = 2.0  # the constant distance (metres) the test runs with


def _cache_checkpoint(name: str) -> pathlib.Path:
    root = os.environ.get("PANO360_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pano360-tests")
    return pathlib.Path(root) / "models" / "checkpoints" / name


@pytest.fixture(scope="module")
def sd15(comfy_in_process, sd15_checkpoint):
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(_cache_checkpoint(sd15_checkpoint)))

    def encode(text):
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    return model, vae, encode("a living room, 360 panorama"), encode("")


def _path():
    from pano360.cameras import keyframe_path

    return keyframe_path("0: yaw=0, x=0, z=0; 2: yaw=40, x=0.5, z=0.6", 3)


def test_multi_panorama_sampler_holds_the_reprojection_in_comfyui_sampling(comfy_in_process, sd15, monkeypatch):
    from pano360.nodes import _host
    from pano360.nodes.diffpano import Pano360DiffPanoMultiPanorama
    from pano360.nodes.settings import Pano360DiffPanoSettings, Pano360SamplerSettings
    from pano360.sampling.windows import window_seed

    model, vae, pos, neg = sd15
    env = comfy_in_process
    calls = []
    real_sample = _host.sample

    def spy(patched, samples, **kw):
        out = real_sample(patched, samples, **kw)
        calls.append((samples.clone(), None if kw.get("noise_mask") is None else kw["noise_mask"].clone(), out.clone(),
                      patched))
        return out

    monkeypatch.setattr(_host, "sample", spy)
    settings = Pano360SamplerSettings.execute(seed=5, steps=1, cfg=2.0, sampler_name="euler",
                            scheduler="normal").args[0]
    diffpano = Pano360DiffPanoSettings.execute(num_refs=2, epipolar_attention="training_free",
                            epipolar_blocks="all", reference_weight=0.0, samples=4, near=0.5, far=0.0, dilate_cells=1,
                            depth_source="constant", room_distance=ROOM, position_scale=1.0).args[0]
    latent = {"samples": torch.zeros(1, 4, 8, 16)}
    out = Pano360DiffPanoMultiPanorama.execute(model=model, positive=pos, negative=neg, vae=vae,
                       camera_path=_path(), latent=latent, settings=settings, diffpano=diffpano)
    panoramas, held, latents, preview = out.args
    assert panoramas.shape == (3, 64, 128, 3) and held.shape == (3, 64, 128) and preview.shape == (3, 64, 128, 3)
    assert float(held[0].max()) == 0.0 and float(held[1].mean()) > 0.5
    assert [c[0].shape[0] for c in calls] == [1, 2, 3]  # panorama 2 rides with its two references
    assert calls[2][3].model_options["transformer_options"]["patches_replace"]["attn1"]  # the epipolar patch is on
    spread = []
    for i in (1, 2):
        samples, mask, result, _ = calls[i]
        keep = mask[0, 0] < 0.5
        assert bool(keep.any())
        assert (result[0][:, keep] - samples[0][:, keep]).abs().max() < HELD_EXACT  # held cells kept
        assert (result[1:] - samples[1:]).abs().max() < HELD_EXACT  # references untouched
        assert torch.equal(latents["samples"][i], result[0])
        independent = real_sample(model, latent["samples"], seed=window_seed(5, i), steps=1, cfg=2.0,
                                  sampler_name="euler", scheduler="normal", positive=pos, negative=neg)
        spread.append(float((independent[0][:, keep] - samples[0][:, keep]).abs().mean()))
    assert min(spread) > 100 * HELD_EXACT  # independent samples do not agree with the reprojection


def test_trained_modules_in_a_stock_sampler_zero_exact_and_effective(comfy_in_process, sd15, tmp_path):
    from pano360.models.diffpano_epipolar import EpipolarAttentionSet, EpipolarConfig
    from pano360.models.diffpano_loader import save_epipolar

    model, vae, pos, neg = sd15
    env = comfy_in_process
    from pano360.nodes import _host
    from pano360.pipelines.diffpano.patches import comfy_attention_blocks

    # a module at every attention block of the test's SD1.5 (its decoder and middle block)
    blocks = comfy_attention_blocks(_host.diffusion_model(model))
    assert {n.split(".")[0] for n in blocks} == {"mid_block", "up_blocks"}
    channels = {name: b.module.in_channels for name, b in blocks.items()}
    modules = EpipolarAttentionSet(channels, EpipolarConfig(num_samples=4, num_refs=1))
    folder = env.base / "models" / "diffpano"
    folder.mkdir(parents=True, exist_ok=True)
    save_epipolar(modules, folder / "zero.safetensors")
    env.folder_paths.filename_list_cache.pop("diffpano", None)
    try:
        _check_trained_path(env, model, pos, neg)
    finally:  # the shared base folder's model lists stay as other tests expect them
        (folder / "zero.safetensors").unlink()
        env.folder_paths.filename_list_cache.pop("diffpano", None)


def _check_trained_path(env, model, pos, neg):
    from pano360.nodes import _host
    from pano360.nodes.diffpano import Pano360DiffPanoApplyModule, Pano360DiffPanoModuleLoader

    Pano360DiffPanoModuleLoader.define_schema()  # registers models/diffpano
    loaded = Pano360DiffPanoModuleLoader.execute(module_name="zero.safetensors", samples=0, num_refs=0).args[0]
    patched = Pano360DiffPanoApplyModule.execute(model=model, module=loaded, camera_path=_path(),
                                                 position_scale=1.0, references="nearest").args[0]
    latent = torch.zeros(3, 4, 8, 16)
    kw = dict(seed=1, steps=1, cfg=2.0, sampler_name="euler", scheduler="normal", positive=pos, negative=neg)
    base = _host.sample(model, latent, **kw)
    assert torch.equal(_host.sample(patched, latent, **kw), base)
    with torch.no_grad():
        for name, p in loaded.named_parameters():
            if "to_out" in name:
                p.normal_(0.0, 0.05)
    patched = Pano360DiffPanoApplyModule.execute(model=model, module=loaded, camera_path=_path(),
                                                 position_scale=1.0, references="nearest").args[0]
    assert (_host.sample(patched, latent, **kw) - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="must hold the camera path's 3"):
        _host.sample(patched, torch.zeros(2, 4, 8, 16), **kw)


def test_diffpano_workflow_runs_on_random_sd15(comfy_server, sd15_checkpoint):
    import copy
    import json

    from pano360.client.schema import SchemaSet
    from pano360.client.validate import errors_only, validate_prompt

    root = pathlib.Path(__file__).resolve().parents[2]
    prompt = json.loads((root / "workflows" / "api" / "diffpano_multiview_panoramas.json").read_text())
    assert not errors_only(validate_prompt(prompt, SchemaSet([comfy_server.object_info()]))), \
        "the shipped workflow does not validate"
    small = copy.deepcopy(prompt)
    for node in small.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = sd15_checkpoint
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=128, height=64)
        elif node["class_type"] == "Pano360SamplerSettings":
            inputs["steps"] = 1
        elif node["class_type"] == "Pano360CameraPath":
            inputs["num_frames"] = 3
    entry = comfy_server.run(small, timeout=900)
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    saved = [img for img in images if img.get("type") == "output"]
    assert len(saved) == 3  # one 360° image per camera
    from PIL import Image

    for img in saved:
        assert Image.open(comfy_server.base / "output" / img["subfolder"] / img["filename"]).size == (128, 64)


# SD1.5's UNet config as comfy/model_detection.py states it (unet_config_from_diffusers_unet, SD15)
SD15_FULL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_resblock": False, "use_temporal_attention": False,
}


def test_pano_sd_lora_keys_all_load_in_comfyui_lora_loader(comfy_in_process, tmp_path):
    """Every adapter train-diffpano writes for an SD1.5 UNet becomes a weight patch of ComfyUI's
    own SD1.5 model (comfy.lora.load_lora with the key map LoraLoader uses)."""
    diffusers = pytest.importorskip("diffusers")
    import comfy.lora
    import comfy.utils

    from pano360.models.lora import kohya_unet_name, linear_targets

    # ComfyUI's own SD1.5 model at full size (the test checkpoint is shrunk), on the meta device
    import comfy.model_detection

    config = comfy.model_detection.model_config_from_unet_config(dict(SD15_FULL_UNET))
    assert type(config).__name__ == "SD15"
    model = config.get_model({}, device="meta")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD1.5's layout
    names = linear_targets(unet)  # the layers train-diffpano --stage lora adapts, keyed as it saves them
    sd = {}
    for n in names:
        layer = unet.get_submodule(n)
        sd[kohya_unet_name(n) + ".lora_down.weight"] = torch.zeros(2, layer.in_features)
        sd[kohya_unet_name(n) + ".lora_up.weight"] = torch.zeros(layer.out_features, 2)
        sd[kohya_unet_name(n) + ".alpha"] = torch.tensor(2.0)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    patches = comfy.lora.load_lora(sd, key_map)
    assert len(names) == 128  # 16 transformer blocks x (attn1, attn2) x 4 projections
    assert len(patches) == len(names)
