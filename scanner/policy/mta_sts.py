"""MTA-STS (RFC 8461): TXT record, policy file, MX patterns, and the HTTPS policy fetch.

Pure part (no I/O, never raises on any input): :func:`parse_sts_txt`, :func:`parse_policy`,
:func:`mx_matches`, :func:`evaluate`. I/O part: :func:`fetch_policy` (HTTPS with aiohttp) and
:func:`check_mta_sts` (TXT lookup + fetch + evaluation).

Name resolution of the policy host never goes through the system resolver (``getaddrinfo``): the
host is resolved with the scanner's own :class:`~scanner.dns.resolver.DnsResolver`, addresses the
:class:`~scanner.net.addresses.AddressPolicy` refuses are dropped, and aiohttp is handed a resolver
that knows only those addresses and refuses every other name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Final

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult

from scanner.dns.resolver import DnsResolver, QueryResult
from scanner.names import normalize_host
from scanner.net.addresses import AddressPolicy
from scanner.status import DnsOutcome, StsMode
from scanner.version import __version__

# A connection slot for one address (the scan's politeness limiter): ``async with slot(address): ...``.
ConnectionSlot = Callable[[str], AbstractAsyncContextManager[None]]

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_FETCH_ADDRESSES",
    "MAX_POLICY_BYTES",
    "FetchResult",
    "MtaStsResult",
    "MxVerdict",
    "StsError",
    "StsFailure",
    "StsMode",
    "StsPolicy",
    "StsTxtResult",
    "TxtRecord",
    "check_mta_sts",
    "evaluate",
    "fetch_policy",
    "loose_record_text",
    "mx_matches",
    "parse_policy",
    "parse_sts_txt",
    "policy_ssl_context",
    "split_fields",
    "starts_record",
    "txt_record_text",
]

# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT: Final = 31_557_600
# RFC 8461 §3.3 suggests senders limit the policy body to 64 KiB and the fetch to one minute.
MAX_POLICY_BYTES: Final = 64 * 1024
DEFAULT_FETCH_TIMEOUT: Final = 60.0
POLICY_PATH: Final = "/.well-known/mta-sts.txt"
# Addresses of the policy host tried per fetch, each at most once, the next only after the previous
# one refused or was unreachable (as a browser or an MTA moves on to the next address, RFC 8305 §3).
# A policy host has one to a few addresses; without a cap a host with 250 A records cost 31,375
# connection attempts in one fetch (aiohttp retries the whole remaining list after each failure).
MAX_FETCH_ADDRESSES: Final = 4

_STS_VERSION: Final = "v=STSv1"
_WSP: Final = " \t"
# RFC 8461 §3.1 ABNF: sts-id = 1*32(ALPHA / DIGIT); sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT /
# "_" / "-" / "."); sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) (visible ASCII except "=" and ";").
_ID_RE: Final = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE_RE: Final = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# RFC 8461 §3.2: sts-policy-ext-value = sts-policy-vchar *(*(SP / TAB) sts-policy-vchar), where the
# vchars are visible ASCII or any UTF-8 character beyond it.
_POLICY_VALUE_RE: Final = re.compile(r"[^\x00-\x20\x7f]+(?:[ \t]+[^\x00-\x20\x7f]+)*")
# RFC 5321 §4.1.2 sub-domain: Let-dig [Ldh-str]; a DNS label is at most 63 octets (RFC 1035 §2.3.4).
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class StsError(str, Enum):
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


@dataclass(frozen=True, slots=True)
class StsFailure:
    """One typed failure: the class (for GROUP BY) and a human-readable detail."""

    error: StsError
    detail: str


@dataclass(frozen=True, slots=True)
class StsTxtResult:
    """What the ``_mta-sts`` TXT records say.

    ``candidates`` counts records beginning with ``v=STSv1`` (the only ones RFC 8461 §3.1 keeps);
    ``ignored`` counts the other TXT records at the name. ``id`` is set only when ``error`` is None.
    """

    id: str | None
    error: StsError | None
    detail: str
    candidates: int
    ignored: int
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def present(self) -> bool:
        """The domain publishes at least one v=STSv1 record (valid or not)."""
        return self.candidates > 0

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A syntactically valid policy file (RFC 8461 §3.2).

    ``mx`` patterns are lower-case A-labels, in file order, without duplicates. ``notes`` lists
    tolerated deviations (blank lines, a byte-order mark, repeated fields) for the record.
    """

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MxVerdict:
    """How one MX host fares under a policy (RFC 8461 §4).

    ``tls_ok`` is the caller's answer to "STARTTLS worked and the certificate is trusted, unexpired
    and valid for this MX name" (None: not known). ``compliant`` is matched-and-tls_ok (None when the
    pattern matched but TLS is unknown); ``would_reject`` is whether an enforcing sender would refuse
    to deliver to this MX (only ever True in enforce mode).
    """

    mx_host: str
    matched_pattern: str | None
    tls_ok: bool | None
    compliant: bool | None
    would_reject: bool | None

    @property
    def matched(self) -> bool:
        return self.matched_pattern is not None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Outcome of one HTTPS policy fetch. Exactly one of ``policy`` / ``error`` is set."""

    url: str
    policy: StsPolicy | None
    error: StsError | None
    detail: str
    addresses: tuple[str, ...] = ()  # addresses of the policy host we were allowed to contact
    http_status: int | None = None
    content_type: str | None = None
    body_bytes: int | None = None  # bytes read (at most max_bytes + 1)
    elapsed_ms: float = 0.0

    @property
    def fetched(self) -> bool:
        """An HTTP 200 text/plain body within the size cap was received (it may still not parse)."""
        return self.body_bytes is not None and self.error in (None, StsError.POLICY_SYNTAX)


@dataclass(frozen=True, slots=True)
class MtaStsResult:
    """Everything the survey records about one domain's MTA-STS deployment."""

    domain: str
    txt_present: bool
    txt_valid: bool
    txt_id: str | None
    policy_fetched: bool
    policy_valid: bool
    mode: StsMode | None
    max_age: int | None
    mx_patterns: tuple[str, ...]
    unmatched_mx: tuple[str, ...]
    mx_verdicts: tuple[MxVerdict, ...]
    errors: tuple[tuple[StsError, str], ...]
    http_status: int | None = None
    content_type: str | None = None

    @property
    def active(self) -> bool:
        """A conforming sender would apply this policy: valid TXT and a valid fetched policy (§3)."""
        return self.txt_valid and self.policy_valid

    @property
    def error_classes(self) -> tuple[StsError, ...]:
        return tuple(error for error, _ in self.errors)


