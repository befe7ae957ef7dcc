"""Preprocessing a mesh and a camera path into the official arc layout (tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from pano360.pipelines.videofrom3d.arcs import read_arcs, write_arcs
from pano360.pipelines.videofrom3d.correspondence import decode_correspondence
from pano360.pipelines.videofrom3d.noise_warp import NoiseWarpSettings
from pano360.pipelines.videofrom3d.preprocess import PreprocessSettings, equirect_edges, preprocess_arcs
from pano360.pipelines.videofrom3d.scene import look_at_angles, procedural_town, street_camera_path

TINY = PreprocessSettings(edge_hw=(18, 27), corres_hw=(12, 18), noise=NoiseWarpSettings(channels=4, flow_scale=2,
                                                                                     downscale=4))


def _street(frames: int):
    return street_camera_path(frames)


def test_look_at_points_the_forward_axis_at_the_target():
    from pano360.projection.geometry import rotation_matrix

    yaw, pitch = look_at_angles((1.0, 2.0, 3.0), (4.0, 0.5, 9.0))
    fwd = rotation_matrix(torch.tensor(yaw), torch.tensor(pitch), torch.tensor(0.0))[:, 2]
    d = torch.tensor([3.0, -1.5, 6.0])
    torch.testing.assert_close(fwd.float(), d / d.norm())


def test_procedural_town_is_deterministic_and_renderable():
    a, b = procedural_town(0), procedural_town(0)
    assert torch.equal(a.vertices, b.vertices) and a.num_faces > 100
    assert not torch.equal(procedural_town(1).vertices, a.vertices)


def test_one_arc_of_the_bundled_street_in_the_official_layout(tmp_path):
    cams = _street(46)
    ticks = []
    arcs = preprocess_arcs(procedural_town(), cams, TINY, generator=torch.Generator().manual_seed(0),
                           callback=lambda d, t: ticks.append((d, t)))
    assert ticks[-1][0] == ticks[-1][1] == 46 + 12
    (arc,) = arcs
    assert arc.hed.shape == (46, 18, 27, 3) and arc.hed_frames == tuple(range(1, 47))
    assert list(arc.corres_frames) == [4, 8, 12, 16, 19, 23, 27, 31, 34, 38, 42, 46]
    assert arc.corres.shape == (12, 12, 18, 3) and arc.noises.shape == (13, 6, 9, 4)
    # consecutive sampled frames overlap a lot; the end frame (the street end) sees part of the start
    x, y, valid = decode_correspondence(arc.corres[0])
    assert float(valid.float().mean()) > 0.5
    assert float(arc.hed.max()) > 0.9 and float(arc.hed.mean()) < 0.5
    write_arcs(tmp_path / "scene", arcs)
    back = read_arcs(tmp_path / "scene")[0]
    assert torch.equal(back.corres, arc.corres) and torch.equal(back.noises, arc.noises)


def test_paths_must_hold_whole_arcs():
    with pytest.raises(ValueError, match="45·k \\+ 1"):
        preprocess_arcs(procedural_town(), _street(50), TINY)


def test_equirect_edges_of_the_street():
    cams = _street(2).select([0])
    e = equirect_edges(procedural_town(), cams, (32, 64))
    assert e.shape == (1, 32, 64, 3) and float(e.max()) > 0.5
