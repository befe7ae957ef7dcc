"""The diffusion machinery every system shares (docs/layout.md): types and the progress
signature, sigma lookups, seam rolls and blended decoding, view fusion on the sphere, held
cells, the host-free Euler loop, the window planner, the DDPM loop, the shifted rectified-flow
schedule (``flow``), and the host-free halves of the ComfyUI hooks.  Host-free (never imports ComfyUI)."""
