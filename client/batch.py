"""``python -m pano360 batch``: queue a sweep of an API workflow on ComfyUI servers.

The batch is resumable and runs each job to completion once (docs/workflows.md states the
exact guarantee):

1. Every job (see :mod:`.sweep`) has an entry in ``<out>/manifest.json`` (written
   atomically after every change).  Before ``POST /prompt`` the client records a
   ``prompt_id`` it chose itself (ComfyUI accepts ``prompt_id`` in the request), and it
   puts a marker naming that id into the prompt's ``extra_pnginfo``, which ComfyUI's
   savers embed in every output file (:mod:`.marker`).
2. On a rerun, finished jobs are skipped.  A job recorded as submitted is looked up on
   its server (``/history/<id>``, then ``/queue``): finished -> its outputs are
   downloaded; queued or running -> it is followed.  When the server no longer knows the
   prompt (it restarted: ComfyUI keeps history and queue in memory), the client asks the
   Pano360 pack on the server for output files carrying the prompt's marker: found ->
   the job ran, its files are downloaded; none -> the prompt never ran there and is
   submitted with the *same* ``prompt_id``.
3. Failed jobs are retried on a rerun.

Jobs go to the servers round-robin, at most ``--max-queued`` per server at a time.
Progress comes from the websocket (``/ws?clientId=``, connected before queueing; the
client id is kept in the manifest so a rerun receives the events of its old prompts),
with ``/history`` + ``/queue`` polling as a fallback.  A job that fails while running
(an execution error that may pass next time, a server losing the prompt, a timeout) is
retried up to ``--retries`` times with a new ``prompt_id``; a rejected prompt (HTTP 4xx,
validation errors shown by node and input) and an execution error that repeats with the
same inputs (:data:`DETERMINISTIC_ERRORS`) are not retried.  A job whose ``POST`` never
reached its server (connection refused) goes to another server without using an
attempt; a job sent to a server that stops answering waits for that server (a rerun
picks it up).  Outputs (``/history`` -> ``/view``) land in ``<out>/<job name>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import aiohttp

from ..media.atomic import write_bytes, write_json
from .marker import MARKER_KEY, PROTOCOL_VERSION, ROUTE, job_marker
from .schema import SchemaSet, fetch_object_info
from .sweep import (Axis, Job, SweepError, Target, apply, expand, list_input_files, parse_seeds, parse_set,
                    read_prompts, resolve_target, seed_targets)
from .validate import validate_prompt

log = logging.getLogger("pano360.batch")

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
LOCK_NAME = ".batch.lock"
OUTPUT_KEYS = ("images", "gifs", "videos", "audio", "files", "3d")
# Execution errors that repeat on every attempt with the same inputs, by the exception's type
# name as ComfyUI reports it (execution.py full_type_name: "module.Class", bare for builtins;
# matched on the class name).  RuntimeError is not here: torch raises it for out-of-memory too.
DETERMINISTIC_ERRORS = frozenset({
    "ValueError", "TypeError", "KeyError", "IndexError", "AttributeError", "NotImplementedError",
    "AssertionError", "ZeroDivisionError", "FileNotFoundError", "RecursionError", "JSONDecodeError",
    "UnicodeDecodeError", "NodeInputError",   # Pano360's bad-input error (a ValueError)
})
# Output files are looked for among files modified since the submission, less this margin
# (the server's clock is estimated from GET marker.ROUTE; the estimate is off by one round trip).
SCAN_MARGIN_S = 60.0
# Inputs naming where an output node writes (ComfyUI's savers: filename_prefix; Look Beyond: folder_prefix).
PREFIX_INPUTS = ("filename_prefix", "folder_prefix")


class BatchError(RuntimeError):
    """A batch that cannot start or continue; the message says why."""


class ServerUnreachable(BatchError):
    pass


class NotSent(ServerUnreachable):
    """The ``POST /prompt`` never reached the server (connection refused): no attempt was used."""


class ServerGone(ServerUnreachable):
    """A server stopped answering while it had the job's prompt: the job waits for it."""

    def __init__(self, server: "Server", message: str):
        super().__init__(message)
        self.server = server


class NotRetryable(BatchError):
    """The job fails the same way on every attempt; it is reported, not retried."""


class PromptRejected(NotRetryable):
    """The server refused the prompt (HTTP 4xx, validation); retrying cannot help."""


class AttemptFailed(BatchError):
    """One attempt of a job failed; the job may be retried."""


def is_deterministic(exception_type: str | None) -> bool:
    """Whether an execution error of this type (ComfyUI's ``exception_type``) repeats on a retry."""
    return bool(exception_type) and exception_type.rsplit(".", 1)[-1] in DETERMINISTIC_ERRORS


# --------------------------------------------------------------------------- errors


def format_node_errors(node_errors: Mapping[str, Any], prompt: Mapping[str, Any] | None = None) -> list[str]:
    """ComfyUI ``node_errors`` -> one line per problem, by node and input."""
    lines = []
    for node_id, entry in sorted(node_errors.items(), key=lambda kv: str(kv[0])):
        class_type = entry.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type", "?")
        for err in entry.get("errors", []):
            extra = err.get("extra_info") or {}
            name = extra.get("input_name")
            where = f"node {node_id} ({class_type})" + (f" input {name}" if name else "")
            text = err.get("message", "error")
            if err.get("details"):
                text += f": {err['details']}"
            if err.get("type") == "value_not_in_list" and name and _looks_like_model_input(class_type, name):
                text += f" -> missing model file {extra.get('received_value')!r} on the server"
            lines.append(f"{where}: {text}")
    return lines


