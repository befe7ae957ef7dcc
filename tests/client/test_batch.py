"""The batch client against a fake ComfyUI on loopback (tests/client/fake_comfyui.py)."""

import asyncio
import json
import os
import socket

import pytest

from fake_comfyui import FakeComfyUI
from pano360.client import batch as batch_mod
from pano360.client.batch import BatchConfig, BatchError, ServerUnreachable, run_batch
from pano360.client.schema import CORE_SCHEMA_FILE
from pano360.client.sweep import Axis, Target, expand

OBJECT_INFO = json.loads(CORE_SCHEMA_FILE.read_text())
TEST_TIMEOUT = 20   # seconds; every test finishes in well under one on an idle machine

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def seed_jobs(n):
    return expand([Axis("color", (Target("1", "color"),), tuple(range(n)))])


def config(tmp_path, servers, **kw):
    kw.setdefault("poll_interval", 0.2)
    kw.setdefault("progress", False)
    kw.setdefault("http_timeout", 5)
    return BatchConfig(servers=[s.url if hasattr(s, "url") else s for s in servers], out_dir=tmp_path / "out", **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


def manifest(tmp_path):
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_batch_completes_on_two_servers_with_outputs_per_job(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO) as a, FakeComfyUI(OBJECT_INFO) as b:
            result = await run_batch(WORKFLOW, seed_jobs(5), config(tmp_path, [a, b], max_queued=1))
            return result, a, b

    result, a, b = run(main())
    assert result.ok and len(result.done) == 5
    assert a.executed and b.executed and len(a.executed) + len(b.executed) == 5   # round-robin
    data = manifest(tmp_path)
    for entry in data["jobs"].values():
        assert entry["state"] == "done" and entry["attempts"] == 1 and len(entry["outputs"]) == 1
        content = json.loads((tmp_path / "out" / entry["name"] / entry["outputs"][0]).read_bytes())
        assert FakeComfyUI.marker_of(content) == entry["prompt_id"] and content["node"] == "2"
        assert content["prompt"]["1"]["inputs"]["color"] == entry["values"]["1.color"]
    assert all(n == 1 for n in (a.submissions + b.submissions).values())


def test_rerun_after_a_crash_finishes_the_rest_without_duplicate_submissions(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, steps=4, step_delay=0.02) as server:
            jobs = seed_jobs(6)
            done = []

            def on_done(name, entry):
                done.append(name)

            task = asyncio.ensure_future(run_batch(WORKFLOW, jobs, config(tmp_path, [server], max_queued=3,
                                                                          on_job_done=on_done)))
            while len(done) < 2:
                await asyncio.sleep(0.005)
            task.cancel()   # the client dies with jobs queued on the server
            with pytest.raises(asyncio.CancelledError):
                await task
            states = [e["state"] for e in manifest(tmp_path)["jobs"].values()]
            assert states.count("done") >= 2 and "submitted" in states
            result = await run_batch(WORKFLOW, jobs, config(tmp_path, [server], max_queued=3))
            return result, server

    result, server = run(main())
    assert result.ok and len(result.done) == 6
    data = manifest(tmp_path)
    pids = [e["prompt_id"] for e in data["jobs"].values()]
    assert sorted(server.submissions) == sorted(pids)              # one prompt id per job ...
    assert all(n == 1 for n in server.submissions.values())         # ... each submitted once
    assert sorted(server.executed) == sorted(pids)


def test_prompt_recorded_but_never_posted_is_submitted_once_with_its_recorded_id(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO) as server:
            jobs = seed_jobs(2)
            out = tmp_path / "out"
            out.mkdir()
            # the state a crash between "record prompt id" and "POST /prompt" leaves
            data = {"version": 1, "workflow_sha256": batch_mod.workflow_sha(WORKFLOW), "client_id": "cid-1",
                    "uploads": {}, "jobs": {jobs[0].key: {
                        "name": jobs[0].name, "values": jobs[0].describe(), "state": "submitted", "attempts": 1,
                        "prompt_id": "recorded-id", "server": server.url, "prompt_ids": ["recorded-id"],
                        "outputs": [], "error": None}}}
            (out / "manifest.json").write_text(json.dumps(data))
            result = await run_batch(WORKFLOW, jobs, config(tmp_path, [server]))
            return result, server

    result, server = run(main())
    assert result.ok
    assert server.submissions["recorded-id"] == 1 and len(server.submissions) == 2
    assert manifest(tmp_path)["jobs"][seed_jobs(2)[0].key]["attempts"] == 1


def test_dropped_connection_mid_job_is_retried(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, drop_mid_job=1) as server:
            return await run_batch(WORKFLOW, seed_jobs(1), config(tmp_path, [server], retries=2)), server

    result, server = run(main())
    assert result.ok
    entry = next(iter(manifest(tmp_path)["jobs"].values()))
    assert entry["attempts"] == 2 and len(set(entry["prompt_ids"])) == 2
    assert all(n == 1 for n in server.submissions.values())


def test_a_job_that_keeps_losing_its_connection_fails_clearly_after_the_bound(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, drop_mid_job=100) as server:
            return await run_batch(WORKFLOW, seed_jobs(1), config(tmp_path, [server], retries=1)), server

    result, server = run(main())
    assert not result.ok and len(server.submissions) == 2
    (message,) = result.failed.values()
    assert message.startswith("failed after 2 attempts:") and "lost prompt" in message


def test_timed_out_jobs_never_run_later_running_or_still_queued(tmp_path):
    # One prompt runs while the other waits in the server's queue; both time out. Interrupting
    # only stops the running one, so the queued one must be deleted from the queue, or it runs
    # later next to its retry (a duplicate execution).
    async def main():
        async with FakeComfyUI(OBJECT_INFO, steps=10, step_delay=0.05) as server:
            result = await run_batch(WORKFLOW, seed_jobs(2), config(tmp_path, [server], max_queued=2, retries=0,
                                                                    job_timeout=0.3, poll_interval=0.05))
            await asyncio.sleep(1.5)   # longer than one prompt: anything left in the queue would run now
            return result, server

    result, server = run(main())
    assert len(result.failed) == 2 and all("timed out" in m for m in result.failed.values())
    assert server.executed == [] and server.pending == []


def test_execution_errors_are_retried_then_reported_with_the_node(tmp_path):
    async def main():
        fail = lambda prompt: "out of memory"
        async with FakeComfyUI(OBJECT_INFO, fail=fail) as server:
            return await run_batch(WORKFLOW, seed_jobs(1), config(tmp_path, [server], retries=1))

    (message,) = run(main()).failed.values()
    assert "failed after 2 attempts" in message and "node 1 (EmptyImage) failed" in message
    assert "out of memory" in message


def test_rejected_prompt_names_node_and_input_and_is_not_retried(tmp_path):
    node_errors = {"2": {"class_type": "SaveImage", "dependent_outputs": ["2"], "errors": [{
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "filename_prefix: 'bad' not in []", "extra_info": {"input_name": "filename_prefix"}}]}}

    async def main():
        async with FakeComfyUI(OBJECT_INFO, reject=lambda p: node_errors) as server:
            return await run_batch(WORKFLOW, seed_jobs(1), config(tmp_path, [server], retries=3)), server

    result, server = run(main())
    (message,) = result.failed.values()
    assert "Prompt outputs failed validation" in message
    assert "node 2 (SaveImage) input filename_prefix: Value not in list" in message
    assert sum(server.submissions.values()) == 1


def test_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable, match=f"cannot reach ComfyUI at http://127.0.0.1:{port}"):
        run(run_batch(WORKFLOW, seed_jobs(1), config(tmp_path, [f"http://127.0.0.1:{port}"])))


