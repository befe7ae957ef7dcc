"""VideoPanda (Xie et al. 2025): 360° video from text or a perspective video.

:mod:`.view_mask` (which view×frame cells are given, Fig. 3), :mod:`.autoregressive`
(windows carried into the next, Fig. 3c).  The training-free sampler fuses views on the
sphere with :mod:`...sampling.fusion`.
"""
