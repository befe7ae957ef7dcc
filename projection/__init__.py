"""Pano360 projection (host-free: never imports ComfyUI)."""
