"""The in-memory row sink of ``check`` (scanner.output.sink): what a reader of the dataset would get."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from scanner.dataset import load
from scanner.output.parquet import DatasetWriter
from scanner.output.rows import RunRow
from scanner.output.sink import MemorySink, RowSink
from scanner.status import AttemptOutcome


def _run_row(i: int) -> RunRow:
    now = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    return RunRow(scan_id="s", tool_version="t", schema_version="1", started_at=now, finished_at=None, input="x",
                  config_json="{}", input_lines=i, domains=i, invalid_lines=0, duplicate_lines=0, probes=0,
                  dns_queries=0, completed=bool(i % 2), attempt=1, resumed_lines=0, skipped_lines=0,
                  outcome=AttemptOutcome.INTERRUPTED, domain_rows=i, mx_rows=0, provenance_json="{}",
                  ipv4_reachable=True, ipv6_reachable=None, families_detail="", psl_version="p")


def _feed(sink: RowSink) -> None:
    sink.write([_run_row(0), _run_row(1)])
    sink.commit()
    sink.write([_run_row(2)])
    sink.close()


def test_memory_sink_holds_the_rows_a_dataset_reader_gets(tmp_path: Path) -> None:
    memory = MemorySink()
    _feed(memory)
    _feed(DatasetWriter(tmp_path, segment_rows=100, row_group_size=10))
    from_parquet = load(tmp_path)
    for table in ("run", "domains", "mx", "probes", "sessions"):
        assert memory.table(table).to_pylist() == from_parquet.table(table).to_pylist(), table
    assert memory.table("run").schema.equals(from_parquet.run.schema, check_metadata=False)
    assert [r["input_lines"] for r in memory.table("run").to_pylist()] == [0, 1, 2]


def test_memory_sink_abandon_drops_only_what_was_not_committed() -> None:
    sink = MemorySink()
    sink.write([_run_row(0)])
    sink.commit()
    sink.write([_run_row(1)])
    sink.abandon()
    assert [r["input_lines"] for r in sink.table("run").to_pylist()] == [0]
