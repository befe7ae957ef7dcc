"""DiffPano (Ye et al., NeurIPS 2024): several consistent panoramas along a camera path.

``sequence``: the training-free sequential path (reproject, hold, generate the rest);
``synthetic``: procedural posed panoramas with exact distances.  The epipolar module is
in ``models/diffpano_epipolar.py``; docs/diffpano.md.
"""
