"""Host tests: Pano360 inside a real ComfyUI (0.3.64), in process and over HTTP.

ComfyUI is found through ``$COMFYUI_ROOT`` or, when this checkout sits in
``<ComfyUI>/custom_nodes/<pack>``, through the parent folders.  Without one, every
test in this folder is skipped with the reason (see docs/testing.md); a test module
that needs no ComfyUI sets ``HOST_FREE = True``.

Fixtures
--------
``comfyui_root``       the ComfyUI folder (a ``pathlib.Path``).
``comfy_in_process``   ComfyUI importable in this process (``--cpu`` defaults, a temp
                       base directory), so ``pano360.nodes.*`` import and a node's
                       ``execute`` can be called directly.
``comfy_server``       one ComfyUI server per session on 127.0.0.1 and a free port, with
                       this checkout as its only custom node and every folder it writes
                       in a temp base directory; yields a :class:`ComfyClient`.
``comfy_server_factory`` ``start()`` another independent server (for multi-server tests).
``sd15_checkpoint``    a random SD1.5-shaped checkpoint (built once, cached outside the
                       repository) that the server lists in ``models/checkpoints``.

Nothing here writes into the ComfyUI folder except Python's own bytecode cache
(``__pycache__``) when ComfyUI's modules are imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
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

import pytest

if str(pathlib.Path(__file__).resolve().parent) not in sys.path:  # any --import-mode
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import comfy_env  # noqa: E402  (tests/host/comfy_env.py)

HOST_DIR = pathlib.Path(__file__).resolve().parent
ROOT = HOST_DIR.parents[1]  # the checkout under test
SHARED = ROOT.parent / "shared"  # same names as tests/conftest.py (pytest shares the module name)

PACK_DIRNAME = comfy_env.PACK_DIRNAME
SERVER_START_TIMEOUT_S = 180.0  # ~10 s on an idle 2-core machine; generous for a busy one
HTTP_TIMEOUT_S = 60.0
SD15_FILENAME = "pano360_random_sd15.safetensors"
SD15_BUILD_TIMEOUT_S = 600.0
HOW_TO = "set COMFYUI_ROOT=/path/to/ComfyUI (0.3.64); see docs/testing.md"


# ------------------------------------------------------------------ finding ComfyUI


def _is_comfyui(path: pathlib.Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir() and (path / "folder_paths.py").is_file()


def find_comfyui_root() -> tuple[pathlib.Path | None, str]:
    """(root, reason): ComfyUI from $COMFYUI_ROOT or from the custom_nodes folder this pack sits in."""
    env = os.environ.get("COMFYUI_ROOT")
    if env:
        path = pathlib.Path(env).expanduser()
        if _is_comfyui(path):
            return path.resolve(), ""
        return None, f"ComfyUI not found: COMFYUI_ROOT={env} has no main.py/comfy/folder_paths.py; {HOW_TO}"
    # Unresolved paths keep a symlinked custom_nodes/<pack> visible; the shell's logical
    # working directory ($PWD) does too when pytest was started from inside the symlink.
    starts = [pathlib.Path(os.path.abspath(__file__)), pathlib.Path(__file__).resolve()]
    if os.environ.get("PWD"):
        starts.append(pathlib.Path(os.environ["PWD"]))
    for start in starts:
        for parent in (start, *start.parents):
            if parent.name == "custom_nodes" and _is_comfyui(parent.parent):
                return parent.parent.resolve(), ""
            if _is_comfyui(parent) and (parent / "custom_nodes").is_dir() and any(
                    entry.resolve() == ROOT for entry in (parent / "custom_nodes").iterdir()):
                return parent.resolve(), ""
    return None, f"ComfyUI not found: {HOW_TO}"


COMFYUI_ROOT, NOT_FOUND_REASON = find_comfyui_root()


def pytest_configure(config):
    # the expected, once-per-process notice of prepare_comfyui.py's torchaudio guard
    config.addinivalue_line("filterwarnings", "ignore:torchaudio extension:UserWarning")


def pytest_collection_modifyitems(config, items):
    if COMFYUI_ROOT is not None:
        return
    skip = pytest.mark.skip(reason=NOT_FOUND_REASON)
    for item in items:
        path = pathlib.Path(str(item.fspath)).resolve()
        if HOST_DIR in path.parents and not getattr(getattr(item, "module", None), "HOST_FREE", False):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui_root() -> pathlib.Path:
    if COMFYUI_ROOT is None:
        pytest.skip(NOT_FOUND_REASON)
    return COMFYUI_ROOT


def _make_base_directory(base: pathlib.Path) -> pathlib.Path:
    """A ComfyUI base directory whose only custom node is this checkout."""
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIRNAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    return base


# ------------------------------------------------------------------ in process


@pytest.fixture(scope="session")
def comfy_in_process(comfyui_root, tmp_path_factory):
    """ComfyUI's modules importable here, configured as ``main.py --cpu`` with a temp base dir.

    Returns a namespace: ``root``, ``base`` (temp base directory), ``folder_paths``,
    ``model_management``, ``utils`` (``comfy.utils``), ``io`` (``comfy_api.latest.io``)
    and ``run_node(node_cls, **inputs) -> io.NodeOutput``, which calls a V3 node the way
    the executor does (a class clone with hidden inputs, ``unique_id`` "1").
    """
    base = _make_base_directory(tmp_path_factory.mktemp("comfy_inproc"))
    try:
        env = comfy_env.import_comfy(comfyui_root, base)
    except comfy_env.ComfyImportError as error:
        pytest.skip(str(error))

    def run_node(node_cls, unique_id: str = "1", **inputs):
        clone = node_cls.PREPARE_CLASS_CLONE({"unique_id": unique_id})
        if inspect.iscoroutinefunction(node_cls.execute):
            return asyncio.run(clone.EXECUTE_NORMALIZED_ASYNC(**inputs))
        return clone.EXECUTE_NORMALIZED(**inputs)

    env.run_node = run_node
    return env


# ------------------------------------------------------------------ server


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


def _model_cache_dir() -> pathlib.Path:
    root = os.environ.get("PANO360_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pano360-tests")
    return pathlib.Path(root)


def _start_server(comfyui_root: pathlib.Path, base: pathlib.Path, log_path: pathlib.Path, port: int | None = None):
    """Start main.py on ``port`` (default: a free loopback port); returns (process, client)
    once /system_stats answers.  A fixed port restarts a server where its clients find it."""
    models = _model_cache_dir() / "models"
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"pano360_tests:\n  base_path: {models}\n  checkpoints: checkpoints/\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    last_error = ""
    fixed = port
    for _attempt in range(3):  # a port taken between free_port() and bind(): try another one
        port = fixed or free_port()
        cmd = [
            sys.executable, "-u", "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
            "--disable-auto-launch", "--disable-api-nodes", "--log-stdout",
            "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
            "--extra-model-paths-config", str(extra),
            # only this checkout, even if ComfyUI's own extra_model_paths.yaml adds custom_nodes folders
            "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIRNAME,
        ]
        log_file = open(log_path, "ab")
        proc = subprocess.Popen(cmd, cwd=comfyui_root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        client = ComfyClient(f"http://127.0.0.1:{port}", log_path, base)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError, ValueError):
                if client.request("GET", "/system_stats", timeout=2.0)[0] == 200:
                    return proc, client
            time.sleep(0.25)
        _stop(proc)
        last_error = client.log_tail(80)
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"ComfyUI did not start within {SERVER_START_TIMEOUT_S} s:\n{last_error}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def comfy_server_factory(comfyui_root, tmp_path_factory):
    """``start() -> ComfyClient``: starts another independent server (own port and base
    directory) on each call, e.g. to test a client against several servers; all are
    stopped at the end of the session.  Each costs one ComfyUI start (~10 s, ~1 GB)."""
    check = subprocess.run([sys.executable, "-c", "import torch, torchvision, torchaudio, aiohttp, sqlalchemy, av"],
                           capture_output=True, text=True, timeout=300)
    if check.returncode != 0:
        pytest.skip("ComfyUI's dependencies are not importable (install them and run tests/host/prepare_comfyui.py, "
                    f"see docs/testing.md): {check.stderr.strip().splitlines()[-1:]}")
    processes: list[subprocess.Popen] = []

    def start() -> ComfyClient:
        base = _make_base_directory(tmp_path_factory.mktemp("comfy_server"))
        proc, client = _start_server(comfyui_root, base, base / "comfyui.log")
        processes.append(proc)
        return client

    try:
        yield start
    finally:
        for proc in processes:
            _stop(proc)


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory) -> ComfyClient:
    """One ComfyUI server shared by the whole session; a :class:`ComfyClient`."""
    return comfy_server_factory()


# ------------------------------------------------------------------ random-weight models


@pytest.fixture(scope="session")
def sd15_checkpoint(comfyui_root) -> str:
    """File name (in ``models/checkpoints``) of a random SD1.5-shaped checkpoint.

    Built once with ComfyUI's own classes by ``make_random_models.py`` into
    ``$PANO360_TEST_CACHE`` (default ``~/.cache/pano360-tests``)/models/checkpoints, which
    the ``comfy_server`` fixture lists through ``--extra-model-paths-config``.  About 2 GB
    and 20-60 s the first time; a file lock keeps parallel sessions from building twice.
    """
    folder = _model_cache_dir() / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SD15_FILENAME
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            result = subprocess.run(
                [sys.executable, str(HOST_DIR / "make_random_models.py"), "--comfyui", str(comfyui_root),
                 "--model", "sd15", "--out", str(path)],
                capture_output=True, text=True, timeout=SD15_BUILD_TIMEOUT_S,
            )
            if result.returncode != 0:
                pytest.fail(f"building the random SD1.5 checkpoint failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return SD15_FILENAME
