"""Closed sets of statuses shared by every stage.

Rule: every value written to a ``status``/``*_class`` column comes from one of these enums, so that a
``GROUP BY`` in DuckDB keeps working when a human-readable message changes. Values are stable strings;
renaming one is a schema change (bump ``SCHEMA_VERSION`` in ``scanner.output.rows``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AttemptOutcome",
    "CertSource",
    "DaneDelivery",
    "DaneVerdict",
    "DnsOutcome",
    "DnssecStatus",
    "DomainStatus",
    "FailureClass",
    "Family",
    "HostStatus",
    "KeyType",
    "MxSource",
    "NameMatch",
    "Phase",
    "ProbeStatus",
    "SessionFact",
    "SessionKind",
    "StarttlsVerdict",
    "StsError",
    "StsMode",
    "TlsRptStatus",
    "TrustStatus",
]


class DomainStatus(StrEnum):
    """What happened to one input line, as a domain."""

    OK = "ok"  # MX (or implicit MX) resolved to at least one address; probes ran (see probe rows)
    INVALID_INPUT = "invalid_input"  # the line is not a valid domain name (detail says why)
    DUPLICATE = "duplicate"  # seen earlier in the input; scanned once, under its first line
    EXCLUDED = "excluded"  # matched the opt-out list; nothing was sent
    NULL_MX = "null_mx"  # RFC 7505 "MX 0 .": the domain declares it accepts no mail
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_NO_MAIL_HOST = "dns_no_mail_host"  # no MX and no A/AAAA (RFC 5321 §5.1: nothing to deliver to)
    DNS_SERVFAIL = "dns_servfail"
    # The validating resolver's SERVFAIL is a DNSSEC validation failure of the MX RRset (it answers with
    # checking disabled, RFC 4035 §3.2.2): validating senders, DANE ones included, cannot route mail.
    DNS_BOGUS = "dns_bogus"
    DNS_TIMEOUT = "dns_timeout"
    DNS_REFUSED = "dns_refused"
    # Any other resolver failure (detail says which), among them an MX answer with an rcode other than
    # NOERROR, NXDOMAIN, SERVFAIL or REFUSED (e.g. 6-11, 16): never read as "no MX" (RFC 5321 §5.1).
    DNS_ERROR = "dns_error"
    MX_NO_ADDRESS = "mx_no_address"  # MX records exist but no MX host has a usable address
    INTERNAL_ERROR = "internal_error"  # a bug in the scanner; detail holds the traceback summary


class MxSource(StrEnum):
    """Where the mail hosts of a domain came from (RFC 5321 §5.1, RFC 7505)."""

    MX = "mx"
    IMPLICIT = "implicit"  # no MX records: the domain's own A/AAAA act as an MX of preference 0
    NULL_MX = "null_mx"
    NONE = "none"  # DNS did not say (failure, invalid input, exclusion)


class DnsOutcome(StrEnum):
    """Outcome of a single DNS query, translated once from the resolver library's error codes."""

    ANSWER = "answer"
    NODATA = "nodata"  # the name exists, no record of that type
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"


class HostStatus(StrEnum):
    """Resolution status of one MX host name."""

    OK = "ok"  # at least one address
    NO_ADDRESS = "no_address"  # name exists (or not) but has neither A nor AAAA
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"
    IP_LITERAL = "ip_literal"  # MX exchange is an address, forbidden by RFC 5321 §5.1; not probed
    EXCLUDED = "excluded"  # host name matched the opt-out list


class Phase(StrEnum):
    """Phase of the SMTP/TLS dialogue in which a probe ended (or failed)."""

    ADDRESS = "address"  # the address was refused before any packet (reserved, excluded)
    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS_HANDSHAKE = "tls_handshake"
    QUIT = "quit"
    DONE = "done"


