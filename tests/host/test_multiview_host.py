"""The Multi-View Sampler inside a real ComfyUI: its hook runs in ComfyUI's own sampler on a
random-weight SD1.5 checkpoint, the text-to-panorama workflow runs over HTTP, and the video
workflows validate against the live /object_info."""

from __future__ import annotations

import io as _io
import json
import pathlib

import pytest
import torch
from PIL import Image

from wf_check import validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows" / "api"
VIDEO_WORKFLOWS = ["videopanda_text_to_360video", "videopanda_video_to_360video", "videopanda_autoregressive_61f"]
# Views of a random UNet differ by about their own spread (std); fused views only by
# bilinear round trips at 8x8 latents.
AGREE_RATIO = 0.2


@pytest.fixture(scope="module")
def sd15(comfy_in_process, sd15_checkpoint_path):
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(sd15_checkpoint_path))

    def encode(text):
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    return model, encode("a panorama"), encode("")


def _disagreement(views: torch.Tensor, rig) -> float:
    from pano360.sampling.fusion import canvas_size
    from pano360.projection import perspective_to_erp

    erp, weight = perspective_to_erp(views, *rig.angles(), canvas_size(rig, views.shape[-2:], oversample=4))
    inside = weight > 0.999
    multi = inside.sum(0) >= 2
    n = inside.sum(0).clamp_min(1)
    mean = (erp * inside).sum(0) / n
    var = ((erp - mean) ** 2 * inside).sum(0) / n
    return float(var.mean(0, keepdim=True)[multi].sqrt().mean())


