"""``python -m pano360 workflows {build,check,schemas}``: the bundled workflows' tools.

- ``build``: write each UI-format workflow ``workflows/<name>.json`` from its API-format
  twin ``workflows/api/<name>.json`` (the twin is the source of truth) and its template
  thumbnail ``workflows/<name>.jpg``.  The widgets follow the oldest supported ComfyUI's
  schemas (or ``--server``/``--schemas``/``--comfyui-version``); node sizes fit every
  recorded version, so a node that grew in a newer ComfyUI does not overlap there.
- ``check``: validate every API twin against the node schemas of every recorded ComfyUI
  version (or the given server/files), check that each UI file converts back to its twin
  under each, that each has a thumbnail, and that every model file it needs is listed in
  ``client/model_sources.py`` (public download or why not); list the model files each
  workflow needs.  Exit code 1 on any error.
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

from . import thumbnails
from .convert import ConversionError, api_to_ui, ui_to_api
from ..media.atomic import write_json
from .model_sources import NOT_PUBLIC, PUBLIC_MODELS
from .schema import (PACK_ROOT, SCHEMA_DIR, SchemaError, SchemaSet, fetch_object_info, recorded_schema_sets,
                     recorded_versions, schema_files, strip_object_info)
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


def label_version(label: str) -> tuple[int, ...] | None:
    """The ComfyUI version a schema set's label names (``"0.33.0"``), or None for a server
    URL or given files."""
    import re

    return parse_version(label) if re.fullmatch(r"\d+\.\d+\.\d+", label) else None


def runs_on(name: str, label: str) -> bool:
    """Whether workflow ``name`` runs on the ComfyUI whose schema set is labelled ``label``
    (unversioned labels: assumed yes; the check then reports what is missing)."""
    version = label_version(label)
    return version is None or version >= min_comfyui(name)[0]


def schemas_for(name: str, sets: dict[str, SchemaSet]) -> dict[str, SchemaSet]:
    """The sets of ``sets`` (oldest first) for ComfyUI versions workflow ``name`` runs on;
    the first one gives its UI file's widgets."""
    return {label: s for label, s in sets.items() if runs_on(name, label)}


def api_twins(workflows_dir: Path) -> list[Path]:
    return sorted((workflows_dir / "api").glob("*.json"))


def ui_path(api_file: Path) -> Path:
    return api_file.parent.parent / api_file.name


def thumbnail_path(api_file: Path) -> Path:
    """``workflows/<name>.jpg``: where both ComfyUI frontends fetch a template's picture."""
    return api_file.parent.parent / f"{api_file.stem}.jpg"


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


def check_workflow(api_file: Path, schemas: SchemaSet, require_ui: bool = True, bundled: bool = False) -> WorkflowReport:
    """Validate one API twin and its UI file (if ``require_ui``).  ``bundled`` (the pack's
    own workflows): also require a thumbnail and a known source for every model file."""
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
    for need in report.needs if bundled else ():
        if need.filename not in PUBLIC_MODELS and need.filename not in NOT_PUBLIC:
            report.issues.append(Issue(
                need.node_id, need.class_type, need.input, "model_source_unknown",
                f"{need.filename}: say where users get it in client/model_sources.py (PUBLIC_MODELS with its "
                "direct download URL, or NOT_PUBLIC with the reason); the UI file's download prompt comes from there"))
    if not require_ui or report.skipped:
        return report
    if bundled and not thumbnail_path(api_file).is_file():
        report.issues.append(Issue("", "", None, "thumbnail_missing",
                                   f"{thumbnail_path(api_file).name} is missing: run `python -m pano360 workflows build`"))
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
        for spec in schema.widgets_for(node.get("inputs", {})):
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


def build_workflow(api_file: Path, schemas: SchemaSet, layout_schemas=()) -> Path:
    """Write the UI file and the thumbnail of one API twin; returns the UI file."""
    api = json.loads(api_file.read_text(encoding="utf-8"))
    ui = api_to_ui(api, schemas, name=api_file.stem, layout_schemas=tuple(layout_schemas))
    out = ui_path(api_file)
    write_json(out, ui, replace=True)
    thumbnails.write(thumbnail_path(api_file), api_file.stem, api, schemas)
    return out


def _fetch_server(url: str) -> SchemaSet:
    import aiohttp

    async def fetch():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            return await fetch_object_info(session, url)

    schemas = SchemaSet()
    schemas.add(asyncio.run(fetch()), url)
    return schemas


def load_schema_sets(args) -> dict[str, SchemaSet]:
    """``{label: SchemaSet}`` the command works with: the live server, the given files, one
    recorded version, or (default) every recorded ComfyUI version, oldest first."""
    if getattr(args, "server", None):
        return {args.server: _fetch_server(args.server)}
    if getattr(args, "schemas", None):
        return {"given schemas": SchemaSet.from_files(*args.schemas)}
    if getattr(args, "comfyui_version", None):
        return {args.comfyui_version: SchemaSet.from_files(*schema_files(args.comfyui_version))}
    sets = recorded_schema_sets()
    if not sets:
        raise SchemaError(f"no node schemas: {SCHEMA_DIR} has no recorded <version>/core_object_info.json; "
                          "pass --schemas FILE... or --server URL")
    return sets