def _looks_like_model_input(class_type: str, name: str) -> bool:
    from .schema import CORE_MODEL_FOLDERS

    return (class_type, name) in CORE_MODEL_FOLDERS or "Loader" in class_type


def format_rejection(status: int, body: Mapping[str, Any], prompt: Mapping[str, Any]) -> str:
    err = body.get("error") or {}
    if isinstance(err, str):
        head = err
    else:
        head = err.get("message", f"HTTP {status}")
        if err.get("details") and err.get("type") != "prompt_outputs_failed_validation":
            head += f" ({err['details']})"
    lines = format_node_errors(body.get("node_errors") or {}, prompt)
    return head + "".join(f"\n  {line}" for line in lines)


# --------------------------------------------------------------------------- manifest


class Manifest:
    """``<out>/manifest.json``: the batch's state, rewritten atomically on every change."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, out_dir: Path, workflow_sha: str) -> "Manifest":
        path = out_dir / MANIFEST_NAME
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise BatchError(f"{path} is not valid JSON ({exc}); move it away to start a new batch") from exc
            if data.get("workflow_sha256") != workflow_sha:
                raise BatchError(f"{path} belongs to a different workflow; use another --out folder")
            return cls(path, data)
        data = {"version": MANIFEST_VERSION, "workflow_sha256": workflow_sha, "client_id": str(uuid.uuid4()),
                "jobs": {}, "uploads": {}}
        manifest = cls(path, data)
        manifest.save()
        return manifest

    @property
    def client_id(self) -> str:
        return self.data["client_id"]

    def job(self, job: Job) -> dict:
        entry = self.data["jobs"].get(job.key)
        if entry is None:
            entry = {"name": job.name, "values": job.describe(), "state": "pending", "attempts": 0,
                     "prompt_id": None, "server": None, "prompt_ids": [], "outputs": [], "error": None}
            self.data["jobs"][job.key] = entry
        return entry

    def save(self) -> None:
        write_json(self.path, self.data, replace=True, fsync=True)


def _lock_holder(path: Path) -> int | None:
    """The live process holding the lock file, or None when the file is absent or stale."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user
        return pid
    return pid