# --------------------------------------------------------------------------
# TXT records
# --------------------------------------------------------------------------

# One TXT resource record as a resolver hands it over: already joined (pycares 5 concatenates the
# character-strings of one record), or as its separate character-strings (dnspython, dnslib).
TxtRecord = str | bytes | Sequence[str | bytes]


def txt_record_text(record: TxtRecord) -> str | None:
    """One TXT record as text: character-strings concatenated without spaces (RFC 8461 §3.1,
    RFC 8460 §3). None when the record is not US-ASCII (both RFCs define ASCII records)."""
    chunks: Sequence[str | bytes] = [record] if isinstance(record, str | bytes) else record
    parts: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, bytes):
            try:
                parts.append(chunk.decode("ascii"))
            except UnicodeDecodeError:
                return None
        else:
            parts.append(str(chunk))
    text = "".join(parts)
    return text if text.isascii() else None


def loose_record_text(record: TxtRecord) -> str:
    """The record's text with any octet kept (Latin-1 for bytes): for recognising the version tag of a
    record that is then rejected for not being ASCII, rather than ignoring it as someone else's."""
    chunks: Sequence[str | bytes] = [record] if isinstance(record, str | bytes) else record
    return "".join(chunk.decode("latin-1") if isinstance(chunk, bytes) else str(chunk) for chunk in chunks)


def starts_record(text: str, version: str) -> bool:
    """Does ``text`` begin with the version tag as a whole field (``v=STSv1``, then end/WSP/``;``)?"""
    if not text.startswith(version):
        return False
    rest = text[len(version) :]
    return not rest or rest[0] in _WSP + ";"


