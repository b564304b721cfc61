"""The report's SQL, kept as named constants, and the few helpers that run it on DuckDB.

Every query reads the views ``domains``, ``mx``, ``probes`` and ``run`` that ``open_dataset`` creates
over a scan's Parquet part files. Most queries are *wide*: one row whose columns are counts named
``<what>_n`` (numerators) and ``<what>_d`` (denominators), so that a category with no row still has a
count of 0. Open-ended categories (failure classes, suites, providers) are *long*: ``(key, n)`` rows
and a separate denominator.

Conventions shared by the queries (also stated in the report's "Definitions"):

* mail domain: a ``domains`` row with ``status = 'ok'`` (its MX, or implicit MX, has an address);
* TLS address: a ``probes`` row with ``tls_ok`` (STARTTLS accepted and the handshake completed);
* enumerated address: ``enum_mode IS NOT NULL`` (crafted hellos ran after STARTTLS was accepted);
* highest version of an address: ``preferred_version`` (enumeration), else the negotiated
  ``tls_version``; the highest version of a *domain* is the lowest of its TLS addresses' highest
  versions, i.e. what a sender reaches whichever MX address it picks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

from scanner.exit_codes import ExitCode
from scanner.grading import Grade, RuleCode
from scanner.output.arrow_schema import arrow_schema
from scanner.output.parquet import part_problem
from scanner.output.rows import TABLES
from scanner.status import (
    CertSource,
    DaneDelivery,
    DaneVerdict,
    DnssecStatus,
    DomainStatus,
    HostStatus,
    MxSource,
    NameMatch,
    Phase,
    ProbeStatus,
    StarttlsVerdict,
    StsMode,
    TlsRptStatus,
    TrustStatus,
)
from scanner.tls.ciphers import WeakClass
from scanner.tls.enumeration import VersionVerdict
from scanner.tls.versions import VersionName

__all__ = [
    "DEFINITIVE_PROBE_STATUSES",
    "ReportError",
    "fetch_long",
    "fetch_rows",
    "fetch_scalar",
    "fetch_wide",
    "grade_column",
    "lit",
    "lits",
    "open_dataset",
    "register_table",
    "sql_string",
]


class ReportError(Exception):
    """The directory is not a readable scan dataset, or the report cannot be written.

    ``exit_code``: ``NO_INPUT`` (no such directory, no tables in it), ``DATA_ERROR`` (a part file is
    unreadable or is not one of our tables), ``CANT_CREATE`` (the destination cannot be written).
    """

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.DATA_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Every closed-set value in this SQL comes from its enum, never a literal: a renamed or removed value
# fails at import instead of silently counting nothing.
def lit(member: Enum) -> str:
    """One closed-set value as an SQL string literal."""
    return sql_string(str(member.value))


def lits(*members: Enum) -> str:
    """Closed-set values as a parenthesised SQL list, for ``IN``."""
    return "(" + ", ".join(lit(m) for m in members) + ")"


# Probe statuses that answer "does this address do STARTTLS?" (scanner.status.ProbeStatus.is_definitive).
DEFINITIVE_PROBE_STATUSES: Final = tuple(s.value for s in ProbeStatus if s.is_definitive)
_DEFINITIVE_SQL: Final = ", ".join(lit(s) for s in ProbeStatus if s.is_definitive)

# Rank of a protocol version string as written by the scanner (VersionName: SSLv3 = 1 ... TLSv1.3 = 5).
VERSION_RANK_SQL: Final = (
    "CASE {0} "
    + " ".join(f"WHEN {lit(v)} THEN {rank}" for rank, v in reversed(list(enumerate(VersionName, start=1))))
    + " ELSE 0 END"
)
_HIGHEST_VERSION: Final = "coalesce(preferred_version, tls_version)"
# A version verdict that answers the question (accepted or refused), not untested or garbled.
_VERSION_ANSWERED: Final = "IN " + lits(*(v for v in VersionVerdict if v.supported is not None))
_LEGACY_VERSIONS: Final = "[" + ", ".join(lit(v) for v in (VersionName.SSL3, VersionName.TLS10,
                                                             VersionName.TLS11)) + "]"

# Fragments shared by several queries.
_OK: Final = lit(DomainStatus.OK)  # a mail domain (see the module docstring)
_DUPLICATE: Final = lit(DomainStatus.DUPLICATE)
_NOT_LOOKED_UP: Final = lits(DomainStatus.INVALID_INPUT, DomainStatus.DUPLICATE, DomainStatus.EXCLUDED)
_SKIPPED: Final = lits(ProbeStatus.SKIPPED_RESERVED_ADDRESS, ProbeStatus.SKIPPED_EXCLUDED)
_DECIDED: Final = lits(StarttlsVerdict.ALL, StarttlsVerdict.SOME, StarttlsVerdict.NONE)
_NOT_COVERED: Final = lit(StarttlsVerdict.NOT_COVERED)
_SNI_UNCHECKED: Final = lits(CertSource.NOT_CHECKED, CertSource.SESSION_FAILED)
_DANE_APPLIES: Final = lits(DaneDelivery.YES, DaneDelivery.PARTIAL, DaneDelivery.NO)
_NO_TLSA: Final = lits(DaneVerdict.NO_RECORDS, DaneVerdict.LOOKUP_FAILED, DaneVerdict.NAME_TOO_LONG)
_COMPARED: Final = lits(DaneVerdict.MATCH, DaneVerdict.NO_MATCH, DaneVerdict.TA_CHAIN_INVALID,
                        DaneVerdict.NAME_MISMATCH)
_FAILING_STARTTLS: Final = lits(StarttlsVerdict.NONE, StarttlsVerdict.SOME, StarttlsVerdict.INCOMPLETE)
_FAILING_GRADES: Final = lits(Grade.E, Grade.F)
_DNSSEC_UNKNOWN: Final = lit(DnssecStatus.UNKNOWN)
_TLSA_UNSIGNED: Final = lit(RuleCode.DANE_TLSA_UNSIGNED)

# --- scan ------------------------------------------------------------------------------------------

SCAN_INFO: Final = """
SELECT arg_max(scan_id, finished_at) AS scan_id,
       arg_max(tool_version, finished_at) AS tool_version,
       arg_max(schema_version, finished_at) AS schema_version,
       epoch(min(started_at)) AS started,
       epoch(max(finished_at)) AS finished,
       count(*) AS attempts,
       arg_max(completed, finished_at) AS completed,
       arg_max(input, finished_at) AS input,
       arg_max(config_json, finished_at) AS config_json,
       coalesce(sum(dns_queries), 0) AS dns_queries
