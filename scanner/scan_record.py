"""The record of one scan across all its attempts: one scan id, one entry per attempt, whole-scan totals.

A scan is started once and may be resumed many times (Ctrl-C, SIGKILL, a dead resolver). Every attempt
writes its rows under the scan's one ``scan_id`` and stamps them with its ``attempt`` number, so tables
join on ``(scan_id, probe_id)`` whatever attempt wrote each side.

The record lives in ``OUT/.state/attempts.json`` and is rewritten atomically when an attempt starts (its
provenance, configuration, outcome ``running``) and when it ends (end time, outcome, counts). An attempt
that was killed without a word is still ``running`` in the record when the next attempt starts: that
attempt marks it ``killed`` and takes its counts from the rows it committed (the ``attempt`` columns), so
the record and the ``run`` table describe every attempt. ``OUT/run.json`` is the human- and tool-readable
copy: the scan id, totals over all attempts, ``result_settings`` and each attempt in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Set
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from scanner.output.rows import SCHEMA_VERSION, DomainRow, MxRow, ProbeRow, RunRow
from scanner.status import AttemptOutcome, DomainStatus, StarttlsVerdict

__all__ = ["Attempt", "AttemptCounts", "ScanRecord", "committed_counts", "committed_run_attempts"]

RECORD_FILE = "attempts.json"
RUN_JSON = "run.json"
_STATE_DIR = ".state"  # scanner.output.parquet.STATE_DIR (not imported: that module imports nothing of ours)
_PROBLEM_STATUSES = {DomainStatus.INVALID_INPUT.value, DomainStatus.DUPLICATE.value, DomainStatus.EXCLUDED.value}


@dataclass(slots=True)
class AttemptCounts:
    """What one attempt read and wrote. ``None``: not known (the attempt was killed before saying)."""

    domain_rows: int = 0
    mx_rows: int = 0
    probes: int = 0
    domains: int = 0  # valid domains scanned (rows that are not invalid, duplicate or excluded)
    invalid_lines: int = 0
    duplicate_lines: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # domains.starttls values over this attempt's rows
    input_lines: int | None = None
    dns_queries: int | None = None
    resumed_lines: int | None = None
    skipped_lines: int | None = None

    def count_domains(self, status: str, starttls: str, n: int = 1) -> None:
        self.domain_rows += n
        self.invalid_lines += n if status == DomainStatus.INVALID_INPUT.value else 0
        self.duplicate_lines += n if status == DomainStatus.DUPLICATE.value else 0
        self.domains += 0 if status in _PROBLEM_STATUSES else n
        self.verdicts[starttls] = self.verdicts.get(starttls, 0) + n

    def count_row(self, row: object) -> None:
        """Count one row this attempt wrote (the writer calls this for every row)."""
        if isinstance(row, DomainRow):
            self.count_domains(row.status.value, row.starttls.value)
        elif isinstance(row, MxRow):
            self.mx_rows += 1
        elif isinstance(row, ProbeRow):
            self.probes += 1

    def take_rows(self, rows: AttemptCounts) -> None:
        """Replace what was counted of rows written with ``rows`` (counted from the committed tables)."""
        for name in ("domain_rows", "mx_rows", "probes", "domains", "invalid_lines", "duplicate_lines"):
            setattr(self, name, getattr(rows, name))
        self.verdicts = dict(rows.verdicts)

    def add(self, other: AttemptCounts) -> None:
        for name in ("domain_rows", "mx_rows", "probes", "domains", "invalid_lines", "duplicate_lines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("input_lines", "dns_queries"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, None if mine is None and theirs is None else (mine or 0) + (theirs or 0))
        for verdict, n in other.verdicts.items():
            self.verdicts[verdict] = self.verdicts.get(verdict, 0) + n

    @property
    def with_mail_hosts(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v != StarttlsVerdict.NOT_APPLICABLE.value)

    @property
    def starttls_all(self) -> int:
        return self.verdicts.get(StarttlsVerdict.ALL.value, 0)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptCounts:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class Attempt:
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome
    message: str  # why it ended, when not completed (the line the user saw)
    config: dict[str, Any]  # the effective configuration (dataclasses.asdict of ScanConfig)
    result_settings: dict[str, Any]  # scanner.config.result_settings of that configuration
    provenance: dict[str, Any]  # scanner.provenance.collect
    counts: AttemptCounts = field(default_factory=AttemptCounts)
    # Address families this attempt probed (scanner.net.families): {"ipv4": bool, "ipv6": bool, "detail": str}
    families: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        finished = data.get("finished_at")
        return cls(
            attempt=int(data["attempt"]), started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(finished) if finished else None,
            outcome=AttemptOutcome(data["outcome"]), message=str(data.get("message", "")),
            config=dict(data.get("config", {})), result_settings=dict(data.get("result_settings", {})),
            provenance=dict(data.get("provenance", {})), counts=AttemptCounts.from_json(data.get("counts", {})),
            families=dict(data.get("families", {})),
        )

    def run_row(self, scan_id: str, source: str) -> RunRow:
        c = self.counts
        return RunRow(
            scan_id=scan_id, tool_version=str(self.provenance.get("tool", {}).get("version", "")),
            schema_version=SCHEMA_VERSION, started_at=self.started_at, finished_at=self.finished_at, input=source,
            config_json=json.dumps(self.config, sort_keys=True, default=str),
            input_lines=c.input_lines if c.input_lines is not None else c.domain_rows, domains=c.domains,
            invalid_lines=c.invalid_lines, duplicate_lines=c.duplicate_lines, probes=c.probes,
            dns_queries=c.dns_queries, completed=self.outcome is AttemptOutcome.COMPLETED, attempt=self.attempt,
            resumed_lines=c.resumed_lines, skipped_lines=c.skipped_lines, outcome=self.outcome,
            domain_rows=c.domain_rows, mx_rows=c.mx_rows,
            provenance_json=json.dumps(self.provenance, sort_keys=True, default=str),
            ipv4_reachable=self.families.get("ipv4"), ipv6_reachable=self.families.get("ipv6"),
            families_detail=self.families.get("detail"),
            psl_version=self.provenance.get("libraries", {}).get("public_suffix_list", {}).get("list"),
        )


@dataclass(slots=True)
class ScanRecord:
    scan_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def next_attempt(self) -> int:
        return len(self.attempts) + 1

    def totals(self) -> AttemptCounts:
        total = AttemptCounts(input_lines=None)
        for attempt in self.attempts:
            total.add(attempt.counts)
        return total

    def without_run_row(self, have_row: Set[int], committed: Mapping[int, AttemptCounts]) -> list[Attempt]:
        """Earlier attempts whose run row is not committed; the caller writes their rows (they could not).

        An attempt still ``running`` was killed without a word: it is marked ``killed``. The row counts of
        every attempt returned are taken from what it committed (a kill between saving the record and the
        final commit loses that commit's rows, so only the committed rows are the truth).
        """
        missing = []
        for attempt in self.attempts:
            if attempt.outcome is AttemptOutcome.RUNNING:
                attempt.outcome = AttemptOutcome.KILLED
                attempt.message = "ended without a word (SIGKILL, crash or power loss); counted from its committed rows"
            if attempt.attempt not in have_row:
                attempt.counts.take_rows(committed.get(attempt.attempt, AttemptCounts()))
                missing.append(attempt)
        return missing

    def to_json(self) -> dict[str, Any]:
        """run.json: the whole scan (totals over attempts) and every attempt in order."""
        latest = self.attempts[-1] if self.attempts else None
        totals = self.totals()
        ended = [a.finished_at for a in self.attempts if a.finished_at]
        return {
            "scan_id": self.scan_id,
            "schema_version": SCHEMA_VERSION,
            "completed": bool(latest and latest.outcome is AttemptOutcome.COMPLETED),
            "outcome": latest.outcome.value if latest else None,
            "attempts_count": len(self.attempts),
            "started_at": self.attempts[0].started_at.isoformat() if self.attempts else None,
            "finished_at": max(ended).isoformat() if ended else None,
            "totals": asdict(totals) | {"starttls_all": totals.starttls_all,
                                        "with_mail_hosts": totals.with_mail_hosts},
            "result_settings": latest.result_settings if latest else {},
            "attempts": [a.to_json() for a in self.attempts],
        }

    def save(self, out_dir: Path, extra: Mapping[str, Any] | None = None) -> None:
        """Write the record (state) and run.json, each atomically (a reader never sees half a file)."""
        data = self.to_json()
        _write_atomic(out_dir / _STATE_DIR / RECORD_FILE, data)
        _write_atomic(out_dir / RUN_JSON, data | dict(extra or {}))

    @classmethod
    def load(cls, out_dir: Path) -> ScanRecord | None:
        path = out_dir / _STATE_DIR / RECORD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(str(data["scan_id"]), [Attempt.from_json(a) for a in data.get("attempts", [])])


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _parts(out_dir: Path, table: str) -> list[str]:
    return [str(p) for p in sorted((out_dir / table).glob("part-*.parquet"))]


def _grouped(files: Iterable[str], keys: list[str]) -> Iterable[tuple[Any, ...]]:
    """(key values..., row count) per distinct key, per file: Arrow does the counting, not Python."""
    for path in files:
        table = pq.read_table(path, columns=keys)
        grouped = table.group_by(keys).aggregate([([], "count_all")])
        yield from zip(*(grouped.column(c).to_pylist() for c in [*keys, "count_all"]), strict=True)


def committed_counts(out_dir: Path) -> dict[int, AttemptCounts]:
    """Per attempt, what the committed part files hold (uncommitted ones must be recovered away first)."""
    counts: dict[int, AttemptCounts] = {}
    for attempt, status, starttls, n in _grouped(_parts(out_dir, "domains"), ["attempt", "status", "starttls"]):
        counts.setdefault(attempt, AttemptCounts()).count_domains(status, starttls, n)
    for table, name in (("mx", "mx_rows"), ("probes", "probes")):
        for attempt, n in _grouped(_parts(out_dir, table), ["attempt"]):
            c = counts.setdefault(attempt, AttemptCounts())
            setattr(c, name, getattr(c, name) + n)
    return counts


def committed_run_attempts(out_dir: Path) -> set[int]:
    """Attempt numbers that already have their row in the committed ``run`` table."""
    return {a for a, _ in _grouped(_parts(out_dir, "run"), ["attempt"])}