def test_missing_model_file_and_bad_values_stop_the_batch_before_any_submission(tmp_path):
    api = dict(WORKFLOW, **{"3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}}})
    jobs = expand([Axis("w", (Target("1", "width"),), (8, 0))])

    async def main():
        async with FakeComfyUI(OBJECT_INFO) as server:
            with pytest.raises(BatchError) as err:
                await run_batch(api, jobs, config(tmp_path, [server]))
            return str(err.value), server

    message, server = run(main())
    assert "node 3 (CheckpointLoaderSimple) input ckpt_name: missing model file 'sd15.safetensors' in " \
           "models/checkpoints on this server" in message
    assert "node 1 (EmptyImage) input width: 0 is below the minimum 1" in message
    assert not server.submissions


def test_input_files_are_uploaded_once_per_server_and_set_on_the_node(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"A")
    (folder / "b.mp4").write_bytes(b"B")
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}}
    from pano360.client.sweep import list_input_files

    jobs = expand([Axis("in", (Target("1", "image"),), list_input_files(folder), kind="upload"),
                   Axis("p", (Target("2", "filename_prefix"),), ("p", "q"))])

    async def main():
        async with FakeComfyUI(OBJECT_INFO) as server:
            server.uploads["a.png"] = b"other"   # a clash: the server renames, the client uses its name
            result = await run_batch(api, jobs, config(tmp_path, [server]))
            return result, server

    result, server = run(main())
    assert result.ok and len(result.done) == 4
    assert server.uploads == {"a.png": b"other", "a (1).png": b"A", "b.mp4": b"B"}
    used = sorted(json.loads(data)["prompt"]["1"]["inputs"]["image"] for data in server.files.values())
    assert used == ["a (1).png", "a (1).png", "b.mp4", "b.mp4"]


