"""DANE for SMTP (RFC 7672, with RFC 6698 and RFC 7671): TLSA records at ``_25._tcp.<MX host>``. Pure.

The TLSA lookup (``scanner.policy.tlsa_lookup``) hands over a :class:`TlsaLookup` fact: the RRset and
what the resolver said about its authenticity. Everything decided from it is here, on one path:
:func:`judge_dane` is the one DANE decision per MX host and certificate chain (lookup failed, bogus,
no records, or :func:`match_tlsa`), giving a :class:`DaneResult`; :func:`dane_valid` folds a domain's
results, and :func:`dane_sender_verdict` says whether a DANE sender would deliver. The scan
(``scanner.policy.judge``) and ``check_dane`` both go through :func:`judge_dane`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from scanner.certs import NameMatch, TrustStatus, TrustStore, check_chain, match_hostname
from scanner.names import host_key, normalize_host
from scanner.status import DaneDelivery, DaneVerdict, DnsOutcome, DnssecStatus

__all__ = [
    "REFUSING_FINDINGS",
    "DaneDelivery",
    "DaneFinding",
    "DaneLink",
    "DaneResult",
    "DaneSenderVerdict",
    "DaneVerdict",
    "DnssecStatus",
    "TlsaLookup",
    "TlsaMatch",
    "TlsaProblem",
    "TlsaRecord",
    "TlsaSyntaxError",
    "dane_link",
    "dane_sender_verdict",
    "dane_valid",
    "dnssec_status",
    "judge_dane",
    "match_tlsa",
    "mx_bogus_verdict",
    "parse_tlsa_text",
    "tlsa_name",
    "tlsa_problem",
]

# RFC 6698 §2.1 / RFC 7218 registries.
USAGE_PKIX_TA: Final = 0
USAGE_PKIX_EE: Final = 1
USAGE_DANE_TA: Final = 2
USAGE_DANE_EE: Final = 3
SELECTOR_CERT: Final = 0
SELECTOR_SPKI: Final = 1
MATCH_FULL: Final = 0
MATCH_SHA256: Final = 1
MATCH_SHA512: Final = 2
_DIGEST_LENGTHS: Final = {MATCH_SHA256: 32, MATCH_SHA512: 64}


class TlsaProblem(str, Enum):
    """Why a TLSA record is unusable for SMTP (such records are ignored, RFC 7672 §2.2)."""

    PKIX_USAGE = "pkix_usage"  # usage 0/1: not for SMTP, clients treat as unusable (RFC 7672 §3.1.3)
    UNKNOWN_USAGE = "unknown_usage"
    UNKNOWN_SELECTOR = "unknown_selector"
    UNKNOWN_MATCHING_TYPE = "unknown_matching_type"
    DIGEST_LENGTH = "digest_length"  # SHA2-256 data not 32 octets, SHA2-512 not 64: can never match
    EMPTY_DATA = "empty_data"


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def problem(self) -> TlsaProblem | None:
        return tlsa_problem(self)

    @property
    def usable(self) -> bool:
        return self.problem is None

    def text(self) -> str:
        """Presentation form, e.g. ``3 1 1 ab12...`` (RFC 6698 §2.2)."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True, slots=True)
class TlsaSyntaxError:
    """:func:`parse_tlsa_text` could not read the text; ``detail`` says why."""

    detail: str


@dataclass(frozen=True, slots=True)
class TlsaMatch:
    """Result of :func:`match_tlsa`.

    ``matched_depth`` is the index in the presented chain of the certificate the winning record
    matched (0 = leaf). ``name_match`` is only checked for DANE-TA (DANE-EE ignores names and dates,
    RFC 7672 §3.1.1) and only when reference names were given.
    """

    verdict: DaneVerdict
    detail: str
    matched: TlsaRecord | None = None
    matched_depth: int | None = None
    name_match: NameMatch = NameMatch.NOT_CHECKED
    usable: int = 0
    unusable: tuple[tuple[TlsaRecord, TlsaProblem], ...] = ()

    @property
    def pkix_only(self) -> bool:
        """Every record is PKIX-TA(0)/PKIX-EE(1): published, but useless for SMTP."""
        return (
            self.usable == 0
            and bool(self.unusable)
            and all(problem is TlsaProblem.PKIX_USAGE for _, problem in self.unusable)
        )


