"""Probe and session rows and summaries from probe results, and the inverse: summaries from committed
rows (resume).

``build_probe_row``/``build_session_row`` turn what the scheduler (scanner.probing) observed into the
rows of the ``probes`` and ``sessions`` tables, ``probe_summary``/``session_summary`` into what the
domains' verdicts keep; ``probe_summary_from_row``/``session_summary_from_row`` read the rows back so a
resumed scan reuses a probe instead of repeating it. Both directions live here so a round-trip test
keeps them in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from scanner.certs import ChainVerdict, TrustStatus, TrustStore, check_chain
from scanner.output.rows import ProbeRow, SessionRow
from scanner.records import ProbeSummary, SmtpProbeResult, probe_id
from scanner.sni import AddressCheck, SessionOutcome, name_source
from scanner.status import CertSource, Phase, ProbeStatus, SessionFact
from scanner.tls.ciphers import WeakClass, suite_by_name
from scanner.tls.ciphers import suite as lookup_suite
from scanner.tls.enumeration import EnumerationResult, KeyExchangeResult, VersionVerdict
from scanner.tls.groups import group_code, group_name
from scanner.tls.versions import VERSION_NAMES, EnumMode, TlsVersion

__all__ = [
    "VERSION_COLUMNS",
    "build_probe_row",
    "build_session_row",
    "probe_summary",
    "probe_summary_from_row",
    "session_summary",
    "session_summary_from_row",
    "suite_code",
    "suite_name",
]


def build_probe_row(
    scan_id: str,
    attempt: int,
    address: str,
    port: int,
    names: tuple[str, ...],
    result: SmtpProbeResult,
    verdict: ChainVerdict | None,
    started_at: datetime,
    enumeration: EnumerationResult | None = None,
    attempts: int = 1,
    check: AddressCheck | None = None,
) -> ProbeRow:
    leaf = verdict.leaf if verdict else None
    enum = enumeration
    tls = result.tls
    timing = result.timings_ms.get
    return ProbeRow(
        scan_id=scan_id,
        attempt=attempt,
        probe_id=probe_id(address, port),
        address=address,
        ip_version=ipaddress.ip_address(address).version,
        port=port,
        mx_hosts=list(names),
        sni=names[0] if names and result.phase is not Phase.ADDRESS else None,
        status=result.status,
        failure_phase=result.phase if result.failure_class else None,
        failure_class=result.failure_class,
        failure_detail=result.detail,
        banner_code=result.banner_code,
        banner=result.banner,
        ehlo_code=result.ehlo_code,
        ehlo_greeting=result.ehlo_greeting,
        ehlo_extensions=list(result.ehlo_extensions),
        used_helo=result.used_helo,
        starttls_advertised=result.starttls_advertised,
        starttls_code=result.starttls_code,
        starttls_text=result.starttls_text,
        plaintext_after_starttls=result.plaintext_after_starttls,
        tls_ok=result.status is ProbeStatus.STARTTLS_OK,
        tls_version=tls.version if tls else None,
        tls_cipher=tls.cipher if tls else None,
        tls_cipher_bits=tls.cipher_bits if tls else None,
        cert_chain=list(tls.chain) if tls else [],
        cert_chain_complete=tls.chain_complete if tls else None,
        cert_trust=verdict.trust if verdict else None,
        cert_trust_detail=verdict.trust_detail if verdict else None,
        cert_expired=verdict.expired if verdict else None,
        cert_not_yet_valid=verdict.not_yet_valid if verdict else None,
        cert_self_signed=verdict.self_signed if verdict else None,
        cert_days_to_expiry=verdict.days_to_expiry if verdict else None,
        cert_subject_cn=leaf.subject_cn if leaf else None,
        cert_san_dns=list(leaf.san_dns) if leaf else [],
        cert_issuer=leaf.issuer if leaf else None,
        cert_issuer_cn=leaf.issuer_cn if leaf else None,
        cert_serial=leaf.serial if leaf else None,
        cert_not_before=leaf.not_before if leaf else None,
        cert_not_after=leaf.not_after if leaf else None,
        cert_key_type=leaf.key_type if leaf else None,
        cert_key_bits=leaf.key_bits if leaf else None,
        cert_signature_algorithm=leaf.signature_algorithm if leaf else None,
        cert_sha256=leaf.sha256 if leaf else None,
        enum_mode=enum.mode if enum else None,
        enum_sessions=enum.sessions if enum else None,
        enum_complete=enum.complete if enum else None,
        hello_quirks=list(enum.quirks) if enum else None,
        ver_ssl3=_version(enum, TlsVersion.SSL3),
        ver_tls1_0=_version(enum, TlsVersion.TLS10),
        ver_tls1_1=_version(enum, TlsVersion.TLS11),
        ver_tls1_2=_version(enum, TlsVersion.TLS12),
        ver_tls1_3=_version(enum, TlsVersion.TLS13),
        versions_accepted=[VERSION_NAMES[v] for v, verdict_ in enum.versions.items()
                           if verdict_ is VersionVerdict.ACCEPTED] if enum else None,
        weak_classes=sorted(enum.weak_classes) if enum else None,
        weak_complete=enum.weak_complete if enum else None,
        nist_r1=enum.nist_r1 if enum else None,
        nist_r2=enum.nist_r2 if enum else None,
        preferred_suite=suite_name(enum.preferred_suite) if enum and enum.preferred_suite is not None else None,
        preferred_version=VERSION_NAMES[enum.preferred_version] if enum and enum.preferred_version else None,
        server_order=enum.server_order if enum else None,
        suites_ssl3=_suites(enum, TlsVersion.SSL3),
        suites_tls1_0=_suites(enum, TlsVersion.TLS10),
        suites_tls1_1=_suites(enum, TlsVersion.TLS11),
        suites_tls1_2=_suites(enum, TlsVersion.TLS12),
        suites_tls1_3=_suites(enum, TlsVersion.TLS13),
        server_order_suites=[suite_name(c) for c in enum.server_order_suites]
        if enum and enum.mode.value == "full" and enum.server_order else None,
        **_kx_columns(enum.kx if enum else None),
        connect_ms=timing(Phase.CONNECT),
        banner_ms=timing(Phase.BANNER),
        ehlo_ms=_sum_present(timing(Phase.EHLO), timing(Phase.HELO)),
        starttls_ms=timing(Phase.STARTTLS),
        tls_ms=timing(Phase.TLS_HANDSHAKE),
        total_ms=result.total_ms,
        attempts=attempts,
        cert_no_sni_sha256=check.no_sni_sha256 if check else None,
        sni_selects_certificate=check.selects if check else None,
        inconsistent_facts=sorted(check.facts) if check else [],
        consistency_sessions=check.rechecks if check else 0,
        started_at=started_at,
    )


# Probe-row columns per protocol version: (verdict column, full-mode suites column), read back by
# probe_summary_from_row; a round-trip test keeps it in step with build_probe_row.
VERSION_COLUMNS: dict[TlsVersion, tuple[str, str]] = {
    TlsVersion.SSL3: ("ver_ssl3", "suites_ssl3"),
    TlsVersion.TLS10: ("ver_tls1_0", "suites_tls1_0"),
    TlsVersion.TLS11: ("ver_tls1_1", "suites_tls1_1"),
    TlsVersion.TLS12: ("ver_tls1_2", "suites_tls1_2"),
    TlsVersion.TLS13: ("ver_tls1_3", "suites_tls1_3"),
}


def _kx_columns(kx: KeyExchangeResult | None) -> dict[str, Any]:
    """The key-exchange and hygiene columns (read back by ``_kx_from_row``); all null without enumeration."""
    known = kx or KeyExchangeResult()
    return {column: getattr(known, attribute) for attribute, column in _KX_FLAGS.items()} | {
        "kx_groups": [group_name(g) for g in known.groups] if kx else None,
        "kx_groups_complete": known.groups_complete,
        "kx_preferred_group": group_name(known.preferred_group) if known.preferred_group is not None else None,
        "dh_bits": known.dh_bits, "dh_group": known.dh_group,
    }


# KeyExchangeResult flag -> probe-row column.
_KX_FLAGS: dict[str, str] = {
    "dhe": "dhe_accepted", "secure_renegotiation": "secure_renegotiation", "compression": "tls_compression",
    "extended_master_secret": "extended_master_secret", "encrypt_then_mac": "encrypt_then_mac",
    "heartbeat": "heartbeat", "ocsp_stapling": "ocsp_stapling", "fallback_scsv": "fallback_scsv",
}


def _kx_from_row(row: Mapping[str, Any]) -> KeyExchangeResult:
    preferred = row.get("kx_preferred_group")
    return KeyExchangeResult(
        groups=tuple(group_code(n) for n in row.get("kx_groups") or ()),
        groups_complete=row.get("kx_groups_complete"),
        preferred_group=group_code(preferred) if preferred else None,
        dh_bits=row.get("dh_bits"), dh_group=row.get("dh_group"),
        **{attribute: row.get(column) for attribute, column in _KX_FLAGS.items()},
    )


def suite_code(name: str) -> int:
    """Inverse of ``suite_name``."""
    known = suite_by_name(name)
    if known is not None:
        return known.code
    return int(name, 16)


def _enumeration_from_row(row: Mapping[str, Any]) -> EnumerationResult | None:
    if row["enum_mode"] is None:
        return None
    versions = {v: VersionVerdict(row[col]) for v, (col, _) in VERSION_COLUMNS.items() if row[col] is not None}
    accepted = {v: tuple(suite_code(n) for n in row[col]) for v, (_, col) in VERSION_COLUMNS.items()
                if row[col] is not None and versions.get(v) is VersionVerdict.ACCEPTED}
    preferred_version = next((v for v in versions if VERSION_NAMES[v] == row["preferred_version"]), None)
    return EnumerationResult(
        mode=EnumMode(row["enum_mode"]), sessions=row["enum_sessions"] or 0, versions=versions,
        weak_classes=frozenset(WeakClass(w) for w in row["weak_classes"] or ()),
        weak_complete=bool(row["weak_complete"]), nist_r1=row["nist_r1"], nist_r2=row["nist_r2"],
        preferred_suite=suite_code(row["preferred_suite"]) if row["preferred_suite"] else None,
        preferred_version=preferred_version, server_order=row["server_order"], accepted=accepted,
        server_order_suites=tuple(suite_code(n) for n in row["server_order_suites"] or ()),
        complete=bool(row["enum_complete"]), quirks=tuple(row["hello_quirks"] or ()), kx=_kx_from_row(row),
    )


def probe_summary(row: ProbeRow, result: SmtpProbeResult, verdict: ChainVerdict | None,
                  enumeration: EnumerationResult | None, check: AddressCheck | None, sni_checks: bool) -> ProbeSummary:
    """What the domains' verdicts keep of a probe (its full ``row`` goes to the writer)."""
    chain = result.tls.chain if result.tls else ()
    if check is not None and check.facts:  # judged on the worst certificate received for the SNI
        worst = check.worst_probe_verdict()
        if worst is not None and worst.leaf is not None:
            verdict, chain = worst, check.chains.get(worst.leaf.sha256, chain)
    return ProbeSummary(
        probe_id=row.probe_id,
        status=result.status,
        leaf=verdict.leaf if verdict else None,
        chain=chain,
        cert_trust=verdict.trust if verdict else None,
        cert_expired=(verdict.expired or verdict.not_yet_valid) if verdict else None,
        cert_self_signed=verdict.self_signed if verdict else None,
        plaintext_after_starttls=result.plaintext_after_starttls,
        enumeration=enumeration,
        sni=row.sni,
        no_sni_sha256=row.cert_no_sni_sha256,
        sni_selects=row.sni_selects_certificate,
        inconsistent=tuple(f.value for f in row.inconsistent_facts),
        cert_source=CertSource.PROBE if sni_checks and verdict is not None else None,
    )


