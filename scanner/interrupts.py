"""Ctrl-C and SIGTERM for a whole command: one owner, from the command's start to its last line.

The first signal asks the scan to stop (``Scan.request_stop``: intake stops, in-flight domains get
``stop_grace`` seconds); the second abandons them (``Scan.abandon``); later ones only say that the scan
is finishing its writes. The handlers are process-level (``signal.signal``), installed before the set-up
and restored after the summary, so no Ctrl-C can land in a gap where the default handler raises
``KeyboardInterrupt`` inside the resolver check or the event loop's shutdown (a traceback; the scan
used to install loop handlers only around its own run).

A handler runs in the main thread between two bytecodes, possibly inside the event loop's own code;
it therefore only hands the work to the loop (``call_soon_threadsafe``), never touches the scan itself.
A cluster driver (or any other scan mode) plugs in by offering ``request_stop`` and ``abandon``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType, TracebackType
from typing import Any, Protocol, TypeVar

__all__ = ["StopSignals", "Stoppable", "ignore_late_signals"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stoppable(Protocol):
    """What the signal owner needs of a scan (``scanner.pipeline.Scan``, or a cluster driver)."""

    def request_stop(self) -> None: ...

    def abandon(self) -> None: ...


Handler = Callable[[int, FrameType | None], Any] | int | None


class StopSignals:
    """Context manager owning SIGINT and SIGTERM for a command; ``run`` drives a scan's coroutine under it.

    Entered when the command starts; the scan is attached once it exists (``attach``). A first signal
    before that is kept and applied when the scan starts (it stops at once, its attempt recorded as
    interrupted); a second one then raises ``KeyboardInterrupt`` where the command is (nothing has been
    written yet: set-up, the resolver check). Re-entrant: an inner ``with`` of the same owner does nothing.
    Outside the main thread (a notebook calling ``scanner.check`` in a thread) Python allows no signal
    handler: the manager then does nothing and the caller's own interruption handling applies.
    """

    def __init__(self) -> None:
        self.received = 0
        self._job: Stoppable | None = None
        self._notice: Callable[[], str] = lambda: "stopping"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Handler] = {}
        self._depth = 0

    def __enter__(self) -> StopSignals:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        self._loop = None

    def attach(self, job: Stoppable, notice: Callable[[], str]) -> None:
        """The scan the signals now stop; ``notice`` is what the first one logs (how long it may take)."""
        self._job = job
        self._notice = notice

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Await ``work`` on the running loop; signals that came before the loop ran are applied first."""
        self._loop = asyncio.get_running_loop()
        for count in range(1, self.received + 1):
            self._escalate(count)
        try:
            return await work
        finally:
            self._loop = None  # the loop is about to close: later signals have nothing left to stop

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        loop = self._loop
        if loop is None:
            if self._job is None and self.received > 1:
                raise KeyboardInterrupt  # twice before any scan exists: stop where the command is
            return  # before the loop runs: ``run`` applies it; after: everything is written already
        try:
            loop.call_soon_threadsafe(self._escalate, self.received)
        except RuntimeError:  # the loop closed meanwhile: nothing left to stop
            return

    def _escalate(self, count: int) -> None:
        job = self._job
        if job is None:
            return
        if count == 1:
            _log.warning("%s", self._notice())
            job.request_stop()
        elif count == 2:
            _log.warning("stopping now: in-flight domains are abandoned (the same command redoes them)")
            job.abandon()
        else:
            _log.warning("stopping: writing what is finished; it is kept")


def ignore_late_signals() -> None:
    """For a process whose command has ended: Ctrl-C and SIGTERM no longer change anything."""
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
