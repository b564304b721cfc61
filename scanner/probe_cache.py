"""Finished probe summaries for the whole scan, with memory bounded whatever the number of addresses.

Every distinct (address, port) is probed once per scan, and every later domain at that address reuses
the summary (its certificate chain included, for DANE). At Internet scale that is millions of
summaries of a few KiB each: more than the machine's memory. The most recently used ``capacity``
summaries stay in memory (providers' addresses are hit again and again); older ones are spilled to
an on-disk SQLite table and brought back on the next hit. A spilled probe is never probed again.

Pickle is safe here: the file is written and read only by this process, from objects it built.
"""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path
from types import TracebackType

from scanner.records import ProbeSummary

__all__ = ["SummaryCache"]

_CACHE_KIB = 8 * 1024  # SQLite page cache, like seen.py


class SummaryCache:
    """probe_id → ProbeSummary: an LRU of ``capacity`` in memory, the rest in ``path``."""

    def __init__(self, path: Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._memory: dict[str, ProbeSummary] = {}
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")  # scratch data: rebuilt from the dataset on resume
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("CREATE TABLE spilled (probe_id TEXT PRIMARY KEY, summary BLOB) WITHOUT ROWID")
        self._count = 0
        self.spilled = 0
        self.reloaded = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: str) -> ProbeSummary | None:
        summary = self._memory.pop(key, None)
        if summary is None:
            summary = self._load(key)
            if summary is None:
                return None
            self.reloaded += 1
        self._remember(key, summary)  # most recently used goes to the end
        return summary

    def put(self, key: str, summary: ProbeSummary) -> None:
        if key not in self._memory and self._load(key) is None:
            self._count += 1
        self._memory.pop(key, None)
        self._remember(key, summary)

    def _remember(self, key: str, summary: ProbeSummary) -> None:
        self._memory[key] = summary
        while len(self._memory) > self._capacity:
            oldest = next(iter(self._memory))  # dicts keep insertion order: the least recently used
            self._spill(oldest, self._memory.pop(oldest))

    def _spill(self, key: str, summary: ProbeSummary) -> None:
        self._db.execute("INSERT OR REPLACE INTO spilled VALUES (?, ?)",
                         (key, pickle.dumps(summary, protocol=pickle.HIGHEST_PROTOCOL)))
        self.spilled += 1

    def _load(self, key: str) -> ProbeSummary | None:
        row = self._db.execute("SELECT summary FROM spilled WHERE probe_id = ?", (key,)).fetchone()
        if row is None:
            return None
        summary: ProbeSummary = pickle.loads(row[0])  # our own bytes: see the module docstring
        return summary

    def close(self) -> None:
        self._db.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> SummaryCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
