"""Resuming an interrupted scan exactly once.

Started again with the same command, a scan whose output directory holds committed segments (see
``scanner.output.parquet``) resumes: uncommitted files are deleted, input lines already in the
``domains`` table are skipped (but still seen, so later duplicates of them are still recognised), and
every committed probe is reused — an address probed before the interruption is not probed again.

A fingerprint of the input and the result-relevant settings (``scanner.config.result_settings``)
guards against resuming with other settings, which would mix two different scans in one dataset; the
refusal names each setting that differs. Result-neutral settings (concurrency, commit interval, memory,
failure thresholds) may change between attempts. The scan's record (``scanner.scan_record``) keeps its
one scan id and numbers the attempts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.certs import TrustStore
from scanner.config import ScanConfig, result_settings, settings_differences
from scanner.input import input_digest, is_stream_source
from scanner.output.parquet import STATE_DIR, DamagedOutputError, OutputDirError, recover, verify_committed
from scanner.output.probe_rows import probe_summary_from_row, session_summary_from_row
from scanner.records import ProbeSummary, link_key
from scanner.scan_record import AttemptCounts, ScanRecord, committed_counts, committed_run_attempts
from scanner.status import SessionKind

__all__ = ["SESSION_COLUMNS", "SUMMARY_COLUMNS", "CommittedProbes", "LineSet", "ResumeState", "fingerprint",
           "load_resume_state", "mark_complete", "scan_is_complete"]

_FINGERPRINT = "scan.json"
_COMPLETE = "complete"
_BATCH_ROWS = 2048  # rows decoded at a time: a batch of summaries, never a whole part file or table

# The probe-row columns ``probe_summary_from_row`` reads, and the session-row columns
# ``session_summary_from_row`` reads (tests/unit/test_resume_stream.py holds both lists to the functions):
# the SMTP texts, names and other certificate columns of a row are not read back.
SUMMARY_COLUMNS = (
    "probe_id", "status", "started_at", "sni", "cert_chain", "cert_trust", "cert_expired", "cert_not_yet_valid",
    "cert_self_signed", "plaintext_after_starttls", "cert_no_sni_sha256", "sni_selects_certificate",
    "inconsistent_facts", "enum_mode", "enum_sessions", "enum_complete", "hello_quirks",
    "ver_ssl3", "ver_tls1_0", "ver_tls1_1", "ver_tls1_2", "ver_tls1_3",
    "suites_ssl3", "suites_tls1_0", "suites_tls1_1", "suites_tls1_2", "suites_tls1_3",
    "weak_classes", "weak_complete", "nist_r1", "nist_r2", "preferred_suite", "preferred_version", "server_order",
    "server_order_suites", "kx_groups", "kx_groups_complete", "kx_preferred_group", "dh_bits", "dh_group",
    "dhe_accepted", "secure_renegotiation", "tls_compression", "extended_master_secret", "encrypt_then_mac",
    "heartbeat", "ocsp_stapling", "fallback_scsv",
)
SESSION_COLUMNS = ("probe_id", "kind", "sni", "status", "started_at", "cert_chain", "contradicts")


class LineSet:
    """A bitmap of input line numbers: 10 million lines cost 1.25 MB (a set of ints would cost ~500 MB)."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line_no: int) -> None:
        byte, bit = divmod(line_no, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, line_no: object) -> bool:
        if not isinstance(line_no, int):
            return False
        byte, bit = divmod(line_no, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


@dataclass(frozen=True, slots=True)
class CommittedProbes:
    """The probes (and further MX names' SNI sessions) that earlier attempts committed, read on demand.

    Not a dict of every summary: ``summaries`` decodes the committed rows a batch at a time, with only the
    columns a summary needs, so the caller can put them straight into its bounded cache
    (``scanner.probe_cache.SummaryCache``) and memory does not grow with the number of addresses.
    """

    probe_files: tuple[str, ...] = ()
    session_files: tuple[str, ...] = ()
    trust: TrustStore | None = None
    sni_checks: bool = True
    count: int = 0  # committed probe rows
    # Which probe ids to read back (a cluster worker takes those of the addresses it owns): None, all.
    keep: Callable[[str], bool] | None = None

    def __len__(self) -> int:
        return self.count

    def summaries(self, committed: Callable[[str], ProbeSummary | None]) -> Iterator[tuple[str, ProbeSummary]]:
        """(cache key, summary) of every committed probe, then of every further name's SNI session.

        A session's summary is its address's probe seen through that name: ``committed`` looks the probe
        up where the caller put it (every probe comes before any session).
        """
        if self.trust is None:
            return
        keep = self.keep
        for row in _batched_rows(self.probe_files, SUMMARY_COLUMNS):
            if keep is None or keep(row["probe_id"]):
                yield row["probe_id"], probe_summary_from_row(row, self.trust, self.sni_checks)
        for row in _batched_rows(self.session_files, SESSION_COLUMNS):
            if row["kind"] == SessionKind.SNI.value and (base := committed(row["probe_id"])) is not None:
                yield link_key(row["probe_id"], row["sni"]), session_summary_from_row(row, base, self.trust)


@dataclass(slots=True)
class ResumeState:
    attempt: int  # 1 for a fresh scan
    done_lines: LineSet
    probes: CommittedProbes
    next_segment: int
    removed_files: int
    record: ScanRecord | None = None  # the scan's record: its id and earlier attempts (None: a new scan)
    committed: dict[int, AttemptCounts] | None = None  # per attempt, the rows it committed
    run_rows: frozenset[int] = frozenset()  # attempts whose run row is committed


def fingerprint(config: ScanConfig, source: str | Path) -> dict[str, Any]:
    """What must not change between the attempts of one scan: the input and the result-relevant settings."""
    data: dict[str, Any] = {"input": str(source), "settings": result_settings(config)}
    if not is_stream_source(source):
        # The whole file, not a head: an edit past any prefix, even one keeping the size, is another input.
        data["input_sha256"] = input_digest(source)
        data["input_size"] = Path(source).stat().st_size
    return data


def scan_is_complete(out_dir: Path) -> bool:
    return (out_dir / STATE_DIR / _COMPLETE).exists()


def mark_complete(out_dir: Path) -> None:
    (out_dir / STATE_DIR / _COMPLETE).write_text("complete\n", encoding="ascii")


def fingerprint_differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """One line per setting or input property that differs (``old -> new``)."""
    lines = settings_differences(wanted.get("settings", {}), found.get("settings", {}))
    for key in sorted((set(found) | set(wanted)) - {"settings"}):
        if found.get(key) != wanted.get(key):
            lines.append(f"{key}: {found.get(key, '(absent)')!r} -> {wanted.get(key, '(absent)')!r}")
    return lines


def _check_fingerprint(out_dir: Path, wanted: dict[str, Any]) -> None:
    path = out_dir / STATE_DIR / _FINGERPRINT
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise DamagedOutputError(f"{path} is damaged ({exc}): cannot tell which scan {out_dir} holds; "
                                     "restore it, or start over with --overwrite") from exc
        if not isinstance(found, dict):
            raise DamagedOutputError(f"{path} is damaged (not a JSON object): restore it, or start over with "
                                     "--overwrite")
        differences = fingerprint_differences(found, wanted)
        if differences:
            raise OutputDirError(
                f"{out_dir} holds an interrupted scan with another input or settings; these differ (scan's -> "
                f"this command's): {'; '.join(differences)}. Resume it with the same input and settings, or start "
                "over with --overwrite"
            )
    else:
        path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _committed_files(out_dir: Path, table: str) -> list[str]:
    return [str(p) for p in sorted((out_dir / table).glob("part-*.parquet"))]


def load_resume_state(out_dir: Path, config: ScanConfig, source: str | Path, trust: TrustStore) -> ResumeState:
    """Recover the directory and read what the previous attempts committed (nothing for a fresh scan)."""
    recovery = recover(out_dir)
    if recovery.committed and is_stream_source(source):
        raise OutputDirError(f"an interrupted scan cannot resume from {'stdin' if str(source) == '-' else source} "
                             "(a stream is read only once): pass the input as a regular file, or --overwrite")
    _check_fingerprint(out_dir, fingerprint(config, source))
    done = LineSet()
    probes = CommittedProbes()
    record = ScanRecord.load(out_dir)
    attempt = record.next_attempt if record else 1
    if recovery.committed and record is None:
        # Written by a version before the scan record (schema < 7): its rows carry no attempt.
        raise OutputDirError(f"{out_dir} holds a scan written by an older version of this tool (no scan record); "
                             "finish it with that version, or start over with --overwrite")
    if recovery.committed:
        # A committed file lost or damaged would be re-scanned (its lines look undone) next to the rows
        # its segment left in the other tables: refuse, naming the file, rather than duplicate them.
        verify_committed(out_dir)
        for path in _committed_files(out_dir, "domains"):
            for line_no in _read(path, ["input_line"]).column("input_line").to_pylist():
                done.add(line_no)
    committed = committed_counts(out_dir)
    if recovery.committed:
        # Probes are only listed here; the scan streams them into its summary cache (CommittedProbes).
        probes = CommittedProbes(tuple(_committed_files(out_dir, "probes")),
                                 tuple(_committed_files(out_dir, "sessions")), trust, config.probe.sni_checks,
                                 sum(c.probes for c in committed.values()))
    return ResumeState(attempt, done, probes, recovery.next_segment, recovery.removed_files, record,
                       committed, frozenset(committed_run_attempts(out_dir)))


def _read(path: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError, KeyError) as exc:  # ArrowInvalid is a ValueError; a missing column a KeyError
        raise _damaged(path, exc) from exc


def _batched_rows(paths: Sequence[str], columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The rows of ``paths``, ``_BATCH_ROWS`` at a time, with only ``columns``."""
    for path in paths:
        try:
            with pq.ParquetFile(path) as part:
                for batch in part.iter_batches(batch_size=_BATCH_ROWS, columns=list(columns)):
                    yield from batch.to_pylist()
        except (OSError, ValueError, KeyError) as exc:
            raise _damaged(path, exc) from exc


def _damaged(path: str, exc: BaseException) -> DamagedOutputError:
    return DamagedOutputError(f"committed file {path} is unreadable ({exc}): the dataset is damaged; restore it, "
                              "or start over with --overwrite")
