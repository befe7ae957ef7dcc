"""Training batches: random matrices from a folder of 360° videos, encoded on the fly (VideoPanda §3.2).

:class:`MatrixSource` draws a plan (:func:`.data.plan_sample`), renders the views, encodes
them with the caller's VAE callable, builds the regime's mask (dropped with ``cond_drop``
for CFG), the noise-augmentation sigma of the carried row, the caption embedding (dropped
with ``text_drop``) and the rays.  Randomness: the source's own generator, or one passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .adapter import cell_sigmas, rig_rays
from .data import Clip, MatrixPlan, plan_sample, read_equirect_frames, regime_mask, render_views, subrig
from .train_config import NOISE_AUG_DEFAULT, TrainConfig

__all__ = ["Batch", "MatrixSource", "Encode", "TextEncode"]

Encode = Callable[[Tensor], Tensor]  # (V, 3, N, S, S) in [-1, 1] -> (V, C, T, S/8, S/8) sampler latents
TextEncode = Callable[[str], Tensor]  # caption -> (L, D) embedding ("" = the empty prompt)


@dataclass
class Batch:
    """One matrix: latents ``(V, C, T, h, w)``, caption embedding ``(1, L, D)``, mask
    ``(V, T)``, conditioning-sigma ``(V, T)`` and rays ``(V, R, h, w)``."""

    latents: Tensor
    text: Tensor
    mask: Tensor
    cell_sigma: Tensor
    rays: Tensor
    plan: MatrixPlan


class MatrixSource:
    """Random matrices from a clip folder (:mod:`.data`), encoded on the fly."""

    def __init__(self, clips: list[Clip], clip_lengths: list[int], rig, config: TrainConfig, encode: Encode,
                 text_encode: TextEncode, ray_encoding: str, *, seed: int, cached_clips: int = 0):
        self.clips, self.lengths, self.rig, self.config = clips, clip_lengths, rig, config
        self.encode, self.text_encode, self.ray_encoding = encode, text_encode, ray_encoding
        self.rng = torch.Generator().manual_seed(seed)
        self.cached_clips = cached_clips
        self._text: dict[str, Tensor] = {}
        self._frames: dict[int, np.ndarray] = {}  # decoded clips, most recent last (cached_clips of them)

    def frames(self, clip: int, indices: tuple[int, ...]) -> np.ndarray:
        """Frames of a clip; whole clips stay decoded in memory when ``cached_clips`` > 0."""
        if self.cached_clips <= 0:
            return read_equirect_frames(self.clips[clip].path, list(indices))
        if clip not in self._frames:
            self._frames[clip] = read_equirect_frames(self.clips[clip].path, list(range(self.lengths[clip])))
            while len(self._frames) > self.cached_clips:
                self._frames.pop(next(iter(self._frames)))
        else:
            self._frames[clip] = self._frames.pop(clip)
        return self._frames[clip][list(indices)]

    def text(self, caption: str) -> Tensor:
        if caption not in self._text:
            self._text[caption] = self.text_encode(caption).detach().float().cpu()
        return self._text[caption]

    def batch(self, matrix: tuple[int, int], *, regime: str | None = None, train: bool = True,
              rng: torch.Generator | None = None) -> Batch:
        """One matrix.  regime: fixed instead of drawn; train=False: no dropout and the default
        noise-augmentation sigma (previews); rng: draw from it instead of the source's own."""
        cfg = self.config
        rng = self.rng if rng is None else rng
        plan = plan_sample(rng, self.lengths, matrix, self.rig, frame_stride=cfg.frame_stride,
                           regime_weights=cfg.regime_weights, regime=regime)
        rig = subrig(self.rig, plan.views, plan.yaw, cfg.view_size)
        frames = self.frames(plan.clip, plan.frames)
        with torch.no_grad():
            latents = self.encode(render_views(frames, rig)).float().cpu()[:, :, plan.skip :]
        v, _, t, h, w = latents.shape
        if (v, t) != matrix:
            raise ValueError(f"encode returned {v} views x {t} latent frames for a {matrix} matrix")
        mask = regime_mask(plan.regime, v, t, plan.column)
        caption = self.clips[plan.clip].caption
        if train and float(torch.rand((), generator=rng)) < cfg.cond_drop:
            mask = torch.zeros_like(mask)
        if train and float(torch.rand((), generator=rng)) < cfg.text_drop:
            caption = ""
        sigma_row = float(torch.rand((), generator=rng)) * cfg.noise_aug_max if train else NOISE_AUG_DEFAULT
        return Batch(latents, self.text(caption)[None], mask, cell_sigmas(mask, sigma_row),
                     rig_rays(rig, (h, w), self.ray_encoding), plan)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            k = int(torch.randint(len(self.config.matrices), (1,), generator=self.rng))
            yield self.batch(self.config.matrices[k])
