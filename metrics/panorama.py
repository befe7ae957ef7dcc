"""Quality scores of 360° results that need no reference image and no model weights.

- :func:`seam_score` how much the 0/360° column pair differs, against the average
  difference of the column pairs next to it (~1 = seamless, the seam is like any other
  column boundary there; >> 1 = a visible seam).
- :func:`pole_score` how rough the rows around each pole are along the azimuth, against
  what a correctly sampled sphere allows there (0 = consistent pole; pinching, swirls and
  streaks raise it).
- :func:`view_disagreement` / :func:`lattice_disagreement` how much overlapping views of a
  rig disagree where they see the same directions (0 = they agree).

All take channels-first tensors (images ``(B, C, H, W)`` in 0..1 or latents) and return
plain float tensors; none needs a model.  Convention: docs/conventions.md (row 0 at the
north pole, the seam at the left/right border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..projection import Rig, perspective_to_erp
from ..projection.lattice import LatticeViews

__all__ = [
    "SEAM_VISIBLE",
    "SEAM_NEIGHBOURS",
    "POLE_ROUGH",
    "VIEWS_DISAGREE",
    "POLE_CAP_DEG",
    "seam_score",
    "pole_score",
    "view_disagreement",
    "lattice_disagreement",
    "PanoramaScores",
    "score_panorama",
]

# A seam score above this is a visible seam.  Calibration (docs/spherical.md): seamless
# band-limited random panoramas (30 draws each at 32x64, 64x128, 256x512) score 0.99-1.02 on
# average, at most 1.37; a smooth field steepest at the seam scores 1.00-1.08.
SEAM_VISIBLE = 1.5
# Column pairs on each side of the seam the seam's difference is compared with: local, so a
# panorama whose gradient happens to peak at the seam is not mistaken for a seam.
SEAM_NEIGHBOURS = 4
# A pole score above this is a visibly rough pole: 10% of the image's contrast left in the
# cap rows beyond what the sphere's resolution allows (seamless smooth panoramas score
# < 0.001, the synthetic pole defects of tests/metrics 0.24-0.66).
POLE_ROUGH = 0.1
# Views whose overlaps differ by more than this fraction of the scene's contrast disagree
# visibly (views cut from one smooth panorama score below 0.01; one view brightened by
# twice the scene's spread scores above it: tests/metrics).
VIEWS_DISAGREE = 0.1
# The pole score looks at the rows within this many degrees of each pole.
POLE_CAP_DEG = 10.0
_EPS = 1e-12


def _check_erp(x: Tensor, name: str) -> tuple[int, int]:
    if not isinstance(x, Tensor) or x.ndim != 4:
        got = f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected an equirect (B, C, H, W), got {got}")
    h, w = x.shape[-2:]
    if w != 2 * h or h < 2:
        raise ValueError(f"{name}: an equirect panorama must be 2:1 (width == 2 * height), got {w}x{h} (WxH)")
    return h, w


def seam_score(erp: Tensor) -> Tensor:
    """Seam score of equirect images ``(B, C, H, W)`` -> ``(B,)``.

    ``mean |x[..., 0] - x[..., W-1]|`` over rows and channels, divided by the same mean over
    the :data:`SEAM_NEIGHBOURS` neighbouring column pairs on each side of the seam.  A
    constant image scores 1.
    """
    _, w = _check_erp(erp, "erp")
    k = min(SEAM_NEIGHBOURS, (w - 2) // 2)
    x = erp.detach().to(torch.float64)
    seam = (x[..., 0] - x[..., -1]).abs().mean(dim=(1, 2))
    near = torch.cat([x[..., 1:k + 1] - x[..., :k], x[..., w - k:] - x[..., w - k - 1:w - 1]], dim=-1)
    interior = near.abs().mean(dim=(1, 2, 3))
    flat = interior <= _EPS
    return torch.where(flat, torch.where(seam <= _EPS, torch.ones_like(seam), torch.full_like(seam, math.inf)),
                       seam / interior.clamp_min(_EPS)).to(torch.float32)


def _cap_excess(rows: Tensor, colatitude: Tensor, height: int) -> Tensor:
    """Mean power of the azimuthal harmonics above each row's band limit.

    rows: ``(B, C, K, W)``; colatitude: ``(K,)`` radians.  A row at colatitude ``theta`` is a
    circle of ``2 H sin(theta)`` equator-pixel spacings, so a sphere sampled at the
    equator's resolution carries no harmonic above ``H sin(theta)`` there.
    """
    w = rows.shape[-1]
    spec = torch.fft.rfft(rows, dim=-1)  # (B, C, K, W//2+1)
    power = spec.real ** 2 + spec.imag ** 2
    power[..., 1:] *= 2.0  # one-sided spectrum: every harmonic but the mean counts twice
    if w % 2 == 0:
        power[..., -1] /= 2.0  # ... except the Nyquist one
    harmonic = torch.arange(spec.shape[-1], device=rows.device, dtype=rows.dtype)
    limit = torch.ceil(height * torch.sin(colatitude)).to(rows.dtype)  # (K,)
    beyond = harmonic[None, :] > limit[:, None]  # (K, W//2+1)
    return (power * beyond).sum(-1) / (w * w)  # Parseval: mean square of the residual


def pole_score(erp: Tensor) -> Tensor:
    """Pole scores of equirect images ``(B, C, H, W)`` -> ``(B, 2)`` (north, south).

    For the rows within :data:`POLE_CAP_DEG` of each pole (at least one), the RMS of each
    row's azimuthal profile around its smooth fit (its harmonics up to the band limit a
    correctly sampled sphere has at that row's circle), divided by the image's standard
    deviation.  0 for any smooth field on the sphere sampled by the equirect; a pinched,
    noisy or streaked pole scores high.
    """
    h, w = _check_erp(erp, "erp")
    x = erp.detach().to(torch.float64)
    rows = max(1, int(round(h * POLE_CAP_DEG / 180.0)))
    colat = (torch.arange(rows, dtype=torch.float64, device=x.device) + 0.5) * math.pi / h
    north = _cap_excess(x[..., :rows, :], colat, h).mean(dim=(1, 2))
    south = _cap_excess(x[..., h - rows:, :].flip(-2), colat, h).mean(dim=(1, 2))
    std = x.std(dim=(2, 3)).mean(dim=1).clamp_min(_EPS)  # (B,)
    return (torch.stack([north, south], 1).sqrt() / std[:, None]).to(torch.float32)


def view_disagreement(views: Tensor, rig: Rig, erp_hw: tuple[int, int] | None = None) -> Tensor:
    """How much a rig's pinhole views disagree where they overlap: VIEW-MAJOR ``(V*T, C, h, w)``
    -> ``(T,)``.

    Every view is placed on an equirect (``erp_hw``; default: the size whose equator pixel
    matches the finest view's centre pixel); at pixels fully inside two or more views, the
    standard deviation across those views, averaged, over the standard deviation of the
    stitched scene.  0 = the views agree; NaN when no two views overlap.
    """
    if not isinstance(views, Tensor) or views.ndim != 4 or views.shape[0] % rig.num_views:
        got = f"shape {list(views.shape)}" if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"views: expected a view-major batch (V*T, C, h, w) of the rig's {rig.num_views} views, got {got}")
    nv = rig.num_views
    t = views.shape[0] // nv
    h, w = views.shape[-2:]
    if erp_hw is None:
        width = max(math.pi * w / math.tan(math.radians(v.fov) / 2) for v in rig.views)
        width = 2 * int(math.ceil(width / 2))
        erp_hw = (width // 2, width)
    yaw, pitch, roll, fov = rig.angles(device=views.device, dtype=torch.float64)
    rep = lambda a: a.repeat_interleave(t)  # noqa: E731  view-major: view v covers items v*T..v*T+T-1
    fov_y = None
    if any(v.fov_y is not None for v in rig.views):
        fov_y = rep(torch.tensor([v.fov_y_radians(h, w) for v in rig.views], device=views.device, dtype=torch.float64))
    placed, weight = perspective_to_erp(views.to(torch.float64), rep(yaw), rep(pitch), rep(roll), rep(fov), erp_hw,
                                        fov_y=fov_y)
    placed = placed.view(nv, t, *placed.shape[1:])
    inside = (weight > 0.999).to(torch.float64).view(nv, t, 1, *erp_hw)
    count = inside.sum(0)  # (T, 1, H, W)
    mean = (placed * inside).sum(0) / count.clamp_min(1)
    var = ((placed - mean) ** 2 * inside).sum(0) / count.clamp_min(1)  # (T, C, H, W)
    multi = (count >= 2).squeeze(1)  # (T, H, W)
    spread = var.mean(1).sqrt()  # (T, H, W)
    out = []
    for k in range(t):
        covered = count[k, 0] >= 1
        scene = mean[k][:, covered].std(dim=1).mean().clamp_min(_EPS) if bool(covered.any()) else torch.tensor(_EPS)
        out.append(spread[k][multi[k]].mean() / scene if bool(multi[k].any()) else torch.tensor(math.nan))
    return torch.stack(out).to(torch.float32)


def lattice_disagreement(x0_views: Tensor, views: LatticeViews) -> Tensor:
    """How much views filled from a lattice predicted different values for the same points:
    VIEW-MAJOR ``(V*T, C, h, w)`` -> ``(T,)``.

    At points held by two or more views, the (distortion-weighted) standard deviation of the
    views' values around their weighted mean, averaged over those points, over the standard
    deviation of the mean.  0 = the views agree; NaN when no point is held twice.
    """
    v = views.num_views
    h, w = views.view_hw
    if x0_views.ndim != 4 or x0_views.shape[0] % v or tuple(x0_views.shape[-2:]) != (h, w):
        raise ValueError(f"x0_views: expected a view-major batch (V*T, C, {h}, {w}) of {v} views, "
                         f"got {list(x0_views.shape)}")
    t, c = x0_views.shape[0] // v, x0_views.shape[1]
    x = x0_views.to(torch.float64).reshape(v, t, c, h * w)
    wt = views.weight.to(device=x.device, dtype=torch.float64).reshape(v, 1, 1, h * w)
    idx = views.index.to(x.device).reshape(-1)
    flat = lambda a: a.permute(1, 2, 0, 3).reshape(a.shape[1], a.shape[2], v * h * w)  # noqa: E731
    num = x.new_zeros(t, c, views.n).index_add_(-1, idx, flat(x * wt))
    sq = x.new_zeros(t, c, views.n).index_add_(-1, idx, flat(x * x * wt))
    den = x.new_zeros(t, 1, views.n).index_add_(-1, idx, flat(wt.expand(v, t, 1, h * w)))
    cnt = torch.zeros(views.n, device=x.device).index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
    mean = num / den.clamp_min(_EPS)
    var = (sq / den.clamp_min(_EPS) - mean * mean).clamp_min(0.0).mean(1)  # (T, n)
    multi = cnt >= 2
    held = cnt >= 1
    out = []
    for k in range(t):
        scene = mean[k][:, held].std(dim=1).mean().clamp_min(_EPS)
        out.append(var[k][multi].sqrt().mean() / scene if bool(multi.any()) else torch.tensor(math.nan))
    return torch.stack(out).to(torch.float32)


@dataclass(frozen=True)
class PanoramaScores:
    """The scores of one result, averaged over its frames (``None`` = not measured)."""

    seam: float
    pole_north: float
    pole_south: float
    views: float | None = None

    def verdicts(self) -> dict[str, bool]:
        """Which checks pass (seamless, poles smooth, views agree)."""
        out = {"seamless": self.seam <= SEAM_VISIBLE, "poles": max(self.pole_north, self.pole_south) <= POLE_ROUGH}
        if self.views is not None and math.isfinite(self.views):
            out["views agree"] = self.views <= VIEWS_DISAGREE
        return out

    def text(self) -> str:
        """One line for a node's UI, e.g. ``seam 1.02 (seamless) | poles 0.01/0.02 (smooth)``."""
        parts = [f"seam {self.seam:.2f} ({'seamless' if self.seam <= SEAM_VISIBLE else 'VISIBLE SEAM'}, "
                 f"<= {SEAM_VISIBLE:g} is seamless)",
                 f"poles N {self.pole_north:.3f} / S {self.pole_south:.3f} "
                 f"({'smooth' if max(self.pole_north, self.pole_south) <= POLE_ROUGH else 'ROUGH POLE'}, "
                 f"<= {POLE_ROUGH:g} is smooth)"]
        if self.views is not None:
            ok = math.isfinite(self.views) and self.views <= VIEWS_DISAGREE
            parts.append(f"view disagreement {self.views:.3f} ({'views agree' if ok else 'VIEWS DISAGREE'}, "
                         f"<= {VIEWS_DISAGREE:g} agree)")
        return " | ".join(parts)


def score_panorama(erp: Tensor, views: float | None = None) -> PanoramaScores:
    """Seam and pole scores of equirect frames ``(B, C, H, W)``, averaged over the frames,
    with an optional view disagreement measured elsewhere."""
    seam = float(seam_score(erp).mean())
    pole = pole_score(erp).mean(0)
    return PanoramaScores(seam, float(pole[0]), float(pole[1]), None if views is None else float(views))
