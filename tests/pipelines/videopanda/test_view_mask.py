"""View-mask regimes of VideoPanda Fig. 3 and their ComfyUI noise masks."""

import pytest
import torch

from pano360.pipelines.videopanda.view_mask import (
    build_view_mask,
    given_cells,
    mask_to_latent_frames,
    noise_mask_for_latent,
    parse_custom_mask,
)


def test_regimes_mark_the_cells_of_fig3():
    assert build_view_mask("none", 8, 16).sum() == 0
    col = build_view_mask("first_column", 8, 16, column_view=3)
    assert given_cells(col) == [(3, t) for t in range(16)]
    row = build_view_mask("first_row", 8, 16)
    assert given_cells(row) == [(v, 0) for v in range(8)]
    both = build_view_mask("first_row_and_column", 8, 16)
    assert both.sum() == 8 + 16 - 1 and both[0].all() and both[:, 0].all() and both[1:, 1:].sum() == 0


def test_custom_grid_from_json_or_lines():
    j = parse_custom_mask("[[1,0,0],[0,0,1]]", 2, 3)
    t = parse_custom_mask("100\n001", 2, 3)
    assert torch.equal(j, t) and given_cells(j) == [(0, 0), (1, 2)]
    assert torch.equal(build_view_mask("custom", 2, 3, custom="1,0,0\n0,0,1"), j)


@pytest.mark.parametrize(
    "text, match",
    [("[[1,0],[0,1]]", "2 rows .* of 3 values"), ("102\n000", "0 or 1"), ("{}", "list of rows")],
)
def test_bad_custom_grids_say_what_is_wrong(text, match):
    with pytest.raises(ValueError, match=match):
        parse_custom_mask(text, 2, 3)


def test_unknown_regime_and_bad_column_are_named():
    with pytest.raises(ValueError, match="regime must be one of"):
        build_view_mask("first_col", 8, 4)
    with pytest.raises(ValueError, match="column_view must be in 0..7, got 8"):
        build_view_mask("first_column", 8, 4, column_view=8)


def test_pixel_frame_mask_maps_onto_causal_video_latent_frames():
    # Wan 2.1 / HunyuanVideo: 61 pixel frames -> 16 latent frames (r = 4)
    both = build_view_mask("first_row_and_column", 8, 61)
    lat = mask_to_latent_frames(both, 16)
    assert lat.shape == (8, 16)
    assert lat[:, 0].all() and lat[0].all() and lat[1:, 1:].sum() == 0
    # a latent frame whose 4 pixel frames are not all given stays generated
    partial = torch.zeros(1, 9)
    partial[0, 1:4] = 1  # frames 1..3 of latent frame 1 (frames 1..4)
    assert mask_to_latent_frames(partial, 3).tolist() == [[0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="expected equal"):
        mask_to_latent_frames(torch.zeros(8, 9), 4)


def test_noise_mask_is_one_where_generated_in_both_layouts():
    mask = build_view_mask("first_column", 3, 4, column_view=1)
    nm4 = noise_mask_for_latent(mask, (12, 4, 5, 6))
    assert nm4.shape == (12, 1, 5, 6)
    assert nm4[4:8].sum() == 0 and nm4[:4].min() == 1 and nm4[8:].min() == 1  # view 1 = items 4..7
    nm5 = noise_mask_for_latent(mask, (3, 16, 4, 5, 6))
    assert nm5.shape == (3, 1, 4, 5, 6) and nm5[1].sum() == 0 and nm5[0].min() == 1
    with pytest.raises(ValueError, match="views\\*frames"):
        noise_mask_for_latent(mask, (8, 4, 5, 6))
