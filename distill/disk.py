"""Room on the disk before a large write, named in one line when there is none.

A full disk while filling the logit cache's sparse memory map ends in SIGBUS (the process dies with
no Python error), and one while writing a checkpoint wastes the write. So the cache's ``.partial``
is allocated for real (``reserve``: posix_fallocate) after a free-space check, and checkpoints and
saved models check the free space first (``require_free``); both raise ``DiskFullError`` naming the
path and the bytes needed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from distill.errors import PipelineError


class DiskFullError(OSError, PipelineError):
    """Not enough free disk space for a write (checked before it, or met while allocating)."""


def free_bytes(directory: Path) -> int:
    """Bytes free to this user on ``directory``'s file system (the one query the checks make)."""
    return shutil.disk_usage(directory).free


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB ({n:,} bytes)"


def require_free(directory: str | os.PathLike, needed: int, *, what: str) -> None:
    """Raise ``DiskFullError`` unless ``directory``'s file system has ``needed`` bytes free for ``what``."""
    directory = Path(directory)
    free = free_bytes(directory)
    if free < needed:
        raise DiskFullError(f"{directory}: not enough disk space for {what}: it needs {_size(needed)}, "
                            f"{_size(free)} are free; free some space (or use another --run-dir) and rerun")


def reserve(path: Path, *, what: str) -> None:
    """Allocate every block of the file ``path`` (its current size) for real, so writing it through a
    memory map cannot meet a full disk; a full disk here is a ``DiskFullError``."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskFullError(f"{path}: the disk filled while allocating {what} ({_size(size)}); free some "
                                    "space (or use another --run-dir) and rerun") from err
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # a file system without fallocate: the free-space check before creating the file stands alone


def tensor_bytes(*trees) -> int:
    """Bytes of every tensor in ``trees`` (dicts and lists of tensors, nested): what a checkpoint of
    them writes, before the file formats' small headers."""
    total = 0
    for tree in trees:
        values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else [tree]
        for value in values:
            if isinstance(value, dict | list | tuple):
                total += tensor_bytes(value)
            elif hasattr(value, "element_size") and hasattr(value, "numel"):
                total += value.numel() * value.element_size()
    return total
