"""The one atomic writer: files and folders appear only when complete.

Everything is written under a hidden temporary name in the target's folder (same file system,
so the final rename is atomic); on success it takes its final name, on any failure the
temporary is removed and nothing appears.  The leading dot keeps temporaries out of ComfyUI's
output numbering and file lists.

Outputs are readable like ComfyUI's own: the final file gets the mode a plain ``open()`` would
give it (0666 minus the process umask; folders 0777 minus the umask), not the private 0600/0700
of ``mkstemp``/``mkdtemp``.  By default an output never replaces an existing file: the final
step is a hard link (``os.link`` fails if the name exists), so two processes saving the same
name at once cannot overwrite each other; the loser gets ``FileExistsError`` and can take the
next free name.  ``replace=True`` (state files such as a batch manifest) renames over the old
file instead.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Iterator

__all__ = ["umask", "temp_path_beside", "atomic_path", "atomic_folder", "write_bytes", "write_json", "next_free_folder"]

FILE_MODE = 0o666
FOLDER_MODE = 0o777


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere the only way to read it is to set it and set it back
    os.umask(old)
    return old


def temp_path_beside(path: str | os.PathLike, suffix: str) -> str:
    """A fresh hidden file name in ``path``'s folder (the file exists, empty, mode 0600)."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def _publish_file(tmp: str, path: str | os.PathLike, replace: bool) -> None:
    os.chmod(tmp, FILE_MODE & ~umask())
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST instead of replacing
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "output file already exists", os.fspath(path)) from None
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # File systems without hard links: check, then rename (a narrow race remains there).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "output file already exists", os.fspath(path)) from None
        os.rename(tmp, path)
        return
    os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", *, replace: bool = False) -> Iterator[str]:
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``p`` exists only if the block succeeded.

    The parent folder must exist.  ``FileExistsError`` if ``p`` exists (unless ``replace``)."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        _publish_file(tmp, path, replace)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, *, replace: bool = False, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (folders created as needed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, ".part", replace=replace) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def write_json(path: str | os.PathLike, data, *, replace: bool = False, fsync: bool = False) -> None:
    """``data`` as indented UTF-8 JSON (one trailing newline), written like :func:`write_bytes`."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    write_bytes(path, text.encode("utf-8"), replace=replace, fsync=fsync)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """``with atomic_folder(d) as tmp: fill(tmp)`` -> folder ``d`` exists only if the block
    succeeded; it is never merged into or replaces an existing folder (``FileExistsError``)."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "output folder already exists", path)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    try:
        yield tmp
        mode = FOLDER_MODE & ~umask()
        os.chmod(tmp, mode)
        for entry in os.scandir(tmp):
            if entry.is_file(follow_symlinks=False):
                os.chmod(entry.path, FILE_MODE & ~umask())
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "output folder already exists", path)
        os.rename(tmp, path)  # an empty folder created meanwhile would be replaced; a non-empty one refuses
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def next_free_folder(parent: str, prefix: str, digits: int = 5) -> str:
    """``<parent>/<prefix>_NNNNN`` with NNNNN one past the highest existing counter (ComfyUI's
    numbering style).  Pair with :func:`atomic_folder`, which refuses a name taken meanwhile."""
    os.makedirs(parent, exist_ok=True)
    pattern = re.compile(re.escape(prefix) + r"_(\d{%d,})$" % digits)
    counters = [int(m.group(1)) for name in os.listdir(parent) if (m := pattern.match(name))]
    return os.path.join(parent, f"{prefix}_{max(counters, default=0) + 1:0{digits}d}")