@dataclass(frozen=True, slots=True)
class TlsaLookup:
    name: str
    outcome: DnsOutcome
    records: tuple[TlsaRecord, ...] = ()
    dnssec: DnssecStatus = DnssecStatus.UNKNOWN
    detail: str = ""
    server: str | None = None  # the resolver that answered
    elapsed_ms: float = 0.0
    name_too_long: bool = False  # the TLSA owner name cannot exist (see DaneVerdict.NAME_TOO_LONG)


@dataclass(frozen=True, slots=True)
class DaneResult:
    """One MX host's DANE picture: TLSA lookup, DNSSEC status and the match against its chain."""

    mx_host: str
    lookup: TlsaLookup
    match: TlsaMatch = field(default_factory=lambda: TlsaMatch(DaneVerdict.NO_RECORDS, "no TLSA records"))

    @property
    def verdict(self) -> DaneVerdict:
        return self.match.verdict

    @property
    def dnssec(self) -> DnssecStatus:
        return self.lookup.dnssec


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


def tlsa_problem(record: TlsaRecord) -> TlsaProblem | None:
    """Why ``record`` is unusable for SMTP, or None if it is usable (RFC 7672 §3.1, RFC 6698 §2.1)."""
    if record.usage in (USAGE_PKIX_TA, USAGE_PKIX_EE):
        return TlsaProblem.PKIX_USAGE
    if record.usage not in (USAGE_DANE_TA, USAGE_DANE_EE):
        return TlsaProblem.UNKNOWN_USAGE
    if record.selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        return TlsaProblem.UNKNOWN_SELECTOR
    if record.mtype not in (MATCH_FULL, MATCH_SHA256, MATCH_SHA512):
        return TlsaProblem.UNKNOWN_MATCHING_TYPE
    if not record.data:
        return TlsaProblem.EMPTY_DATA
    expected = _DIGEST_LENGTHS.get(record.mtype)
    if expected is not None and len(record.data) != expected:
        return TlsaProblem.DIGEST_LENGTH
    return None


_TLSA_TEXT_RE: Final = re.compile(r"\s*(\d{1,3})\s+(\d{1,3})\s+(\d{1,3})\s+([0-9A-Fa-f\s]+?)\s*")


def parse_tlsa_text(text: str) -> TlsaRecord | TlsaSyntaxError:
    """Read a TLSA RDATA presentation string ``usage selector mtype hex`` (RFC 6698 §2.2).

    The hex may contain whitespace. Each number must fit an octet. Never raises.
    """
    found = _TLSA_TEXT_RE.fullmatch(text)
    if found is None:
        return TlsaSyntaxError(f"not 'usage selector mtype hex': {text[:80]!r}")
    numbers = [int(found.group(i)) for i in (1, 2, 3)]
    if any(n > 255 for n in numbers):
        return TlsaSyntaxError(f"a field exceeds 255: {numbers}")
    digits = "".join(found.group(4).split())
    if len(digits) % 2:
        return TlsaSyntaxError("odd number of hex digits")
    return TlsaRecord(numbers[0], numbers[1], numbers[2], bytes.fromhex(digits))


def tlsa_name(mx_host: str, port: int = 25) -> str:
    """The TLSA owner name for an MX host: ``_25._tcp.<host>`` (RFC 6698 §3, RFC 7672 §3)."""
    host = host_key(mx_host)
    return f"_{port}._tcp.{host}"


# --------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------


def _selected(der: bytes, selector: int) -> bytes | None:
    """The bytes a selector covers: the whole certificate, or its SubjectPublicKeyInfo.

    Full-certificate matching works on the raw DER, so even a certificate we cannot parse can match
    a ``x 0 x`` record; SPKI needs a parse (None if it fails).
    """
    if selector == SELECTOR_CERT:
        return der
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    # Hostile DER, or a key algorithm cryptography does not support: no SPKI to compare, so this
    # certificate cannot match an SPKI record (a full-certificate record can still match it).
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _association(content: bytes, mtype: int) -> bytes:
    if mtype == MATCH_SHA256:
        return hashlib.sha256(content).digest()
    if mtype == MATCH_SHA512:
        return hashlib.sha512(content).digest()
    return content


def record_matches(record: TlsaRecord, der: bytes) -> bool:
    """Does a usable ``record`` match one DER certificate (RFC 6698 §2.1.2-§2.1.3)?"""
    content = _selected(der, record.selector)
    return content is not None and hmac.compare_digest(_association(content, record.mtype), record.data)


