"""The batch client's delivery guarantee across client kills and server restarts.

Checked against what the (fake) server did, which it records across its restarts like a
ComfyUI process cannot: every submission, every execution that began, every execution
that finished, and the files in its output folder (which carry the marker of the prompt
that wrote them).  docs/workflows.md states the guarantee these tests hold the client to.
"""

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from fake_comfyui import FakeComfyUI
from pano360.client.batch import BatchConfig, BatchError, run_batch
from pano360.client.schema import CORE_SCHEMA_FILE
from pano360.client.sweep import Axis, Target, expand

OBJECT_INFO = json.loads(CORE_SCHEMA_FILE.read_text())
TEST_TIMEOUT = 30   # seconds; each test takes one to a few on an idle machine

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
TWO_SAVES = dict(WORKFLOW, **{"3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                          "filename_prefix": "second/u"}}})


def color_jobs(n):
    return expand([Axis("--set 1.color", (Target("1", "color"),), tuple(range(n)))])


def config(tmp_path, servers, **kw):
    kw.setdefault("poll_interval", 0.2)
    kw.setdefault("progress", False)
    kw.setdefault("http_timeout", 5)
    return BatchConfig(servers=[s.url if hasattr(s, "url") else s for s in servers], out_dir=tmp_path / "out", **kw)


def manifest(tmp_path):
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


async def until(condition, what: str, timeout: float = TEST_TIMEOUT / 2):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def assert_each_job_ran_once(tmp_path, servers, n_jobs, saves_per_job=1):
    """Every job finished exactly once over all servers' lives, and its downloaded files are
    the files that one execution wrote."""
    data = manifest(tmp_path)["jobs"]
    assert len(data) == n_jobs and all(e["state"] == "done" for e in data.values())
    finished = [pid for s in servers for pid in s.executed]
    assert len(finished) == n_jobs and len(set(finished)) == n_jobs, finished
    assert sorted(finished) == sorted(e["prompt_id"] for e in data.values())
    for server in servers:   # no prompt began twice (a restart's lost queue is not a start)
        assert len(server.started) == len(set(server.started))
    for entry in data.values():
        assert len(entry["outputs"]) == saves_per_job
        for rel in entry["outputs"]:
            content = json.loads((tmp_path / "out" / entry["name"] / rel).read_bytes())
            assert FakeComfyUI.marker_of(content) == entry["prompt_id"]
            assert content["prompt"]["1"]["inputs"]["color"] == entry["values"]["1.color"]
    on_disk = [FakeComfyUI.marker_of(c) for s in servers for c in s.output_files().values()]
    finished_files = [m for m in on_disk if m in set(finished)]
    assert len(finished_files) == n_jobs * saves_per_job


def test_jobs_queued_when_the_client_is_killed_and_finished_before_a_server_restart_run_once(tmp_path):
    """The issue's case: the client process is SIGKILLed while jobs are queued, they finish
    without it, the server restarts (its history is gone), the client reruns: nothing runs
    twice, and the finished jobs' files come from the output folder."""
    from conftest import ROOT

    loop = asyncio.new_event_loop()
    server = FakeComfyUI(OBJECT_INFO, steps=4, step_delay=0.02)
    url = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    call = lambda fn, *a: asyncio.run_coroutine_threadsafe(fn(*a), loop).result(TEST_TIMEOUT)

    async def hold():
        server.hold()

    async def release():
        server.hold(False)

    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import conftest, argparse\n"
            "from pano360.client import batch\n"
            "p = argparse.ArgumentParser(); batch.add_arguments(p)\n"
            "raise SystemExit(batch.run(p.parse_args(sys.argv[1:])))\n")
    cmd = [sys.executable, "-c", code, str(wf), "--out", str(tmp_path / "out"), "--server", url,
           "--set", "1.color=0,1,2,3,4,5", "--max-queued", "2", "--poll-interval", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def states():
            try:
                return [e["state"] for e in manifest(tmp_path)["jobs"].values()]
            except (OSError, ValueError):
                return []

        deadline = time.monotonic() + TEST_TIMEOUT
        while states().count("done") < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        call(hold)   # the last jobs stay queued (or paused mid-run) ...
        while time.monotonic() < deadline and not (len(server.submissions) == 6 and states().count("submitted") >= 2):
            time.sleep(0.01)
        proc.kill()  # ... when the client is SIGKILLed
        proc.wait(10)
        assert states().count("submitted") >= 2 and len(server.submissions) == 6
        call(release)
        while len(server.executed) < 6 and time.monotonic() < deadline:   # they finish without the client
            time.sleep(0.01)
        assert len(server.executed) == 6
        call(server.restart)   # ... and the server restarts: /history and /queue know nothing
        result = asyncio.run_coroutine_threadsafe(
            run_batch(WORKFLOW, color_jobs(6), config(tmp_path, [server])), loop).result(TEST_TIMEOUT)
        assert result.ok and len(result.done) == 6
        assert all(n == 1 for n in server.submissions.values()) and len(server.submissions) == 6
        assert_each_job_ran_once(tmp_path, [server], 6)
        assert sum(e.get("recovered", False) for e in manifest(tmp_path)["jobs"].values()) >= 2
    finally:
        if proc.poll() is None:
            proc.kill()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_jobs_lost_from_the_queue_by_a_restart_while_the_client_was_dead_run_once_with_their_ids(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a') as server:
            server.hold()
            task = asyncio.ensure_future(run_batch(WORKFLOW, color_jobs(3), config(tmp_path, [server], max_queued=3)))
            await until(lambda: len(server.pending) + bool(server.running) == 3, "3 queued prompts")
            task.cancel()   # the client dies ...
            await asyncio.gather(task, return_exceptions=True)
            await server.restart()   # ... and the restart loses the queue: nothing ran
            server.hold(False)
            first_ids = {e["prompt_id"] for e in manifest(tmp_path)["jobs"].values()}
            result = await run_batch(WORKFLOW, color_jobs(3), config(tmp_path, [server]))
            return result, server, first_ids

    result, server, first_ids = run(main())
    assert result.ok
    assert_each_job_ran_once(tmp_path, [server], 3)
    data = manifest(tmp_path)["jobs"].values()
    assert {e["prompt_id"] for e in data} == first_ids          # resubmitted under the recorded ids
    assert all(e["attempts"] == 1 and not e["recovered"] for e in data)


def test_a_job_cut_short_between_two_save_nodes_by_a_restart_runs_again_and_completes_once(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a', restart_after_saves=1) as server:
            result = await run_batch(TWO_SAVES, color_jobs(1), config(tmp_path, [server], retries=1))
            return result, server

    result, server = run(main())
    assert result.ok
    entry = next(iter(manifest(tmp_path)["jobs"].values()))
    assert entry["attempts"] == 2 and len(set(entry["prompt_ids"])) == 2
    assert server.started == entry["prompt_ids"] and server.executed == [entry["prompt_id"]]
    assert_each_job_ran_once(tmp_path, [server], 1, saves_per_job=2)


def test_a_job_finished_when_the_server_restarts_is_found_by_its_files_not_run_again(tmp_path):
    # The client is alive but misses the end (the websocket drops with the restart, the
    # history is gone by the time it asks): the files say the prompt finished.
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a', steps=2) as server:
            done = asyncio.Event()
            original = server._execute

            async def execute_then_restart(*args):
                await original(*args)
                done.set()

            server._execute = execute_then_restart
            task = asyncio.ensure_future(run_batch(WORKFLOW, color_jobs(1),
                                                   config(tmp_path, [server], retries=0, poll_interval=5)))
            await done.wait()
            await server.restart()
            return await task, server

    result, server = run(main())
    assert result.ok
    assert_each_job_ran_once(tmp_path, [server], 1)


@pytest.mark.parametrize("kind", ["no pack", "no metadata"])
def test_without_the_output_lookup_a_finished_job_is_run_again_and_the_log_says_so(tmp_path, caplog, kind):
    """The stated limit of the guarantee: a server without the Pano360 pack (or with
    --disable-metadata) cannot show a forgotten prompt's outputs, so the job runs again."""
    async def main():
        options = {"pack": False} if kind == "no pack" else {"metadata": False}
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a', **options) as server:
            server.hold()
            task = asyncio.ensure_future(run_batch(WORKFLOW, color_jobs(1), config(tmp_path, [server])))
            await until(lambda: server.pending, "a queued prompt")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.hold(False)
            await until(lambda: server.executed, "the prompt to finish")
            await server.restart()
            with caplog.at_level(logging.WARNING, logger="pano360.batch"):
                return await run_batch(WORKFLOW, color_jobs(1), config(tmp_path, [server])), server

    result, server = run(main())
    assert result.ok and len(server.executed) == 2
    assert "cannot tell whether prompt" in caplog.text and "runs twice if it had run" in caplog.text
    reason = "no Pano360 output lookup" if kind == "no pack" else "--disable-metadata"
    assert reason in caplog.text


def test_jobs_not_yet_sent_when_a_server_goes_down_go_elsewhere_without_using_an_attempt(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a') as a, FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'b', step_delay=0.02) as b:
            downed = []

            def on_done(name, entry):
                if entry["server"] == a.url and not downed:
                    downed.append(asyncio.ensure_future(a.go_down()))

            result = await run_batch(WORKFLOW, color_jobs(6), config(tmp_path, [a, b], max_queued=1, retries=0,
                                                                     http_timeout=1, reconnect_wait=0.5,
                                                                     on_job_done=on_done))
            return result, a, b

    result, a, b = run(main())
    assert result.ok and len(result.done) == 6     # retries=0: a job that used an attempt on `a` would fail
    data = manifest(tmp_path)["jobs"].values()
    assert all(e["attempts"] == 1 for e in data)
    assert_each_job_ran_once(tmp_path, [a, b], 6)


def test_a_job_queued_on_a_server_that_goes_down_waits_for_it_and_runs_once_when_it_is_back(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a') as a, FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'b') as b:
            a.hold()
            task = asyncio.ensure_future(run_batch(WORKFLOW, color_jobs(4), config(
                tmp_path, [a, b], max_queued=1, http_timeout=1, poll_interval=0.1, reconnect_wait=0.5)))
            await until(lambda: a.pending or a.running, "a prompt queued on a")
            await a.go_down()   # a dies with the prompt: is it lost, or will it run? The client cannot know.
            with pytest.raises(BatchError, match=f"1 job\\(s\\) wait for {a.url}, which has their prompts"):
                await task
            assert len(b.executed) == 3
            await a.come_up()   # a is back (it lost its queue); the rerun finds the prompt never ran there
            a.hold(False)
            result = await run_batch(WORKFLOW, color_jobs(4), config(tmp_path, [a, b], max_queued=1))
            return result, a, b

    result, a, b = run(main())
    assert result.ok
    assert_each_job_ran_once(tmp_path, [a, b], 4)
    assert all(e["attempts"] == 1 for e in manifest(tmp_path)["jobs"].values())


def test_an_execution_error_that_repeats_with_the_same_inputs_is_not_retried(tmp_path):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a', fail=lambda p: ("ValueError", "width must be even")) as server:
            return await run_batch(WORKFLOW, color_jobs(1), config(tmp_path, [server], retries=3)), server

    result, server = run(main())
    (message,) = result.failed.values()
    assert "node 1 (EmptyImage) failed" in message and "ValueError width must be even" in message
    assert "not retried" in message and sum(server.submissions.values()) == 1


def test_a_job_recorded_on_a_server_left_out_of_the_rerun_runs_elsewhere_with_a_warning(tmp_path, caplog):
    async def main():
        async with FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'a') as a, FakeComfyUI(OBJECT_INFO, output_dir=tmp_path / 'b') as b:
            a.hold()
            task = asyncio.ensure_future(run_batch(WORKFLOW, color_jobs(1), config(tmp_path, [a])))
            await until(lambda: a.pending, "a queued prompt")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with caplog.at_level(logging.WARNING, logger="pano360.batch"):
                result = await run_batch(WORKFLOW, color_jobs(1), config(tmp_path, [b]))
            return result, a, b

    result, a, b = run(main())
    assert result.ok and len(b.executed) == 1
    assert f"which is not in --server; running the job on {b.url}" in caplog.text
