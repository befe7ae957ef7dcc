"""How the batch client finds a prompt's outputs after its server forgot the prompt.

ComfyUI keeps its history and its queue in memory: after a restart, ``/history`` and
``/queue`` cannot tell whether a prompt ran.  What survives a restart is the output folder,
and every file ComfyUI's savers write there embeds ``extra_data.extra_pnginfo`` (PNG text
chunks in ``SaveImage``, EXIF in ``SaveAnimatedWEBP``, container tags in ``SaveVideo`` and
``SaveAudio``; Pano360's savers do the same), unless the server runs with
``--disable-metadata``.

So the batch client puts a *marker* into every prompt's ``extra_pnginfo`` (key
:data:`MARKER_KEY`): a token unique to the prompt id (:func:`marker_token`), written
nowhere else.  The Pano360 pack serves :data:`ROUTE` on the server:

``GET ROUTE``
    ``{"version", "time", "metadata"}``: the protocol version, the server's clock (epoch
    seconds, to bound later scans by file time) and whether saved files carry metadata.
``POST ROUTE`` with ``{"prompt_ids": [...], "since": <epoch seconds or null>}``
    ``{"version", "metadata", "complete", "outputs": {prompt_id: [{"filename",
    "subfolder", "type": "output"}, ...]}}``: the output files modified at or after
    ``since`` that carry each prompt's token; ``complete`` is false when the scan stopped
    at :data:`MAX_SCAN_FILES` / :data:`MAX_SCAN_BYTES` before reading every candidate.

This module holds both halves (the marker the client writes, the scan the server runs), so
the protocol has one home; it imports neither ComfyUI nor aiohttp.
"""

from __future__ import annotations

import math
import mmap
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

# The extra_pnginfo key of the batch client's marker (ComfyUI writes each key into the files).
MARKER_KEY = "pano360_job"
ROUTE = "/pano360/batch/outputs"
PROTOCOL_VERSION = 1
# At most this many prompt ids per lookup: a rerun looks up the prompts that were queued or
# running when the client stopped, i.e. at most --max-queued per server.
MAX_PROMPT_IDS = 256
# Bounds of one scan: a request with since=null on a large output folder must not read the
# whole disk.  Files are read newest first; a scan that stops early says so ("complete": false).
MAX_SCAN_FILES = 10_000
MAX_SCAN_BYTES = 16 * 1024**3
TOKEN_PREFIX = "pano360-batch-output:"


def marker_token(prompt_id: str) -> str:
    """The string that marks a file as written by ``prompt_id`` (ASCII; JSON-safe)."""
    return f"{TOKEN_PREFIX}{prompt_id}"


def job_marker(prompt_id: str, name: str, values: Mapping[str, Any], batch_id: str) -> dict:
    """The ``extra_pnginfo[MARKER_KEY]`` value of one submission."""
    return {"name": name, "values": dict(values), "prompt_id": prompt_id, "batch": batch_id,
            "marker": marker_token(prompt_id)}


def info_reply(metadata: bool) -> dict:
    """The answer of ``GET ROUTE``."""
    return {"version": PROTOCOL_VERSION, "time": time.time(), "metadata": bool(metadata)}


def parse_find_request(body: Any) -> tuple[list[str], float | None]:
    """``POST ROUTE`` body -> (prompt ids, since); ValueError with the reason when malformed."""
    if not isinstance(body, Mapping):
        raise ValueError("expected a JSON object {\"prompt_ids\": [...], \"since\": seconds or null}")
    ids = body.get("prompt_ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_PROMPT_IDS:
        raise ValueError(f"prompt_ids: expected a list of 1..{MAX_PROMPT_IDS} prompt ids")
    for pid in ids:
        if not isinstance(pid, str) or not _is_uuid(pid):
            raise ValueError(f"prompt_ids: expected UUID strings, got {pid!r}"[:200])
    since = body.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))
                              or not math.isfinite(since)):
        raise ValueError(f"since: expected epoch seconds or null, got {since!r}"[:200])
    return list(dict.fromkeys(ids)), since


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _candidates(root: Path, since: float | None) -> list[tuple[float, int, str]]:
    """(mtime, size, path) of every regular file under ``root`` modified at/after ``since``.
    Hidden files and folders (temporary files of atomic writers) and symlinks are skipped."""
    found, stack = [], [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_size and (since is None or st.st_mtime >= since):
                        found.append((st.st_mtime, st.st_size, entry.path))
            except OSError:
                continue
    found.sort(reverse=True)
    return found


def find_marked_outputs(output_dir: str | os.PathLike, prompt_ids: Iterable[str], since: float | None,
                        max_files: int = MAX_SCAN_FILES, max_bytes: int = MAX_SCAN_BYTES,
                        ) -> tuple[dict[str, list[dict]], bool]:
    """The files under ``output_dir`` carrying each prompt's marker token.

    Returns ``({prompt_id: [{"filename", "subfolder", "type": "output"}]}, complete)``; every
    prompt id is a key (an empty list when none of its files was found).
    """
    root = Path(output_dir)
    tokens = {pid: marker_token(pid).encode("ascii") for pid in prompt_ids}
    outputs: dict[str, list[dict]] = {pid: [] for pid in tokens}
    files = scanned = 0
    complete = True
    for _mtime, size, path in _candidates(root, since):
        if files >= max_files or scanned + size > max_bytes:
            complete = False
            break
        files += 1
        scanned += size
        hits = _search(path, tokens)
        if not hits:
            continue
        rel = Path(path).relative_to(root)
        item = {"filename": rel.name, "subfolder": rel.parent.as_posix() if rel.parent != Path(".") else "",
                "type": "output"}
        for pid in hits:
            outputs[pid].append(item)
    for items in outputs.values():
        items.sort(key=lambda i: (i["subfolder"], i["filename"]))
    return outputs, complete


def _search(path: str, tokens: Mapping[str, bytes]) -> list[str]:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return [pid for pid, token in tokens.items() if data.find(token) != -1]
    except (OSError, ValueError):   # vanished, unreadable, or emptied since it was listed
        return []


def find_reply(output_dir: str | os.PathLike, body: Any, metadata: bool) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of ``POST ROUTE`` on a server whose outputs live in ``output_dir``."""
    try:
        prompt_ids, since = parse_find_request(body)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    outputs, complete = find_marked_outputs(output_dir, prompt_ids, since)
    return 200, {"version": PROTOCOL_VERSION, "metadata": bool(metadata), "complete": complete, "outputs": outputs}
