"""Host tests: Pano360 inside a real ComfyUI (0.3.64 or 0.33), in process and over HTTP.

ComfyUI is found through ``$COMFYUI_ROOT`` or, when this checkout sits in
``<ComfyUI>/custom_nodes/<pack>``, through the parent folders.  Without one, every
test in this folder is skipped with the reason (see docs/testing.md); a test module
that needs no ComfyUI sets ``HOST_FREE = True``.

With ``PANO360_HOST_STRICT=1`` (CI sets it) nothing here may skip: a missing ComfyUI
fails every test, and any test that would skip is reported as failed with its reason.

Fixtures
--------
``comfyui_root``       the ComfyUI folder (a ``pathlib.Path``).
``comfy_version``      its version as a tuple of ints, e.g. ``(0, 33, 0)`` (from
                       ``comfyui_version.py``, read without importing ComfyUI).
``comfy_in_process``   ComfyUI importable in this process (``--cpu`` defaults, a temp
                       base directory), so ``pano360.nodes.*`` import and a node's
                       ``execute`` can be called directly.
``comfy_server``       one ComfyUI server per session on 127.0.0.1 and a free port, with
                       this checkout as its only custom node and every folder it writes
                       in a temp base directory; yields a :class:`ComfyClient`.
``comfy_server_factory`` ``start()`` another independent server (for multi-server tests).
``sd15_checkpoint``    the file name of a tiny random SD1.5 checkpoint (built once,
                       cached outside the repository) that the server lists in
                       ``models/checkpoints``; ``sd15_checkpoint_path`` is its full path.

Nothing here writes into the ComfyUI folder except Python's own bytecode cache
(``__pycache__``) when ComfyUI's modules are imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pathlib
import subprocess
import sys

import pytest

if str(pathlib.Path(__file__).resolve().parent) not in sys.path:  # any --import-mode
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import comfy_env  # noqa: E402  (tests/host/comfy_env.py)

HOST_DIR = pathlib.Path(__file__).resolve().parent
ROOT = HOST_DIR.parents[1]  # the checkout under test
SHARED = ROOT.parent / "shared"  # same names as tests/conftest.py (pytest shares the module name)

PACK_DIRNAME = comfy_env.PACK_DIRNAME
SD15_BUILD_TIMEOUT_S = 600.0
HOW_TO = "set COMFYUI_ROOT=/path/to/ComfyUI (0.3.64 or 0.33); see docs/testing.md"
STRICT = os.environ.get("PANO360_HOST_STRICT", "") not in ("", "0")


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
COMFYUI_VERSION = comfy_env.comfyui_version(COMFYUI_ROOT) if COMFYUI_ROOT is not None else None
comfy_env.DETECTED_VERSION = COMFYUI_VERSION


def pytest_configure(config):
    # the expected, once-per-process notice of prepare_comfyui.py's torchaudio guard
    config.addinivalue_line("filterwarnings", "ignore:torchaudio extension:UserWarning")
    config.addinivalue_line("markers", "comfy_min_version(version): the test needs a ComfyUI feature new in "
                            "`version` (a tuple such as (0, 33)); on older hosts it is deselected, not skipped")


def pytest_report_header(config):
    if COMFYUI_ROOT is None:
        return f"pano360 host tests: {NOT_FOUND_REASON}"
    version = ".".join(map(str, COMFYUI_VERSION))
    return f"pano360 host tests: ComfyUI {version} at {COMFYUI_ROOT}{' (strict: no skips)' if STRICT else ''}"


def _in_host_dir(item) -> bool:
    return HOST_DIR in pathlib.Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config, items):
    if COMFYUI_VERSION is not None:  # tests of features the host under test does not have
        too_new = [item for item in items
                   if (marker := item.get_closest_marker("comfy_min_version")) and COMFYUI_VERSION < tuple(marker.args[0])]
        if too_new:
            config.hook.pytest_deselected(items=too_new)
            items[:] = [item for item in items if item not in too_new]
    if COMFYUI_ROOT is not None or STRICT:  # strict: the comfyui_root fixture fails instead
        return
    skip = pytest.mark.skip(reason=NOT_FOUND_REASON)
    for item in items:
        if _in_host_dir(item) and not getattr(getattr(item, "module", None), "HOST_FREE", False):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Strict mode: a host test that skips is a failure (CI must never pass by skipping)."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail") and _in_host_dir(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under PANO360_HOST_STRICT=1 (host tests must run): {reason}"


@pytest.fixture(scope="session")
def comfyui_root() -> pathlib.Path:
    if COMFYUI_ROOT is None:
        (pytest.fail if STRICT else pytest.skip)(NOT_FOUND_REASON)
    return COMFYUI_ROOT


@pytest.fixture(scope="session")
def comfy_version(comfyui_root) -> tuple[int, ...]:
    """The ComfyUI version under test, e.g. ``(0, 3, 64)`` or ``(0, 33, 0)``."""
    return COMFYUI_VERSION


# ------------------------------------------------------------------ in process


@pytest.fixture(scope="session")
def comfy_in_process(comfyui_root, tmp_path_factory):
    """ComfyUI's modules importable here, configured as ``main.py --cpu`` with a temp base dir.

    Returns a namespace: ``root``, ``base`` (temp base directory), ``folder_paths``,
    ``model_management``, ``utils`` (``comfy.utils``), ``io`` (``comfy_api.latest.io``),
    ``version`` (a tuple of ints) and
    ``run_node(node_cls, unique_id="1", *, hidden=None, **inputs) -> io.NodeOutput``, which
    runs a node through ComfyUI's own executor functions (see :func:`run_node`).
    """
    base = make_base_directory(tmp_path_factory.mktemp("comfy_inproc"))
    try:
        env = comfy_env.import_comfy(comfyui_root, base)
    except comfy_env.ComfyImportError as error:
        (pytest.fail if STRICT else pytest.skip)(str(error))
    env.version = COMFYUI_VERSION
    env.run_node = run_node
    env.cancel_after_progress = lambda updates=1: _cancel_after_progress(env, updates)
    return env


@contextlib.contextmanager
def _cancel_after_progress(env, updates: int = 1):
    """Press Cancel (``interrupt_current_processing``) when a node has sent ``updates``
    progress updates through ComfyUI's ProgressBar hook, as a user does while the bar
    moves; the flag is cleared again on exit.  (Setting the flag *before* a node runs
    would stop ComfyUI's executor at the node's start, testing nothing of the node.)"""
    utils, mm = env.utils, env.model_management
    previous = utils.PROGRESS_BAR_HOOK
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if len(seen) == updates:
            mm.interrupt_current_processing(True)

    utils.set_progress_bar_global_hook(hook)
    try:
        yield seen
    finally:
        utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)


# Hidden inputs a test may give run_node, and where ComfyUI's executor takes each from.
_HIDDEN_KEYS = {"prompt": "prompt", "extra_pnginfo": "extra_pnginfo"}


def run_node(node_cls, unique_id: str = "1", *, hidden: dict | None = None, **inputs):
    """Run one node with literal input values the way ``execution.execute`` does, on
    either ComfyUI version: ``execution.get_input_data`` sorts the values into the node's
    inputs and builds the hidden inputs (0.3.64: a dict; 0.33: the V3Data with dynamic
    input paths), then ``execution._async_map_node_over_list`` clones the class with them
    (``PREPARE_CLASS_CLONE``), nests dynamic inputs (0.33) and calls the node inside
    ComfyUI's ``CurrentNodeContext``; async nodes are awaited.  Both functions take the
    same positional arguments on both versions (only the last one's name changed).

    ``hidden``: ``{"prompt": <API prompt>, "extra_pnginfo": {...}}`` (what the server
    takes from ``POST /prompt``); ``unique_id`` is the node id.  Returns the node's
    ``io.NodeOutput``.  Link values (``["node id", slot]``) cannot be given here.
    """
    import execution
    from comfy_execution.graph import DynamicPrompt

    hidden = {str(k).lower(): v for k, v in (hidden or {}).items()}
    unknown = sorted(set(hidden) - set(_HIDDEN_KEYS))
    if unknown:
        raise TypeError(f"run_node: unknown hidden inputs {unknown}; known: {sorted(_HIDDEN_KEYS)}")
    dynprompt = DynamicPrompt(hidden.get("prompt") or {})
    extra_data = {"extra_pnginfo": hidden["extra_pnginfo"]} if "extra_pnginfo" in hidden else {}
    data, missing, hidden_data = execution.get_input_data(inputs, node_cls, str(unique_id), None, dynprompt, extra_data)
    if missing:
        raise TypeError(f"run_node takes values, not links: {sorted(missing)}")

    async def call():
        results = await execution._async_map_node_over_list(
            "pano360-tests", str(unique_id), node_cls, data, node_cls.FUNCTION, True, None, None, hidden_data)
        return await execution.resolve_map_node_over_list_results(results)

    results = asyncio.run(call())
    if len(results) != 1:
        raise AssertionError(f"run_node: expected one call of {node_cls.__name__}, got {len(results)}")
    return results[0]


# ------------------------------------------------------------------ server


from comfy_server import (  # noqa: E402  (re-exported: tests import them from here)
    HTTP_TIMEOUT_S, SERVER_START_TIMEOUT_S, ComfyClient, ComfyError, free_port, make_base_directory, start_server, stop_server,
)


# The names host tests used before tests/host/comfy_server.py held them (test_batch_host.py).
_make_base_directory = make_base_directory
_stop = stop_server


def _start_server(comfyui_root: pathlib.Path, base: pathlib.Path, log_path: pathlib.Path, port: int | None = None):
    """``start_server`` with the test model cache listed; ``port`` fixed to restart a server
    where its clients find it."""
    return start_server(comfyui_root, base, log_path, models_dir=model_cache_dir(), port=port)

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
        base = make_base_directory(tmp_path_factory.mktemp("comfy_server"))
        proc, client = start_server(comfyui_root, base, base / "comfyui.log", models_dir=model_cache_dir())
        processes.append(proc)
        return client

    try:
        yield start
    finally:
        for proc in processes:
            stop_server(proc)


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory) -> ComfyClient:
    """One ComfyUI server shared by the whole session; a :class:`ComfyClient`."""
    return comfy_server_factory()


# ------------------------------------------------------------------ random-weight models


def model_cache_dir() -> pathlib.Path:
    """``$PANO360_TEST_CACHE/models`` (default ``~/.cache/pano360-tests/models``): the random
    models, shared by every session and both ComfyUI versions (the files are identical)."""
    root = os.environ.get("PANO360_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pano360-tests")
    return pathlib.Path(root) / "models"


@pytest.fixture(scope="session")
def sd15_checkpoint_path(comfyui_root) -> pathlib.Path:
    """Full path of the tiny random SD1.5 checkpoint (see ``sd15_checkpoint``)."""
    import make_random_models

    folder = model_cache_dir() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / make_random_models.FILENAMES["sd15"]
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not make_random_models.is_current(path):
            result = subprocess.run(
                [sys.executable, str(HOST_DIR / "make_random_models.py"), "--comfyui", str(comfyui_root),
                 "--model", "sd15", "--out-dir", str(folder)],
                capture_output=True, text=True, timeout=SD15_BUILD_TIMEOUT_S,
            )
            if result.returncode != 0:
                pytest.fail(f"building the random SD1.5 checkpoint failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return path


@pytest.fixture(scope="session")
def sd15_checkpoint(sd15_checkpoint_path) -> str:
    """File name (in ``models/checkpoints``) of a tiny random SD1.5 checkpoint.

    Built once with ComfyUI's own classes by ``make_random_models.py`` (283 MiB, a few
    seconds; ``CheckpointLoaderSimple`` detects it as SD15 / EPS) into
    ``$PANO360_TEST_CACHE`` (default ``~/.cache/pano360-tests``)/models/checkpoints, which
    the ``comfy_server`` fixture lists through ``--extra-model-paths-config``.  A file
    lock keeps parallel sessions from building twice; a file from an older builder is
    rebuilt.
    """
    return sd15_checkpoint_path.name
