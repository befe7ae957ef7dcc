"""A small fake ComfyUI server for host-free tests of the batch client.

Speaks the subset of ComfyUI 0.3.64's protocol the client uses (shared/specs/comfyui-host.md
§5): ``POST /prompt`` (client-chosen ``prompt_id``, ``node_errors``), ``GET /history[/id]``,
``GET /queue``, ``POST /queue`` (``delete``), ``GET /view``, ``POST /upload/image``, ``POST /interrupt``,
``GET /object_info[/class]``, and ``/ws?clientId=`` with ``status``, ``execution_start``,
``executing``, ``progress``, ``executed``, ``execution_success``, ``execution_error``.
With ``pack=True`` (the default) it also serves the Pano360 pack's output lookup
(``client.marker.ROUTE``) through the real host-free implementation.

It executes one prompt at a time like ComfyUI and keeps history and queue in memory only,
like ComfyUI: :meth:`restart` (and :meth:`go_down` / :meth:`come_up`) lose them, the
running prompt included, while the output folder (a real folder on disk) survives.  Each
``Save*`` node writes one file there embedding ``extra_pnginfo`` as ComfyUI's savers do
(unless ``metadata=False``, as ``--disable-metadata``).  Every submission and every
completed execution is counted across restarts.  Loopback only, random port.
"""

from __future__ import annotations

import asyncio
import collections
import json
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from aiohttp import web

from pano360.client import marker


