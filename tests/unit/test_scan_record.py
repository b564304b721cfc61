"""The scan record: one scan id, every attempt (killed ones too), totals equal to the committed rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.certs import TrustStore
from scanner.config import OutputConfig, ScanConfig
from scanner.output.parquet import DatasetWriter, OutputDirError
from scanner.output.rows import RunRow
from scanner.resume import load_resume_state
from scanner.scan_record import Attempt, AttemptCounts, ScanRecord, committed_counts, committed_run_attempts
from scanner.status import AttemptOutcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _attempt(n: int, outcome: AttemptOutcome, domain_rows: int = 0) -> Attempt:
    return Attempt(attempt=n, started_at=NOW, finished_at=None if outcome is AttemptOutcome.RUNNING else NOW,
                   outcome=outcome, message="", config={"probe": {"port": 25}}, result_settings={"probe.port": 25},
                   provenance={"tool": {"version": "9"}}, counts=AttemptCounts(domain_rows=domain_rows,
                                                                                verdicts={"all": domain_rows}))


def test_record_round_trips_and_settles_killed_attempts(tmp_path: Path) -> None:
    (tmp_path / ".state").mkdir()
    record = ScanRecord("scan-1", [_attempt(1, AttemptOutcome.INTERRUPTED, 5), _attempt(2, AttemptOutcome.RUNNING)])
    record.save(tmp_path)
    loaded = ScanRecord.load(tmp_path)
    assert loaded is not None and loaded.scan_id == "scan-1" and loaded.next_attempt == 3
    settled = loaded.without_run_row({1}, {2: AttemptCounts(domain_rows=7, verdicts={"all": 7})})
    assert [a.attempt for a in settled] == [2] and loaded.attempts[1].outcome is AttemptOutcome.KILLED
    totals = loaded.totals()
    assert totals.domain_rows == 12 and totals.starttls_all == 12
    row = loaded.attempts[1].run_row("scan-1", "in.txt")
    assert isinstance(row, RunRow) and row.finished_at is None and not row.completed and row.dns_queries is None
    assert ScanRecord.load(tmp_path / "nowhere") is None


def test_committed_counts_per_attempt(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, segment_rows=100, row_group_size=10)
    writer.write([_attempt(1, AttemptOutcome.COMPLETED).run_row("s", "x"),
                  _attempt(3, AttemptOutcome.COMPLETED).run_row("s", "x")])
    writer.close()
    assert committed_run_attempts(tmp_path) == {1, 3}
    assert committed_counts(tmp_path) == {}  # no domain, mx or probe rows


def test_resume_refuses_a_dataset_without_a_record(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, segment_rows=100, row_group_size=10)
    writer.write([_attempt(1, AttemptOutcome.COMPLETED).run_row("s", "x")])
    writer.close()  # committed rows, but no .state/attempts.json: an older version wrote them
    source = tmp_path / "in.txt"
    source.write_text("example.org\n", encoding="utf-8")
    with pytest.raises(OutputDirError, match=r"older version.*--overwrite"):
        load_resume_state(tmp_path, ScanConfig(OutputConfig(tmp_path)), source, TrustStore.from_certifi())