class FailureClass(StrEnum):
    """Why a probe (or one of its phases) failed. One classifier maps exceptions to these."""

    REFUSED = "refused"  # TCP RST to our SYN
    TIMEOUT = "timeout"  # a phase exceeded its deadline (never read as "no STARTTLS")
    RESET = "reset"  # connection reset after it was established
    CLOSED = "closed"  # orderly close (EOF) where a reply was expected
    NO_ROUTE = "no_route"  # network/host unreachable from the scanner (e.g. no IPv6 route)
    NETWORK_ERROR = "network_error"  # any other socket error
    SMTP_421 = "smtp_421"  # service not available / too many connections: throttling
    SMTP_4XX = "smtp_4xx"
    SMTP_5XX = "smtp_5xx"
    SMTP_PROTOCOL_ERROR = "smtp_protocol_error"  # not a valid SMTP reply
    OVERSIZED_REPLY = "oversized_reply"  # a reply line or reply exceeded our caps
    TLS_ALERT = "tls_alert"  # the server sent a TLS alert during the handshake
    TLS_PROTOCOL_ERROR = "tls_protocol_error"  # not TLS, wrong version record, bad message
    TLS_CLOSED = "tls_closed"  # server closed the connection during the handshake
    TLS_ERROR = "tls_error"  # other handshake failure (detail has OpenSSL's reason)
    RESERVED_ADDRESS = "reserved_address"  # loopback/private/reserved: refused by default
    FAMILY_UNREACHABLE = "family_unreachable"  # IPv4/IPv6 not reachable from this vantage (run record)
    EXCLUDED = "excluded"  # on the opt-out list
    INTERNAL = "internal"  # a bug in the scanner


class ProbeStatus(StrEnum):
    """Conclusion of one probe of one (address, port)."""

    STARTTLS_OK = "starttls_ok"  # STARTTLS advertised, accepted, TLS handshake completed
    NO_STARTTLS = "no_starttls"  # EHLO (or HELO) answered and STARTTLS was not advertised
    STARTTLS_REJECTED = "starttls_rejected"  # advertised, but the STARTTLS command got a non-220 reply
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"  # 220 to STARTTLS, then the handshake failed
    SMTP_REJECTED = "smtp_rejected"  # 5xx/4xx banner or EHLO+HELO refused: no STARTTLS decision possible
    THROTTLED = "throttled"  # 421 (too busy / too many connections): could not be tested
    UNREACHABLE = "unreachable"  # connect refused / no route (a reset after accept is THROTTLED: dropped)
    TIMEOUT = "timeout"  # a phase timed out (tarpit, slow banner): could not be tested
    PROTOCOL_ERROR = "protocol_error"  # garbage instead of SMTP
    SKIPPED_RESERVED_ADDRESS = "skipped_reserved_address"
    SKIPPED_EXCLUDED = "skipped_excluded"
    # The address's family (IPv4/IPv6) is not reachable from this vantage point: not probed, and not a
    # network failure; verdicts cover the other family and say so (scanner.net.families).
    SKIPPED_FAMILY_UNREACHABLE = "skipped_family_unreachable"
    INTERNAL_ERROR = "internal_error"

    @property
    def is_definitive(self) -> bool:
        """True when the probe answered the question "can this address receive mail over TLS?".

        A timeout, a 421 or a refused connection answers nothing about STARTTLS; only these do.
        """
        return self in _DEFINITIVE

    @property
    def tls_ok(self) -> bool:
        return self is ProbeStatus.STARTTLS_OK


_DEFINITIVE = frozenset(
    {
        ProbeStatus.STARTTLS_OK,
        ProbeStatus.NO_STARTTLS,
        ProbeStatus.STARTTLS_REJECTED,
        ProbeStatus.TLS_HANDSHAKE_FAILED,
    }
)


class StarttlsVerdict(StrEnum):
    """Domain-level answer to "does every MX address accept STARTTLS with a working handshake?"."""

    ALL = "all"  # every address answered, and every one completed STARTTLS + handshake
    SOME = "some"  # at least one completed, at least one definitely did not
    NONE = "none"  # every address answered, none completed STARTTLS + handshake
    INCOMPLETE = "incomplete"  # some addresses could not be tested and the answer depends on them
    NOT_COVERED = "not_covered"  # every address is of a family this vantage cannot reach
    NOT_APPLICABLE = "not_applicable"  # nothing to test (no MX address, null MX, DNS failure, invalid)


class AttemptOutcome(StrEnum):
    """How one attempt of a scan ended (``run.outcome``). Only ``completed`` marks the scan complete."""

    RUNNING = "running"  # in run.json while the attempt runs; never written to the run table
    COMPLETED = "completed"  # reached the end of the input
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: the same command resumes
    UNAVAILABLE = "unavailable"  # our side was broken (resolver dead, no route): the same command resumes
    FAILED = "failed"  # an unexpected error, or input unreadable part-way, ended the attempt (the message says)
    KILLED = "killed"  # ended without a word (SIGKILL, power loss): counted from its committed rows


