"""SMTP TLS Reporting (RFC 8460): the ``_smtp._tls`` TXT record. Pure, no I/O.

:func:`parse_tlsrpt` never raises; :func:`read_tlsrpt` reads the TXT answer fact the policy stage
fetched (``scanner.policy.domain``). The record grammar shared with MTA-STS is ``scanner.policy.txt``'s.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from scanner.names import LABEL_RE, normalize_host
from scanner.policy.txt import WSP, TxtAnswer, TxtRecord, extension, select_records, split_fields
from scanner.status import DnsOutcome, TlsRptStatus

__all__ = ["RuaUri", "TlsRptResult", "TlsRptStatus", "parse_tlsrpt", "read_tlsrpt"]

_VERSION: Final = "v=TLSRPTv1"
# RFC 3986 characters (unreserved, reserved, "%") minus ",", "!" and ";", which RFC 8460 §3 requires
# to be percent-encoded inside a tlsrpt-uri.
_URI_CHARS_RE: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+")
_PCT_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 5322 dot-atom local part (the common case; quoted local parts are percent-encoded in a URI).
_LOCAL_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(frozen=True, slots=True)
class RuaUri:
    """One reporting URI from ``rua=``: its scheme (lower case) and why it is unusable, if it is."""

    uri: str
    scheme: str
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class TlsRptResult:
    status: TlsRptStatus
    detail: str = ""
    rua: tuple[RuaUri, ...] = ()
    candidates: int = 0  # records beginning with v=TLSRPTv1
    ignored: int = 0  # other TXT records at the name
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def valid(self) -> bool:
        return self.status is TlsRptStatus.VALID

    @property
    def schemes(self) -> tuple[str, ...]:
        """Distinct schemes of the valid URIs, in order (e.g. ("mailto", "https"))."""
        return tuple(dict.fromkeys(u.scheme for u in self.rua if u.valid))


def _valid_host(host: str) -> bool:
    """A host name of LDH labels (IDNs accepted and converted); address literals are not."""
    name = normalize_host(host)
    return name is not None and len(name) <= 253 and all(LABEL_RE.fullmatch(label) for label in name.split("."))


def _mailto_problem(rest: str) -> str | None:
    # RFC 6068: mailto:addr-spec[?hfields]; one address (a "," would have to be encoded, §3).
    address = unquote(rest.split("?", 1)[0])
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "mailto: URI without local@domain"
    if not _LOCAL_RE.fullmatch(local):
        return f"bad local part {local!r}"
    if not _valid_host(domain):
        return f"bad mail domain {domain!r}"
    return None


def _https_problem(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        return f"unparseable https URI ({exc})"
    host = parts.hostname
    if not host:
        return "https URI without a host"
    if ":" in host:  # urlsplit strips the brackets of an IPv6 literal
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"bad IPv6 literal {host!r}"
        return None
    return None if _valid_host(host) else f"bad host {host!r}"


def _check_uri(uri: str) -> RuaUri:
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or not scheme:
        return RuaUri(uri, "", "not a URI (no scheme)")
    if not _URI_CHARS_RE.fullmatch(uri):
        return RuaUri(uri, scheme, "characters not allowed in a URI (',', '!', ';' must be %-encoded)")
    if _PCT_RE.search(uri):
        return RuaUri(uri, scheme, "'%' not followed by two hex digits")
    if scheme == "mailto":
        return RuaUri(uri, scheme, _mailto_problem(rest))
    if scheme == "https":
        return RuaUri(uri, scheme, _https_problem(uri))
    return RuaUri(uri, scheme, f"scheme {scheme!r} is neither mailto nor https")


def _parse_fields(fields: list[str]) -> tuple[tuple[RuaUri, ...], tuple[tuple[str, str], ...]] | str:
    rua: tuple[RuaUri, ...] | None = None
    extensions: list[tuple[str, str]] = []
    for field in fields:
        name, sep, value = field.partition("=")
        if name == "rua" and sep:
            if rua is None:  # a repeated rua: the first one counts
                uris = [uri.strip(WSP) for uri in value.split(",")]
                if any(not uri for uri in uris):
                    return f"empty URI in {field!r}"
                rua = tuple(_check_uri(uri) for uri in uris)
        elif (ext := extension(field)) is None:
            return f"malformed field {field!r}"
        else:
            extensions.append(ext)
    if rua is None:
        return "no rua= field"
    return rua, tuple(extensions)


def parse_tlsrpt(texts: Iterable[TxtRecord]) -> TlsRptResult:
    """Interpret the TXT records found at ``_smtp._tls.<domain>`` (RFC 8460 §3).

    Records not beginning with ``v=TLSRPTv1`` are ignored; if not exactly one remains the domain has
    no TLS-RPT policy. The record is VALID only if its syntax is right and every ``rua`` URI is a
    well-formed ``mailto:`` or ``https:`` URI; otherwise INVALID, with each URI's problem in ``rua``.
    """
    candidates, ignored = select_records(texts, _VERSION)
    if not candidates:
        return TlsRptResult(TlsRptStatus.MISSING, "no TXT record begins with v=TLSRPTv1", ignored=ignored)
    if len(candidates) > 1:
        detail = f"{len(candidates)} records begin with v=TLSRPTv1"
        return TlsRptResult(TlsRptStatus.MULTIPLE, detail, candidates=len(candidates), ignored=ignored)
    text = candidates[0]
    if text is None:
        return TlsRptResult(TlsRptStatus.INVALID, "record is not US-ASCII", candidates=1, ignored=ignored)
    fields = split_fields(text, _VERSION)
    parsed = fields if isinstance(fields, str) else _parse_fields(fields)
    if isinstance(parsed, str):
        return TlsRptResult(TlsRptStatus.INVALID, parsed, candidates=1, ignored=ignored)
    rua, extensions = parsed
    bad = [u for u in rua if not u.valid]
    if bad:
        detail = "; ".join(f"{u.uri!r}: {u.problem}" for u in bad)
        return TlsRptResult(TlsRptStatus.INVALID, detail, rua, 1, ignored, extensions)
    return TlsRptResult(TlsRptStatus.VALID, "", rua, 1, ignored, extensions)


def read_tlsrpt(answer: TxtAnswer) -> TlsRptResult:
    """The ``_smtp._tls`` TXT answer read: its records parsed, or why there are none (a failed lookup
    is DNS_ERROR, not "missing": it says nothing about the domain)."""
    if answer.outcome is DnsOutcome.ANSWER:
        return parse_tlsrpt(answer.texts)
    if answer.absent:
        return TlsRptResult(TlsRptStatus.MISSING, answer.why_absent)
    return TlsRptResult(TlsRptStatus.DNS_ERROR, answer.why_failed)
