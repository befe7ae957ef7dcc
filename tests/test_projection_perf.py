"""Fast-path helpers of the projection core (helper `perf`): they must not change results."""

from __future__ import annotations

import torch

from pano360.projection import _sampling as S


def test_empty_like_huge_shape_dtype_and_writable():
    like = torch.zeros(2, dtype=torch.float16)
    small = S.empty_like_huge(like, 3, 4)
    assert small.shape == (3, 4) and small.dtype == torch.float16
    big = S.empty_like_huge(torch.zeros(1), (S.HUGEPAGE_MIN_BYTES // 4) + 5)  # over the hint threshold
    big.fill_(2.0)
    assert big.dtype == torch.float32 and bool((big == 2.0).all())


def test_scratch_table_matches_table_of_for_every_layout():
    x = torch.rand(3, 2, 4, 8)
    for src in (x, x.contiguous(memory_format=torch.channels_last), x[:1].contiguous(memory_format=torch.channels_last)):
        assert torch.equal(S.scratch_table_of(src), S.table_of(src))
