"""The parts of a scan on several workers that need no cluster (scanner.cluster.shard, .journal) and the
output's several journals (scanner.output.parquet): who does what, and what a commit made durable."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.cli import main
from scanner.cluster.journal import Barrier, TrackedWriter, next_segment_in
from scanner.cluster.shard import (
    owner_of_address,
    segment_base,
    segment_range,
    split_count,
    worker_config,
    worker_of_line,
)
from scanner.config import OutputConfig, ScanConfig
from scanner.exit_codes import ExitCode
from scanner.input import InputLine
from scanner.output.parquet import DatasetWriter, read_journal, recover
from scanner.status import DomainStatus
from scanner.verdicts import input_problem_row
from tests.unit.test_schema import _run_row


def test_shares_of_caps_sum_to_the_configured_value() -> None:
    config = ScanConfig(OutputConfig(Path("out")))
    for workers in (1, 2, 3, 7):
        shares = [worker_config(config, workers, w) for w in range(workers)]
        assert sum(c.probe.max_connections for c in shares) == config.probe.max_connections
        assert sum(c.dns.qps for c in shares) == pytest.approx(config.dns.qps)
        assert sum(c.dns.concurrency for c in shares) == config.dns.concurrency
        assert sum(split_count(10, workers, w) for w in range(workers)) == 10


def test_an_address_is_owned_by_its_prefix_and_a_domain_has_one_worker() -> None:
    # Every address of a /24 (a /48) has the same owner: per-prefix limits stay in one process.
    assert len({owner_of_address(f"192.0.2.{i}", 16) for i in range(1, 255)}) == 1
    assert len({owner_of_address(f"2001:db8:1:{i:x}::25", 16) for i in range(200)}) == 1
    assert len({owner_of_address(f"198.51.{i}.1", 16) for i in range(200)}) > 8  # and prefixes spread
    a, b = InputLine(3, "x.test", "x.test", None), InputLine(900, "x.test", "x.test", None)
    assert worker_of_line(a, 5) == worker_of_line(b, 5)  # a duplicate goes where the first went
    assert worker_of_line(InputLine(7, "!", None, "bad"), 5) == 7 % 5


def test_worker_segment_ranges_are_disjoint_and_resume_inside_their_own() -> None:
    assert segment_range(0).stop <= segment_base(1) and 0 not in segment_range(0)
    committed = {0, 1, segment_base(0) + 4, segment_base(1)}
    assert next_segment_in(committed, segment_range(0)) == segment_base(0) + 5
    assert next_segment_in(committed, segment_range(2)) == segment_base(2)
    assert next_segment_in(committed, range(segment_base(0))) == 2


def test_every_workers_journal_counts_and_recovery_can_stay_in_one_range(tmp_path: Path) -> None:
    DatasetWriter(tmp_path, 10, 4).write(_run_row(i) for i in range(10))  # segment 0, journal "segments"
    mine = DatasetWriter(tmp_path, 10, 4, segment_base(0), "segments-w000")
    mine.write(_run_row(i) for i in range(10))
    theirs_tmp = tmp_path / "run" / f".tmp-part-{segment_base(1)}.parquet"  # another worker's open segment
    theirs_tmp.write_bytes(b"being written")
    my_tmp = tmp_path / "run" / f".tmp-part-{segment_base(0) + 1}.parquet"  # my dead predecessor's
    my_tmp.write_bytes(b"half")
    assert read_journal(tmp_path) == {0, segment_base(0)}
    assert recover(tmp_path, segment_range(0)).removed_files == 1
    assert theirs_tmp.exists() and not my_tmp.exists()
    assert pq.read_table(tmp_path / "run").num_rows == 20
    assert recover(tmp_path).removed_files == 1  # at the start of an attempt: everyone's leftovers


def _domain_row(line_no: int) -> object:
    line = InputLine(line_no, "!", None, "bad")
    return input_problem_row("s", 1, line, DomainStatus.INVALID_INPUT, "bad", datetime.now(UTC))


async def test_barriers_and_lines_resolve_only_when_committed(tmp_path: Path) -> None:
    committed: list[list[int]] = []
    writer = TrackedWriter(tmp_path, 1000, 100, segment_base(0), "segments-w000", committed.append)
    empty = Barrier()
    writer.write(empty)  # nothing uncommitted: answered at once
    assert empty.future.done() and not writer.asked.is_set()
    writer.write([_domain_row(1), _domain_row(2)])
    waiting = Barrier()
    writer.write(waiting)
    assert not waiting.future.done() and writer.asked.is_set() and committed == []
    writer.commit()
    await asyncio.sleep(0)
    assert waiting.future.done() and committed == [[1, 2]] and not writer.asked.is_set()
    assert read_journal(tmp_path) == {segment_base(0)}


def test_workers_without_ray_fail_with_the_way_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    domains = tmp_path / "d.txt"
    domains.write_text("example.test\n", encoding="ascii")
    code = main(["scan", str(domains), "-o", str(tmp_path / "out"), "--resolver", "127.0.0.1:1", "--workers", "2",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG
    assert "pip install 'smtp-tls-survey[ray]'" in err
    assert not (tmp_path / "out").exists()  # refused before anything was created
