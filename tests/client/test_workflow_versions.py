"""The declared minimum ComfyUI versions of bundled workflows (client/workflows_cli.MIN_COMFYUI)."""

import json

from conftest import ROOT
from pano360.client.workflows_cli import MIN_COMFYUI, min_comfyui, parse_version


def test_versions_parse_as_comfyui_reports_them():
    assert parse_version("0.3.64") == (0, 3, 64)
    assert parse_version("0.33.0") == (0, 33, 0)
    assert parse_version("0.4.1-rc2") == (0, 4, 1)
    assert parse_version("0.3.64") < parse_version("0.33.0")


def test_each_declared_workflow_exists_and_uses_the_node_types_it_names():
    for name, (version, newer) in MIN_COMFYUI.items():
        api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text(encoding="utf-8"))
        assert version > (0, 3, 64) and newer
        assert set(newer) <= {n["class_type"] for n in api.values()}, name


def test_workflows_not_declared_run_on_the_oldest_supported_version():
    assert min_comfyui("flux_360_lora_panorama") == ((0, 3, 64), ())