def probe_summary_from_row(row: Mapping[str, Any], trust: TrustStore, sni_checks: bool = True) -> ProbeSummary:
    """Rebuild the summary of a committed probe row (to resume a scan without probing again).

    Trust, expiry and flags are taken from the row as they were judged at probe time; the chain is
    parsed again only for the leaf's names and key, which grading and name matching read.
    """
    chain = tuple(row["cert_chain"] or ())
    leaf = check_chain(chain, trust, row["started_at"]).leaf if chain else None
    expired = row["cert_expired"]
    return ProbeSummary(
        probe_id=row["probe_id"], status=ProbeStatus(row["status"]), leaf=leaf, chain=chain,
        cert_trust=TrustStatus(row["cert_trust"]) if row["cert_trust"] else None,
        cert_expired=(expired or bool(row["cert_not_yet_valid"])) if expired is not None else None,
        cert_self_signed=row["cert_self_signed"], plaintext_after_starttls=row["plaintext_after_starttls"],
        enumeration=_enumeration_from_row(row), sni=row["sni"], no_sni_sha256=row["cert_no_sni_sha256"],
        sni_selects=row["sni_selects_certificate"], inconsistent=tuple(row["inconsistent_facts"] or ()),
        cert_source=CertSource.PROBE if sni_checks and chain and row["sni"] is not None else None,
    )


