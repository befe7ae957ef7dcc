"""``python -m pano360 <command>``: the pack's command-line jobs (no ComfyUI needed)."""

from .cli import main

raise SystemExit(main())
