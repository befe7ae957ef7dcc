"""The batch client against a real ComfyUI: each job finishes once across a client SIGKILL
and a server restart (issue 18 item 3), through POST /prompt and the websocket.

ComfyUI keeps its history and queue in memory, so after the restart only the output folder
tells what ran; the client finds the finished prompts' files through the pack's output
lookup (client/marker.py) and does not run them again.  What ran is checked independently
of the client: the first server's /history before it stops, the second server's /history
after the rerun, and the PNG text chunks of every file in the output folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import pytest
from PIL import Image

pytest.importorskip("comfy_env", reason="tests/host infrastructure not present")

import conftest as host  # noqa: E402  (tests/host/conftest.py)
from pano360.client import marker  # noqa: E402
from pano360.client.batch import BatchConfig, run_batch  # noqa: E402
from pano360.client.sweep import Axis, Target, expand  # noqa: E402

N_JOBS = 5
# Each job blurs a 1024x512 image with the largest kernel ImageBlur allows (63x63), about
# half a second on a 2-core CPU, so the jobs behind the first one are still queued when
# the client is killed right after sending them.
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 512, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
    "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact",
                                                 "width": 64, "height": 32, "crop": "disabled"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "batch/flat"}},
    "5": {"class_type": "Pano360Save360Image", "inputs": {"images": ["3", 0], "format": "png", "jpeg_quality": 95,
                                                          "initial_yaw": 0.0, "filename_prefix": "batch/pano"}},
    "6": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": 2}},
    "7": {"class_type": "Pano360Save360Video", "inputs": {"images": ["6", 0], "fps": 8.0, "crf": 30,
                                                          "stereo_mode": "mono", "filename_prefix": "batch/video"}},
}
COLORS = tuple(range(0x101010, 0x101010 + N_JOBS))


def _jobs():
    return expand([Axis("--set 1.color", (Target("1", "color"),), COLORS)])


def _manifest(out) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        return {}


def _history(client) -> dict:
    return client.get_json("/history")


def _embedded(path) -> dict:
    """A file's ComfyUI metadata as the standard readers see it: PNG text chunks (PIL), MP4
    tags (ffmpeg's ffmetadata dump), not the client's byte scan."""
    if path.suffix == ".png":
        return dict(Image.open(path).text)
    import imageio_ffmpeg

    dump = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout
    tags = {}
    for line in dump.splitlines()[1:]:
        key, value = re.split(r"(?<!\\)=", line, maxsplit=1)
        tags[key] = re.sub(r"\\(.)", r"\1", value)
    return tags


def _marked_files(base) -> dict[str, list[str]]:
    """prompt id -> output files whose embedded batch marker names it."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in (base / "output").rglob("*") if p.is_file()):
        job = json.loads(_embedded(path).get(marker.MARKER_KEY, "{}"))
        found.setdefault(job.get("prompt_id"), []).append(path.relative_to(base / "output").as_posix())
    return found


def test_lookup_route_is_served_and_refuses_malformed_requests(comfy_server):
    info = comfy_server.get_json(marker.ROUTE)
    assert info["version"] == marker.PROTOCOL_VERSION and info["metadata"] is True
    assert abs(info["time"] - time.time()) < 60
    status, reply = comfy_server.post_json(marker.ROUTE, {"prompt_ids": ["../../etc/passwd"]})
    assert status == 400 and "expected UUID strings" in reply["error"]


def test_batch_killed_with_jobs_queued_then_server_restart_runs_each_job_once(comfyui_root, tmp_path_factory,
                                                                             tmp_path):
    base = host._make_base_directory(tmp_path_factory.mktemp("comfy_batch_restart"))
    port = host.free_port()
    proc, first = host._start_server(comfyui_root, base, base / "comfyui.log", port=port)
    try:
        out = tmp_path / "out"
        wf = tmp_path / "wf.json"
        wf.write_text(json.dumps(WORKFLOW))
        code = (f"import sys; sys.path.insert(0, {str(host.ROOT / 'tests')!r}); import conftest, argparse\n"
                "from pano360.client import batch\n"
                "p = argparse.ArgumentParser(); batch.add_arguments(p)\n"
                "raise SystemExit(batch.run(p.parse_args(sys.argv[1:])))\n")
        cmd = [sys.executable, "-c", code, str(wf), "--out", str(out), "--server", first.url,
               "--set", "1.color=" + ",".join(map(str, COLORS)), "--max-queued", str(N_JOBS),
               "--poll-interval", "0.2"]
        client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:   # until the server has every prompt
                queue = first.get_json("/queue")
                if len(queue["queue_running"]) + len(queue["queue_pending"]) + len(_history(first)) >= N_JOBS:
                    break
                time.sleep(0.01)
            client.kill()   # SIGKILL with the jobs sent and (most) still queued
            client.wait(30)
        finally:
            if client.poll() is None:
                client.kill()
        assert len(queue["queue_pending"]) >= 2, "the jobs ran too fast to be queued at the kill"
        while time.monotonic() < deadline and (first.get_json("/queue")["queue_running"]
                                               or first.get_json("/queue")["queue_pending"]):
            time.sleep(0.2)   # they finish without the client
        ran_first = {pid for pid, e in _history(first).items() if e["status"]["status_str"] == "success"}
        assert len(ran_first) >= 2
        states = [e["state"] for e in _manifest(out).values()]
        assert states.count("submitted") >= 2
    finally:
        host._stop(proc)
    proc, second = host._start_server(comfyui_root, base, base / "comfyui.log", port=port)   # the restart
    try:
        assert second.url == first.url and _history(second) == {}
        result = asyncio.run(run_batch(WORKFLOW, _jobs(), BatchConfig(
            servers=[second.url], out_dir=out, poll_interval=0.2, progress=False, http_timeout=60)))
        assert result.ok and len(result.done) == N_JOBS
        ran_second = {pid for pid, e in _history(second).items() if e["status"]["status_str"] == "success"}
    finally:
        host._stop(proc)
    entries = _manifest(out).values()
    final_ids = {e["prompt_id"] for e in entries}
    assert not ran_first & ran_second                        # nothing that finished ran again
    assert ran_first | ran_second == final_ids and len(final_ids) == N_JOBS
    assert sum(e["recovered"] for e in entries) == len(ran_first & final_ids) >= 2
    marked = _marked_files(base)
    for entry in entries:   # one file per saver, written by the one execution of each job
        files = sorted(marked[entry["prompt_id"]])
        assert [f.split("_")[0] for f in files] == ["batch/flat", "batch/pano", "batch/video"]
        assert sorted(entry["outputs"]) == files
        for rel in files:
            assert (out / entry["name"] / rel).read_bytes() == (base / "output" / rel).read_bytes()
    assert set(marked) == final_ids
