"""GPano XMP in PNG and JPEG: read back field by field with our own container parser,
and independently with Pillow's readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pano360.media import gpano
from pano360.media.gpano import GPanoFields, read_gpano, read_png_text, save_jpeg, save_png

H, W = 32, 64


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


EXPECTED = {
    "ProjectionType": "equirectangular",
    "UsePanoramaViewer": True,
    "StitchingSoftware": "Pano360",
    "FullPanoWidthPixels": W,
    "FullPanoHeightPixels": H,
    "CroppedAreaImageWidthPixels": W,
    "CroppedAreaImageHeightPixels": H,
    "CroppedAreaLeftPixels": 0,
    "CroppedAreaTopPixels": 0,
    "PoseHeadingDegrees": 0.0,
    "InitialViewHeadingDegrees": 0,
    "InitialViewPitchDegrees": 0,
}


def test_png_has_every_gpano_field_and_keeps_comfy_metadata(tmp_path):
    path = tmp_path / "pano.png"
    prompt = {"1": {"class_type": "Pano360Save360Image", "inputs": {}}}
    workflow = {"nodes": [{"id": 1}], "links": []}
    save_png(_image(), path, GPanoFields(W, H), text={"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)})
    assert read_gpano(path) == EXPECTED
    chunks = read_png_text(path)
    assert json.loads(chunks["prompt"]) == prompt and json.loads(chunks["workflow"]) == workflow
    # Pillow (an independent PNG reader) sees the same chunks and the exact pixels.
    with Image.open(path) as im:
        assert json.loads(im.info["workflow"]) == workflow
        assert "GPano:ProjectionType>equirectangular<" in im.info[gpano.PNG_XMP_KEYWORD]
        np.testing.assert_array_equal(np.asarray(im), _image())


def test_png_xmp_is_an_itxt_chunk(tmp_path):
    path = tmp_path / "pano.png"
    save_png(_image(), path, GPanoFields(W, H))
    data = path.read_bytes()
    kinds = [ctype for ctype, body in gpano._png_chunks(data, "x") if body.startswith(b"XML:com.adobe.xmp\0")]
    assert kinds == [b"iTXt"]


def test_jpeg_has_every_gpano_field_in_app1(tmp_path):
    path = tmp_path / "pano.jpg"
    save_jpeg(_image(), path, GPanoFields(W, H), quality=90)
    assert read_gpano(path) == EXPECTED
    data = path.read_bytes()
    # APP1 XMP right after SOI + JFIF APP0, before the image data.
    assert data[:4] == b"\xff\xd8\xff\xe0"
    app0_len = int.from_bytes(data[4:6], "big")
    assert data[4 + app0_len : 6 + app0_len] == b"\xff\xe1"
    with Image.open(path) as im:
        assert im.size == (W, H)
        assert b"GPano:UsePanoramaViewer>True<" in im.info["xmp"]


def test_initial_heading_wraps_into_compass_degrees(tmp_path):
    path = tmp_path / "pano.png"
    save_png(_image(), path, GPanoFields(W, H, initial_heading_deg=-90, initial_pitch_deg=10.4, pose_heading_deg=30.0))
    fields = read_gpano(path)
    assert fields["InitialViewHeadingDegrees"] == 300  # 30 - 90 mod 360
    assert fields["InitialViewPitchDegrees"] == 10
    assert fields["PoseHeadingDegrees"] == 30.0


def test_failed_png_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(_image(), tmp_path / "pano.png", GPanoFields(W, H))
    with pytest.raises(OSError, match="disk full"):
        save_jpeg(_image(), tmp_path / "pano.jpg", GPanoFields(W, H))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="pose_heading_deg"):
        GPanoFields(W, H, pose_heading_deg=360)
    with pytest.raises(ValueError, match="image must be a uint8"):
        save_png(np.zeros((4, 4), np.float32), "unused.png", GPanoFields(4, 2))
