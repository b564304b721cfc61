"""DNS messages on the wire (RFC 1035 §4): build a query, parse a reply. A codec: no I/O.

Only what a stub resolver needs is parsed: the header, the question (to match a reply to its
query) and the answer section's CNAME, MX, A, AAAA and TXT records; other sections and types are
skipped by their lengths. Every malformation raises ``WireError``, never another exception, so the
transport can drop a bad datagram and keep waiting for the real answer (RFC 5452 §9.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["RCODE_NOERROR", "RCODE_NXDOMAIN", "RCODE_REFUSED", "RCODE_SERVFAIL", "TYPES", "Record", "Reply",
           "WireError", "build_query", "parse_reply", "reply_id"]

# RFC 1035 §3.2.2, RFC 3596 §2.1 (AAAA).
TYPES: Final = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28}
_TYPE_A, _TYPE_CNAME, _TYPE_MX, _TYPE_TXT, _TYPE_AAAA, _TYPE_OPT = 1, 5, 15, 16, 28, 41
_CLASS_IN = 1
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 2, 3, 5
# RFC 6891 §6.2.5 and the DNS Flag Day 2020 advice: 1232 bytes avoids IP fragmentation.
EDNS_PAYLOAD: Final = 1232
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_MAX_POINTERS = 64  # a name of at most 127 labels needs far fewer; more means a pointer loop


class WireError(ValueError):
    """The bytes are not a well-formed DNS reply."""


@dataclass(frozen=True, slots=True)
class Record:
    owner: str  # lower case, no trailing dot
    rtype: int
    data: str  # A/AAAA: the address; CNAME: the target; MX: "preference exchange"; TXT: the joined text


@dataclass(frozen=True, slots=True)
class Reply:
    qid: int
    rcode: int
    truncated: bool
    qname: str  # lower case, no trailing dot
    qtype: int
    answers: tuple[Record, ...]


def _encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.rstrip(".") else ():  # "." is the root: no label
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError:
            raise WireError(f"non-ASCII label in {name[:60]!r} (IDNs are queried as A-labels)") from None
        if not 0 < len(raw) <= 63:
            raise WireError(f"bad label length in {name!r}")
        out += bytes((len(raw),)) + raw
    out += b"\0"
    if len(out) > 255:
        raise WireError(f"name longer than 255 octets: {name[:60]!r}...")
    return bytes(out)


def build_query(qid: int, name: str, rtype: int) -> bytes:
    """A recursive query (RD=1) with an EDNS0 OPT record advertising ``EDNS_PAYLOAD`` (RFC 6891)."""
    header = _HEADER.pack(qid, 0x0100, 1, 0, 0, 1)
    opt = b"\0" + struct.pack("!HHIH", _TYPE_OPT, EDNS_PAYLOAD, 0, 0)
    return header + _encode_name(name) + struct.pack("!HH", rtype, _CLASS_IN) + opt


def reply_id(data: bytes) -> int | None:
    """The message ID, or None if ``data`` is too short to be DNS."""
    return int.from_bytes(data[:2], "big") if len(data) >= _HEADER.size else None


def _label_text(raw: bytes) -> str:
    # RFC 1035 §5.1 presentation form: bytes outside printable ASCII, and the dot, as \DDD.
    if (raw.isascii() and raw.isalnum()) or all(0x21 <= b < 0x7F and b not in (0x2E, 0x5C) for b in raw):
        return raw.decode("ascii").lower()
    return "".join(chr(b).lower() if 0x21 <= b < 0x7F and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers, RFC 1035 §4.1.4) and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    pointers = 0
    length_total = 1
    while True:
        if offset >= len(data):
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise WireError("truncated compression pointer")
            pointers += 1
            if pointers > _MAX_POINTERS:
                raise WireError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise WireError(f"unknown label type {length:#x}")
        if length == 0:
            return ".".join(labels), (end if end is not None else offset + 1)
        length_total += length + 1
        if length_total > 255 or offset + 1 + length > len(data):
            raise WireError("name too long or truncated")
        labels.append(_label_text(data[offset + 1:offset + 1 + length]))
        offset += 1 + length


def _rdata(data: bytes, rtype: int, start: int, length: int) -> str | None:
    end = start + length
    if rtype == _TYPE_A:
        if length != 4:
            raise WireError("A record of the wrong length")
        return str(ipaddress.IPv4Address(data[start:end]))
    if rtype == _TYPE_AAAA:
        if length != 16:
            raise WireError("AAAA record of the wrong length")
        return str(ipaddress.IPv6Address(data[start:end]))
    if rtype == _TYPE_CNAME:
        name, after = _read_name(data, start)
        if after > end:
            raise WireError("CNAME runs past its RDATA")
        return name
    if rtype == _TYPE_MX:
        if length < 3:
            raise WireError("MX record too short")
        name, after = _read_name(data, start + 2)
        if after > end:
            raise WireError("MX runs past its RDATA")
        return f"{int.from_bytes(data[start:start + 2], 'big')} {name}"
    if rtype == _TYPE_TXT:
        # RFC 1035 §3.3.14: one or more <character-string>s, joined into one text as senders read them.
        parts: list[bytes] = []
        pos = start
        while pos < end:
            size = data[pos]
            if pos + 1 + size > end:
                raise WireError("TXT string runs past its RDATA")
            parts.append(data[pos + 1:pos + 1 + size])
            pos += 1 + size
        return b"".join(parts).decode("utf-8", "replace")
    return None


def parse_reply(data: bytes) -> Reply:
    """Parse a reply; raises ``WireError`` for anything malformed (or a query instead of a reply)."""
    if len(data) < _HEADER.size:
        raise WireError("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if not flags & 0x8000:
        raise WireError("not a reply (QR=0)")
    if qdcount != 1:
        raise WireError(f"{qdcount} questions")
    qname, offset = _read_name(data, _HEADER.size)
    if offset + 4 > len(data):
        raise WireError("truncated question")
    qtype = int.from_bytes(data[offset:offset + 2], "big")
    offset += 4
    truncated = bool(flags & 0x0200)
    answers: list[Record] = []
    for _ in range(ancount):
        if truncated and offset >= len(data):
            break  # a truncated reply may stop anywhere: the caller retries over TCP anyway
        owner, offset = _read_name(data, offset)
        if offset + _RR_FIXED.size > len(data):
            raise WireError("truncated resource record")
        rtype, rclass, _, length = _RR_FIXED.unpack_from(data, offset)
        offset += _RR_FIXED.size
        if offset + length > len(data):
            raise WireError("RDATA runs past the end of the message")
        if rclass == _CLASS_IN:
            value = _rdata(data, rtype, offset, length)
            if value is not None:
                answers.append(Record(owner, rtype, value))
        offset += length
    rcode = flags & 0x000F
    extended = _extended_rcode(data, offset, nscount, arcount)
    return Reply(qid, rcode | (extended << 4), truncated, qname, qtype, tuple(answers))


def _extended_rcode(data: bytes, offset: int, nscount: int, arcount: int) -> int:
    """The upper 8 bits of the RCODE, from the OPT record's TTL field (RFC 6891 §6.1.3): BADVERS (16)
    exists only there. 0 when there is no OPT record, or the sections after the answers are cut short
    (they decide no answer: a damaged tail must not turn a good reply into an error)."""
    try:
        for index in range(nscount + arcount):
            _, offset = _read_name(data, offset)
            if offset + _RR_FIXED.size > len(data):
                return 0
            rtype, _, ttl, length = _RR_FIXED.unpack_from(data, offset)
            offset += _RR_FIXED.size + length
            if rtype == _TYPE_OPT and index >= nscount:
                return int(ttl >> 24) & 0xFF
    except WireError:
        return 0
    return 0
