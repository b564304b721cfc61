"""Exact duplicate detection for input domains with flat memory.

A Python set of ten million names costs about a gigabyte; an on-disk SQLite B-tree costs a bounded
page cache whatever the input size, and an insert is a few microseconds — far below the per-domain
cost of the scan. The file lives in the scan's work directory and is deleted when the scan ends.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

__all__ = ["SeenDomains"]

# Bounded page cache: negative means KiB (SQLite "PRAGMA cache_size").
_CACHE_KIB = 16 * 1024


class SeenDomains:
    """Remembers which domains were already seen and on which input line."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        # A scratch index: durability is not needed, speed is.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("CREATE TABLE seen (domain TEXT PRIMARY KEY, line_no INTEGER) WITHOUT ROWID")
        self._db.execute("BEGIN")
        self._pending = 0

    def first_seen(self, domain: str, line_no: int) -> int | None:
        """Record ``domain``; return the earlier line number if it was seen before, else None."""
        cur = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (domain, line_no))
        self._pending += 1
        if self._pending >= 10_000:  # keep transactions (and their memory) small
            self._db.execute("COMMIT")
            self._db.execute("BEGIN")
            self._pending = 0
        if cur.rowcount == 1:
            return None
        row = self._db.execute("SELECT line_no FROM seen WHERE domain = ?", (domain,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> SeenDomains:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
