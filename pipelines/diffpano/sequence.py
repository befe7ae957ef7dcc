"""Training-free multi-panorama generation: each new panorama holds what earlier ones saw.

DiffPano (Ye et al. 2024) denoises the panoramas of a camera path jointly with a trained
epipolar module.  Without that module, any panorama model can still produce a consistent
sequence the way warp-and-inpaint methods do: panorama 0 is generated freely; for each
next camera the K nearest earlier panoramas are reprojected with their distance maps
(:func:`pano360.projection.epipolar.reproject_equirect`), the content they see is held,
and only the disoccluded rest is generated.  The model, the encoder and the depth source
come in as callables, so one loop serves ComfyUI (VAE, KSampler with a latent noise mask,
MoGe) and the analytic tests.

Shapes: images ``(C, H, W)`` equirect (``W == 2H``), distances ``(1, H, W)`` along the
rays, masks ``(1, H, W)``; cameras as camera-to-world rotations ``(N, 3, 3)`` and
positions ``(N, 3)`` (docs/conventions.md, docs/diffpano.md).  Host-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ...models.diffpano_epipolar import EpipolarViews
from ...projection.epipolar import relative_pose, reproject_equirect

__all__ = [
    "SequenceConfig",
    "HeldView",
    "SequenceResult",
    "previous_references",
    "held_view",
    "latent_keep_mask",
    "fill_holes",
    "fill_background_distance",
    "align_distance_scale",
    "generate_sequence",
    "LatentStepSampler",
    "sphere_distance",
    "depth_source",
    "DEPTH_SOURCES",
]

# SD / SDXL / Flux VAEs downsample by 8 (the latent cell a held pixel block maps onto).
SD_LATENT_FACTOR = 8
# Latent cells the generated (disoccluded) region grows by: a cell next to a hole mixes
# visible and generated content in the VAE and at silhouettes the visibility mask may
# side with either surface by a pixel (projection/epipolar.py).  Design choice.
DILATE_CELLS = 1
# Pull-push pyramid levels of the hole fill (each halves the resolution; 10 covers 1024 rows).
FILL_LEVELS = 10
# Where distance maps come from (:func:`depth_source`).
DEPTH_SOURCES = ("propagate", "estimate", "constant")


@dataclass(frozen=True)
class SequenceConfig:
    """num_refs: earlier panoramas reprojected into each new one (nearest cameras first; a
    pixel takes the first that sees it).  latent_factor: pixels per latent cell (1 when the
    sampler works on pixels).  dilate_cells: cells the generated region grows by."""

    num_refs: int = 2
    latent_factor: int = SD_LATENT_FACTOR
    dilate_cells: int = DILATE_CELLS

    def __post_init__(self) -> None:
        for name, low in (("num_refs", 1), ("latent_factor", 1), ("dilate_cells", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class HeldView:
    """What the sampler needs for panorama ``index``.

    image: ``(C, H, W)`` the reprojected content, holes filled smoothly (for a VAE encoder;
    only the held region matters).  visible: ``(1, H, W)`` bool, pixels seen by a reference.
    keep: ``(1, h, w)`` float at latent resolution, 1 = hold this cell (ComfyUI's
    ``noise_mask`` is ``1 - keep``).  distance: ``(1, H, W)`` reprojected distances, holes
    filled from the background.  references: the earlier panoramas used, nearest first.
    """

    index: int
    image: Tensor
    visible: Tensor
    keep: Tensor
    distance: Tensor
    references: tuple[int, ...]


@dataclass(frozen=True)
class SequenceResult:
    """images ``(N, C, H, W)``, distances ``(N, 1, H, W)``, held ``(N, 1, H, W)`` bool (the
    pixels each panorama took from earlier ones; all False for panorama 0)."""

    images: Tensor
    distances: Tensor
    held: Tensor


Sampler = Callable[[int, "HeldView | None"], Tensor]  # (index, held or None for the first) -> (C, H, W)
DepthSource = Callable[[int, Tensor, "HeldView | None"], Tensor]  # (index, image, held) -> (1, H, W)
ProgressCallback = Callable[[int, int], None]


def previous_references(positions: Tensor, index: int, num_refs: int) -> tuple[int, ...]:
    """The ``num_refs`` earlier panoramas closest to camera ``index`` (ties to the later one)."""
    if index < 1:
        return ()
    d = (positions[:index] - positions[index]).norm(dim=-1)
    order = sorted(range(index), key=lambda j: (float(d[j]), -j))
    return tuple(order[:num_refs])


def fill_holes(image: Tensor, known: Tensor, levels: int = FILL_LEVELS) -> Tensor:
    """Fill unknown pixels smoothly from known ones (pull-push: average down a pyramid of
    known pixels, then fill each level's holes from the coarser one).

    image: ``(C, H, W)``; known: ``(1, H, W)`` bool.  Known pixels are returned unchanged;
    an image with no known pixel comes back as zeros.  The seam is not special (a fill only
    has to be plausible for the encoder).
    """
    w = known.to(image.dtype)
    pyramid = [(image * w, w)]
    for _ in range(levels):
        num, den = pyramid[-1]
        if min(num.shape[-2:]) < 2:
            break
        pyramid.append((F.avg_pool2d(num[None], 2)[0], F.avg_pool2d(den[None], 2)[0]))
    num, den = pyramid[-1]
    filled = num / den.clamp_min(1e-12)
    for num, den in reversed(pyramid[:-1]):
        up = F.interpolate(filled[None], size=num.shape[-2:], mode="bilinear", align_corners=False)[0]
        own = num / den.clamp_min(1e-12)
        filled = torch.where(den > 0, own, up)
    return torch.where(known, image, filled)


def fill_background_distance(distance: Tensor, known: Tensor, max_steps: int = 64) -> Tensor:
    """Fill unknown distances from the far side: a disocclusion reveals what lies behind
    the occluder, so every unknown pixel takes the largest known distance within
    ``max_steps`` pixels (a max-dilation inside the hole, seam-wrapped 3x3 steps).  What no
    known pixel reaches takes the largest known distance.  distance, known: ``(1, H, W)``."""
    if not bool(known.any()):
        raise ValueError("distance: no known pixel to grow from")
    hole = ~known
    z = torch.where(known, distance, torch.full_like(distance, -math.inf))
    for _ in range(max_steps):
        padded = F.pad(torch.cat([z[..., -1:], z, z[..., :1]], dim=-1)[None], (0, 0, 1, 1), value=-math.inf)
        grown = torch.where(hole, torch.maximum(z, F.max_pool2d(padded, 3, stride=1)[0]), z)
        if torch.equal(grown, z):
            break
        z = grown
    return torch.where(torch.isinf(z), distance[known].max(), z)


def latent_keep_mask(visible: Tensor, factor: int, dilate_cells: int) -> Tensor:
    """Cells to hold: ``(1, H, W)`` bool -> ``(1, H / factor, W / factor)`` float, 1 where
    every pixel of the cell is visible and no unheld cell lies within ``dilate_cells``
    (seam-wrapped)."""
    h, w = visible.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"panorama {w}x{h} is not a multiple of the latent factor {factor}")
    keep = -F.max_pool2d(-visible.to(torch.float32)[None], factor)[0]  # min-pool: all pixels visible
    for _ in range(dilate_cells):
        padded = F.pad(torch.cat([keep[..., -1:], keep, keep[..., :1]], dim=-1)[None], (0, 0, 1, 1), value=1.0)
        keep = -F.max_pool2d(-padded, 3, stride=1)[0]
    return keep


def held_view(index: int, images: Tensor, distances: Tensor, rotations: Tensor, positions: Tensor,
              config: SequenceConfig) -> HeldView:
    """Reproject the nearest earlier panoramas into camera ``index`` and merge them.

    images: ``(>= index, C, H, W)`` the panoramas so far; distances ``(>= index, 1, H, W)``.
    """
    refs = previous_references(positions, index, config.num_refs)
    if not refs:
        raise ValueError(f"panorama {index}: no earlier panorama to hold")
    c, h, w = images.shape[1:]
    image = images.new_zeros(c, h, w)
    distance = distances.new_zeros(1, h, w)
    visible = torch.zeros(1, h, w, dtype=torch.bool, device=images.device)
    for j in refs:  # nearest first: a pixel keeps the first reference that sees it
        R, t = relative_pose(rotations[j], positions[j], rotations[index], positions[index])
        rep = reproject_equirect(images[j:j + 1], distances[j:j + 1], R, t)
        new = rep.visible[0] & ~visible
        image = torch.where(new, rep.image[0], image)
        distance = torch.where(new, rep.distance[0].to(distance.dtype), distance)
        visible = visible | new
    keep = latent_keep_mask(visible, config.latent_factor, config.dilate_cells)
    if bool(visible.any()):
        image = fill_holes(image, visible)
        distance = fill_background_distance(distance, visible)
    return HeldView(index, image, visible, keep, distance, refs)


def align_distance_scale(predicted: Tensor, reference: Tensor, mask: Tensor) -> Tensor:
    """``predicted`` scaled so its median ratio to ``reference`` over ``mask`` is 1 (relative
    depth models such as MoGe's panorama mode have no metric scale).  All ``(1, H, W)``."""
    if not bool(mask.any()):
        raise ValueError("distance scale: no pixel to align on")
    ratio = (reference[mask] / predicted[mask].clamp_min(1e-12)).median()
    return predicted * ratio


def generate_sequence(num: int, sample: Sampler, depth: DepthSource, rotations: Tensor, positions: Tensor,
                      config: SequenceConfig = SequenceConfig(),
                      callback: ProgressCallback | None = None) -> SequenceResult:
    """Generate ``num`` panoramas along the cameras, each holding what earlier ones saw.

    sample(i, held): panorama ``i`` as ``(C, H, W)``; ``held`` is None for panorama 0, else
    the :class:`HeldView` whose ``keep`` cells it must keep equal to ``held.image``.
    depth(i, image, held): panorama ``i``'s distances ``(1, H, W)``.
    callback(done, num) after each panorama (it may raise to cancel).
    """
    if rotations.shape != (num, 3, 3) or positions.shape != (num, 3):
        raise ValueError(f"cameras: expected rotations ({num}, 3, 3) and positions ({num}, 3), got "
                         f"{list(rotations.shape)} and {list(positions.shape)}")
    images, distances, held_masks = [], [], []
    for i in range(num):
        held = None
        if i:
            held = held_view(i, torch.stack(images), torch.stack(distances), rotations, positions, config)
        image = sample(i, held)
        dist = depth(i, image, held)
        if dist.shape != (1, *image.shape[-2:]):
            raise ValueError(f"depth for panorama {i}: expected (1, {image.shape[-2]}, {image.shape[-1]}), "
                             f"got {list(dist.shape)}")
        if not bool((dist > 0).all()) or not bool(torch.isfinite(dist).all()):
            raise ValueError(f"depth for panorama {i}: distances must be finite and positive")
        images.append(image)
        distances.append(dist)
        held_masks.append(held.visible if held is not None else torch.zeros(1, *image.shape[-2:], dtype=torch.bool))
        if callback is not None:
            callback(i + 1, num)
    return SequenceResult(torch.stack(images), torch.stack(distances), torch.stack(held_masks))


# ---------------------------------------------------------------------------------------
# Latent-space sampling of one step, and distance sources (what the ComfyUI node plugs in)
# ---------------------------------------------------------------------------------------

Encode = Callable[[Tensor], Tensor]  # (1, C, H, W) pixels 0..1 -> (1, c, h, w) raw latent
Decode = Callable[[Tensor], Tensor]  # (1, c, h, w) raw latent -> (1, C, H, W) pixels 0..1
# (samples (B, c, h, w), noise_mask (B, 1, h, w) 1 = generate or None, views or None, index) -> (B, c, h, w)
Denoise = Callable[[Tensor, "Tensor | None", "EpipolarViews | None", int], Tensor]


class LatentStepSampler:
    """The ``sample(i, held)`` of :func:`generate_sequence` for a latent diffusion model.

    Panorama 0 is ``first_image`` when given, else denoised from the empty latent.  Each
    later one is denoised from its reprojected content, encoded, with ``noise_mask = 1 -
    held.keep`` (ComfyUI's convention: 1 = generate).  With ``epipolar`` the references'
    own latents ride in the same batch, fully held, so an epipolar attention patch can read
    them: the batch is ``[target, ref 1, ..., ref K]`` and ``views`` says so (the target's
    references are items 1..K; the references attend to nothing).  Keeps each panorama's
    latent (``latents``).
    """

    def __init__(self, encode: Encode, decode: Decode, denoise: Denoise, empty_latent: Tensor,
                 rotations: Tensor, positions: Tensor, epipolar: bool, first_image: Tensor | None = None):
        if empty_latent.ndim != 4 or empty_latent.shape[0] != 1:
            raise ValueError(f"empty_latent: expected (1, c, h, w), got {list(empty_latent.shape)}")
        self.encode, self.decode, self.denoise = encode, decode, denoise
        self.empty_latent = empty_latent
        self.rotations, self.positions = rotations, positions
        self.epipolar = epipolar
        self.first_image = first_image
        self.latents: dict[int, Tensor] = {}

    def views_for(self, index: int, refs: tuple[int, ...]) -> EpipolarViews:
        k = len(refs)
        order = [index, *refs]
        references = torch.full((k + 1, k), -1, dtype=torch.long)
        references[0] = torch.arange(1, k + 1)
        return EpipolarViews(self.rotations[order].to(torch.float64), self.positions[order].to(torch.float64), references)

    def __call__(self, index: int, held: HeldView | None) -> Tensor:
        if held is None:
            if index == 0 and self.first_image is not None:
                self.latents[0] = self.encode(self.first_image[None])
                return self.first_image
            out = self.denoise(self.empty_latent, None, None, index)
        else:
            target = self.encode(held.image[None])
            if target.shape != self.empty_latent.shape:
                raise ValueError(f"encoded panorama {index} has shape {list(target.shape)}, the latent "
                                 f"{list(self.empty_latent.shape)}")
            if held.keep.shape[-2:] != target.shape[-2:]:
                raise ValueError(f"keep mask {list(held.keep.shape)} does not match the latent {list(target.shape)}; "
                                 "set SequenceConfig.latent_factor to the VAE's factor")
            refs = held.references if self.epipolar else ()
            samples = torch.cat([target, *(self.latents[j].to(target) for j in refs)])
            mask = torch.cat([1.0 - held.keep[None].to(target), torch.zeros(len(refs), 1, *target.shape[-2:]).to(target)])
            out = self.denoise(samples, mask, self.views_for(index, refs) if refs else None, index)
        self.latents[index] = out[:1]
        return self.decode(out[:1])[0]


def sphere_distance(hw: tuple[int, int], radius: float) -> Tensor:
    """A constant distance map ``(1, H, W)``: a room seen as a sphere of ``radius``."""
    if not radius > 0:
        raise ValueError(f"radius: expected a positive distance, got {radius}")
    return torch.full((1, *hw), float(radius))


def depth_source(mode: str, *, radius: float, first_distance: Tensor | None = None,
                 estimate: Callable[[Tensor], Tensor] | None = None) -> DepthSource:
    """The ``depth(i, image, held)`` of :func:`generate_sequence`.

    Panorama 0 (all modes but ``constant``): ``first_distance``; else, with an ``estimate``
    (``image (C, H, W) -> (1, H, W)`` relative distances, e.g. ComfyUI 0.33's MoGe panorama
    model), its estimate scaled to a median of ``radius``; else a sphere of ``radius``.
    Later panoramas: ``propagate`` keeps the reprojected distances where earlier panoramas
    see, background-filled in the holes; ``estimate`` scales each panorama's estimate to the
    reprojected distances on the pixels earlier panoramas see and keeps those there.
    ``constant``: every panorama a sphere of ``radius`` (rotation-like parallax only).
    """
    if mode not in DEPTH_SOURCES:
        raise ValueError(f"depth_source: unknown mode {mode!r}; choose one of {list(DEPTH_SOURCES)}")
    if mode == "estimate" and estimate is None:
        raise ValueError("depth_source: mode 'estimate' needs an estimator")

    def depth(index: int, image: Tensor, held: HeldView | None) -> Tensor:
        hw = tuple(image.shape[-2:])
        if mode == "constant":
            return sphere_distance(hw, radius)
        if held is None:
            if first_distance is not None:
                if tuple(first_distance.shape) != (1, *hw):
                    raise ValueError(f"first distance map {list(first_distance.shape)} does not match panorama 0 {list(hw)}")
                return first_distance
            if estimate is not None:
                d = estimate(image)
                return d * (radius / d.median().clamp_min(1e-12))
            return sphere_distance(hw, radius)
        if mode == "estimate" and bool(held.visible.any()):
            d = align_distance_scale(estimate(image), held.distance, held.visible)
            return torch.where(held.visible, held.distance, d)
        return held.distance

    return depth