@dataclass(frozen=True, slots=True)
class _TaOutcome:
    verdict: DaneVerdict
    detail: str
    record: TlsaRecord
    depth: int
    name_match: NameMatch


def _judge_ta(
    record: TlsaRecord, depth: int, chain_der: Sequence[bytes], reference_names: Sequence[str], now: datetime
) -> _TaOutcome:
    """A DANE-TA record matched certificate ``depth``: does the leaf chain to it, and carry the name?

    The matched certificate becomes the only trust anchor and the scanner's ordinary chain check
    (``check_chain``: signatures, validity dates, CA constraints) runs against it; RFC 7672 §3.1.2
    keeps PKIX chain validation for DANE-TA, only the anchor changes.
    """
    try:
        anchor = x509.load_der_x509_certificate(chain_der[depth])
    except ValueError as exc:
        return _TaOutcome(
            DaneVerdict.TA_CHAIN_INVALID, f"matched TA is unparseable: {exc}", record, depth, NameMatch.NOT_CHECKED
        )
    verdict = check_chain(chain_der, TrustStore.from_certificates([anchor], "DANE-TA"), now)
    if verdict.trust is not TrustStatus.TRUSTED or verdict.leaf is None:
        detail = (
            f"leaf does not chain to the DANE-TA certificate #{depth}: {verdict.trust.value}: {verdict.trust_detail}"
        )
        return _TaOutcome(DaneVerdict.TA_CHAIN_INVALID, detail, record, depth, NameMatch.NOT_CHECKED)
    if not reference_names:
        return _TaOutcome(
            DaneVerdict.MATCH, f"DANE-TA at depth {depth}, name not checked", record, depth, NameMatch.NOT_CHECKED
        )
    matches = [match_hostname(verdict.leaf, name) for name in reference_names]
    best = next((m for m in matches if m in (NameMatch.SAN, NameMatch.COMMON_NAME)), NameMatch.MISMATCH)
    if best is NameMatch.MISMATCH:
        detail = f"DANE-TA chain valid, but the leaf names none of {', '.join(reference_names)}"
        return _TaOutcome(DaneVerdict.NAME_MISMATCH, detail, record, depth, best)
    return _TaOutcome(DaneVerdict.MATCH, f"DANE-TA at depth {depth}", record, depth, best)


_TA_RANK: Final = {DaneVerdict.MATCH: 0, DaneVerdict.NAME_MISMATCH: 1, DaneVerdict.TA_CHAIN_INVALID: 2}


def match_tlsa(
    records: Sequence[TlsaRecord],
    chain_der: Sequence[bytes] | None,
    *,
    reference_names: Sequence[str] = (),
    now: datetime | None = None,
) -> TlsaMatch:
    """Authenticate a presented chain (leaf first, as sent) against a TLSA RRset.

    * DANE-EE(3) records are compared with the leaf only; names and dates are ignored (RFC 7672
      §3.1.1).
    * DANE-TA(2) records are compared with every certificate after the leaf (the anchor may be the
      chain's top or an intermediate; RFC 7671 §5.2.2 requires the server to send it). A match counts
      only if the leaf validly chains to that certificate at ``now`` and, when ``reference_names``
      (MX host name, optionally the next-hop domain: RFC 7672 §3.2.3) are given, names one of them.
    * PKIX-TA(0)/PKIX-EE(1) and malformed records are unusable and ignored (RFC 7672 §2.2, §3.1.3).

    ``now`` defaults to the current time (used for DANE-TA chain validity only). Never raises.
    """
    if not records:
        return TlsaMatch(DaneVerdict.NO_RECORDS, "no TLSA records")
    usable = [r for r in records if tlsa_problem(r) is None]
    unusable = tuple((r, p) for r in records if (p := tlsa_problem(r)) is not None)
    if not usable:
        kinds = ", ".join(sorted({p.value for _, p in unusable}))
        return TlsaMatch(DaneVerdict.NO_USABLE_RECORDS, f"only unusable records ({kinds})", unusable=unusable)
    chain = list(chain_der or ())
    if not chain:
        return TlsaMatch(DaneVerdict.NO_CERTIFICATE, "no certificate to match", usable=len(usable), unusable=unusable)
    for record in usable:
        if record.usage == USAGE_DANE_EE and record_matches(record, chain[0]):
            return TlsaMatch(
                DaneVerdict.MATCH,
                f"DANE-EE {record.selector} {record.mtype} matches the leaf",
                record,
                0,
                NameMatch.NOT_CHECKED,
                len(usable),
                unusable,
            )
    when = now if now is not None else datetime.now(UTC)
    outcomes = [
        _judge_ta(record, depth, chain, reference_names, when)
        for record in usable
        if record.usage == USAGE_DANE_TA
        for depth in range(1, len(chain))
        if record_matches(record, chain[depth])
    ]
    if outcomes:
        best = min(outcomes, key=lambda o: _TA_RANK[o.verdict])
        return TlsaMatch(best.verdict, best.detail, best.record, best.depth, best.name_match, len(usable), unusable)
    return TlsaMatch(
        DaneVerdict.NO_MATCH,
        f"none of {len(usable)} usable records matches the {len(chain)}-certificate chain",
        usable=len(usable),
        unusable=unusable,
    )