def load_schemas(args) -> SchemaSet:
    """The one schema set ``build`` uses for widgets (the first of :func:`load_schema_sets`)."""
    return next(iter(load_schema_sets(args).values()))


def _run_build(args, sets: dict[str, SchemaSet]) -> int:
    recorded = recorded_schema_sets()
    failed = 0
    for api_file in api_twins(args.dir):
        # widgets: the oldest given ComfyUI the workflow runs on (MIN_COMFYUI); sizes fit every
        # recorded version it runs on
        name = api_file.stem
        own = list(schemas_for(name, sets).values())
        needs, newer = min_comfyui(name)
        if not own or any(t not in own[0] for t in newer):
            log.warning("not built %s: it needs ComfyUI %s+ (node types %s); these schemas are for an older one "
                        "(record that version's, or pass --server/--schemas)", api_file.name,
                        ".".join(map(str, needs)), ", ".join(newer))
            continue
        schemas = own[0]
        layout = own[1:] + list(schemas_for(name, recorded).values())
        try:
            out = build_workflow(api_file, schemas, layout)
            log.info("built %s", out.relative_to(args.dir.parent) if args.dir.parent in out.parents else out)
        except (ConversionError, json.JSONDecodeError) as exc:
            failed += 1
            log.error("cannot build %s: %s", api_file.name, exc)
    return 1 if failed else 0


def _run_check(args, sets: dict[str, SchemaSet]) -> int:
    n_errors = 0
    for label, schemas in sets.items():
        if len(sets) > 1:
            log.info("== node schemas of ComfyUI %s", label)
        n_errors += _check_all(args, schemas, label)
    return 1 if n_errors else 0


def _check_all(args, schemas: SchemaSet, label: str = "") -> int:
    """Check every workflow against one schema set (``label``: its ComfyUI version, or a
    server/file label); returns the number of errors.  A workflow for a newer ComfyUI
    (MIN_COMFYUI) is checked there only for being refused for exactly its newer node types."""
    twins = api_twins(args.dir)
    if not twins:
        log.error("no API workflows in %s", args.dir / "api")
        return 1
    n_errors = 0
    for api_file in twins:
        if not runs_on(api_file.stem, label):
            n_errors += _check_refused(api_file, schemas, label)
            continue
        report = check_workflow(api_file, schemas, require_ui=not args.api_only,
                                bundled=args.dir.resolve() == WORKFLOWS_DIR.resolve())
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
            log.warning("  not checked (no schema for these nodes here: record the pack's with "
                        "`bash .ci/hosts record-schemas`; newer core nodes need a newer ComfyUI's): %s",
                        ", ".join(report.skipped))
        n_errors += len(report.errors)
    for stray in sorted(p.name for p in args.dir.glob("*.json") if not (args.dir / "api" / p.name).is_file()):
        log.error("%s: UI workflow without an API twin in api/ (write api/%s, then build)", stray, stray)
        n_errors += 1
    log.info("%d workflow(s), %d error(s)", len(twins), n_errors)
    return n_errors


def _check_refused(api_file: Path, schemas: SchemaSet, label: str) -> int:
    """A workflow on a ComfyUI older than its MIN_COMFYUI: the only errors must be its
    declared newer node types missing.  Returns the number of errors."""
    name = api_file.stem
    needs, newer = min_comfyui(name)
    api = json.loads(api_file.read_text(encoding="utf-8"))
    issues = [i for i in validate_prompt(api, schemas) if i.severity == "error"]
    other = [i for i in issues if not (i.kind == "missing_node_type" and i.class_type in newer)]
    if not newer or any(t in schemas for t in newer):
        other.append(Issue("", "", None, "min_comfyui", f"MIN_COMFYUI says {name} needs ComfyUI "
                           f"{'.'.join(map(str, needs))}, but ComfyUI {label} has {', '.join(t for t in newer if t in schemas)}"))
    log.info("%s: %s (needs ComfyUI %s; refused here for %s)", name, "FAIL" if other else "ok",
             ".".join(map(str, needs)), ", ".join(sorted({i.class_type for i in issues if i not in other})))
    for issue in other:
        log.error("  error: %s", issue)
    return len(other)


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
        p.add_argument("--comfyui-version", choices=recorded_versions() or None,
                       help="only this recorded ComfyUI version's schemas (default: build with the oldest, "
                            "check against all)")
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
        sets = load_schema_sets(args)
    except (SchemaError, OSError) as exc:
        log.error("%s", exc)
        return 2
    return _run_build(args, sets) if args.action == "build" else _run_check(args, sets)
