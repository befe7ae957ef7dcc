"""Output nodes inside a real ComfyUI: in-process `execute` calls and one API prompt over
HTTP whose 360° MP4 is then fetched through /view."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

pytest.importorskip("comfy_env", reason="tests/host infrastructure (branch host) not present")

from pano360.media.gpano import read_gpano, read_png_text  # noqa: E402
from pano360.media.spherical_mp4 import read_spherical, walk_boxes  # noqa: E402


def _frames(t=4, h=32, w=64) -> torch.Tensor:
    x = torch.zeros(t, h, w, 3)
    x[:, :, : w // 2, 0] = 0.8
    x[:, :, w // 2 :, 2] = 0.8
    return x


@pytest.fixture(scope="module")
def nodes(comfy_in_process):
    from pano360.nodes import output

    return output


def test_schemas_are_valid_and_fully_documented(comfy_in_process, nodes):
    """ComfyUI's own schema check (unique ids, ...), a tooltip on every input and output,
    a description, the Pano360/output category."""
    assert [n.__name__ for n in nodes.NODES] == [
        "Pano360Save360Video", "Pano360Save360Image", "Pano360PerspectiveSweep", "Pano360Preview360"]
    for node in nodes.NODES:
        schema = node.GET_SCHEMA()
        assert schema.node_id == node.__name__ and schema.category == "Pano360/output" and schema.description
        for item in [*schema.inputs, *schema.outputs]:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"


def _call(env, node_cls, hidden=None, **inputs):
    return env.run_node(node_cls, hidden=hidden, **inputs)


def test_save_360_video_writes_tagged_mp4_and_ui_entry(comfy_in_process, nodes):
    out = _call(comfy_in_process, nodes.Pano360Save360Video, images=_frames(), fps=8.0, crf=20,
                stereo_mode="mono", filename_prefix="Pano360/test_video")
    (path,) = out.args
    ui = out.ui
    assert ui["images"][0]["type"] == "output" and ui["images"][0]["subfolder"] == "Pano360"
    assert ui["pano360"] == [{"filename": ui["images"][0]["filename"], "subfolder": "Pano360", "type": "output",
                              "kind": "video", "stereo": "mono"}]
    assert path.startswith(comfy_in_process.folder_paths.get_output_directory())
    walk_boxes(path)
    (track,) = read_spherical(path)
    assert track["v1"]["ProjectionType"] == "equirectangular" and track["v2"]["st3d"]["stereo_mode"] == 0


def test_save_360_video_rejects_wrong_stereo_aspect(comfy_in_process, nodes):
    from pano360.nodes._common import NodeInputError

    with pytest.raises(NodeInputError, match="top-bottom equirect frames"):
        _call(comfy_in_process, nodes.Pano360Save360Video, images=_frames(), fps=8.0, crf=20,
              stereo_mode="top-bottom", filename_prefix="Pano360/bad")
    with pytest.raises(NodeInputError, match="even width and height"):
        _call(comfy_in_process, nodes.Pano360Save360Video, images=_frames(h=31, w=62), fps=8.0, crf=20,
              stereo_mode="mono", filename_prefix="Pano360/bad")


def test_save_360_image_png_keeps_prompt_and_workflow(comfy_in_process, nodes):
    prompt = {"7": {"class_type": "Pano360Save360Image", "inputs": {}}}
    workflow = {"nodes": [{"id": 7}], "links": []}
    out = _call(comfy_in_process, nodes.Pano360Save360Image,
                hidden={"PROMPT": prompt, "EXTRA_PNGINFO": {"workflow": workflow}},
                images=_frames(t=2), format="png", jpeg_quality=95, initial_yaw=-90.0,
                filename_prefix="Pano360/test_pano")
    paths = out.args[0].splitlines()
    assert len(paths) == 2 and len(out.ui["pano360"]) == 2
    text = read_png_text(paths[0])
    assert json.loads(text["prompt"]) == prompt and json.loads(text["workflow"]) == workflow
    fields = read_gpano(paths[1])
    assert fields["FullPanoWidthPixels"] == 64 and fields["InitialViewHeadingDegrees"] == 270


def test_preview_360_uses_the_temp_folder(comfy_in_process, nodes):
    out = _call(comfy_in_process, nodes.Pano360Preview360, images=_frames(), as_video=True, fps=8.0,
                stereo_mode="mono")
    (item,) = out.ui["pano360"]
    assert item["type"] == "temp" and item["kind"] == "video" and item["filename"].endswith(".mp4")
    out = _call(comfy_in_process, nodes.Pano360Preview360, images=_frames(t=1), as_video=True, fps=8.0,
                stereo_mode="mono")
    assert out.ui["pano360"][0]["kind"] == "image"


def test_preview_360_refuses_files_outside_comfy_folders(comfy_in_process, nodes, tmp_path):
    from pano360.nodes._common import NodeInputError

    stray = tmp_path / "x.mp4"
    stray.write_bytes(b"0")
    with pytest.raises(NodeInputError, match="output, temp or input folder"):
        _call(comfy_in_process, nodes.Pano360Preview360, video_path=str(stray), as_video=True, fps=8.0,
              stereo_mode="mono")


def test_api_prompt_saves_a_360_video_served_by_view(comfy_server, tmp_path):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 5, "color": 0xC02020}},
        "2": {"class_type": "Pano360Save360Video",
              "inputs": {"images": ["1", 0], "fps": 10.0, "crf": 20, "stereo_mode": "mono",
                         "filename_prefix": "Pano360/api_video"}},
    }
    entry = comfy_server.run(prompt)
    assert entry["status"]["status_str"] == "success", comfy_server.error_message(entry)
    (item,) = entry["outputs"]["2"]["pano360"]
    assert item["kind"] == "video"
    data = comfy_server.view(item["filename"], item["subfolder"], item["type"])
    local = tmp_path / "served.mp4"
    local.write_bytes(data)
    (track,) = read_spherical(local)
    assert track["v1"]["Spherical"] is True and track["v2"]["sv3d_children"] == ["svhd", "proj"]
    import imageio_ffmpeg

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(local), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 32, 64, 3)
    assert frames.shape[0] == 5
    assert abs(int(frames[:, 8:24, 8:56, 0].mean()) - 0xC0) <= 8


def _sweep_inputs(**kw):
    base = dict(path="yaw_sweep", frames=6, start_yaw=0.0, total_yaw=360.0, pitch=0.0, fov=90.0,
                easing="linear", keyframes="0: yaw=0\n5: yaw=90", width=24, height=16)
    base.update(kw)
    return base


def test_perspective_sweep_still_and_video(comfy_in_process, nodes):
    still = _frames(t=1)
    (frames,) = _call(comfy_in_process, nodes.Pano360PerspectiveSweep, panorama=still, **_sweep_inputs()).args
    assert frames.shape == (6, 16, 24, 3) and frames.dtype == torch.float32
    # Forward (yaw 0) straddles the red/blue boundary at the centre column; yaw 90 is all blue.
    assert frames[0, :, :11, 0].min() > 0.7 and frames[0, :, 13:, 2].min() > 0.7
    assert frames[1, :, :, 2].min() > 0.7
    (frames,) = _call(comfy_in_process, nodes.Pano360PerspectiveSweep, panorama=_frames(t=3),
                      **_sweep_inputs(path="keyframes", keyframes="0: yaw=0\n2: yaw=90")).args
    assert frames.shape[0] == 3


def test_perspective_sweep_bad_keyframes_name_the_input(comfy_in_process, nodes):
    from pano360.nodes._common import NodeInputError

    with pytest.raises(NodeInputError, match="keyframes.*line 1"):
        _call(comfy_in_process, nodes.Pano360PerspectiveSweep, panorama=_frames(t=1),
              **_sweep_inputs(path="keyframes", keyframes="zero: yaw=0"))


@pytest.mark.parametrize("which", ["save", "preview"])
def test_cancel_while_encoding_leaves_no_video(comfy_in_process, nodes, which):
    """ComfyUI's Cancel (the interrupt flag) stops the MP4 encoding of both the saving and
    the previewing node, and no file, complete or partial, is left in the folder."""
    import os

    mm = comfy_in_process.model_management
    folder = comfy_in_process.folder_paths.get_output_directory() if which == "save" \
        else comfy_in_process.folder_paths.get_temp_directory()
    before = {os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs}
    with comfy_in_process.cancel_after_progress(1) as progress, pytest.raises(mm.InterruptProcessingException):
        # 24 frames: the nodes report progress every 8 encoded frames; Cancel comes at the first report
        if which == "save":
            _call(comfy_in_process, nodes.Pano360Save360Video, images=_frames(t=24), fps=8.0, crf=20,
                  stereo_mode="mono", filename_prefix="Pano360/test_cancel")
        else:
            _call(comfy_in_process, nodes.Pano360Preview360, images=_frames(t=24), as_video=True, fps=8.0,
                  stereo_mode="mono")
    assert progress == [8]  # cancelled while encoding, not before the node ran
    after = {os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs}
    assert after == before


def test_cancel_between_images_stops_after_the_current_file(comfy_in_process, nodes):
    """Each panorama is one complete file; Cancel stops the batch after the one being written
    (Cancel arrives with the first file's progress report, while the second is written)."""
    import os

    mm = comfy_in_process.model_management
    folder = os.path.join(comfy_in_process.folder_paths.get_output_directory(), "Pano360")
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    with comfy_in_process.cancel_after_progress(1) as progress, pytest.raises(mm.InterruptProcessingException):
        _call(comfy_in_process, nodes.Pano360Save360Image, images=_frames(t=3), format="jpeg", jpeg_quality=80,
              initial_yaw=0.0, filename_prefix="Pano360/test_cancel_images")
    assert progress == [1]
    new = sorted(set(os.listdir(folder)) - before)
    assert len(new) == 2 and all(n.startswith("test_cancel_images") and n.endswith(".jpg") for n in new), new
