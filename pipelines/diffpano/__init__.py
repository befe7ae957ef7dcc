"""DiffPano (Ye et al., NeurIPS 2024): several consistent panoramas along a camera path with
spherical epipolar attention.  Home of its stages.

``sequence``: the training-free sequential path (reproject, hold, generate the rest);
``patches``: the epipolar modules and the training-free epipolar attention inside ComfyUI's
UNet (host-free halves); ``synthetic``: procedural posed panoramas with exact distances.
The module itself is ``models/diffpano_epipolar.py``; docs/diffpano.md.
"""
