"""DiffPano (NeurIPS 2024): multi-view panoramas along a camera path with spherical epipolar
attention.  Home of its stages."""
