"""Look Beyond (Kang et al. 2025): two-stage scene view generation.

Stage 1, :mod:`.panorama`: a perspective photo placed on the sphere and text -> a 360°
panorama with PanoDiT (ancestral DDPM, RePaint, seam rolls).  Stage 2,
:mod:`.perspective_loop`: the panorama as a loop of perspective frames with RealEstate10K
cameras.  Stage 3 (keyframe inbetweening with camera poses on SVD) builds on these.
"""
