"""Incremental Parquet dataset writer: ``OUT/<table>/part-NNNNN.parquet``.

Each part file is written under a hidden temporary name and renamed into place only after its footer
is written (rename is atomic on POSIX), so a crash never leaves a half-written file that a reader's
``*.parquet`` glob would pick up. Rows are buffered per table and written as row groups.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.output.arrow_schema import arrow_schema, row_to_dict
from scanner.output.rows import TABLES

__all__ = ["DatasetWriter", "OutputDirError", "TableWriter", "prepare_output_dir"]

_TMP_PREFIX = ".tmp-"


class OutputDirError(Exception):
    """The output directory cannot be used (holds a previous scan, or is not writable)."""


def prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; refuse to mix with a previous scan's tables unless ``overwrite``."""
    existing = [out_dir / t for t in TABLES if (out_dir / t).exists()]
    if existing and not overwrite:
        raise OutputDirError(
            f"{out_dir} already holds a scan ({existing[0].name}/); use --overwrite or another directory"
        )
    for table_dir in existing:
        for item in table_dir.iterdir():
            item.unlink()
        table_dir.rmdir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create {out_dir}: {exc}") from exc


class TableWriter:
    """Writes one table as a sequence of part files of at most ``rows_per_file`` rows."""

    def __init__(self, directory: Path, row_class: type, rows_per_file: int, row_group_size: int) -> None:
        self._directory = directory
        self._schema = arrow_schema(row_class)
        self._rows_per_file = rows_per_file
        self._row_group_size = row_group_size
        self._buffer: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp_path: Path | None = None
        self._rows_in_file = 0
        self._part = 0
        self.rows_written = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, row: Any) -> None:
        self._buffer.append(row_to_dict(row))
        if len(self._buffer) >= self._row_group_size:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as row groups (splitting at part-file boundaries)."""
        while self._buffer:
            room = self._rows_per_file - self._rows_in_file
            chunk, self._buffer = self._buffer[:room], self._buffer[room:]
            table = pa.Table.from_pylist(chunk, schema=self._schema)
            self._open().write_table(table, row_group_size=self._row_group_size)
            self._rows_in_file += len(chunk)
            self.rows_written += len(chunk)
            if self._rows_in_file >= self._rows_per_file:
                self._finish_file()

    def close(self) -> None:
        self.flush()
        if self._writer is None and self._part == 0:
            # An empty table still gets one (empty) file, so readers see its schema.
            self._open()
        self._finish_file()

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._tmp_path = self._directory / f"{_TMP_PREFIX}part-{self._part:05d}.parquet"
            self._writer = pq.ParquetWriter(self._tmp_path, self._schema, compression="zstd")
        return self._writer

    def _finish_file(self) -> None:
        if self._writer is None or self._tmp_path is None:
            return
        self._writer.close()
        final = self._directory / f"part-{self._part:05d}.parquet"
        os.replace(self._tmp_path, final)
        self._writer = None
        self._tmp_path = None
        self._rows_in_file = 0
        self._part += 1


class DatasetWriter:
    """All tables of one scan. Single owner: only the pipeline's writer task calls it."""

    def __init__(self, out_dir: Path, rows_per_file: int, row_group_size: int) -> None:
        self._tables = {
            row_class: TableWriter(out_dir / name, row_class, rows_per_file, row_group_size)
            for name, row_class in TABLES.items()
        }

    def write(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self._tables[type(row)].add(row)

    def flush(self) -> None:
        for table in self._tables.values():
            table.flush()

    def close(self) -> None:
        for table in self._tables.values():
            table.close()

    def rows_written(self, row_class: type) -> int:
        return self._tables[row_class].rows_written
