"""Inputs found while fuzzing the parsers (worlds/fuzz.py), kept as regressions with their fixes.

The fuzz targets themselves are checked too: on their seed corpus in several chunkings (so the
properties the long runs rely on are known to hold on valid input, and a target that rots is
noticed in CI rather than in the next benchmark run).
"""

from __future__ import annotations

import pytest

from scanner.dns.wire import parse_reply
from scanner.smtp.reply import Reply, ReplyReader, parse_ehlo
from worlds.fuzz import SEEDS, TARGETS, chunked


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_properties_hold_on_the_seed_corpus(name: str) -> None:
    target = TARGETS[name]()
    for seed in SEEDS[name]():
        for selector in (0, 1, 5, 15, 16, 99, 255):  # fixed chunk sizes 1, 2, 6, 16 and PRNG chunkings
            target(bytes([selector]) + seed[1:])


def test_chunked_covers_the_stream_in_order() -> None:
    for data in (b"", b"\x00", b"\x03abcdefghij", b"\xc8" + bytes(range(200))):
        stream, chunks = chunked(data)
        assert b"".join(chunks) == stream == data[1:]
        assert all(chunks)


def _ehlo(raw: bytes) -> tuple[tuple[str, ...], bool]:
    reader = ReplyReader()
    reader.feed(raw)
    reply = reader.next_reply()
    assert isinstance(reply, Reply)
    info = parse_ehlo(reply)
    return info.extensions, info.starttls


def test_long_s_is_not_starttls() -> None:
    # Found while writing the smtp target's STARTTLS invariant: Unicode case mapping turned
    # "\u017fTARTTLS" (LATIN SMALL LETTER LONG S) into "STARTTLS", so a server that never advertised
    # STARTTLS was recorded as advertising it, and got a STARTTLS command. Fix: ASCII-only upper case
    # in scanner.smtp.reply.parse_ehlo.
    extensions, starttls = _ehlo(b"250-mx.example\r\n250-\xc5\xbfTARTTLS\r\n250 8BITMIME\r\n")
    assert extensions == ("\u017fTARTTLS", "8BITMIME") and starttls is False
    extensions, starttls = _ehlo(b"250-mx.example\r\n250-StartTls\r\n250 8BITMIME\r\n")
    assert extensions == ("STARTTLS", "8BITMIME") and starttls is True


def test_an_extended_rcode_is_twelve_bits() -> None:
    # Found by the dns target: its property said an RCODE is at most 15, but an OPT record carries the
    # upper 8 of 12 bits (RFC 6891 §6.1.3: BADVERS is 16), which the codec composes. Fix: the property.
    reply = (b"\x124\x81\x00\x00\x01\x00\x01\x00\x00\x00\x01\x02mx\x07example\x03com\x00\x00\x01\x00\x01"
             b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01,\x00\x04\xc0\x00\x02\x01"
             b"\x00\x00) \x00\xb4T\x00\x00\x00\x00")  # OPT: extended RCODE 0xb4, version 0x54
    assert parse_reply(reply).rcode == 0xB4 << 4
    TARGETS["dns"]()(reply)