class CertSource(StrEnum):
    """Which certificate an (MX host, address) link was judged on (RFC 7672 §8.1, RFC 8461 §4: a
    validating sender sends SNI = the MX host name and validates what the server presents for it)."""

    PROBE = "probe"  # this host name was the SNI of the address's full probe
    OWN_SNI = "own_sni"  # a handshake-only STARTTLS session sent this host name as SNI
    SAME_CERTIFICATE = "same_certificate"  # not asked: the server gave one certificate whatever the SNI
    # No verdict on the name: beyond the per-address cap of SNI sessions, or asked once after the cap's
    # first-come share was used (scanner.sni.decide_name)
    NOT_CHECKED = "not_checked"
    SESSION_FAILED = "session_failed"  # the SNI session for this name failed (see the sessions table)


class SessionKind(StrEnum):
    """Why a handshake-only STARTTLS session beyond the full probe was opened."""

    NO_SNI = "no_sni"  # the certificate a sender that sends no SNI receives
    SNI = "sni"  # a further MX host name on the same address, with its own SNI
    RECHECK = "recheck"  # a question re-asked because two sessions of the address disagreed


class SessionFact(StrEnum):
    """Facts that two sessions of one address can contradict (load balancers mixing configurations)."""

    CERTIFICATE = "certificate"  # another leaf certificate for the same SNI (or the same absence of SNI)
    STARTTLS = "starttls"  # STARTTLS advertised in one session, missing in another
    VERSION = "version"  # a protocol version accepted in one session, refused in another


# --- Address families -----------------------------------------------------------------------------


class Family(StrEnum):
    """An address family (``domains.families_covered``, the run's reachability)."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"


# --- Certificates (scanner.certs) -----------------------------------------------------------------


class TrustStatus(StrEnum):
    """Outcome of chain verification, independent of the host name."""

    TRUSTED = "trusted"
    SELF_SIGNED = "self_signed"
    UNKNOWN_ISSUER = "unknown_issuer"
    # The chain verifies to a trusted root at some instant inside the
    # certificates' validity, but not at the scan time (expired or not yet
    # valid; ChainVerdict.trust_detail says which certificate).
    EXPIRED = "expired"
    INVALID_CHAIN = "invalid_chain"
    NO_CERTIFICATE = "no_certificate"
    PARSE_ERROR = "parse_error"


class NameMatch(StrEnum):
    """How (or whether) the leaf certificate names the MX host."""

    SAN = "san"
    # Only used when the leaf has no SAN dNSName at all (RFC 6125 s. 6.4.4).
    COMMON_NAME = "common_name"
    MISMATCH = "mismatch"
    # For callers that had no host name to check (e.g. a scan by address).
    NOT_CHECKED = "not_checked"
    # Only in mx.cert_name_match: the handshake-only session with this MX name as SNI failed, so no
    # certificate for the name is known (never read as "mismatch", scanner.sni).
    SESSION_FAILED = "session_failed"


class KeyType(StrEnum):
    """Public key algorithm of a certificate."""

    RSA = "rsa"
    EC = "ec"
    ED25519 = "ed25519"
    ED448 = "ed448"
    DSA = "dsa"
    OTHER = "other"


# --- MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) (scanner.policy) -----------------------------------


class StsMode(StrEnum):
    """Policy mode (RFC 8461 §5)."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class StsError(StrEnum):
    """Why a domain has no usable MTA-STS policy (or why part of the check failed)."""

    DNS_ERROR = "dns_error"  # the _mta-sts TXT query failed (SERVFAIL, timeout, refused, ...)
    TXT_MISSING = "txt_missing"  # no TXT record beginning with v=STSv1
    TXT_INVALID = "txt_invalid"  # exactly one v=STSv1 record, but it breaks the §3.1 syntax
    TXT_MULTIPLE = "txt_multiple"  # more than one v=STSv1 record: no policy (§3.1)
    POLICY_HOST_DNS = "policy_host_dns"  # mta-sts.<domain> has no address, or its lookup failed
    ADDRESS_REFUSED = "address_refused"  # every address of the policy host is excluded or reserved
    FETCH_CONNECT = "fetch_connect"  # TCP connection refused, reset or unreachable
    FETCH_TIMEOUT = "fetch_timeout"  # the fetch did not complete within the deadline
    TLS_UNTRUSTED = "tls_untrusted"  # certificate does not chain to a trusted root (incl. self-signed)
    TLS_NAME_MISMATCH = "tls_name_mismatch"  # certificate not valid for mta-sts.<domain>
    TLS_EXPIRED = "tls_expired"  # certificate expired or not yet valid
    TLS_ERROR = "tls_error"  # any other TLS failure (handshake alert, protocol version, ...)
    HTTP_REDIRECT = "http_redirect"  # a 3xx answer: redirects must not be followed (§3.3)
    HTTP_STATUS = "http_status"  # any other status than 200 (§3.3)
    HTTP_ERROR = "http_error"  # not a valid HTTP response, or the connection broke mid-response
    MEDIA_TYPE = "media_type"  # Content-Type missing or not text/plain (§3.2)
    TOO_LARGE = "too_large"  # body longer than the cap (64 KiB by default, §3.3)
    POLICY_SYNTAX = "policy_syntax"  # body fetched but not a valid policy (§3.2)


