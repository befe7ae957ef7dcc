"""Projection nodes inside a real ComfyUI, in process (skipped without ComfyUI).

Each node is called the way the executor calls it (``run_node``); results are checked
against the analytic test panorama or py360convert-independent closed forms.
"""

import math
import sys

import pytest
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from _projection_fixtures import smooth_erp, true_view  # noqa: E402

# Round trip of a 64x128 panorama through 8 bilinear views and back (both resamplings).
ROUND_TRIP_TOL = 4e-3


@pytest.fixture(scope="module")
def nodes(comfy_in_process):
    from pano360.nodes import projection

    return projection


def _image(h=32, frames=1):
    return smooth_erp(h, frames).movedim(1, -1).contiguous()  # IMAGE [T, H, W, C]


def _rig(nodes, run, **kw):
    args = dict(preset="videopanda8", size=0, count=8, yaw=0.0, pitch=0.0, roll=0.0, fov=90.0, custom_json="")
    args.update(kw)
    return run(nodes.Pano360Rig, **args).result[0]


def test_rig_node_builds_presets_and_custom_views(nodes, comfy_in_process):
    run = comfy_in_process.run_node
    vp = _rig(nodes, run)
    assert vp.num_views == 8 and vp.views[0].width == 512
    assert _rig(nodes, run, size=64).views[7].width == 64
    one = _rig(nodes, run, preset="single_view", yaw=30.0, pitch=-10.0, fov=70.0, size=48)
    assert one.num_views == 1 and (one.views[0].yaw, one.views[0].pitch, one.views[0].fov) == (30, -10, 70)
    ring = _rig(nodes, run, preset="horizontal_n", count=5)
    assert [v.yaw for v in ring.views] == [0, 72, 144, 216, 288]
    custom = _rig(nodes, run, preset="custom_json", custom_json='[{"yaw": 45, "fov": 60, "width": 32, "height": 16}]')
    assert custom.views[0].height == 16
    msg = nodes.Pano360Rig.validate_inputs(preset="custom_json", custom_json='[{"fov": 200}]')
    assert isinstance(msg, str) and "custom_json" in msg and "200" in msg
    assert nodes.Pano360Rig.validate_inputs(preset="videopanda8", custom_json="") is True


def test_perspective_then_stitch_restores_the_panorama_video(nodes, comfy_in_process):
    run = comfy_in_process.run_node
    rig = _rig(nodes, run, size=32)
    pano = _image(64, frames=2)
    views, frames = run(nodes.Pano360EquirectToPerspective, panorama=pano, rig=rig, mode="bilinear",
                        width=0, height=0).result
    assert views.shape == (16, 32, 32, 3) and frames == 2 and views.is_contiguous()
    # view-major: view 1 (yaw 60), frame 1 at index 1*2 + 1
    truth = true_view(math.radians(60), 0.0, 0.0, math.radians(90), (32, 32), frame=1)
    assert (views[3].movedim(-1, 0) - truth).abs().mean() < 1e-3
    erp, coverage = run(nodes.Pano360EquirectStitcher, views=views, rig=rig, height=64, weight="feather",
                        mode="bilinear").result
    assert erp.shape == (2, 64, 128, 3) and coverage.shape == (2, 64, 128)
    assert coverage.min() == 1
    assert (erp - pano).abs().mean() < ROUND_TRIP_TOL


def test_cubemap_nodes_round_trip_in_every_layout(nodes, comfy_in_process):
    run = comfy_in_process.run_node
    pano = _image(64)
    for layout, shape in [("stack", (6, 32, 32, 3)), ("horizon", (1, 32, 192, 3)), ("dice", (1, 96, 128, 3))]:
        (cube,) = run(nodes.Pano360EquirectToCubemap, panorama=pano, face_size=0, layout=layout,
                      mode="bilinear").result
        assert cube.shape == shape
        (back,) = run(nodes.Pano360CubemapToEquirect, cubemap=cube, layout=layout, height=0, mode="bilinear").result
        assert back.shape == pano.shape
        assert (back - pano).abs().mean() < ROUND_TRIP_TOL


def test_rotate_and_seam_check(nodes, comfy_in_process):
    run = comfy_in_process.run_node
    pano = _image(32)
    (rolled,) = run(nodes.Pano360SeamCheck, panorama=pano).result
    torch.testing.assert_close(rolled, torch.roll(pano, 32, dims=2))
    (same,) = run(nodes.Pano360RotateEquirect, panorama=pano, yaw=0.0, pitch=0.0, roll=0.0, mode="bilinear").result
    torch.testing.assert_close(same, pano)
    (turned,) = run(nodes.Pano360RotateEquirect, panorama=pano, yaw=90.0, pitch=0.0, roll=0.0,
                    mode="bilinear").result
    torch.testing.assert_close(turned, torch.roll(pano, -16, dims=2))  # 90 deg = W/4 columns to the left


