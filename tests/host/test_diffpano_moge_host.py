"""DiffPano's 'estimate' depth source through ComfyUI 0.33's own MoGe panorama inference.

``nodes/_host.moge_panorama_distance`` calls ComfyUI's ``MoGePanoramaInference`` (split into 12
perspective views, per-view inference, Poisson merge).  No MoGe weights exist here, so a stand-in
model answers each perspective split with the distance written into the panorama's own pixels
(red = distance / MAX_DISTANCE): what comes back must be the true distance map of the input
panorama up to one global scale, pixel-aligned with it -- a check of the call, the output key and layout, and the units,
against a box room ray-cast in closed form and ComfyUI's own split/merge code.
"""

from __future__ import annotations

import math

import pytest
import torch

MAX_DISTANCE = 8.0
HW = (64, 128)
# ComfyUI merges 12 bilinear splits of a 64x128 panorama by a Poisson solve of log-distance
# gradients: at room corners and ball silhouettes the merge smooths; elsewhere it is close
# (measured on 0.33.0: median 0.8 %, 90th percentile 1.8 %; the quarter-turned map: 90th
# percentile 25 % -- floor and ceiling do not change under a turn, so the median cannot tell).
MEDIAN_REL_TOL = 0.02
P90_REL_TOL = 0.05


class StandInMoGe:
    """ComfyUI's ``MoGeModel`` interface (``patcher``, ``load_device``, ``dtype``, ``infer``)."""

    def __init__(self):
        import comfy.model_patcher

        self.load_device = torch.device("cpu")
        self.dtype = torch.float32
        self.patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(1, 1), load_device=self.load_device,
                                                        offload_device=self.load_device)
        self.calls = []

    def infer(self, image, resolution_level=9, fov_x=None, force_projection=True, apply_mask=True,
              apply_metric_scale=True, **kw):
        # image (N, 3, R, R) perspective splits; the distance along each pixel's ray is in red
        self.calls.append((tuple(image.shape), fov_x))
        distance = image[:, 0].float() * MAX_DISTANCE
        n, r = distance.shape[0], distance.shape[-1]
        c = (torch.arange(r, dtype=torch.float32) + 0.5) / r * 2 - 1  # fov 90: tan(45°) = 1
        ray = torch.stack([c[None, :].expand(r, r), c[:, None].expand(r, r), torch.ones(r, r)], -1)
        ray = ray / ray.norm(dim=-1, keepdim=True)
        return {"points": ray[None] * distance[..., None], "mask": torch.ones(n, r, r, dtype=torch.bool)}


def _room():
    from pano360.pipelines.diffpano.synthetic import Ball, BoxRoom, render_room
    from pano360.projection.geometry import rotation_matrix

    room = BoxRoom(half=(3.0, 1.4, 4.0), balls=(Ball((0.9, -0.5, 1.5), 0.6),),
                   freqs=((1.3, 0.7, 0.0), (-0.9, 0.0, 1.1), (0.0, 0.8, 0.6)), phases=(0.0, 0.5, 1.0))
    rot = rotation_matrix(torch.tensor(0.3, dtype=torch.float64), 0.0, 0.0)
    _, dist = render_room(room, rot, torch.tensor([0.4, 0.1, -0.6], dtype=torch.float64), HW)
    return dist[0].float()  # (H, W)


def test_moge_panorama_distance_is_the_input_panoramas_distance(comfy_in_process):
    from pano360.nodes import _host

    true = _room()
    assert float(true.max()) < MAX_DISTANCE
    image = (true / MAX_DISTANCE)[None, ..., None].expand(1, *HW, 3).contiguous()  # IMAGE [1, H, W, 3]
    try:
        import comfy_extras.nodes_moge  # noqa: F401
    except ImportError:  # ComfyUI 0.3.64: no native MoGe, a clear refusal
        with pytest.raises(ValueError, match="MoGe panorama depth needs a ComfyUI with the native MoGe nodes"):
            _host.moge_panorama_distance(object(), image)
        return
    moge = StandInMoGe()
    got = _host.moge_panorama_distance(moge, image)
    assert tuple(got.shape) == HW
    assert moge.calls and all(fov == 90.0 for _, fov in moge.calls)
    # the merge solves log-distance gradients: distances up to one global scale (the DiffPano
    # pipeline scales every estimate itself, pipelines/diffpano/sequence.depth_source)
    got = got.float() / got.float().median()
    ref = true / true.median()
    rel = ((got - ref).abs() / ref).flatten()
    assert float(rel.median()) < MEDIAN_REL_TOL, float(rel.median())
    assert float(rel.quantile(0.9)) < P90_REL_TOL, float(rel.quantile(0.9))
    # pixel-aligned: the panorama turned by a quarter (a 32-column roll) would not match
    rolled = ((got - ref.roll(HW[1] // 4, dims=-1)).abs() / ref).flatten()
    assert float(rolled.quantile(0.9)) > 3 * P90_REL_TOL
    assert math.isfinite(float(got.sum()))
