"""Test setup: make the repository importable as the package ``pano360``.

``bash .ci/setup`` installs the pack in editable mode; when it is not installed (a bare
checkout), the repository root is registered as ``pano360`` here.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

if "pano360" not in sys.modules:
    try:
        import pano360  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "pano360", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["pano360"] = module
        spec.loader.exec_module(module)