# --------------------------------------------------------------------------
# The one DANE decision per MX host (pure)
# --------------------------------------------------------------------------

# Lookup outcomes that say what the RRset is (records, none at all); any other says nothing.
_LOOKED_UP: Final = frozenset({DnsOutcome.ANSWER, DnsOutcome.NODATA, DnsOutcome.NXDOMAIN})


def judge_dane(
    mx_host: str,
    lookup: TlsaLookup,
    chain_der: Sequence[bytes] | None,
    *,
    reference_names: Sequence[str] | None = None,
    now: datetime | None = None,
) -> DaneResult:
    """Judge an MX host's TLSA lookup against the chain it presented (RFC 7672 §2.2, §3).

    A bogus RRset (DNSSEC validation failed) is BOGUS whatever it holds; an owner name that cannot
    exist is NAME_TOO_LONG; a failed lookup (SERVFAIL, timeout, ...) is LOOKUP_FAILED; otherwise the
    records are matched (:func:`match_tlsa`). ``chain_der`` is the STARTTLS chain (leaf first), or
    None/empty without a TLS session. ``reference_names`` defaults to the MX host name (RFC 7672
    §3.2.3). Never raises.
    """
    if lookup.dnssec is DnssecStatus.BOGUS:
        return DaneResult(mx_host, lookup, TlsaMatch(DaneVerdict.BOGUS, lookup.detail))
    if lookup.name_too_long:
        return DaneResult(mx_host, lookup, TlsaMatch(DaneVerdict.NAME_TOO_LONG, lookup.detail))
    if lookup.outcome not in _LOOKED_UP:
        return DaneResult(mx_host, lookup, TlsaMatch(DaneVerdict.LOOKUP_FAILED, lookup.detail))
    names = tuple(reference_names) if reference_names is not None else (normalize_host(mx_host) or mx_host,)
    return DaneResult(mx_host, lookup, match_tlsa(lookup.records, chain_der, reference_names=names, now=now))


def dane_valid(results: Sequence[DaneResult | None]) -> bool | None:
    """Does every MX address of a domain authenticate by DANE (a domain's ``dane_valid``)?

    ``results`` has one entry per MX address the vantage covers, None where TLSA was not looked up.
    False when some chain does not match its TLSA (or there is none to match); when every one matches,
    True only if every RRset is DNSSEC-authenticated (RFC 7672 §2.2), None if the resolver could not
    tell for some, else False. None without addresses or with one not looked up.
    """
    if not results:
        return None
    judged = [r for r in results if r is not None]
    if len(judged) < len(results):
        return None
    if any(r.verdict is not DaneVerdict.MATCH for r in judged):
        return False
    if any(r.dnssec is not DnssecStatus.AUTHENTICATED for r in judged):
        return None if any(r.dnssec is DnssecStatus.UNKNOWN for r in judged) else False
    return True


# --------------------------------------------------------------------------
# Would a DANE sender deliver? (pure)
# --------------------------------------------------------------------------


