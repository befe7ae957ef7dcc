"""Spherical MP4 writer: every field read back with our own box parser, and checked
independently with the bundled ffmpeg (decoding and its own spherical side-data parser)."""

from __future__ import annotations

import os
import re
import struct
import subprocess

import numpy as np
import pytest

from pano360.media import spherical_mp4 as sm
from pano360.media.spherical_mp4 import (
    Mp4FormatError,
    SphericalMetadata,
    chunk_offsets,
    inject_spherical,
    read_spherical,
    save_360_video,
    top_level_boxes,
    walk_boxes,
)
from pano360.media.video import write_mp4

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

T, H, W, FPS = 6, 32, 64, 12
# H.264 at crf 10 on flat colour blocks: decoded values stay within a few levels.
DECODE_TOL = 6
# 16.16 fixed point resolution of prhd (V2 RFC).
POSE_TOL = 1 / 65536


def _frames(h=H, w=W, t=T) -> np.ndarray:
    """Left half red, right half blue, brightness ramps with the frame index."""
    f = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        f[i, :, : w // 2, 0] = 100 + 20 * i
        f[i, :, w // 2 :, 2] = 200
    return f


def _ffmpeg_info(path) -> str:
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def _decode(path, w, h) -> np.ndarray:
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="module")
def raw_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.mp4"
    write_mp4(_frames(), path, FPS, 10)
    return path


def _expected_v1(stereo: str, w=W, h=H) -> dict:
    eye_w = w // 2 if stereo == "left-right" else w
    eye_h = h // 2 if stereo == "top-bottom" else h
    return {
        "Spherical": True, "Stitched": True, "StitchingSoftware": "Pano360",
        "ProjectionType": "equirectangular", "StereoMode": stereo,
        "InitialViewHeadingDegrees": 0, "InitialViewPitchDegrees": 0, "InitialViewRollDegrees": 0,
        "FullPanoWidthPixels": eye_w, "FullPanoHeightPixels": eye_h,
        "CroppedAreaImageWidthPixels": eye_w, "CroppedAreaImageHeightPixels": eye_h,
        "CroppedAreaLeftPixels": 0, "CroppedAreaTopPixels": 0,
    }


# ffmpeg's names for st3d stereo modes (libavutil/stereo3d.c).
FFMPEG_STEREO = {"mono": "2D", "top-bottom": "top and bottom", "left-right": "side by side"}
ST3D = {"mono": 0, "top-bottom": 1, "left-right": 2}


@pytest.mark.parametrize("stereo", ["mono", "top-bottom", "left-right"])
def test_saved_video_carries_every_v1_and_v2_field(tmp_path, stereo):
    path = tmp_path / "pano.mp4"
    meta = SphericalMetadata() if stereo == "mono" else SphericalMetadata(stereo_mode=stereo)
    save_360_video(_frames(), path, FPS, 10, meta)
    walk_boxes(path)  # raises if any enclosing size is wrong
    (track,) = read_spherical(path)
    assert (track["codec"], track["width"], track["height"]) == ("avc1", W, H)
    assert track["v1"] == _expected_v1(stereo)
    v2 = track["v2"]
    assert v2["st3d"] == {"version": 0, "flags": 0, "stereo_mode": ST3D[stereo], "stereo_mode_name": stereo}
    assert v2["svhd"] == {"version": 0, "flags": 0, "metadata_source": "Pano360"}
    assert v2["prhd"] == {"version": 0, "flags": 0, "pose_yaw_deg": 0.0, "pose_pitch_deg": 0.0, "pose_roll_deg": 0.0}
    assert v2["equi"] == {"version": 0, "flags": 0, "bounds_top": 0.0, "bounds_bottom": 0.0,
                          "bounds_left": 0.0, "bounds_right": 0.0}
    assert v2["sv3d_children"] == ["svhd", "proj"] and v2["proj_children"] == ["prhd", "equi"]
    # V2 RFC: after the codec configuration box, st3d before sv3d, before optional boxes.
    children = v2["sample_entry_children"]
    assert children[:3] == ["avcC", "st3d", "sv3d"]
    # ffmpeg's own MP4 demuxer reports the side data.
    info = _ffmpeg_info(path)
    assert re.search(r"Spherical Mapping: equirectangular", info), info
    assert f"Stereo 3D: {FFMPEG_STEREO[stereo]}" in info, info


def test_bundled_ffmpeg_decodes_frames_size_fps_and_colours(tmp_path):
    path = tmp_path / "pano.mp4"
    frames = _frames()
    save_360_video(frames, path, FPS, 10)
    info = _ffmpeg_info(path)
    stream = re.search(r"Video: h264.*?yuv420p.*?, (\d+)x(\d+).*?, ([\d.]+) fps", info)
    assert stream, info
    assert (int(stream[1]), int(stream[2]), float(stream[3])) == (W, H, FPS)
    decoded = _decode(path, W, H)
    assert decoded.shape == (T, H, W, 3)
    # Compare block interiors (chroma subsampling blurs the middle edge).
    inner = (slice(None), slice(4, -4), slice(4, W // 2 - 4))
    assert np.abs(decoded[inner].astype(int) - frames[inner].astype(int)).max() <= DECODE_TOL
    inner = (slice(None), slice(4, -4), slice(W // 2 + 4, -4))
    assert np.abs(decoded[inner].astype(int) - frames[inner].astype(int)).max() <= DECODE_TOL


def test_v1_alone_is_recognised_by_ffmpeg(tmp_path, raw_mp4):
    out = tmp_path / "v1.mp4"
    inject_spherical(raw_mp4, out, SphericalMetadata(stereo_mode="top-bottom"), v2=False)
    (track,) = read_spherical(out)
    assert track["v2"] is None and track["v1"] == _expected_v1("top-bottom")
    info = _ffmpeg_info(out)
    assert "Spherical Mapping: equirectangular" in info and "Stereo 3D: top and bottom" in info, info


def test_v2_alone_has_no_uuid_box(tmp_path, raw_mp4):
    out = tmp_path / "v2.mp4"
    inject_spherical(raw_mp4, out, v1=False)
    (track,) = read_spherical(out)
    assert track["v1"] is None and track["v2"]["st3d"]["stereo_mode"] == 0
    assert not any(p.endswith("/uuid") for p, _ in walk_boxes(out))


def test_pose_and_crop_are_fixed_point_encoded(tmp_path, raw_mp4):
    out = tmp_path / "pose.mp4"
    meta = SphericalMetadata(pose_yaw_deg=90.5, pose_pitch_deg=-10.25, pose_roll_deg=3.0,
                             crop_top=0.25, crop_bottom=0.125, initial_view_heading_deg=45)
    inject_spherical(raw_mp4, out, meta)
    (track,) = read_spherical(out)
    prhd, equi = track["v2"]["prhd"], track["v2"]["equi"]
    assert prhd["pose_yaw_deg"] == pytest.approx(90.5, abs=POSE_TOL)
    assert prhd["pose_pitch_deg"] == pytest.approx(-10.25, abs=POSE_TOL)
    assert prhd["pose_roll_deg"] == pytest.approx(3.0, abs=POSE_TOL)
    assert (equi["bounds_top"], equi["bounds_bottom"], equi["bounds_left"]) == (0.25, 0.125, 0.0)
    assert track["v1"]["InitialViewHeadingDegrees"] == 45
    # ffmpeg prints the pose as yaw/pitch/roll.
    assert "(90.500000/-10.250000/3.000000)" in _ffmpeg_info(out)


def _remux(src, dst, faststart: bool):
    flags = ["-movflags", "+faststart"] if faststart else []
    subprocess.run([FFMPEG, "-y", "-v", "error", "-i", str(src), "-c", "copy", *flags, str(dst)], check=True)


def test_fast_start_file_gets_chunk_offsets_shifted(tmp_path, raw_mp4):
    faststart = tmp_path / "fs.mp4"
    _remux(raw_mp4, faststart, faststart=True)
    before = top_level_boxes(faststart)
    assert [b[0] for b in before].index("moov") < [b[0] for b in before].index("mdat")
    out = tmp_path / "fs_tagged.mp4"
    inject_spherical(faststart, out)
    after = top_level_boxes(out)
    growth = dict((t, s) for t, _, s in after)["moov"] - dict((t, s) for t, _, s in before)["moov"]
    assert growth > 0
    old, new = chunk_offsets(faststart), chunk_offsets(out)
    assert [[o + growth for o in track] for track in old] == new
    # The bytes at each new offset are the bytes that were at the old one.
    with open(faststart, "rb") as a, open(out, "rb") as b:
        for o_old, o_new in zip(old[0], new[0]):
            a.seek(o_old), b.seek(o_new)
            assert a.read(64) == b.read(64)
    np.testing.assert_array_equal(_decode(out, W, H), _decode(faststart, W, H))


def test_moov_at_end_keeps_chunk_offsets(tmp_path, raw_mp4):
    moov_last = tmp_path / "moov_last.mp4"
    _remux(raw_mp4, moov_last, faststart=False)
    names = [b[0] for b in top_level_boxes(moov_last)]
    assert names.index("mdat") < names.index("moov")
    out = tmp_path / "tagged.mp4"
    inject_spherical(moov_last, out)
    assert chunk_offsets(out) == chunk_offsets(moov_last)
    np.testing.assert_array_equal(_decode(out, W, H), _decode(moov_last, W, H))


def test_reinjection_replaces_instead_of_stacking(tmp_path, raw_mp4):
    once, twice = tmp_path / "once.mp4", tmp_path / "twice.mp4"
    inject_spherical(raw_mp4, once)
    inject_spherical(once, twice, SphericalMetadata(stereo_mode="left-right"))
    paths = [p for p, _ in walk_boxes(twice)]
    assert sum(p.endswith("/sv3d") for p in paths) == 1
    assert sum(p.endswith("/st3d") for p in paths) == 1
    assert sum(p.endswith("trak/uuid") for p in paths) == 1
    assert read_spherical(twice)[0]["v1"]["StereoMode"] == "left-right"
    again = tmp_path / "again.mp4"
    inject_spherical(once, again)
    assert again.read_bytes() == once.read_bytes()


def test_stco_that_would_overflow_becomes_co64():
    # A tiny synthetic moov: one trak whose stbl holds a stco near 2**32.
    stco = sm._Box(b"stco", payload=struct.pack(">IIII", 0, 2, 100, 0xFFFFFFF0))
    stbl = sm._Box(b"stbl", children=[stco])
    moov = sm._Box(b"moov", children=[sm._Box(b"trak", children=[
        sm._Box(b"mdia", children=[sm._Box(b"minf", children=[stbl])])])])
    sm._shift_chunk_offsets(moov, after=1000, delta=0x20)
    (box,) = moov.find(b"trak", b"mdia", b"minf", b"stbl").children
    assert box.type == b"co64"
    assert struct.unpack(">IIQQ", box.payload) == (0, 2, 100, 0xFFFFFFF0 + 0x20)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "pano.mp4"

    def broken_inject(*args, **kwargs):
        raise Mp4FormatError("forced failure")

    monkeypatch.setattr(sm, "inject_spherical", broken_inject)
    with pytest.raises(Mp4FormatError, match="forced failure"):
        save_360_video(_frames(), target, FPS, 20)
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_no_file(tmp_path, monkeypatch):
    """ffmpeg dying in the middle of the frames: no partial MP4, no temporary file."""
    real = imageio_ffmpeg.write_frames

    def dying_writer(*args, **kwargs):
        gen = real(*args, **kwargs)
        gen.send(None)
        sent = 0
        while True:
            frame = yield
            if sent == 2:
                gen.close()
                raise OSError("ffmpeg died")
            gen.send(frame)
            sent += 1

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", dying_writer)
    with pytest.raises(OSError, match="ffmpeg died"):
        save_360_video(_frames(), tmp_path / "pano.mp4", FPS, 20)
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="even width and height"):
        save_360_video(_frames(h=31, w=62), tmp_path / "odd.mp4", FPS, 20)
    assert list(tmp_path.iterdir()) == []


def test_not_an_mp4_is_named_in_the_error(tmp_path):
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00")
    with pytest.raises(Mp4FormatError, match="moov"):
        inject_spherical(bogus, tmp_path / "out.mp4")
    bogus.write_bytes(b"\x00\x00\x01\x00ftyp")
    with pytest.raises(Mp4FormatError, match="size"):
        read_spherical(bogus)


def test_metadata_rejects_unknown_stereo_mode_and_bad_pose():
    with pytest.raises(ValueError, match="stereo_mode"):
        SphericalMetadata(stereo_mode="side-by-side")
    with pytest.raises(ValueError, match="pose_pitch_deg"):
        SphericalMetadata(pose_pitch_deg=120)


def test_interrupt_from_the_progress_callback_leaves_no_file(tmp_path):
    class Interrupted(Exception):
        pass

    seen = []

    def callback(done, total):
        seen.append(done)
        if done == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        save_360_video(_frames(), tmp_path / "pano.mp4", FPS, 20, callback=callback)
    assert seen == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []


def test_comfyui_metadata_tags_are_read_back_by_ffmpeg_beside_the_spherical_boxes(tmp_path):
    """prompt/workflow/marker JSON as MP4 tags in ffmpeg's mdta layout (ComfyUI's SaveVideo
    writes them the same way through PyAV): ffmpeg's own metadata reader returns them."""
    import json

    tags = {"prompt": json.dumps({"1": {"class_type": "X", "inputs": {"text": "a=b; c#d"}}}),
            "workflow": json.dumps({"nodes": [{"id": 1}], "links": []}),
            "pano360_job": json.dumps({"marker": "pano360-batch-output:0b1f8f1e-7a52-4a4c-9d35-6a6b0e1f2c3d"})}
    path = tmp_path / "pano.mp4"
    save_360_video(_frames(), path, FPS, 10, SphericalMetadata(stereo_mode="top-bottom"), tags=tags)
    walk_boxes(path)
    (track,) = read_spherical(path)
    assert track["v2"]["st3d"]["stereo_mode"] == 1
    dump = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout
    read = {}
    for line in dump.splitlines()[1:]:   # ffmetadata escapes '=', ';', '#', '\\' with a backslash
        key, value = re.split(r"(?<!\\)=", line, maxsplit=1)
        read[key] = re.sub(r"\\(.)", r"\1", value)
    for key, value in tags.items():
        assert json.loads(read[key]) == json.loads(value)
    assert _decode(path, W, H).shape == (T, H, W, 3)
