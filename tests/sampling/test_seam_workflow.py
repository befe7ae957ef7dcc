"""The seamless-panorama API workflow against the recorded schemas (host-free): core and
pack nodes of the oldest supported ComfyUI, workflows/schemas/<version>/ (kept current by
tests/host/test_schemas.py)."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT

from pano360.client.schema import CORE_SCHEMA_FILE, PACK_SCHEMA_FILE, SchemaSet
from pano360.client.validate import errors_only, models_needed, validate_prompt

WORKFLOW = ROOT / "workflows" / "api" / "seamless_panorama.json"


@pytest.fixture(scope="module")
def prompt():
    return json.loads(WORKFLOW.read_text())


def test_seamless_panorama_validates_against_recorded_schemas(prompt):
    for path in (CORE_SCHEMA_FILE, PACK_SCHEMA_FILE):
        if not path.is_file():
            pytest.skip(f"recorded schemas missing: {path}")
    schemas = SchemaSet.from_files(CORE_SCHEMA_FILE, PACK_SCHEMA_FILE)
    issues = validate_prompt(prompt, schemas)
    assert not errors_only(issues), "\n".join(map(str, errors_only(issues)))
    # the one model file it needs is the one docs/seam.md names
    needs = [(n.folder, n.filename) for n in models_needed(prompt, schemas)]
    assert needs == [("checkpoints", "v1-5-pruned-emaonly-fp16.safetensors")]
    assert "v1-5-pruned-emaonly-fp16.safetensors" in (ROOT / "docs" / "seam.md").read_text()


def test_seamless_panorama_samples_the_patched_model_on_a_2_to_1_latent(prompt):
    kinds = {k: n["class_type"] for k, n in prompt.items()}
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]
    assert kinds[sampler["model"][0]] == "Pano360SeamRollPatch"
    latent = prompt[sampler["latent_image"][0]]["inputs"]
    assert latent["width"] == 2 * latent["height"]
    decode = next(k for k, v in kinds.items() if v == "Pano360SeamBlendedVAEDecode")
    assert prompt[decode]["inputs"]["samples"] == [next(k for k, v in kinds.items() if v == "KSampler"), 0]
