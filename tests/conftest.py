"""Test setup: import this checkout as the package ``pano360``.

The repository root is the package (ComfyUI imports it from ``custom_nodes/``).  Tests
always register *this* checkout under the name ``pano360``, so a stale install elsewhere
can never be tested by mistake.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _register_pack() -> None:
    existing = sys.modules.get("pano360")
    if existing is not None and pathlib.Path(existing.__file__).resolve().parent == ROOT:
        return
    for name in [m for m in sys.modules if m == "pano360" or m.startswith("pano360.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "pano360", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["pano360"] = module
    spec.loader.exec_module(module)


_register_pack()