def split_fields(text: str, version: str) -> list[str] | str:
    """Split a ``v=...; k=v; ...`` record into its fields after the version tag.

    Shared by MTA-STS (§3.1) and TLS-RPT (RFC 8460 §3): ``field-delim = *WSP ";" *WSP``, at least one
    field, an optional trailing delimiter. Returns the fields, or a string saying what is wrong.
    """
    pieces = text[len(version) :].split(";")
    if pieces[0].strip(_WSP):
        return f"unexpected text after {version!r}: {pieces[0].strip(_WSP)!r}"
    fields = [piece.strip(_WSP) for piece in pieces[1:]]
    if fields and not fields[-1]:
        fields.pop()  # one trailing ";" is allowed
    if not fields:
        return f"no field after {version!r}"
    if any(not field for field in fields):
        return "empty field between two ';'"
    return fields


def _parse_sts_fields(fields: list[str]) -> tuple[str, tuple[tuple[str, str], ...]] | str:
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for field in fields:
        name, sep, value = field.partition("=")
        if name == "id" and sep:
            if not _ID_RE.fullmatch(value):
                return f"id {value!r} is not 1-32 letters or digits"
            record_id = record_id or value  # a repeated id: the first one counts
        elif not sep or not _EXT_NAME_RE.fullmatch(name) or not _EXT_VALUE_RE.fullmatch(value):
            return f"malformed field {field!r}"
        else:
            extensions.append((name, value))
    if record_id is None:
        return "no id= field"
    return record_id, tuple(extensions)


def parse_sts_txt(texts: Iterable[TxtRecord]) -> StsTxtResult:
    """Interpret the TXT records found at ``_mta-sts.<domain>`` (RFC 8461 §3.1).

    Records not beginning with ``v=STSv1`` are ignored. If not exactly one remains, or the one that
    remains is invalid (including not being US-ASCII), the domain has no policy. The version tag is
    case-sensitive (``%s`` in the ABNF), so ``v=stsv1`` is not an MTA-STS record at all.
    """
    candidates: list[str | None] = []
    ignored = 0
    for record in texts:
        if starts_record(loose_record_text(record), _STS_VERSION):
            candidates.append(txt_record_text(record))
        else:
            ignored += 1
    if not candidates:
        return StsTxtResult(None, StsError.TXT_MISSING, "no TXT record begins with v=STSv1", 0, ignored)
    if len(candidates) > 1:
        return StsTxtResult(
            None, StsError.TXT_MULTIPLE, f"{len(candidates)} records begin with v=STSv1", len(candidates), ignored
        )
    text = candidates[0]
    if text is None:
        return StsTxtResult(None, StsError.TXT_INVALID, "record is not US-ASCII", 1, ignored)
    fields = split_fields(text, _STS_VERSION)
    parsed = fields if isinstance(fields, str) else _parse_sts_fields(fields)
    if isinstance(parsed, str):
        return StsTxtResult(None, StsError.TXT_INVALID, parsed, 1, ignored)
    record_id, extensions = parsed
    return StsTxtResult(record_id, None, "", 1, ignored, extensions)


# --------------------------------------------------------------------------
# Policy file
# --------------------------------------------------------------------------


def _valid_mx_pattern(value: str) -> str | None:
    """Lower-cased pattern if ``value`` is ``["*."] Domain`` with A-labels (§3.2), else None."""
    if not value.isascii():
        return None  # IDN patterns must be A-labels (§3.2)
    pattern = value.lower()
    domain = pattern[2:] if pattern.startswith("*.") else pattern
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return pattern


@dataclass(slots=True)
class _PolicyFields:
    values: dict[str, str]
    mx: list[str]
    extensions: list[tuple[str, str]]
    notes: list[str]


def _policy_lines(text: str) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    if text.startswith("\ufeff"):
        text = text[1:]
        notes.append("byte-order mark at the start ignored")
    # sts-policy-term = LF / CRLF: split on LF, then drop the CR of a CRLF.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the optional terminator after the last field
    return lines, notes


