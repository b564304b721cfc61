"""Resume reads committed probes as a stream of batches, with only the columns a summary needs.

The summaries go straight into the bounded cache (scanner.probe_cache): with more committed probes than
the cache holds in memory, every one is still found, none is lost, and the rest wait on disk.
"""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from scanner.certs import TrustStore
from scanner.config import OutputConfig, ScanConfig
from scanner.exit_codes import ExitCode
from scanner.output.parquet import DamagedOutputError, DatasetWriter
from scanner.output.probe_rows import build_probe_row, probe_summary_from_row, session_summary_from_row
from scanner.output.rows import ProbeRow, SessionRow
from scanner.pipeline import ScanFailed
from scanner.probe_cache import SummaryCache
from scanner.records import link_key
from scanner.resume import SESSION_COLUMNS, SUMMARY_COLUMNS, CommittedProbes, load_resume_state
from scanner.scan_record import Attempt, ScanRecord
from scanner.smtp.session import skipped_result
from scanner.status import AttemptOutcome, FailureClass, ProbeStatus, SessionKind, TrustStatus
from scanner.tls.enumeration import EnumerationResult, KeyExchangeResult, VersionVerdict
from scanner.tls.versions import EnumMode, TlsVersion

_STARTED = datetime(2026, 1, 1, tzinfo=UTC)
_CA = trustme.CA()


