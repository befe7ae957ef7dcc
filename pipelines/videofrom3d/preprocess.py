"""VideoFrom3D preprocessing without Blender: a coarse mesh and a camera path -> the official arcs.

What the authors' Blender script plus ``mk_edge.py`` / ``mk_noise.py`` produce (spec §2e–f;
``assets/readme.md``), from the pack's rasteriser:

- per frame: line art (silhouettes, borders, creases) -> HED-like soft edges at 1080×720, and the
  normal-shaded line-art render (the official ``normal/``, for users who run a real HED on it);
- per arc: the 13 sampled frames' correspondence maps at 360×240 (each onto the previous sampled
  frame), ``corres_end`` (last frame onto the first) and the warped noise made from the maps by the
  official chain (decode -> flow -> NoiseWarper ×8 -> area ÷32), (13, 60, 90, 16) F H W C.

Equirect anchors (beyond the paper): :func:`equirect_edges` renders the same line art on the sphere
(the pack's equirect convention) for 360° anchor views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...cameras import CameraPath
from .arcs import Arc, arc_count, arc_frame_range, sampled_offsets
from .correspondence import encode_correspondence, flow_from_correspondence
from .mesh import Mesh
from .noise_warp import VF3D_NOISE, NoiseWarpSettings, warp_noise_sequence
from .render import EdgeSettings, line_art, normal_image, render_erp_gbuffer, render_gbuffer, reproject, soft_edges

__all__ = ["PreprocessSettings", "VF3D_PREPROCESS", "arc_edges", "arc_correspondences", "preprocess_arcs",
           "equirect_edges"]


@dataclass(frozen=True)
class PreprocessSettings:
    """edge_hw: HED map size (assets/sampleA: 720×1080).  corres_hw: correspondence size (half of
    480×720: ``mk_noise.py`` FRAME = 2**-1).  edges: line-art settings.  noise: warped-noise
    resolutions.  normals: also render the normal-shaded line art."""

    edge_hw: tuple[int, int] = (720, 1080)
    corres_hw: tuple[int, int] = (240, 360)
    edges: EdgeSettings = field(default_factory=EdgeSettings)
    noise: NoiseWarpSettings = VF3D_NOISE
    normals: bool = False


VF3D_PREPROCESS = PreprocessSettings()


def arc_edges(mesh: Mesh, path: CameraPath, settings: PreprocessSettings = VF3D_PREPROCESS, *, device=None,
              callback: Callable[[int, int], None] | None = None) -> tuple[Tensor, Tensor | None]:
    """Soft edges (T, H, W, 3) in [0, 1] and, if asked, normal renders (T, H, W, 3) of T views."""
    hed, normals = [], []
    for i in range(path.num_frames):
        cam = path.select([i])
        g = render_gbuffer(mesh, cam, settings.edge_hw, device=device)
        lines = line_art(g, settings.edges)
        soft = soft_edges(lines, settings.edges)
        hed.append(soft[..., None].expand(*soft.shape, 3))
        if settings.normals:
            normals.append(normal_image(g, cam, lines))
        if callback is not None:
            callback(i + 1, path.num_frames)
    return torch.cat(hed), (torch.cat(normals) if normals else None)


def arc_correspondences(mesh: Mesh, path: CameraPath, settings: PreprocessSettings = VF3D_PREPROCESS, *,
                        device=None) -> tuple[Tensor, Tensor]:
    """For one arc's sampled cameras (13): 12 maps, each sampled frame onto the previous one, and
    ``corres_end`` (last onto first).  Returns ((12, h, w, 3), (h, w, 3)) int32 colour codes."""
    g = render_gbuffer(mesh, path, settings.corres_hw, device=device)
    n = path.num_frames
    xy, valid = reproject(g.select(slice(1, n)), path.select(range(n - 1)), g.select(slice(0, n - 1)))
    codes = encode_correspondence(xy, valid, settings.corres_hw)
    xy_e, valid_e = reproject(g.select(slice(n - 1, n)), path.select([0]), g.select(slice(0, 1)))
    return codes, encode_correspondence(xy_e[0], valid_e[0], settings.corres_hw)


def preprocess_arcs(mesh: Mesh, path: CameraPath, settings: PreprocessSettings = VF3D_PREPROCESS, *,
                    generator: torch.Generator | None = None, device=None,
                    callback: Callable[[int, int], None] | None = None) -> list[Arc]:
    """All arcs of a path of ``45·k + 1`` frames (with positions), in the official layout (files
    numbered from 1).  ``callback(done, total)`` counts rendered frames plus noise warps.
    """
    k_arcs = arc_count(path.num_frames)
    offsets = sampled_offsets()
    total = k_arcs * (len(arc_frame_range(0)) + len(offsets) - 1)
    done = 0

    def tick(*_):
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total)

    arcs = []
    for k in range(k_arcs):
        frames = list(arc_frame_range(k))
        hed, normals = arc_edges(mesh, path.select(frames), settings, device=device, callback=tick)
        sampled = [frames[o] for o in offsets]
        codes, end = arc_correspondences(mesh, path.select(sampled), settings, device=device)
        flows = [flow_from_correspondence(c) for c in codes]
        noise = warp_noise_sequence(flows, settings.noise, generator=generator, callback=tick)
        arcs.append(Arc(
            hed=hed, hed_frames=tuple(f + 1 for f in frames),
            corres=codes, corres_frames=tuple(f + 1 for f in sampled[1:]),
            corres_end=end, noises=noise.permute(0, 2, 3, 1).contiguous(),
            normal=normals, normal_frames=tuple(f + 1 for f in frames) if normals is not None else (),
        ))
    return arcs


def equirect_edges(mesh: Mesh, path: CameraPath, erp_hw: tuple[int, int],
                   settings: EdgeSettings = EdgeSettings(), *, device=None) -> Tensor:
    """Soft edges of equirect views (the pack's sphere convention, each camera's forward at the
    centre column).  Returns (T, H, W, 3) in [0, 1]."""
    g = render_erp_gbuffer(mesh, path, erp_hw, device=device)
    soft = soft_edges(line_art(g, settings), settings)
    return soft[..., None].expand(*soft.shape, 3).contiguous()