def _collect_fields(text: str) -> _PolicyFields | StsFailure:
    lines, notes = _policy_lines(text)
    fields = _PolicyFields({}, [], [], notes)
    for number, line in enumerate(lines, start=1):
        if not line.strip(_WSP):
            fields.notes.append(f"line {number}: blank line ignored")
            continue
        name, sep, rest = line.partition(":")
        value = rest.strip(_WSP)  # field-delim = ":" *WSP, and *WSP may end a line
        if not sep or not _EXT_NAME_RE.fullmatch(name) or not _POLICY_VALUE_RE.fullmatch(value):
            return StsFailure(StsError.POLICY_SYNTAX, f"line {number}: not a 'key: value' field: {line[:80]!r}")
        if name == "mx":
            fields.mx.append(value)
        elif name in ("version", "mode", "max_age"):
            if name in fields.values:
                fields.notes.append(f"line {number}: repeated {name!r} ignored (the first one counts)")
            else:
                fields.values[name] = value
        else:
            fields.extensions.append((name, value))  # unknown keys are ignored (§3.2)
    return fields


def _check_fields(fields: _PolicyFields) -> StsPolicy | StsFailure:
    for required in ("version", "mode", "max_age"):
        if required not in fields.values:
            return StsFailure(StsError.POLICY_SYNTAX, f"required field {required!r} missing")
    if fields.values["version"] != "STSv1":
        return StsFailure(StsError.POLICY_SYNTAX, f"version {fields.values['version']!r} is not 'STSv1'")
    try:
        mode = StsMode(fields.values["mode"])  # case-sensitive, like the ABNF
    except ValueError:
        return StsFailure(StsError.POLICY_SYNTAX, f"mode {fields.values['mode']!r} is not enforce, testing or none")
    max_age_text = fields.values["max_age"]
    if not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) <= 10):
        return StsFailure(StsError.POLICY_SYNTAX, f"max_age {max_age_text!r} is not 1-10 digits")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        return StsFailure(StsError.POLICY_SYNTAX, f"max_age {max_age} exceeds {MAX_AGE_LIMIT}")
    patterns: list[str] = []
    for raw in fields.mx:
        pattern = _valid_mx_pattern(raw)
        if pattern is None:
            return StsFailure(StsError.POLICY_SYNTAX, f"mx pattern {raw!r} is not a host name or *.host name")
        patterns.append(pattern)
    # §3.2: at least one mx is required, except in mode none (used to retire a policy, §8.3).
    if not patterns and mode is not StsMode.NONE:
        return StsFailure(StsError.POLICY_SYNTAX, f"no mx field in {mode.value} mode")
    return StsPolicy(
        mode=mode,
        max_age=max_age,
        mx=tuple(dict.fromkeys(patterns)),
        extensions=tuple(fields.extensions),
        notes=tuple(fields.notes),
    )


