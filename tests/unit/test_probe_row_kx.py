"""Key-exchange columns of the probe row and back (resume rebuilds summaries from committed rows)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import trustme

from scanner.certs import TrustStore
from scanner.output.probe_rows import build_probe_row, probe_summary_from_row
from scanner.smtp.session import skipped_result
from scanner.status import FailureClass
from scanner.tls.enumeration import EnumerationResult, KeyExchangeResult, VersionVerdict
from scanner.tls.versions import EnumMode, TlsVersion


def _enumeration(kx: KeyExchangeResult) -> EnumerationResult:
    return EnumerationResult(
        mode=EnumMode.POSTURE, sessions=11, versions={TlsVersion.TLS12: VersionVerdict.ACCEPTED},
        weak_classes=frozenset(), weak_complete=True, nist_r1=True, nist_r2=True, preferred_suite=0xC02F,
        preferred_version=TlsVersion.TLS12, server_order=False, kx=kx,
    )


def test_key_exchange_columns_round_trip() -> None:
    kx = KeyExchangeResult(
        groups=(29, 24, 19), groups_complete=False, preferred_group=29, dhe=True, dh_bits=1024,
        dh_group="rfc2409-oakley2", secure_renegotiation=True, compression=False, extended_master_secret=False,
        encrypt_then_mac=True, heartbeat=False, ocsp_stapling=None, fallback_scsv=True,
    )
    row = build_probe_row("scan", 1, "192.0.2.7", 25, ("mx.example",), skipped_result(FailureClass.INTERNAL, "x"),
                          None, datetime(2026, 1, 1, tzinfo=UTC), _enumeration(kx))
    assert (row.kx_groups, row.kx_preferred_group, row.dh_group) == (
        ["x25519", "secp384r1", "secp192r1"], "x25519", "rfc2409-oakley2")
    assert (row.dhe_accepted, row.tls_compression, row.fallback_scsv, row.ocsp_stapling) == (True, False, True, None)
    trust = TrustStore.from_pem_bytes(trustme.CA().cert_pem.bytes())  # unused: the row has no chain
    back = probe_summary_from_row(dataclasses.asdict(row), trust)
    assert back.enumeration is not None and back.enumeration.kx == kx


def test_no_enumeration_means_null_key_exchange_columns() -> None:
    row = build_probe_row("scan", 1, "192.0.2.7", 25, ("mx.example",), skipped_result(FailureClass.INTERNAL, "x"),
                          None, datetime(2026, 1, 1, tzinfo=UTC))
    columns = ("kx_groups", "kx_groups_complete", "kx_preferred_group", "dhe_accepted", "dh_bits", "dh_group",
               "secure_renegotiation", "tls_compression", "extended_master_secret", "encrypt_then_mac",
               "heartbeat", "ocsp_stapling", "fallback_scsv")
    assert all(getattr(row, c) is None for c in columns)