@contextlib.contextmanager
def batch_lock(out_dir: Path):
    """One batch process per output folder.

    The lock file is created with O_EXCL, so of two batches started at the same moment only
    one gets it; a lock left by a dead process (SIGKILL, power loss) is taken over.
    """
    path = out_dir / LOCK_NAME
    for _ in range(2):  # second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None and holder != os.getpid():
                raise BatchError(f"another batch (pid {holder}) is running on {out_dir}") from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    else:
        raise BatchError(f"could not take the batch lock {path}: another batch took it at the same moment")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress display on stderr (rewritten in place on a terminal)."""

    WIDTH = 24

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.done = self.failed = 0
        self.running: dict[str, str] = {}
        self._last = ""
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, job: str | None = None, text: str | None = None, finished: bool = False) -> None:
        if job is not None:
            if text is None or finished:
                self.running.pop(job, None)
            else:
                self.running[job] = text
        if not self.enabled:
            return
        filled = int(self.WIDTH * (self.done + self.failed) / max(self.total, 1))
        running = "; ".join(f"{k} {v}" for k, v in list(self.running.items())[:3])
        line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} done"
                + (f", {self.failed} failed" if self.failed else "") + (f" | {running}" if running else ""))
        if line == self._last:
            return
        if self._tty:
            self.stream.write("\r" + line[:200].ljust(len(self._last[:200])))
        elif finished or job is None:   # a log file gets one line per finished job, not per step
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- server


class Server:
    """One ComfyUI server: HTTP calls and a websocket that routes events by prompt id."""

    def __init__(self, url: str, session: aiohttp.ClientSession, client_id: str,
                 submit_session: aiohttp.ClientSession | None = None):
        self.url = url.rstrip("/")
        self.session = session
        # POST /prompt on a fresh connection (never a pooled one the server may have closed), so
        # "connection refused" reliably means "not sent".
        self.submit_session = submit_session or session
        self.client_id = client_id
        self.watchers: dict[str, asyncio.Queue] = {}
        self.connected = asyncio.Event()
        self._ws_task: asyncio.Task | None = None
        self.alive = True
        self.down_since = 0.0             # time.monotonic() when it was last found down
        self.revive_lock = asyncio.Lock()
        self.marker: dict | None = None   # GET marker.ROUTE; None: no Pano360 output lookup there
        self.clock_offset = 0.0           # server clock - local clock, from marker["time"]

    async def probe(self) -> None:
        try:
            async with self.session.get(f"{self.url}/queue") as resp:
                resp.raise_for_status()
                await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.url}: {exc or type(exc).__name__}") from exc

    async def probe_marker(self) -> None:
        """Ask for the Pano360 pack's output lookup (:mod:`.marker`) and the server's clock."""
        self.marker = None
        try:
            async with self.session.get(f"{self.url}{ROUTE}") as resp:
                if resp.status != 200:
                    return
                info = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return
        if isinstance(info, dict) and info.get("version") == PROTOCOL_VERSION \
                and isinstance(info.get("time"), (int, float)):
            self.marker = info
            self.clock_offset = float(info["time"]) - time.time()

    def server_time(self) -> float | None:
        """The server's clock now (epoch seconds), when its output lookup told it."""
        return time.time() + self.clock_offset if self.marker is not None else None

    async def find_outputs(self, prompt_id: str, since: float | None) -> tuple[list[dict] | None, str]:
        """Output files on the server carrying ``prompt_id``'s marker: ``(files, "")``, or
        ``(None, why not)`` when the server cannot tell."""
        await self.probe_marker()   # again: the server may have restarted with other options
        if self.marker is None:
            return None, (f"{self.url} has no Pano360 output lookup ({ROUTE}; install or update the Pano360 "
                          "pack there)")
        if not self.marker.get("metadata"):
            return None, f"{self.url} runs with --disable-metadata, so its output files carry no marker"
        body = {"prompt_ids": [prompt_id], "since": since}
        try:
            async with self.session.post(f"{self.url}{ROUTE}", json=body) as resp:
                reply = await resp.json(content_type=None)
                if resp.status != 200:
                    return None, f"output lookup on {self.url} failed: HTTP {resp.status} {reply}"[:300]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            return None, f"output lookup on {self.url} failed: {exc or type(exc).__name__}"
        files = ((reply or {}).get("outputs") or {}).get(prompt_id)
        if not isinstance(files, list):
            return None, f"output lookup on {self.url} gave no answer for {prompt_id}"
        if not files and not reply.get("complete", False):
            return None, f"the output folder of {self.url} is too large to search completely"
        return files, ""

    def mark_down(self) -> None:
        if self.alive:
            self.alive = False
            self.down_since = time.monotonic()

    def start(self) -> None:
        self._ws_task = asyncio.ensure_future(self._ws_loop())

    async def stop(self) -> None:
        if self._ws_task:
            self._ws_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ws_task

    async def _ws_loop(self) -> None:
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        delay = 0.2
        while True:
            try:
                async with self.session.ws_connect(f"{ws_url}/ws?clientId={self.client_id}", heartbeat=30) as ws:
                    self.connected.set()
                    delay = 0.2
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._dispatch(json.loads(msg.data))
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                log.debug("websocket %s: %s", self.url, exc)
            self.connected.clear()
            for queue in self.watchers.values():
                queue.put_nowait({"type": "pano360_disconnected", "data": {}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(self, event: dict) -> None:
        data = event.get("data") or {}
        pid = data.get("prompt_id") if isinstance(data, dict) else None
        if pid in self.watchers:
            self.watchers[pid].put_nowait(event)

    async def ensure_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except asyncio.TimeoutError:
            raise ServerUnreachable(f"cannot open the websocket of ComfyUI at {self.url}/ws") from None

    async def get_json(self, path: str) -> Any:
        async with self.session.get(f"{self.url}{path}") as resp:
            resp.raise_for_status()
            return await resp.json()

    async def submit(self, prompt: dict, prompt_id: str, extra: dict) -> dict:
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id,
                   "extra_data": {"extra_pnginfo": extra}}
        try:
            async with self.submit_session.post(f"{self.url}/prompt", json=payload) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (json.JSONDecodeError, aiohttp.ContentTypeError):
                    body = {"error": (await resp.text())[:500]}
                if 400 <= resp.status < 500:
                    raise PromptRejected(f"prompt rejected by {self.url}: {format_rejection(resp.status, body, prompt)}")
                if resp.status != 200:   # the server failed while taking it: whether it queued it, /queue tells
                    log.warning("POST /prompt to %s: HTTP %d %s; checking whether it was queued", self.url,
                                resp.status, str(body)[:200])
                    return {}
                return body
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot reach ComfyUI at {self.url}: {exc}") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The request may or may not have arrived; the caller finds out from /history and /queue.
            log.warning("no answer from %s to POST /prompt (%s); checking whether it arrived", self.url, exc)
            return {}

    async def lookup(self, prompt_id: str) -> tuple[str, dict | None]:
        """-> ("done"|"error", history entry) | ("queued", None) | ("unknown", None)."""
        history = await self.get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry is not None and (entry.get("status") or {}).get("completed") is not None:
            status = entry.get("status") or {}
            ok = status.get("status_str", "success") == "success" and status.get("completed", True)
            return ("done" if ok else "error"), entry
        queue = await self.get_json("/queue")
        for item in (queue.get("queue_running") or []) + (queue.get("queue_pending") or []):
            if len(item) > 1 and item[1] == prompt_id:
                return "queued", None
        if entry is not None:   # in history without a status: finished by an older server
            return "done", entry
        return "unknown", None

    async def upload(self, path: Path) -> str:
        form = aiohttp.FormData()
        form.add_field("type", "input")
        with open(path, "rb") as f:
            form.add_field("image", f.read(), filename=path.name, content_type="application/octet-stream")
        try:
            async with self.session.post(f"{self.url}/upload/image", data=form) as resp:
                if resp.status != 200:
                    raise BatchError(f"upload of {path} to {self.url} failed: HTTP {resp.status} {await resp.text()}")
                body = await resp.json()
        except aiohttp.ClientConnectorError as exc:
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.url}: {exc}") from exc
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else body["name"]

    async def download(self, item: Mapping[str, Any]) -> bytes:
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        async with self.session.get(f"{self.url}/view", params=params) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def cancel(self, prompt_id: str) -> None:
        """Stop a prompt wherever it is: delete it from the pending queue (``POST /queue``), and
        interrupt it if it is running (``POST /interrupt`` only acts on the running prompt), so an
        abandoned prompt never runs later next to its retry.  Best effort: errors are logged."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                async with self.session.post(f"{self.url}{path}", json=body) as resp:
                    if resp.status != 200:
                        log.warning("POST %s%s for prompt %s: HTTP %d", self.url, path, prompt_id, resp.status)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("POST %s%s for prompt %s failed: %s", self.url, path, prompt_id, exc)


def history_error(entry: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(message, exception type or None) of a failed history entry."""
    for event, data in ((entry or {}).get("status") or {}).get("messages", []):
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', '')} {data.get('exception_message', '')}".rstrip(),
                    data.get("exception_type"))
        if event == "execution_interrupted":
            return "execution was interrupted", None
    return "execution failed (no error message in the history)", None


