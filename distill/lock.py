"""One writer per stage directory: ``with stage_lock(directory): ...`` around a stage's writes.

Two processes writing one stage directory (two ``make teacher`` on one RUN, a ``score`` while the
teacher trains, two exports) would share its checkpoint and temp folders (``checkpoint.tmp``,
``model.tmp``) and both act as rank 0 of its logit cache. So every stage entry point holds
``<directory>/.lock`` while it runs: an ``flock`` on that file, which the kernel drops however the
process ends (a crash or SIGKILL leaves no lock in force), and one line of JSON naming the holder
(pid, host, start time) for the message a second writer gets. A file left by a process that died
holding the lock is taken over, with a line saying whose it was. Under ``torchrun`` only rank 0
takes the lock: the other ranks write nothing that rank 0 does not coordinate.

Stdlib only: the benchmark takes its lock before it may import numpy or torch (thread settings).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from distill.errors import PipelineError

RUN_MARKER = ".distill-run"  # in each run directory a stage made; `make clean RUN=...` removes only those
LOCK_NAME = ".lock"


class StageLockedError(RuntimeError, PipelineError):
    """Another process is writing the stage directory."""


@contextlib.contextmanager
def stage_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory``'s lock for the duration of the block (the directory is made if missing,
    and removed again at the end if the block left it empty: a stage that fails early leaves no
    half-made run behind). Raises ``StageLockedError`` at once if another process holds it."""
    directory = Path(directory)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun's other ranks: rank 0 holds it for the group
        yield directory
        return
    made = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = _acquire(path, directory)
    try:
        yield directory
    finally:
        path.unlink(missing_ok=True)  # before the fd closes: a waiter that opened this inode retries (_acquire)
        os.close(fd)
        for d in made:  # deepest first; only folders this call made, and only when empty (but for a run marker)
            if d.is_dir() and {p.name for p in d.iterdir()} <= {RUN_MARKER}:
                (d / RUN_MARKER).unlink(missing_ok=True)
                d.rmdir()


def _acquire(path: Path, directory: Path) -> int:
    """An open descriptor of ``path`` holding its flock, with this process named in it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StageLockedError(f"{directory}: in use by {_describe(_holder(path))}; wait for it to finish "
                                   f"or stop it, then rerun") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder unlinked this file as it released it: lock the new one
    left = _read(fd)
    if left:  # the last holder died while holding the lock (a clean release removes the file)
        gone = "which is no longer running" if left.get("host") == socket.gethostname() and not _alive(
            left.get("pid")) else "which no longer holds it"
        print(f"lock: {directory}: taking over the lock left by {_describe(left)}, {gone}")
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    os.fsync(fd)
    return fd


def _read(fd: int) -> dict:
    raw = os.pread(fd, 4096, 0)
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        value = {"unreadable": raw[:60].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {}


def _holder(path: Path) -> dict:
    """The holder's line; it writes it just after taking the lock, so an empty file is retried briefly."""
    for _ in range(20):
        try:
            with open(path, "rb") as handle:
                held = _read(handle.fileno())
        except FileNotFoundError:
            held = {}
        if held:
            return held
        time.sleep(0.025)
    return {}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another process (it has not named itself in its lock file)"
    return f"pid {holder['pid']} on {holder.get('host', '?')} (started {holder.get('started', '?')})"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