def _run(env, model, pos, neg, latent, rig, **kw):
    from pano360.nodes.multiview import Pano360MultiViewSampler
    from pano360.nodes.settings import Pano360FusionSettings, Pano360SamplerSettings

    settings = dict(seed=3, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal")
    fusion = dict(sync_strength=1.0, sync_start=0.0, sync_end=1.0, noise_augmentation=0.0)
    links = {}
    for key, value in kw.items():
        if key in settings:
            settings[key] = value
        elif key in fusion:
            fusion[key] = value
        else:
            links[key] = value
    bundles = dict(settings=env.run_node(Pano360SamplerSettings, **settings).args[0],
                   fusion=env.run_node(Pano360FusionSettings, **fusion).args[0])
    out = env.run_node(Pano360MultiViewSampler, model=model, positive=pos, negative=neg, latent=latent, rig=rig,
                       **bundles, **links)
    return out.args[0]["samples"]


def test_sampler_fuses_views_and_holds_given_cells_in_comfy_sampling(comfy_in_process, sd15):
    from pano360.pipelines.videopanda.view_mask import build_view_mask
    from pano360.projection import rig_preset

    model, pos, neg = sd15
    rig = rig_preset("horizontal_n", n=6, fov=90.0, size=64)  # 6 views, 30-degree overlaps
    latent = {"samples": torch.zeros(6, 4, 8, 8)}
    given = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = build_view_mask("first_column", 6, 1, column_view=2)
    # one Euler step: the result is the fused x0 of ComfyUI's own model call (one run
    # only: a random SD1.5 UNet step takes seconds on CPU)
    out = _run(comfy_in_process, model, pos, neg, latent, rig, view_mask=mask, given={"samples": given})
    assert out.shape == (6, 4, 8, 8)
    # the given view is held (up to float32 rounding of the latent scale in and out)
    torch.testing.assert_close(out[2:3], given, atol=1e-4, rtol=1e-5)
    # the random UNet's views differ by O(out.std()); fused ones agree where they overlap
    assert _disagreement(out, rig) < AGREE_RATIO * float(out.std())
    assert not torch.allclose(out[1], given[0], atol=1e-2)


def test_sampler_names_the_input_on_a_bad_batch(comfy_in_process, sd15):
    from pano360.nodes._common import NodeInputError
    from pano360.projection import rig_preset

    model, pos, neg = sd15
    with pytest.raises(NodeInputError, match="Pano360MultiViewSampler: input 'latent'.*rig's 8 views"):
        _run(comfy_in_process, model, pos, neg, {"samples": torch.zeros(6, 4, 8, 8)}, rig_preset("videopanda8"))


def test_text_to_panorama_workflow_runs_on_random_sd15(comfy_server, sd15_checkpoint):
    info = comfy_server.object_info()
    prompt = json.loads((WORKFLOWS / "text_to_360_panorama.json").read_text())
    missing = sorted({n["class_type"] for n in prompt.values()} - set(info))
    if missing:
        pytest.skip(f"node IDs not in /object_info yet (from other branches): {missing}")
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = sd15_checkpoint
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "Pano360SamplerSettings":
            node["inputs"].update(steps=1, cfg=1.0, sampler_name="euler", scheduler="normal")
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = "pano360_tests/multiview"
    assert validate(prompt, info) == []
    entry = comfy_server.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", comfy_server.error_message(entry)
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    images = entry["outputs"][save]["images"]
    assert len(images) == 1
    w, h = Image.open(_io.BytesIO(comfy_server.view(**images[0]))).size
    assert w == 2 * h


@pytest.mark.parametrize("name", VIDEO_WORKFLOWS)
def test_video_workflows_validate_against_object_info(comfy_server, name):
    info = comfy_server.object_info()
    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    missing = sorted({n["class_type"] for n in prompt.values()} - set(info))
    if missing:
        pytest.skip(f"node IDs not in /object_info yet (from other branches): {missing}")
    assert validate(prompt, info) == []


class _StubModel:
    """Just enough of a ModelPatcher for the nodes' bookkeeping (no sampling): ComfyUI's own
    base ``LatentFormat`` (so every method the host's ``fix_empty_latent_channels`` calls on
    it exists, e.g. 0.33's ``fix_empty_latent``) with the given channels and dimensions."""

    def __init__(self, channels: int, dims: int):
        from comfy.latent_formats import LatentFormat

        self._format = LatentFormat()
        self._format.latent_channels, self._format.latent_dimensions = channels, dims

    def get_model_object(self, name):
        assert name == "latent_format"
        return self._format


def test_sampler_says_that_a_latent_noise_mask_is_not_used(comfy_in_process, monkeypatch, caplog):
    from pano360.nodes import multiview as mv
    from pano360.projection import rig_preset

    monkeypatch.setattr(mv, "sample_grid", lambda model, pos, neg, rig, samples, *a, **k: samples)
    monkeypatch.setattr(mv._host, "sampling_progress", lambda model, total: (lambda offset: None))
    latent = {"samples": torch.zeros(3, 4, 8, 8), "noise_mask": torch.ones(3, 1, 8, 8)}
    with caplog.at_level("WARNING", logger="pano360"):
        out = _run(comfy_in_process, _StubModel(4, 2), [], [], latent, rig_preset("horizontal_n", n=3, size=64))
    assert out.shape == (3, 4, 8, 8)
    assert "noise_mask is not used" in caplog.text


@pytest.mark.parametrize("video_model, batch", [(False, 1), (True, 1), (False, 5)])
def test_extender_runs_windows_through_the_samplers_call(comfy_in_process, monkeypatch, video_model, batch):
    """The Extender feeds each window to the same sample_grid the sampler uses (stubbed
    here: the real call is covered above), with the row and the video column given."""
    from pano360.nodes import multiview as mv
    from pano360.projection import rig_preset

    calls = []

    def fake_sample_grid(model, positive, negative, rig, samples, mask, settings, fusion, callback=None, adapter=None):
        assert adapter is None
        calls.append((tuple(samples.shape), mask.clone(), settings.seed, samples.clone()))
        return samples + 1.0  # "generated" = input + 1 everywhere

    monkeypatch.setattr(mv, "sample_grid", fake_sample_grid)
    monkeypatch.setattr(mv._host, "sampling_progress", lambda model, total: (lambda offset: None))
    rig = rig_preset("horizontal_n", n=3, fov=150.0, size=64)
    c, h, w = 4, 8, 8
    if video_model:
        latent = {"samples": torch.zeros(1, c, 1, h, w)}
        video = {"samples": torch.arange(7.0).reshape(1, 1, 7, 1, 1).expand(1, c, 7, h, w).contiguous()}
    else:
        latent = {"samples": torch.zeros(batch, c, h, w)}  # any batch: only the kind and size are used
        video = {"samples": torch.arange(7.0).reshape(7, 1, 1, 1).expand(7, c, h, w).contiguous()}
    from pano360.nodes.settings import Pano360SamplerSettings, Pano360WindowSettings

    settings = comfy_in_process.run_node(Pano360SamplerSettings, seed=10, steps=2, cfg=1.0, sampler_name="euler",
                                         scheduler="normal").args[0]
    windows = comfy_in_process.run_node(Pano360WindowSettings, window=3, overlap=1).args[0]
    out = comfy_in_process.run_node(
        mv.Pano360AutoregressiveExtender, model=_StubModel(c, 3 if video_model else 2), positive=[], negative=[],
        latent=latent, windows=3, column_view=1, settings=settings, window_settings=windows, rig=rig, video=video,
    ).args[0]["samples"]
    assert [seed for _, _, seed, _ in calls] == [10, 11, 12]
    assert out.shape == ((3, c, 7, h, w) if video_model else (3 * 7, c, h, w))
    cells = out.permute(0, 2, 1, 3, 4) if video_model else out.reshape(3, 7, c, h, w)
    # window 0 frames 0..2 = 0+1; window 1 adds frames 3,4 from carried frame 2 (value 1) + 1 ...
    assert cells[0, :, 0, 0, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert cells[1, :, 0, 0, 0].tolist() == [float(f) + 1.0 for f in range(7)]  # the video column (+1)
    for _, mask, _, samples in calls[1:]:
        assert mask[:, 0].all() and mask[1].all() and mask.sum() == 3 + 3 - 1


def test_extender_window_seeds_wrap_at_the_largest_seed(comfy_in_process):
    from pano360.nodes._bundles import SEED_MAX
    from pano360.sampling.windows import window_seed

    seeds = [window_seed(SEED_MAX - 1, k) for k in range(4)]
    assert seeds == [SEED_MAX - 1, SEED_MAX, 0, 1]
    for s in seeds:  # ComfyUI seeds its noise with torch.manual_seed (comfy.sample.prepare_noise),
        torch.Generator().manual_seed(s)  # which has the same range as a generator's


@pytest.mark.parametrize("video_model", [False, True])
def test_sky_and_ground_prompts_reach_only_their_views_in_comfy_cond_batching(comfy_in_process, video_model):
    """positive_up/positive_down become ComfyUI conditioning masks over batch items; ComfyUI's
    own area/mask resolution gives each prompt weight 1 on its views and 0 elsewhere."""
    import comfy.samplers

    from pano360.nodes.multiview import per_view_conditioning
    from pano360.sampling.fusion import LatentLayout
    from pano360.projection import rig_preset

    rig = rig_preset("videopanda8")  # views 6 (up) and 7 (down)
    frames, h, w = 2, 8, 8
    shape = (8, 4, frames, h, w) if video_model else (8 * frames, 4, h, w)
    layout = LatentLayout.of(shape, 8)

    def cond(value):
        return [[torch.full((1, 77, 8), float(value)), {"pooled_output": torch.zeros(1, 8)}]]

    conds = per_view_conditioning(cond(0), cond(1), cond(2), rig, layout, "Pano360MultiViewSampler")
    x = torch.zeros(shape)
    dims = tuple(shape[2:])
    resolved = [dict(c[1], model_conds={}, uuid=i) for i, c in enumerate(conds)]
    comfy.samplers.resolve_areas_and_cond_masks_multidim(resolved, dims, "cpu")
    per_prompt = {}
    for c, (emb, _) in zip(resolved, conds):
        mult = comfy.samplers.get_area_and_mult(c, x, torch.ones(1)).mult
        cells = layout.to_cells(mult)[..., 0, 0, 0]  # (V, T)
        per_prompt[int(emb[0, 0, 0])] = cells
    assert torch.equal(per_prompt[1][6], torch.ones(frames)) and per_prompt[1].sum() == frames
    assert torch.equal(per_prompt[2][7], torch.ones(frames)) and per_prompt[2].sum() == frames
    assert per_prompt[0][:6].min() == 1 and per_prompt[0][6:].sum() == 0


def test_widget_checks_name_the_input(comfy_in_process):
    from pano360.nodes.multiview import Pano360ViewMask
    from pano360.nodes.settings import Pano360FusionSettings, Pano360WindowSettings
    from pano360.nodes._common import NodeInputError

    assert "input 'overlap'" in Pano360WindowSettings.validate_inputs(window=4, overlap=4)
    assert "input 'sync_start'" in Pano360FusionSettings.validate_inputs(sync_start=0.8, sync_end=0.2)
    assert Pano360FusionSettings.validate_inputs(sync_start=0.2, sync_end=0.8) is True
    out = comfy_in_process.run_node(Pano360ViewMask, regime="first_row_and_column", views=8, frames=16,
                                    column_view=2, custom="")
    mask, preview = out.args
    assert mask.shape == (8, 16) and mask[2].all() and mask[:, 0].all() and preview.shape == (1, 8, 16)
    with pytest.raises(NodeInputError, match="Pano360ViewMask: input 'custom'"):
        comfy_in_process.run_node(Pano360ViewMask, regime="custom", views=2, frames=3, column_view=0, custom="10\n01")
    with pytest.raises(NodeInputError, match="Pano360ViewMask: input 'rig'"):
        comfy_in_process.run_node(Pano360ViewMask, regime="none", views=2, frames=3, column_view=0, custom="",
                                  rig="videopanda8")