# --------------------------------------------------------------------------- batch


@dataclass
class BatchConfig:
    servers: list[str]
    out_dir: Path
    max_queued: int = 2
    retries: int = 2
    poll_interval: float = 2.0
    job_timeout: float | None = None
    http_timeout: float = 30.0
    reconnect_wait: float = 120.0   # how long a server that stops answering is waited for
    preflight: bool = True
    progress: bool = True
    on_job_done: Callable[[str, dict], None] | None = None   # (job name, manifest entry)

    def __post_init__(self):
        if not self.servers:
            raise BatchError("no ComfyUI server given (--server http://127.0.0.1:8188)")
        if self.max_queued < 1:
            raise BatchError(f"--max-queued must be >= 1, got {self.max_queued}")
        if self.retries < 0:
            raise BatchError(f"--retries must be >= 0, got {self.retries}")
        if not self.reconnect_wait >= 0:
            raise BatchError(f"--reconnect-wait must be >= 0 seconds, got {self.reconnect_wait}")


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending


def workflow_sha(api: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(api, sort_keys=True).encode()).hexdigest()


class _Batch:
    def __init__(self, api: dict, jobs: list[Job], config: BatchConfig, manifest: Manifest,
                 session: aiohttp.ClientSession, submit_session: aiohttp.ClientSession | None = None):
        self.api, self.jobs, self.config, self.manifest = api, jobs, config, manifest
        self.session = session
        self.servers = {url.rstrip("/"): Server(url, session, manifest.client_id, submit_session)
                        for url in config.servers}
        self.progress = Progress(len(jobs), enabled=config.progress)
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.remaining = 0
        self.finished = asyncio.Event()
        self.upload_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # ---- setup
    async def connect(self) -> list[Server]:
        errors, alive = [], []
        for server in self.servers.values():
            try:
                await server.probe()
                alive.append(server)
            except ServerUnreachable as exc:
                server.mark_down()
                errors.append(str(exc))
        for message in errors:
            log.error("%s", message)
        if not alive:
            raise ServerUnreachable("no ComfyUI server reachable:\n  " + "\n  ".join(errors))
        for server in alive:
            await server.probe_marker()
            server.start()
        return alive

    async def preflight(self, servers: list[Server]) -> None:
        """Check the workflow against each server's live node schemas (node types,
        inputs, model files present) before submitting anything."""
        uploads = {(s.target.node_id, s.target.input) for job in self.jobs[:1] for s in job.settings
                   if s.kind == "upload"}
        classes = sorted({n["class_type"] for n in self.api.values()})
        problems: list[str] = []
        for server in servers:
            try:
                info = await fetch_object_info(server.session, server.url, classes)
            except aiohttp.ClientResponseError as exc:
                missing = await self._missing_classes(server, classes)
                problems.append(f"{server.url}: node types not installed: {', '.join(missing) or exc}")
                continue
            schemas = SchemaSet([info])
            issues: dict[str, Any] = {}
            for job in self.jobs:   # every job's values, file uploads aside
                placeholder = {str(s.value): "" for s in job.settings if s.kind == "upload"}
                for issue in validate_prompt(apply(self.api, job, placeholder), schemas, skip_values=uploads):
                    issues.setdefault(str(issue), issue)
            for issue in issues.values():
                text = str(issue)
                if issue.kind == "missing_node_type":
                    text = f"node {issue.node_id}: node type {issue.class_type} is not installed on this server"
                elif issue.kind == "needs_model":
                    text = text.replace("needs model file", "missing model file") + " on this server"
                elif issue.kind == "needs_input_file":
                    text = text.replace("needs input file", "missing input file") + " on this server"
                if f"{server.url}: {text}" not in problems:
                    problems.append(f"{server.url}: {text}")
        if problems:
            raise BatchError("the workflow cannot run:\n  " + "\n  ".join(problems))

    async def _missing_classes(self, server: Server, classes: list[str]) -> list[str]:
        missing = []
        for c in classes:
            try:
                await server.get_json(f"/object_info/{c}")
            except aiohttp.ClientError:
                missing.append(c)
        return missing

    # ---- run
    async def run(self) -> BatchResult:
        alive = await self.connect()
        if self.config.preflight:
            await self.preflight(alive)
        resume, fresh = [], []
        for job in self.jobs:
            entry = self.manifest.job(job)
            if entry["state"] == "done":
                self.progress.done += 1
            elif entry["state"] == "submitted":
                resume.append(job)
            else:
                if entry["state"] == "failed":
                    entry.update(state="pending", attempts=0, error=None)
                fresh.append(job)
        self.manifest.save()
        self.remaining = len(resume) + len(fresh)
        self.progress.update()
        if self.remaining == 0:
            return self.result()
        for job in resume + fresh:
            self.queue.put_nowait(job)
        workers = [asyncio.ensure_future(self.worker(server))
                   for _ in range(self.config.max_queued) for server in alive]
        waiter = asyncio.ensure_future(self.finished.wait())
        try:
            while not self.finished.is_set():
                pending = [t for t in (waiter, *workers) if not t.done()]
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for w in workers:
                    if w.done() and not w.cancelled() and w.exception():
                        raise w.exception()
                if all(w.done() for w in workers):
                    break
        finally:
            for task in [waiter, *workers]:
                task.cancel()
            await asyncio.gather(waiter, *workers, return_exceptions=True)
            self.progress.close()
        result = self.result()
        if result.pending:
            raise BatchError(self._pending_message(result.pending))
        return result

    def _pending_message(self, pending: list[str]) -> str:
        waiting: dict[str, int] = {}
        for job in self.jobs:
            entry = self.manifest.job(job)
            if entry["state"] == "submitted" and entry["name"] in pending:
                waiting[entry["server"]] = waiting.get(entry["server"], 0) + 1
        lines = [f"{n} job(s) wait for {url}, which has their prompts but cannot be reached: rerun the same "
                 f"command when it is back (or leave it out of --server to run them elsewhere, where they "
                 "run again if that server had run them)" for url, n in waiting.items()]
        unsent = len(pending) - sum(waiting.values())
        if unsent:
            lines.append(f"{unsent} job(s) not sent: no reachable server left (rerun the same command to continue)")
        return "; ".join(lines)

    def result(self) -> BatchResult:
        out = BatchResult()
        for job in self.jobs:
            entry = self.manifest.job(job)
            if entry["state"] == "done":
                out.done.append(entry["name"])
            elif entry["state"] == "failed":
                out.failed[entry["name"]] = entry["error"]
            else:
                out.pending.append(entry["name"])
        return out

    async def worker(self, server: Server) -> None:
        while True:
            if not server.alive and not await self._server_back(server):
                return
            job = await self.queue.get()
            if not server.alive:   # it went down while this worker waited for a job
                self.queue.put_nowait(job)
                continue
            entry = self.manifest.job(job)
            try:
                await self.run_job(server, job, entry)
            except NotSent as exc:   # never reached `server`: another server takes it, no attempt used
                server.mark_down()
                log.error("%s; its next jobs go to the other servers while it is waited for (up to %g s)",
                          exc, self.config.reconnect_wait)
                self.progress.update(entry["name"], None)
                self.queue.put_nowait(job)
            except ServerGone as exc:   # `exc.server` has the prompt: the job waits for it
                exc.server.mark_down()
                log.error("%s: %s; the job waits for that server", entry["name"], exc)
                entry.update(error=str(exc))
                self.manifest.save()
                self.progress.update(entry["name"], finished=True)
                self._one_finished()
            except AttemptFailed as exc:
                self._attempt_failed(job, entry, str(exc))
            except (NotRetryable, BatchError, OSError) as exc:
                self._job_failed(job, entry, str(exc))

    async def _server_back(self, server: Server) -> bool:
        """Wait (up to ``reconnect_wait`` since it went down) for a server to answer again."""
        async with server.revive_lock:
            while not server.alive:
                left = server.down_since + self.config.reconnect_wait - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await server.probe()
                except ServerUnreachable:
                    await asyncio.sleep(min(1.0, left))
                    continue
                server.alive = True
                log.info("%s answers again; sending jobs to it", server.url)
            return True

    async def _lookup(self, server: Server, pid: str) -> tuple[str, dict | None]:
        """``server.lookup`` that rides out a restart: retried until ``reconnect_wait`` has
        passed without an answer, then ServerGone."""
        first_failure = None
        while True:
            try:
                return await server.lookup(pid)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure >= self.config.reconnect_wait:
                    raise ServerGone(server, f"{server.url} has not answered for {now - first_failure:.0f} s "
                                             f"({exc or type(exc).__name__})") from exc
                await asyncio.sleep(min(self.config.poll_interval, 1.0))

    def _attempt_failed(self, job: Job, entry: dict, message: str) -> None:
        if entry["attempts"] <= self.config.retries:
            log.warning("%s: attempt %d failed: %s; retrying", entry["name"], entry["attempts"], message)
            entry.update(state="pending", error=message)
            self.manifest.save()
            self.progress.update(entry["name"], None)
            self.queue.put_nowait(job)
        else:
            self._job_failed(job, entry, f"failed after {entry['attempts']} attempts: {message}")

    def _job_failed(self, job: Job, entry: dict, message: str) -> None:
        entry.update(state="failed", error=message)
        self.manifest.save()
        log.error("%s: %s", entry["name"], message)
        self.progress.failed += 1
        self.progress.update(entry["name"], finished=True)
        self._one_finished()

    def _one_finished(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.finished.set()

    async def run_job(self, server: Server, job: Job, entry: dict) -> None:
        if entry["state"] == "submitted":
            return await self.resume(job, entry, server)
        await self.submit_new(server, job, entry)

    async def submit_new(self, server: Server, job: Job, entry: dict) -> None:
        """A new attempt on ``server`` under a new prompt id, recorded before the POST."""
        prompt = await self.build_prompt(server, job)
        now = server.server_time()
        entry.update(state="submitted", prompt_id=str(uuid.uuid4()), server=server.url,
                     attempts=entry["attempts"] + 1, submitted_at=now, seen_outputs=None)
        entry["prompt_ids"].append(entry["prompt_id"])
        self.manifest.save()   # recorded BEFORE the POST: a rerun can always find it
        try:
            await self.follow(server, job, entry, submit=prompt)
        except NotSent:
            entry["prompt_ids"].pop()
            entry.update(state="pending", prompt_id=None, server=None, attempts=entry["attempts"] - 1)
            self.manifest.save()
            raise

    async def resume(self, job: Job, entry: dict, worker_server: Server) -> None:
        """A job recorded as submitted by an earlier run (or found so after a retry)."""
        name, pid = entry["name"], entry["prompt_id"]
        server = self.servers.get(entry["server"])
        if server is None:
            # The user left its server out of --server: run the job elsewhere, knowingly.
            log.warning("%s: prompt %s was sent to %s, which is not in --server; running the job on %s "
                        "(it runs twice if that server had run it)", name, pid, entry["server"], worker_server.url)
            return await self.submit_new(worker_server, job, entry)
        if not server.alive:
            raise ServerGone(server, f"prompt {pid} was sent to {server.url}, which is not reachable now")
        state, hist = await self._lookup(server, pid)
        if state == "done":
            return await self.collect(server, job, entry, hist)
        if state == "error":
            raise _execution_failure(*history_error(hist))
        if state == "queued":
            log.info("%s: prompt %s still queued on %s; following it", name, pid, server.url)
            return await self.follow(server, job, entry, submit=None)
        outcome, files, why = await self.recover(server, job, entry)
        if outcome == "finished":
            return await self.collect(server, job, entry, None, files=files)
        if outcome == "partial":
            raise AttemptFailed(why)
        if outcome == "never ran":
            log.info("%s: prompt %s never ran on %s (not received, or lost from its queue by a restart); "
                     "submitting it now", name, pid, server.url)
        else:
            log.warning("%s: cannot tell whether prompt %s ran on %s before the server forgot it (%s); "
                        "submitting it again: it runs twice if it had run", name, pid, server.url, why)
        return await self.follow(server, job, entry, submit=await self.build_prompt(server, job))

    async def recover(self, server: Server, job: Job, entry: dict) -> tuple[str, list[dict], str]:
        """What became of a prompt the server no longer knows (not in /history or /queue):
        ``("finished", files, "")``, ``("partial", files, why)``, ``("never ran", [], "")`` or
        ``("unknown", [], why)``."""
        pid = entry["prompt_id"]
        if entry.get("seen_outputs") is not None:   # the client saw it succeed, with these outputs
            return "finished", entry["seen_outputs"], ""
        since = entry.get("submitted_at")
        files, why = await server.find_outputs(pid, None if since is None else since - SCAN_MARGIN_S)
        if files is None:
            return "unknown", [], why
        if not files:
            return "never ran", [], ""
        missing = unwritten_outputs(await self.build_prompt(server, job), files)
        if missing:
            return "partial", files, (f"prompt {pid} was cut short on {server.url} (the server forgot it after it "
                                      f"wrote {len(files)} file(s), none from {', '.join(missing)})")
        log.info("%s: prompt %s finished on %s while the batch was not watching (the server has forgotten it "
                 "since); its %d output file(s) were found by their marker", entry["name"], pid, server.url,
                 len(files))
        return "finished", files, ""

    async def build_prompt(self, server: Server, job: Job) -> dict:
        uploads = self.manifest.data["uploads"].setdefault(server.url, {})
        for setting in job.settings:
            if setting.kind != "upload":
                continue
            path = Path(setting.value)
            stat = path.stat()
            key = f"{path}|{stat.st_size}|{int(stat.st_mtime)}"
            lock = self.upload_locks.setdefault((server.url, key), asyncio.Lock())
            async with lock:
                if key not in uploads:
                    uploads[key] = await server.upload(path)
                    self.manifest.save()
        names = {}
        for setting in job.settings:
            if setting.kind == "upload":
                path = Path(setting.value)
                stat = path.stat()
                names[str(setting.value)] = uploads[f"{path}|{stat.st_size}|{int(stat.st_mtime)}"]
        return apply(self.api, job, names)

    async def follow(self, server: Server, job: Job, entry: dict, submit: dict | None) -> None:
        pid, name = entry["prompt_id"], entry["name"]
        events: asyncio.Queue = asyncio.Queue()
        server.watchers[pid] = events
        try:
            try:
                await server.ensure_connected(self.config.http_timeout)
            except ServerUnreachable as exc:
                if submit is not None:
                    raise NotSent(str(exc)) from exc
                raise ServerGone(server, str(exc)) from exc
            if submit is not None:
                extra = {MARKER_KEY: job_marker(pid, name, entry["values"], self.manifest.client_id)}
                body = await server.submit(submit, pid, extra)
                if body.get("node_errors"):
                    log.warning("%s: some outputs of the prompt failed validation and will not run:\n  %s",
                                name, "\n  ".join(format_node_errors(body["node_errors"], submit)))
            self.progress.update(name, f"queued on {server.url}")
            hist, files = await self._wait(server, job, entry, events)
        finally:
            server.watchers.pop(pid, None)
        await self.collect(server, job, entry, hist, files=files)

    async def _wait(self, server: Server, job: Job, entry: dict,
                    events: asyncio.Queue) -> tuple[dict | None, list[dict] | None]:
        """Until the prompt finishes: ``(history entry, None)``, or ``(None, files)`` when the
        server forgot a prompt that had finished (its files found by their marker)."""
        pid, name = entry["prompt_id"], entry["name"]
        started = time.monotonic()
        node = ""
        watched_start = False   # saw execution_start: the `executed` events below are all of them
        seen: list[dict] = []
        while True:
            if self.config.job_timeout and time.monotonic() - started > self.config.job_timeout:
                await server.cancel(pid)
                raise AttemptFailed(f"timed out after {self.config.job_timeout:g} s on {server.url}")
            try:
                event = await asyncio.wait_for(events.get(), self.config.poll_interval)
            except asyncio.TimeoutError:
                event = None
            kind = (event or {}).get("type")
            data = (event or {}).get("data") or {}
            if kind == "progress":
                self.progress.update(name, f"node {data.get('node')} {data.get('value')}/{data.get('max')}")
                continue
            if kind == "executing" and data.get("node") is not None:
                node = data["node"]
                self.progress.update(name, f"node {node}")
                continue
            if kind == "execution_start":
                watched_start, seen = True, []
                continue
            if kind == "executed":
                seen.extend(_output_items({data.get("node"): data.get("output")}))
                continue
            if kind == "execution_error":
                raise _execution_failure(f"node {data.get('node_id')} ({data.get('node_type')}) failed on "
                                         f"{server.url}: {data.get('exception_type', '')} "
                                         f"{data.get('exception_message', '')}".rstrip(), data.get("exception_type"))
            if kind == "execution_interrupted":
                raise AttemptFailed(f"execution was interrupted on {server.url}")
            if kind == "execution_success" and watched_start:
                # Recorded before anything else: if the server forgets the prompt from here on
                # (a restart), a rerun downloads these files instead of running the job again.
                entry["seen_outputs"] = seen
                self.manifest.save()
            if kind in ("execution_cached", "executed", "progress_state"):
                continue
            # finished (success / executing None), disconnected, or quiet: ask the server
            state, hist = await self._lookup(server, pid)
            if state == "done":
                return hist, None
            if state == "error":
                raise _execution_failure(*history_error(hist))
            if state == "unknown":
                if kind in ("execution_success",) or (kind == "executing" and data.get("node") is None):
                    continue   # history is written right after the event; ask again
                outcome, files, why = await self.recover(server, job, entry)
                if outcome == "finished":
                    return None, files
                if outcome == "partial":
                    raise AttemptFailed(why)
                lost = (f"{server.url} lost prompt {pid} (connection dropped or server restarted"
                        f"{'; last node ' + str(node) if node else ''})")
                if outcome == "unknown":
                    log.warning("%s: %s; cannot tell whether it had finished (%s): the retry runs it again if "
                                "it had", name, lost, why)
                raise AttemptFailed(lost)

    async def collect(self, server: Server, job: Job, entry: dict, hist: dict | None,
                      files: list[dict] | None = None) -> None:
        """Download the job's outputs: those of its history entry, or ``files`` (found by marker)."""
        job_dir = self.config.out_dir / entry["name"]
        items = _output_items((hist or {}).get("outputs") or {}) if files is None else files
        names = []
        for item in items:
            if not isinstance(item, Mapping) or "filename" not in item or item.get("type") == "temp":
                continue
            rel = _safe_relpath(item.get("subfolder", ""), item["filename"])
            try:
                data = await server.download(item)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise AttemptFailed(f"download of {item['filename']} from {server.url} failed: {exc}") from exc
            write_bytes(job_dir / rel, data, replace=True, fsync=True)
            names.append(str(rel))
        entry.update(state="done", outputs=names, error=None, recovered=files is not None)
        write_json(job_dir / "job.json", replace=True, data={"name": entry["name"], "values": entry["values"],
                                                              "prompt_id": entry["prompt_id"], "server": server.url,
                                                              "outputs": names})
        self.manifest.save()
        self.progress.done += 1
        self.progress.update(entry["name"], finished=True)
        if self.config.on_job_done:
            self.config.on_job_done(entry["name"], entry)
        self._one_finished()


def _output_items(outputs: Mapping[str, Any]) -> list[dict]:
    """The file entries (``filename``, ``subfolder``, ``type``) of history/``executed`` outputs."""
    items = []
    for _node_id, ui in outputs.items():
        for key in OUTPUT_KEYS:
            for item in (ui or {}).get(key) or []:
                if isinstance(item, Mapping) and "filename" in item:
                    items.append({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                  "type": item.get("type", "output")})
    return items


def unwritten_outputs(prompt: Mapping[str, Any], files: list[dict]) -> list[str]:
    """Output nodes of ``prompt`` with no file among ``files``: each node whose
    ``filename_prefix``/``folder_prefix`` is a plain string (no ``%...%`` substitutions)
    must have written a file whose path starts with that prefix."""
    paths = [posixpath.join(f.get("subfolder") or "", f["filename"]) for f in files]
    missing = []
    for node_id, node in prompt.items():
        for key in PREFIX_INPUTS:
            prefix = (node.get("inputs") or {}).get(key)
            if not isinstance(prefix, str) or not prefix or "%" in prefix:
                continue
            norm = posixpath.normpath(prefix.replace("\\", "/")).lstrip("/")
            if not any(p.startswith(norm) for p in paths):
                missing.append(f"node {node_id} ({node.get('class_type')}) {key}={prefix!r}")
    return missing


def _execution_failure(message: str, exception_type: str | None) -> BatchError:
    """An execution error: retried unless it repeats with the same inputs."""
    if is_deterministic(exception_type):
        return NotRetryable(f"{message} (not retried: {exception_type} repeats with the same inputs)")
    return AttemptFailed(message)


def _safe_relpath(subfolder: str, filename: str) -> PurePosixPath:
    parts = [p for p in PurePosixPath(subfolder.replace("\\", "/"), filename.replace("\\", "/")).parts
             if p not in ("", ".", "/")]
    if not parts or any(p == ".." for p in parts):
        raise AttemptFailed(f"refusing output path {subfolder!r}/{filename!r}")
    return PurePosixPath(*parts)


async def run_batch(api: dict, jobs: list[Job], config: BatchConfig) -> BatchResult:
    """Run (or resume) a batch; see the module docstring."""
    config.out_dir.mkdir(parents=True, exist_ok=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.http_timeout, sock_read=config.http_timeout)
    with batch_lock(config.out_dir):
        manifest = Manifest.open(config.out_dir, workflow_sha(api))
        async with aiohttp.ClientSession(timeout=timeout) as session, aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as submit_session:
            batch = _Batch(api, jobs, config, manifest, session, submit_session)
            try:
                return await batch.run()
            finally:
                for server in batch.servers.values():
                    await server.stop()


# --------------------------------------------------------------------------- CLI


def build_axes(api: dict, args) -> list[Axis]:
    axes: list[Axis] = []
    if args.prompts:
        if not args.prompt_target:
            strings = [f"{i}.{k}" for i, n in api.items() for k, v in n.get("inputs", {}).items() if isinstance(v, str)]
            raise SweepError("--prompts needs --prompt-target NODE.INPUT; string inputs of this workflow: "
                             + ", ".join(strings))
        targets = tuple(resolve_target(api, t) for t in args.prompt_target)
        axes.append(Axis("--prompts", targets, read_prompts(args.prompts)))
    for text in args.set or []:
        axes.append(parse_set(api, text))
    if args.inputs:
        if not args.input_target:
            raise SweepError("--inputs needs --input-target NODE.INPUT (e.g. the LoadImage node's image)")
        targets = tuple(resolve_target(api, t) for t in args.input_target)
        axes.append(Axis("--inputs", targets, list_input_files(args.inputs), kind="upload"))
    if args.seeds:
        targets = (tuple(resolve_target(api, t) for t in args.seed_target) if args.seed_target
                   else seed_targets(api))
        axes.append(Axis("--seeds", targets, parse_seeds(args.seeds)))
    return axes


def load_api_workflow(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BatchError(f"cannot read workflow {path}: {exc}") from exc
    if "nodes" in data and isinstance(data["nodes"], list):
        raise BatchError(f"{path} is a UI-format workflow; use its API twin (workflows/api/) or "
                         "'Export (API)' from the ComfyUI menu")
    if "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (e.g. workflows/api/<name>.json)")
    parser.add_argument("--server", action="append", dest="servers", metavar="URL",
                        help="ComfyUI server, repeatable (default http://127.0.0.1:8188)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: one subfolder per job + manifest.json")
    parser.add_argument("--prompts", type=Path, help="file of prompts: one per line (# comments), or a JSON list")
    parser.add_argument("--prompt-target", action="append", metavar="NODE.INPUT",
                        help="input the prompts go to (node id or title), repeatable")
    parser.add_argument("--set", action="append", metavar="NODE.INPUT=v1,v2",
                        help="sweep an input over values (JSON scalars or strings; or a JSON list), repeatable")
    parser.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 1,2,10-19")
    parser.add_argument("--seed-target", action="append", metavar="NODE.INPUT",
                        help="seed input(s) (default: every seed/noise_seed input of the workflow)")
    parser.add_argument("--inputs", type=Path, metavar="FOLDER", help="folder of input images/videos to upload")
    parser.add_argument("--input-target", action="append", metavar="NODE.INPUT",
                        help="input the uploaded file names go to (e.g. LoadImage's image)")
    parser.add_argument("--max-queued", type=int, default=2, help="jobs queued at once per server (default 2)")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed job (default 2)")
    parser.add_argument("--job-timeout", type=float, help="seconds before a job is interrupted and retried")
    parser.add_argument("--reconnect-wait", type=float, default=120.0,
                        help="seconds to wait for a server that stops answering (e.g. restarts) before its "
                             "queued jobs are left for a rerun (default 120)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status polls (default 2)")
    parser.add_argument("--no-preflight", action="store_true",
                        help="skip checking the workflow against the servers' node schemas")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and exit")


def run(args) -> int:
    try:
        api = load_api_workflow(args.workflow)
        jobs = expand(build_axes(api, args))
        if args.dry_run:
            for job in jobs:
                log.info("%s %s", job.name, json.dumps(job.describe(), ensure_ascii=False))
            log.info("%d job(s)", len(jobs))
            return 0
        config = BatchConfig(servers=args.servers or ["http://127.0.0.1:8188"], out_dir=args.out,
                             max_queued=args.max_queued, retries=args.retries, job_timeout=args.job_timeout,
                             poll_interval=args.poll_interval, preflight=not args.no_preflight,
                             reconnect_wait=args.reconnect_wait)
        result = asyncio.run(run_batch(api, jobs, config))
    except (BatchError, SweepError) as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; rerun the same command to continue (finished jobs are kept, "
                  "queued prompts are not submitted again)")
        return 130
    log.info("%d done, %d failed; outputs in %s", len(result.done), len(result.failed), args.out)
    for name, error in result.failed.items():
        log.error("%s: %s", name, error)
    return 0 if result.ok else 1
