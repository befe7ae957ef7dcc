"""Argus (Luo et al., ICCV 2025): perspective video -> masked equirect conditioning for SVD.

Facts from Argus's code (``src/pers2equi.py``, ``src/sampling_svd.py``, ``inference.py``):

- Each input frame is placed on the sphere at its camera rotation and FOV; pixels outside its
  footprint are black (Argus: −1 in [−1, 1], i.e. 0 in ComfyUI's 0..1 IMAGE) and the mask says
  which pixels the frame covers.  Argus's angles have the pack's signs (docs/conventions.md), so
  :func:`place_frames_on_sphere` feeds them straight to ``projection.perspective_to_erp``.  Its
  equirect grid differs only in sampling: longitude ``linspace(−π, π, W)`` with both endpoints,
  where the pack uses pixel centres (a sub-pixel stretch; tests/test_argus_placement.py).
- Noise augmentation: Gaussian σ = 0.02 in Argus's [−1, 1] pixel space, only inside the mask,
  before VAE encoding; in 0..1 space that is σ/2 (:func:`noise_augment_inside_mask`).
- Conditioning of the SVD UNet: per frame, the VAE latent of its masked equirect frame
  (unscaled, concatenated to the noisy latent) and one CLIP-ViT-H image token of the
  *perspective* frame (T tokens as cross-attention context); added time ids
  [fps − 1, motion bucket 127, noise_aug]; the unconditional branch has zeros for both.

Host-free: never imports ComfyUI.  The encoders come in as callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...projection import perspective_to_erp
from ...cameras.path import CameraPath

__all__ = [
    "ARGUS_ERP_HW",
    "ARGUS_NOISE_AUG",
    "ARGUS_FPS",
    "ARGUS_MOTION_BUCKET",
    "ArgusConditioning",
    "ARGUS_INPUT_LONG_SIDE",
    "resize_long_side",
    "place_frames_on_sphere",
    "noise_augment_inside_mask",
    "argus_conditioning",
]

ARGUS_ERP_HW = (512, 1024)  # inference resolution, stage-2 training (inference.sh)
ARGUS_NOISE_AUG = 0.02  # noise_aug_strength, in [-1, 1] pixel units (inference.sh)
ARGUS_FPS = 5  # frames sampled at ~5 fps; added time id fps - 1 = 4 (dataset/video_dataset.py)
ARGUS_MOTION_BUCKET = 127  # motion_bucket_id (sampling_svd.py)
ARGUS_INPUT_LONG_SIDE = 512  # calibration_img_size: input frames resized to this long side (inference.py)


def resize_long_side(frames: torch.Tensor, long_side: int = ARGUS_INPUT_LONG_SIDE) -> torch.Tensor:
    """Resize (T, C, h, w) frames so the longer side is ``long_side`` px, keeping the aspect ratio
    (the short side truncated, as ``dataset/video_dataset.py`` does).  Argus resizes with
    cv2 INTER_LINEAR; this uses bilinear with antialiasing, which matches it when enlarging and
    avoids aliasing when shrinking.  ``long_side`` 0 returns the frames unchanged.
    """
    if long_side < 0:
        raise ValueError(f"long_side must be >= 0, got {long_side}")
    h, w = frames.shape[-2:]
    if long_side == 0 or max(h, w) == long_side:
        return frames
    size = (long_side, int(w * long_side / h)) if h >= w else (int(h * long_side / w), long_side)
    return torch.nn.functional.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def place_frames_on_sphere(
    frames: torch.Tensor, path: CameraPath, erp_hw: tuple[int, int] = ARGUS_ERP_HW, mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put each perspective frame on its own equirect canvas.

    frames: (T, C, h, w), 0..1.  path: T poses (radians, pack convention; fov_x horizontal, the
    vertical FOV follows from the frame's aspect ratio, square pixels).
    Returns (erp (T, C, H, W) black outside the footprint, mask (T, 1, H, W), 1 = covered).
    The frames are read with zero padding, as ``pers2equi_batch`` does: within half a pixel of a
    frame's border the canvas blends toward black (docs/conventions.md "Frame borders").
    """
    if frames.ndim != 4:
        raise ValueError(f"frames: expected (T, C, h, w), got {tuple(frames.shape)}")
    if path.num_frames != frames.shape[0]:
        raise ValueError(f"path: {path.num_frames} poses for {frames.shape[0]} frames")
    yaw, pitch, roll, fov = path.tensors(frames.device, frames.dtype)
    erp, weight = perspective_to_erp(frames, yaw, pitch, roll, fov, erp_hw, mode=mode, weight="uniform", padding="zeros")
    mask = (weight > 0).to(frames.dtype)
    return erp * mask, mask


