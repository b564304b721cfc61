"""Shared pieces of the test servers: the start/stop context manager and /proc process checks."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ServerLifecycle", "alive", "children", "tree_cpu_seconds"]


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