FROM run
"""

# Address families probed (schema >= 7): every attempt of the scan must have reached the family.
FAMILIES: Final = """
SELECT bool_and(ipv4_reachable) AS ipv4, bool_and(ipv6_reachable) AS ipv6 FROM run
"""

GRADING_VERSIONS: Final = """
SELECT DISTINCT grading_version FROM domains WHERE grading_version IS NOT NULL ORDER BY 1
"""

TABLE_ROWS: Final = "SELECT (SELECT count(*) FROM domains) AS domains, (SELECT count(*) FROM probes) AS probes"

# --- funnel ----------------------------------------------------------------------------------------

DOMAIN_STATUS: Final = f"""
SELECT count(*) AS lines_d,
       count(*) FILTER (WHERE status = {_OK}) AS ok_n,
       count(*) FILTER (WHERE status = {_OK} AND mx_source = {lit(MxSource.MX)}) AS ok_mx_n,
       count(*) FILTER (WHERE status = {_OK} AND mx_source = {lit(MxSource.IMPLICIT)}) AS ok_implicit_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.INVALID_INPUT)}) AS invalid_input_n,
       count(*) FILTER (WHERE status = {_DUPLICATE}) AS duplicate_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.EXCLUDED)}) AS excluded_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.NULL_MX)}) AS null_mx_n,
       count(*) FILTER (WHERE null_mx_mixed) AS null_mx_mixed_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_NXDOMAIN)}) AS dns_nxdomain_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_NO_MAIL_HOST)}) AS dns_no_mail_host_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_SERVFAIL)}) AS dns_servfail_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_TIMEOUT)}) AS dns_timeout_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_REFUSED)}) AS dns_refused_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.DNS_ERROR)}) AS dns_error_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.MX_NO_ADDRESS)}) AS mx_no_address_n,
       count(*) FILTER (WHERE status = {lit(DomainStatus.INTERNAL_ERROR)}) AS internal_error_n,
       count(*) FILTER (WHERE status NOT IN {_NOT_LOOKED_UP}) AS looked_up_d
FROM domains
"""

INVENTORY: Final = """
SELECT (SELECT count(DISTINCT mx_host) FROM mx) AS hosts_n,
       (SELECT count(DISTINCT mx_host) FROM mx WHERE len(host_cnames) > 0) AS hosts_cname_n,
       count(DISTINCT address) AS addresses_d,
       count(DISTINCT address) FILTER (WHERE ip_version = 4) AS ipv4_n,
       count(DISTINCT address) FILTER (WHERE ip_version = 6) AS ipv6_n,
       (SELECT count(*) FROM probes) AS probes_n
FROM mx WHERE address IS NOT NULL
"""

PROBE_FUNNEL: Final = f"""
WITH p AS (SELECT * FROM probes WHERE status NOT IN {_SKIPPED})
SELECT (SELECT count(*) FROM probes) AS probes_d,
       (SELECT count(*) FROM probes WHERE status IN {_SKIPPED}) AS skipped_n,
       count(*) AS attempted_d,
       count(*) FILTER (WHERE coalesce(failure_phase, '') NOT IN {lits(Phase.ADDRESS, Phase.CONNECT)}) AS connected_n,
       count(*) FILTER (WHERE banner_code = 220) AS banner_220_n,
       count(*) FILTER (WHERE starttls_advertised IS NOT NULL) AS ehlo_n,
       count(*) FILTER (WHERE starttls_advertised) AS advertised_n,
       count(*) FILTER (WHERE starttls_code = 220) AS starttls_220_n,
       count(*) FILTER (WHERE tls_ok) AS tls_ok_n,
       count(*) FILTER (WHERE status IN ({_DEFINITIVE_SQL})) AS definitive_d,
       count(*) FILTER (WHERE plaintext_after_starttls) AS plaintext_n
