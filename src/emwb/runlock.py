"""One writer per run directory: `runs/<name>/.lock`, held with `flock` by the process that writes the run.

The lock file records its holder (host, pid, command, start time). A second writer stops at once with one line
naming the holder, or waits for it (`--wait`). The kernel releases a `flock` when its holder dies, so a lock
left by a killed process is taken over (and the log says so). Storage where nothing can be written (a finished
run on a read-only mount) needs no lock: nothing can be written there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from emwb.errors import EmwbError

LOCK_FILE = ".lock"
WAIT_POLL_S = 1.0


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid is running (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"(since {holder.get('started', '?')}: {holder.get('command', '?')})")


def read_holder(run_dir: Path) -> dict:
    """The recorded holder of `run_dir`'s lock ({} when none was recorded or the file is unreadable)."""
    try:
        return json.loads((Path(run_dir) / LOCK_FILE).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return None  # read-only storage: no one can write this run, so there is nothing to guard
        raise


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False, log=print) -> Iterator[dict]:
    """Hold `run_dir`'s lock for the block; yields the holder record written. A live holder elsewhere stops this
    process with one line (or, with `wait`, is waited for)."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    fd = _open(path) if run_dir.is_dir() else None
    if fd is None:
        yield {}
        return
    try:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_holder(run_dir)
                if not wait:
                    raise EmwbError(f"{run_dir} is in use by {_holder_text(holder)}; wait for it to finish, stop "
                                    "it, or pass --wait to start when it ends") from None
                if not announced:
                    log(f"waiting for {run_dir}: in use by {_holder_text(holder)}")
                    announced = True
                time.sleep(WAIT_POLL_S)
        previous = read_holder(run_dir)  # a record left behind: its holder was killed before releasing
        if previous.get("pid") and previous.get("host") == socket.gethostname() and not pid_alive(int(previous["pid"])):
            log(f"took over the lock of {run_dir} left by {_holder_text(previous)}: that process is gone")
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:300],
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield holder
        finally:
            os.ftruncate(fd, 0)  # released: no holder recorded
    finally:
        os.close(fd)  # closing the descriptor releases the flock
