"""The uniform-sphere space of the Multi-View Sampler inside ComfyUI's own sampler.

A tiny random SD1.5-shaped UNet (ComfyUI's classes, tests/host/tiny_comfy.py) samples a
lattice latent through ``comfy.sample.sample``: noise, CFG batching, the noise mask that
holds given points and the model-function wrapper are ComfyUI's.  What is checked against
independent facts: output views are copies of one lattice (so overlapping views are equal
to the bit), held points end exactly at their given values, and the conditioning masks of
the pole prompts are accepted by ComfyUI's mask resolution.
"""

from __future__ import annotations

import math

import pytest
import torch

import tiny_comfy

VIEW = 8  # latent view size


@pytest.fixture(scope="module")
def tiny(comfy_in_process):
    return tiny_comfy.sd15_patcher(), tiny_comfy.text(1), tiny_comfy.text(2)


def run(node, **inputs):
    """A node's ``execute`` (V3 classmethod) with the given inputs (no hidden inputs needed)."""
    return node.execute(**inputs)


def _bundles(env, space="uniform_sphere", steps=2, **fusion):
    from pano360.nodes.settings import Pano360FusionSettings, Pano360SamplerSettings

    settings = run(Pano360SamplerSettings, seed=5, steps=steps, cfg=2.0, sampler_name="euler",
                            scheduler="normal").args[0]
    args = dict(sync_strength=1.0, sync_start=0.0, sync_end=1.0, noise_augmentation=0.0, space=space)
    args.update(fusion)
    return settings, run(Pano360FusionSettings, **args).args[0]


def test_sphere_space_views_are_copies_of_one_lattice(comfy_in_process, tiny):
    from pano360.metrics import PanoramaScores, lattice_disagreement
    from pano360.nodes.multiview import Pano360MultiViewSampler
    from pano360.projection import rig_preset
    from pano360.projection.lattice import erp_size_for_points
    from pano360.sampling.fusion import SphereFusion

    model, pos, neg = tiny
    rig = rig_preset("videopanda8", size=VIEW * 8)
    settings, fusion = _bundles(comfy_in_process)
    latent = {"samples": torch.zeros(1, 4, VIEW, VIEW)}
    out = run(Pano360MultiViewSampler, model=model, positive=pos, negative=neg, latent=latent,
                                    rig=rig, settings=settings, fusion=fusion)
    views, equirect, scores = out.args
    assert views["samples"].shape == (8, 4, VIEW, VIEW) and bool(torch.isfinite(views["samples"]).all())
    sphere = SphereFusion(rig, (VIEW, VIEW), n=None, rotation="sphere")
    h, w = erp_size_for_points(sphere.n, align=2)
    assert equirect["samples"].shape == (1, 4, h, w)
    assert isinstance(scores, PanoramaScores) and math.isfinite(scores.seam)
    assert scores.views is not None and scores.views > 0  # the random UNet's views disagree before fusion
    # every point held by two views holds the same value in both
    assert float(lattice_disagreement(views["samples"].float(), sphere.views(0))) < 1e-6
    assert views["samples"].std() > 0


def test_given_points_end_exactly_at_their_values_and_carried_frames_too(comfy_in_process, tiny):
    from pano360.nodes._bundles import FusionSettings, SamplerSettings
    from pano360.nodes.multiview import sample_sphere
    from pano360.pipelines.videopanda.view_mask import build_view_mask
    from pano360.projection import rig_preset
    from pano360.sampling.fusion import LatentLayout
    from pano360.sampling.held import held_on_lattice

    model, pos, neg = tiny
    rig = rig_preset("videopanda8", size=VIEW * 8)
    frames = 2
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(8 * frames, 4, VIEW, VIEW, generator=g)  # view-major; view 0 is the given video
    mask = build_view_mask("first_column", 8, frames, column_view=0)
    settings = SamplerSettings(seed=1, steps=2, cfg=2.0)
    fusion = FusionSettings(space="uniform_sphere", rotation="yaw")
    result = sample_sphere(model, pos, neg, rig, samples, mask, settings, fusion, "test")
    values, held = held_on_lattice(LatentLayout.of(samples.shape, 8).to_grid(samples), mask, rig,
                                   result.lattice.shape[-1])
    keep = held.expand_as(values).bool()
    assert int(held.sum()) > 0
    torch.testing.assert_close(result.lattice[keep], values[keep], atol=1e-6, rtol=0)
    assert float((result.lattice[~keep] - values[~keep]).abs().mean()) > 0.1  # the rest was generated

    carried = torch.randn(1, 4, result.lattice.shape[-1], generator=g)
    again = sample_sphere(model, pos, neg, rig, samples, None, settings, fusion, "test", carried=carried)
    torch.testing.assert_close(again.lattice[:1], carried, atol=1e-6, rtol=0)


def test_extender_runs_windows_on_the_sphere_with_pole_prompts(comfy_in_process, tiny):
    from pano360.nodes.multiview import Pano360AutoregressiveExtender
    from pano360.nodes.settings import Pano360WindowSettings
    from pano360.projection import rig_preset

    model, pos, neg = tiny
    rig = rig_preset("videopanda8", size=VIEW * 8)
    settings, fusion = _bundles(comfy_in_process, steps=1, view_rotation="yaw")
    windows = run(Pano360WindowSettings, window=3, overlap=1).args[0]
    out = run(
        Pano360AutoregressiveExtender, model=model, positive=pos, negative=neg,
        latent={"samples": torch.zeros(1, 4, VIEW, VIEW)}, windows=2, column_view=0, settings=settings,
        fusion=fusion, window_settings=windows, rig=rig, positive_up=tiny_comfy.text(3), positive_down=tiny_comfy.text(4))
    views, equirect, scores = out.args
    assert views["samples"].shape == (8 * 5, 4, VIEW, VIEW)  # 3 + (3 - 1) frames
    assert equirect["samples"].shape[0] == 5 and bool(torch.isfinite(equirect["samples"]).all())
    assert scores.views is not None


def test_a_rolled_model_and_a_rig_with_holes_are_refused(comfy_in_process, tiny):
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.multiview import Pano360MultiViewSampler
    from pano360.nodes.seam import Pano360SeamRollPatch
    from pano360.projection import rig_preset

    model, pos, neg = tiny
    settings, fusion = _bundles(comfy_in_process, steps=1)
    rolled = run(Pano360SeamRollPatch, model=model, enable=True, roll_fraction=0.25,
                                       every_k_steps=1).args[0]
    latent = {"samples": torch.zeros(1, 4, VIEW, VIEW)}
    with pytest.raises(NodeInputError, match="Seam Roll Patch"):
        run(Pano360MultiViewSampler, model=rolled, positive=pos, negative=neg, latent=latent,
                                  settings=settings, fusion=fusion)
    narrow = rig_preset("horizontal_n", n=4, fov=60.0, size=VIEW * 8)
    with pytest.raises(NodeInputError, match="rig.*no view"):
        run(Pano360MultiViewSampler, model=model, positive=pos, negative=neg,
                                  latent={"samples": torch.zeros(4, 4, VIEW, VIEW)}, rig=narrow,
                                  settings=settings, fusion=fusion)
