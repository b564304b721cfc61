"""Where a scan's rows go: the ``RowSink`` the pipeline writes through, and an in-memory sink.

The survey writes a crash-safe Parquet dataset (``scanner.output.parquet.DatasetWriter``, the default);
``check`` keeps its one domain's rows in memory (``MemorySink``) instead of writing a temporary dataset
and reading it back. Both see the same calls from the scan's single writer task, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import pyarrow as pa

from scanner.output.arrow_schema import ColumnBuilder
from scanner.output.rows import TABLES

__all__ = ["MemorySink", "RowSink"]


class RowSink(Protocol):
    """What the pipeline's writer task calls; one owner, never called concurrently."""

    def write(self, rows: Iterable[Any]) -> None:
        """One batch of rows (a domain's row with its MX rows, or probe rows): never split."""

    def commit(self) -> None:
        """Make what was written so far durable (the Parquet writer commits a segment)."""

    def close(self) -> None:
        """The scan ended normally: commit the rest."""

    def abandon(self) -> None:
        """The scan's writing failed: drop what was written since the last commit."""


class MemorySink:
    """Rows kept in memory, with the same commit/abandon semantics as the dataset writer."""

    def __init__(self) -> None:
        self._committed: dict[type, list[Any]] = {row_class: [] for row_class in TABLES.values()}
        self._pending: list[Any] = []

    def write(self, rows: Iterable[Any]) -> None:
        self._pending.extend(rows)

    def commit(self) -> None:
        for row in self._pending:
            self._committed[type(row)].append(row)
        self._pending = []

    def close(self) -> None:
        self.commit()

    def abandon(self) -> None:
        self._pending = []

    def table(self, name: str) -> pa.Table:
        """A committed table as Arrow, with the dataset's schema: the values a reader of the dataset gets
        (enums as their values, time stamps in UTC), from the very converter the Parquet writer uses."""
        row_class = TABLES[name]
        return ColumnBuilder(row_class).table(self._committed[row_class])
