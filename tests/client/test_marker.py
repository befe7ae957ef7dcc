"""The server half of the batch marker (client/marker.py): finding a prompt's files by the
marker its ``extra_pnginfo`` put into them."""

import json
import os
import time
import uuid

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pano360.client import marker


def save_like_comfyui(path, extra_pnginfo, prompt=None):
    """A PNG with metadata written the way ComfyUI's SaveImage writes it (nodes.py SaveImage:
    ``PngInfo.add_text("prompt", json.dumps(prompt))`` and one text chunk per extra_pnginfo key)."""
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt or {"1": {"class_type": "EmptyImage", "inputs": {}}}))
    for key, value in extra_pnginfo.items():
        info.add_text(key, json.dumps(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 4), (10, 20, 30)).save(path, format="PNG", pnginfo=info, compress_level=4)


def extra(pid):
    return {"workflow": {"nodes": []}, marker.MARKER_KEY: marker.job_marker(pid, "job-0001-abc", {"3.seed": 7}, "b")}


def test_a_png_saved_with_the_marker_is_found_and_others_are_not(tmp_path):
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    save_like_comfyui(tmp_path / "city" / "pano_00001_.png", extra(mine))
    save_like_comfyui(tmp_path / "city" / "pano_00002_.png", extra(other))
    save_like_comfyui(tmp_path / "pano_00003_.png", extra(mine))
    save_like_comfyui(tmp_path / "plain_00001_.png", {"workflow": {}})
    found, complete = marker.find_marked_outputs(tmp_path, [mine, str(uuid.uuid4())], None)
    assert complete
    assert found[mine] == [{"filename": "pano_00003_.png", "subfolder": "", "type": "output"},
                           {"filename": "pano_00001_.png", "subfolder": "city", "type": "output"}]
    assert list(found.values())[1] == []
    # the PNG really carries it where any PNG reader sees it
    assert json.loads(Image.open(tmp_path / "pano_00003_.png").text[marker.MARKER_KEY])["prompt_id"] == mine


def test_hidden_and_partial_files_symlinks_and_older_files_are_not_reported(tmp_path):
    pid = str(uuid.uuid4())
    out, outside = tmp_path / "output", tmp_path / "elsewhere"
    save_like_comfyui(out / ".video_00001_.mp4.part", extra(pid))       # an atomic writer's temporary file
    save_like_comfyui(out / ".cache" / "x.png", extra(pid))
    save_like_comfyui(outside / "secret.png", extra(pid))
    (out / "link.png").symlink_to(outside / "secret.png")
    (out / "linked_dir").symlink_to(outside, target_is_directory=True)
    save_like_comfyui(out / "old_00001_.png", extra(pid))
    old = time.time() - 3600
    os.utime(out / "old_00001_.png", (old, old))
    found, complete = marker.find_marked_outputs(out, [pid], None)
    assert complete and [f["filename"] for f in found[pid]] == ["old_00001_.png"]
    found, complete = marker.find_marked_outputs(out, [pid], time.time() - 60)
    assert complete and found[pid] == []


def test_a_scan_that_hits_its_bounds_says_it_is_incomplete(tmp_path):
    pid = str(uuid.uuid4())
    for i in range(3):
        save_like_comfyui(tmp_path / f"p_{i:05}_.png", extra(pid))
    found, complete = marker.find_marked_outputs(tmp_path, [pid], None, max_files=2)
    assert not complete and len(found[pid]) == 2
    found, complete = marker.find_marked_outputs(tmp_path, [pid], None, max_bytes=10)
    assert not complete and found[pid] == []


@pytest.mark.parametrize("body, message", [
    ([], "expected a JSON object"),
    ({"prompt_ids": []}, "prompt_ids: expected a list of 1..256"),
    ({"prompt_ids": ["../../etc/passwd"]}, "expected UUID strings"),
    ({"prompt_ids": [str(uuid.uuid4())] * 300}, "prompt_ids: expected a list of 1..256"),
    ({"prompt_ids": [str(uuid.uuid4())], "since": "yesterday"}, "since: expected epoch seconds or null"),
    ({"prompt_ids": [str(uuid.uuid4())], "since": float("nan")}, "since: expected epoch seconds or null"),
])
def test_malformed_lookups_are_refused_with_the_reason(tmp_path, body, message):
    status, reply = marker.find_reply(tmp_path, body, metadata=True)
    assert status == 400 and message in reply["error"]


def test_info_reports_the_protocol_the_clock_and_whether_files_carry_metadata():
    before = time.time()
    info = marker.info_reply(metadata=False)
    assert info["version"] == marker.PROTOCOL_VERSION and info["metadata"] is False
    assert before <= info["time"] <= time.time()
