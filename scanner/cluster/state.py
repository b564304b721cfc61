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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from scanner.certs import TrustStore
from scanner.cluster.shard import owner_of_address, worker_of_domain
from scanner.output.parquet import part_path, read_manifest
from scanner.resume import CommittedProbes, LineSet
from scanner.status import DomainStatus

__all__ = ["WorkerState", "load_worker_state"]


@dataclass(slots=True)
class WorkerState:
    done_lines: LineSet
    first_lines: list[tuple[str, int]]  # (domain, its first input line) of this worker's committed domains
    probes: CommittedProbes  # owned addresses' probes and link views, read back as the scan starts


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
    probe_files = tuple(str(p) for p in _committed(out_dir, "probes"))
    probes = CommittedProbes(
        probe_files, tuple(str(p) for p in _committed(out_dir, "sessions")), trust, sni_checks,
        sum(pq.ParquetFile(p).metadata.num_rows for p in probe_files),
        keep=lambda probe_id: owner_of_address(probe_id.rsplit("|", 1)[0], workers) == worker)
    return WorkerState(done, sorted(first.items(), key=lambda item: item[1]), probes)