def parse_policy(body: str | bytes) -> StsPolicy | StsFailure:
    """Parse a policy file (RFC 8461 §3.2). Never raises; failures are POLICY_SYNTAX.

    Field names and the version/mode values are case-sensitive. Blank lines and a leading
    byte-order mark are tolerated (and noted), as deployed senders do; any other line that is not
    ``key: value`` makes the policy invalid.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return StsFailure(StsError.POLICY_SYNTAX, f"body is not UTF-8 ({exc.reason} at byte {exc.start})")
    else:
        text = body
    fields = _collect_fields(text)
    return fields if isinstance(fields, StsFailure) else _check_fields(fields)


# --------------------------------------------------------------------------
# MX matching and evaluation
# --------------------------------------------------------------------------


def mx_matches(pattern: str, mx_host: str) -> bool:
    """Does ``mx_host`` match a policy ``mx`` pattern (RFC 8461 §4.1)?

    Case-insensitive, the MX name's trailing dot ignored. ``*.example.com`` matches exactly one
    extra left-most label: ``mail.example.com`` but neither ``example.com`` nor
    ``a.b.example.com``. A ``*`` anywhere but as the whole left-most label matches nothing.
    Unlike :func:`scanner.certs.hostname_matches_pattern` there is no minimum label count: §4.1
    sets none.
    """
    host = normalize_host(mx_host)
    wanted = pattern.strip().lower()
    if host is None or not wanted or "*" in host:
        return False
    if not wanted.startswith("*."):
        return "*" not in wanted and host == wanted
    suffix = wanted[2:]
    if not suffix or "*" in suffix:
        return False
    first, dot, rest = host.partition(".")
    return bool(first and dot) and rest == suffix


def evaluate(policy: StsPolicy, mx_hosts: Iterable[str], per_mx_tls_ok: Mapping[str, bool]) -> tuple[MxVerdict, ...]:
    """Judge every MX of the domain against ``policy`` (RFC 8461 §4.1-§4.2, §5).

    ``per_mx_tls_ok`` maps an MX host name (any case, trailing dot or not) to whether it passed the
    TLS checks an enforcing sender makes: STARTTLS offered, certificate chains to a trusted root,
    unexpired, and valid for the MX name. A host missing from the map has ``tls_ok`` None.
    """
    tls_by_host: dict[str, bool] = {}
    for name, ok in per_mx_tls_ok.items():
        key = normalize_host(name)
        if key is not None:
            tls_by_host[key] = ok
    enforced = policy.mode is StsMode.ENFORCE
    verdicts: list[MxVerdict] = []
    # The same MX may arrive in several spellings (case, trailing dot): judge each host once.
    for host in dict.fromkeys(normalize_host(raw) or raw for raw in mx_hosts):
        pattern = next((p for p in policy.mx if mx_matches(p, host)), None)
        tls_ok = tls_by_host.get(host)
        # Not matched, or TLS failed: non-compliant. Matched with TLS unknown: unknown (None).
        compliant = False if pattern is None or tls_ok is False else tls_ok
        would_reject = (not compliant if compliant is not None else None) if enforced else False
        verdicts.append(MxVerdict(host, pattern, tls_ok, compliant, would_reject))
    return tuple(verdicts)


# --------------------------------------------------------------------------
# HTTPS fetch
# --------------------------------------------------------------------------


def policy_ssl_context(trust: ssl.SSLContext | str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """Client TLS context for policy fetches (RFC 8461 §3.3).

    ``trust`` is a ready context (used as is), a PEM CA file, or None for certifi's Mozilla roots.
    The certificate must chain to a trusted root, be unexpired and carry ``mta-sts.<domain>`` as a
    DNS-ID: hostname checking is on and the subject CN is never used (RFC 6125 §6.4.4 / RFC 9525).
    """
    if isinstance(trust, ssl.SSLContext):
        return trust
    context = ssl.create_default_context(cafile=os.fspath(trust) if trust is not None else certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = False
    return context


# OpenSSL X509_V_ERR_* codes found in ssl.SSLCertVerificationError.verify_code.
_X509_NOT_YET_VALID: Final = 9
_X509_EXPIRED: Final = 10
_X509_HOSTNAME_MISMATCH: Final = 62


def _tls_failure(exc: aiohttp.ClientSSLError) -> StsFailure:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        code = getattr(cert_error, "verify_code", None)
        message = getattr(cert_error, "verify_message", None) or str(cert_error)
        if code == _X509_HOSTNAME_MISMATCH:
            return StsFailure(StsError.TLS_NAME_MISMATCH, message)
        if code in (_X509_EXPIRED, _X509_NOT_YET_VALID):
            return StsFailure(StsError.TLS_EXPIRED, message)
        return StsFailure(StsError.TLS_UNTRUSTED, message)
    return StsFailure(StsError.TLS_ERROR, str(exc))


class _PinnedResolver(AbstractResolver):
    """An aiohttp resolver that knows one host and its pre-vetted addresses, and nothing else.

    The addresses were resolved through the scanner's resolver and filtered by the address policy
    before this object exists, so aiohttp never reaches ``getaddrinfo`` and cannot connect anywhere
    else (a request for any other name fails).
    """

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        self._host = host
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self._host:
            raise OSError(f"resolver for {self._host} refuses to resolve {host!r}")
        results: list[ResolveResult] = []
        for address in self._addresses:
            addr_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=addr_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no allowed address of family {family!r} for {host}")
        return results

    async def close(self) -> None:
        return None


async def _resolve_policy_host(host: str, resolver: DnsResolver, policy: AddressPolicy) -> tuple[str, ...] | StsFailure:
    """A and AAAA of the policy host through our resolver, minus addresses the policy refuses."""
    if policy.exclude.excludes_name(host):
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host} is on the exclude list")
    answers: list[QueryResult] = list(await asyncio.gather(resolver.query(host, "A"), resolver.query(host, "AAAA")))
    found = [address for answer in answers for address in answer.addresses]
    excluded = policy.exclude.first_excluded(cname for answer in answers for cname in answer.cnames)
    if excluded is not None:  # the opt-out covers every name of the CNAME chain
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host}: CNAME target {excluded} is on the exclude list")
    if not found:
        failures = [a for a in answers if a.outcome not in (DnsOutcome.ANSWER, DnsOutcome.NODATA)]
        detail = "; ".join(a.detail or a.outcome.value for a in failures) or "no A or AAAA record"
        return StsFailure(StsError.POLICY_HOST_DNS, f"{host}: {detail}")
    allowed: list[str] = []
    refused: list[str] = []
    for address in dict.fromkeys(found):
        reason = policy.refusal(ipaddress.ip_address(address))
        if reason is None:
            allowed.append(address)
        else:
            refused.append(f"{address} ({reason.value})")
    if not allowed:
        return StsFailure(StsError.ADDRESS_REFUSED, f"{host}: every address refused: {', '.join(refused)}")
    return tuple(allowed)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    content_type: str | None
    location: str | None
    body: bytes | None  # None when the status already decided the outcome


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes, whatever Content-Length claims."""
    buffer = bytearray()
    while len(buffer) <= max_bytes:
        chunk = await response.content.read(max_bytes + 1 - len(buffer))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


