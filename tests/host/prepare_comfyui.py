"""Make the PyPI torchvision/torchaudio wheels importable next to a CPU-only torch.

ComfyUI 0.3.64 imports torchvision at start-up (``comfy/sd.py``) and torchaudio for its
audio nodes.  On Linux x86_64 PyPI ships only CUDA builds of torchvision 0.28.0 and
torchaudio 2.11.0; next to the CPU wheel of torch 2.13.0 their C++ extensions cannot
load (``libc10_cuda.so`` is missing) and two spots turn that into an import error:

* ``torchvision/_meta_registrations.py`` registers fake kernels for
  ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which raises
  ``RuntimeError: operator torchvision::nms does not exist``;
* ``torchaudio/_extension/utils.py::_load_lib`` re-raises the ``OSError`` of
  ``torch.ops.load_library``.

This script guards both spots in the *installed* packages of a virtual environment
(see docs/testing.md and ../shared/specs/comfyui-host.md §2).  It never touches
ComfyUI's own code.  It is idempotent: a patched file carries the marker
``PANO360_GUARD`` and is left alone.  Re-run it after reinstalling torchvision or
torchaudio.  The pure-Python parts ComfyUI uses keep working; the C++ ops (nms,
roi_align, deform_conv2d, torchaudio's forced_align, ...) stay unavailable.

Usage::

    /path/to/venv/bin/python tests/host/prepare_comfyui.py            # this interpreter's env
    python tests/host/prepare_comfyui.py --site-packages /venv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import pathlib
import subprocess
import sys

log = logging.getLogger("pano360.prepare_comfyui")

MARKER = "PANO360_GUARD"

# --- torchvision: route the two unconditional register_fake decorators through a guard.
TV_FILE = pathlib.Path("torchvision") / "_meta_registrations.py"
TV_OLD = "@torch.library.register_fake("
TV_NEW = "@_pano360_register_fake_if_ops("
TV_HELPER = f'''

# {MARKER}: the C++ extension of this (CUDA) wheel cannot load next to CPU torch, so
# the torchvision ops do not exist; register their fake kernels only when they do.
def _pano360_register_fake_if_ops(op_name):
    if torchvision.extension._has_ops():
        return torch.library.register_fake(op_name)
    return lambda fn: fn
'''
TV_ANCHOR = "import torchvision.extension  # noqa: F401\n"

# --- torchaudio: treat a library that fails to load like an absent one.
TA_FILE = pathlib.Path("torchaudio") / "_extension" / "utils.py"
TA_OLD = "    torch.ops.load_library(paths[0])\n    return True\n"
TA_NEW = f"""    try:
        torch.ops.load_library(paths[0])
    except OSError as error:  # {MARKER}: CUDA build next to CPU torch
        warnings.warn(f"torchaudio extension {{lib}} not loaded: {{error}}")
        return False
    return True
"""


class PatchError(RuntimeError):
    """A file does not look like the version this script knows how to patch."""


def patch_torchvision(site_packages: pathlib.Path) -> str:
    """Guard torchvision's fake-kernel registrations; returns 'patched' or 'already patched'."""
    path = site_packages / TV_FILE
    text = path.read_text()
    if MARKER in text:
        return "already patched"
    if TV_OLD not in text or TV_ANCHOR not in text:
        raise PatchError(f"{path}: expected {TV_OLD!r} and {TV_ANCHOR!r}; unknown torchvision version")
    text = text.replace(TV_OLD, TV_NEW).replace(TV_ANCHOR, TV_ANCHOR + TV_HELPER, 1)
    path.write_text(text)
    return "patched"


def patch_torchaudio(site_packages: pathlib.Path) -> str:
    """Guard torchaudio's ``_load_lib``; returns 'patched' or 'already patched'."""
    path = site_packages / TA_FILE
    text = path.read_text()
    if MARKER in text:
        return "already patched"
    if TA_OLD not in text:
        raise PatchError(f"{path}: expected {TA_OLD!r}; unknown torchaudio version")
    path.write_text(text.replace(TA_OLD, TA_NEW, 1))
    return "patched"


def default_site_packages() -> pathlib.Path:
    """The site-packages holding torchvision for this interpreter (found without importing it)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise PatchError(f"torchvision is not installed for {sys.executable}")
    return pathlib.Path(spec.origin).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-packages", type=pathlib.Path, default=None,
                        help="site-packages to patch (default: this interpreter's)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the import check (only meaningful for this interpreter's env)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    site = args.site_packages or default_site_packages()
    for name, patch, rel in (("torchvision", patch_torchvision, TV_FILE), ("torchaudio", patch_torchaudio, TA_FILE)):
        if not (site / rel).is_file():
            log.warning("%s: %s not found in %s, skipped", name, rel, site)
            continue
        log.info("%s: %s (%s)", name, patch(site), site / rel)
    if args.site_packages is None and not args.no_check:
        check = subprocess.run([sys.executable, "-c", "import torchvision, torchaudio"],
                               capture_output=True, text=True, timeout=300)
        if check.returncode != 0:
            log.error("import torchvision, torchaudio still fails:\n%s", check.stderr[-3000:])
            return 1
        log.info("import torchvision, torchaudio: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
