"""Build a ``Report`` from a scan's Parquet dataset (and optionally a baseline scan's).

All counting happens in DuckDB (``scanner.report.queries``); this module only names the rows, picks
numerators and denominators and wraps them in ``Share`` objects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb

from scanner.providers import ProviderMapper
from scanner.report import published
from scanner.report import queries as q
from scanner.report.model import (
    BaselineDiff,
    Basis,
    Comparison,
    Delta,
    DomainChange,
    DomainDrill,
    DomainLine,
    Figure,
    FigureTable,
    GradeCount,
    ProviderRow,
    Report,
    ScanInfo,
    Section,
)
from scanner.report.settings import check_comparable
from scanner.report.stats import Share
from scanner.tls.groups import DEPRECATED_EC_GROUPS, group_name

__all__ = ["CHANGES_LIMIT", "DOMAINS_SIDECAR", "DRILL_INLINE_LIMIT", "PROVIDERS_LIMIT", "build_report",
           "domain_drill", "write_domains_sidecar"]

PROVIDERS_LIMIT: Final = 10  # providers listed with their posture
TOP_LIMIT: Final = 12  # rows of open-ended tables (suites, key types, failure classes, ...)
CHANGES_LIMIT: Final = 5000  # changed domains listed against a baseline (the total is always given)
DRILL_INLINE_LIMIT: Final = 2000  # domains in the page's drill-down table; the others go to the sidecar
DOMAINS_SIDECAR: Final = "report-domains.jsonl"  # beside report.html (scanner.derived removes it on --overwrite)

# (figure key, label, numerator column, denominator column) of a wide query
RowSpec = tuple[str, str, str, str]


def _share(basis: Basis, numerator: int, denominator: int) -> Share:
    return Share.estimate(numerator, denominator) if basis is Basis.ESTIMATE else Share.count(numerator, denominator)


def _wide_table(
    key: str, section: Section, title: str, unit: str, denominator: str, basis: Basis,
    data: Mapping[str, int], rows: Sequence[RowSpec], note: str = "",
) -> FigureTable:
    figures = tuple(Figure(k, label, _share(basis, data[n], data[d])) for k, label, n, d in rows)
    return FigureTable(key, section, title, unit, denominator, basis, figures, note)


def _long_table(
    key: str, section: Section, title: str, unit: str, denominator: str, basis: Basis,
    items: Sequence[tuple[str, int]], total: int, note: str = "",
) -> FigureTable:
    figures = tuple(Figure(k, k, _share(basis, n, total)) for k, n in items)
    return FigureTable(key, section, title, unit, denominator, basis, figures, note)


# --- scan ------------------------------------------------------------------------------------------


def _iso(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _scan_info(con: duckdb.DuckDBPyConnection, out_dir: Path) -> ScanInfo:
    cursor = con.execute(q.SCAN_INFO)
    row = cursor.fetchone()
    info = dict(zip([d[0] for d in cursor.description], row or (), strict=False))
    config: dict[str, Any] = json.loads(info["config_json"]) if info.get("config_json") else {}
    counts = q.fetch_wide(con, q.TABLE_ROWS)
    started, finished = info.get("started"), info.get("finished")
    grading = tuple(str(r[0]) for r in q.fetch_rows(con, q.GRADING_VERSIONS))
    coverage, partial = _coverage(con)
    return ScanInfo(
        out_dir=str(out_dir), scan_id=str(info.get("scan_id") or ""), tool_version=str(info.get("tool_version") or ""),
        schema_version=str(info.get("schema_version") or ""), started_at=_iso(started), finished_at=_iso(finished),
        duration_s=(finished - started) if started is not None and finished is not None else None,
        attempts=int(info.get("attempts") or 0), completed=bool(info.get("completed")),
        input=str(info.get("input") or ""), input_lines=counts["domains"], probes=counts["probes"],
        dns_queries=int(info.get("dns_queries") or 0),
        enumeration=str(config.get("probe", {}).get("enumeration", "")),
        policy_checks=bool(config.get("policy_checks", False)), grading_versions=grading,
        coverage=coverage, partial_coverage=partial,
    )


def _coverage(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """("IPv4 and IPv6" or "IPv4 only (IPv6 not reachable from this vantage)", the latter again or "")."""
    try:
        rows = q.fetch_rows(con, q.FAMILIES)
    except duckdb.BinderException:  # a dataset from before schema 7 does not say
        return "not recorded", ""
    ipv4, ipv6 = rows[0] if rows else (None, None)
    if ipv4 and ipv6:
        return "IPv4 and IPv6", ""
    if ipv4 is None and ipv6 is None:
        return "not recorded", ""
    missing = " and ".join(f for f, on in (("IPv4", ipv4), ("IPv6", ipv6)) if not on)
    probed = "IPv4 only" if ipv4 else "IPv6 only" if ipv6 else "no family"
    text = f"{probed} ({missing} not reachable from this vantage: those addresses were not probed)"
    return text, text


# --- sections --------------------------------------------------------------------------------------


def _funnel(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, FigureTable, FigureTable]:
    s = Section.FUNNEL
    status = _wide_table(
        "funnel.domain_status", s, "Domains scanned: status of every input line", "input lines",
        "meaningful input lines", Basis.COUNT, q.fetch_wide(con, q.DOMAIN_STATUS), [
            ("ok", "mail hosts found (status ok)", "ok_n", "lines_d"),
            ("ok_mx", "… through MX records", "ok_mx_n", "lines_d"),
            ("ok_implicit", "… through implicit MX (A/AAAA, RFC 5321 §5.1)", "ok_implicit_n", "lines_d"),
            ("null_mx", "null MX (RFC 7505: accepts no mail)", "null_mx_n", "lines_d"),
            ("null_mx_mixed", "null MX mixed with other MX (RFC 7505 §3 violation)", "null_mx_mixed_n", "lines_d"),
            ("invalid_input", "invalid input line", "invalid_input_n", "lines_d"),
            ("duplicate", "duplicate of an earlier line", "duplicate_n", "lines_d"),
            ("excluded", "excluded (opt-out list)", "excluded_n", "lines_d"),
            ("dns_nxdomain", "DNS: NXDOMAIN", "dns_nxdomain_n", "lines_d"),
            ("dns_no_mail_host", "DNS: neither MX nor address", "dns_no_mail_host_n", "lines_d"),
            ("dns_servfail", "DNS: SERVFAIL", "dns_servfail_n", "lines_d"),
            ("dns_timeout", "DNS: timeout", "dns_timeout_n", "lines_d"),
            ("dns_refused", "DNS: REFUSED", "dns_refused_n", "lines_d"),
            ("dns_error", "DNS: other error", "dns_error_n", "lines_d"),
            ("mx_no_address", "MX hosts without a usable address", "mx_no_address_n", "lines_d"),
            ("internal_error", "scanner internal error", "internal_error_n", "lines_d"),
        ],
        "Describes the input list itself, so no confidence interval. Rows prefixed … are subsets of the row above.",
    )
    inv = q.fetch_wide(con, q.INVENTORY)
    inventory = _wide_table(
        "funnel.inventory", s, "Mail hosts and addresses", "distinct MX addresses or host names",
        "distinct MX addresses", Basis.COUNT, inv, [
            ("ipv4", "IPv4 addresses", "ipv4_n", "addresses_d"),
            ("ipv6", "IPv6 addresses", "ipv6_n", "addresses_d"),
            ("hosts_cname", "MX host names reached through a CNAME (RFC 2181 §10.3; of host names)",
             "hosts_cname_n", "hosts_n"),
        ],
        f"{inv['hosts_n']:,} distinct MX host names, {inv['addresses_d']:,} distinct addresses, "
        f"{inv['probes_n']:,} probes (one per address and port).",
    )
    funnel_data = q.fetch_wide(con, q.PROBE_FUNNEL)
    probe_funnel = _wide_table(
        "funnel.probes", s, "Probe funnel: from TCP connection to TLS handshake", "addresses",
        "probed addresses (not skipped)", Basis.ESTIMATE, funnel_data, [
            ("connected", "TCP connection established", "connected_n", "attempted_d"),
            ("banner_220", "220 greeting", "banner_220_n", "attempted_d"),
            ("ehlo", "EHLO (or HELO) answered", "ehlo_n", "attempted_d"),
            ("advertised", "STARTTLS advertised", "advertised_n", "attempted_d"),
            ("starttls_220", "220 to STARTTLS", "starttls_220_n", "attempted_d"),
            ("tls_ok", "TLS handshake completed", "tls_ok_n", "attempted_d"),
            ("tls_ok_definitive", "TLS handshake completed, of addresses with a definitive STARTTLS answer",
             "tls_ok_n", "definitive_d"),
            ("plaintext_after_starttls", "bytes sent after the 220 to STARTTLS (RFC 3207 §4.2 injection risk)",
             "plaintext_n", "starttls_220_n"),
        ],
        f"{funnel_data['skipped_n']:,} of {funnel_data['probes_d']:,} addresses were skipped before any packet "
        "(reserved or excluded) and are left out.",
    )
    return status, inventory, probe_funnel


def _starttls(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, FigureTable]:
    data = q.fetch_wide(con, q.STARTTLS_DOMAINS)
    verdicts = _wide_table(
        "starttls.domains", Section.STARTTLS, "STARTTLS per mail domain", "domains", "mail domains (status ok)",
        Basis.ESTIMATE, data, [
            ("all", "STARTTLS on every MX address", "all_n", "mail_d"),
            ("some", "on some MX addresses only", "some_n", "mail_d"),
            ("none", "on no MX address", "none_n", "mail_d"),
            ("incomplete", "could not be tested (timeout, 421, unreachable) and the verdict depends on it",
             "incomplete_n", "mail_d"),
            ("not_covered", "every MX address of a family this vantage cannot reach (not probed)", "not_covered_n",
             "mail_d"),
            ("partly_covered", "judged over one family: the other family's MX addresses were not probed",
             "partly_covered_n", "mail_d"),
            ("any", "at least one MX address does STARTTLS", "any_n", "mail_d"),
        ],
        "STARTTLS means: advertised, accepted with 220, and a completed TLS handshake. Verdicts cover the address "
        "families this vantage could reach (see coverage).",
    )
    decided = _wide_table(
        "starttls.decided", Section.STARTTLS, "STARTTLS per mail domain, domains with a definite verdict",
        "domains", "mail domains whose every MX address answered (all / some / none)", Basis.ESTIMATE, data, [
            ("all", "STARTTLS on every MX address", "all_n", "decided_d"),
            ("some", "on some MX addresses only", "some_n", "decided_d"),
            ("none", "on no MX address", "none_n", "decided_d"),
        ],
    )
    return verdicts, decided


_VERSION_ROWS: Final[Sequence[tuple[str, str]]] = (
    ("tls13", "TLS 1.3"), ("tls12", "TLS 1.2"), ("tls11", "TLS 1.1"), ("tls10", "TLS 1.0"), ("ssl3", "SSLv3"),
    ("unknown", "unknown"),
)


def _versions(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, FigureTable, FigureTable]:
    s = Section.TLS
    per_address = _wide_table(
        "tls.versions_address", s, "Highest protocol version per address", "addresses",
        "addresses that completed STARTTLS", Basis.ESTIMATE, q.fetch_wide(con, q.VERSIONS_ADDRESS),
        [(k, label, f"{k}_n", "tls_d") for k, label in _VERSION_ROWS],
        "Highest version accepted by the enumeration, else the version negotiated by the scanner's handshake.",
    )
    con.execute(q.CREATE_DOMAIN_VERSION)
    per_domain = _wide_table(
        "tls.versions_domain", s, "Highest protocol version per domain (reached on every MX address)", "domains",
        "mail domains with at least one address that completed STARTTLS", Basis.ESTIMATE,
        q.fetch_wide(con, q.VERSIONS_DOMAIN), [(k, label, f"{k}_n", "tls_d") for k, label in _VERSION_ROWS],
        "A domain's version is the lowest of its TLS addresses' highest versions.",
    )
    support = _wide_table(
        "tls.version_support", s, "Protocol versions accepted (support matrix)", "addresses",
        "enumerated addresses whose answer for that version is known", Basis.ESTIMATE,
        q.fetch_wide(con, q.VERSION_SUPPORT), [
            ("ssl3", "SSLv3 accepted", "ssl3_n", "ssl3_d"),
            ("tls1_0", "TLS 1.0 accepted", "tls1_0_n", "tls1_0_d"),
            ("tls1_1", "TLS 1.1 accepted", "tls1_1_n", "tls1_1_d"),
            ("tls1_2", "TLS 1.2 accepted", "tls1_2_n", "tls1_2_d"),
            ("tls1_3", "TLS 1.3 accepted", "tls1_3_n", "tls1_3_d"),
            ("legacy", "any of SSLv3 / TLS 1.0 / TLS 1.1 accepted", "legacy_n", "legacy_d"),
        ],
        "Each version has its own denominator: addresses where the enumeration got an answer (accepted or "
        "rejected) for it. SSLv2 is not probed.",
    )
    return per_address, per_domain, support


_WEAK_LABELS: Final[Mapping[str, str]] = {
    "null": "NULL encryption", "anon": "anonymous (aNULL)", "export": "EXPORT", "rc4": "RC4", "des": "single DES",
    "3des": "3DES", "rc2": "RC2", "idea": "IDEA", "md5": "MD5 HMAC", "low_bits": "< 128-bit (not 3DES)",
}


def _suites(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, FigureTable]:
    data = q.fetch_wide(con, q.SUITES)
    rows: list[RowSpec] = [
        ("weak_any", "any weak suite accepted", "weak_any_n", "weak_d"),
        ("tier_insecure", "insecure: NULL, anon, EXPORT, DES, RC2, < 112 bits", "tier_insecure_n", "weak_d"),
        ("tier_obsolete", "obsolete: RC4, MD5", "tier_obsolete_n", "weak_d"),
        ("tier_block64", "64-bit block: 3DES, IDEA", "tier_block64_n", "weak_d"),
    ]
    rows += [(f"class_{c}", f"class: {_WEAK_LABELS[c]}", f"class_{c}_n", "weak_d") for c in q.WEAK_CLASSES]
    rows += [
        ("nist_r1", "accepts a NIST SP 800-52r1 suite", "nist_r1_n", "nist_r1_d"),
        ("nist_r2", "accepts a NIST SP 800-52r2 suite", "nist_r2_n", "nist_r2_d"),
        ("nist_any", "accepts an r1 or r2 suite (forced-TLS criterion)", "nist_any_n", "nist_any_d"),
        ("server_order", "imposes its own suite order", "server_order_n", "server_order_d"),
    ]
    suites = _wide_table(
        "tls.suites", Section.TLS, "Weak cipher suites (by class) and NIST SP 800-52 suites", "addresses",
        "enumerated addresses", Basis.ESTIMATE, data, rows,
        f"Weak classes: presence is proof, absence is not when the search stopped early "
        f"({data['weak_partial_n']:,} addresses), so weak shares are lower bounds. Tiers as in schemas/grading.md.",
    )
    total = q.fetch_scalar(con, q.PREFERRED_SUITES_TOTAL)
    preferred = _long_table(
        "tls.preferred_suites", Section.TLS, "Suite chosen from a modern-first offer (top)", "addresses",
        "addresses that completed STARTTLS with a known preferred suite", Basis.ESTIMATE,
        q.fetch_long(con, q.PREFERRED_SUITES, TOP_LIMIT), total,
    )
    return suites, preferred


def _key_exchange(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, FigureTable]:
    deprecated = [group_name(g) for g in DEPRECATED_EC_GROUPS]
    cursor = con.execute(q.KEY_EXCHANGE, {"deprecated": deprecated})
    row = cursor.fetchone() or ()
    data = {d[0]: int(v or 0) for d, v in zip(cursor.description, row, strict=False)}
    rows: list[RowSpec] = [
        ("dh_none", "no DHE suite", "dh_none_n", "dh_d"),
        ("dh_below_1024", "DH prime < 1024 bits", "dh_below_1024_n", "dh_d"),
        ("dh_1024", "DH prime of 1024 bits", "dh_1024_n", "dh_d"),
        ("dh_below_2048", "DH prime of 1025-2047 bits", "dh_below_2048_n", "dh_d"),
        ("dh_2048", "DH prime of 2048 bits", "dh_2048_n", "dh_d"),
        ("dh_above_2048", "DH prime > 2048 bits", "dh_above_2048_n", "dh_d"),
        ("dh_common", "published prime of <= 1024 bits (Logjam)", "dh_common_n", "dh_d"),
        ("dh_published", "published prime (RFC 2409/3526/5114/7919)", "dh_published_n", "dh_d"),
        ("only_deprecated", "ECDHE only with deprecated curves", "only_deprecated_n", "groups_decided_d"),
        ("no_reneg", "no RFC 5746 secure renegotiation", "no_reneg_n", "reneg_d"),
        ("compression", "TLS compression on", "compression_n", "compression_d"),
        ("no_ems", "no extended master secret", "no_ems_n", "ems_d"),
        ("etm", "encrypt-then-MAC agreed", "etm_n", "etm_d"),
        ("heartbeat", "heartbeat extension", "heartbeat_n", "heartbeat_d"),
        ("ocsp", "OCSP stapling offered", "ocsp_n", "ocsp_d"),
        ("fallback", "TLS_FALLBACK_SCSV honoured", "fallback_n", "fallback_d"),
    ]
    key_exchange = _wide_table(
        "tls.key_exchange", Section.TLS, "Key exchange and protocol hygiene", "addresses",
        "enumerated addresses where the fact was observed", Basis.ESTIMATE, data, rows,
        "DH rows: addresses whose DHE support is known (size classes partition them with 'no DHE suite'). "
        "Each other row has its own denominator: the addresses where that fact was observed (hygiene facts "
        "come from the highest version below TLS 1.3; fallback needs two versions or more, and posture mode "
        "asks it only with a version below TLS 1.2 and no TLS 1.3, as NIST SP 800-52r2 does).",
    )
    groups = _long_table(
        "tls.groups", Section.TLS, "Key-exchange groups accepted", "addresses",
        "enumerated addresses with at least one group found", Basis.ESTIMATE,
        q.fetch_long(con, q.GROUPS, TOP_LIMIT), q.fetch_scalar(con, q.GROUPS_TOTAL),
        "Posture mode lists the groups its hellos happened to show (it eliminates curves only while "
        "'ECDHE only with deprecated curves' is undecided), so shares are lower bounds.",
    )
    return key_exchange, groups


def _certificates(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, ...]:
    s = Section.CERTIFICATES
    per_address = _wide_table(
        "certs.address", s, "Certificates per address", "addresses", "addresses that completed STARTTLS",
        Basis.ESTIMATE, q.fetch_wide(con, q.CERTS_ADDRESS), [
            ("trusted", "chain trusted and unexpired", "trusted_n", "tls_d"),
            ("trust_self_signed", "chain: self-signed", "trust_self_signed_n", "tls_d"),
            ("unknown_issuer", "chain: unknown issuer", "unknown_issuer_n", "tls_d"),
            ("trust_expired", "chain: expired", "trust_expired_n", "tls_d"),
            ("invalid_chain", "chain: invalid", "invalid_chain_n", "tls_d"),
            ("no_certificate", "no certificate", "no_certificate_n", "tls_d"),
            ("parse_error", "certificate could not be parsed", "parse_error_n", "tls_d"),
            ("self_signed", "self-signed leaf", "self_signed_n", "self_signed_d"),
            ("expired", "expired leaf", "expired_n", "expired_d"),
            ("not_yet_valid", "leaf not yet valid", "not_yet_valid_n", "expired_d"),
            ("expiring_30d", "leaf expires within 30 days", "expiring_30d_n", "days_d"),
            ("mismatch", "name mismatch (for the SNI name)", "mismatch_n", "name_d"),
            ("sni_selects", "certificate chosen by SNI (another one without SNI)", "sni_selects_n", "sni_selects_d"),
            ("inconsistent", "sessions disagreed (backends behind one address)", "inconsistent_n", "tls_d"),
        ],
        "Rows 'chain: …' partition the addresses by trust verdict (independent of the host name). Name "
        "matching is per host name: here against the MX name sent as SNI.",
    )
    per_link = _wide_table(
        "certs.link", s, "Certificates per MX link (domain, MX host, address)", "MX links",
        "MX links whose address completed STARTTLS", Basis.ESTIMATE, q.fetch_wide(con, q.CERTS_LINK), [
            ("trusted", "chain trusted and unexpired", "trusted_n", "links_d"),
            ("self_signed", "self-signed leaf", "self_signed_n", "links_d"),
            ("expired", "expired leaf", "expired_n", "links_d"),
            ("mismatch", "name mismatch for the MX host", "mismatch_n", "name_d"),
            ("valid", "valid: trusted, unexpired and matching the MX host", "valid_n", "valid_d"),
            ("own_sni", "judged on a certificate of its own SNI session", "own_sni_n", "links_d"),
            ("sni_unchecked", "name not checked with its own SNI (cap, failed session)", "sni_unchecked_n",
             "links_d"),
        ],
        "Each link is judged on the certificate presented for SNI = its MX host (RFC 7672 §8.1, RFC 8461 §4); "
        "the chain rows above count the address's probe certificate.",
    )
    per_domain = _wide_table(
        "certs.domain", s, "Certificates per domain", "domains", "mail domains with an address that did TLS",
        Basis.ESTIMATE, q.fetch_wide(con, q.CERTS_DOMAIN),
        [("valid_all", "every TLS address presents a valid certificate for its MX", "valid_all_n", "valid_all_d")],
    )
    keys = _long_table(
        "certs.keys", s, "Leaf key type and size (top)", "addresses", "addresses that completed STARTTLS with a key",
        Basis.ESTIMATE, q.fetch_long(con, q.CERT_KEYS, TOP_LIMIT), q.fetch_scalar(con, q.CERT_KEYS_TOTAL),
    )
    signatures = _long_table(
        "certs.signatures", s, "Leaf signature algorithm (top)", "addresses",
        "addresses that completed STARTTLS with a certificate", Basis.ESTIMATE,
        q.fetch_long(con, q.CERT_SIGNATURES, TOP_LIMIT), q.fetch_scalar(con, q.CERT_SIGNATURES_TOTAL),
    )
    return per_address, per_link, per_domain, keys, signatures


def _policies(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, ...]:
    s = Section.POLICIES
    mta_sts = _wide_table(
        "policy.mta_sts", s, "MTA-STS (RFC 8461)", "domains", "mail domains whose policies were checked",
        Basis.ESTIMATE, q.fetch_wide(con, q.MTA_STS), [
            ("txt", "_mta-sts TXT record published", "txt_n", "checked_d"),
            ("active", "valid TXT and policy (a sender applies it)", "active_n", "checked_d"),
            ("enforce", "mode enforce (of active policies)", "enforce_n", "active_n"),
            ("testing", "mode testing (of active policies)", "testing_n", "active_n"),
            ("mode_none", "mode none (of active policies)", "mode_none_n", "active_n"),
            ("unmatched", "an MX matches no policy pattern (of active policies)", "unmatched_n", "active_n"),
            ("mx_fail", "an MX fails validation (of active policies)", "mx_fail_n", "active_n"),
            ("txt_no_policy", "TXT but no valid policy (of TXT domains)", "txt_no_policy_n", "txt_n"),
            ("misconfigured", "misconfigured: no valid policy, unmatched or failing MX (of TXT domains)",
             "misconfigured_n", "txt_n"),
            ("delivery_risk", "enforced policy with unmatched or failing MX (of TXT domains)",
             "delivery_risk_n", "txt_n"),
            ("max_age_lt_day", "max_age below one day (of active policies)", "max_age_lt_day_n", "max_age_d"),
            ("max_age_ge_week", "max_age of a week or more (of active policies)", "max_age_ge_week_n", "max_age_d"),
        ],
        "Policies are not checked when the scan ran with --no-policy (then every share here is n/a).",
    )
    errors = _long_table(
        "policy.mta_sts_errors", s, "MTA-STS error classes", "domains", "mail domains with an _mta-sts TXT record",
        Basis.ESTIMATE, q.fetch_long(con, q.MTA_STS_ERRORS, TOP_LIMIT), q.fetch_scalar(con, q.MTA_STS_ERRORS_TOTAL),
    )
    tlsrpt = _wide_table(
        "policy.tlsrpt", s, "TLS-RPT (RFC 8460)", "domains", "mail domains whose policies were checked",
        Basis.ESTIMATE, q.fetch_wide(con, q.TLSRPT), [
            ("valid", "valid record", "valid_n", "checked_d"),
            ("missing", "no record", "missing_n", "checked_d"),
            ("invalid", "invalid record", "invalid_n", "checked_d"),
            ("multiple", "several records", "multiple_n", "checked_d"),
            ("dns_error", "lookup failed", "dns_error_n", "checked_d"),
        ],
    )
    dane_domains = _wide_table(
        "policy.dane_domains", s, "DANE (RFC 7672) per domain", "domains", "mail domains whose policies were checked",
        Basis.ESTIMATE, q.fetch_wide(con, q.DANE_DOMAINS), [
            ("tlsa", "an MX publishes usable TLSA records", "tlsa_n", "checked_d"),
            ("valid", "DANE valid for every MX (of TLSA domains)", "valid_n", "tlsa_n"),
            ("invalid", "DANE not valid (of TLSA domains)", "invalid_n", "tlsa_n"),
            ("unknown", "unknown: DNSSEC status not reported by the resolver (of TLSA domains)", "unknown_n",
             "tlsa_n"),
            ("dane_applies", "DANE applies (an MX has an authenticated TLSA RRset, or the MX RRset is bogus)",
             "dane_applies_n", "delivery_d"),
            ("delivery_yes", "a DANE sender delivers to every MX (of DANE domains)", "delivery_yes_n",
             "dane_applies_n"),
            ("delivery_partial", "a DANE sender refuses some MX (of DANE domains)", "delivery_partial_n",
             "dane_applies_n"),
            ("delivery_no", "a DANE sender refuses every MX: mail bounces (of DANE domains)", "delivery_no_n",
             "dane_applies_n"),
            ("delivery_unknown", "whether a DANE sender delivers is unknown", "delivery_unknown_n", "delivery_d"),
            ("tlsa_unsigned", "TLSA in an unsigned zone: ignored by senders", "tlsa_unsigned_n", "checked_d"),
        ],
    )
    dane_hosts = _wide_table(
        "policy.dane_hosts", s, "DANE per MX host address", "MX host addresses",
        "distinct (MX host, address) pairs whose TLSA records were looked up", Basis.ESTIMATE,
        q.fetch_wide(con, q.DANE_HOSTS), [
            ("tlsa", "TLSA records present", "tlsa_n", "checked_d"),
            ("lookup_failed", "TLSA lookup failed", "lookup_failed_n", "checked_d"),
            ("match", "TLSA matches the chain (of compared)", "match_n", "compared_d"),
            ("no_match", "TLSA does not match (of compared)", "no_match_n", "compared_d"),
            ("ta_chain_invalid", "DANE-TA chain invalid (of compared)", "ta_chain_invalid_n", "compared_d"),
            ("name_mismatch", "name mismatch (PKIX-TA/EE usages; of compared)", "name_mismatch_n", "compared_d"),
            ("no_usable", "no usable TLSA records (of TLSA)", "no_usable_n", "tlsa_n"),
            ("no_certificate", "no certificate to compare (of TLSA)", "no_certificate_n", "tlsa_n"),
            ("dnssec_auth", "TLSA answer DNSSEC-authenticated (of TLSA)", "dnssec_auth_n", "tlsa_n"),
            ("dnssec_not_auth", "TLSA answer not authenticated (of TLSA)", "dnssec_not_auth_n", "tlsa_n"),
            ("dnssec_unknown", "DNSSEC status unknown (of TLSA)", "dnssec_unknown_n", "tlsa_n"),
        ],
        "A shared MX host counts once however many domains use it.",
    )
    return mta_sts, errors, tlsrpt, dane_domains, dane_hosts


def _grade_rows(denominator: str) -> list[RowSpec]:
    return [(g, g, f"{q.grade_column(g)}_n", denominator) for g in q.GRADE_LETTERS]


def _grades(con: duckdb.DuckDBPyConnection) -> tuple[FigureTable, ...]:
    s = Section.GRADES
    domain = _wide_table(
        "grades.domain", s, "Grade per domain (A+..F)", "domains", "graded mail domains", Basis.ESTIMATE,
        q.fetch_wide(con, q.GRADES_DOMAIN),
        [*_grade_rows("graded_d"), ("ungraded", "not graded (no MX address tested; of mail domains)",
                                     "ungraded_n", "mail_d")],
        "Rubric in schemas/grading.md: a domain gets its worst tested MX address; A+ needs an enforced MTA-STS "
        "policy or valid DANE. F means no STARTTLS.",
    )
    link = _wide_table(
        "grades.link", s, "Grade per MX link", "MX links", "graded MX links (domain, host, address)",
        Basis.ESTIMATE, q.fetch_wide(con, q.GRADES_LINK),
        [*_grade_rows("graded_d"), ("ungraded", "not graded (untested; of probed links)", "ungraded_n", "links_d")],
    )
    rules = _long_table(
        "grades.rules", s, "Rules that lowered or explain domain grades (top)", "domains", "graded mail domains",
        Basis.ESTIMATE, q.fetch_long(con, q.GRADE_RULES, TOP_LIMIT), q.fetch_scalar(con, q.GRADE_RULES_TOTAL),
    )
    forced = _wide_table(
        "grades.forced_tls", s, "Forced TLS: can a sender require TLS to the domain?", "domains", "mail domains",
        Basis.ESTIMATE, q.fetch_wide(con, q.FORCED_TLS), [
            ("safe", "safe: every MX does STARTTLS, TLS 1.2+ and a NIST suite", "safe_n", "mail_d"),
            ("unsafe", "not safe", "unsafe_n", "mail_d"),
            ("undecided", "undecided (untested addresses or unknown versions)", "undecided_n", "mail_d"),
            ("safe_decided", "safe, of domains with a verdict", "safe_n", "decided_d"),
        ],
    )
    reasons = _long_table(
        "grades.forced_tls_reasons", s, "Why forced TLS is not (known to be) safe", "domains",
        "mail domains not known to be safe", Basis.ESTIMATE, q.fetch_long(con, q.FORCED_TLS_REASONS, TOP_LIMIT),
        q.fetch_scalar(con, q.FORCED_TLS_REASONS_TOTAL),
    )
    return domain, link, rules, forced, reasons


def _providers(
    con: duckdb.DuckDBPyConnection, mapper: ProviderMapper, keep: Sequence[str] = (),
) -> tuple[FigureTable, FigureTable, tuple[ProviderRow, ...]]:
    hosts = [str(r[0]) for r in q.fetch_rows(con, q.MX_HOSTS) if r[0] is not None]
    mapping = mapper.map(hosts)
    q.register_table(con, "provider_map", {"mx_host": list(mapping), "provider": list(mapping.values())})
    q.register_table(con, "provider_keep", {"provider": list(keep)})
    cursor = con.execute(q.PROVIDERS, {"limit": max(len(keep), PROVIDERS_LIMIT)})
    names = [d[0] for d in cursor.description]
    picked = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    q.register_table(con, "provider_pick", {"provider": [str(p["provider"]) for p in picked]})
    addresses = {str(p): int(n) for p, n in q.fetch_rows(con, q.PROVIDER_ADDRESSES)}
    concentration_data = q.fetch_wide(con, q.PROVIDER_CONCENTRATION)
    mail = concentration_data["mail_d"]
    by_name = {str(p["provider"]): p for p in picked}
    rows = []
    for name in keep or list(by_name):
        p = by_name.get(name)
        if p is None:  # a baseline provider absent from this scan: zero domains
            rows.append(ProviderRow(name, Share.estimate(0, mail), 0, Share.estimate(0, 0), Share.estimate(0, 0), (),
                                    Share.estimate(0, 0)))
            continue
        n = int(p["domains_n"])
        grades = tuple(GradeCount(g, int(p[f"{q.grade_column(g)}_n"])) for g in q.GRADE_LETTERS)
        rows.append(ProviderRow(
            provider=name, domains=Share.estimate(n, mail), addresses=addresses.get(name, 0),
            starttls_all=Share.estimate(int(p["starttls_all_n"]), n),
            tls13=Share.estimate(int(p["tls13_n"]), int(p["tls_d"])),
            grades=tuple(g for g in grades if g.count), forced_tls_safe=Share.estimate(int(p["forced_n"]), n),
        ))
    shares = FigureTable(
        "providers.share", Section.PROVIDERS, "Top MX providers: share of mail domains", "domains", "mail domains",
        Basis.ESTIMATE, tuple(Figure(r.provider, r.provider, r.domains) for r in rows),
        "Provider = registered domain (Public Suffix List, ICANN section) of the domain's first MX host.",
    )
    concentration = _wide_table(
        "providers.concentration", Section.PROVIDERS, "Concentration: mail domains served by the top providers",
        "domains", "mail domains", Basis.COUNT, concentration_data, [
            ("top1", "largest provider", "top1_n", "mail_d"),
            ("top5", "top 5 providers", "top5_n", "mail_d"),
            ("top10", "top 10 providers", "top10_n", "mail_d"),
            ("top100", "top 100 providers", "top100_n", "mail_d"),
        ],
        f"Distinct providers: {concentration_data['providers_n']:,}; serving a single domain of the list: "
        f"{concentration_data['single_domain_providers_n']:,}.",
    )
    return shares, concentration, tuple(rows)


def _failures(con: duckdb.DuckDBPyConnection, domain_status: FigureTable) -> tuple[FigureTable, ...]:
    s = Section.FAILURES
    data = q.fetch_wide(con, q.DOMAIN_STATUS)
    dns_keys = ("dns_nxdomain", "dns_no_mail_host", "dns_servfail", "dns_timeout", "dns_refused", "dns_error",
                "mx_no_address", "internal_error")
    dns = _wide_table(
        "failures.dns", s, "DNS failures by class (domains)", "domains",
        "domains looked up (not invalid, duplicate or excluded)", Basis.ESTIMATE, data,
        [(k, domain_status.figure(k).label, f"{k}_n", "looked_up_d") for k in dns_keys],
    )
    hosts = _long_table(
        "failures.hosts", s, "MX host resolution failures by class", "MX host names", "distinct MX host names",
        Basis.ESTIMATE, q.fetch_long(con, q.HOST_FAILURES, TOP_LIMIT), q.fetch_scalar(con, q.HOST_FAILURES_TOTAL),
    )
    probes = _long_table(
        "failures.probes", s, "Probe outcomes other than STARTTLS / no STARTTLS, by status and failure class",
        "addresses", "all probes", Basis.ESTIMATE, q.fetch_long(con, q.PROBE_FAILURES, TOP_LIMIT),
        q.fetch_scalar(con, q.PROBE_FAILURES_TOTAL),
        "Timeouts, 421 and refused connections are recorded as such, never as 'no STARTTLS'.",
    )
    return dns, hosts, probes


def _comparisons(funnel: FigureTable, decided: FigureTable, dane: FigureTable) -> tuple[Comparison, ...]:
    """Our figures beside the published ones of ``scanner.report.published`` (verified citations only:
    certificates and MTA-STS have no such figure, so no comparison)."""
    def ours(table: FigureTable, key: str, label: str) -> Figure:
        return Figure(f"{table.key}.{key}", label, table.get(key))

    dane_mismatch = Share.estimate(dane.get("match").denominator - dane.get("match").numerator,
                                   dane.get("match").denominator)
    auth, not_auth = dane.get("dnssec_auth").numerator, dane.get("dnssec_not_auth").numerator
    return (
        Comparison("starttls", "STARTTLS support: ours vs published", (
            ours(funnel, "tls_ok_definitive", "addresses completing STARTTLS, of addresses that answered"),
            ours(decided, "all", "mail domains with STARTTLS on every MX, of domains with a verdict"),
        ), published.STARTTLS),
        Comparison("dane", "DANE: ours vs published", (
            Figure("policy.dane_hosts.not_matching", "MX host addresses whose TLSA does not match, of compared",
                   dane_mismatch),
            Figure("policy.dane_hosts.not_authenticated",
                   "TLSA answers not DNSSEC-authenticated, of those with a known status",
                   Share.estimate(not_auth, auth + not_auth)),
        ), published.DANE, "Our unit is an MX host address, theirs a TLSA record."),
        Comparison("injection", "STARTTLS command injection: ours vs published", (
            ours(funnel, "plaintext_after_starttls", "addresses sending bytes after the 220 to STARTTLS"),
        ), published.INJECTION),
    )


# --- baseline --------------------------------------------------------------------------------------


def _figure_map(report: Report) -> dict[tuple[str, str], Figure]:
    return {(t.key, f.key): f for t in report.tables() for f in t.figures}


def _deltas(old: Report, new: Report) -> tuple[Delta, ...]:
    old_map, new_map = _figure_map(old), _figure_map(new)
    keys = list(new_map) + [k for k in old_map if k not in new_map]
    return tuple(
        Delta(table, fig, (new_map.get((table, fig)) or old_map[(table, fig)]).label,
              old_map[(table, fig)].share if (table, fig) in old_map else None,
              new_map[(table, fig)].share if (table, fig) in new_map else None)
        for table, fig in keys
    )


def _domain_changes(new_dir: Path, old_dir: Path) -> tuple[tuple[DomainChange, ...], dict[str, int]]:
    con = duckdb.connect()
    try:
        q.open_dataset(con, new_dir)
        q.open_dataset(con, old_dir, prefix="old_")
        rows = q.fetch_rows(con, q.CHANGED_DOMAINS, {"limit": CHANGES_LIMIT})
        counts = q.fetch_wide(con, q.CHANGED_DOMAINS_COUNTS)
    finally:
        con.close()
    changes = tuple(
        DomainChange(str(domain), old_grade, new_grade, old_starttls, new_starttls, bool(in_old), bool(in_new))
        for domain, old_grade, new_grade, old_starttls, new_starttls, in_old, in_new in rows
    )
    return changes, counts


def _baseline(
    new: Report, old: Report, new_dir: Path, old_dir: Path, differences: Sequence[str] = (),
) -> BaselineDiff:
    changes, counts = _domain_changes(new_dir, old_dir)
    versions_old, versions_new = old.scan.grading_versions, new.scan.grading_versions
    return BaselineDiff(
        out_dir=str(old_dir), scan_id=old.scan.scan_id, started_at=old.scan.started_at,
        grading_versions=versions_old,
        comparable_grades=len(versions_old) <= 1 and len(versions_new) <= 1 and versions_old == versions_new,
        deltas=_deltas(old, new), changes=changes, changes_total=counts["total"], changes_limit=CHANGES_LIMIT,
        grade_changes=counts["grade_changes"], starttls_changes=counts["starttls_changes"],
        settings_differences=tuple(differences),
    )


# --- drill-down ------------------------------------------------------------------------------------


def _open_drill(con: duckdb.DuckDBPyConnection, out_dir: Path, changed: Sequence[str]) -> None:
    q.open_dataset(con, out_dir)
    q.register_table(con, "drill_changed", {"domain": list(changed)})
    con.execute(q.CREATE_DRILL)


def domain_drill(out_dir: Path, changed: Sequence[str], limit: int) -> DomainDrill:
    """The domains shown inline (failing, changed, then a sample) and how many the sidecar holds."""
    con = duckdb.connect()
    try:
        _open_drill(con, out_dir, changed)
        rows = q.fetch_rows(con, q.DRILL_INLINE, {"limit": limit})
        total = q.fetch_scalar(con, q.DRILL_TOTAL)
    finally:
        con.close()
    inline = tuple(DomainLine(str(d), g, tuple(r or ()), str(s), str(m), str(w)) for d, g, r, s, m, w in rows)
    rest = total - len(inline)
    return DomainDrill(inline, total, DOMAINS_SIDECAR if rest else "", rest)


def write_domains_sidecar(out_dir: Path, drill: DomainDrill, dest: Path) -> Path | None:
    """Write the domains of ``out_dir`` not shown inline (``drill.inline``) as JSON Lines beside the report
    (``drill.sidecar``), streamed by DuckDB so a million-domain scan needs no memory for it. None when every
    domain is inline."""
    if not drill.sidecar:
        return None
    path = Path(dest) / drill.sidecar
    tmp = path.with_name(f".{path.name}.tmp")
    con = duckdb.connect()
    try:
        _open_drill(con, out_dir, ())
        q.register_table(con, "drill_inline", {"domain": [line.domain for line in drill.inline]})
        con.execute(f"COPY ({q.DRILL_REST}) TO {q.sql_string(str(tmp))} (FORMAT JSON)")
    finally:
        con.close()
    tmp.replace(path)
    return path


# --- entry point -----------------------------------------------------------------------------------


def _build(
    out_dir: Path, mapper: ProviderMapper, keep_providers: Sequence[str] = (), drill_inline: int = DRILL_INLINE_LIMIT,
) -> Report:
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        q.open_dataset(con, out_dir)
        scan = _scan_info(con, out_dir)
        status, inventory, funnel = _funnel(con)
        starttls, decided = _starttls(con)
        v_address, v_domain, support = _versions(con)
        suites, preferred = _suites(con)
        key_exchange, groups = _key_exchange(con)
        c_address, c_link, c_domain, keys, sigs = _certificates(con)
        mta_sts, mta_errors, tlsrpt, dane_domains, dane_hosts = _policies(con)
        g_domain, g_link, rules, forced, reasons = _grades(con)
        p_shares, p_concentration, providers = _providers(con, mapper, keep_providers)
        dns, hosts, probe_failures = _failures(con, status)
    finally:
        con.close()
    return Report(
        scan=scan, domain_status=status, inventory=inventory, probe_funnel=funnel, starttls=starttls,
        starttls_decided=decided, versions_address=v_address, versions_domain=v_domain, version_support=support,
        suites=suites, preferred_suites=preferred, key_exchange=key_exchange, groups=groups,
        certs_address=c_address, certs_link=c_link, certs_domain=c_domain,
        cert_keys=keys, cert_signatures=sigs, mta_sts=mta_sts, mta_sts_errors=mta_errors, tlsrpt=tlsrpt,
        dane_domains=dane_domains, dane_hosts=dane_hosts, grades_domain=g_domain, grades_link=g_link,
        grade_rules=rules, forced_tls=forced, forced_tls_reasons=reasons, provider_shares=p_shares,
        provider_concentration=p_concentration, providers=providers, dns_failures=dns, host_failures=hosts,
        probe_failures=probe_failures,
        comparisons=_comparisons(funnel, decided, dane_hosts),
        baseline=None, drill=domain_drill(out_dir, (), drill_inline),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=time.perf_counter() - started,
    )


def _build_checked(out_dir: Path, mapper: ProviderMapper, keep_providers: Sequence[str] = (),
                   drill_inline: int = DRILL_INLINE_LIMIT) -> Report:
    """``_build``, with DuckDB's failures on a damaged part (bad pages behind a good footer, a column
    of another type) turned into one ``ReportError`` line."""
    try:
        return _build(out_dir, mapper, keep_providers, drill_inline=drill_inline)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise q.ReportError(f"cannot read the dataset in {out_dir}: {first}") from exc


def build_report(
    out_dir: Path, *, baseline: Path | None = None, allow_different_settings: bool = False,
    drill_inline: int = DRILL_INLINE_LIMIT,
) -> Report:
    """Every figure of the population report for the scan in ``out_dir``.

    With ``baseline`` (an older scan's output directory): each figure's change with its 95 % Newcombe
    interval, the baseline's shares of this scan's top providers, and the domains whose grade or STARTTLS
    verdict changed. Scans with different verdict-relevant settings raise ``SettingsMismatchError``
    unless ``allow_different_settings`` (then the differences are carried in the report).
    The per-domain drill-down lists at most ``drill_inline`` domains inline (failing, changed, sampled);
    ``write_domains_sidecar`` writes the others beside the page.
    Raises ``ReportError`` when a directory holds no scan tables or a part file is damaged or foreign.
    """
    started = time.perf_counter()
    differences = () if baseline is None else check_comparable(
        Path(out_dir), Path(baseline), allow_different=allow_different_settings)
    mapper = ProviderMapper()
    report = _build_checked(Path(out_dir), mapper, drill_inline=drill_inline)
    if baseline is None:
        return report
    old = _build_checked(Path(baseline), mapper, [r.provider for r in report.providers], drill_inline=0)
    diff = _baseline(report, old, Path(out_dir), Path(baseline), differences)
    drill = domain_drill(Path(out_dir), [c.domain for c in diff.changes], drill_inline)
    return replace(report, baseline=diff, drill=drill, build_seconds=time.perf_counter() - started)
