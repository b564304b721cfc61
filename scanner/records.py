"""Records the stages hand each other: what a domain's verdicts need from a probe (``ProbeSummary`` and
its keys) and one line of the input (``InputLine``).

A leaf module (certificate and TLS result types, status enums; no engine, no I/O): the scheduler
(scanner.probing) builds summaries, the summary cache (scanner.probe_cache) stores them, the verdicts
(scanner.verdicts) read them and resume (scanner.output.probe_rows) rebuilds them from committed rows,
without any of these importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.certs import CertificateInfo, TrustStatus
from scanner.status import CertSource, FailureClass, Phase, ProbeStatus
from scanner.tls.enumeration import EnumerationResult

__all__ = ["InputLine", "ProbeSummary", "SmtpProbeResult", "TlsInfo", "link_key", "probe_id"]


@dataclass(frozen=True, slots=True)
class InputLine:
    """One meaningful input line (scanner.input). Exactly one of ``domain`` / ``error`` is set."""

    line_no: int  # 1-based line number in the input
    raw: str  # the line as read (trimmed, capped at scanner.input.RAW_KEEP characters)
    domain: str | None  # normalized A-label form, lower case, no trailing dot
    error: str | None  # why the line is not a valid domain
    rank: int | None = None  # the list's rank of a Tranco-style "rank,domain" line (None for a bare domain)


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """What a domain's verdicts need from a probe (the full row has already gone to the writer).

    Kept for every distinct address of the scan, so it holds only what grading and DANE read.
    """

    probe_id: str
    status: ProbeStatus
    leaf: CertificateInfo | None
    chain: tuple[bytes, ...]  # DER as presented, for DANE matching
    cert_trust: TrustStatus | None
    cert_expired: bool | None
    cert_self_signed: bool | None
    plaintext_after_starttls: bool
    enumeration: EnumerationResult | None
    sni: str | None = None  # server name the certificate fields were obtained with
    no_sni_sha256: str | None = None  # leaf presented without SNI (scanner.sni)
    sni_selects: bool | None = None
    inconsistent: tuple[str, ...] = ()  # SessionFact values two sessions disagreed on (worst answer kept)
    # For a link's view of the address (ProbeService.link): which certificate the fields hold.
    cert_source: CertSource | None = None
    # False for a ``not_checked`` view that a later ask of the same name may turn into a session
    # (scanner.sni.decide_name): the caller uses it once and caches nothing.
    view_settled: bool = True

    @property
    def chain_trusted_and_current(self) -> bool:
        """Trusted and within its validity period (the certificate part of RFC 8461 §5 compliance)."""
        return self.cert_trust is TrustStatus.TRUSTED and not self.cert_expired


def probe_id(address: str, port: int) -> str:
    return f"{address}|{port}"


def link_key(probe_key: str, host: str) -> str:
    """Key of a further MX name's SNI session result in the summary cache."""
    return f"{probe_key}|sni={host}"


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What a completed handshake negotiated and what the server presented."""

    version: str  # "TLSv1.3", ...
    cipher: str  # OpenSSL name of the negotiated suite
    cipher_bits: int | None
    chain: tuple[bytes, ...]  # DER, as presented, leaf first
    chain_complete: bool  # False when only the leaf could be obtained from this Python


@dataclass(frozen=True, slots=True)
class SmtpProbeResult:
    status: ProbeStatus
    phase: Phase  # phase in which the probe ended (DONE when it went to the end)
    failure_class: FailureClass | None
    detail: str
    banner: str | None
    banner_code: int | None
    ehlo_code: int | None
    ehlo_greeting: str | None
    ehlo_extensions: tuple[str, ...]
    used_helo: bool
    starttls_advertised: bool | None  # None when EHLO never answered
    starttls_code: int | None
    starttls_text: str | None
    plaintext_after_starttls: bool  # RFC 3207 §4.2: server sent bytes after its 220 (injection risk)
    tls: TlsInfo | None
    timings_ms: dict[Phase, float]
    total_ms: float