FROM p
"""

# --- STARTTLS --------------------------------------------------------------------------------------

STARTTLS_DOMAINS: Final = f"""
SELECT count(*) AS mail_d,
       count(*) FILTER (WHERE starttls = {lit(StarttlsVerdict.ALL)}) AS all_n,
       count(*) FILTER (WHERE starttls = {lit(StarttlsVerdict.SOME)}) AS some_n,
       count(*) FILTER (WHERE starttls = {lit(StarttlsVerdict.NONE)}) AS none_n,
       count(*) FILTER (WHERE starttls = {lit(StarttlsVerdict.INCOMPLETE)}) AS incomplete_n,
       count(*) FILTER (WHERE starttls = {_NOT_COVERED}) AS not_covered_n,
       count(*) FILTER (WHERE not_covered_count > 0 AND starttls <> {_NOT_COVERED}) AS partly_covered_n,
       count(*) FILTER (WHERE starttls_any) AS any_n,
       count(*) FILTER (WHERE starttls IN {_DECIDED}) AS decided_d
FROM domains WHERE status = {_OK}
"""

# --- versions and suites ---------------------------------------------------------------------------

VERSIONS_ADDRESS: Final = f"""
SELECT count(*) AS tls_d,
       count(*) FILTER (WHERE {_HIGHEST_VERSION} = {lit(VersionName.TLS13)}) AS tls13_n,
       count(*) FILTER (WHERE {_HIGHEST_VERSION} = {lit(VersionName.TLS12)}) AS tls12_n,
       count(*) FILTER (WHERE {_HIGHEST_VERSION} = {lit(VersionName.TLS11)}) AS tls11_n,
       count(*) FILTER (WHERE {_HIGHEST_VERSION} = {lit(VersionName.TLS10)}) AS tls10_n,
       count(*) FILTER (WHERE {_HIGHEST_VERSION} = {lit(VersionName.SSL3)}) AS ssl3_n,
       count(*) FILTER (WHERE {VERSION_RANK_SQL.format(_HIGHEST_VERSION)} = 0) AS unknown_n
FROM probes WHERE tls_ok
"""

# Per domain: the lowest "highest version" over its TLS addresses (see the module docstring).
CREATE_DOMAIN_VERSION: Final = f"""
CREATE OR REPLACE TEMP TABLE domain_version AS
WITH addr AS (
    SELECT probe_id, {VERSION_RANK_SQL.format(_HIGHEST_VERSION)} AS r FROM probes WHERE tls_ok
)
SELECT l.domain, min(a.r) AS r
FROM (SELECT DISTINCT domain, probe_id FROM mx WHERE probe_id IS NOT NULL) l JOIN addr a USING (probe_id)
GROUP BY l.domain
"""

VERSIONS_DOMAIN: Final = f"""
SELECT count(*) AS tls_d,
       count(*) FILTER (WHERE r = 5) AS tls13_n,
       count(*) FILTER (WHERE r = 4) AS tls12_n,
       count(*) FILTER (WHERE r = 3) AS tls11_n,
       count(*) FILTER (WHERE r = 2) AS tls10_n,
       count(*) FILTER (WHERE r = 1) AS ssl3_n,
       count(*) FILTER (WHERE r = 0) AS unknown_n
FROM domain_version v JOIN domains d USING (domain) WHERE d.status = {_OK}
"""

VERSION_SUPPORT: Final = "SELECT " + ",\n       ".join(
    f"count(*) FILTER (WHERE ver_{v} = {lit(VersionVerdict.ACCEPTED)}) AS {v}_n, "
    f"count(*) FILTER (WHERE ver_{v} {_VERSION_ANSWERED}) AS {v}_d"
    for v in ("ssl3", "tls1_0", "tls1_1", "tls1_2", "tls1_3")
) + f""",
       count(*) FILTER (WHERE list_has_any(versions_accepted, {_LEGACY_VERSIONS})) AS legacy_n,
       count(*) FILTER (WHERE versions_accepted IS NOT NULL AND enum_complete) AS legacy_d
FROM probes WHERE enum_mode IS NOT NULL
"""

WEAK_CLASSES: Final = tuple(c.value for c in WeakClass)
# Tiers of schemas/grading.md §4 "Hit details" (insecure / obsolete / 64-bit block).
WEAK_TIERS: Final[Mapping[str, tuple[str, ...]]] = {
    tier: tuple(c.value for c in classes) for tier, classes in (
        ("insecure", (WeakClass.NULL, WeakClass.ANON, WeakClass.EXPORT, WeakClass.DES, WeakClass.RC2,
                      WeakClass.LOW_BITS)),
        ("obsolete", (WeakClass.RC4, WeakClass.MD5)),
        ("block64", (WeakClass.TRIPLE_DES, WeakClass.IDEA)),
    )
}

SUITES: Final = (
    "SELECT count(*) FILTER (WHERE weak_classes IS NOT NULL) AS weak_d,\n"
    "       count(*) FILTER (WHERE len(weak_classes) > 0) AS weak_any_n,\n"
    "       count(*) FILTER (WHERE weak_classes IS NOT NULL AND NOT coalesce(weak_complete, false))"
    " AS weak_partial_n,\n"
    + "".join(
        f"       count(*) FILTER (WHERE list_has_any(weak_classes, {list(members)!r})) AS tier_{tier}_n,\n"
        for tier, members in WEAK_TIERS.items()
    )
    + "".join(
        f"       count(*) FILTER (WHERE list_contains(weak_classes, '{c}')) AS class_{c}_n,\n" for c in WEAK_CLASSES
    )
    + """       count(*) FILTER (WHERE nist_r1) AS nist_r1_n, count(nist_r1) AS nist_r1_d,
       count(*) FILTER (WHERE nist_r2) AS nist_r2_n, count(nist_r2) AS nist_r2_d,
       count(*) FILTER (WHERE nist_r1 OR nist_r2) AS nist_any_n,
       count(*) FILTER (WHERE nist_r1 IS NOT NULL OR nist_r2 IS NOT NULL) AS nist_any_d,
       count(*) FILTER (WHERE server_order) AS server_order_n, count(server_order) AS server_order_d
