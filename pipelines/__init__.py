"""Pano360 pipelines (host-free: never imports ComfyUI)."""