class _Recorder(dict[str, Any]):
    """A row that notes every column read from it (``row[c]`` and ``row.get(c)`` alike)."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__(row)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def _chain(name: str) -> list[bytes]:
    cert = _CA.issue_cert(name)
    return [ssl.PEM_cert_to_DER_cert(c.bytes().decode()) for c in cert.cert_chain_pems]


def _probe_row(i: int, chain: list[bytes] | None = None, enumeration: EnumerationResult | None = None) -> ProbeRow:
    row = build_probe_row("scan-1", 1, f"192.0.2.{i % 250}", 25 + i // 250, (f"mx{i}.example",),
                          skipped_result(FailureClass.INTERNAL, "synthetic"), None, _STARTED, enumeration)
    if chain is None:
        return row
    return dataclasses.replace(row, status=ProbeStatus.STARTTLS_OK, cert_chain=chain, cert_trust=TrustStatus.TRUSTED,
                               cert_expired=False, cert_not_yet_valid=False, cert_self_signed=False,
                               sni=f"mx{i}.example")


def _full_enumeration() -> EnumerationResult:
    kx = KeyExchangeResult(groups=(29,), groups_complete=True, preferred_group=29, dhe=True, dh_bits=2048,
                           dh_group="ffdhe2048", secure_renegotiation=True, compression=False,
                           extended_master_secret=True, encrypt_then_mac=True, heartbeat=False, ocsp_stapling=False,
                           fallback_scsv=True)
    return EnumerationResult(
        mode=EnumMode.FULL, sessions=11,
        versions={v: VersionVerdict.ACCEPTED for v in TlsVersion if v is not TlsVersion.SSL2},
        weak_classes=frozenset(), weak_complete=True, nist_r1=True, nist_r2=True, preferred_suite=0xC02F,
        preferred_version=TlsVersion.TLS12, server_order=True, accepted={TlsVersion.TLS12: (0xC02F,)},
        server_order_suites=(0xC02F,), kx=kx,
    )


def test_the_column_lists_are_what_the_summaries_read() -> None:
    """A summary rebuilt from the projected columns is the summary rebuilt from the whole row."""
    trust = TrustStore.from_pem_bytes(_CA.cert_pem.bytes())
    full = dataclasses.asdict(_probe_row(1, _chain("mx1.example"), _full_enumeration()))
    recorder = _Recorder(full)
    summary = probe_summary_from_row(recorder, trust)
    assert recorder.read == set(SUMMARY_COLUMNS)
    assert summary.enumeration is not None and summary.leaf is not None
    session = _Recorder({"probe_id": "192.0.2.1|25", "kind": "sni", "sni": "other.example", "status": "starttls_ok",
                         "started_at": _STARTED, "cert_chain": _chain("other.example"), "contradicts": []})
    session_summary_from_row(session, summary, trust)
    assert session.read | {"probe_id", "kind"} == set(SESSION_COLUMNS)


def _committed_scan(out: Path, probes: list[ProbeRow], sessions: list[SessionRow]) -> None:
    writer = DatasetWriter(out, segment_rows=len(probes) // 3 + 1, row_group_size=50)
    for start in range(0, len(probes), 97):
        writer.write(probes[start:start + 97])
    writer.write(sessions)
    writer.close()
    attempt = Attempt(attempt=1, started_at=_STARTED, finished_at=_STARTED + timedelta(seconds=1),
                      outcome=AttemptOutcome.INTERRUPTED, message="", config={}, result_settings={}, provenance={})
    ScanRecord("scan-1", [attempt]).save(out)


def _session(probe: ProbeRow, sni: str, chain: list[bytes]) -> SessionRow:
    return SessionRow(scan_id="scan-1", attempt=1, probe_id=probe.probe_id, address=probe.address, port=probe.port,
                      kind=SessionKind.SNI, sni=sni, status=ProbeStatus.STARTTLS_OK, failure_class=None,
                      failure_detail="", starttls_advertised=True, tls_version="TLSv1.3", cert_chain=chain,
                      cert_sha256=None, cert_trust=TrustStatus.TRUSTED, same_as_probe=False, contradicts=[],
                      started_at=_STARTED,
                      total_ms=1.0)


def test_more_committed_probes_than_the_memory_bound_stream_into_the_cache(tmp_path: Path) -> None:
    out = tmp_path / "out"
    chains = [_chain(f"mx{i}.example") for i in range(4)]
    probes = [_probe_row(i, chains[i % 4] if i % 3 == 0 else None) for i in range(600)]
    sessions = [_session(probes[0], "other.example", chains[1]), _session(probes[3], "third.example", [])]
    _committed_scan(out, probes, sessions)
    source = tmp_path / "in.txt"
    source.write_text("example.org\n", encoding="utf-8")
    trust = TrustStore.from_pem_bytes(_CA.cert_pem.bytes())

    state = load_resume_state(out, ScanConfig(OutputConfig(out)), source, trust)
    assert isinstance(state.probes, CommittedProbes) and len(state.probes) == 600  # listed, not yet read
    assert len(state.probes.probe_files) > 1  # several committed segments

    with SummaryCache(tmp_path / "work" / "probes.sqlite", capacity=50) as cache:
        for key, summary in state.probes.summaries(cache.get):
            cache.put(key, summary)
        assert len(cache) == 602 and cache.spilled >= 552  # all there, at most 50 in memory
        for probe in probes:  # every committed probe comes back, equal to one rebuilt from its whole row
            found = cache.get(probe.probe_id)
            assert found == probe_summary_from_row(dataclasses.asdict(probe), trust)
        seen = cache.get(link_key(probes[0].probe_id, "other.example"))
        assert seen is not None and seen.sni == "other.example" and seen.leaf is not None
        assert seen.leaf.san_dns == ("mx1.example",)  # the session's own certificate, not the probe's
        failed = cache.get(link_key(probes[3].probe_id, "third.example"))
        assert failed is not None and failed.leaf is None


def test_a_damaged_probe_file_is_named_when_streamed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _committed_scan(out, [_probe_row(i) for i in range(30)], [])
    part = next((out / "probes").glob("part-*.parquet"))
    committed = CommittedProbes((str(part),), (), TrustStore.from_pem_bytes(_CA.cert_pem.bytes()), True, 30)
    data = bytearray(part.read_bytes())
    data[8:200] = bytes(192)  # the footer survives (so the journal's checks pass), the pages do not
    part.write_bytes(bytes(data))
    with pytest.raises(DamagedOutputError, match=r"committed file .*part-00000\.parquet is unreadable"):
        list(committed.summaries(lambda key: None))


def test_a_damaged_file_found_while_the_scan_streams_it_is_a_data_error_not_a_bug() -> None:
    """The scan reads committed probes at its start (not in load_resume_state): the exit code stays 65."""
    failed = ScanFailed("stages", DamagedOutputError("committed file probes/part-00000.parquet is unreadable"))
    assert failed.exit_code == ExitCode.DATA_ERROR
    assert str(failed) == "committed file probes/part-00000.parquet is unreadable"
