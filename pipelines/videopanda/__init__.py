"""VideoPanda (Xie et al. 2025): 360° video from text or a perspective video.

:mod:`.view_mask` (which view×frame cells are given, Fig. 3), :mod:`.autoregressive`
(windows carried into the next, Fig. 3c).  The training-free sampler fuses views on the
sphere with :mod:`...sampling.fusion`.

The paper's own model on Wan 2.1 (docs/videopanda.md): :mod:`.adapter` (conditioning
channels, given cells, the ComfyUI model hook), :mod:`.adapter_sampler` (host-free sampling
with an adapter); training: :mod:`.data` (random matrices from 360° videos),
:mod:`.batches`, :mod:`.train_config`, :mod:`.trainable`, :mod:`.checkpoint`, :mod:`.train`.
"""
