"""A worker's journal: which input lines and which waiting requests each commit made durable.

Rows reach the writer through one FIFO queue, so an empty marker batch (a *barrier*) put on the queue
after some rows is written after them: once the segment holding the barrier is committed, so are they.
An owner marks each answer to another worker with such a barrier, and the other worker writes the rows
that rest on that answer only once the barrier is committed (scanner.cluster.worker); a batch of input
lines counts as done for the driver only when each line's domain row is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from scanner.output.parquet import DatasetWriter
from scanner.output.rows import DomainRow

__all__ = ["Barrier", "TrackedWriter", "next_segment_in"]


def next_segment_in(committed: Iterable[int], segments: range) -> int:
    return max((s for s in committed if s in segments), default=segments.start - 1) + 1


class Barrier(list[Any]):
    """An empty batch put on the row queue: resolved once every row queued before it is committed.

    An urgent barrier asks for a commit soon (someone waits on it); another one waits for the next commit
    that the writer makes anyway (a full segment, the commit interval)."""

    def __init__(self, *, urgent: bool = True) -> None:
        super().__init__()
        self.urgent = urgent
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class TrackedWriter(DatasetWriter):
    """A ``DatasetWriter`` that says what each commit made durable: input lines and barriers."""

    def __init__(self, out_dir: Path, segment_rows: int, row_group_size: int, first_segment: int, journal: str,
                 on_commit: Callable[[list[int]], None]) -> None:
        super().__init__(out_dir, segment_rows, row_group_size, first_segment, journal)
        self._on_commit = on_commit
        self._lines: list[int] = []  # input lines whose domain row is in the open segment
        self._barriers: list[Barrier] = []
        self.asked = asyncio.Event()  # a barrier waits for a commit

    def write(self, rows: Iterable[Any]) -> None:
        if isinstance(rows, Barrier):
            self._barriers.append(rows)
            if not self.buffered:
                self._resolve()
            elif rows.urgent:
                self.asked.set()
            return
        rows = list(rows)
        self._lines.extend(row.input_line for row in rows if isinstance(row, DomainRow))
        super().write(rows)  # may commit by itself (a full segment)

    def commit(self, *, empty_tables: bool = False) -> None:
        super().commit(empty_tables=empty_tables)
        self.asked.clear()
        self._resolve()
        lines, self._lines = self._lines, []
        if lines:
            self._on_commit(lines)

    def _resolve(self) -> None:
        barriers, self._barriers = self._barriers, []
        for barrier in barriers:
            if not barrier.future.done():
                barrier.future.set_result(None)


