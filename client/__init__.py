"""Pano360 API client: workflow conversion and validation, batch queueing (host-free, no torch)."""
