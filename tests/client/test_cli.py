"""The command-line tools: ``workflows build/check`` and ``batch`` (argument handling, exit codes)."""

import argparse
import asyncio
import json
import logging
import threading

from fake_comfyui import FakeComfyUI
from pano360.client import batch, workflows_cli
from pano360.client.schema import CORE_SCHEMA_FILE

API = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
    "2": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
}


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def workflows(argv):
    return workflows_cli.run(parse(workflows_cli, argv))


def test_build_then_check_passes_and_lists_model_folders(tmp_path, caplog):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "demo.json").write_text(json.dumps(API))
    schemas = ["--schemas", str(CORE_SCHEMA_FILE)]
    assert workflows(["build", "--dir", str(tmp_path), *schemas]) == 0
    assert json.loads((tmp_path / "demo.json").read_text())["nodes"]
    with caplog.at_level(logging.INFO):
        assert workflows(["check", "--dir", str(tmp_path), *schemas]) == 0
    assert "models/checkpoints/sd15.safetensors (node 4 CheckpointLoaderSimple.ckpt_name)" in caplog.text


def test_check_fails_on_a_stale_ui_file_and_on_schema_errors(tmp_path, caplog):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "demo.json").write_text(json.dumps(API))
    schemas = ["--schemas", str(CORE_SCHEMA_FILE)]
    workflows(["build", "--dir", str(tmp_path), *schemas])
    changed = json.loads(json.dumps(API))
    changed["1"]["inputs"]["width"] = 16
    changed["2"]["inputs"]["sampler_name"] = "eulr"
    changed["5"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5.safetensors", "type": "wan"}}
    (tmp_path / "api" / "demo.json").write_text(json.dumps(changed))
    with caplog.at_level(logging.INFO):
        assert workflows(["check", "--dir", str(tmp_path), *schemas]) == 1
    assert "node 1 input width: 16 vs 8" in caplog.text
    assert "node 2 (KSamplerSelect) input sampler_name: 'eulr' is not one of" in caplog.text
    assert "node 5 (CLIPLoader) input device: optional widget missing from the API twin" in caplog.text
    (tmp_path / "orphan.json").write_text("{}")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert workflows(["check", "--dir", str(tmp_path), *schemas]) == 1
    assert "orphan.json: UI workflow without an API twin" in caplog.text


def test_batch_dry_run_lists_the_product_of_the_sweep(tmp_path, caplog):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(API))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    args = parse(batch, [str(wf), "--out", str(tmp_path / "o"), "--prompts", str(prompts),
                         "--prompt-target", "3.filename_prefix", "--set", "1.width=8,16,32", "--dry-run"])
    with caplog.at_level(logging.INFO):
        assert batch.run(args) == 0
    assert "6 job(s)" in caplog.text


def test_batch_cli_runs_against_a_server_and_reports_errors(tmp_path, caplog):
    api = {k: v for k, v in API.items() if k != "4"}
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(api))
    loop = asyncio.new_event_loop()
    server = FakeComfyUI(json.loads(CORE_SCHEMA_FILE.read_text()))
    url = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        args = parse(batch, [str(wf), "--out", str(tmp_path / "o"), "--server", url, "--set", "1.color=1,2",
                             "--poll-interval", "0.2"])
        assert batch.run(args) == 0
        assert len(server.executed) == 2
        bad = parse(batch, [str(wf), "--out", str(tmp_path / "o2"), "--server", url, "--set", "1.widht=1"])
        with caplog.at_level(logging.INFO):
            assert batch.run(bad) == 2
        assert "node 1 (EmptyImage) has no input 'widht'" in caplog.text
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
