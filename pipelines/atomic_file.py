"""Files that appear only when complete: write to a hidden temporary name in the target
folder (same file system, so the final rename is atomic), rename on success, remove the
temporary file on any failure."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ["temp_path_beside", "atomic_path"]


def temp_path_beside(path: str | os.PathLike, suffix: str) -> str:
    """A fresh hidden file name in ``path``'s folder.

    The leading dot keeps it out of ComfyUI's output numbering and file lists."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``p`` exists only if the block succeeded."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
