"""One scan per output directory: an OS lock held for the scan's whole life.

Two scans writing into one directory would both journal segments and duplicate rows silently. The
lock is ``flock(2)`` on ``OUT/.lock``: the kernel releases it when the holder exits in any way
(including ``kill -9`` or a crash), so a stale lock can never block a resume. The file also names its
holder (pid, host, start time) for the refusal message; its content is informative only, the lock
itself is the kernel's. It lives outside ``.state`` because ``--overwrite`` deletes ``.state``, and
deleting a locked file would let a second scan lock a new file of the same name.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from scanner.output.parquet import OutputDirError

__all__ = ["LOCK_FILE", "OutputLock", "OutputLocked"]

LOCK_FILE = ".lock"


class OutputLocked(OutputDirError):
    """Another running scan holds the output directory."""


class OutputLock:
    """``with OutputLock(out):`` holds ``out``'s lock or raises ``OutputLocked`` naming the holder."""

    def __init__(self, out_dir: Path) -> None:
        self._path = out_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:  # already held by this object
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputDirError(f"cannot create {self._path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputLocked(f"{self._path.parent} is in use by another scan ({holder})") from None
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
