"""A ComfyUI server for tests and tools: start ``main.py`` on a free loopback port with a
throw-away base directory whose only custom node is this checkout, and talk to it.

Used by ``conftest.py`` (fixtures ``comfy_server``, ``comfy_server_factory``) and by
``record_schemas.py``.  Needs no pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import comfy_env

ROOT = comfy_env.ROOT
PACK_DIRNAME = comfy_env.PACK_DIRNAME
SERVER_START_TIMEOUT_S = 180.0  # ~10 s on an idle 2-core machine; generous for a busy one
HTTP_TIMEOUT_S = 60.0


def make_base_directory(base: pathlib.Path) -> pathlib.Path:
    """A ComfyUI base directory whose only custom node is this checkout."""
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIRNAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    return base


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyError(RuntimeError):
    """An HTTP error from the server, with its body."""


class ComfyClient:
    """A small blocking client for ComfyUI's HTTP API (loopback only)."""

    def __init__(self, url: str, log_path: pathlib.Path, base: pathlib.Path):
        self.url = url.rstrip("/")
        self.log_path = log_path
        self.base = base  # the server's base directory (output/, input/, temp/, user/)
        self.client_id = uuid.uuid4().hex

    # --- plumbing
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str):
        status, body = self.request("GET", path)
        if status != 200:
            raise ComfyError(f"GET {path}: HTTP {status}: {body[:2000]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload) -> tuple[int, object]:
        status, body = self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    # --- API
    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def post_prompt(self, prompt: dict, extra_data: dict | None = None) -> dict:
        """Queue an API-format prompt.  Returns the reply with ``status`` (the HTTP code) added:
        ``prompt_id`` and ``node_errors`` on 200; ``error`` and ``node_errors`` on 400."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        status, reply = self.post_json("/prompt", payload)
        if not isinstance(reply, dict):
            raise ComfyError(f"POST /prompt: HTTP {status}: {reply!r}")
        reply["status"] = status
        reply.setdefault("node_errors", {})
        return reply

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 120.0, poll_s: float = 0.2) -> dict:
        """The history entry of a finished prompt (success or error); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(poll_s)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s; log tail:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        """Queue a prompt that must validate, wait for it, and return its history entry."""
        reply = self.post_prompt(prompt)
        if reply["status"] != 200 or reply["node_errors"]:
            raise ComfyError(f"prompt rejected: {json.dumps(reply, indent=1)[:4000]}")
        return self.wait(reply["prompt_id"], timeout)

    def run_with_events(self, prompt: dict, timeout: float = 120.0) -> tuple[dict, list[tuple[str, dict]]]:
        """Like :meth:`run`, also collecting this prompt's websocket text events
        (``progress``, ``executing``, ``executed``, ``execution_error``, ...) in order."""
        from websockets.sync.client import connect

        host = self.url.split("://", 1)[1]
        events: list[tuple[str, dict]] = []
        with connect(f"ws://{host}/ws?clientId={self.client_id}", open_timeout=10, max_size=None) as ws:
            reply = self.post_prompt(prompt)
            if reply["status"] != 200 or reply["node_errors"]:
                raise ComfyError(f"prompt rejected: {json.dumps(reply, indent=1)[:4000]}")
            prompt_id = reply["prompt_id"]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if isinstance(message, bytes):
                    continue  # binary previews
                event = json.loads(message)
                data = event.get("data", {})
                if data.get("prompt_id", prompt_id) != prompt_id:
                    continue
                events.append((event["type"], data))
                if event["type"] in ("execution_error", "execution_interrupted") or (
                        event["type"] == "executing" and data.get("node") is None):
                    break
        return self.wait(prompt_id, max(1.0, deadline - time.monotonic())), events

    @staticmethod
    def error_message(entry: dict) -> str | None:
        """The ``execution_error`` message of a history entry, or None."""
        for event, data in entry.get("status", {}).get("messages", []):
            if event == "execution_error":
                return f"{data.get('node_type')}: {data.get('exception_message')}\n{''.join(data.get('traceback', []))}"
        return None

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body = self.request("GET", f"/view?{query}")
        if status != 200:
            raise ComfyError(f"GET /view?{query}: HTTP {status}")
        return body

    def upload_image(self, data: bytes, name: str, subfolder: str = "", overwrite: bool = True) -> dict:
        """POST /upload/image (multipart); returns ``{"name", "subfolder", "type"}``."""
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (("subfolder", subfolder), ("type", "input"), ("overwrite", "true" if overwrite else "false")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = self.request("POST", "/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise ComfyError(f"POST /upload/image: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def free(self, unload_models: bool = False) -> None:
        """Drop cached node outputs (and optionally models) so the next prompt re-executes."""
        self.post_json("/free", {"unload_models": unload_models, "free_memory": True})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


def start_server(comfyui_root: pathlib.Path, base: pathlib.Path, log_path: pathlib.Path,
                 models_dir: pathlib.Path | None = None, python: str | None = None, port: int | None = None):
    """Start ``main.py --cpu`` on ``port`` (default: a free loopback port); returns (process,
    client) once ``/system_stats`` answers.  ``models_dir``: a folder whose ``checkpoints/``
    the server lists too (``--extra-model-paths-config``); ``python``: the interpreter
    (default: this one).  A fixed port restarts a server where its clients find it."""
    extra_args = []
    if models_dir is not None:
        (models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        extra = base / "extra_model_paths.yaml"
        extra.write_text(f"pano360_tests:\n  base_path: {models_dir}\n  checkpoints: checkpoints/\n")
        extra_args = ["--extra-model-paths-config", str(extra)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    last_error = ""
    fixed = port
    for _attempt in range(3):  # a port taken between free_port() and bind(): try another one
        port = fixed or free_port()
        cmd = [
            python or sys.executable, "-u", "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
            "--disable-auto-launch", "--disable-api-nodes", "--log-stdout",
            "--base-directory", str(base), "--database-url", "sqlite:///:memory:", *extra_args,
            # only this checkout, even if ComfyUI's own extra_model_paths.yaml adds custom_nodes folders
            "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIRNAME,
        ]
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(cmd, cwd=comfyui_root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        client = ComfyClient(f"http://127.0.0.1:{port}", log_path, base)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError, ValueError):
                if client.request("GET", "/system_stats", timeout=2.0)[0] == 200:
                    return proc, client
            time.sleep(0.25)
        stop_server(proc)
        last_error = client.log_tail(80)
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"ComfyUI did not start within {SERVER_START_TIMEOUT_S} s:\n{last_error}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
