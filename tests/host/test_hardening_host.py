"""Issue 18's probes on a real ComfyUI, through POST /prompt and the websocket (and, where a
probe needs a model file or a race no single server can make, in process).

Each bad value must come back naming the node ID, the input and what was expected: either
ComfyUI's own validation refuses it (HTTP 400 with ``node_errors``), or the node refuses it
when it runs (``execution_error`` on the websocket).  Files must land inside the output
folder only, with the modes ComfyUI's own SaveImage gives in the same run, and never replace
one another.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat

import numpy as np
import pytest
import torch

pytest.importorskip("comfy_env", reason="tests/host infrastructure not present")

PANO = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0x336699}}


def outcome(server, prompt: dict) -> str:
    """The refusal of ``prompt``: ComfyUI's validation errors (node_errors) or the execution
    error its history records; '' when it ran."""
    reply = server.post_prompt(prompt)
    if reply["status"] != 200 or reply["node_errors"]:
        return json.dumps(reply.get("node_errors") or reply.get("error"))
    import time

    from websockets.sync.client import connect

    host = server.url.split("://", 1)[1]
    with connect(f"ws://{host}/ws?clientId={server.client_id}", open_timeout=10, max_size=None) as ws:
        entry = server.history(reply["prompt_id"])
        deadline = time.monotonic() + 120
        while (entry is None or entry["status"].get("completed") is None) and time.monotonic() < deadline:
            try:
                message = ws.recv(timeout=1)
            except TimeoutError:
                message = None
            # the websocket only paces the wait; the refusal is always read from the history,
            # so two runs compare in one format whether or not the socket saw the error
            entry = server.history(reply["prompt_id"])
    return server.error_message(entry) or ""


# ComfyUI 0.33 checks a V3 node's choices itself ("value_not_in_list"); 0.3.64 leaves them to the node.
CHOICE = ("one of", "Value not in list")


def names(text: str, node: str, input_name: str, expected: str | tuple[str, ...]) -> bool:
    """Whether a refusal names the node ID (not the V3 clone class), the input and the expectation."""
    accepted = expected if isinstance(expected, tuple) else (expected,)
    return node in text and input_name in text and any(e in text for e in accepted) and "Clone" not in text


@pytest.mark.parametrize("prefix", [".", "./.", "a/..", "../outside", "/tmp/abs"])
def test_look_beyond_writes_nowhere_outside_the_output_folder(comfy_server, prefix):
    before = sorted(os.listdir(comfy_server.base))
    prompt = {"1": PANO, "2": {"class_type": "Pano360LookBeyondPerspectiveLoop", "inputs": {
        "panorama": ["1", 0], "num_frames": 2, "fov": 90.0, "size": 8, "cameras_between": 0,
        "folder_prefix": prefix, "save": True}}}
    text = outcome(comfy_server, prompt)
    assert names(text, "Pano360LookBeyondPerspectiveLoop", "folder_prefix", "inside ComfyUI's output folder"), text
    linked = {"1": PANO, "3": {"class_type": "PrimitiveString", "inputs": {"value": prefix}},
              "2": dict(prompt["2"], inputs=dict(prompt["2"]["inputs"], folder_prefix=["3", 0]))}
    text = outcome(comfy_server, linked)   # a linked prefix is only known when the node runs
    assert names(text, "Pano360LookBeyondPerspectiveLoop", "folder_prefix", "inside ComfyUI's output folder"), text
    assert sorted(os.listdir(comfy_server.base)) == before


def test_outputs_get_the_modes_comfyui_saveimage_gets_in_the_same_run(comfy_server):
    prompt = {
        "1": PANO,
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "modes/core"}},
        "3": {"class_type": "Pano360Save360Image", "inputs": {"images": ["1", 0], "format": "png", "jpeg_quality": 95,
                                                              "initial_yaw": 0.0, "filename_prefix": "modes/pano"}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}},
        "5": {"class_type": "Pano360Save360Video", "inputs": {"images": ["4", 0], "fps": 8.0, "crf": 30,
                                                              "stereo_mode": "mono", "filename_prefix": "modes/video"}},
        "6": {"class_type": "Pano360LookBeyondPerspectiveLoop", "inputs": {
            "panorama": ["1", 0], "num_frames": 2, "fov": 90.0, "size": 8, "cameras_between": 0,
            "folder_prefix": "modes/loop", "save": True}},
        "7": {"class_type": "Pano360Preview360", "inputs": {"images": ["4", 0], "as_video": True, "fps": 8.0,
                                                            "stereo_mode": "mono"}},
    }
    assert outcome(comfy_server, prompt) == ""
    out, temp = comfy_server.base / "output" / "modes", comfy_server.base / "temp"
    mode = lambda p: stat.S_IMODE(os.lstat(p).st_mode)
    (core,) = out.glob("core_*.png")
    file_mode, dir_mode = mode(core), mode(out)   # SaveImage's file, and the folder it made
    written = [*out.glob("pano_*.png"), *out.glob("video_*.mp4"), *temp.rglob("*.mp4")]
    (loop,) = out.glob("loop_*")
    written += [p for p in loop.rglob("*") if p.is_file()]
    assert len(written) >= 5
    assert {str(p): mode(p) for p in written} == {str(p): file_mode for p in written}
    assert mode(loop) == dir_mode
    from PIL import Image   # the loop's frames keep the workflow like SaveImage's files (drop one on ComfyUI)

    frame = next(loop.glob("*.png"))
    assert json.loads(Image.open(frame).text["prompt"])["6"]["class_type"] == "Pano360LookBeyondPerspectiveLoop"


def test_two_writers_of_one_name_keep_both_files(comfy_in_process, monkeypatch):
    """Two servers saving one prefix into one output folder compute the same counter; the
    second to publish must take the next free name (not fail, not replace)."""
    from pano360.nodes import output

    real = output.save_image_path
    monkeypatch.setattr(output, "save_image_path", lambda *a: (*real(*a)[:2], 1, *real(*a)[3:]))   # always counter 1
    images = torch.rand(1, 8, 16, 3)
    first = comfy_in_process.run_node(output.Pano360Save360Image, images=images, format="png", jpeg_quality=95,
                                      initial_yaw=0.0, filename_prefix="race/pano")
    before = open(first.args[0], "rb").read()
    second = comfy_in_process.run_node(output.Pano360Save360Image, images=images * 0.5, format="png",
                                       jpeg_quality=95, initial_yaw=0.0, filename_prefix="race/pano")
    assert os.path.basename(first.args[0]) == "pano_00001_.png" and os.path.basename(second.args[0]) == "pano_00002_.png"
    assert open(first.args[0], "rb").read() == before
    video = torch.rand(2, 8, 16, 3)
    paths = [comfy_in_process.run_node(output.Pano360Save360Video, images=video, fps=8.0, crf=30, stereo_mode="mono",
                                       filename_prefix="race/video").args[0] for _ in range(2)]
    assert [os.path.basename(p) for p in paths] == ["video_00001_.mp4", "video_00002_.mp4"]


def _pano_node(class_type: str, **inputs) -> dict:
    return {"1": PANO, "2": {"class_type": class_type, "inputs": {"panorama": ["1", 0], **inputs}}}


@pytest.mark.parametrize("prompt, node, input_name, expected", [
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 96, "batch_size": 1, "color": 0}},
      "2": {"class_type": "Pano360CubemapToEquirect", "inputs": {"cubemap": ["1", 0], "layout": "bogus",
                                                                "height": 0, "mode": "bilinear"}}},
     "Pano360CubemapToEquirect", "layout", ("one of ['stack', 'horizon', 'dice']", "Value not in list")),
    (_pano_node("Pano360RotateEquirect", yaw=math.nan, pitch=0.0, roll=0.0, mode="bilinear"),
     "Pano360RotateEquirect", "yaw", "a finite number"),
    (_pano_node("Pano360RotateEquirect", yaw=0.0, pitch=math.inf, roll=0.0, mode="bilinear"),
     "Pano360RotateEquirect", "pitch", "bigger than max"),   # ComfyUI's own range check catches inf
    (_pano_node("Pano360RotateEquirect", yaw=0.0, pitch=0.0, roll=math.nan, mode="bilinear"),
     "Pano360RotateEquirect", "roll", "a finite number"),
    ({"2": {"class_type": "Pano360Rig", "inputs": {"preset": "single_view", "size": 0, "count": 8, "yaw": 0.0,
                                                  "pitch": 0.0, "roll": 0.0, "fov": math.nan, "custom_json": ""}}},
     "Pano360Rig", "fov", "a finite number"),
    ({"2": {"class_type": "Pano360Rig", "inputs": {"preset": "custom_json", "size": 0, "count": 8, "yaw": 0.0,
                                                  "pitch": 0.0, "roll": 0.0, "fov": 90.0, "custom_json": "[" * 5000}}},
     "Pano360Rig", "custom_json", "nested too deeply"),
    ({"2": {"class_type": "Pano360ViewMask", "inputs": {"regime": "bogus", "views": 8, "frames": 4, "column_view": 0,
                                                       "custom": ""}}},
     "Pano360ViewMask", "regime", CHOICE),
    ({"2": {"class_type": "Pano360ViewMask", "inputs": {"regime": "custom", "views": 8, "frames": 4, "column_view": 0,
                                                       "custom": "[" * 5000}}},
     "Pano360ViewMask", "custom", "nested too deeply"),
    ({"2": {"class_type": "Pano360SamplerSettings", "inputs": {"seed": 0, "steps": 4, "cfg": 5.0,
                                                              "sampler_name": "bogus", "scheduler": "normal"}}},
     "Pano360SamplerSettings", "sampler_name", CHOICE),
    ({"2": {"class_type": "Pano360SamplerSettings", "inputs": {"seed": 0, "steps": 4, "cfg": 5.0,
                                                              "sampler_name": "euler", "scheduler": "bogus"}}},
     "Pano360SamplerSettings", "scheduler", CHOICE),
    ({"1": {"class_type": "EmptyImage", "inputs": {"width": 2, "height": 1, "batch_size": 1, "color": 0}},
      "2": {"class_type": "Pano360RotateEquirect", "inputs": {"panorama": ["1", 0], "yaw": 0.0, "pitch": 0.0,
                                                             "roll": 0.0, "mode": "bilinear"}}},
     "Pano360RotateEquirect", "panorama", "at least 2 pixels high"),
    ({"1": PANO, "2": {"class_type": "Pano360Save360Image", "inputs": {
        "images": ["1", 0], "format": "png", "jpeg_quality": 95, "initial_yaw": math.nan, "filename_prefix": "x"}}},
     "Pano360Save360Image", "initial_yaw", "a finite number"),
    (_pano_node("Pano360PerspectiveSweep", path="keyframes", frames=4, start_yaw=0.0, total_yaw=360.0, pitch=0.0,
                fov=90.0, easing="linear", keyframes="0: yaw=nan", width=16, height=16),
     "Pano360PerspectiveSweep", "keyframes", "finite"),
    ({"2": {"class_type": "Pano360CameraPath", "inputs": {
        "source": "keyframes", "fov_deg": 60.0, "num_frames": 4, "keyframes": "0: yaw=inf", "file": "", "fov_file": "",
        "pose_conversion": "exact", "estimate_fov": False, "yaw_offset_deg": 0.0,
        "relative_to_first": True}}},
     "Pano360CameraPath", "keyframes", "finite"),
    (_pano_node("Pano360PerspectiveSweep", path="yaw_sweep", frames=10000, start_yaw=0.0, total_yaw=360.0, pitch=0.0,
                fov=90.0, easing="linear", keyframes="", width=1280, height=720),
     "Pano360PerspectiveSweep", "frames", "that fits in the"),
], ids=["cubemap_layout", "rotate_nan", "rotate_inf", "rotate_roll_nan", "rig_fov_nan", "rig_json_depth", "view_mask_regime",
        "view_mask_json_depth", "sampler_name", "scheduler", "image_2x1", "save_initial_yaw_nan", "sweep_keyframes_nan",
        "camera_path_keyframes_inf", "sweep_10000_frames"])
def test_bad_values_are_named_by_node_input_and_expectation(comfy_server, prompt, node, input_name, expected):
    prompt = dict(prompt, **{"9": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}})   # an output
    text = outcome(comfy_server, prompt)
    assert names(text, node, input_name, expected), text


def test_megasam_file_of_5m_poses_is_refused_before_it_is_expanded(comfy_server):
    buf = io.BytesIO()
    np.savez_compressed(buf, cam_c2w=np.zeros((5_000_000, 4, 4), np.float32), intrinsic=np.eye(3))
    assert len(buf.getvalue()) < 2_000_000
    name = comfy_server.upload_image(buf.getvalue(), "poses_5m.npz")["name"]
    prompt = {"2": {"class_type": "Pano360CameraPath", "inputs": {
        "source": "megasam_npz", "fov_deg": 60.0, "num_frames": 4, "keyframes": "", "file": name, "fov_file": "",
        "pose_conversion": "exact", "estimate_fov": False, "yaw_offset_deg": 0.0,
        "relative_to_first": True}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    text = outcome(comfy_server, prompt)
    assert names(text, "Pano360CameraPath", "file", "at most 100000"), text


def test_preview_does_not_tell_whether_a_file_outside_comfyui_exists(comfy_server):
    def preview(path):
        prompt = {"2": {"class_type": "Pano360Preview360", "inputs": {"video_path": path, "as_video": True, "fps": 8.0,
                                                                      "stereo_mode": "mono"}}}
        return outcome(comfy_server, prompt)

    exists, missing = preview("/etc/hostname"), preview("/etc/no_such_file_here")
    assert names(exists, "Pano360Preview360", "video_path", "inside ComfyUI's output, temp or input folder"), exists
    assert exists.replace("hostname", "X") == missing.replace("no_such_file_here", "X")


def test_unknown_choices_of_loaders_and_samplers_are_named(comfy_in_process):
    """Loaders need a model file before anything else runs, so these run in process (the
    values are refused before the file is touched)."""
    from pano360.nodes import argus, panodit
    from pano360.nodes._common import NodeInputError

    with pytest.raises(NodeInputError, match=r"^Pano360PanoDiTLoader: input 'weight_dtype': expected one of \["):
        comfy_in_process.run_node(panodit.Pano360PanoDiTLoader, checkpoint="x.safetensors", weights="auto",
                                  weight_dtype="fp8")
    with pytest.raises(NodeInputError, match=r"^Pano360ArgusUNetLoader: input 'weight_dtype': expected one of \["):
        comfy_in_process.run_node(argus.Pano360ArgusUNetLoader, unet_name="x.safetensors", weight_dtype="fp8")
    with pytest.raises(NodeInputError, match=r"^Pano360PanoDiTSampler: input 'output_orientation': expected one of"):
        comfy_in_process.run_node(panodit.Pano360PanoDiTSampler, panodit=None, text=None, steps=4, seed=0,
                                  seam_rolls=False, roll_at="", roll_width=0.5, output_orientation="sideways")


def test_cancel_stops_a_sweep_within_one_chunk(comfy_in_process):
    from pano360.nodes import output

    mm = comfy_in_process.model_management
    calls = []
    import comfy.utils

    original = comfy.utils.ProgressBar.update_absolute

    def update(self, value, total=None, preview=None):
        calls.append(value)
        mm.interrupt_current_processing(True)   # Cancel pressed during the first chunk
        return original(self, value, total, preview)

    comfy.utils.ProgressBar.update_absolute = update
    try:
        with pytest.raises(mm.InterruptProcessingException):
            comfy_in_process.run_node(output.Pano360PerspectiveSweep, panorama=torch.rand(1, 32, 64, 3),
                                      path="yaw_sweep", frames=64, start_yaw=0.0, total_yaw=360.0, pitch=0.0,
                                      fov=90.0, easing="linear", keyframes="", width=16, height=16)
    finally:
        comfy.utils.ProgressBar.update_absolute = original
        mm.interrupt_current_processing(False)
    assert len(calls) <= 1   # 8 chunks of 8 frames: stopped at the check after the first