class _SocketLog:
    """Socket factory for aiohttp that remembers every socket it makes, so they can all be closed.

    aiohttp closes a connection it gives up on (timeout, cancellation, ``Connection: close``) with a
    graceful TLS shutdown that runs in the background, tracked by nobody: against a slow or silent
    server the socket outlives the fetch (and, in a short-lived event loop, the loop). Shutting the
    sockets down makes every such transport see EOF and finish at once.
    """

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def __call__(self, addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        self.sockets.append(sock)
        return sock

    async def close_all(self, grace: float = 1.0) -> None:
        for sock in self.sockets:
            if sock.fileno() != -1:
                with contextlib.suppress(OSError):  # not connected (any more): nothing to shut down
                    sock.shutdown(socket.SHUT_RDWR)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Nothing signals a socket being closed, so poll (briefly: it takes one or two loop turns).
        while any(sock.fileno() != -1 for sock in self.sockets) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the transports notice EOF and close their sockets


async def _http_get(
    url: str,
    host: str,
    addresses: Sequence[str],
    context: ssl.SSLContext,
    timeout: float,
    max_bytes: int,
    sockets: _SocketLog,
) -> _Response:
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(host, addresses),
        ssl=context,
        use_dns_cache=False,
        force_close=True,
        limit=1,
        socket_factory=sockets,
    )
    headers = {
        "User-Agent": f"smtp-tls-survey/{__version__} (MTA-STS policy check)",
        # Compressed bodies would make the byte cap apply to the wrong thing; ask for none.
        "Accept-Encoding": "identity",
    }
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    # trust_env=False (the default) keeps proxy variables out: the fetch goes straight to the host.
    async with (
        aiohttp.ClientSession(connector=connector, timeout=client_timeout, headers=headers) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        content_type = response.headers.get("Content-Type")
        if response.status != 200:
            return _Response(response.status, content_type, response.headers.get("Location"), None)
        return _Response(200, content_type, None, await _read_capped(response, max_bytes))


async def _http_exchange(
    url: str, host: str, addresses: Sequence[str], context: ssl.SSLContext, timeout: float, max_bytes: int
) -> _Response | StsFailure:
    """One GET under a total deadline, every client failure mapped to its StsError."""
    sockets = _SocketLog()
    try:
        async with asyncio.timeout(timeout):
            return await _http_get(url, host, addresses, context, timeout, max_bytes, sockets)
    except TimeoutError:
        return StsFailure(StsError.FETCH_TIMEOUT, f"no complete response within {timeout:g}s")
    except aiohttp.ClientSSLError as exc:
        return _tls_failure(exc)
    except aiohttp.ClientConnectorError as exc:
        return StsFailure(StsError.FETCH_CONNECT, f"{exc.host}:{exc.port}: {exc.os_error}")
    except aiohttp.ClientError as exc:  # malformed response, disconnect mid-body, ...
        return StsFailure(StsError.HTTP_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        await sockets.close_all()


def _judge_response(url: str, response: _Response, max_bytes: int) -> tuple[StsPolicy | None, StsFailure | None]:
    if 300 <= response.status < 400:
        return None, StsFailure(StsError.HTTP_REDIRECT, f"HTTP {response.status} to {response.location!r}")
    if response.status != 200 or response.body is None:
        return None, StsFailure(StsError.HTTP_STATUS, f"HTTP {response.status} for {url}")
    if _media_type(response.content_type) != "text/plain":
        return None, StsFailure(StsError.MEDIA_TYPE, f"Content-Type {response.content_type!r} is not text/plain")
    if len(response.body) > max_bytes:
        return None, StsFailure(StsError.TOO_LARGE, f"body exceeds {max_bytes} bytes")
    parsed = parse_policy(response.body)
    if isinstance(parsed, StsFailure):
        return None, parsed
    return parsed, None


async def fetch_policy(
    domain: str,
    *,
    resolver: DnsResolver,
    policy: AddressPolicy,
    trust: ssl.SSLContext | str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    max_bytes: int = MAX_POLICY_BYTES,
    slot: ConnectionSlot | None = None,
) -> FetchResult:
    """Fetch and parse ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

    The policy host is resolved with ``resolver`` (never the system resolver) and only addresses
    ``policy`` allows are contacted. The certificate must validate for ``mta-sts.<domain>`` against
    ``trust`` (see :func:`policy_ssl_context`); redirects are not followed; only HTTP 200 with
    ``text/plain`` counts; at most ``max_bytes + 1`` body bytes are read; ``timeout`` bounds the HTTP
    exchange (connect, TLS, headers and body). Every failure is a typed :class:`StsError`.
    """
    started = time.perf_counter()
    host = f"mta-sts.{normalize_host(domain) or domain}"
    url = f"https://{host}{POLICY_PATH}"
    addresses = await _resolve_policy_host(host, resolver, policy)
    if isinstance(addresses, StsFailure):
        return _fetch_result(url, started, failure=addresses)
    context = policy_ssl_context(trust)

    async def exchange(address: str, remaining: float) -> _Response | StsFailure:
        return await _http_exchange(url, host, (address,), context, remaining, max_bytes)

    response, tried = await _exchange_per_address(host, addresses, exchange, timeout, slot)
    if isinstance(response, StsFailure):
        return _fetch_result(url, started, failure=response, addresses=tried)
    parsed, problem = _judge_response(url, response, max_bytes)
    return FetchResult(
        url=url,
        policy=parsed,
        error=problem.error if problem else None,
        detail=problem.detail if problem else "",
        addresses=tried,
        http_status=response.status,
        content_type=response.content_type,
        body_bytes=len(response.body) if response.body is not None and response.status == 200 else None,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def fetch_order(addresses: Sequence[str]) -> tuple[str, ...]:
    """The first ``MAX_FETCH_ADDRESSES`` addresses, alternating IPv6 and IPv4 (RFC 8305 §4), IPv6 first."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    mixed = [a for pair in itertools.zip_longest(v6, v4) for a in pair if a is not None]
    return tuple(mixed[:MAX_FETCH_ADDRESSES])


async def _exchange_per_address(
    host: str,
    addresses: Sequence[str],
    exchange: Callable[[str, float], Awaitable[_Response | StsFailure]],
    timeout: float,
    slot: ConnectionSlot | None,
) -> tuple[_Response | StsFailure, tuple[str, ...]]:
    """Try the policy host's addresses one at a time until one answers; return what came back and the tried.

    Each address gets one connection, under its own politeness slot (per-address concurrency and
    interval, global connection cap: a hosting provider's policy server sees one fetch at a time from
    us). ``timeout`` bounds the HTTP time of the whole fetch, summed over the addresses; waiting for a
    slot does not count. Only a failure to connect moves on to the next address: anything the server
    said (a TLS alert, an HTTP status, a timeout mid-exchange) is its answer.
    """
    tried: list[str] = []
    remaining = timeout
    response: _Response | StsFailure = StsFailure(StsError.FETCH_CONNECT, f"{host}: no address to try")
    for address in fetch_order(addresses):
        async with slot(address) if slot else contextlib.nullcontext():
            tried.append(address)
            began = time.monotonic()
            response = await exchange(address, remaining)
            remaining -= time.monotonic() - began
        if not (isinstance(response, StsFailure) and response.error is StsError.FETCH_CONNECT) or remaining <= 0:
            break
    return response, tuple(tried)


def _fetch_result(url: str, started: float, *, failure: StsFailure, addresses: tuple[str, ...] = ()) -> FetchResult:
    return FetchResult(
        url=url,
        policy=None,
        error=failure.error,
        detail=failure.detail,
        addresses=addresses,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


# --------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------


async def lookup_sts_txt(domain: str, resolver: DnsResolver) -> StsTxtResult:
    """Query ``_mta-sts.<domain>`` TXT and parse it; resolver failures become DNS_ERROR."""
    name = f"_mta-sts.{normalize_host(domain) or domain}"
    answer = await resolver.query(name, "TXT")  # an empty answer must be NOERROR to mean "none"
    if answer.outcome is DnsOutcome.ANSWER:
        return parse_sts_txt(answer.texts)
    if answer.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.NODATA):
        return StsTxtResult(None, StsError.TXT_MISSING, f"{name}: {answer.outcome.value}", 0, 0)
    return StsTxtResult(None, StsError.DNS_ERROR, answer.detail or f"{name}: {answer.outcome.value}", 0, 0)


async def check_mta_sts(
    domain: str,
    mx_hosts: Sequence[str],
    *,
    resolver: DnsResolver,
    policy: AddressPolicy,
    trust: ssl.SSLContext | str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    max_bytes: int = MAX_POLICY_BYTES,
    per_mx_tls_ok: Mapping[str, bool] | None = None,
    slot: ConnectionSlot | None = None,
) -> MtaStsResult:
    """TXT lookup, policy fetch and MX evaluation for one domain.

    The policy is fetched whenever at least one ``v=STSv1`` record exists, even an invalid or
    duplicated one: a sender would not use it (``active`` is False), but the survey wants to know
    what the domain's policy host serves. Without any ``v=STSv1`` record nothing is fetched (no
    HTTPS connection to every surveyed domain). ``per_mx_tls_ok`` feeds :func:`evaluate`.
    """
    txt = await lookup_sts_txt(domain, resolver)
    errors: list[tuple[StsError, str]] = []
    if txt.error is not None:
        errors.append((txt.error, txt.detail))
    fetched: FetchResult | None = None
    if txt.present:
        fetched = await fetch_policy(
            domain, resolver=resolver, policy=policy, trust=trust, timeout=timeout, max_bytes=max_bytes, slot=slot
        )
        if fetched.error is not None:
            errors.append((fetched.error, fetched.detail))
    sts_policy = fetched.policy if fetched else None
    verdicts = evaluate(sts_policy, mx_hosts, per_mx_tls_ok or {}) if sts_policy else ()
    return MtaStsResult(
        domain=domain,
        txt_present=txt.present,
        txt_valid=txt.valid,
        txt_id=txt.id,
        policy_fetched=fetched.fetched if fetched else False,
        policy_valid=sts_policy is not None,
        mode=sts_policy.mode if sts_policy else None,
        max_age=sts_policy.max_age if sts_policy else None,
        mx_patterns=sts_policy.mx if sts_policy else (),
        unmatched_mx=tuple(v.mx_host for v in verdicts if not v.matched),
        mx_verdicts=verdicts,
        errors=tuple(errors),
        http_status=fetched.http_status if fetched else None,
        content_type=fetched.content_type if fetched else None,
    )
