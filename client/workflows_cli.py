"""``python -m pano360 workflows {build,check,schemas}``: the bundled workflows' tools.

- ``build``: write each UI-format workflow ``workflows/<name>.json`` from its API-format
  twin ``workflows/api/<name>.json`` (the twin is the source of truth).
- ``check``: validate every API twin against the node schemas, check that each UI file
  converts back to its twin, and list the model files each workflow needs.  Exit code 1
  on any error.
- ``schemas``: record node schemas (``/object_info``) from a live server or a file,
  optionally keeping only some node types and stripping prose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .convert import ConversionError, api_to_ui, ui_to_api
from ..media.atomic import write_json
from .schema import PACK_ROOT, SCHEMA_DIR, SchemaError, SchemaSet, default_schema_files, fetch_object_info, strip_object_info
from .validate import Issue, ModelNeed, models_needed, validate_prompt

log = logging.getLogger("pano360.workflows")
WORKFLOWS_DIR = PACK_ROOT / "workflows"
PACK_PREFIX = "Pano360"

# Bundled workflows that need a ComfyUI newer than the oldest supported one (0.3.64), and
# the core node types that make it so.  On an older server such a workflow is refused by
# POST /prompt for a missing node type, which is all the tests expect of it there.
MIN_COMFYUI = {
    # LTX-2.3 audio+video: ComfyUI's LTX-2 nodes and ManualSigmas (its LTX-2.3 templates)
    "ltx_360_video": ((0, 33, 0), ("LTXAVTextEncoderLoader", "LTXVAudioVAELoader", "LTXVEmptyLatentAudio",
                                   "LTXVConcatAVLatent", "LTXVSeparateAVLatent", "ManualSigmas")),
}


def min_comfyui(name: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(oldest ComfyUI version, node types newer than 0.3.64) that workflow ``name`` needs;
    ``((0, 3, 64), ())`` for the workflows every supported version runs."""
    return MIN_COMFYUI.get(name, ((0, 3, 64), ()))


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.33.0"`` -> ``(0, 33, 0)`` (a suffix such as ``-rc1`` or ``+local`` is ignored)."""
    import re

    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0].split("+")[0])[:3])


def api_twins(workflows_dir: Path) -> list[Path]:
    return sorted((workflows_dir / "api").glob("*.json"))


def ui_path(api_file: Path) -> Path:
    return api_file.parent.parent / api_file.name


def has_pack_schemas(schemas: SchemaSet) -> bool:
    return any(name.startswith(PACK_PREFIX) for name in schemas)


