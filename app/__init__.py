"""The command-line jobs registered in ``cli.py`` (no ComfyUI needed)."""