class TlsRptStatus(StrEnum):
    """The domain's TLS-RPT record (RFC 8460 §3)."""

    VALID = "valid"
    MISSING = "missing"  # no record beginning with v=TLSRPTv1 (or the name does not exist)
    INVALID = "invalid"  # exactly one such record, breaking the §3 syntax or with a bad rua URI
    MULTIPLE = "multiple"  # more than one v=TLSRPTv1 record: no TLS-RPT policy (§3)
    DNS_ERROR = "dns_error"  # the TXT query failed (SERVFAIL, timeout, refused, ...)


# --- DANE (RFC 7672) (scanner.policy.dane) --------------------------------------------------------


class DaneVerdict(StrEnum):
    """Does the presented chain authenticate against the TLSA RRset?"""

    MATCH = "match"  # a DANE-EE record matches the leaf, or a DANE-TA record a chain the leaf verifies to
    NO_MATCH = "no_match"  # usable records, none matches any presented certificate
    TA_CHAIN_INVALID = "ta_chain_invalid"  # a DANE-TA record matches, but the leaf does not validly chain to it
    NAME_MISMATCH = "name_mismatch"  # DANE-TA chain valid, leaf not issued for the MX (RFC 7672 §3.2.3)
    NO_USABLE_RECORDS = "no_usable_records"  # only unusable records (e.g. PKIX-TA/EE): as if none (§2.2)
    NO_RECORDS = "no_records"
    NO_CERTIFICATE = "no_certificate"  # usable records but no chain to check (no TLS session)
    LOOKUP_FAILED = "lookup_failed"  # the TLSA query failed (SERVFAIL, timeout, ...): nothing known
    BOGUS = "bogus"  # the TLSA RRset failed DNSSEC validation: DANE senders skip the MX (RFC 7672 §2.2)
    # _25._tcp.<host> exceeds 255 octets (RFC 1035 §3.1) although the host name itself is valid: no
    # TLSA record can exist there, so DANE cannot apply to this MX; nothing is queried.
    NAME_TOO_LONG = "name_too_long"


class DnssecStatus(StrEnum):
    """What the resolver said about the authenticity of an answer (the AD bit, RFC 4035 §3.2.3)."""

    AUTHENTICATED = "authenticated"  # AD=1 from a recursive, DNSSEC-aware resolver
    NOT_AUTHENTICATED = "not_authenticated"  # AD=0 from such a resolver: insecure, or it does not validate
    UNKNOWN = "unknown"  # no usable answer, or the server cannot tell (authoritative-only, DO not echoed)
    BOGUS = "bogus"  # SERVFAIL from the validator, but the data comes with CD=1: validation failed (RFC 4035 §5.5)


class DaneDelivery(StrEnum):
    """Would a DANE sender (RFC 7672: Postfix/Exim with DANE, large mailbox providers) deliver?"""

    YES = "yes"  # every MX address passes (authenticated by TLSA, or a non-DANE MX reached normally)
    PARTIAL = "partial"  # some MX addresses refuse: mail goes to the others, delayed when a refused one is preferred
    NO = "no"  # every MX address refuses (or the MX RRset is bogus): DANE senders defer, then bounce
    NOT_DANE = "not_dane"  # no MX publishes an authenticated TLSA RRset: DANE does not apply
    UNKNOWN = "unknown"  # TLSA not checked, lookup failed, DNSSEC status unknown, or an MX untested
