"""VideoFrom3D (Kim, Han & Cho, SIGGRAPH Asia 2025): scene video from a coarse 3D scene, a camera
path and a style image.

Stages, each a function of plain tensors and callables (host-free, never imports ComfyUI):

- ``mesh``, ``raster``, ``render``: a coarse mesh and a small torch rasteriser (z-buffer, triangle
  id, barycentrics) giving depth, normals, edge maps, correspondences and flow;
- ``correspondence``: the 16-bit colour-code correspondence maps the official code reads, and
  forward flow from them;
- ``noise_warp``: Go-with-the-Flow noise warping at the official resolutions;
- ``arcs``: the official ``arc{k}/`` folder layout, read and written;
- ``sag``: sparse appearance-guided anchor sampling (Flux) arithmetic;
- ``ggi``: geometry-guided generative inbetweening (48-channel CogVideoX) arithmetic.

See docs/videofrom3d.md.
"""
