"""Record the ``/object_info`` node schemas of one ComfyUI version for the workflow tools.

    COMFYUI_ROOT=/path/to/ComfyUI python tests/host/record_schemas.py [--check]

starts that ComfyUI (``--cpu --disable-api-nodes``, this checkout as its only custom
node, an empty base directory, so no model or input file is listed) with this
interpreter, reads ``GET /object_info`` and writes, for its version ``X.Y.Z``:

* ``workflows/schemas/X.Y.Z/core_object_info.json``: every core node, prose stripped
  (``client.schema.strip_object_info``), compact;
* ``workflows/schemas/X.Y.Z/pano360_object_info.json``: every Pano360 node exactly as
  served (tooltips kept: a loader's tooltip names its ``models/<folder>``).

``--check`` only compares and exits 1 when a file is stale.  Record every version at
once with ``bash .ci/hosts record-schemas`` (see docs/testing.md).
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
import comfy_server  # noqa: E402

log = logging.getLogger("pano360.record_schemas")
SCHEMA_DIR = comfy_env.ROOT / "workflows" / "schemas"
CORE_FILE = "core_object_info.json"
PACK_FILE = "pano360_object_info.json"


def split_object_info(served: dict) -> tuple[dict, dict]:
    """(core, pack) node schemas of one ``/object_info`` answer."""
    pack_module = f"custom_nodes.{comfy_env.PACK_DIRNAME}"
    pack = {k: v for k, v in served.items() if v.get("python_module") == pack_module}
    core = {k: v for k, v in served.items() if not str(v.get("python_module") or "").startswith("custom_nodes.")}
    return core, pack


def texts(served: dict) -> dict[str, str]:
    """File name -> the text to record, for one ``/object_info`` answer."""
    comfy_env.load_pack()
    from pano360.client.schema import dumps_core_schemas, dumps_pack_schemas

    core, pack = split_object_info(served)
    return {CORE_FILE: dumps_core_schemas(core), PACK_FILE: dumps_pack_schemas(pack)}


def fetch(comfyui_root: pathlib.Path) -> dict:
    """``GET /object_info`` of a fresh server of ``comfyui_root`` (about 10-20 s)."""
    with tempfile.TemporaryDirectory(prefix="pano360-schemas-") as tmp:
        base = comfy_server.make_base_directory(pathlib.Path(tmp) / "base")
        proc, client = comfy_server.start_server(comfyui_root, base, pathlib.Path(tmp) / "comfyui.log")
        try:
            return client.object_info()
        finally:
            comfy_server.stop_server(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_ROOT"), help="ComfyUI folder (default $COMFYUI_ROOT)")
    parser.add_argument("--out-dir", type=pathlib.Path, default=None,
                        help="folder to write (default workflows/schemas/<version of that ComfyUI>)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if a file differs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfyui:
        parser.error("set COMFYUI_ROOT or pass --comfyui (see docs/testing.md)")
    root = pathlib.Path(args.comfyui).resolve()
    version = ".".join(map(str, comfy_env.comfyui_version(root)))
    out_dir = args.out_dir or SCHEMA_DIR / version
    wanted = texts(fetch(root))
    stale = [name for name, text in wanted.items()
             if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != text]
    if args.check:
        for name in wanted:
            log.info("%s: %s", out_dir / name, "STALE: re-run without --check" if name in stale else "up to date")
        return 1 if stale else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        log.info("wrote %s (%s)", out_dir / name, "changed" if name in stale else "unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