def session_summary(base: ProbeSummary, outcome: SessionOutcome, new: frozenset[SessionFact]) -> ProbeSummary:
    """The address seen through one SNI session: its certificate, the probe's other facts."""
    chain = outcome.result.tls.chain if outcome.result.tls else ()
    return _seen_with(base, outcome.sni, chain, outcome.verdict, name_source(outcome), (f.value for f in new))


def session_summary_from_row(row: Mapping[str, Any], base: ProbeSummary, trust: TrustStore) -> ProbeSummary:
    """Rebuild a further name's view of an address from its committed ``sessions`` row (resume)."""
    chain = tuple(row["cert_chain"] or ())
    verdict = check_chain(chain, trust, row["started_at"]) if chain else None
    ok = ProbeStatus(row["status"]) is ProbeStatus.STARTTLS_OK
    return _seen_with(base, row["sni"], chain, verdict, CertSource.OWN_SNI if ok else CertSource.SESSION_FAILED,
                      row["contradicts"] or ())


def build_session_row(scan_id: str, attempt: int, port: int, outcome: SessionOutcome, probe_sha256: str | None,
                      new: frozenset[SessionFact]) -> SessionRow:
    result, verdict = outcome.result, outcome.verdict
    leaf = verdict.leaf if verdict else None
    return SessionRow(
        scan_id=scan_id, attempt=attempt, probe_id=probe_id(outcome.address, port), address=outcome.address,
        port=port, kind=outcome.kind, sni=outcome.sni,
        status=result.status, failure_class=result.failure_class, failure_detail=result.detail,
        starttls_advertised=result.starttls_advertised, tls_version=result.tls.version if result.tls else None,
        cert_chain=list(result.tls.chain) if result.tls else [], cert_sha256=leaf.sha256 if leaf else None,
        cert_trust=verdict.trust if verdict else None,
        same_as_probe=(leaf.sha256 == probe_sha256) if leaf and probe_sha256 else None,
        contradicts=sorted(new), started_at=outcome.started_at, total_ms=result.total_ms,
    )


