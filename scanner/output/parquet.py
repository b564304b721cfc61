"""Crash-safe Parquet dataset: ``OUT/<table>/part-NNNNN.parquet``, committed in numbered segments.

Rows of every table are buffered together and committed as one *segment*: each table's rows are
written to a hidden temporary file, fsync'ed, renamed into place (rename is atomic on POSIX), and only
then is the segment number appended (and fsync'ed) to the journal ``OUT/.state/segments``, with the
name and size of each of its files (``3 domains=1234 probes=5678``). A segment whose number is not in
the journal does not exist: after a crash (kill -9, power loss) ``recover`` deletes its files, whatever
state they were left in. A committed file that is missing, of another size or unreadable afterwards
(deleted or damaged by hand, a bad disk) makes ``verify_committed`` refuse the directory, naming the
file: resuming would silently re-scan its lines and duplicate the rows of the segment's other tables.
Because a domain's row is only emitted after the probe rows it refers to, a committed segment never
refers to an uncommitted probe.

A scan on several workers (scanner.cluster) has one journal per writer (``segments-w03``) and one range
of segment numbers per writer, so no two processes append to one file or name the same part; readers
take the union of the journals, and ``recover`` can be limited to one writer's range.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from scanner.output.arrow_schema import ColumnBuilder
from scanner.output.rows import TABLES

__all__ = [
    "IDENTITY_COLUMNS",
    "STATE_DIR",
    "DamagedOutputError",
    "DatasetWriter",
    "OutputDirError",
    "Recovery",
    "parse_journal",
    "part_problem",
    "prepare_output_dir",
    "read_journal",
    "read_manifest",
    "recover",
    "verify_committed",
]

STATE_DIR = ".state"
JOURNAL = "segments"
_TMP_PREFIX = ".tmp-"
_PART = re.compile(r"^(?:\.tmp-)?part-(\d+)\.parquet$")


class OutputDirError(Exception):
    """The output directory cannot be used (holds another scan, or is not writable)."""


class DamagedOutputError(OutputDirError):
    """A committed part file is missing, truncated or unreadable: the dataset is damaged."""


@dataclass(frozen=True, slots=True)
class Recovery:
    committed: frozenset[int]  # segment numbers in the journal
    removed_files: int  # files of uncommitted segments deleted

    @property
    def next_segment(self) -> int:
        return max(self.committed, default=-1) + 1


def _journal(out_dir: Path, name: str = JOURNAL) -> Path:
    return out_dir / STATE_DIR / name


def _journals(out_dir: Path) -> list[Path]:
    """The journal and, for a scan run on several workers (scanner.cluster), each worker's own
    (``segments-w03``): every writer appends to its own file, so no two processes share one."""
    return [_journal(out_dir), *sorted((out_dir / STATE_DIR).glob(f"{JOURNAL}-*"))]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(out_dir: Path) -> dict[int, dict[str, int]]:
    """Committed segment → {table: file size}. A segment journaled by an older version (its number
    alone) has an empty manifest: its files are checked for readability only."""
    manifest: dict[int, dict[str, int]] = {}
    for journal in _journals(out_dir):
        try:
            manifest.update(parse_journal(journal.read_text(encoding="ascii", errors="replace")))
        except FileNotFoundError:
            continue
    return manifest


def parse_journal(text: str) -> dict[int, dict[str, int]]:
    """The journal's text → committed segment → {table: file size} (see ``read_manifest``)."""
    manifest: dict[int, dict[str, int]] = {}
    # A torn last line (crash while appending) is not a commit: only complete lines count.
    for line in text.split("\n")[:-1]:
        number, *files = line.split(" ")
        if not (number.isascii() and number.isdigit()):
            continue
        sizes = dict(item.partition("=")[::2] for item in files)
        manifest[int(number)] = {table: int(size) for table, size in sizes.items()
                                 if table in TABLES and size.isascii() and size.isdigit()}
    return manifest


def read_journal(out_dir: Path) -> frozenset[int]:
    return frozenset(read_manifest(out_dir))


# Columns every schema version of a table has: a Parquet file without them is not that table (read by
# column name, a foreign file would otherwise pass as rows of NULLs: an empty dataset that looks valid).
IDENTITY_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "domains": ("scan_id", "domain", "status"),
    "mx": ("scan_id", "domain"),
    "probes": ("scan_id", "probe_id"),
    "sessions": ("scan_id", "probe_id", "kind"),
    "run": ("scan_id",),
}


def part_problem(path: Path, table: str) -> str | None:
    """Why ``path`` is not a readable part file of ``table`` (one line naming it), or None."""
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return f"unreadable part file {path}: {exc}"
    missing = [column for column in IDENTITY_COLUMNS[table] if column not in names]
    if missing:
        return f"{path} is not a {table} table of a scan (no column {', '.join(missing)})"
    return None


def part_path(out_dir: Path, table: str, segment: int) -> Path:
    return out_dir / table / f"part-{segment:05d}.parquet"


def verify_committed(out_dir: Path) -> None:
    """Raise ``DamagedOutputError`` naming the first committed file that is missing, of another size
    than journaled, or whose Parquet footer cannot be read."""
    for segment, sizes in sorted(read_manifest(out_dir).items()):
        for table, size in sizes.items():
            path = part_path(out_dir, table, segment)
            try:
                found = path.stat().st_size
            except FileNotFoundError:
                raise DamagedOutputError(f"committed file {path} is missing: the dataset in {out_dir} is damaged; "
                                         "restore the file, or start over with --overwrite") from None
            if found != size:
                raise DamagedOutputError(f"committed file {path} has {found} bytes, {size} were written: the "
                                         f"dataset in {out_dir} is damaged; restore it, or start over with --overwrite")
    for table in TABLES:
        for path in sorted((out_dir / table).glob("part-*.parquet")) if (out_dir / table).is_dir() else ():
            if (problem := part_problem(path, table)) is not None:
                raise DamagedOutputError(f"{problem}: the dataset in {out_dir} is damaged; restore the file, or "
                                         "start over with --overwrite")


