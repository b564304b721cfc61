"""The schema is defined once (rows.py); schemas/ must match it, and Parquet files must carry it."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scanner.dataset import DatasetError, load
from scanner.output.arrow_schema import ColumnBuilder, arrow_schema, closed_sets, render_json, render_markdown
from scanner.output.parquet import (
    DamagedOutputError,
    DatasetWriter,
    parse_journal,
    read_journal,
    read_manifest,
    recover,
    verify_committed,
)
from scanner.output.rows import TABLES, RunRow, SessionRow
from scanner.status import AttemptOutcome, ProbeStatus, SessionFact, SessionKind, TrustStatus

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schema_docs_match_code() -> None:
    hint = "schemas/ drifted from scanner/output/rows.py: run `python -m scanner.output.arrow_schema`"
    assert (SCHEMAS / "schema.json").read_text(encoding="utf-8") == render_json(), hint
    assert (SCHEMAS / "tables.md").read_text(encoding="utf-8") == render_markdown(), hint


# Columns named by issue 13 ("typed to the writer") and their neighbours: each must stay a closed set.
_NAMED_CLOSED_SETS = {
    "domains": {"status", "mx_source", "families_covered", "starttls", "mta_sts_mode", "mta_sts_fetched_mode",
                "mta_sts_errors", "tlsrpt_status", "dane_delivery", "grade"},
    "mx": {"host_status", "probe_status", "cert_name_match", "cert_source", "dane_verdict", "dane_dnssec", "grade"},
    "probes": {"status", "failure_phase", "failure_class", "cert_trust", "cert_key_type", "enum_mode",
               "versions_accepted", "weak_classes", "preferred_version", "inconsistent_facts", "ver_tls1_3"},
    "sessions": {"kind", "status", "cert_trust", "contradicts"},
    "run": {"outcome"},
}


def test_closed_set_columns_are_typed_with_their_enum() -> None:
    for table, columns in _NAMED_CLOSED_SETS.items():
        assert columns <= set(closed_sets(TABLES[table])), table


def test_schema_json_lists_each_closed_set_exactly() -> None:
    """schema.json carries every value of every closed-set column (list columns: of their items), no more."""
    doc = json.loads((SCHEMAS / "schema.json").read_text(encoding="utf-8"))
    for table, row_class in TABLES.items():
        enums = closed_sets(row_class)
        listed = {c["name"]: c.get("values") for c in doc["tables"][table]["columns"]}
        assert {name for name, values in listed.items() if values is not None} == set(enums), table
        for name, cls in enums.items():
            assert listed[name] == [m.value for m in cls], f"{table}.{name}"


def test_closed_set_members_read_as_their_value() -> None:
    # Producers pass members: text built from one (an f-string, check's output) must show the value,
    # never "Class.MEMBER" as a (str, Enum) member would.
    for row_class in TABLES.values():
        for cls in closed_sets(row_class).values():
            for member in cls:
                assert f"{member}" == str(member) == member.value, member


def _session_row(**changes: object) -> SessionRow:
    fields: dict[str, object] = dict(
        scan_id="s", attempt=1, probe_id="192.0.2.1|25", address="192.0.2.1", port=25, kind=SessionKind.SNI,
        sni="mx.example", status=ProbeStatus.STARTTLS_OK, failure_class=None, failure_detail="",
        starttls_advertised=True, tls_version="TLSv1.3", cert_chain=[], cert_sha256=None,
        cert_trust=TrustStatus.TRUSTED, same_as_probe=False, contradicts=[SessionFact.CERTIFICATE],
        started_at=datetime(2026, 1, 1, tzinfo=UTC), total_ms=1.0)
    fields.update(changes)
    return SessionRow(**fields)  # type: ignore[arg-type]


def test_writer_writes_values_and_refuses_what_is_not_a_member() -> None:
    builder = ColumnBuilder(SessionRow)
    table = builder.table([_session_row()]).to_pylist()
    assert (table[0]["kind"], table[0]["cert_trust"], table[0]["contradicts"]) == ("sni", "trusted", ["certificate"])
    # A plain string (or another enum's member) would let a column drift from its value set unseen.
    for bad in ({"contradicts": ["certificate"]}, {"cert_trust": "trusted"},
                {"contradicts": [SessionKind.SNI]}):
        with pytest.raises(TypeError, match="is not a"):
            builder.table([_session_row(**bad)])


def _run_row(i: int) -> RunRow:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return RunRow(scan_id="s", tool_version="t", schema_version="1", started_at=now, finished_at=now, input="x",
                  config_json="{}", input_lines=i, domains=i, invalid_lines=0, duplicate_lines=0, probes=0,
                  dns_queries=0, completed=True, attempt=1, resumed_lines=0, skipped_lines=0,
                  outcome=AttemptOutcome.COMPLETED, domain_rows=i, mx_rows=0, provenance_json="{}",
                  ipv4_reachable=True, ipv6_reachable=True, families_detail="", psl_version="p")


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


def test_journal_records_each_committed_file_and_verify_finds_damage(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, segment_rows=10, row_group_size=4)
    writer.write(_run_row(i) for i in range(10))  # segment 0 committed
    part = tmp_path / "run" / "part-00000.parquet"
    assert read_manifest(tmp_path) == {0: {"run": part.stat().st_size}}
    verify_committed(tmp_path)
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(DamagedOutputError, match=r"part-00000\.parquet has"):
        verify_committed(tmp_path)
    part.unlink()
    with pytest.raises(DamagedOutputError, match=r"part-00000\.parquet is missing"):
        verify_committed(tmp_path)


def test_journal_of_an_older_version_still_reads() -> None:
    # Segment numbers alone (before file sizes were journaled); junk and a torn last line are no commits.
    assert parse_journal("0\n1\n2 run=12 nosuch=3 mx=x\nzz\n3") == {0: {}, 1: {}, 2: {"run": 12}}


def test_python_api_refuses_foreign_and_damaged_parts(tmp_path: Path) -> None:
    # The same defect as report's: a Parquet file without the table's columns read as rows of NULLs.
    (tmp_path / "domains").mkdir()
    part = tmp_path / "domains" / "part-00000.parquet"
    pq.write_table(pa.table({"x": [1]}), part)
    with pytest.raises(DatasetError, match="not a domains table"):
        _ = load(tmp_path).domains
    part.write_bytes(b"PAR1" + b"0" * 30 + b"PAR1")
    with pytest.raises(DatasetError, match="unreadable part file"):
        _ = load(tmp_path).domains


def test_every_table_has_identity_columns() -> None:
    """A table added to the schema must also be recognisable as such in a damaged or foreign dataset."""
    from scanner.output.parquet import IDENTITY_COLUMNS
    from scanner.output.rows import TABLES

    assert set(IDENTITY_COLUMNS) == set(TABLES)
    for table, columns in IDENTITY_COLUMNS.items():
        assert set(columns) <= set(TABLES[table].__dataclass_fields__), table



class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class _Row:
    name: str
    count: int | None
    colour: _Colour | None
    tags: list[str]


@dataclasses.dataclass(frozen=True)
class _One:
    name: str


def test_column_builder_turns_rows_into_columns_in_field_order() -> None:
    """Enums become their values, None stays null, and an empty batch is an empty table of the schema."""
    builder = ColumnBuilder(_Row)
    rows = [_Row("a", 1, _Colour.RED, ["x"]), _Row("b", None, None, []), _Row("c", 3, _Colour.BLUE, ["y", "z"])]
    assert builder.table(rows).to_pylist() == [
        {"name": "a", "count": 1, "colour": "red", "tags": ["x"]},
        {"name": "b", "count": None, "colour": None, "tags": []},
        {"name": "c", "count": 3, "colour": "blue", "tags": ["y", "z"]}]
    empty = builder.table([])
    assert empty.num_rows == 0 and empty.schema == builder.schema
    assert ColumnBuilder(_One).table([_One("a"), _One("b")]).to_pylist() == [{"name": "a"}, {"name": "b"}]