def suite_name(code: int) -> str:
    """IANA name of a suite; unknown code points stay visible as hex."""
    known = lookup_suite(code)
    return known.iana_name if known else f"0x{code:04X}"


def _version(enum: EnumerationResult | None, version: TlsVersion) -> VersionVerdict | None:
    return enum.versions.get(version) if enum else None


def _suites(enum: EnumerationResult | None, version: TlsVersion) -> list[str] | None:
    if enum is None or enum.mode.value != "full":
        return None
    return [suite_name(c) for c in enum.accepted.get(version, ())]


def _sum_present(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _seen_with(base: ProbeSummary, sni: str | None, chain: tuple[bytes, ...], verdict: ChainVerdict | None,
               source: CertSource, contradicted: Iterable[str]) -> ProbeSummary:
    """``base`` as seen through a session with SNI = ``sni``: that session's certificate (none if it
    failed) in place of the probe's, the facts it ``contradicted`` added to the inconsistent ones."""
    inconsistent = tuple(sorted({*base.inconsistent, *contradicted}))
    if verdict is None or not chain:
        return dataclasses.replace(base, leaf=None, chain=(), cert_trust=None, cert_expired=None,
                                   cert_self_signed=None, sni=sni, inconsistent=inconsistent, cert_source=source)
    return dataclasses.replace(
        base, leaf=verdict.leaf, chain=chain, cert_trust=verdict.trust,
        cert_expired=verdict.expired or verdict.not_yet_valid, cert_self_signed=verdict.self_signed,
        sni=sni, inconsistent=inconsistent, cert_source=source,
    )
