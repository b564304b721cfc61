"""TXT policy records shared by MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3). Pure, no I/O.

Both records have the same shape: a case-sensitive version tag, then ``;``-separated ``key=value``
fields with the same extension grammar, one record per name (others are ignored, more than one
means no policy). The DNS answer they are read from arrives as a :class:`TxtAnswer` fact, fetched by
the policy stage (``scanner.policy.domain``) and read here and in the two protocol modules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from scanner.names import normalize_host
from scanner.status import DnsOutcome

__all__ = [
    "EXT_NAME_RE",
    "EXT_VALUE_RE",
    "WSP",
    "TxtAnswer",
    "TxtRecord",
    "extension",
    "loose_record_text",
    "select_records",
    "split_fields",
    "starts_record",
    "txt_owner",
    "txt_record_text",
]

WSP: Final = " \t"
# RFC 8461 §3.1 sts-ext-name / sts-ext-value and RFC 8460 §3 tlsrpt-ext-name / tlsrpt-ext-value are
# the same rules: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."), and 1*(%x21-3A / %x3C / %x3E-7E)
# (visible ASCII except "=" and ";").
EXT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
EXT_VALUE_RE: Final = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")

# One TXT resource record as a resolver hands it over: already joined (pycares 5 concatenates the
# character-strings of one record), or as its separate character-strings (dnspython, dnslib).
TxtRecord = str | bytes | Sequence[str | bytes]


@dataclass(frozen=True, slots=True)
class TxtAnswer:
    """Fact: what the resolver answered for the TXT records of ``name`` (nothing read into it yet)."""

    name: str
    outcome: DnsOutcome
    texts: tuple[TxtRecord, ...] = ()
    detail: str = ""

    @property
    def absent(self) -> bool:
        """The name has no TXT record: NXDOMAIN, or NOERROR without one (an empty answer must be
        NOERROR to mean "none"; any failure says nothing)."""
        return self.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.NODATA)

    @property
    def why_absent(self) -> str:
        return f"{self.name}: {self.outcome.value}"

    @property
    def why_failed(self) -> str:
        return self.detail or f"{self.name}: {self.outcome.value}"


def txt_owner(prefix: str, domain: str) -> str:
    """The owner name of a domain's policy record, e.g. ``_mta-sts.<domain>``, ``_smtp._tls.<domain>``."""
    return f"{prefix}.{normalize_host(domain) or domain}"


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
    return not rest or rest[0] in WSP + ";"


def select_records(texts: Iterable[TxtRecord], version: str) -> tuple[list[str | None], int]:
    """The records beginning with the version tag (as ASCII text, None when not ASCII), and how many
    other TXT records were ignored (RFC 8461 §3.1, RFC 8460 §3: records of other uses share the name)."""
    candidates: list[str | None] = []
    ignored = 0
    for record in texts:
        if starts_record(loose_record_text(record), version):
            candidates.append(txt_record_text(record))
        else:
            ignored += 1
    return candidates, ignored


def split_fields(text: str, version: str) -> list[str] | str:
    """Split a ``v=...; k=v; ...`` record into its fields after the version tag.

    ``field-delim = *WSP ";" *WSP``, at least one field, an optional trailing delimiter. Returns the
    fields, or a string saying what is wrong.
    """
    pieces = text[len(version) :].split(";")
    if pieces[0].strip(WSP):
        return f"unexpected text after {version!r}: {pieces[0].strip(WSP)!r}"
    fields = [piece.strip(WSP) for piece in pieces[1:]]
    if fields and not fields[-1]:
        fields.pop()  # one trailing ";" is allowed
    if not fields:
        return f"no field after {version!r}"
    if any(not field for field in fields):
        return "empty field between two ';'"
    return fields


def extension(field: str) -> tuple[str, str] | None:
    """A field as an extension ``(name, value)``, or None when it breaks the extension grammar."""
    name, sep, value = field.partition("=")
    if not sep or not EXT_NAME_RE.fullmatch(name) or not EXT_VALUE_RE.fullmatch(value):
        return None
    return name, value
