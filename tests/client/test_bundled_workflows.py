"""Every bundled workflow: valid against the node schemas of every supported ComfyUI
version, UI file in sync, thumbnail present, model files documented and sourced.

Parametrised over ``workflows/api/*.json`` (the API twins are the source of truth; the
UI files ``workflows/<name>.json`` and thumbnails ``workflows/<name>.jpg`` are written from
them by ``python -m pano360 workflows build``) and over the recorded ComfyUI versions
``workflows/schemas/<version>/`` (core and Pano360 nodes, recorded from live servers by
``bash .ci/hosts record-schemas``).
"""

import json
import re
import subprocess

import pytest
from PIL import Image

from conftest import ROOT
from pano360.client.convert import api_to_ui, ui_to_api
from pano360.client.model_sources import NOT_PUBLIC, PUBLIC_MODELS
from pano360.client.schema import recorded_schema_sets
from pano360.client.validate import errors_only, models_needed, validate_prompt
from pano360.client.workflows_cli import (PACK_PREFIX, diff_api, has_pack_schemas, min_comfyui, runs_on,
                                          schemas_for, thumbnail_path)

WORKFLOWS = ROOT / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
SETS = recorded_schema_sets()
VERSIONS = list(SETS)
OLDEST = SETS[VERSIONS[0]]
DOCS = ROOT / "docs" / "workflows.md"


def own_schemas(api_file):
    """The schemas of the oldest recorded ComfyUI the workflow runs on (its UI widgets)."""
    return next(iter(schemas_for(api_file.stem, SETS).values()))


def test_every_ci_host_version_is_recorded():
    """The versions CI tests (.ci/hosts) are the versions with recorded schemas."""
    ci = subprocess.run(["bash", str(ROOT / ".ci" / "hosts"), "versions"], capture_output=True, text=True,
                        check=True).stdout.split()
    assert VERSIONS == ci == ["0.3.64", "0.33.0"]
    assert all(has_pack_schemas(s) for s in SETS.values()), "record them: bash .ci/hosts record-schemas"


def load(api_file):
    return json.loads(api_file.read_text(encoding="utf-8"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_validates_against_the_schemas(api_file, version):
    api, schemas = load(api_file), SETS[version]
    errors = [str(i) for i in errors_only(validate_prompt(api, schemas))]
    if not runs_on(api_file.stem, version):
        # a workflow for a newer ComfyUI (MIN_COMFYUI): unknown here are exactly the node
        # types it declares newer, and nothing else is wrong
        newer = min_comfyui(api_file.stem)[1]
        assert errors and sorted(errors) == sorted(
            f"node {nid} ({n['class_type']}): node type '{n['class_type']}' does not exist in the node schemas"
            for nid, n in api.items() if n["class_type"] in newer), errors
        return
    assert errors == []
    for need in models_needed(api, schemas):
        assert need.folder, need


@pytest.mark.parametrize(("api_file", "version"), [(f, v) for f in API_FILES for v in VERSIONS if runs_on(f.stem, v)],
                         ids=lambda x: getattr(x, "stem", x))
def test_bundled_ui_file_converts_back_to_its_api_twin(api_file, version):
    """The one UI file (built with the widgets of the oldest version it runs on) reads back
    as the twin under every version it runs on, and is what build writes."""
    api = load(api_file)
    ui_file = WORKFLOWS / api_file.name
    assert ui_file.is_file(), f"{ui_file.name} missing: run python -m pano360 workflows build"
    ui = json.loads(ui_file.read_text(encoding="utf-8"))
    assert diff_api(api, ui_to_api(ui, SETS[version])) == []
    own = list(schemas_for(api_file.stem, SETS).values())
    expected = api_to_ui(api, own[0], name=api_file.stem, layout_schemas=tuple(own))
    assert ui == expected, "stale UI file: run python -m pano360 workflows build"


def test_a_workflow_for_a_newer_comfyui_is_declared_and_runs_on_the_newest():
    """MIN_COMFYUI names node types the oldest version lacks and the newest has."""
    declared = [f for f in API_FILES if min_comfyui(f.stem)[1]]
    assert declared, "ltx_360_video needs ComfyUI 0.33"
    for f in declared:
        newer = min_comfyui(f.stem)[1]
        assert all(t not in OLDEST for t in newer) and all(t in SETS[VERSIONS[-1]] for t in newer), f.stem
        assert runs_on(f.stem, VERSIONS[-1]) and not runs_on(f.stem, VERSIONS[0])


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_has_a_template_thumbnail(api_file):
    path = thumbnail_path(api_file)
    assert path.is_file(), f"{path.name} missing: run python -m pano360 workflows build"
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == (512, 512)


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_loaders_offer_downloads_exactly_for_public_model_files(api_file):
    """Each loader's properties.models entry has name, url and directory (what the
    frontend's download prompt needs) for a public file, and there is none otherwise."""
    api = load(api_file)
    ui = json.loads((WORKFLOWS / api_file.name).read_text(encoding="utf-8"))
    entries = {(n["id"], m["name"]): m for n in ui["nodes"] for m in n.get("properties", {}).get("models", [])}
    for need in models_needed(api, own_schemas(api_file)):
        assert need.filename in PUBLIC_MODELS or need.filename in NOT_PUBLIC, need
        entry = entries.pop((int(need.node_id), need.filename), None)
        if need.filename in PUBLIC_MODELS:
            assert entry == {"name": need.filename, "url": PUBLIC_MODELS[need.filename], "directory": need.folder}
            assert entry["url"].startswith("https://huggingface.co/") and need.filename in entry["url"]
        else:
            assert entry is None, f"{need.filename} is not public: no download prompt"
    assert entries == {}


def test_every_ui_workflow_has_an_api_twin():
    stray = [p.name for p in WORKFLOWS.glob("*.json") if not (WORKFLOWS / "api" / p.name).is_file()]
    assert stray == [], "UI workflows without workflows/api/ twin"
    stray = [p.name for p in WORKFLOWS.glob("*.jpg") if not (WORKFLOWS / "api" / f"{p.stem}.json").is_file()]
    assert stray == [], "thumbnails without a workflow"


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_bundled_workflow_has_a_docs_section_naming_its_model_files(api_file):
    api = load(api_file)
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"^### `?{re.escape(api_file.stem)}`?\s*$(.*?)(?=^### |\Z)", text, re.M | re.S)
    assert match, f"docs/workflows.md needs a section '### {api_file.stem}' (copy the template there)"
    for need in models_needed(api, own_schemas(api_file)):
        assert need.filename in match.group(1) and f"models/{need.folder}" in match.group(1), \
            f"section {api_file.stem} must say where {need.filename} goes (models/{need.folder}/)"


def test_pack_prefix_is_what_the_nodes_use():
    assert all(name.startswith(PACK_PREFIX) for s in SETS.values() for name in s
               if s[name].category.startswith("Pano360"))
