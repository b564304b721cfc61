"""DNS messages on the wire (RFC 1035 §4): build a query, parse a reply. A codec: no I/O.

Only what a stub resolver needs is parsed: the header, the question (to match a reply to its
query), the answer section's CNAME, MX, A, AAAA, TXT and TLSA records and the OPT record (extended
RCODE, DO bit, Extended DNS Errors); other sections and types are skipped by their lengths. Every
malformation raises ``WireError``, never another exception, so the transport can drop a bad datagram
and keep waiting for the real answer (RFC 5452 §9.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["RCODE_NOERROR", "RCODE_NXDOMAIN", "RCODE_REFUSED", "RCODE_SERVFAIL", "TYPES", "NameTooLong", "Record",
           "Reply", "WireError", "build_query", "parse_reply", "reply_id"]

# RFC 1035 §3.2.2, RFC 3596 §2.1 (AAAA), RFC 6698 §7.1 (TLSA).
TYPES: Final = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}
_TYPE_A, _TYPE_CNAME, _TYPE_MX, _TYPE_TXT, _TYPE_AAAA, _TYPE_OPT, _TYPE_TLSA = 1, 5, 15, 16, 28, 41, 52
# Header flags (RFC 1035 §4.1.1; AD and CD: RFC 4035 §3.2) and the EDNS DO bit (RFC 3225 §3).
_FLAG_RD, _FLAG_RA, _FLAG_AD = 0x0100, 0x0080, 0x0020
_EDNS_DO = 0x8000
# RFC 8914 §2: the Extended DNS Error option.
_OPTION_EDE = 15
_CLASS_IN = 1
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 2, 3, 5
# RFC 6891 §6.2.5 and the DNS Flag Day 2020 advice: 1232 bytes avoids IP fragmentation.
EDNS_PAYLOAD: Final = 1232
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_MAX_POINTERS = 64  # a name of at most 127 labels needs far fewer; more means a pointer loop


class WireError(ValueError):
    """The bytes are not a well-formed DNS reply."""


class NameTooLong(WireError):
    """A name of more than 255 octets on the wire (RFC 1035 §2.3.4): it cannot exist, so is never asked."""


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
    # What a DNSSEC-aware caller reads (TLSA for DANE): the AD and RA header bits, whether the reply's
    # OPT record has DO set (RFC 3225 §3: a resolver that understood DO echoes it), its EDEs.
    authenticated: bool = False
    recursion_available: bool = False
    dnssec_ok: bool = False
    extended_errors: tuple[tuple[int, str], ...] = ()  # (INFO-CODE, EXTRA-TEXT), RFC 8914 §2


# One length octet per possible label length (RFC 1035 §3.1: 1-63), built once.
_LABEL_LENGTH: Final = tuple(bytes((n,)) for n in range(64))
# Bytes a label may hold and still print as itself (RFC 1035 §5.1): printable ASCII but the dot and the
# backslash, which are escaped as \DDD like everything else.
_PLAIN: Final = bytes(b for b in range(0x21, 0x7F) if b not in (0x2E, 0x5C))
# What follows the name in every query: QTYPE, QCLASS IN and the EDNS0 OPT record (RFC 6891 §6.1.2).
_OPT: Final = b"\0" + struct.pack("!HHIH", _TYPE_OPT, EDNS_PAYLOAD, 0, 0)
_QUESTION_TAIL: Final = {rtype: struct.pack("!HH", rtype, _CLASS_IN) + _OPT for rtype in TYPES.values()}
_OPT_DO: Final = b"\0" + struct.pack("!HHIH", _TYPE_OPT, EDNS_PAYLOAD, _EDNS_DO, 0)


def _encode_name(name: str) -> bytes:
    stripped = name.rstrip(".")
    if not stripped:  # "." is the root: no label
        return b"\0"
    try:
        raw = stripped.encode("ascii")
    except UnicodeEncodeError:
        raise WireError(f"non-ASCII label in {name[:60]!r} (IDNs are queried as A-labels)") from None
    parts: list[bytes] = []
    for label in raw.split(b"."):
        if not 0 < len(label) <= 63:
            raise WireError(f"bad label length in {name!r}")
        parts += (_LABEL_LENGTH[len(label)], label)
    parts.append(b"\0")
    out = b"".join(parts)
    if len(out) > 255:
        raise NameTooLong(f"name longer than 255 octets: {name[:60]!r}...")
    return out


def build_query(qid: int, name: str, rtype: int, *, dnssec: bool = False) -> bytes:
    """A recursive query (RD=1) with an EDNS0 OPT record advertising ``EDNS_PAYLOAD`` (RFC 6891).

    ``dnssec`` sets the DO bit (RFC 3225) and AD in the query, which asks a validating resolver for the
    AD bit in its reply without needing the signatures themselves (RFC 6840 §5.7).
    """
    if dnssec:
        return (_HEADER.pack(qid, _FLAG_RD | _FLAG_AD, 1, 0, 0, 1) + _encode_name(name)
                + struct.pack("!HH", rtype, _CLASS_IN) + _OPT_DO)
    tail = _QUESTION_TAIL.get(rtype)
    if tail is None:
        tail = struct.pack("!HH", rtype, _CLASS_IN) + _OPT
    return _HEADER.pack(qid, _FLAG_RD, 1, 0, 0, 1) + _encode_name(name) + tail


def reply_id(data: bytes) -> int | None:
    """The message ID, or None if ``data`` is too short to be DNS."""
    return int.from_bytes(data[:2], "big") if len(data) >= _HEADER.size else None


def _label_text(raw: bytes) -> str:
    # RFC 1035 §5.1 presentation form: bytes outside printable ASCII, and the dot, as \DDD.
    if not raw.translate(None, _PLAIN):
        return raw.decode("ascii").lower()
    return "".join(chr(b).lower() if 0x21 <= b < 0x7F and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw)


def _names_text(labels: list[bytes]) -> str:
    """The presentation form of a label sequence; one pass over the joined bytes when all labels are plain."""
    joined = b".".join(labels)
    # Deleting the plain bytes leaves exactly the separating dots unless some label needs escaping (or
    # holds a dot itself): then each label is converted on its own.
    if len(joined.translate(None, _PLAIN)) == len(labels) - 1:
        return joined.decode("ascii").lower()
    return ".".join(_label_text(label) for label in labels)


# Names already read from this message, by the offset they start at: (text, octets on the wire). Only
# names read without a pointer are kept, so that a pointer to one counts exactly as reading it again
# would (one pointer, the same length) and the checks below see the same numbers.
_Memo = dict[int, tuple[str, int]]


def _read_name(data: bytes, offset: int, memo: _Memo | None = None) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers, RFC 1035 §4.1.4) and the offset after it."""
    labels: list[bytes] = []
    start = offset
    end: int | None = None
    pointers = 0
    length_total = 1
    size = len(data)
    while True:
        if offset >= size:
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                raise WireError("truncated compression pointer")
            pointers += 1
            if pointers > _MAX_POINTERS:
                raise WireError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            known = memo.get(offset) if memo is not None and pointers == 1 else None
            if known is not None:  # the rest of the name was read before (typically the question's)
                suffix, suffix_length = known
                if length_total + suffix_length - 1 > 255:
                    raise WireError("name too long or truncated")
                if not labels:
                    return suffix, end
                prefix = _names_text(labels)
                return (f"{prefix}.{suffix}" if suffix else prefix), end
            continue
        if length & 0xC0:
            raise WireError(f"unknown label type {length:#x}")
        if length == 0:
            text = _names_text(labels) if labels else ""
            if memo is not None and end is None:
                memo[start] = (text, length_total)
            return text, (end if end is not None else offset + 1)
        length_total += length + 1
        if length_total > 255 or offset + 1 + length > size:
            raise WireError("name too long or truncated")
        labels.append(data[offset + 1:offset + 1 + length])
        offset += 1 + length


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the name at ``offset``, without reading it: the owners of the authority and
    additional records (an NXDOMAIN's SOA, the OPT record's root) are never used, only stepped over.
    A compression pointer ends a name on the wire (RFC 1035 §4.1.4), so it is not followed."""
    size = len(data)
    while offset < size:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= size:
                break
            return offset + 2
        if length & 0xC0:
            raise WireError(f"unknown label type {length:#x}")
        if length == 0:
            return offset + 1
        offset += 1 + length
    raise WireError("name runs past the end of the message")


def _rdata(data: bytes, rtype: int, start: int, length: int, memo: _Memo) -> str | None:
    end = start + length
    if rtype == _TYPE_A:
        if length != 4:
            raise WireError("A record of the wrong length")
        a, b, c, d = data[start:end]
        return f"{a}.{b}.{c}.{d}"  # as ipaddress writes it, without building the object
    if rtype == _TYPE_AAAA:
        if length != 16:
            raise WireError("AAAA record of the wrong length")
        return str(ipaddress.IPv6Address(data[start:end]))  # RFC 5952 text
    if rtype == _TYPE_CNAME:
        name, after = _read_name(data, start, memo)
        if after > end:
            raise WireError("CNAME runs past its RDATA")
        return name
    if rtype == _TYPE_MX:
        if length < 3:
            raise WireError("MX record too short")
        name, after = _read_name(data, start + 2, memo)
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
    if rtype == _TYPE_TLSA:
        # RFC 6698 §2.1: usage, selector and matching type octets, then the association data; as in
        # the presentation form (§2.2), the data in hex.
        if length < 3:
            raise WireError("TLSA record too short")
        return f"{data[start]} {data[start + 1]} {data[start + 2]} {data[start + 3:end].hex()}"
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
    memo: _Memo = {}
    qname, offset = _read_name(data, _HEADER.size, memo)
    if offset + 4 > len(data):
        raise WireError("truncated question")
    qtype = int.from_bytes(data[offset:offset + 2], "big")
    offset += 4
    truncated = bool(flags & 0x0200)
    answers: list[Record] = []
    for _ in range(ancount):
        if truncated and offset >= len(data):
            break  # a truncated reply may stop anywhere: the caller retries over TCP anyway
        owner, offset = _read_name(data, offset, memo)
        if offset + _RR_FIXED.size > len(data):
            raise WireError("truncated resource record")
        rtype, rclass, _, length = _RR_FIXED.unpack_from(data, offset)
        offset += _RR_FIXED.size
        if offset + length > len(data):
            raise WireError("RDATA runs past the end of the message")
        if rclass == _CLASS_IN:
            value = _rdata(data, rtype, offset, length, memo)
            if value is not None:
                answers.append(Record(owner, rtype, value))
        offset += length
    extended, dnssec_ok, errors = _opt(data, offset, nscount, arcount)
    return Reply(qid, (flags & 0x000F) | (extended << 4), truncated, qname, qtype, tuple(answers),
                 authenticated=bool(flags & _FLAG_AD), recursion_available=bool(flags & _FLAG_RA),
                 dnssec_ok=dnssec_ok, extended_errors=errors)


_NO_OPT: Final[tuple[int, bool, tuple[tuple[int, str], ...]]] = (0, False, ())


def _opt(data: bytes, offset: int, nscount: int,
         arcount: int) -> tuple[int, bool, tuple[tuple[int, str], ...]]:
    """From the OPT record (RFC 6891 §6.1.3): the upper 8 bits of the RCODE (BADVERS, 16, exists only
    there), the DO bit and the Extended DNS Errors. Nothing when there is no OPT record, or the sections
    after the answers are cut short (they decide no answer: a damaged tail must not turn a good reply
    into an error)."""
    try:
        for index in range(nscount + arcount):
            offset = _skip_name(data, offset)
            if offset + _RR_FIXED.size > len(data):
                return _NO_OPT
            rtype, _, ttl, length = _RR_FIXED.unpack_from(data, offset)
            offset += _RR_FIXED.size
            if rtype == _TYPE_OPT and index >= nscount:
                errors = _extended_errors(data[offset:offset + length]) if length else ()
                return int(ttl >> 24) & 0xFF, bool(ttl & _EDNS_DO), errors
            offset += length
    except WireError:
        return _NO_OPT
    return _NO_OPT


def _extended_errors(options: bytes) -> tuple[tuple[int, str], ...]:
    """The EDE options among an OPT record's options (RFC 6891 §6.1.2: code, length, data), RFC 8914 §2;
    an option cut short ends the list."""
    found = []
    pos = 0
    while pos + 4 <= len(options):
        code, size = struct.unpack_from("!HH", options, pos)
        value = options[pos + 4:pos + 4 + size]
        if len(value) < size:
            break
        if code == _OPTION_EDE and size >= 2:
            found.append((int.from_bytes(value[:2], "big"), value[2:].decode("utf-8", "replace").rstrip("\0")))
        pos += 4 + size
    return tuple(found)
