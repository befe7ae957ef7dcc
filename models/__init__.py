"""Pano360 models (host-free: never imports ComfyUI)."""