class FakeComfyUI:
    def __init__(self, object_info: dict, *, steps: int = 3, step_delay: float = 0.005,
                 reject: Callable[[dict], dict | None] | None = None,
                 fail: Callable[[dict], tuple[str, str] | str | None] | None = None,
                 drop_mid_job: int = 0, pack: bool = True, metadata: bool = True,
                 output_dir: Path | None = None, restart_after_saves: int | None = None):
        """``reject(prompt)`` -> node_errors (-> HTTP 400) or None; ``fail(prompt)`` ->
        exception message, or (exception type, message), (-> execution_error) or None;
        ``drop_mid_job``: that many times, close the websocket in the middle of a job and lose
        the job (a crash); ``pack``: serve the Pano360 output lookup; ``metadata``: saved
        files embed ``extra_pnginfo``; ``restart_after_saves``: restart the server once, right
        after that many files were saved (a crash between two save nodes of one prompt)."""
        self.object_info = object_info
        self.steps, self.step_delay = steps, step_delay
        self.reject, self.fail = reject, fail
        self.drops_left = drop_mid_job
        self.pack, self.metadata = pack, metadata
        self.restart_after_saves = restart_after_saves
        self._own_dir = output_dir is None
        self.output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="fake_comfy_"))
        self.submissions: collections.Counter[str] = collections.Counter()
        self.started: list[str] = []        # prompts whose execution began (across restarts)
        self.executed: list[str] = []       # prompts that ran to the end (across restarts)
        self.restarts = 0
        self.interrupted: set[str] = set()
        self.history: dict[str, dict] = {}
        self.pending: list[tuple[str, dict, str, dict]] = []
        self.running: tuple[str, dict, str, dict] | None = None
        self.held = False                   # True: execution pauses (see hold())
        self._released = asyncio.Event()
        self._released.set()
        self.files: dict[tuple[str, str], bytes] = {}
        self.saves = 0
        self.uploads: dict[str, bytes] = {}
        self.sockets: dict[str, list[web.WebSocketResponse]] = collections.defaultdict(list)
        self._wake = asyncio.Event()
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._worker: asyncio.Task | None = None
        self.port = 0
        self.url = ""

    # ---- lifecycle
    async def start(self) -> str:
        await self.come_up()
        return self.url

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/prompt", self.post_prompt)
        app.router.add_get("/history", self.get_history_all)
        app.router.add_get("/history/{pid}", self.get_history)
        app.router.add_get("/queue", self.get_queue)
        app.router.add_post("/queue", self.post_queue)
        app.router.add_get("/view", self.get_view)
        app.router.add_post("/upload/image", self.post_upload)
        app.router.add_post("/interrupt", self.post_interrupt)
        app.router.add_get("/object_info", self.get_object_info_all)
        app.router.add_get("/object_info/{cls}", self.get_object_info)
        app.router.add_get("/ws", self.websocket)
        if self.pack:
            app.router.add_get(marker.ROUTE, self.get_marker_info)
            app.router.add_post(marker.ROUTE, self.post_marker_find)
        return app

    async def come_up(self) -> None:
        """Start listening (again, on the same port after :meth:`go_down`) and executing."""
        self._runner = web.AppRunner(self._app(), handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._worker = asyncio.ensure_future(self._work())

    async def go_down(self) -> None:
        """The server process dies: connections are refused, and history, queue and the
        running prompt are lost; the output folder stays."""
        for sockets in self.sockets.values():   # (closed first: aiohttp's cleanup waits for their handlers)
            for ws in list(sockets):
                await ws.close()
        if self._runner:   # then every other connection, and new ones are refused
            await self._runner.cleanup()
            self._runner = self._site = None
        await self._lose_state()

    async def restart(self) -> None:
        """A quick restart on the same port: history, queue and the running prompt are lost."""
        await self.go_down()
        await self.come_up()

    async def _lose_state(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for sockets in self.sockets.values():
            for ws in list(sockets):
                await ws.close()
        self.history.clear()
        self.pending.clear()
        self.running = None
        self.interrupted.clear()
        self.restarts += 1

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for sockets in self.sockets.values():
            for ws in list(sockets):
                await ws.close()
        if self._runner:
            await self._runner.cleanup()
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def hold(self, held: bool = True) -> None:
        """While held, nothing executes: queued prompts wait, the running one pauses at its next step."""
        self.held = held
        if held:
            self._released.clear()
        else:
            self._released.set()
        self._wake.set()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    # ---- what happened, for assertions
    def output_files(self) -> dict[str, dict]:
        """Every file in the output folder (``subfolder/filename``) -> its content (JSON)."""
        found = {}
        for path in sorted(self.output_dir.rglob("*")):
            if path.is_file():
                found[path.relative_to(self.output_dir).as_posix()] = json.loads(path.read_text())
        return found

    @staticmethod
    def marker_of(content: dict) -> str | None:
        """The prompt id a saved file's embedded batch marker names (None without metadata)."""
        job = (content.get("extra_pnginfo") or {}).get(marker.MARKER_KEY) or {}
        token = job.get("marker") or ""
        return token[len(marker.TOKEN_PREFIX):] if token.startswith(marker.TOKEN_PREFIX) else None

    # ---- routes
    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["prompt"]
        pid = str(body.get("prompt_id"))
        self.submissions[pid] += 1
        if self.reject and (node_errors := self.reject(prompt)):
            error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                     "details": "", "extra_info": {}}
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        self.pending.append((pid, prompt, body.get("client_id", ""), body.get("extra_data") or {}))
        self._counter += 1
        self._wake.set()
        return web.json_response({"prompt_id": pid, "number": self._counter, "node_errors": {}})

    async def get_history_all(self, request):
        return web.json_response(self.history)

    async def get_history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def get_queue(self, request):
        item = lambda t: [0, t[0], t[1], {"client_id": t[2]}, []]
        return web.json_response({"queue_running": [item(self.running)] if self.running else [],
                                  "queue_pending": [item(t) for t in self.pending]})

    async def get_view(self, request):
        key = (request.query.get("subfolder", ""), request.query["filename"])
        if key not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[key], content_type="image/png")

    async def post_upload(self, request):
        post = await request.post()
        upload = post["image"]
        data = upload.file.read()
        name = upload.filename
        if name in self.uploads and self.uploads[name] != data:   # ComfyUI renames on a clash
            stem, dot, ext = name.rpartition(".")
            i = 1
            while f"{stem} ({i}).{ext}" in self.uploads:
                i += 1
            name = f"{stem} ({i}).{ext}"
        self.uploads[name] = data
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def post_queue(self, request):
        """ComfyUI's ``POST /queue``: ``{"delete": [prompt ids]}`` drops pending prompts."""
        body = await request.json()
        drop = set(map(str, body.get("delete") or []))
        self.pending = [t for t in self.pending if t[0] not in drop]
        return web.Response()

    async def post_interrupt(self, request):
        """ComfyUI's ``POST /interrupt``: with a ``prompt_id``, only that prompt if it is running."""
        body = await request.json() if request.can_read_body else {}
        pid = body.get("prompt_id")
        if self.running and (pid is None or self.running[0] == pid):
            self.interrupted.add(self.running[0])
        return web.Response()

    async def get_object_info_all(self, request):
        return web.json_response(self.object_info)

    async def get_object_info(self, request):
        cls = request.match_info["cls"]
        if cls not in self.object_info:
            return web.json_response({})   # ComfyUI answers {} for an unknown class
        return web.json_response({cls: self.object_info[cls]})

    async def get_marker_info(self, request):
        return web.json_response(marker.info_reply(self.metadata))

    async def post_marker_find(self, request):
        body = await request.json()
        status, reply = await asyncio.get_running_loop().run_in_executor(
            None, marker.find_reply, self.output_dir, body, self.metadata)
        return web.json_response(reply, status=status)

    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        cid = request.query.get("clientId", "")
        self.sockets[cid].append(ws)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": len(self.pending)}},
                                                      "sid": cid}})
        try:
            async for _ in ws:
                pass
        finally:
            if ws in self.sockets[cid]:
                self.sockets[cid].remove(ws)
        return ws

    # ---- execution
    async def _send(self, cid: str, kind: str, data: dict) -> None:
        for ws in list(self.sockets.get(cid, [])):
            try:
                await ws.send_str(json.dumps({"type": kind, "data": data}))
            except (ConnectionError, RuntimeError):
                pass

    async def _work(self) -> None:
        while True:
            while not self.pending or self.held:
                self._wake.clear()
                await self._wake.wait()
            self.running = self.pending.pop(0)
            try:
                await self._execute(*self.running)
            finally:
                self.running = None

    def _save(self, pid: str, node_id: str, prompt: dict, extra: dict) -> dict:
        prefix = prompt[node_id]["inputs"].get("filename_prefix", "ComfyUI")
        subfolder, stem = posixpath.split(posixpath.normpath(prefix))
        self._counter += 1
        name = f"{stem}_{self._counter:05d}_.png"
        content = {"node": node_id, "prompt": prompt}
        if self.metadata:
            content["extra_pnginfo"] = extra.get("extra_pnginfo") or {}
        data = json.dumps(content, sort_keys=True).encode()
        path = self.output_dir / subfolder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[(subfolder, name)] = data
        self.saves += 1
        if self.restart_after_saves is not None and self.saves == self.restart_after_saves:
            asyncio.ensure_future(self.restart())   # cancels this worker at its next await
        return {"filename": name, "subfolder": subfolder, "type": "output"}

    async def _execute(self, pid: str, prompt: dict, cid: str, extra: dict) -> None:
        self.started.append(pid)
        await self._send(cid, "execution_start", {"prompt_id": pid})
        outputs = {}
        for node_id in sorted(prompt, key=lambda k: int(k) if k.isdigit() else k):
            node = prompt[node_id]
            await self._send(cid, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            for step in range(self.steps):
                await asyncio.sleep(self.step_delay)
                await self._released.wait()
                if pid in self.interrupted:
                    await self._send(cid, "execution_interrupted", {"prompt_id": pid, "node_id": node_id})
                    self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": {},
                                         "status": {"status_str": "error", "completed": False,
                                                    "messages": [["execution_interrupted", {"prompt_id": pid}]]}}
                    return
                await self._send(cid, "progress", {"value": step + 1, "max": self.steps, "node": node_id,
                                                   "prompt_id": pid})
                if self.drops_left > 0:   # crash: the connection drops and the job is gone
                    self.drops_left -= 1
                    for ws in list(self.sockets.get(cid, [])):
                        await ws.close()
                    return
            failure = self.fail(prompt) if self.fail else None
            if failure:
                kind, message = failure if isinstance(failure, tuple) else ("RuntimeError", failure)
                data = {"prompt_id": pid, "node_id": node_id, "node_type": node["class_type"],
                        "exception_message": message, "exception_type": kind, "traceback": []}
                await self._send(cid, "execution_error", data)
                self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": {},
                                     "status": {"status_str": "error", "completed": False,
                                                "messages": [["execution_error", data]]}}
                return
            if node["class_type"].startswith("Save"):
                outputs[node_id] = {"images": [self._save(pid, node_id, prompt, extra)]}
                await self._send(cid, "executed", {"node": node_id, "output": outputs[node_id], "prompt_id": pid})
        self.executed.append(pid)
        self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": outputs,
                             "status": {"status_str": "success", "completed": True, "messages": []}}
        await self._send(cid, "execution_success", {"prompt_id": pid})
        await self._send(cid, "executing", {"node": None, "prompt_id": pid})
