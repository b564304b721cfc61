"""Read a scan's output directory back: pyarrow tables, pandas frames or a DuckDB connection.

    import scanner
    ds = scanner.load("out/")
    ds.domains.to_pandas()                         # pyarrow → pandas
    ds.duckdb().sql("SELECT grade, count(*) FROM domains GROUP BY 1").show()

Only finished part files are read (``*.parquet``; files still being written have a hidden temporary
name), so a dataset can be inspected while a scan is running or after it was interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.output.arrow_schema import arrow_schema
from scanner.output.parquet import part_problem
from scanner.output.rows import TABLES

if TYPE_CHECKING:
    import duckdb

__all__ = ["Dataset", "DatasetError", "TableAccess", "load"]


class DatasetError(ValueError):
    """The directory is not a scan output (no tables), or a table cannot be read."""


class TableAccess:
    """``.domains``, ``.mx``, ``.probes`` and ``.run`` of anything that reads a table by name."""

    __slots__ = ()

    def table(self, name: str) -> pa.Table:
        raise NotImplementedError

    @property
    def domains(self) -> pa.Table:
        return self.table("domains")

    @property
    def mx(self) -> pa.Table:
        return self.table("mx")

    @property
    def probes(self) -> pa.Table:
        return self.table("probes")

    @property
    def run(self) -> pa.Table:
        return self.table("run")


@dataclass(frozen=True, slots=True)
class Dataset(TableAccess):
    path: Path

    def files(self, table: str) -> list[Path]:
        if table not in TABLES:
            raise DatasetError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")
        return sorted((self.path / table).glob("part-*.parquet"))

    def table(self, name: str) -> pa.Table:
        """One table; empty (with the declared schema) when no part file is finished yet.

        Raises ``DatasetError`` naming the file when a part is unreadable or is not that table.
        """
        files = self.files(name)
        if not files:
            return arrow_schema(TABLES[name]).empty_table()
        for path in files:
            if (problem := part_problem(path, name)) is not None:
                raise DatasetError(problem)
        try:
            return pq.read_table([str(f) for f in files], schema=arrow_schema(TABLES[name]))
        except (OSError, ValueError) as exc:  # ArrowInvalid (a ValueError): bad pages, a column of another type
            raise DatasetError(f"cannot read table {name} in {self.path}: {exc}") from exc

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table (domains, mx, probes, run)."""
        import duckdb  # noqa: PLC0415 - a third of a second of import that `check` never needs

        con = duckdb.connect()
        for name in TABLES:
            if self.files(name):
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{self.path / name}/part-*.parquet')")
            else:
                con.register(name, self.table(name))
        return con


def load(out_dir: str | Path) -> Dataset:
    """Open a scan output directory (see the module docstring)."""
    path = Path(out_dir)
    if not any((path / table).is_dir() for table in TABLES):
        raise DatasetError(f"{path} holds no scan tables ({', '.join(TABLES)})")
    return Dataset(path)
