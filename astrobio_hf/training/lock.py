"""One run per output folder: an advisory lock on `output_dir/.run.lock`, taken at the start of a run.

The lock is `fcntl.flock` on an open file: the kernel releases it when the holding process exits for any
reason (SIGKILL included), so a lock left behind by a dead run is detected as stale and simply taken over;
the file itself only tells the next run who held it. The file is never deleted (deleting a lock file that
another process has just opened would let two runs hold "the" lock at once).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"
# Locks this process holds, by folder: a run that failed before it could release its lock (an error between
# `start_run` and the loop) must not lock the folder against the next run of the same process (a tuning study,
# a notebook). The registry is the one piece of module state here, and it only ever holds this process's own locks.
_HELD: dict[Path, RunLock] = {}


class RunLockedError(RuntimeError):
    """Another live run holds the output folder."""


class RunLock:
    """`acquire()` or raise RunLockedError naming the holder; `release()` is idempotent."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        earlier = _HELD.pop(key, None)
        if earlier is not None:
            logger.warning("output_dir %s: releasing the lock an earlier run of this process left behind", self.output_dir)
            earlier.release()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"output_dir {self.output_dir} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to end or choose "
                "another --output_dir"
            ) from None
        previous = _read_holder(fd)
        if previous.get("pid") and previous.get("state") == "running":
            logger.warning(
                "output_dir %s: taking over the lock of pid %s on %s (started %s), which is no longer running",
                self.output_dir, previous.get("pid"), previous.get("host"), previous.get("started"),
            )
        payload = {"pid": os.getpid(), "host": socket.gethostname(), "state": "running",
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(payload).encode(), 0)
        self._fd = fd
        _HELD[key] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if _HELD.get(self.path.resolve()) is self:
            del _HELD[self.path.resolve()]
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "state": "released"}).encode(), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