def noise_augment_inside_mask(
    erp: torch.Tensor, mask: torch.Tensor, strength: float = ARGUS_NOISE_AUG, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Argus's conditioning noise: erp + N(0, (strength/2)²) · mask.

    erp: (T, C, H, W) in 0..1; mask: (T, 1, H, W).  ``strength`` is in Argus's [−1, 1] units
    (0.02), hence the /2 in 0..1 units.  Not clamped (Argus does not clamp either).
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    noise = torch.randn(erp.shape, generator=generator, dtype=erp.dtype, device="cpu").to(erp.device)
    return erp + noise * (strength / 2) * mask


@dataclass(frozen=True)
class ArgusConditioning:
    """What the SVD UNet sees, for T frames.

    clip_tokens: (1, T, D) cross-attention context (one image embedding per frame).
    concat_latents: (T, 4, H/8, W/8) unscaled VAE latents of the augmented masked equirect frames.
    fps, motion_bucket_id, augmentation_level: the added time ids (fps − 1 is what SVD embeds).
    """

    clip_tokens: torch.Tensor
    concat_latents: torch.Tensor
    fps: int = ARGUS_FPS
    motion_bucket_id: int = ARGUS_MOTION_BUCKET
    augmentation_level: float = ARGUS_NOISE_AUG

    def unconditional(self) -> "ArgusConditioning":
        """Zeros for CLIP tokens and concat latents, same time ids (Argus's CFG branch)."""
        return ArgusConditioning(
            torch.zeros_like(self.clip_tokens), torch.zeros_like(self.concat_latents),
            self.fps, self.motion_bucket_id, self.augmentation_level,
        )


def argus_conditioning(
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    encode_latent: Callable[[torch.Tensor], torch.Tensor],
    erp: torch.Tensor,
    mask: torch.Tensor,
    frames: torch.Tensor,
    *,
    noise_aug: float = ARGUS_NOISE_AUG,
    fps: int = ARGUS_FPS,
    motion_bucket_id: int = ARGUS_MOTION_BUCKET,
    generator: torch.Generator | None = None,
) -> ArgusConditioning:
    """Build Argus's per-frame conditioning.

    encode_image(frames (T, C, h, w) 0..1) -> (T, D) CLIP image embeddings (Argus resizes
    straight to 224 × 224, no crop).  encode_latent(erp (T, C, H, W) 0..1) -> (T, 4, H/8, W/8).
    erp, mask: from :func:`place_frames_on_sphere`; frames: the perspective frames.
    """
    T = erp.shape[0]
    if mask.shape[0] != T or frames.shape[0] != T:
        raise ValueError(f"erp, mask, frames: frame counts differ ({T}, {mask.shape[0]}, {frames.shape[0]})")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    tokens = encode_image(frames)
    if tokens.ndim != 2 or tokens.shape[0] != T:
        raise ValueError(f"encode_image: expected ({T}, D) embeddings, got {tuple(tokens.shape)}")
    latents = encode_latent(noise_augment_inside_mask(erp, mask, noise_aug, generator))
    if latents.shape[0] != T:
        raise ValueError(f"encode_latent: expected {T} latents, got {tuple(latents.shape)}")
    return ArgusConditioning(tokens.unsqueeze(0), latents, fps, motion_bucket_id, noise_aug)
