"""The random SD1.5-shaped checkpoint loads through ComfyUI's stock loader and samples,
and the client follows the run over the websocket."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def test_random_sd15_checkpoint_runs_text_to_image(comfy_server, sd15_checkpoint):
    """CheckpointLoaderSimple -> CLIPTextEncode -> KSampler (1 step, 64x64) -> VAEDecode ->
    SaveImage succeeds; the websocket reports KSampler's progress (ComfyUI's ProgressBar
    path, the one nodes/_host.progress_callback drives) and the end of the prompt."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a panorama"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 1, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "pano360_tests/sd15"}},
    }
    comfy_server.free()  # a cached earlier run would execute nothing
    entry, events = comfy_server.run_with_events(prompt, timeout=240)
    assert entry["status"]["status_str"] == "success", comfy_server.error_message(entry)

    image = Image.open(io.BytesIO(comfy_server.view(**entry["outputs"]["7"]["images"][0])))
    assert image.size == (64, 64)
    assert np.isfinite(np.asarray(image, dtype=np.float64)).all()
    log = comfy_server.log_text()
    assert "model_type EPS" in log
    assert "missing" not in log.lower().split("model_type eps", 1)[1][:2000]  # no missing-key warnings

    progress = [(d["value"], d["max"], d["node"]) for kind, d in events if kind == "progress"]
    assert progress and progress[-1] == (1, 1, "5"), progress
    kind, data = events[-1]
    assert kind == "executing" and data["node"] is None and data["prompt_id"] == entry["prompt"][1]
