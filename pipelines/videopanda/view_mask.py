"""View masks: which cells of a view×frame grid are given (VideoPanda, Fig. 3).

A view mask is a float tensor ``[V, T]`` (views × frames), ``1`` = the cell is given
(conditioning), ``0`` = the cell is generated (docs/conventions.md, "ComfyUI data").

Regimes (VideoPanda, Xie et al. 2025, §3.2 and Fig. 3):

* ``none``: nothing given, text only (Fig. 3a).
* ``first_column``: one view given for every frame: the input video (Fig. 3b).
* ``first_row``: the first frame of every view given.
* ``first_row_and_column``: both, the autoregressive continuation (Fig. 3c).
* ``custom``: any grid, from JSON (``[[1,0,...], ...]``, one list per view) or text
  (one line of ``0``/``1`` per view, e.g. ``"1111\\n0000"``).

The "column" is a *view* (a row of the ``[V, T]`` tensor); Fig. 3 draws views as columns.
Which view holds the input video is a parameter (``column_view``, default 0, the paper's
"first view"): VideoPanda's stitched results show the conditioning view at longitude −90°
(the project page's video-conditioned results), but Pano360's ``videopanda8`` rig has views at yaw 0, 60, …, 300 with view 0
looking forward, so with the default the given video lands at the centre of the equirect.

ComfyUI's latent ``noise_mask`` has the opposite sense (1 = generate); the helpers below
convert a view mask into one for a view-major 4-D latent ``[V*T, C, h, w]`` or a 5-D video
latent ``[V, C, T, h, w]``.
"""

from __future__ import annotations

import json
from typing import Literal

import torch
from torch import Tensor

Regime = Literal["none", "first_column", "first_row", "first_row_and_column", "custom"]
REGIMES: tuple[str, ...] = ("none", "first_column", "first_row", "first_row_and_column", "custom")

__all__ = [
    "REGIMES",
    "build_view_mask",
    "parse_custom_mask",
    "mask_to_latent_frames",
    "noise_mask_for_latent",
    "given_cells",
]


def build_view_mask(
    regime: str, views: int, frames: int, *, column_view: int = 0, custom: str | None = None
) -> Tensor:
    """The ``[views, frames]`` float32 mask of a regime (1 = given).

    column_view: the view that holds the given video for ``first_column`` and
    ``first_row_and_column``.  custom: the grid text for ``custom`` (see
    :func:`parse_custom_mask`).
    """
    if views < 1 or frames < 1:
        raise ValueError(f"views and frames must be >= 1, got views={views}, frames={frames}")
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if regime == "custom":
        if custom is None or not custom.strip():
            raise ValueError("regime 'custom' needs the custom grid text, got none")
        return parse_custom_mask(custom, views, frames)
    mask = torch.zeros(views, frames, dtype=torch.float32)
    if regime in ("first_column", "first_row_and_column"):
        if not 0 <= column_view < views:
            raise ValueError(f"column_view must be in 0..{views - 1}, got {column_view}")
        mask[column_view, :] = 1.0
    if regime in ("first_row", "first_row_and_column"):
        mask[:, 0] = 1.0
    return mask


def parse_custom_mask(text: str, views: int, frames: int) -> Tensor:
    """Parse a custom grid: JSON ``[[0,1,...], ...]`` or lines of ``0``/``1``, one per view.

    Returns ``[views, frames]`` float32.  A grid of the wrong size or with values other
    than 0/1 raises ValueError naming what was found.
    """
    text = text.strip()
    try:
        rows = json.loads(text)
    except RecursionError:   # json.loads recurses once per nesting level ("[" * 5000)
        raise ValueError(f"custom mask JSON is nested too deeply: {text[:80]!r}") from None
    except json.JSONDecodeError:
        rows = [[c for c in line.strip() if not c.isspace() and c != ","]
                for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"custom mask must be a list of rows (one per view), got {text[:80]!r}")
    values = []
    for r in rows:
        row = []
        for c in r:
            try:
                v = float(c)
            except (TypeError, ValueError):
                v = -1.0
            if v not in (0.0, 1.0):
                raise ValueError(f"custom mask values must be 0 or 1, got {c!r}")
            row.append(v)
        values.append(row)
    shape = (len(values), len(values[0]) if values else 0)
    if shape != (views, frames) or any(len(r) != frames for r in values):
        got = [len(r) for r in values]
        raise ValueError(
            f"custom mask must have {views} rows (views) of {frames} values (frames), "
            f"got {len(values)} rows of lengths {got}"
        )
    return torch.tensor(values, dtype=torch.float32)


def mask_to_latent_frames(mask: Tensor, latent_frames: int) -> Tensor:
    """Bring a ``[V, T]`` mask to ``latent_frames`` frames.

    Equal counts pass through.  Otherwise the mask is taken as being over *pixel* frames of
    a causal video VAE (Wan 2.1, HunyuanVideo: latent frame 0 is pixel frame 0, latent frame
    k >= 1 covers pixel frames ``(k-1)*r+1 .. k*r``, with ``T = (T'-1)*r + 1``; ComfyUI
    ``EmptyHunyuanLatentVideo``), and a latent frame is given only when all its pixel
    frames are given.  Any other count raises ValueError.
    """
    views, frames = mask.shape
    if frames == latent_frames:
        return mask
    if latent_frames > 1 and frames > 1 and (frames - 1) % (latent_frames - 1) == 0:
        r = (frames - 1) // (latent_frames - 1)
        rest = mask[:, 1:].reshape(views, latent_frames - 1, r).amin(dim=2)
        return torch.cat([mask[:, :1], rest], dim=1)
    raise ValueError(
        f"view mask has {frames} frames but the latent has {latent_frames}; expected equal "
        f"counts or pixel frames of a causal video VAE ((latent_frames - 1) * r + 1)"
    )


def noise_mask_for_latent(mask: Tensor, latent_shape: tuple[int, ...]) -> Tensor:
    """ComfyUI ``noise_mask`` (1 = generate, 0 = keep) for a latent of ``latent_shape``.

    mask: ``[V, T]`` view mask (1 = given).  latent_shape: ``(V*T, C, h, w)`` view-major
    or ``(V, C, T, h, w)``.  Returns ``(V*T, 1, h, w)`` or ``(V, 1, T, h, w)`` float32,
    full size, so ComfyUI's ``reshape_mask`` does not interpolate it.
    """
    views, frames = mask.shape
    gen = 1.0 - mask.to(torch.float32)
    if len(latent_shape) == 4:
        if latent_shape[0] != views * frames:
            raise ValueError(f"latent batch {latent_shape[0]} != views*frames = {views}*{frames}")
        h, w = latent_shape[2:]
        return gen.reshape(views * frames, 1, 1, 1).expand(-1, 1, h, w).contiguous()
    if len(latent_shape) == 5:
        if latent_shape[0] != views or latent_shape[2] != frames:
            raise ValueError(
                f"latent shape {list(latent_shape)} does not match a mask of {views} views × {frames} frames"
            )
        h, w = latent_shape[3:]
        return gen.reshape(views, 1, frames, 1, 1).expand(-1, 1, -1, h, w).contiguous()
    raise ValueError(f"latent_shape must have 4 or 5 dims, got {list(latent_shape)}")


def given_cells(mask: Tensor) -> list[tuple[int, int]]:
    """The ``(view, frame)`` pairs marked given, in view-major order."""
    return [(int(v), int(t)) for v, t in torch.nonzero(mask > 0.5).tolist()]
