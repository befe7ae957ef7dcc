"""A small fake ComfyUI server for host-free tests of the batch client.

Speaks the subset of ComfyUI 0.3.64's protocol the client uses (shared/specs/comfyui-host.md
§5): ``POST /prompt`` (client-chosen ``prompt_id``, ``node_errors``), ``GET /history[/id]``,
``GET /queue``, ``POST /queue`` (``delete``), ``GET /view``, ``POST /upload/image``, ``POST /interrupt``,
``GET /object_info[/class]``, and ``/ws?clientId=`` with ``status``, ``execution_start``,
``executing``, ``progress``, ``executed``, ``execution_success``, ``execution_error``.
It executes one prompt at a time like ComfyUI, and counts submissions per prompt id.
Loopback only, random port.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Callable

from aiohttp import web


class FakeComfyUI:
    def __init__(self, object_info: dict, *, steps: int = 3, step_delay: float = 0.005,
                 reject: Callable[[dict], dict | None] | None = None,
                 fail: Callable[[dict], str | None] | None = None,
                 drop_mid_job: int = 0):
        """``reject(prompt)`` -> node_errors (-> HTTP 400) or None; ``fail(prompt)`` ->
        exception message (-> execution_error) or None; ``drop_mid_job``: that many
        times, close the websocket in the middle of a job and lose the job (a crash)."""
        self.object_info = object_info
        self.steps, self.step_delay = steps, step_delay
        self.reject, self.fail = reject, fail
        self.drops_left = drop_mid_job
        self.submissions: collections.Counter[str] = collections.Counter()
        self.executed: list[str] = []
        self.interrupted: set[str] = set()
        self.history: dict[str, dict] = {}
        self.pending: list[tuple[str, dict, str]] = []
        self.running: tuple[str, dict, str] | None = None
        self.files: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.sockets: dict[str, list[web.WebSocketResponse]] = collections.defaultdict(list)
        self._wake = asyncio.Event()
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task | None = None
        self.url = ""

    # ---- lifecycle
    async def start(self) -> str:
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
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._worker = asyncio.ensure_future(self._work())
        return self.url

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for sockets in self.sockets.values():
            for ws in list(sockets):
                await ws.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

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
        self.pending.append((pid, prompt, body.get("client_id", "")))
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
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            self.running = self.pending.pop(0)
            try:
                await self._execute(*self.running)
            finally:
                self.running = None

    async def _execute(self, pid: str, prompt: dict, cid: str) -> None:
        await self._send(cid, "execution_start", {"prompt_id": pid})
        outputs = {}
        for node_id in sorted(prompt, key=lambda k: int(k) if k.isdigit() else k):
            node = prompt[node_id]
            await self._send(cid, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            for step in range(self.steps):
                await asyncio.sleep(self.step_delay)
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
            if self.fail and (message := self.fail(prompt)):
                data = {"prompt_id": pid, "node_id": node_id, "node_type": node["class_type"],
                        "exception_message": message, "exception_type": "RuntimeError", "traceback": []}
                await self._send(cid, "execution_error", data)
                self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": {},
                                     "status": {"status_str": "error", "completed": False,
                                                "messages": [["execution_error", data]]}}
                return
            if node["class_type"].startswith("Save"):
                prefix = node["inputs"].get("filename_prefix", "ComfyUI")
                self._counter += 1
                name = f"{prefix}_{self._counter:05d}_.png"
                self.files[("", name)] = f"{pid}:{node_id}:{json.dumps(prompt, sort_keys=True)}".encode()
                outputs[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
                await self._send(cid, "executed", {"node": node_id, "output": outputs[node_id], "prompt_id": pid})
        self.executed.append(pid)
        self.history[pid] = {"prompt": [0, pid, prompt, {}, []], "outputs": outputs,
                             "status": {"status_str": "success", "completed": True, "messages": []}}
        await self._send(cid, "execution_success", {"prompt_id": pid})
        await self._send(cid, "executing", {"node": None, "prompt_id": pid})