FROM probes WHERE enum_mode IS NOT NULL
"""
)

PREFERRED_SUITES: Final = """
SELECT preferred_suite AS key, count(*) AS n
FROM probes WHERE tls_ok AND preferred_suite IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
PREFERRED_SUITES_TOTAL: Final = "SELECT count(*) FROM probes WHERE tls_ok AND preferred_suite IS NOT NULL"

# --- key exchange and protocol hygiene (probe columns of schema 7) ----------------------------------

# DH size classes as in scanner.tls.groups.DhSizeClass; the common-prime row uses the published names.
KEY_EXCHANGE: Final = """
SELECT count(*) FILTER (WHERE dhe_accepted IS NOT NULL OR dh_bits IS NOT NULL) AS dh_d,
       count(*) FILTER (WHERE dh_bits IS NULL AND dhe_accepted = false) AS dh_none_n,
       count(*) FILTER (WHERE dh_bits < 1024) AS dh_below_1024_n,
       count(*) FILTER (WHERE dh_bits = 1024) AS dh_1024_n,
       count(*) FILTER (WHERE dh_bits > 1024 AND dh_bits < 2048) AS dh_below_2048_n,
       count(*) FILTER (WHERE dh_bits = 2048) AS dh_2048_n,
       count(*) FILTER (WHERE dh_bits > 2048) AS dh_above_2048_n,
       count(*) FILTER (WHERE dh_bits <= 1024 AND dh_group IS NOT NULL) AS dh_common_n,
       count(*) FILTER (WHERE dh_group IS NOT NULL) AS dh_published_n,
       count(*) FILTER (WHERE NOT secure_renegotiation) AS no_reneg_n, count(secure_renegotiation) AS reneg_d,
       count(*) FILTER (WHERE tls_compression) AS compression_n, count(tls_compression) AS compression_d,
       count(*) FILTER (WHERE NOT extended_master_secret) AS no_ems_n, count(extended_master_secret) AS ems_d,
       count(*) FILTER (WHERE encrypt_then_mac) AS etm_n, count(encrypt_then_mac) AS etm_d,
       count(*) FILTER (WHERE heartbeat) AS heartbeat_n, count(heartbeat) AS heartbeat_d,
       count(*) FILTER (WHERE ocsp_stapling) AS ocsp_n, count(ocsp_stapling) AS ocsp_d,
       count(*) FILTER (WHERE fallback_scsv) AS fallback_n, count(fallback_scsv) AS fallback_d,
       count(*) FILTER (WHERE kx_groups_complete AND len(kx_groups) > 0
                        AND list_has_all($deprecated, kx_groups)) AS only_deprecated_n,
       -- decided: a complete list, or one with a curve RFC 8422 does not deprecate (posture mode stops there)
       count(*) FILTER (WHERE kx_groups_complete OR (len(kx_groups) > 0
                        AND NOT list_has_all($deprecated, kx_groups))) AS groups_decided_d
FROM probes WHERE enum_mode IS NOT NULL
"""

GROUPS: Final = """
SELECT g AS key, count(*) AS n
FROM (SELECT unnest(kx_groups) AS g FROM probes WHERE enum_mode IS NOT NULL AND kx_groups IS NOT NULL)
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
GROUPS_TOTAL: Final = "SELECT count(*) FROM probes WHERE enum_mode IS NOT NULL AND len(kx_groups) > 0"

# --- certificates ----------------------------------------------------------------------------------

CERTS_ADDRESS: Final = f"""
WITH sni_match AS (
    SELECT probe_id, mx_host, any_value(cert_name_match) AS name_match
    FROM mx WHERE probe_id IS NOT NULL GROUP BY ALL
)
SELECT count(*) AS tls_d,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.TRUSTED)}) AS trusted_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.SELF_SIGNED)}) AS trust_self_signed_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.UNKNOWN_ISSUER)}) AS unknown_issuer_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.EXPIRED)}) AS trust_expired_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.INVALID_CHAIN)}) AS invalid_chain_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.NO_CERTIFICATE)}) AS no_certificate_n,
       count(*) FILTER (WHERE cert_trust = {lit(TrustStatus.PARSE_ERROR)}) AS parse_error_n,
       count(*) FILTER (WHERE cert_self_signed) AS self_signed_n, count(cert_self_signed) AS self_signed_d,
       count(*) FILTER (WHERE cert_expired) AS expired_n, count(cert_expired) AS expired_d,
       count(*) FILTER (WHERE cert_not_yet_valid) AS not_yet_valid_n,
       count(*) FILTER (WHERE cert_days_to_expiry BETWEEN 0 AND 30) AS expiring_30d_n,
       count(cert_days_to_expiry) AS days_d,
       count(*) FILTER (WHERE s.name_match = {lit(NameMatch.MISMATCH)}) AS mismatch_n, count(s.name_match) AS name_d,
       count(*) FILTER (WHERE p.sni_selects_certificate) AS sni_selects_n,
       count(p.sni_selects_certificate) AS sni_selects_d,
       count(*) FILTER (WHERE len(p.inconsistent_facts) > 0) AS inconsistent_n