def test_bad_tensor_inputs_name_the_node_and_input(nodes, comfy_in_process):
    from pano360.nodes._common import NodeInputError

    run = comfy_in_process.run_node
    rig = _rig(nodes, run, size=16)
    with pytest.raises(NodeInputError, match=r"Pano360EquirectToPerspective: input 'panorama'.*2 x height.*50x30"):
        run(nodes.Pano360EquirectToPerspective, panorama=torch.zeros(1, 30, 50, 3), rig=rig, mode="bilinear",
            width=0, height=0)
    with pytest.raises(NodeInputError, match=r"Pano360EquirectStitcher: input 'views'.*8 views.*batch 7"):
        run(nodes.Pano360EquirectStitcher, views=torch.zeros(7, 16, 16, 3), rig=rig, height=16,
            weight="uniform", mode="bilinear")
    with pytest.raises(NodeInputError, match=r"Pano360EquirectStitcher: input 'rig'"):
        run(nodes.Pano360EquirectStitcher, views=torch.zeros(8, 16, 16, 3), rig="videopanda8", height=16,
            weight="uniform", mode="bilinear")
    with pytest.raises(NodeInputError, match=r"Pano360CubemapToEquirect: input 'cubemap'.*batch 5"):
        run(nodes.Pano360CubemapToEquirect, cubemap=torch.zeros(5, 8, 8, 3), layout="stack", height=0,
            mode="bilinear")


def test_too_large_requests_are_refused_before_allocating_naming_the_input(nodes, comfy_in_process, monkeypatch):
    # Issue 18: a 16000x16000 custom view (3 GB of output) killed a 24 GB machine before the
    # geometry was chunked; now the estimate is checked against ComfyUI's free memory first.
    from pano360.nodes._common import NodeInputError

    run = comfy_in_process.run_node
    monkeypatch.setattr(nodes, "free_bytes", lambda device=None: 10**9)  # ComfyUI reports 1 GB free
    big = _rig(nodes, run, preset="custom_json", custom_json='[{"width": 16000, "height": 16000}]')
    with pytest.raises(NodeInputError, match=r"Pano360EquirectToPerspective: input 'rig': expected an erp_to_rig "
                                             r"request that fits in the 1\.0 GB free .*got a request needing 3\.1 GB"):
        run(nodes.Pano360EquirectToPerspective, panorama=_image(32), rig=big, mode="bilinear", width=0, height=0)
    with pytest.raises(NodeInputError, match=r"Pano360EquirectToPerspective: input 'width'"):
        run(nodes.Pano360EquirectToPerspective, panorama=_image(32), rig=_rig(nodes, run, size=16), mode="bilinear",
            width=8192, height=8192)
    ring = _rig(nodes, run, preset="horizontal_n", count=64, size=16)
    with pytest.raises(NodeInputError, match=r"Pano360EquirectStitcher: input 'height'.*stitch_rig needs about"):
        run(nodes.Pano360EquirectStitcher, views=torch.zeros(64, 16, 16, 3), rig=ring, height=4096,
            weight="feather", mode="bilinear")
    with pytest.raises(NodeInputError, match=r"Pano360EquirectToCubemap: input 'face_size'"):
        run(nodes.Pano360EquirectToCubemap, panorama=_image(32), face_size=8192, layout="dice", mode="bilinear")
    with pytest.raises(NodeInputError, match=r"Pano360CubemapToEquirect: input 'height'"):
        run(nodes.Pano360CubemapToEquirect, cubemap=torch.zeros(6, 8, 8, 3), layout="stack", height=8192,
            mode="bilinear")
    small, _ = run(nodes.Pano360EquirectToPerspective, panorama=_image(32), rig=_rig(nodes, run, size=16),
                   mode="bilinear", width=0, height=0).result  # a small request still runs
    assert small.shape == (8, 16, 16, 3)


def test_cancel_interrupts_a_projection_between_chunks(nodes, comfy_in_process):
    import comfy.model_management as mm

    run = comfy_in_process.run_node
    rig = _rig(nodes, run, size=256)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(nodes.Pano360EquirectToPerspective, panorama=_image(64), rig=rig, mode="bilinear", width=0, height=0)
    finally:
        mm.interrupt_current_processing(False)
