"""The output schema, defined once: each table is a frozen dataclass, each field a column.

The Arrow schema (``scanner.output.arrow_schema``) and the documentation in ``schemas/`` are derived
from these classes; a test fails when ``schemas/`` drifts from them. Field order is column order.

Tables and keys:
- ``domains``: one row per meaningful input line (key ``domain``; invalid lines carry ``input_line``).
- ``mx``: one row per (domain, MX host, address) link (joins ``domains`` on ``domain`` and
  ``probes`` on ``probe_id``); a host with no address has one row with a null address.
- ``probes``: one row per probed (address, port), shared by every domain whose MX resolves there.
- ``sessions``: one row per handshake-only STARTTLS session beyond an address's full probe (the
  certificate without SNI, further MX names' own SNI, re-asked questions); joins ``probes`` on
  ``probe_id``.
- ``run``: one row per attempt of the scan (version, configuration, provenance, counts); a resumed scan has
  several, all with the scan's one ``scan_id``. ``domains``, ``mx``, ``probes`` and ``sessions`` rows carry
  the ``attempt`` that wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from scanner.grading import Grade, RecommendationCode, RuleCode
from scanner.status import (
    AttemptOutcome,
    CertSource,
    DaneDelivery,
    DaneVerdict,
    DnssecStatus,
    DomainStatus,
    FailureClass,
    Family,
    HostStatus,
    KeyType,
    MxSource,
    NameMatch,
    Phase,
    ProbeStatus,
    SessionFact,
    SessionKind,
    StarttlsVerdict,
    StsError,
    StsMode,
    TlsRptStatus,
    TrustStatus,
)
from scanner.tls.ciphers import WeakClass
from scanner.tls.enumeration import VersionVerdict
from scanner.tls.versions import EnumMode, VersionName

__all__ = ["SCHEMA_VERSION", "TABLES", "DomainRow", "MxRow", "ProbeRow", "RunRow", "SessionRow"]

# Bump on any change of column name, type or enum value; stored in every run row.
SCHEMA_VERSION = "7"


def col(doc: str) -> Any:
    """A column: its documentation travels with the field into ``schemas/``."""
    return field(metadata={"doc": doc})


# The rows are not frozen: a frozen dataclass sets each field through object.__setattr__, and building
# the rows of a domain (one DomainRow of 53 fields, ~4 MxRows of 24) cost 27 us that way against 7 us
# (~2% of a scan's CPU). Rows are still built once and never changed: nothing assigns to a row's field.
@dataclass(slots=True, kw_only=True)
class DomainRow:
    """Per-domain verdicts."""

    scan_id: str = col("Identifier of the scan: the same in every table and every attempt of one scan.")
    attempt: int = col("The attempt of the scan that wrote this row (1 for the first run; joins run.attempt).")
    domain: str | None = col("Normalized domain (A-label, lower case, no trailing dot); null for invalid input.")
    input_line: int = col("1-based line number in the input file where the domain (first) appeared.")
    input_raw: str = col("The input line as read (trimmed, at most 300 characters).")
    input_rank: int | None = col("Rank given by a Tranco-style 'rank,domain' input line; null for a bare domain.")
    status: DomainStatus = col("What happened to this domain (values explained in scanner/status.py: DomainStatus).")
    status_detail: str = col("Human-readable detail of the status (empty when ok).")
    duplicate_of_line: int | None = col("For status 'duplicate': the line where the domain first appeared.")
    mx_source: MxSource = col("'mx' (MX records), 'implicit' (A/AAAA of the domain, RFC 5321 §5.1), "
                              "'null_mx' (RFC 7505) or 'none'.")
    mx_count: int = col("Number of distinct MX hosts (implicit MX counts as 1), at most --max-mx-hosts.")
    mx_hosts: list[str] = col("MX host names in preference order.")
    mx_provider: str | None = col("Provider of the first MX host: its registered domain under the Public Suffix List "
                                  "(ICANN section; version in run.psl_version), '(IP literal)' for an address; null "
                                  "without MX host.")
    null_mx_mixed: bool = col("A null MX record was published alongside other MX records (RFC 7505 §3 violation).")
    mx_capped: bool = col("More MX hosts or addresses were published than --max-mx-hosts / --max-mx-addresses "
                          "allow: only the first ones (preference order) were resolved and probed.")
    address_count: int = col("Distinct MX addresses (IPv4 and IPv6) found for the domain, at most --max-mx-addresses.")
    probed_count: int = col("Addresses for which a probe gave a definitive STARTTLS answer.")
    starttls_ok_count: int = col("Addresses that completed STARTTLS and the TLS handshake.")
    untested_count: int = col("Addresses of a covered family that could not be tested (timeout, throttled, "
                              "unreachable, skipped).")
    not_covered_count: int = col("Addresses of a family this vantage cannot reach (run.ipv4_reachable / "
                                 "ipv6_reachable): not probed, and outside every verdict of this row.")
    families_covered: list[Family] = col("Families the verdicts of this row cover: those with an address that this "
                                         "vantage could probe.")
    starttls: StarttlsVerdict = col("Do the domain's MX addresses of the covered families (families_covered) "
                                    "accept STARTTLS with a working handshake: all / some / none / incomplete / "
                                    "not_covered (no address of a reachable family) / not_applicable.")
    starttls_ipv4: StarttlsVerdict = col("The STARTTLS verdict over the IPv4 MX addresses only; not_covered when "
                                         "this vantage has no IPv4 route, not_applicable without IPv4 address.")
    starttls_ipv6: StarttlsVerdict = col("The STARTTLS verdict over the IPv6 MX addresses only (as starttls_ipv4).")
    starttls_all: bool | None = col("True when every MX address of the covered families was tested and accepted "
                                    "STARTTLS; null when it could not be decided.")
    starttls_any: bool | None = col("True when at least one MX address accepted STARTTLS; null if undecided.")
    certs_valid_all: bool | None = col("Every address that did TLS presented a chain that is trusted, unexpired "
                                       "and valid for the MX host name (the certificate for that name's own "
                                       "SNI); null when no address did TLS, or when a name was not checked "
                                       "with its own SNI and no certificate failed.")
    mta_sts_txt: bool | None = col("A v=STSv1 TXT record exists at _mta-sts.<domain> (RFC 8461 §3.1); "
                                   "null: not checked.")
    mta_sts_active: bool | None = col("Valid TXT and a valid fetched policy: a sender would apply it.")
    mta_sts_mode: StsMode | None = col("Mode of the active policy (RFC 8461 §5); null unless "
                                   "mta_sts_active (e.g. two v=STSv1 TXT records, RFC 8461 §3.1: no policy applies).")
    mta_sts_fetched_mode: StsMode | None = col("Mode written in the fetched policy file, whether or not a sender would "
                                           "apply it (compare mta_sts_mode); null when no policy was fetched.")
    mta_sts_id: str | None = col("The TXT record's id.")
    mta_sts_max_age: int | None = col("Policy max_age, seconds.")
    mta_sts_mx_patterns: list[str] | None = col("Policy mx patterns.")
    mta_sts_unmatched_mx: list[str] | None = col("MX hosts that no policy pattern matches (RFC 8461 §4.1).")
    mta_sts_mx_fail: list[str] | None = col("MX hosts that an enforcing sender would refuse (no STARTTLS, or a "
                                            "certificate that is untrusted, expired or for another name).")
    mta_sts_errors: list[StsError] | None = col("MTA-STS error classes: why the domain has no usable policy, or "
                                                "why part of the check failed.")
    mta_sts_error_detail: str | None = col("Details of the MTA-STS errors, '; '-joined.")
    tlsrpt_status: TlsRptStatus | None = col("TLS-RPT record (RFC 8460 §3); null when policies were not checked.")
    tlsrpt_rua: list[str] | None = col("TLS-RPT report URIs (mailto: / https:).")
    dane_valid: bool | None = col("Every MX has usable TLSA records matching its chain, DNSSEC-authenticated; null "
                                  "when unknown (no explicit resolver, or the resolver does not say whether it "
                                  "validated).")
    dane_mx_with_tlsa: int | None = col("MX hosts publishing usable TLSA records.")
    dane_delivery: DaneDelivery | None = col("Would a DANE sender (RFC 7672) deliver: 'yes' (every MX address passes), "
                                    "'partial' (some refuse, mail goes to the others), 'no' (every MX address "
                                    "refuses, or the MX RRset is DNSSEC-bogus), 'not_dane' (no MX publishes an "
                                    "authenticated TLSA RRset), 'unknown'; null when policies were not checked.")
    dane_delivery_reasons: list[str] = col("Why: 'code: host [address] - explanation', codes tlsa_no_match, "
                                           "tlsa_starttls_failed, tlsa_bogus, tlsa_unusable, tlsa_unsigned, "
                                           "mx_bogus, not_checked, tlsa_lookup_failed, dnssec_unknown, "
                                           "not_tested, no_certificate, no_mx_address.")
    grade: Grade | None = col("Domain grade A+..F = its worst tested MX address, then domain rules "
                              "(schemas/grading.md); null when no MX address could be tested.")
    grade_ordinal: int | None = col("The grade as a number that sorts: 6 for A+, 5 for A, ... 0 for F (null: no "
                                    "grade), so that ORDER BY grade_ordinal DESC puts A+ above A.")
    grade_rules: list[RuleCode] = col("Rule codes that lowered (or explain) the grade (schemas/grading.md).")
    grading_version: str | None = col("Version of the grading rubric used.")
    forced_tls_safe: bool | None = col("Can a sender force TLS to this domain: every MX does STARTTLS, TLS 1.2+ and a "
                                       "NIST r1 suite (null: could not be decided).")
    forced_tls_reasons: list[str] = col("Why forced TLS is not (or not known to be) safe.")
    recommendations: list[RecommendationCode] = col(
        "Recommendation codes for the domain's administrators (schemas/grading.md).")
    dns_ms: float | None = col("Time spent resolving the domain (MX and MX host addresses), milliseconds.")
    finished_at: datetime = col("When the domain's row was completed (UTC).")


@dataclass(slots=True, kw_only=True)
class MxRow:
    """Per (domain, MX host, address) links."""

    scan_id: str = col("Identifier of the scan.")
    attempt: int = col("The attempt of the scan that wrote this row (a link may point at a probe of an "
                       "earlier attempt: join probes on (scan_id, probe_id)).")
    domain: str = col("The domain (joins domains.domain).")
    mx_host: str = col("MX host name (for implicit MX, the domain itself).")
    provider: str = col("Registered domain of the MX host under the Public Suffix List (ICANN section; version in "
                        "run.psl_version); '(IP literal)' for an address.")
    mx_preference: int = col("MX preference (0 for implicit MX).")
    mx_rank: int = col("0-based position of the host in preference order.")
    host_status: HostStatus = col("Resolution status of the MX host name.")
    host_detail: str = col("Detail of a host resolution failure.")
    host_cnames: list[str] = col("CNAMEs followed while resolving the host (RFC 2181 §10.3 says there should be none).")
    address: str | None = col("One address of the host (null when the host has none).")
    ip_version: int | None = col("4 or 6.")
    port: int | None = col("TCP port probed.")
    probe_id: str | None = col("Key of the probe row for this address ('address|port'); null when not probed.")
    probe_status: ProbeStatus | None = col("Copy of probes.status for convenience.")
    cert_name_match: NameMatch | None = col("How the leaf certificate presented for SNI = this MX host name matches "
                                            "it: 'san', 'common_name', 'mismatch'; 'not_checked' when the name got "
                                            "no SNI session of the address's cap (most of it goes to the first names "
                                            "to ask, a tenth to names a second domain asks for: from that domain "
                                            "on, the name is checked), 'session_failed' when its SNI session failed "
                                            "(never 'mismatch' for an unasked name); null when no certificate was "
                                            "obtained.")
    cert_source: CertSource | None = col("Which certificate the verdict used: 'probe' (this name was the probe's SNI), "
                                         "'own_sni' (a handshake-only session with this name as SNI), "
                                         "'same_certificate' (not asked: the server presents one certificate "
                                         "whatever the SNI), 'not_checked' (see cert_name_match), "
                                         "'session_failed'; null without TLS.")
    cert_sha256: str | None = col("SHA-256 of the leaf certificate this link's verdict used (hex).")
    cert_valid: bool | None = col("Certificate trusted, within validity and valid for this MX host name.")
    dane_verdict: DaneVerdict | None = col("TLSA of _25._tcp.<mx host> against this address's chain: match, no_match, "
                                   "ta_chain_invalid, name_mismatch, no_usable_records, no_records, no_certificate, "
                                   "lookup_failed, bogus (DNSSEC validation failed), name_too_long (_25._tcp.<host> "
                                   "longer than 255 octets: no TLSA can exist); null when not checked.")
    dane_dnssec: DnssecStatus | None = col("Whether the TLSA answer was DNSSEC-authenticated: authenticated, "
                                  "not_authenticated (unsigned zone), unknown, bogus (the validator's SERVFAIL "
                                  "is a validation failure: the data comes with checking disabled).")
    grade: Grade | None = col("Grade of this MX address for this host name (null when untested).")
    grade_ordinal: int | None = col("The grade as a number that sorts: 6 for A+ ... 0 for F (null: no grade).")
    grade_rules: list[RuleCode] = col("Rule codes that lowered the grade (schemas/grading.md).")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRow:
    """Per probed (address, port): the SMTP dialogue, the TLS handshake and the certificate chain."""

    scan_id: str = col("Identifier of the scan.")
    attempt: int = col("The attempt of the scan that ran this probe.")
    probe_id: str = col("'address|port': the key joined from mx.probe_id.")
    address: str = col("IP address probed.")
    ip_version: int = col("4 or 6.")
    port: int = col("TCP port.")
    mx_hosts: list[str] = col("MX host names that resolved to this address when the probe started (first = SNI).")
    sni: str | None = col("Server name sent in the TLS ClientHello.")
    status: ProbeStatus = col("Conclusion of the probe (values explained in scanner/status.py: ProbeStatus).")
    failure_phase: Phase | None = col("Phase in which the probe failed (null on success or a clean no-STARTTLS).")
    failure_class: FailureClass | None = col("Class of the failure (timeout, refused, smtp_421, tls_alert, ...).")
    failure_detail: str = col("Human-readable failure detail (OpenSSL reason, reply text, ...).")
    banner_code: int | None = col("Reply code of the greeting (220 expected).")
    banner: str | None = col("Greeting as sent (multi-line joined with newlines, at most 4096 characters).")
    ehlo_code: int | None = col("Reply code to EHLO.")
    ehlo_greeting: str | None = col("First line of the EHLO reply.")
    ehlo_extensions: list[str] = col("EHLO extensions as 'KEYWORD params', keyword upper-cased, server order.")
    used_helo: bool = col("EHLO was refused with 5xx and HELO was used instead (no extensions possible).")
    starttls_advertised: bool | None = col("STARTTLS was in the EHLO reply; null when EHLO was never answered.")
    starttls_code: int | None = col("Reply code to the STARTTLS command (220 = go ahead).")
    starttls_text: str | None = col("Reply text to the STARTTLS command.")
    plaintext_after_starttls: bool = col("The server sent bytes after its 220 to STARTTLS, before the handshake "
                                         "(RFC 3207 §4.2 command-injection risk); they were discarded.")
    tls_ok: bool = col("STARTTLS was accepted and the TLS handshake completed.")
    tls_version: str | None = col("Negotiated protocol version ('TLSv1.3', 'TLSv1.2', ...).")
    tls_cipher: str | None = col("Negotiated cipher suite (OpenSSL name).")
    tls_cipher_bits: int | None = col("Secret bits of the negotiated cipher.")
    cert_chain: list[bytes] = col("The certificate chain as presented (DER), leaf first.")
    cert_chain_complete: bool | None = col("False when only the leaf could be obtained (old Python).")
    cert_trust: TrustStatus | None = col("Trust of the chain, independent of the host name ('expired': it verifies "
                                         "at some instant of its validity, not at the scan time).")
    cert_trust_detail: str | None = col("Why the chain is not trusted (verifier message).")
    cert_expired: bool | None = col("Leaf not_after is before the scan time.")
    cert_not_yet_valid: bool | None = col("Leaf not_before is after the scan time.")
    cert_self_signed: bool | None = col("Leaf is self-issued and its signature verifies with its own key.")
    cert_days_to_expiry: int | None = col("Whole days from scan time to leaf not_after (negative when expired).")
    cert_subject_cn: str | None = col("Leaf subject common name.")
    cert_san_dns: list[str] = col("Leaf subjectAltName dNSName entries.")
    cert_issuer: str | None = col("Leaf issuer (RFC 4514).")
    cert_issuer_cn: str | None = col("Leaf issuer common name.")
    cert_serial: str | None = col("Leaf serial number, hex.")
    cert_not_before: datetime | None = col("Leaf validity start (UTC).")
    cert_not_after: datetime | None = col("Leaf validity end (UTC).")
    cert_key_type: KeyType | None = col("Leaf public key type.")
    cert_key_bits: int | None = col("Leaf public key size in bits.")
    cert_signature_algorithm: str | None = col("Leaf signature algorithm.")
    cert_sha256: str | None = col("SHA-256 fingerprint of the leaf DER, hex.")
    enum_mode: EnumMode | None = col("Enumeration mode used for this address (never 'off'); null when none ran "
                                "(enumeration runs after STARTTLS was accepted).")
    enum_sessions: int | None = col("STARTTLS sessions the enumeration opened (retries included).")
    enum_complete: bool | None = col("Every enumeration question was answered (no timeout or throttling).")
    hello_quirks: list[str] | None = col(
        "Where our crafted hellos and the observation handshake disagreed, re-asked and settled (the observed "
        "version or suite is accepted by definition, so the row never contradicts itself): "
        "'version_needs_supported_versions:<version>' (refused by a plain hello, accepted when the hello also lists "
        "the version in supported_versions, RFC 8446 §4.2.1: version intolerance), "
        "'version_seen_only_by_observation:<version>', 'suite_found_on_reask:<suite>', "
        "'suite_seen_only_by_observation:<suite>'; empty when they agreed; null without enumeration.")
    ver_ssl3: VersionVerdict | None = col("SSLv3 support and how it was decided.")
    ver_tls1_0: VersionVerdict | None = col("TLS 1.0 support and how it was decided.")
    ver_tls1_1: VersionVerdict | None = col("TLS 1.1 support and how it was decided.")
    ver_tls1_2: VersionVerdict | None = col("TLS 1.2 support and how it was decided.")
    ver_tls1_3: VersionVerdict | None = col("TLS 1.3 support and how it was decided.")
    versions_accepted: list[VersionName] | None = col("Protocol versions accepted, highest first.")
    weak_classes: list[WeakClass] | None = col("Weak cipher-suite classes the server accepted.")
    weak_complete: bool | None = col("The weak-suite search covered every class (false: stopped early).")
    nist_r1: bool | None = col("At least one NIST SP 800-52r1 suite is accepted.")
    nist_r2: bool | None = col("At least one NIST SP 800-52r2 suite is accepted.")
    preferred_suite: str | None = col("Suite the server picks from a modern-first offer at its highest version (IANA).")
    preferred_version: VersionName | None = col("Highest accepted protocol version.")
    server_order: bool | None = col("The server imposes its own suite order (null: could not be decided).")
    suites_ssl3: list[str] | None = col("Full mode: every SSLv3 suite accepted (IANA names); null in posture mode.")
    suites_tls1_0: list[str] | None = col("Full mode: every TLS 1.0 suite accepted.")
    suites_tls1_1: list[str] | None = col("Full mode: every TLS 1.1 suite accepted.")
    suites_tls1_2: list[str] | None = col("Full mode: every TLS 1.2 suite accepted.")
    suites_tls1_3: list[str] | None = col("Full mode: every TLS 1.3 suite accepted.")
    server_order_suites: list[str] | None = col("Full mode, when the server imposes its order: that order at its "
                                                "highest version.")
    kx_groups: list[str] | None = col("Key-exchange groups (IANA names) the server accepted: elliptic curves below TLS "
                                      "1.3 (deprecated ones included), else TLS 1.3 groups; found by elimination.")
    kx_groups_complete: bool | None = col("The group elimination ended with a refusal (false: kx_groups may be "
                                          "partial; posture mode eliminates curves only while 'only deprecated "
                                          "curves' is undecided, and never on a TLS 1.3 server).")
    kx_preferred_group: str | None = col("Group the server picked from our full list at its highest version (TLS 1.3 "
                                         "HelloRetryRequest, or the ECDHE ServerKeyExchange curve).")
    dhe_accepted: bool | None = col("A finite-field DHE suite is accepted below TLS 1.3 (null: not asked; posture "
                                    "mode asks about the DHE suites with AES, ChaCha20 or Camellia and the weak ones).")
    dh_bits: int | None = col("Smallest finite-field DH prime the server sent for a server-authenticated DHE "
                              "suite, bits (anonymous DH is the weak class anon); null when it has no DHE suite.")
    dh_group: str | None = col("Name of that prime when it is a published group (rfc2409-oakley2, rfc3526-modp2048, "
                               "rfc5114-1024-160, rfc7919-ffdhe2048, ...); null when not one of them.")
    secure_renegotiation: bool | None = col("RFC 5746: renegotiation_info in the ServerHello (highest version below "
                                            "TLS 1.3).")
    tls_compression: bool | None = col("The ServerHello chose a compression method other than null (CRIME).")
    extended_master_secret: bool | None = col("RFC 7627 extended_master_secret agreed in the ServerHello.")
    encrypt_then_mac: bool | None = col("RFC 7366 encrypt_then_mac agreed in the ServerHello; null when that hello "
                                        "picked an AEAD or stream suite (the server must not echo it then, §3).")
    heartbeat: bool | None = col("RFC 6520 heartbeat extension in the ServerHello.")
    ocsp_stapling: bool | None = col("status_request in the ServerHello: the server staples OCSP (RFC 6066 §8; TLS "
                                     "1.2 and below).")
    fallback_scsv: bool | None = col("RFC 7507: a hello one version below the highest carrying TLS_FALLBACK_SCSV was "
                                     "refused (inappropriate_fallback, or a close) though the same hello without it "
                                     "was accepted (null: one version only, or no answer, or posture mode on a "
                                     "server with TLS 1.3 or none below TLS 1.2, where NIST SP 800-52r2 does not "
                                     "require the SCSV).")
    connect_ms: float | None = col("Time to establish TCP, milliseconds.")
    banner_ms: float | None = col("Time from connection to complete greeting.")
    ehlo_ms: float | None = col("EHLO round trip (plus HELO when used).")
    starttls_ms: float | None = col("STARTTLS command round trip.")
    tls_ms: float | None = col("TLS handshake duration.")
    total_ms: float = col("Whole probe duration including QUIT and close (of the last attempt).")
    attempts: int = col("Connections made for the observation probe: more than 1 when the server throttled "
                        "(421, greeting timeout, early drop) and was retried after a back-off.")
    cert_no_sni_sha256: str | None = col("SHA-256 of the leaf presented to a ClientHello without SNI (what "
                                         "senders that send none receive); null when not checked or that session "
                                         "failed.")
    sni_selects_certificate: bool | None = col("True: the certificate depends on the SNI (without SNI another one, "
                                               "each confirmed by asking again); false: the same certificate with "
                                               "and without SNI; null: not determined (no TLS, checks off, "
                                               "inconsistent answers).")
    inconsistent_facts: list[SessionFact] = col("Facts that two sessions of this address answered differently: "
                                                "backends that disagree behind one address. Verdicts and grades "
                                                "use the worst answer seen.")
    consistency_sessions: int = col("Sessions that asked a question again: the two that confirm SNI selection "
                                    "when the no-SNI certificate differs, and re-asks of contradicted questions "
                                    "(certificate and STARTTLS re-asks are sessions rows of kind 'recheck'; "
                                    "version re-asks are single ClientHellos, counted here only).")
    started_at: datetime = col("When the probe started (UTC).")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRow:
    """Per handshake-only STARTTLS session beyond an address's full probe (no enumeration)."""

    scan_id: str = col("Identifier of the scan.")
    attempt: int = col("The attempt of the scan that ran this session (joins run.attempt).")
    probe_id: str = col("'address|port' of the address (joins probes.probe_id).")
    address: str = col("IP address.")
    port: int = col("TCP port.")
    kind: SessionKind = col("'no_sni' (no server name sent), 'sni' (a further MX host name of the address) or "
                            "'recheck' (a question re-asked after two sessions disagreed).")
    sni: str | None = col("Server name sent (null: none).")
    status: ProbeStatus = col("Conclusion of the session (same values as probes.status).")
    failure_class: FailureClass | None = col("Class of the failure, if any.")
    failure_detail: str = col("Failure detail.")
    starttls_advertised: bool | None = col("STARTTLS was in the EHLO reply (null: EHLO never answered).")
    tls_version: str | None = col("Negotiated protocol version.")
    cert_chain: list[bytes] = col("Chain as presented (DER, leaf first); empty when the handshake failed.")
    cert_sha256: str | None = col("SHA-256 of the leaf (hex).")
    cert_trust: TrustStatus | None = col("Trust of the chain (as probes.cert_trust).")
    same_as_probe: bool | None = col("The leaf is the probe's leaf (null: no certificate in one of them).")
    contradicts: list[SessionFact] = col("Facts this session answered differently from an earlier session of the "
                                         "address.")
    started_at: datetime = col("When the session started (UTC).")
    total_ms: float = col("Session duration, milliseconds.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """One row per attempt of the scan: the first run and each resumption (see run.json for totals)."""

    scan_id: str = col("Identifier of the scan (the same in every attempt).")
    tool_version: str = col("smtp-tls-survey version.")
    schema_version: str = col("Version of this schema.")
    started_at: datetime = col("Start of this attempt (UTC).")
    finished_at: datetime | None = col("End of this attempt (UTC); null when it was killed without a word.")
    input: str = col("Input path ('-' for stdin).")
    config_json: str = col("The whole scan configuration of this attempt as JSON.")
    input_lines: int = col("Meaningful input lines this attempt read (comments and blank lines excluded); for a "
                           "killed attempt, the lines it wrote.")
    domains: int = col("Distinct valid domains this attempt scanned (rows it wrote that are not invalid, "
                       "duplicate or excluded).")
    invalid_lines: int = col("Lines this attempt found not to be valid domains.")
    duplicate_lines: int = col("Lines this attempt found repeating an earlier domain.")
    probes: int = col("Probe rows this attempt wrote (distinct address and port).")
    dns_queries: int | None = col("DNS queries this attempt sent; null when it was killed.")
    completed: bool = col("This attempt reached the end of the input: the scan is complete.")
    attempt: int = col("1 for the first run of the scan, 2 for its first resumption, ...")
    resumed_lines: int | None = col("Input lines this attempt skipped because an earlier attempt had already "
                                    "written them; null when it was killed.")
    skipped_lines: int | None = col("Blank and comment lines: not domains, so no row. Physical lines of the input "
                                    "= input_lines + skipped_lines (for an attempt that read the whole input); "
                                    "null when it was killed.")
    outcome: AttemptOutcome = col("How this attempt ended: completed, interrupted (Ctrl-C), unavailable (our side "
                                  "was broken: resolver dead, no route), failed (a bug) or killed (SIGKILL, power "
                                  "loss: written by the next attempt from the rows this one committed).")
    domain_rows: int = col("Rows this attempt wrote to domains (the sum over attempts = rows of domains).")
    mx_rows: int = col("Rows this attempt wrote to mx (the sum over attempts = rows of mx).")
    provenance_json: str = col("Where and with what this attempt ran, as JSON: tool, library and data versions, "
                               "trust store and input digests, command line, host, vantage (README: Provenance).")
    ipv4_reachable: bool | None = col("IPv4 addresses were probed: a route lookup at start found a route (no packet), "
                                      "or --ipv4 on forced it. When false, IPv4 addresses are "
                                      "skipped_family_unreachable. Null for a killed attempt.")
    ipv6_reachable: bool | None = col("IPv6 addresses were probed (as ipv4_reachable; --ipv6 on/off forces it).")
    families_detail: str | None = col("How the families were decided (route found from which source address, or "
                                      "forced).")
    psl_version: str | None = col("Public Suffix List that mapped MX hosts to providers (package, list version and "
                                   "commit); from provenance.")


# Table name → row class; the order is the order of docs in schemas/. Read-only.
TABLES: Mapping[str, type] = MappingProxyType({"domains": DomainRow, "mx": MxRow, "probes": ProbeRow,
                                               "sessions": SessionRow, "run": RunRow})