FROM probes p LEFT JOIN sni_match s ON s.probe_id = p.probe_id AND s.mx_host = p.sni
WHERE p.tls_ok
"""

CERTS_LINK: Final = f"""
SELECT count(*) AS links_d,
       count(*) FILTER (WHERE p.cert_trust = {lit(TrustStatus.TRUSTED)}) AS trusted_n,
       count(*) FILTER (WHERE p.cert_self_signed) AS self_signed_n,
       count(*) FILTER (WHERE p.cert_expired) AS expired_n,
       count(*) FILTER (WHERE m.cert_name_match = {lit(NameMatch.MISMATCH)}) AS mismatch_n,
       count(m.cert_name_match) AS name_d,
       count(*) FILTER (WHERE m.cert_valid) AS valid_n, count(m.cert_valid) AS valid_d,
       count(*) FILTER (WHERE m.cert_source = {lit(CertSource.OWN_SNI)}) AS own_sni_n,
       count(*) FILTER (WHERE m.cert_source IN {_SNI_UNCHECKED}) AS sni_unchecked_n
FROM mx m JOIN probes p USING (probe_id)
WHERE p.tls_ok
"""

CERTS_DOMAIN: Final = f"""
SELECT count(*) FILTER (WHERE certs_valid_all) AS valid_all_n, count(certs_valid_all) AS valid_all_d
FROM domains WHERE status = {_OK}
"""

CERT_KEYS: Final = """
SELECT cert_key_type || coalesce(' ' || cert_key_bits, '') AS key, count(*) AS n
FROM probes WHERE tls_ok AND cert_key_type IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
CERT_KEYS_TOTAL: Final = "SELECT count(*) FROM probes WHERE tls_ok AND cert_key_type IS NOT NULL"

CERT_SIGNATURES: Final = """
SELECT cert_signature_algorithm AS key, count(*) AS n
FROM probes WHERE tls_ok AND cert_signature_algorithm IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
CERT_SIGNATURES_TOTAL: Final = "SELECT count(*) FROM probes WHERE tls_ok AND cert_signature_algorithm IS NOT NULL"

# --- policies --------------------------------------------------------------------------------------

# Only domains whose policies were checked (mta_sts_txt is null when the scan ran with --no-policy).
MTA_STS: Final = f"""
SELECT count(*) AS checked_d,
       count(*) FILTER (WHERE mta_sts_txt) AS txt_n,
       count(*) FILTER (WHERE mta_sts_active) AS active_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_mode = {lit(StsMode.ENFORCE)}) AS enforce_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_mode = {lit(StsMode.TESTING)}) AS testing_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_mode = {lit(StsMode.NONE)}) AS mode_none_n,
       count(*) FILTER (WHERE mta_sts_active AND len(mta_sts_unmatched_mx) > 0) AS unmatched_n,
       count(*) FILTER (WHERE mta_sts_active AND len(mta_sts_mx_fail) > 0) AS mx_fail_n,
       count(*) FILTER (WHERE mta_sts_txt AND NOT coalesce(mta_sts_active, false)) AS txt_no_policy_n,
       count(*) FILTER (WHERE mta_sts_txt AND (NOT coalesce(mta_sts_active, false)
                         OR len(mta_sts_unmatched_mx) > 0 OR len(mta_sts_mx_fail) > 0)) AS misconfigured_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_mode = {lit(StsMode.ENFORCE)}
                         AND (len(mta_sts_unmatched_mx) > 0 OR len(mta_sts_mx_fail) > 0)) AS delivery_risk_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_max_age < 86400) AS max_age_lt_day_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_max_age >= 604800) AS max_age_ge_week_n,
       count(*) FILTER (WHERE mta_sts_active AND mta_sts_max_age IS NOT NULL) AS max_age_d
FROM domains WHERE status = {_OK} AND mta_sts_txt IS NOT NULL
"""

MTA_STS_ERRORS: Final = f"""
SELECT error AS key, count(DISTINCT domain) AS n
FROM (SELECT domain, unnest(mta_sts_errors) AS error FROM domains WHERE status = {_OK} AND mta_sts_txt)
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
MTA_STS_ERRORS_TOTAL: Final = f"SELECT count(*) FROM domains WHERE status = {_OK} AND mta_sts_txt"

TLSRPT: Final = f"""
SELECT count(*) AS checked_d,
       count(*) FILTER (WHERE tlsrpt_status = {lit(TlsRptStatus.VALID)}) AS valid_n,
       count(*) FILTER (WHERE tlsrpt_status = {lit(TlsRptStatus.MISSING)}) AS missing_n,
       count(*) FILTER (WHERE tlsrpt_status = {lit(TlsRptStatus.INVALID)}) AS invalid_n,
       count(*) FILTER (WHERE tlsrpt_status = {lit(TlsRptStatus.MULTIPLE)}) AS multiple_n,
       count(*) FILTER (WHERE tlsrpt_status = {lit(TlsRptStatus.DNS_ERROR)}) AS dns_error_n
FROM domains WHERE status = {_OK} AND tlsrpt_status IS NOT NULL
"""