def test_a_node_type_missing_on_the_server_is_named(tmp_path):
    api = dict(WORKFLOW, **{"3": {"class_type": "Pano360NotInstalled", "inputs": {}}})

    async def main():
        async with FakeComfyUI(OBJECT_INFO) as server:
            with pytest.raises(BatchError, match="node 3: node type Pano360NotInstalled is not installed"):
                await run_batch(api, seed_jobs(1), config(tmp_path, [server]))

    run(main())


def test_progress_line_on_a_log_file_is_written_once_per_finished_job():
    import io

    stream = io.StringIO()
    progress = batch_mod.Progress(2, stream=stream)
    progress.update("job-a", "node 3 1/20")
    progress.update("job-a", "node 3 2/20")
    progress.done += 1
    progress.update("job-a", finished=True)
    assert stream.getvalue() == "[############............] 1/2 done\n"


def test_sigkilled_client_process_leaves_a_resumable_manifest(tmp_path):
    """A real crash: the CLI process is SIGKILLed after 2 finished jobs (no cleanup runs,
    the lock file stays); the rerun takes over the stale lock, finishes the rest and
    submits nothing twice."""
    import subprocess
    import sys
    import threading
    import time

    from conftest import ROOT

    loop = asyncio.new_event_loop()
    server = FakeComfyUI(OBJECT_INFO, steps=4, step_delay=0.03)
    url = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import conftest, argparse, logging\n"
            "from pano360.client import batch\n"
            "p = argparse.ArgumentParser(); batch.add_arguments(p)\n"
            "raise SystemExit(batch.run(p.parse_args(sys.argv[1:])))\n")
    cmd = [sys.executable, "-c", code, str(wf), "--out", str(tmp_path / "out"), "--server", url,
           "--set", "1.color=0,1,2,3,4,5", "--max-queued", "3", "--poll-interval", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TEST_TIMEOUT
        while time.monotonic() < deadline:
            try:
                states = [e["state"] for e in manifest(tmp_path)["jobs"].values()]
            except (OSError, ValueError):
                states = []
            if states.count("done") >= 2:
                break
            time.sleep(0.01)
        proc.kill()
        proc.wait(10)
        assert (tmp_path / "out" / ".batch.lock").is_file()
        assert "submitted" in [e["state"] for e in manifest(tmp_path)["jobs"].values()]
        jobs = expand([Axis("--set 1.color", (Target("1", "color"),), tuple(range(6)))])
        result = asyncio.run_coroutine_threadsafe(
            run_batch(WORKFLOW, jobs, config(tmp_path, [server])), loop).result(TEST_TIMEOUT)
        assert result.ok and len(result.done) == 6
        pids = [e["prompt_id"] for e in manifest(tmp_path)["jobs"].values()]
        assert sorted(server.submissions) == sorted(pids)
        assert all(n == 1 for n in server.submissions.values())
    finally:
        if proc.poll() is None:
            proc.kill()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_batch_lock_is_exclusive_and_takes_over_a_dead_holder(tmp_path):
    import subprocess
    import sys

    from pano360.client.batch import LOCK_NAME, BatchError, batch_lock

    with batch_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(str(alive.pid))
        with pytest.raises(BatchError, match=f"pid {alive.pid}"):
            with batch_lock(tmp_path):
                pass
    finally:
        alive.kill()
        alive.wait()
    with batch_lock(tmp_path):  # the holder is dead now: its lock is taken over
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