class DaneFinding(str, Enum):
    """Named DANE defects; each is a domain rule of the rubric (``dane_<value>``, schemas/grading.md)."""

    TLSA_NO_MATCH = "tlsa_no_match"  # authenticated usable TLSA, none matches the chain (RFC 7672 §3.1)
    TLSA_UNUSABLE = "tlsa_unusable"  # authenticated TLSA RRset with no usable record (RFC 7672 §3.1.3, §2.2)
    TLSA_STARTTLS_FAILED = "tlsa_starttls_failed"  # TLSA published, STARTTLS fails: DANE requires it (§2.2)
    TLSA_BOGUS = "tlsa_bogus"  # TLSA lookup failed DNSSEC validation (RFC 7672 §2.2, RFC 4035 §5.5)
    TLSA_UNSIGNED = "tlsa_unsigned"  # TLSA in an unsigned (insecure) zone: senders ignore it (RFC 7672 §2.2)
    MX_BOGUS = "mx_bogus"  # the MX RRset failed DNSSEC validation: validating senders cannot route (§2.2.1)


# Findings after which a DANE sender refuses the MX address (the others are defects it tolerates).
REFUSING_FINDINGS: Final = frozenset(
    {DaneFinding.TLSA_NO_MATCH, DaneFinding.TLSA_STARTTLS_FAILED, DaneFinding.TLSA_BOGUS, DaneFinding.MX_BOGUS}
)


@dataclass(frozen=True, slots=True)
class DaneLink:
    """One (MX host, address) as a DANE sender meets it. ``verdict``/``dnssec`` None: TLSA not checked."""

    mx_host: str
    address: str
    verdict: DaneVerdict | None
    dnssec: DnssecStatus | None
    tested: bool  # the probe gave a definitive STARTTLS answer
    tls_ok: bool  # STARTTLS and the handshake completed

    @property
    def label(self) -> str:
        return f"{self.mx_host} [{self.address}]"


@dataclass(frozen=True, slots=True)
class DaneSenderVerdict:
    delivery: DaneDelivery
    reasons: tuple[str, ...]  # "code: host [address] - why", codes as in DaneFinding plus unknown causes
    findings: tuple[tuple[DaneFinding, str], ...]  # (finding, "host [address]: why") for the rubric


