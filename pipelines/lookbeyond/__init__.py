"""Look Beyond (Kang et al. 2025): two-stage scene view generation.

Stage 1, :mod:`.panorama`: a perspective photo placed on the sphere and text -> a 360°
panorama with PanoDiT (ancestral DDPM, RePaint, seam rolls).  Stage 2,
:mod:`.perspective_loop`: the panorama as a loop of perspective frames with RealEstate10K
cameras.  Stage 3, :mod:`.inbetween`: two keyframes of the loop -> a video with SVD-XT keyframe
inbetweening (svd_keyframe_interpolation's two-pass attention flip) and Look Beyond's camera poses.
"""
