"""Seam, pole and view-agreement scores on synthetic panoramas with known defects.

The panoramas are band-limited random fields on the sphere (sums of plane waves of the
unit direction), sampled at equirect pixel centres straight from docs/conventions.md, so
they are seamless and pole-correct by construction; the defects are then added by hand
(an offset on one side of the seam, noise or an azimuthal pattern in the pole rows, a
bias on one view).
"""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from _projection_fixtures import erp_dirs, view_dirs  # noqa: E402

from pano360.metrics import (  # noqa: E402
    POLE_ROUGH,
    SEAM_VISIBLE,
    VIEWS_DISAGREE,
    lattice_disagreement,
    pole_score,
    score_panorama,
    seam_score,
    view_disagreement,
)
from pano360.projection import rig_preset  # noqa: E402
from pano360.projection.lattice import assign_views, fibonacci_lattice, lattice_to_views  # noqa: E402

F64 = torch.float64


def waves(max_freq: float, seed: int, channels: int = 3, k: int = 48):
    """A random smooth field of unit directions (..., 3) -> (C, ...), std ~0.15 around 0.5."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(channels, k, 3, generator=g, dtype=F64)
    f = f / f.norm(dim=-1, keepdim=True) * max_freq * torch.rand(channels, k, 1, generator=g, dtype=F64).sqrt()
    phase = torch.rand(channels, k, generator=g, dtype=F64) * 2 * math.pi

    def field(d):
        return torch.stack([0.5 + 0.15 * torch.cos(d @ f[c].T + phase[c]).sum(-1) / math.sqrt(k / 2)
                            for c in range(channels)])

    return field


def pano(h: int, seed: int = 0) -> torch.Tensor:
    return waves(h / 4, seed)(erp_dirs(h))[None].float()  # (1, 3, h, 2h), a quarter of the Nyquist


def test_seamless_panoramas_score_about_one_and_a_seam_scores_high():
    clean = torch.cat([pano(64, s) for s in range(6)])
    scores = seam_score(clean)
    assert float(scores.max()) < SEAM_VISIBLE and float(scores.min()) > 0.5
    # a seam: brightness ramping up by 0.1 from left to right (smooth inside, a 0.1 step
    # where the right border meets the left one)
    seamed = clean + 0.1 * torch.arange(128) / 128
    assert float(seam_score(seamed).min()) > 2 * SEAM_VISIBLE
    # the same step moved to the middle (a roll by half the width) is no seam any more
    assert float(seam_score(torch.roll(seamed, 64, dims=-1)).max()) < SEAM_VISIBLE
    assert float(seam_score(torch.full((1, 3, 8, 16), 0.5))) == 1.0


def test_smooth_poles_score_near_zero_and_pole_defects_score_high():
    h = 96
    clean = pano(h, 1)
    score = pole_score(clean)
    assert score.shape == (1, 2) and float(score.max()) < 0.2 * POLE_ROUGH
    rows = max(1, round(h * 10 / 180))
    g = torch.Generator().manual_seed(4)
    # noise in the north cap (the grain an image model leaves where the equirect stretches)
    noisy = clean.clone()
    noisy[..., :rows, :] += 0.05 * torch.randn(1, 3, rows, 2 * h, generator=g)
    # streaks: a 40-cycle azimuthal pattern in the south cap (a pinched texture)
    streaked = clean.clone()
    lon = torch.linspace(0, 2 * math.pi, 2 * h + 1)[:-1]
    streaked[..., h - rows:, :] += 0.05 * torch.cos(40 * lon)
    n_noisy, s_noisy = pole_score(noisy)[0].tolist()
    n_streak, s_streak = pole_score(streaked)[0].tolist()
    assert n_noisy > POLE_ROUGH and s_noisy < 0.2 * POLE_ROUGH
    assert s_streak > POLE_ROUGH and n_streak < 0.2 * POLE_ROUGH
    # the equator texture copied into the cap rows (what a planar model draws there)
    pinched = clean.clone()
    pinched[..., :rows, :] = clean[..., h // 2 - rows // 2: h // 2 - rows // 2 + rows, :]
    assert float(pole_score(pinched)[0, 0]) > POLE_ROUGH


def test_views_cut_from_one_panorama_agree_and_a_biased_view_does_not():
    rig = rig_preset("videopanda8", size=24)
    field = waves(6.0, 2)
    views = torch.stack([field(view_dirs(math.radians(v.yaw), math.radians(v.pitch), math.radians(v.roll),
                                         math.radians(v.fov), (24, 24))) for v in rig.views]).float()
    assert float(view_disagreement(views, rig)) < 0.1 * VIEWS_DISAGREE
    biased = views.clone()
    biased[3] += 0.3
    assert float(view_disagreement(biased, rig)) > VIEWS_DISAGREE
    two_frames = torch.stack([views, biased], 1).reshape(16, 3, 24, 24)  # view-major, T=2
    out = view_disagreement(two_frames, rig)
    assert out.shape == (2,) and float(out[0]) < float(out[1])


def test_lattice_views_agree_exactly_and_disagree_when_biased():
    n = 1500
    lv = assign_views(n, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), 0.0, 0.0, math.radians(90), (12, 12))
    lattice = waves(5.0, 3)(fibonacci_lattice(n, dtype=F64)).float()[None]  # (1, 3, n)
    views = lattice_to_views(lattice, lv)
    assert float(lattice_disagreement(views, lv)) < 1e-3
    views[2] += 0.3
    assert float(lattice_disagreement(views, lv)) > VIEWS_DISAGREE


def test_scores_summarise_into_a_ui_line():
    s = score_panorama(pano(32, 5), views=0.01)
    assert s.verdicts() == {"seamless": True, "poles": True, "views agree": True}
    text = s.text()
    assert "seamless" in text and "smooth" in text and "views agree" in text
    bad = score_panorama(torch.cat([torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)], -1))
    assert "VISIBLE SEAM" in bad.text() and bad.views is None


def test_bad_inputs_raise_errors_naming_the_argument():
    with pytest.raises(ValueError, match="erp"):
        seam_score(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="views"):
        view_disagreement(torch.zeros(5, 3, 8, 8), rig_preset("videopanda8", size=8))
