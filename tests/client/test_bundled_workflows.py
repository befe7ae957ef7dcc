"""Every bundled workflow: valid against the node schemas, UI file in sync, documented.

Parametrised over ``workflows/api/*.json`` (the API twins are the source of truth; the
UI files ``workflows/<name>.json`` are written from them by
``python -m pano360 workflows build``).  Pack nodes are checked against
``workflows/schemas/pano360_object_info.json``, recorded from the live nodes; while that
file records no Pano360 node, workflows using pack nodes are skipped with that reason.
"""

import json
import re

import pytest

from conftest import ROOT
from pano360.client.convert import api_to_ui, ui_to_api
from pano360.client.schema import PACK_SCHEMA_FILE, SchemaSet, default_schema_files
from pano360.client.validate import errors_only, models_needed, validate_prompt
from pano360.client.schema import CORE_SCHEMA_FILE
from pano360.client.workflows_cli import PACK_PREFIX, diff_api, has_pack_schemas, min_comfyui, parse_version

WORKFLOWS = ROOT / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
SCHEMAS = SchemaSet.from_files(*default_schema_files())
DOCS = ROOT / "docs" / "workflows.md"
RECORDED_CORE = parse_version(CORE_SCHEMA_FILE.stem.rsplit("-", 1)[-1])  # core_object_info-<version>.json


def load(api_file):
    api = json.loads(api_file.read_text(encoding="utf-8"))
    if any(n["class_type"].startswith(PACK_PREFIX) for n in api.values()) and not has_pack_schemas(SCHEMAS):
        pytest.skip(f"{PACK_SCHEMA_FILE.relative_to(ROOT)} records no Pano360 node yet, so the pack's node "
                    "schemas are unknown (record them: COMFYUI_ROOT=... python tests/host/record_schemas.py)")
    return api


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_validates_against_the_schemas(api_file):
    api = load(api_file)
    errors = [str(i) for i in errors_only(validate_prompt(api, SCHEMAS))]
    needs, newer = min_comfyui(api_file.stem)
    if needs > RECORDED_CORE:
        # a workflow for a newer ComfyUI than the recorded core schemas: unknown are exactly
        # the node types it declares newer (MIN_COMFYUI); the rest must validate
        assert sorted(errors) == sorted(f"node {nid} ({n['class_type']}): node type '{n['class_type']}' does not "
                                        "exist in the node schemas" for nid, n in api.items()
                                        if n["class_type"] in newer), errors
        return
    assert errors == []
    for need in models_needed(api, SCHEMAS):
        assert need.folder, need


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_ui_file_converts_back_to_its_api_twin(api_file):
    api = load(api_file)
    if min_comfyui(api_file.stem)[0] > RECORDED_CORE:
        pytest.skip(f"needs ComfyUI {min_comfyui(api_file.stem)[0]}; its UI file is built from that version's "
                    "recorded core schemas, not recorded here")
    ui_file = WORKFLOWS / api_file.name
    assert ui_file.is_file(), f"{ui_file.name} missing: run python -m pano360 workflows build"
    ui = json.loads(ui_file.read_text(encoding="utf-8"))
    assert diff_api(api, ui_to_api(ui, SCHEMAS)) == []
    assert ui == api_to_ui(api, SCHEMAS, name=api_file.stem), "stale UI file: run python -m pano360 workflows build"


def test_every_ui_workflow_has_an_api_twin():
    stray = [p.name for p in WORKFLOWS.glob("*.json") if not (WORKFLOWS / "api" / p.name).is_file()]
    assert stray == [], "UI workflows without workflows/api/ twin"


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_has_a_docs_section_naming_its_model_files(api_file):
    api = load(api_file)
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"^### `?{re.escape(api_file.stem)}`?\s*$(.*?)(?=^### |\Z)", text, re.M | re.S)
    assert match, f"docs/workflows.md needs a section '### {api_file.stem}' (copy the template there)"
    for need in models_needed(api, SCHEMAS):
        assert need.filename in match.group(1) and f"models/{need.folder}" in match.group(1), \
            f"section {api_file.stem} must say where {need.filename} goes (models/{need.folder}/)"
