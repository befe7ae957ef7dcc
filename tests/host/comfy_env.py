"""Import ComfyUI in this process the way ``main.py --cpu`` configures it (tests and dev tools).

Shared by ``conftest.py`` (fixture ``comfy_in_process``) and ``record_schemas.py``.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout
PACK_DIRNAME = "pano360"  # the custom_nodes entry the test server loads this checkout as
# The version of the ComfyUI under test, found by tests/host/conftest.py (None: none found);
# test modules read it at collection time (e.g. to parametrize by what the host has).
DETECTED_VERSION: tuple[int, ...] | None = None


class ComfyImportError(ImportError):
    """ComfyUI or one of its dependencies cannot be imported."""


def comfyui_version(comfyui_root: pathlib.Path) -> tuple[int, ...]:
    """``__version__`` of ``<root>/comfyui_version.py`` as ints, read without importing ComfyUI."""
    path = pathlib.Path(comfyui_root) / "comfyui_version.py"
    match = re.search(r'__version__\s*=\s*["\']([0-9.]+)', path.read_text()) if path.is_file() else None
    if match is None:
        raise ComfyImportError(f"{path}: no __version__ found; is {comfyui_root} a ComfyUI folder?")
    return tuple(int(x) for x in match.group(1).split("."))


def import_comfy(comfyui_root: pathlib.Path, base: pathlib.Path | None = None) -> types.SimpleNamespace:
    """Put ComfyUI on ``sys.path``, select the CPU and (if given, and if ``folder_paths`` is
    not imported yet) the base directory ``base`` for models/input/output/temp/user.

    Returns a namespace with ``root``, ``base``, ``folder_paths``, ``model_management``,
    ``utils`` (``comfy.utils``) and ``io`` (``comfy_api.latest.io``).
    """
    root = str(pathlib.Path(comfyui_root).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import comfy.options  # noqa: F401  (args_parsing stays False: defaults, argv ignored)
        import comfy.cli_args as cli_args
    except ImportError as error:
        raise ComfyImportError(f"ComfyUI at {root} cannot be imported ({error}); see docs/testing.md") from error
    if "comfy.model_management" not in sys.modules:
        cli_args.args.cpu = True  # without CUDA, model_management needs --cpu at import time
    if base is not None and "folder_paths" not in sys.modules:
        cli_args.args.base_directory = str(base)
    try:
        import comfy.model_management as model_management
        import comfy.utils
        import folder_paths
        from comfy_api.latest import io
    except ImportError as error:
        raise ComfyImportError(
            f"ComfyUI's dependencies are missing ({error}): install ComfyUI's requirements and run "
            "tests/host/prepare_comfyui.py, see docs/testing.md"
        ) from error
    if base is not None:
        base = pathlib.Path(base)
        folder_paths.set_output_directory(str(base / "output"))
        folder_paths.set_input_directory(str(base / "input"))
        folder_paths.set_temp_directory(str(base / "temp"))
    return types.SimpleNamespace(root=pathlib.Path(root), base=base, folder_paths=folder_paths,
                                 model_management=model_management, utils=comfy.utils, io=io)


def load_pack(name: str = "pano360"):
    """Import this checkout as package ``name`` (as tests/conftest.py does)."""
    existing = sys.modules.get(name)
    if existing is not None and pathlib.Path(existing.__file__).resolve().parent == ROOT:
        return existing
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