# Would a DANE sender deliver (dane_delivery): over every domain that has the verdict, including those
# whose MX RRset is DNSSEC-bogus (status dns_bogus), which no validating sender can reach.
DANE_DOMAINS: Final = f"""
SELECT count(*) FILTER (WHERE status = {_OK}) AS checked_d,
       count(*) FILTER (WHERE status = {_OK} AND dane_mx_with_tlsa > 0) AS tlsa_n,
       count(*) FILTER (WHERE status = {_OK} AND dane_mx_with_tlsa > 0 AND dane_valid) AS valid_n,
       count(*) FILTER (WHERE status = {_OK} AND dane_mx_with_tlsa > 0 AND NOT dane_valid) AS invalid_n,
       count(*) FILTER (WHERE status = {_OK} AND dane_mx_with_tlsa > 0 AND dane_valid IS NULL) AS unknown_n,
       count(*) FILTER (WHERE dane_delivery IS NOT NULL) AS delivery_d,
       count(*) FILTER (WHERE dane_delivery IN {_DANE_APPLIES}) AS dane_applies_n,
       count(*) FILTER (WHERE dane_delivery = {lit(DaneDelivery.YES)}) AS delivery_yes_n,
       count(*) FILTER (WHERE dane_delivery = {lit(DaneDelivery.PARTIAL)}) AS delivery_partial_n,
       count(*) FILTER (WHERE dane_delivery = {lit(DaneDelivery.NO)}) AS delivery_no_n,
       count(*) FILTER (WHERE dane_delivery = {lit(DaneDelivery.UNKNOWN)}) AS delivery_unknown_n,
       count(*) FILTER (WHERE list_contains(grade_rules, {_TLSA_UNSIGNED})) AS tlsa_unsigned_n
FROM domains
WHERE (status = {_OK} AND dane_mx_with_tlsa IS NOT NULL) OR status = {lit(DomainStatus.DNS_BOGUS)}
"""

# Per distinct (MX host, address): a provider's MX shared by many domains counts once.
DANE_HOSTS: Final = f"""
WITH h AS (SELECT DISTINCT mx_host, address, dane_verdict, dane_dnssec FROM mx WHERE dane_verdict IS NOT NULL)
SELECT count(*) AS checked_d,
       count(*) FILTER (WHERE dane_verdict NOT IN {_NO_TLSA}) AS tlsa_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.LOOKUP_FAILED)}) AS lookup_failed_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.MATCH)}) AS match_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.NO_MATCH)}) AS no_match_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.TA_CHAIN_INVALID)}) AS ta_chain_invalid_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.NAME_MISMATCH)}) AS name_mismatch_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.NO_USABLE_RECORDS)}) AS no_usable_n,
       count(*) FILTER (WHERE dane_verdict = {lit(DaneVerdict.NO_CERTIFICATE)}) AS no_certificate_n,
       count(*) FILTER (WHERE dane_verdict IN {_COMPARED})
           AS compared_d,
       count(*) FILTER (WHERE dane_verdict NOT IN {_NO_TLSA}
                         AND dane_dnssec = {lit(DnssecStatus.AUTHENTICATED)}) AS dnssec_auth_n,
       count(*) FILTER (WHERE dane_verdict NOT IN {_NO_TLSA}
                         AND dane_dnssec = {lit(DnssecStatus.NOT_AUTHENTICATED)}) AS dnssec_not_auth_n,
       count(*) FILTER (WHERE dane_verdict NOT IN {_NO_TLSA}
                         AND coalesce(dane_dnssec, {_DNSSEC_UNKNOWN}) = {_DNSSEC_UNKNOWN}) AS dnssec_unknown_n
FROM h
"""

# --- grades ----------------------------------------------------------------------------------------

GRADE_LETTERS: Final = tuple(g.value for g in Grade)


def grade_column(grade: str) -> str:
    return "grade_" + grade.replace("+", "_plus").lower()


_GRADE_COUNTS: Final = "".join(
    f"       count(*) FILTER (WHERE grade = {sql_string(g)}) AS {grade_column(g)}_n,\n" for g in GRADE_LETTERS
)

GRADES_DOMAIN: Final = f"""
SELECT count(*) AS mail_d, count(grade) AS graded_d,
{_GRADE_COUNTS}       count(*) FILTER (WHERE grade IS NULL) AS ungraded_n
FROM domains WHERE status = {_OK}
"""

GRADES_LINK: Final = f"""
SELECT count(*) AS links_d, count(grade) AS graded_d,
{_GRADE_COUNTS}       count(*) FILTER (WHERE grade IS NULL) AS ungraded_n
FROM mx WHERE address IS NOT NULL AND probe_id IS NOT NULL
"""

GRADE_RULES: Final = f"""
SELECT rule AS key, count(DISTINCT domain) AS n
FROM (SELECT domain, unnest(grade_rules) AS rule FROM domains WHERE status = {_OK} AND grade IS NOT NULL)
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
GRADE_RULES_TOTAL: Final = f"SELECT count(*) FROM domains WHERE status = {_OK} AND grade IS NOT NULL"

FORCED_TLS: Final = f"""
SELECT count(*) AS mail_d,
       count(*) FILTER (WHERE forced_tls_safe) AS safe_n,
       count(*) FILTER (WHERE NOT forced_tls_safe) AS unsafe_n,
       count(*) FILTER (WHERE forced_tls_safe IS NULL) AS undecided_n,
       count(forced_tls_safe) AS decided_d
