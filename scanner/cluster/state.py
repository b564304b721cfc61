"""What a worker reads from the committed dataset when it starts, or restarts after a crash.

A restarted worker must not repeat what any worker committed: it reads the committed ``domains`` rows
of every journal (all workers', since the worker count may differ between attempts) for the lines
already done and for the first line of each of its domains (so a later repeat stays a duplicate), and
the committed probe and SNI-session rows of the addresses it owns (served again, never probed twice).
Committed files are immutable and are only ever added, so reading them while other workers commit
more is safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from scanner.certs import TrustStore
from scanner.cluster.shard import owner_of_address, worker_of_domain
from scanner.output.parquet import part_path, read_manifest
from scanner.probing import ProbeSummary, link_key, probe_summary_from_row, session_summary_from_row
from scanner.resume import LineSet
from scanner.status import DomainStatus, SessionKind

__all__ = ["WorkerState", "load_worker_state"]


@dataclass(slots=True)
class WorkerState:
    done_lines: LineSet
    first_lines: list[tuple[str, int]]  # (domain, its first input line) of this worker's committed domains
    probes: dict[str, ProbeSummary] = field(default_factory=dict)  # owned addresses' probes and link views


def _committed(out_dir: Path, table: str) -> Iterator[Path]:
    for segment, sizes in sorted(read_manifest(out_dir).items()):
        if table in sizes:
            yield part_path(out_dir, table, segment)


def _rows(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=columns).to_pylist()  # type: ignore[no-any-return]


def load_worker_state(out_dir: Path, worker: int, workers: int, trust: TrustStore, sni_checks: bool) -> WorkerState:
    done = LineSet()
    first: dict[str, int] = {}
    for path in _committed(out_dir, "domains"):
        for row in _rows(path, ["domain", "input_line", "status", "duplicate_of_line"]):
            done.add(row["input_line"])
            domain = row["domain"]
            if domain is None or worker_of_domain(domain, workers) != worker:
                continue
            line = row["duplicate_of_line"] if row["status"] == DomainStatus.DUPLICATE.value else row["input_line"]
            if line is not None and line < first.get(domain, line + 1):
                first[domain] = line
    probes: dict[str, ProbeSummary] = {}
    for path in _committed(out_dir, "probes"):
        for row in _rows(path):
            if owner_of_address(row["probe_id"].rsplit("|", 1)[0], workers) == worker:
                probes[row["probe_id"]] = probe_summary_from_row(row, trust, sni_checks)
    for path in _committed(out_dir, "sessions"):
        for row in _rows(path):
            base = probes.get(row["probe_id"])
            if row["kind"] == SessionKind.SNI.value and base is not None:
                probes[link_key(row["probe_id"], row["sni"])] = session_summary_from_row(row, base, trust)
    return WorkerState(done, sorted(first.items(), key=lambda item: item[1]), probes)
