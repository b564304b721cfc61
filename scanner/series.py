"""Several scans read as one: the tables of every scan with the scan's id and start as columns.

    import scanner
    s = scanner.load_series(["scans/2026-03", "scans/2026-04", "scans/2026-05"])
    s.domains.to_pandas()            # every scan's domains, with scan_id and scan_started
    s.duckdb().sql("SELECT scan_started, avg((starttls = 'all')::int) FROM domains "
                   "WHERE status = 'ok' GROUP BY 1 ORDER BY 1").show()

Scans are ordered by their start (the earliest attempt's ``started_at`` in the run table). Every row
of a scan gets that scan's id (its first attempt's, should attempts have written different ids) and
``scan_started`` is added, so that a series needs no join with ``run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from scanner.dataset import Dataset, DatasetError, TableAccess, load
from scanner.output.rows import TABLES

__all__ = ["SCAN_STARTED", "ScanRef", "Series", "load_series"]

SCAN_STARTED = "scan_started"  # the column added to every table of a series


@dataclass(frozen=True, slots=True)
class ScanRef:
    """One scan of a series: where it is, its id and when it started (UTC)."""

    path: Path
    scan_id: str
    started: datetime


def _scan_ref(dataset: Dataset) -> ScanRef:
    run = dataset.run
    if run.num_rows == 0:
        raise DatasetError(f"{dataset.path} has no run record (a scan that never finished an attempt)")
    started = min(run.column("started_at").to_pylist())
    scan_id = run["scan_id"][0].as_py()
    return ScanRef(dataset.path, str(scan_id), started)


@dataclass(frozen=True, slots=True)
class Series(TableAccess):
    """Scans ordered by start; ``table(name)`` concatenates a table over all of them."""

    scans: tuple[ScanRef, ...]

    def table(self, name: str) -> pa.Table:
        parts = []
        for ref in self.scans:
            table = load(ref.path).table(name)
            ids = pa.array([ref.scan_id] * table.num_rows, type=pa.string())
            started = pa.array([ref.started] * table.num_rows, type=pa.timestamp("us", tz="UTC"))
            table = table.set_column(table.schema.get_field_index("scan_id"), "scan_id", ids)
            parts.append(table.append_column(SCAN_STARTED, started))
        return pa.concat_tables(parts, promote_options="default")

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection: views ``domains``, ``mx``, ``probes``, ``run`` over every scan's
        part files (with ``scan_started``) and ``scans`` (scan_id, scan_started, path, position)."""
        con = duckdb.connect()
        refs = pa.table({
            "scan_id": [r.scan_id for r in self.scans],
            SCAN_STARTED: pa.array([r.started for r in self.scans], type=pa.timestamp("us", tz="UTC")),
            "path": [str(r.path) for r in self.scans],
            "position": list(range(len(self.scans))),
        })
        con.register("scans", refs)
        for name in TABLES:
            selects = []
            for i, ref in enumerate(self.scans):
                files = load(ref.path).files(name)
                if not files:
                    continue
                listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                selects.append(
                    f"SELECT * REPLACE ((SELECT scan_id FROM scans WHERE position = {i}) AS scan_id), "
                    f"(SELECT {SCAN_STARTED} FROM scans WHERE position = {i}) AS {SCAN_STARTED} "
                    f"FROM read_parquet([{listed}], union_by_name = true)")
            if selects:
                con.execute(f"CREATE VIEW {name} AS " + " UNION ALL BY NAME ".join(selects))
            else:
                con.register(name, self.table(name))
        return con


def load_series(paths: Iterable[str | Path]) -> Series:
    """Open several scan output directories as one series, ordered by scan start (see the module docstring).

    Raises ``DatasetError`` for a directory that is not a scan, a scan listed twice, or fewer than one scan.
    """
    refs = [_scan_ref(load(p)) for p in paths]
    if not refs:
        raise DatasetError("a series needs at least one scan")
    ids = [r.scan_id for r in refs]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"a scan is listed twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    return Series(tuple(sorted(refs, key=lambda r: r.started)))