FROM domains WHERE status = {_OK}
"""

# Reasons read "code: host [address] - explanation" (schemas/grading.md §3): group by the code.
FORCED_TLS_REASONS: Final = f"""
SELECT split_part(reason, ':', 1) AS key, count(DISTINCT domain) AS n
FROM (SELECT domain, unnest(forced_tls_reasons) AS reason
      FROM domains WHERE status = {_OK} AND forced_tls_safe IS DISTINCT FROM true)
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
FORCED_TLS_REASONS_TOTAL: Final = (
    f"SELECT count(*) FROM domains WHERE status = {_OK} AND forced_tls_safe IS DISTINCT FROM true"
)

# --- providers -------------------------------------------------------------------------------------

MX_HOSTS: Final = "SELECT DISTINCT mx_host FROM mx ORDER BY 1"

# Needs the temp tables provider_map(mx_host, provider) and domain_version; $limit top providers,
# or exactly the providers of provider_keep(provider) when that table is not empty.
PROVIDERS: Final = f"""
WITH dom AS (
    SELECT d.domain, d.starttls, d.grade, d.forced_tls_safe, pm.provider, v.r
    FROM domains d
    JOIN provider_map pm ON pm.mx_host = d.mx_hosts[1]
    LEFT JOIN domain_version v ON v.domain = d.domain
    WHERE d.status = {_OK}
),
agg AS (
    SELECT provider, count(*) AS domains_n,
           count(*) FILTER (WHERE starttls = {lit(StarttlsVerdict.ALL)}) AS starttls_all_n,
           count(r) AS tls_d, count(*) FILTER (WHERE r = 5) AS tls13_n,
           count(*) FILTER (WHERE forced_tls_safe) AS forced_n,
{_GRADE_COUNTS}           count(grade) AS graded_d
    FROM dom GROUP BY provider
)
SELECT * FROM agg
WHERE CASE WHEN (SELECT count(*) FROM provider_keep) > 0
           THEN provider IN (SELECT provider FROM provider_keep) ELSE true END
ORDER BY domains_n DESC, provider
LIMIT $limit
"""

PROVIDER_ADDRESSES: Final = """
SELECT pm.provider, count(DISTINCT m.address) AS addresses
FROM mx m JOIN provider_map pm USING (mx_host)
WHERE m.address IS NOT NULL AND pm.provider IN (SELECT provider FROM provider_pick)
GROUP BY 1
"""

PROVIDER_CONCENTRATION: Final = f"""
WITH counts AS (
    SELECT pm.provider, count(*) AS n
    FROM domains d JOIN provider_map pm ON pm.mx_host = d.mx_hosts[1]
    WHERE d.status = {_OK} GROUP BY 1
),
ranked AS (SELECT n, row_number() OVER (ORDER BY n DESC, provider) AS rank FROM counts)
SELECT (SELECT count(*) FROM domains WHERE status = {_OK}) AS mail_d,
       count(*) AS providers_n,
       coalesce(sum(n) FILTER (WHERE rank <= 1), 0) AS top1_n,
       coalesce(sum(n) FILTER (WHERE rank <= 5), 0) AS top5_n,
       coalesce(sum(n) FILTER (WHERE rank <= 10), 0) AS top10_n,
       coalesce(sum(n) FILTER (WHERE rank <= 100), 0) AS top100_n,
       count(*) FILTER (WHERE n = 1) AS single_domain_providers_n
FROM ranked
"""

# --- failures --------------------------------------------------------------------------------------

PROBE_FAILURES: Final = f"""
SELECT status || coalesce(' / ' || failure_class, '') AS key, count(*) AS n
FROM probes WHERE status <> {lit(ProbeStatus.STARTTLS_OK)} AND status <> {lit(ProbeStatus.NO_STARTTLS)}
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
PROBE_FAILURES_TOTAL: Final = "SELECT count(*) FROM probes"

HOST_FAILURES: Final = f"""
SELECT host_status AS key, count(DISTINCT mx_host) AS n
FROM mx WHERE host_status <> {lit(HostStatus.OK)}
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $limit
"""
HOST_FAILURES_TOTAL: Final = "SELECT count(DISTINCT mx_host) FROM mx"

# --- baseline --------------------------------------------------------------------------------------

# Domains present in either scan (one row per distinct domain; duplicates and invalid lines have no
# verdict of their own) whose grade or STARTTLS verdict differs, or that are in only one scan.
CHANGED_DOMAINS_FROM: Final = f"""
FROM (SELECT domain, grade, starttls FROM domains WHERE domain IS NOT NULL AND status <> {_DUPLICATE}) n
FULL OUTER JOIN (SELECT domain, grade, starttls FROM old_domains WHERE domain IS NOT NULL AND status <> {_DUPLICATE}) o
     USING (domain)
WHERE n.grade IS DISTINCT FROM o.grade OR n.starttls IS DISTINCT FROM o.starttls
   OR n.domain IS NULL OR o.domain IS NULL
