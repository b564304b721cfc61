"""The schema is defined once (rows.py); schemas/ must match it, and Parquet files must carry it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from scanner.output.arrow_schema import arrow_schema, render_json, render_markdown
from scanner.output.parquet import DatasetWriter
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
                  dns_queries=0, completed=True)


def test_writer_rolls_parts_atomically(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, rows_per_file=10, row_group_size=4)
    writer.write(_run_row(i) for i in range(25))
    writer.flush()
    parts = sorted(p.name for p in (tmp_path / "run").iterdir())
    # Two full files are final; the third is still being written under a hidden temporary name.
    assert parts == [".tmp-part-00002.parquet", "part-00000.parquet", "part-00001.parquet"]
    writer.close()
    files = sorted((tmp_path / "run").glob("*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(tmp_path / "run")
    assert table.num_rows == 25 and sorted(table.column("input_lines").to_pylist()) == list(range(25))
    assert table.schema.equals(arrow_schema(RunRow), check_metadata=False)
    # Tables with no rows still get a readable, empty file with the schema.
    assert pq.read_table(tmp_path / "probes").num_rows == 0
