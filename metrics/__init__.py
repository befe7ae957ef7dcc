"""Pano360 metrics: reference-free quality scores of 360° results (seam, poles, view agreement).

Pure torch, host-free (never imports ComfyUI); see :mod:`.panorama` and docs/spherical.md.
"""

from .panorama import (
    POLE_CAP_DEG,
    POLE_ROUGH,
    SEAM_VISIBLE,
    VIEWS_DISAGREE,
    PanoramaScores,
    lattice_disagreement,
    pole_score,
    score_panorama,
    seam_score,
    view_disagreement,
)

__all__ = [
    "SEAM_VISIBLE",
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