"""
CHANGED_DOMAINS: Final = f"""
SELECT domain, o.grade, n.grade, o.starttls, n.starttls, o.domain IS NOT NULL, n.domain IS NOT NULL
{CHANGED_DOMAINS_FROM}
ORDER BY domain LIMIT $limit
"""
CHANGED_DOMAINS_COUNTS: Final = f"""
SELECT count(*) AS total,
       count(*) FILTER (WHERE n.domain IS NOT NULL AND o.domain IS NOT NULL
                         AND n.grade IS DISTINCT FROM o.grade) AS grade_changes,
       count(*) FILTER (WHERE n.domain IS NOT NULL AND o.domain IS NOT NULL
                         AND n.starttls IS DISTINCT FROM o.starttls) AS starttls_changes
{CHANGED_DOMAINS_FROM}
"""

# --- helpers ---------------------------------------------------------------------------------------


def open_dataset(con: duckdb.DuckDBPyConnection, out_dir: Path, prefix: str = "") -> None:
    """Create the views ``<prefix>domains``, ``<prefix>mx``, ``<prefix>probes`` and ``<prefix>run``.

    Each view is the table's declared schema (an empty Arrow table) ``UNION ALL BY NAME`` the part
    files, so a dataset written by an older schema version still answers every query: a column it
    lacks reads as NULL (the figure becomes "n/a"), rather than failing the whole report.
    """
    if not out_dir.is_dir():
        raise ReportError(f"no such dataset directory: {out_dir}", ExitCode.NO_INPUT)
    if not any((out_dir / table).is_dir() for table in TABLES):
        raise ReportError(f"{out_dir} holds no scan tables ({', '.join(TABLES)})", ExitCode.NO_INPUT)
    for table, row_class in TABLES.items():
        view = f"{prefix}{table}"
        con.register(f"{view}__declared", arrow_schema(row_class).empty_table())
        files = sorted((out_dir / table).glob("part-*.parquet"))
        for path in files:
            check_part(path, table)
        if not files:
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}__declared")
            continue
        file_list = ", ".join(sql_string(str(f)) for f in files)
        con.execute(
            f"CREATE VIEW {view} AS SELECT * FROM {view}__declared "
            f"UNION ALL BY NAME SELECT * FROM read_parquet([{file_list}], union_by_name = true)"
        )


def check_part(path: Path, table: str) -> None:
    """Raise ``ReportError`` (DATA_ERROR, naming the file) unless ``path`` is a readable part of ``table``."""
    if (problem := part_problem(path, table)) is not None:
        raise ReportError(problem)


def register_table(con: duckdb.DuckDBPyConnection, name: str, columns: Mapping[str, Sequence[Any]]) -> None:
    """Materialize a small Python table as a DuckDB temp table ``name`` (all columns strings)."""
    data = pa.table({k: pa.array(list(v), type=pa.string()) for k, v in columns.items()})
    con.register(f"{name}__arrow", data)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}__arrow")
    con.unregister(f"{name}__arrow")


def fetch_wide(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, int]:
    """Run a one-row counting query: column name → count (NULL sums read as 0)."""
    cursor = con.execute(sql)
    row = cursor.fetchone()
    names = [d[0] for d in cursor.description]
    if row is None:
        return dict.fromkeys(names, 0)
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


def fetch_long(con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> list[tuple[str, int]]:
    """Run a ``(key, n)`` query with a ``$limit`` parameter."""
    rows = con.execute(sql, {"limit": limit}).fetchall()
    return [(str(key), int(n)) for key, n in rows]


def fetch_rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Run any query and return its rows as tuples."""
    cursor = con.execute(sql, dict(params) if params else None)
    return [tuple(row) for row in cursor.fetchall()]


def fetch_scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0


# --- per-domain drill-down -------------------------------------------------------------------------

# One row per distinct domain with its MX posture; ``failing`` marks what a reader looks for first.
CREATE_DRILL: Final = f"""
CREATE OR REPLACE TEMP VIEW drill AS
SELECT d.domain, d.grade, d.grade_rules, CAST(d.starttls AS VARCHAR) AS starttls, coalesce(m.mx, '') AS mx,
       coalesce(d.starttls IN {_FAILING_STARTTLS} OR d.grade IN {_FAILING_GRADES}, false) AS failing,
       d.domain IN (SELECT domain FROM drill_changed) AS changed,
       hash(d.domain) AS h
FROM (SELECT * FROM domains WHERE domain IS NOT NULL AND status <> {_DUPLICATE}) d
LEFT JOIN (
    SELECT domain, string_agg(mx_host || ' ' || coalesce(grade, '—') || ' '
                              || coalesce(CAST(probe_status AS VARCHAR), CAST(host_status AS VARCHAR)), '; '
                              ORDER BY mx_rank, address) AS mx
    FROM mx GROUP BY domain
) m USING (domain)
"""
# Failing domains first, then changed ones, then a sample (by a hash of the name: the same sample in
# every rendering of one scan), at most $limit rows.
DRILL_INLINE: Final = """
SELECT domain, grade, grade_rules, starttls, mx,
       CASE WHEN failing THEN 'failing' WHEN changed THEN 'changed' ELSE 'sample' END AS why
FROM drill
ORDER BY CASE WHEN failing THEN 0 WHEN changed THEN 1 ELSE 2 END, CASE WHEN failing OR changed THEN 0 ELSE h END,
         domain
LIMIT $limit
"""
DRILL_TOTAL: Final = "SELECT count(*) FROM drill"
DRILL_REST: Final = """
SELECT domain, grade, grade_rules, starttls, mx, 'other' AS why FROM drill
WHERE domain NOT IN (SELECT domain FROM drill_inline) ORDER BY domain
"""
