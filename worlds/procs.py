"""Shared pieces of the test servers: the start/stop context manager and /proc process checks."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

__all__ = ["ChildServer", "LoopThread", "ReadyChild", "ServerLifecycle", "alive", "children", "serve_until_terminated",
           "tree_cpu_seconds"]


class ServerLifecycle:
    """``with server:`` starts it and always stops it. Subclasses provide ``start()`` and ``stop()``."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has already closed its sockets)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            # "pid (comm) state ...": comm may hold spaces or parentheses, so split after its last ")".
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(tok) for tok in text.split()]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants, plus the children they reaped.

    Fields 14-17 of /proc/PID/stat (utime, stime, cutime, cstime), in clock ticks.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick
        stack.extend(children(current))
    return total


class ReadyChild:
    """A server child process (``python -m worlds.<module> ...``) that prints ``READY`` once it serves.

    Shared by the process wrappers of the mail-server farm and the latency fronts: spawn in the
    package root, wait for the READY line without ever blocking past the timeout, SIGTERM to stop
    (the child then writes its stats file), and the tail of the child's stderr in every error.
    """

    def __init__(self, what: str, stderr_file: Path) -> None:
        self.what = what
        self.stderr_file = stderr_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.what} not started")
        return self._proc.pid

    def start(self, command: list[str], timeout: float) -> str:
        """Spawn ``command`` and return its READY line; on any failure the child is killed."""
        if self._proc is not None:
            raise RuntimeError(f"{self.what} already started")
        root = Path(__file__).resolve().parent.parent  # so ``-m worlds.x`` resolves whatever the cwd
        with self.stderr_file.open("wb") as err:
            self._proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=err)
        try:
            return self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        # select() on the pipe, so a child that hangs before READY cannot hang us past the timeout.
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise TimeoutError(f"{self.what} not READY after {timeout}s: {self.stderr_tail()}")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"{self.what} exited with {proc.wait()}: {self.stderr_tail()}")
                buf += chunk
        if not buf.startswith(b"READY"):
            raise RuntimeError(f"unexpected {self.what} output {buf!r}: {self.stderr_tail()}")
        return buf.decode("ascii", "replace").strip()

    def stderr_tail(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace")[-4000:]
        except OSError as exc:
            return f"(no stderr: {exc})"

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self, timeout: float) -> None:
        """SIGTERM, wait; raises if the child does not exit cleanly (its stderr tail included)."""
        proc = self._proc
        if proc is None:
            raise RuntimeError(f"{self.what} not started")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        finally:
            self.kill()
        if code != 0:
            raise RuntimeError(f"{self.what} exited with {code}: {self.stderr_tail()}")


class ChildServer(Protocol):
    """What a ``python -m worlds.<module>`` child serves: the farm, a latency front."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def write_stats(self, path: Path) -> None: ...


async def serve_until_terminated(server: ChildServer, ready_line: str, stats_file: Path | None) -> None:
    """The child side of :class:`ReadyChild`: start, print READY, serve until SIGTERM/SIGINT, stop.

    The stats file is written on SIGUSR1 (without stopping) and once more after the stop.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stats_file is not None:
        loop.add_signal_handler(signal.SIGUSR1, server.write_stats, stats_file)
    await server.start()
    sys.stdout.write(ready_line + "\n")
    sys.stdout.flush()
    await stop.wait()
    await server.stop()
    if stats_file is not None:
        server.write_stats(stats_file)


class LoopThread:
    """An asyncio server kept on its own event loop in a daemon thread, for synchronous callers.

    ``start`` returns once the server's ``start()`` coroutine has finished (every listener bound) and
    re-raises its failure in the caller's thread; ``stop`` runs the server's ``stop()`` on that loop,
    then ends and joins the thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, loop: asyncio.AbstractEventLoop, start: Callable[[], Awaitable[None]], timeout: float) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already running in a thread")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(start())
            except BaseException as exc:  # handed to the starting thread below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name=self.name, daemon=True)
        thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"{self.name} did not start within {timeout}s")
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop

    def stop(self, stop: Callable[[], Awaitable[None]], timeout: float) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            raise RuntimeError(f"{self.name} is not running in a thread")
        asyncio.run_coroutine_threadsafe(_awaited(stop), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{self.name} thread did not finish")
        loop.close()
        self._thread = self._loop = None


async def _awaited(work: Callable[[], Awaitable[None]]) -> None:
    await work()
