"""The save nodes show the seam and pole scores of what they save (and a sampler's) in
their UI text, on both host versions."""

from __future__ import annotations

import inspect
import math

import pytest
import torch


def _clone(node):
    """The executor's class clone of a V3 node (0.33 takes v3 data, 0.3.64 hidden inputs)."""
    params = inspect.signature(node.PREPARE_CLASS_CLONE).parameters
    return node.PREPARE_CLASS_CLONE({"hidden_inputs": {}} if "v3_data" in params else {})


def _panorama(h=32, seam=0.0):
    """A smooth equirect (a function of the direction, docs/conventions.md) + a seam of size `seam`."""
    w = 2 * h
    lon = ((torch.arange(w) + 0.5) / w - 0.5) * 2 * math.pi
    lat = (0.5 - (torch.arange(h) + 0.5) / h) * math.pi
    lat, lon = torch.meshgrid(lat, lon, indexing="ij")
    x, y, z = lat.cos() * lon.sin(), lat.sin(), lat.cos() * lon.cos()
    img = torch.stack([0.5 + 0.3 * x, 0.5 + 0.3 * y, 0.5 + 0.2 * z * x], -1)
    return (img + seam * torch.arange(w).reshape(1, w, 1) / w).clamp(0, 1)[None]


def test_save_360_image_shows_whether_the_result_is_seamless(comfy_in_process):
    from pano360.metrics import PanoramaScores
    from pano360.nodes._common import NodeInputError
    from pano360.nodes.output import Pano360Save360Image

    node = _clone(Pano360Save360Image)
    common = dict(format="jpeg", jpeg_quality=90, initial_yaw=0.0, filename_prefix="Pano360/scores")
    clean = node.execute(images=_panorama(), **common).ui["text"][0]
    assert clean.startswith("saved: seam") and "(seamless" in clean and "smooth" in clean, clean
    seamed = node.execute(images=_panorama(seam=0.3), **common).ui["text"][0]
    assert "VISIBLE SEAM" in seamed, seamed
    sampler = PanoramaScores(1.02, 0.01, 0.02, 0.03)
    both = node.execute(images=_panorama(), metrics=sampler, **common).ui["text"][0]
    assert both.splitlines()[1] == "sampler (latent): " + sampler.text()
    with pytest.raises(NodeInputError, match="metrics"):
        node.execute(images=_panorama(), metrics="nope", **common)


def test_save_360_video_scores_the_left_eye_of_stereo_frames(comfy_in_process):
    from pano360.nodes.output import Pano360Save360Video

    node = _clone(Pano360Save360Video)
    eye = _panorama(16).expand(3, -1, -1, -1)
    frames = torch.cat([eye, torch.rand(3, 16, 32, 3)], dim=1)  # top-bottom: a clean left eye, a noisy right one
    text = node.execute(images=frames, fps=8.0, crf=30, stereo_mode="top-bottom",
                        filename_prefix="Pano360/scores").ui["text"][0]
    assert "(seamless" in text and "smooth" in text, text
