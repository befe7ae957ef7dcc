"""The official arc folder layout: frame plans, reading the official sample, writing it back."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

from pano360.pipelines.videofrom3d.arcs import (
    Arc,
    arc_count,
    arc_frame_range,
    read_arcs,
    resample_hed,
    sampled_offsets,
    write_arcs,
)

# The official sample is not redistributable (VideoFrom3D has no licence file): the test reads a
# fetched copy of ant-arktis/VideoFrom3D's assets/sampleA when one is present and skips otherwise.
SAMPLE_CANDIDATES = [os.environ.get("PANO360_VF3D_SAMPLEA", ""), "/work/scratch/vf3d/VideoFrom3D/assets/sampleA"]
SAMPLE = next((pathlib.Path(p) for p in SAMPLE_CANDIDATES if p and os.path.isdir(p)), None)

# File numbers of ant-arktis/VideoFrom3D assets/sampleA/arc0/corres/*.png and arc1/corres/*.png.
OFFICIAL_ARC0_CORRES = [4, 8, 12, 16, 19, 23, 27, 31, 34, 38, 42, 46]
OFFICIAL_ARC1_CORRES = [49, 53, 57, 61, 64, 68, 72, 76, 79, 83, 87, 91]


def test_sampled_frames_match_the_official_correspondence_numbering():
    offsets = sampled_offsets()
    assert offsets[0] == 0 and len(offsets) == 13
    assert [o + 1 for o in offsets[1:]] == OFFICIAL_ARC0_CORRES
    assert [arc_frame_range(1)[o] + 1 for o in offsets[1:]] == OFFICIAL_ARC1_CORRES


def test_arc_count_needs_shared_boundaries():
    assert arc_count(46) == 1 and arc_count(136) == 3
    with pytest.raises(ValueError, match="45·k \\+ 1"):
        arc_count(100)
    assert list(arc_frame_range(2))[:2] == [90, 91] and len(arc_frame_range(2)) == 46


# Outputs of rp.resize_list (rp 0.1.1428, run by hand; its docstring's first example, [0, 2, 4, 6, 9],
# disagrees with its own code).
RP_RESIZE_LIST = {
    (10, 5): [0, 2, 4, 7, 9],
    (5, 10): [0, 0, 1, 1, 2, 2, 3, 3, 4, 4],
    (50, 46): [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
               29, 30, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49],
}


def test_resample_hed_is_rp_resize_list():
    for (n, length), expect in RP_RESIZE_LIST.items():
        assert resample_hed(torch.arange(n), length).tolist() == expect
    assert resample_hed(torch.arange(46), 46).tolist() == list(range(46))


def _synthetic_arc(seed: int) -> Arc:
    g = torch.Generator().manual_seed(seed)
    hed = torch.randint(0, 256, (3, 6, 9, 3), generator=g).float() / 255
    code = torch.randint(0, 65536, (2, 4, 5, 3), generator=g).int()
    end = torch.randint(0, 65536, (4, 5, 3), generator=g).int()
    noises = torch.randn(13, 2, 3, 16, generator=g)
    return Arc(hed, (1, 2, 3), code, (2, 3), end, noises)


def test_write_then_read_round_trips_exactly(tmp_path):
    arcs = [_synthetic_arc(0), _synthetic_arc(1)]
    write_arcs(tmp_path / "scene", arcs)
    back = read_arcs(tmp_path / "scene")
    assert len(back) == 2
    for a, b in zip(arcs, back):
        assert torch.equal(a.hed, b.hed) and a.hed_frames == b.hed_frames
        assert torch.equal(a.corres, b.corres) and a.corres_frames == b.corres_frames
        assert torch.equal(a.corres_end, b.corres_end) and torch.equal(a.noises, b.noises)
    with pytest.raises(FileExistsError):
        write_arcs(tmp_path / "scene", arcs)


def test_failed_write_leaves_nothing(tmp_path):
    bad = Arc(torch.zeros(1, 4, 4, 3), (1,), torch.full((1, 4, 4, 3), 70000, dtype=torch.int32), (1,))
    with pytest.raises(ValueError):
        write_arcs(tmp_path / "scene", [bad])
    assert os.listdir(tmp_path) == []


def test_missing_layout_is_named(tmp_path):
    with pytest.raises(ValueError, match="no arc0"):
        read_arcs(tmp_path)
    (tmp_path / "arc0").mkdir()
    with pytest.raises(ValueError, match="hed"):
        read_arcs(tmp_path)


@pytest.mark.skipif(SAMPLE is None, reason="no fetched copy of VideoFrom3D's assets/sampleA (not redistributable)")
def test_official_sample_reads_back_unchanged(tmp_path):
    import cv2
    from PIL import Image

    arcs = read_arcs(SAMPLE)
    assert len(arcs) == 3
    assert list(arcs[0].corres_frames) == OFFICIAL_ARC0_CORRES
    assert list(arcs[1].corres_frames) == OFFICIAL_ARC1_CORRES
    for k, arc in enumerate(arcs):
        assert arc.hed.shape == (46, 720, 1080, 3)
        assert arc.hed_frames == tuple(n + 1 for n in arc_frame_range(k))
        assert arc.corres.shape == (12, 240, 360, 3) and arc.corres_end.shape == (240, 360, 3)
        # the decoded values are the files' own (OpenCV's 16-bit reader, PIL for 8-bit)
        name = f"{arc.corres_frames[5]:04d}.png"
        raw = cv2.imread(str(SAMPLE / f"arc{k}" / "corres" / name), cv2.IMREAD_UNCHANGED)[..., ::-1]
        assert np.array_equal(arc.corres[5].numpy(), raw.astype(np.int32))
        ref = np.array(Image.open(SAMPLE / f"arc{k}" / "hed" / f"{arc.hed_frames[7]:04d}.png").convert("RGB"))
        assert np.array_equal((arc.hed[7] * 255).round().byte().numpy(), ref)
    # arc0's corres_end is empty in the official sample, arc2's barely valid (spec §2f)
    assert int(arcs[0].corres_end[..., 2].max()) == 0
    assert 0 < float((arcs[2].corres_end[..., 2] >= 100).float().mean()) < 0.01
    # and writing them out reproduces the same pixels
    subset = [Arc(a.hed[:2], a.hed_frames[:2], a.corres[:2], a.corres_frames[:2], a.corres_end) for a in arcs]
    write_arcs(tmp_path / "copy", subset)
    for a, b in zip(subset, read_arcs(tmp_path / "copy")):
        assert torch.equal(a.hed, b.hed) and torch.equal(a.corres, b.corres) and torch.equal(a.corres_end, b.corres_end)
