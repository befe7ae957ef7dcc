"""The command-line main job (``python -m pano360 demo``) and the MP4 writer."""

import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pano360.app import demo
from pano360.media.video import write_mp4

# Round trip of the procedural panorama through videopanda8 at a tiny 64x128 panorama, two
# bilinear resamplings of 1-px lines and labels near the Nyquist limit: measured 0.037 mean
# abs error (0.008 at 256x512); the same stitch misregistered by one pixel scores 0.12.
DEMO_ROUND_TRIP_TOL = 0.05


def _args(tmp_path, **kw):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "demo"), "--size", "64", "--sweep-frames", "6"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_demo_writes_views_stitched_panoramas_and_sweep(tmp_path):
    assert demo.run(_args(tmp_path)) == 0
    out = tmp_path / "demo"
    pano = np.asarray(Image.open(out / "panorama.png"), dtype=np.float64) / 255
    assert pano.shape == (64, 128, 3)
    assert len(list((out / "videopanda8" / "views").glob("view_*.png"))) == 8
    assert len(list((out / "lookbeyond_loop" / "views").glob("view_*.png"))) == 12
    stitched = np.asarray(Image.open(out / "videopanda8" / "stitched.png"), dtype=np.float64) / 255
    coverage = np.asarray(Image.open(out / "videopanda8" / "coverage.png"))
    assert coverage.min() == 255  # videopanda8 covers the whole sphere
    assert np.abs(stitched - pano).mean() < DEMO_ROUND_TRIP_TOL
    loop_cov = np.asarray(Image.open(out / "lookbeyond_loop" / "coverage.png")) > 0
    assert 0.4 < loop_cov.mean() < 0.6  # horizontal 90-degree views: latitudes within about +-45 deg
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "sweep.mp4"))
    meta = reader.__next__()
    frames = list(reader)
    assert meta["size"] == (64, 32) and len(frames) == 6  # 16:9-ish, scaled with --size
    assert not list(out.rglob(".*partial*"))  # nothing half-written left behind


def test_default_panorama_is_oriented_by_the_convention():
    pano = demo.default_panorama(64)
    assert pano.shape == (64, 128, 3) and pano.dtype == np.float32
    # the white meridian marks forward (longitude 0) at the centre columns
    centre = pano[20:44, 63:65].mean()
    assert centre > pano[20:44, 40:50].mean()
    # sky above the horizon is blue, the horizon band is red at 0 deg and green-ish at +120 deg
    assert pano[2, 10, 2] > pano[2, 10, 0]
    row = 32
    assert pano[row, 60, 0] > pano[row, 60, 1]
    col_120 = int((120 / 360 + 0.5) * 128) + 4
    assert pano[row, col_120, 1] > pano[row, col_120, 0]


def test_yaw_sweep_turns_right():
    pano = torch.from_numpy(demo.default_panorama(32)).permute(2, 0, 1)[None]
    frames = demo.sweep_frames(pano, 4, (16, 16))
    assert frames.shape == (4, 3, 16, 16)
    # frame 1 looks at yaw +90: the view centre equals the panorama at column 3W/4
    assert (frames[1, :, 7:9, 7:9].mean((1, 2)) - pano[0, :, 15:17, 47:49].mean((1, 2))).abs().max() < 0.15
    assert not math.isnan(float(frames.sum()))


def test_write_mp4_rejects_bad_input_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"frames: .*even.*15x10"):
        write_mp4(np.zeros((2, 10, 15, 3), np.uint8), tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match=r"frames: expected a uint8"):
        write_mp4(np.zeros((2, 10, 16, 3), np.float32), tmp_path / "float.mp4")
    with pytest.raises(ValueError, match=r"crf: .*60"):
        write_mp4(np.zeros((2, 10, 16, 3), np.uint8), tmp_path / "crf.mp4", crf=60)
    assert not list(tmp_path.iterdir())
    path = write_mp4(np.full((3, 10, 16, 3), 128, np.uint8), tmp_path / "ok.mp4", fps=10)
    assert path.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == ["ok.mp4"]


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"--size: .*63"):
        demo.run(_args(tmp_path, size=63))
    bad = tmp_path / "square.png"
    Image.new("RGB", (32, 32)).save(bad)
    with pytest.raises(ValueError, match=r"--input: .*2:1.*32x32"):
        demo.run(_args(tmp_path, input=bad))
