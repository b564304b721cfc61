"""The schema is defined once (rows.py); schemas/ must match it, and Parquet files must carry it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from scanner.output.arrow_schema import arrow_schema, render_json, render_markdown
from scanner.output.parquet import DatasetWriter, read_journal, recover
from scanner.output.rows import RunRow

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schema_docs_match_code() -> None:
    hint = "schemas/ drifted from scanner/output/rows.py: run `python -m scanner.output.arrow_schema`"
    assert (SCHEMAS / "schema.json").read_text(encoding="utf-8") == render_json(), hint
    assert (SCHEMAS / "tables.md").read_text(encoding="utf-8") == render_markdown(), hint


def _run_row(i: int) -> RunRow:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return RunRow(scan_id="s", tool_version="t", schema_version="1", started_at=now, finished_at=now, input="x",
                  config_json="{}", input_lines=i, domains=i, invalid_lines=0, duplicate_lines=0, probes=0,
                  dns_queries=0, completed=True, attempt=1, resumed_lines=0, skipped_lines=0, psl_version="p")


def test_segments_commit_all_tables_together(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, segment_rows=10, row_group_size=4)
    for start in range(0, 25, 5):  # batches of 5: commits after the 2nd and 4th batch, 5 rows left buffered
        writer.write(_run_row(i) for i in range(start, start + 5))
    assert read_journal(tmp_path) == {0, 1}
    # Committed segments are final files; the open one streams row groups into a hidden temporary file.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".tmp-part-00002.parquet", "part-00000.parquet", "part-00001.parquet"]
    writer.close()
    assert read_journal(tmp_path) == {0, 1, 2}
    table = pq.read_table(tmp_path / "run")
    assert table.num_rows == 25 and sorted(table.column("input_lines").to_pylist()) == list(range(25))
    assert table.schema.equals(arrow_schema(RunRow), check_metadata=False)
    # Tables with no rows still get a readable, empty, committed file with the schema.
    assert pq.read_table(tmp_path / "probes").num_rows == 0


def test_recovery_deletes_what_no_segment_committed(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, segment_rows=10, row_group_size=4)
    writer.write(_run_row(i) for i in range(10))  # segment 0 committed
    # A crash mid-commit of segment 1: one table renamed into place, one left as a temporary file,
    # journal not yet written.
    (tmp_path / "run" / "part-00001.parquet").write_bytes(b"half")
    (tmp_path / "domains" / ".tmp-part-00001.parquet").write_bytes(b"half")
    # A torn journal line is not a commit either.
    with (tmp_path / ".state" / "segments").open("a") as journal:
        journal.write("1")
    recovery = recover(tmp_path)
    assert recovery.committed == {0} and recovery.removed_files == 2 and recovery.next_segment == 1
    assert pq.read_table(tmp_path / "run").num_rows == 10
