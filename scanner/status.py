"""Closed sets of statuses shared by every stage.

Rule: every value written to a ``status``/``*_class`` column comes from one of these enums, so that a
``GROUP BY`` in DuckDB keeps working when a human-readable message changes. Values are stable strings;
renaming one is a schema change (bump ``SCHEMA_VERSION`` in ``scanner.output.rows``).
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "AttemptOutcome",
    "CertSource",
    "DnsOutcome",
    "DomainStatus",
    "FailureClass",
    "HostStatus",
    "MxSource",
    "Phase",
    "ProbeStatus",
    "SessionFact",
    "SessionKind",
    "StarttlsVerdict",
    "StsMode",
]


class DomainStatus(str, Enum):
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


class MxSource(str, Enum):
    """Where the mail hosts of a domain came from (RFC 5321 §5.1, RFC 7505)."""

    MX = "mx"
    IMPLICIT = "implicit"  # no MX records: the domain's own A/AAAA act as an MX of preference 0
    NULL_MX = "null_mx"
    NONE = "none"  # DNS did not say (failure, invalid input, exclusion)


class DnsOutcome(str, Enum):
    """Outcome of a single DNS query, translated once from the resolver library's error codes."""

    ANSWER = "answer"
    NODATA = "nodata"  # the name exists, no record of that type
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"


class HostStatus(str, Enum):
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


class Phase(str, Enum):
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


class FailureClass(str, Enum):
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


class ProbeStatus(str, Enum):
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


class StarttlsVerdict(str, Enum):
    """Domain-level answer to "does every MX address accept STARTTLS with a working handshake?"."""

    ALL = "all"  # every address answered, and every one completed STARTTLS + handshake
    SOME = "some"  # at least one completed, at least one definitely did not
    NONE = "none"  # every address answered, none completed STARTTLS + handshake
    INCOMPLETE = "incomplete"  # some addresses could not be tested and the answer depends on them
    NOT_COVERED = "not_covered"  # every address is of a family this vantage cannot reach
    NOT_APPLICABLE = "not_applicable"  # nothing to test (no MX address, null MX, DNS failure, invalid)


class AttemptOutcome(str, Enum):
    """How one attempt of a scan ended (``run.outcome``). Only ``completed`` marks the scan complete."""

    RUNNING = "running"  # in run.json while the attempt runs; never written to the run table
    COMPLETED = "completed"  # reached the end of the input
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: the same command resumes
    UNAVAILABLE = "unavailable"  # our side was broken (resolver dead, no route): the same command resumes
    FAILED = "failed"  # an unexpected error, or input unreadable part-way, ended the attempt (the message says)
    KILLED = "killed"  # ended without a word (SIGKILL, power loss): counted from its committed rows


class CertSource(str, Enum):
    """Which certificate an (MX host, address) link was judged on (RFC 7672 §8.1, RFC 8461 §4: a
    validating sender sends SNI = the MX host name and validates what the server presents for it)."""

    PROBE = "probe"  # this host name was the SNI of the address's full probe
    OWN_SNI = "own_sni"  # a handshake-only STARTTLS session sent this host name as SNI
    SAME_CERTIFICATE = "same_certificate"  # not asked: the server gave one certificate whatever the SNI
    NOT_CHECKED = "not_checked"  # beyond the per-address cap of SNI sessions: no verdict on the name
    SESSION_FAILED = "session_failed"  # the SNI session for this name failed (see the sessions table)


class SessionKind(str, Enum):
    """Why a handshake-only STARTTLS session beyond the full probe was opened."""

    NO_SNI = "no_sni"  # the certificate a sender that sends no SNI receives
    SNI = "sni"  # a further MX host name on the same address, with its own SNI
    RECHECK = "recheck"  # a question re-asked because two sessions of the address disagreed


class SessionFact(str, Enum):
    """Facts that two sessions of one address can contradict (load balancers mixing configurations)."""

    CERTIFICATE = "certificate"  # another leaf certificate for the same SNI (or the same absence of SNI)
    STARTTLS = "starttls"  # STARTTLS advertised in one session, missing in another
    VERSION = "version"  # a protocol version accepted in one session, refused in another


class StsMode(str, Enum):
    """MTA-STS policy mode (RFC 8461 §5). Here, not in scanner.policy, so grading reads it without
    importing the policy fetches."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"