@dataclass
class WorkflowReport:
    name: str
    issues: list[Issue] = field(default_factory=list)
    needs: list[ModelNeed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # pack node types not checked

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


def check_workflow(api_file: Path, schemas: SchemaSet, require_ui: bool = True) -> WorkflowReport:
    """Validate one API twin and its UI file (if ``require_ui``)."""
    report = WorkflowReport(api_file.stem)
    try:
        api = json.loads(api_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        report.issues.append(Issue("", "", None, "unreadable", f"cannot read {api_file}: {exc}"))
        return report
    pack_known = has_pack_schemas(schemas)
    needs, newer = min_comfyui(api_file.stem)
    for issue in validate_prompt(api, schemas):
        if issue.kind == "missing_node_type" and issue.class_type.startswith(PACK_PREFIX) and not pack_known:
            report.skipped.append(f"node {issue.node_id} ({issue.class_type})")
        elif issue.kind == "missing_node_type" and issue.class_type in newer:
            version = ".".join(map(str, needs))
            report.skipped.append(f"node {issue.node_id} ({issue.class_type}, ComfyUI {version}+)")
        else:
            report.issues.append(issue)
    report.issues += incomplete_widgets(api, schemas)
    report.needs = models_needed(api, schemas)
    if not require_ui or report.skipped:
        return report
    ui_file = ui_path(api_file)
    if not ui_file.is_file():
        report.issues.append(Issue("", "", None, "ui_missing",
                                   f"{ui_file.name} is missing: run `python -m pano360 workflows build`"))
        return report
    try:
        back = ui_to_api(json.loads(ui_file.read_text(encoding="utf-8")), schemas)
    except (ConversionError, json.JSONDecodeError) as exc:
        report.issues.append(Issue("", "", None, "ui_invalid", f"{ui_file.name}: {exc}"))
        return report
    for diff in diff_api(api, back):
        report.issues.append(Issue("", "", None, "ui_stale",
                                   f"{ui_file.name} differs from its API twin ({diff}): run "
                                   "`python -m pano360 workflows build`"))
    return report


def incomplete_widgets(api: dict, schemas: SchemaSet) -> list[Issue]:
    """Widget inputs an API twin leaves out: the editor always sends every widget, so the
    UI file would not convert back to the twin."""
    issues = []
    for node_id, node in api.items():
        schema = schemas.get(node.get("class_type")) if isinstance(node, dict) else None
        if schema is None:
            continue
        for spec in schema.widgets:
            if spec.name not in node.get("inputs", {}) and not spec.required:
                issues.append(Issue(str(node_id), schema.class_type, spec.name, "widget_missing",
                                    f"optional widget missing from the API twin (the editor sends it, default "
                                    f"{spec.default!r}); write it out"))
    return issues


def diff_api(expected: dict, got: dict) -> list[str]:
    """Human-readable differences between two API prompts, by node and input."""
    diffs = []
    for node_id in sorted(set(expected) | set(got), key=str):
        a, b = expected.get(node_id), got.get(node_id)
        if a is None or b is None:
            diffs.append(f"node {node_id} only in the {'UI file' if a is None else 'API twin'}")
            continue
        if a.get("class_type") != b.get("class_type"):
            diffs.append(f"node {node_id} is {a.get('class_type')} vs {b.get('class_type')}")
        ia, ib = a.get("inputs", {}), b.get("inputs", {})
        for name in sorted(set(ia) | set(ib)):
            if ia.get(name, "<absent>") != ib.get(name, "<absent>"):
                diffs.append(f"node {node_id} input {name}: {ia.get(name, '<absent>')!r} vs {ib.get(name, '<absent>')!r}")
        if a.get("_meta") != b.get("_meta"):
            diffs.append(f"node {node_id} _meta: {a.get('_meta')!r} vs {b.get('_meta')!r}")
    return diffs


def build_workflow(api_file: Path, schemas: SchemaSet) -> Path:
    api = json.loads(api_file.read_text(encoding="utf-8"))
    ui = api_to_ui(api, schemas, name=api_file.stem)
    out = ui_path(api_file)
    write_json(out, ui, replace=True)
    return out


def load_schemas(args) -> SchemaSet:
    if getattr(args, "server", None):
        import aiohttp

        async def fetch():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                return await fetch_object_info(session, args.server)

        schemas = SchemaSet()
        schemas.add(asyncio.run(fetch()), args.server)
        return schemas
    files = args.schemas or default_schema_files()
    if not files:
        raise SchemaError(f"no node schemas: {SCHEMA_DIR} has no recorded /object_info files; "
                          "pass --schemas FILE... or --server URL")
    return SchemaSet.from_files(*files)


def _run_build(args, schemas: SchemaSet) -> int:
    failed = 0
    for api_file in api_twins(args.dir):
        needs, newer = min_comfyui(api_file.stem)
        if any(t not in schemas for t in newer):
            log.warning("not built %s: it needs ComfyUI %s+ and these schemas lack %s (pass that version's "
                        "recorded /object_info with --schemas, or --server)", api_file.name,
                        ".".join(map(str, needs)), ", ".join(t for t in newer if t not in schemas))
            continue
        try:
            out = build_workflow(api_file, schemas)
            log.info("built %s", out.relative_to(args.dir.parent) if args.dir.parent in out.parents else out)
        except (ConversionError, json.JSONDecodeError) as exc:
            failed += 1
            log.error("cannot build %s: %s", api_file.name, exc)
    return 1 if failed else 0


def _run_check(args, schemas: SchemaSet) -> int:
    twins = api_twins(args.dir)
    if not twins:
        log.error("no API workflows in %s", args.dir / "api")
        return 1
    n_errors = 0
    for api_file in twins:
        report = check_workflow(api_file, schemas, require_ui=not args.api_only)
        status = "FAIL" if report.errors else ("partial" if report.skipped else "ok")
        log.info("%s: %s", report.name, status)
        for issue in report.errors:
            log.error("  error: %s", issue)
        for issue in report.issues:
            if issue.severity == "needs":
                log.info("  needs: %s", issue.message.removeprefix("needs "))
        for need in report.needs:
            log.info("  model: %s", need)
        if report.skipped:
            log.warning("  not checked (no recorded schema for these nodes: record "
                        "workflows/schemas/pano360_object_info.json for the pack's, a newer ComfyUI's core "
                        "schemas for the others): %s", ", ".join(report.skipped))
        n_errors += len(report.errors)
    for stray in sorted(p.name for p in args.dir.glob("*.json") if not (args.dir / "api" / p.name).is_file()):
        log.error("%s: UI workflow without an API twin in api/ (write api/%s, then build)", stray, stray)
        n_errors += 1
    log.info("%d workflow(s), %d error(s)", len(twins), n_errors)
    return 1 if n_errors else 0


def _run_schemas(args) -> int:
    source = args.source
    if source.startswith(("http://", "https://")):
        import aiohttp

        async def fetch():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                return await fetch_object_info(session, source)

        data = asyncio.run(fetch())
    else:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    if args.prefix:
        data = {k: v for k, v in data.items() if k.startswith(args.prefix)}
    if args.strip_prose:
        data = strip_object_info(data)
    write_json(Path(args.out), dict(sorted(data.items())), replace=True)
    log.info("wrote %d node schemas to %s", len(data), args.out)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (("build", "write workflows/<name>.json (UI) from workflows/api/<name>.json"),
                            ("check", "validate the API twins and their UI files; exit 1 on errors")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--dir", type=Path, default=WORKFLOWS_DIR, help="workflows folder (default: the pack's)")
        p.add_argument("--schemas", nargs="+", metavar="OBJECT_INFO_JSON",
                       help="recorded /object_info files (default: workflows/schemas/*.json of the pack)")
        p.add_argument("--server", help="read schemas from a running ComfyUI instead, e.g. http://127.0.0.1:8188")
        if name == "check":
            p.add_argument("--api-only", action="store_true", help="skip the UI files")
    p = sub.add_parser("schemas", help="record node schemas from a server or an /object_info file")
    p.add_argument("source", help="http://host:port of a running ComfyUI, or an /object_info JSON file")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--prefix", help="keep only node types starting with this (e.g. Pano360)")
    p.add_argument("--strip-prose", action="store_true", help="drop descriptions and tooltips")


def run(args) -> int:
    if args.action == "schemas":
        return _run_schemas(args)
    try:
        schemas = load_schemas(args)
    except (SchemaError, OSError) as exc:
        log.error("%s", exc)
        return 2
    return _run_build(args, schemas) if args.action == "build" else _run_check(args, schemas)
