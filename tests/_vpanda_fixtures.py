"""Fixtures for the VideoPanda training tests: procedural 360° videos and tiny stand-in coders.

The videos are the demo's default panorama turning in time (``pipelines/demo.py
default_panorama``), with a caption each.  :func:`patch_encode` stands in for Wan's VAE
where a test needs speed (8x8 average pooling, Wan's causal 4x temporal grouping, a fixed
3 -> 16 channel map); the end-to-end CLI test uses a tiny random ``AutoencoderKLWan``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PANORAMA_HEIGHT = 64
VIDEO_FRAMES = 72
TEXT_TOKENS = 4


def write_turning_panoramas(folder: Path, count: int = 2, frames: int = VIDEO_FRAMES) -> Path:
    """``count`` equirect videos ``(frames, 64, 128)``: the default panorama turning
    ``3 + k`` pixels per frame, captions ``clip<k>.txt``."""
    from pano360.app.demo import default_panorama
    from pano360.media.video import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    pano = (default_panorama(PANORAMA_HEIGHT) * 255).round().astype(np.uint8)
    for k in range(count):
        video = np.stack([np.roll(pano, shift=(3 + k) * i, axis=1) for i in range(frames)])
        write_mp4(video, folder / f"clip{k}.mp4", fps=8)
        (folder / f"clip{k}.txt").write_text(f"a panorama turning at speed {k}", encoding="utf-8")
    return folder


_MIX = torch.linspace(-2.0, 2.0, 48).reshape(16, 3)


def patch_encode(video: torch.Tensor) -> torch.Tensor:
    """``(V, 3, N, S, S)`` -> ``(V, 16, (N - 1) / 4 + 1, S / 8, S / 8)``."""
    v, c, n, h, w = video.shape
    t = (n - 1) // 4 + 1
    rest = video[:, :, 1:].reshape(v, c, t - 1, 4, h, w).mean(3)
    x = torch.nn.functional.avg_pool3d(torch.cat([video[:, :, :1], rest], 2), (1, 8, 8))
    return torch.einsum("oc,vcthw->vothw", _MIX, x)


def patch_decode(latents: torch.Tensor) -> torch.Tensor:
    """A rough inverse of :func:`patch_encode` (least squares, nearest upsampling)."""
    x = torch.einsum("co,vothw->vcthw", torch.linalg.pinv(_MIX), latents)
    x = x.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)
    return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], 2).clamp(-1, 1)


def text_encode(caption: str, dim: int = 24) -> torch.Tensor:
    """A deterministic random embedding per caption ``(4, dim)`` (the tiny text encoder)."""
    g = torch.Generator().manual_seed(sum(ord(ch) * (i + 1) for i, ch in enumerate(caption)) + 1)
    return torch.randn(TEXT_TOKENS, dim, generator=g)