class _Fate(Enum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    UNKNOWN = "unknown"
    NOT_DANE = "not_dane"


_MISMATCH: Final = frozenset({DaneVerdict.NO_MATCH, DaneVerdict.TA_CHAIN_INVALID, DaneVerdict.NAME_MISMATCH})


def _secure_fate(link: DaneLink) -> tuple[_Fate, DaneFinding | None, str]:
    """An authenticated, non-empty TLSA RRset: DANE applies, STARTTLS is mandatory (RFC 7672 §2.2)."""
    unusable = link.verdict is DaneVerdict.NO_USABLE_RECORDS
    if not link.tested:
        return _Fate.UNKNOWN, DaneFinding.TLSA_UNUSABLE if unusable else None, "not_tested: no STARTTLS answer"
    if not link.tls_ok:
        return _Fate.REFUSE, DaneFinding.TLSA_STARTTLS_FAILED, "TLSA published, STARTTLS or the handshake fails"
    if unusable:
        # No usable record: senders still insist on TLS but cannot authenticate (RFC 7672 §3.1.3).
        return _Fate.ACCEPT, DaneFinding.TLSA_UNUSABLE, "authenticated TLSA RRset without a usable record"
    if link.verdict is DaneVerdict.MATCH:
        return _Fate.ACCEPT, None, ""
    if link.verdict in _MISMATCH:
        return _Fate.REFUSE, DaneFinding.TLSA_NO_MATCH, f"authenticated TLSA matches nothing ({link.verdict.value})"
    return _Fate.UNKNOWN, None, f"no_certificate: {link.verdict.value if link.verdict else 'not checked'}"


def _fate(link: DaneLink) -> tuple[_Fate, DaneFinding | None, str]:
    """What a DANE sender does at one MX address, the finding behind it, and why."""
    if link.verdict is None or link.dnssec is None:
        return _Fate.UNKNOWN, None, "not_checked: TLSA not looked up"
    if link.dnssec is DnssecStatus.BOGUS or link.verdict is DaneVerdict.BOGUS:
        return _Fate.REFUSE, DaneFinding.TLSA_BOGUS, "TLSA lookup failed DNSSEC validation"
    if link.verdict is DaneVerdict.LOOKUP_FAILED:
        return _Fate.UNKNOWN, None, "tlsa_lookup_failed: the TLSA query failed"
    if link.verdict is DaneVerdict.NO_RECORDS:
        return _Fate.NOT_DANE, None, ""
    if link.dnssec is DnssecStatus.NOT_AUTHENTICATED:
        return _Fate.NOT_DANE, DaneFinding.TLSA_UNSIGNED, "TLSA published in an unsigned zone: ignored by senders"
    if link.dnssec is DnssecStatus.UNKNOWN:
        return _Fate.UNKNOWN, None, "dnssec_unknown: the resolver did not say whether the TLSA answer validated"
    return _secure_fate(link)


def _combine(fates: list[_Fate]) -> DaneDelivery:
    dane = [f for f in fates if f is not _Fate.NOT_DANE]
    if not dane:
        return DaneDelivery.NOT_DANE
    refused, accepted = _Fate.REFUSE in fates, (_Fate.ACCEPT in fates or _Fate.NOT_DANE in fates)
    if refused and accepted:
        return DaneDelivery.PARTIAL
    if _Fate.UNKNOWN in fates:
        return DaneDelivery.UNKNOWN
    return DaneDelivery.NO if refused else DaneDelivery.YES


def dane_sender_verdict(links: Sequence[DaneLink]) -> DaneSenderVerdict:
    """Would a DANE sender deliver to a domain whose MX addresses are ``links``?

    A DANE sender tries the MX addresses in turn (RFC 5321 §5.1): it refuses an address whose
    authenticated TLSA RRset matches nothing, where STARTTLS fails although TLSA is published, or
    whose TLSA lookup is bogus (RFC 7672 §2.2, §3.1); it reaches MX hosts without (authenticated)
    TLSA as any sender does. An MX address whose fate is unknown keeps the answer ``unknown`` unless
    some address was refused and another accepted (``partial`` either way).
    """
    if not links:
        return DaneSenderVerdict(DaneDelivery.UNKNOWN, ("no_mx_address: nothing to deliver to",), ())
    fates: list[_Fate] = []
    reasons: list[str] = []
    findings: list[tuple[DaneFinding, str]] = []
    for link in links:
        fate, finding, why = _fate(link)
        fates.append(fate)
        if finding is not None:
            findings.append((finding, f"{link.label}: {why}"))
            reasons.append(f"{finding.value}: {link.label} - {why}")
        elif why:
            code, _, text = why.partition(": ")
            reasons.append(f"{code}: {link.label} - {text}")
    # A MX without authenticated TLSA counts as reachable: whether it answers at all is the STARTTLS
    # verdict's question, not DANE's.
    return DaneSenderVerdict(_combine(fates), tuple(reasons), tuple(findings))


def mx_bogus_verdict(domain: str, detail: str) -> DaneSenderVerdict:
    """The MX RRset itself failed validation: no validating sender can route mail (RFC 7672 §2.2.1)."""
    why = f"{domain}: MX lookup failed DNSSEC validation ({detail})"
    return DaneSenderVerdict(DaneDelivery.NO, (f"{DaneFinding.MX_BOGUS.value}: {why}",),
                             ((DaneFinding.MX_BOGUS, why),))




def dane_link(mx_host: str, address: str, result: DaneResult | None, *, tested: bool, tls_ok: bool) -> DaneLink:
    """One MX address as a DANE sender meets it: its :func:`judge_dane` result (None: TLSA not
    looked up) and what the probe found (a definitive STARTTLS answer, a completed handshake)."""
    return DaneLink(mx_host, address, result.verdict if result else None, result.dnssec if result else None,
                    tested=tested, tls_ok=tls_ok)


# --------------------------------------------------------------------------
# Reading a resolver's answer header (pure)
# --------------------------------------------------------------------------


def dnssec_status(*, answered: bool, ad: bool, ra: bool, do_echoed: bool) -> DnssecStatus:
    """Read the authenticity of an answer from its header, without guessing.

    Only a recursive (RA=1), DNSSEC-aware (it echoed our DO bit, RFC 3225 §3) server's AD bit is a
    validation result (RFC 4035 §3.2.3, RFC 6840 §5.7-§5.8). An authoritative-only server (RA=0)
    validates nothing, and a failed query (SERVFAIL may be "bogus" or a plain failure) says nothing.
    """
    if not answered or not ra or not do_echoed:
        return DnssecStatus.UNKNOWN
    return DnssecStatus.AUTHENTICATED if ad else DnssecStatus.NOT_AUTHENTICATED