def recover(out_dir: Path, segments: range | None = None) -> Recovery:
    """Delete every file that belongs to no committed segment; return what is committed.

    ``segments``: only files numbered in that range (one worker's, while the others keep writing).
    """
    committed = read_journal(out_dir)
    removed = 0
    for table in TABLES:
        directory = out_dir / table
        if not directory.is_dir():
            continue
        for item in directory.iterdir():
            match = _PART.match(item.name)
            if segments is not None and (match is None or int(match.group(1)) not in segments):
                continue
            if match is None or item.name.startswith(_TMP_PREFIX) or int(match.group(1)) not in committed:
                item.unlink()
                removed += 1
    return Recovery(committed, removed)


def prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; with ``overwrite``, remove a previous scan's tables and state first."""
    if overwrite:
        for name in (*TABLES, STATE_DIR):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / "run.json").unlink(missing_ok=True)
    try:
        (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create {out_dir}: {exc}") from exc


class DatasetWriter:
    """All tables of one scan. Single owner: only the pipeline's writer task calls it.

    Rows stream into the open segment's temporary part files one row group at a time (memory stays at
    about one row group per table); ``commit`` closes, fsyncs and renames them, then journals the segment.
    """

    def __init__(self, out_dir: Path, segment_rows: int, row_group_size: int, first_segment: int = 0,
                 journal: str = JOURNAL) -> None:
        self._out_dir = out_dir
        self._journal = _journal(out_dir, journal)
        self._segment_rows = segment_rows
        self._row_group_size = row_group_size
        self._segment = first_segment
        self._buffers: dict[type, list[Any]] = {row_class: [] for row_class in TABLES.values()}
        self._writers: dict[type, pq.ParquetWriter] = {}
        self._builders = {row_class: ColumnBuilder(row_class) for row_class in TABLES.values()}
        self._names = {row_class: name for name, row_class in TABLES.items()}
        self._segment_count = 0  # rows in the open segment (written or buffered)
        for name in TABLES:
            (out_dir / name).mkdir(parents=True, exist_ok=True)
        (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def buffered(self) -> int:
        """Rows written since the last commit (what a crash would lose)."""
        return self._segment_count

    def write(self, rows: Iterable[Any]) -> None:
        """Add one batch of rows; commits a segment by itself when ``segment_rows`` are waiting.

        A batch is never split across segments: a domain's row and its MX rows arrive as one batch, so
        a crash can never leave one committed without the other.
        """
        for row in rows:
            row_class = type(row)
            buffer = self._buffers[row_class]
            buffer.append(row)
            self._segment_count += 1
            if len(buffer) >= self._row_group_size:
                self._flush(row_class)
        if self._segment_count >= self._segment_rows:
            self.commit()

    def _tmp_path(self, row_class: type) -> Path:
        return self._out_dir / self._names[row_class] / f"{_TMP_PREFIX}part-{self._segment:05d}.parquet"

    def _flush(self, row_class: type) -> None:
        """Write the table's buffered rows as a row group of the open segment's temporary file."""
        rows = self._buffers[row_class]
        builder = self._builders[row_class]
        writer = self._writers.get(row_class)
        if writer is None:
            writer = pq.ParquetWriter(self._tmp_path(row_class), builder.schema, compression="zstd")
            self._writers[row_class] = writer
        if rows:
            writer.write_table(builder.table(rows))
        self._buffers[row_class] = []

    def commit(self, *, empty_tables: bool = False) -> None:
        """Close the open segment's files, rename them into place and journal the segment.

        Nothing written since the last commit: nothing happens. ``empty_tables`` also writes an empty
        part (schema only) for each table that has no file yet, so that readers globbing
        ``<table>/*.parquet`` always find the table.
        """
        # Only at close: which tables have no file at all (a directory listing per table).
        missing = [c for c, name in self._names.items()
                   if empty_tables and not any((self._out_dir / name).glob("part-*.parquet"))]
        if not self._segment_count and not missing:
            return
        for row_class in self._names:
            if self._buffers[row_class] or (row_class in missing and row_class not in self._writers):
                self._flush(row_class)
        finals: list[Path] = []
        for row_class, writer in self._writers.items():
            writer.close()
            tmp = self._tmp_path(row_class)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            final = tmp.with_name(f"part-{self._segment:05d}.parquet")
            os.replace(tmp, final)
            finals.append(final)
        for final in finals:
            _fsync_dir(final.parent)
        files = "".join(f" {final.parent.name}={final.stat().st_size}" for final in finals)
        with self._journal.open("a", encoding="ascii") as journal:
            journal.write(f"{self._segment}{files}\n")
            journal.flush()
            os.fsync(journal.fileno())
        self._writers = {}
        self._segment_count = 0
        self._segment += 1

    def close(self) -> None:
        self.commit(empty_tables=True)

    def abandon(self) -> None:
        """Give up the open segment after a failure (disk full): close its files, commit nothing.

        Its temporary files stay behind; ``recover`` deletes them when the scan is resumed. Closing may
        fail again on a full disk, which changes nothing: the segment was never journaled.
        """
        for writer in self._writers.values():
            try:
                writer.close()
            except OSError:  # nothing to keep: the segment is abandoned whole
                continue
        self._writers = {}
        self._buffers = {row_class: [] for row_class in self._buffers}
        self._segment_count = 0
