"""Record the ``/object_info`` schemas of every Pano360 node, without starting a server.

    COMFYUI_ROOT=/path/to/ComfyUI python tests/host/record_schemas.py [--check]

writes ``workflows/schemas/pano360_object_info.json`` (the ``workflows`` tools validate
bundled workflows against it plus ComfyUI's recorded core schemas).  ``--check`` only
compares and exits 1 when the file is stale.  ComfyUI is imported in process with
``--cpu`` defaults; a throw-away base directory keeps its folders untouched.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

log = logging.getLogger("pano360.record_schemas")
RECORDED = comfy_env.ROOT / "workflows" / "schemas" / "pano360_object_info.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_ROOT"), help="ComfyUI folder (default $COMFYUI_ROOT)")
    parser.add_argument("--out", type=pathlib.Path, default=RECORDED)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if the file differs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfyui:
        parser.error("set COMFYUI_ROOT or pass --comfyui (see docs/testing.md)")
    with tempfile.TemporaryDirectory(prefix="pano360-schemas-") as base:
        comfy_env.import_comfy(pathlib.Path(args.comfyui), pathlib.Path(base))
        comfy_env.load_pack()
        from pano360.nodes import _schemas

        info = _schemas.object_info()
        text = _schemas.dumps(info)
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        log.info("%s: %s", args.out, "up to date" if same else "STALE: re-run without --check")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log.info("wrote %s (%d nodes)", args.out, len(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
