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
next free name: with ``next_free`` (e.g. :func:`next_counter_name`, ComfyUI's numbering)
the writer itself moves on to the next name until one is free, so a file written once is
published once, under a name nobody else holds.  Folders are published with
``renameat2(RENAME_NOREPLACE)`` where the OS has it.  ``replace=True`` (state files such as
a batch manifest) renames over the old file instead.

Host-free: never imports ComfyUI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Callable

__all__ = ["umask", "temp_path_beside", "atomic_path", "atomic_folder", "write_bytes", "write_json",
           "next_free_folder", "next_counter_name", "NameChooser"]

FILE_MODE = 0o666
FOLDER_MODE = 0o777
# How many taken names a writer with ``next_free`` skips before it gives up: each concurrent
# writer takes one name, so this only stops a runaway loop (a chooser that never changes).
MAX_FREE_NAME_TRIES = 10_000

NameChooser = Callable[[str], str]   # a taken path -> the next candidate


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
        _rename_noreplace(tmp, os.fspath(path))  # file systems without hard links
        return
    os.remove(tmp)


def _publish(publish: Callable[[str], None], path: str, next_free: NameChooser | None) -> str:
    """``publish(path)``; while the name is taken and ``next_free`` is given, the next name."""
    for _ in range(MAX_FREE_NAME_TRIES):
        try:
            publish(path)
            return path
        except FileExistsError:
            if next_free is None:
                raise
            following = os.fspath(next_free(path))
            if following == path:
                raise
            path = following
    raise FileExistsError(errno.EEXIST, f"no free name after {MAX_FREE_NAME_TRIES} tries", path)


class atomic_path:
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``p`` exists only if the block succeeded.

    The parent folder must exist.  ``FileExistsError`` if ``p`` exists (unless ``replace``),
    or, with ``next_free``, the file takes the first free name of ``p``, ``next_free(p)``, ...;
    the name it got is ``.path`` after the block::

        with (target := atomic_path(p, ".png", next_free=next_counter_name)) as tmp:
            ...
        final = target.path
    """

    def __init__(self, path: str | os.PathLike, suffix: str = ".tmp", *, replace: bool = False,
                 next_free: NameChooser | None = None):
        self.path = os.fspath(path)
        self.suffix, self.replace, self.next_free = suffix, replace, next_free
        self.tmp = ""

    def __enter__(self) -> str:
        self.tmp = temp_path_beside(self.path, self.suffix)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.path = _publish(lambda p: _publish_file(self.tmp, p, self.replace), self.path, self.next_free)
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


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


class atomic_folder:
    """``with atomic_folder(d) as tmp: fill(tmp)`` -> folder ``d`` exists only if the block
    succeeded; it is never merged into or replaces an existing folder (``FileExistsError``),
    or, with ``next_free``, it takes the first free name of ``d``, ``next_free(d)``, ...
    (``.path`` after the block).  Its files and subfolders get umask modes."""

    def __init__(self, path: str | os.PathLike, *, next_free: NameChooser | None = None):
        self.path = os.path.abspath(path)
        self.next_free = next_free
        self.tmp = ""

    def __enter__(self) -> str:
        parent, name = os.path.split(self.path)
        os.makedirs(parent, exist_ok=True)
        if os.path.lexists(self.path) and self.next_free is None:
            raise FileExistsError(errno.EEXIST, "output folder already exists", self.path)
        self.tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                _umask_modes(self.tmp)
                self.path = _publish(lambda p: _rename_noreplace(self.tmp, p), self.path, self.next_free)
        finally:
            if os.path.exists(self.tmp):
                shutil.rmtree(self.tmp, ignore_errors=True)


def _umask_modes(folder: str) -> None:
    """The modes a plain ``mkdir``/``open`` would give: mkdtemp's 0700 folder and every file and
    folder under it (files written by mkstemp-based writers are 0600)."""
    mask = umask()
    os.chmod(folder, FOLDER_MODE & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), FOLDER_MODE & ~mask)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, FILE_MODE & ~mask)


_AT_FDCWD = -100              # <fcntl.h>
_RENAME_NOREPLACE = 1         # <linux/fs.h>


def _renameat2() -> Callable | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):   # not Linux, or a C library without renameat2 (glibc < 2.28)
        return None


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``), atomically where
    the OS offers it (Linux ``renameat2``); elsewhere check-then-rename (a narrow race remains,
    and plain ``rename`` would replace an empty folder)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "output already exists", dst)
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):   # not supported by this file system
            raise OSError(err, os.strerror(err), dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "output already exists", dst)
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "output already exists", dst) from None
        raise


_COUNTER = re.compile(r"^(?P<stem>.*_)(?P<n>\d{5,})(?P<rest>_?(\.[^/]*)?)$")


def next_counter_name(path: str | os.PathLike) -> str:
    """The next name in ComfyUI's output numbering: ``pano_00007_.png`` -> ``pano_00008_.png``,
    ``loop_00001`` -> ``loop_00002`` (a ``next_free`` for :func:`atomic_path` / :func:`atomic_folder`).
    A name without a counter gets ``_00001`` before its extension."""
    folder, name = os.path.split(os.fspath(path))
    m = _COUNTER.match(name)
    if m is None:
        stem, dot, ext = name.partition(".")
        return os.path.join(folder, f"{stem}_00001{dot}{ext}")
    width = len(m.group("n"))
    return os.path.join(folder, f"{m.group('stem')}{int(m.group('n')) + 1:0{width}d}{m.group('rest')}")


def next_free_folder(parent: str, prefix: str, digits: int = 5) -> str:
    """``<parent>/<prefix>_NNNNN`` with NNNNN one past the highest existing counter (ComfyUI's
    numbering style).  Pair with :func:`atomic_folder`, which refuses a name taken meanwhile."""
    os.makedirs(parent, exist_ok=True)
    pattern = re.compile(re.escape(prefix) + r"_(\d{%d,})$" % digits)
    counters = [int(m.group(1)) for name in os.listdir(parent) if (m := pattern.match(name))]
    return os.path.join(parent, f"{prefix}_{max(counters, default=0) + 1:0{digits}d}")
