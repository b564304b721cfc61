"""Byte-level tests for the TLS codec: scanner.tls.builder (ClientHello), scanner.tls.parser (server
responses) and worlds.tls_server (the test servers' side)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from dataclasses import FrozenInstanceError

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.sansio import NEED_DATA, NeedData
from scanner.tls import builder, messages
from scanner.tls.builder import ClientHelloSpec, KeyShareEntry
from scanner.tls.messages import (
    Alert,
    BadHandshake,
    BadRecord,
    BufferLimitExceeded,
    Certificate,
    ChangeCipherSpec,
    ConnectionClosed,
    DowngradeSentinel,
    EncryptedRecord,
    Event,
    HandshakeMessageTooLarge,
    InvalidClientHelloSpec,
    NamedGroup,
    NotTls,
    OtherHandshake,
    OtherRecord,
    ParserStateError,
    RecordTooLarge,
    ServerHello,
    ServerHelloDone,
    SSLv2Error,
    SSLv2Record,
    SSLv2ServerHello,
    TlsCodecError,
    TruncatedStream,
)
from scanner.tls.parser import ServerResponseParser
from scanner.tls.versions import TlsVersion
from worlds import tls_server

RANDOM = bytes(range(32))
SERVER_RANDOM = bytes(range(100, 132))
HOST = "mx.example.test"

# --------------------------------------------------------------------------
# helpers (deliberately written with plain byte arithmetic, not the codec)
# --------------------------------------------------------------------------


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return bytes([ctype]) + u16(version) + u16(len(body)) + body


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + u24(len(body)) + body


def server_hello_body(
    *,
    version: int = 0x0303,
    random: bytes = SERVER_RANDOM,
    session_id: bytes = b"",
    suite: int = 0xC02F,
    compression: int = 0,
    extensions: bytes | None = b"",
) -> bytes:
    body = u16(version) + random + bytes([len(session_id)]) + session_id + u16(suite) + bytes([compression])
    if extensions is not None:
        body += u16(len(extensions)) + extensions
    return body


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def certificate_body(certs: Sequence[bytes]) -> bytes:
    chain = b"".join(u24(len(c)) + c for c in certs)
    return u24(len(chain)) + chain


CERTS = (b"\x30\x82" + b"A" * 300, b"\x30\x82" + b"B" * 120)
TLS12_FLIGHT_MESSAGES = (
    handshake(2, server_hello_body(extensions=ext(0xFF01, b"\x00"))),
    handshake(11, certificate_body(CERTS)),
    handshake(12, b"\x03\x00\x1d\x20" + b"K" * 32 + b"\x04\x03" + u16(8) + b"S" * 8),
    handshake(14, b""),
)
TLS12_FLIGHT = record(22, b"".join(TLS12_FLIGHT_MESSAGES))


def expected_tls12_events() -> list[Event]:
    return [
        ServerHello(
            version=0x0303,
            random=SERVER_RANDOM,
            session_id=b"",
            cipher_suite=0xC02F,
            compression=0,
            extensions={0xFF01: b"\x00"},
            selected_version=None,
            selected_group=None,
            is_hello_retry_request=False,
            downgrade_sentinel=None,
            record_version=0x0303,
        ),
        Certificate(CERTS),
        OtherHandshake(12, TLS12_FLIGHT_MESSAGES[2][4:]),
        ServerHelloDone(),
    ]


def drain(parser: ServerResponseParser) -> list[Event]:
    """Events until NEED_DATA or ConnectionClosed (the latter included)."""
    out: list[Event] = []
    for _ in range(10_000):
        ev = parser.next_event()
        if isinstance(ev, NeedData):
            return out
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            return out
    raise AssertionError("parser did not settle")


def parse_all(data: bytes, chunks: Sequence[int] | None = None, *, eof: bool = True) -> list[Event]:
    parser = ServerResponseParser()
    events: list[Event] = []
    for piece in split(data, chunks):
        parser.feed(piece)
        events.extend(drain(parser))
    if eof:
        parser.feed_eof()
        events.extend(drain(parser))
    return events


def split(data: bytes, sizes: Sequence[int] | None) -> Iterator[bytes]:
    if sizes is None:
        yield data
        return
    pos = 0
    for size in sizes:
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size
    if pos < len(data):
        yield data[pos:]


def no_close(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, ConnectionClosed)]


# --------------------------------------------------------------------------
# ClientHello builder
# --------------------------------------------------------------------------


def test_tls12_client_hello_exact_bytes() -> None:
    spec = ClientHelloSpec(
        record_version=0x0301,
        client_version=0x0303,
        cipher_suites=(0xC02F, 0x009C, 0x00FF),
        random=RANDOM,
        server_name=HOST,
        supported_groups=(0x001D, 0x0017),
        signature_algorithms=(0x0403, 0x0804),
        ec_point_formats=(0,),
    )
    name = HOST.encode()
    sni = "0000 0014 0012 00 000f".replace(" ", "")
    exts = (
        bytes.fromhex(sni)
        + name
        + bytes.fromhex("000b 0002 01 00".replace(" ", ""))
        + bytes.fromhex("000a 0006 0004 001d 0017".replace(" ", ""))
        + bytes.fromhex("000d 0006 0004 0403 0804".replace(" ", ""))
    )
    assert len(exts) == 50
    body = bytes.fromhex("0303") + RANDOM + b"\x00" + bytes.fromhex("0006c02f009c00ff") + b"\x01\x00"
    body += u16(50) + exts
    assert len(body) == 97
    expected = bytes.fromhex("16 0301 0065 01 000061".replace(" ", "")) + body
    assert builder.build_client_hello(spec) == expected
    assert builder.encode_client_hello(spec) == expected[5:]


def test_client_hello_parses_back() -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, [0xC02B, 0xC02F], RANDOM, server_name=HOST)
    hello = tls_server.parse_client_hello(builder.build_client_hello(spec))
    assert hello.record_version == 0x0301
    assert hello.client_version == 0x0303
    assert hello.random == RANDOM
    assert hello.session_id == b""
    assert hello.cipher_suites == (0xC02B, 0xC02F, messages.TLS_EMPTY_RENEGOTIATION_INFO_SCSV)
    assert hello.compression_methods == (0,)
    assert hello.extension(0) == u16(len(HOST) + 3) + b"\x00" + u16(len(HOST)) + HOST.encode()
    assert hello.extension(11) == b"\x01\x00"
    sigalgs = hello.extension(13)
    assert sigalgs is not None and sigalgs[:2] == u16(2 * len(builder.TLS12_SIGNATURE_ALGORITHMS))
    assert hello.extension(43) is None  # no supported_versions below 1.3
    assert hello.extension(51) is None


def test_tls13_client_hello_fields() -> None:
    share = builder.key_share_entry(NamedGroup.X25519, bytes(range(1, 33)))
    spec = builder.make_client_hello_spec(
        TlsVersion.TLS13, [0x1301, 0x1302, 0x1303], RANDOM, server_name=HOST, key_shares=[share]
    )
    hello = tls_server.parse_client_hello(builder.build_client_hello(spec))
    assert hello.record_version == 0x0301
    assert hello.client_version == 0x0303  # legacy_version (RFC 8446 §4.1.2)
    assert len(hello.session_id) == 32  # middlebox compatibility mode
    assert hello.cipher_suites == (0x1301, 0x1302, 0x1303)
    assert hello.compression_methods == (0,)
    assert hello.extension(43) == b"\x02\x03\x04"
    assert hello.extension(51) == u16(36) + u16(0x001D) + u16(32) + share.key_exchange
    assert hello.extension(11) is None  # ec_point_formats is ≤1.2 only here
    # Deterministic: same inputs, same bytes.
    assert builder.build_client_hello(spec) == builder.build_client_hello(
        builder.make_client_hello_spec(
            TlsVersion.TLS13, [0x1301, 0x1302, 0x1303], RANDOM, server_name=HOST, key_shares=[share]
        )
    )


def test_empty_key_share_list_is_sent() -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS13, [0x1301], RANDOM)
    hello = tls_server.parse_client_hello(builder.build_client_hello(spec))
    assert hello.extension(51) == b"\x00\x00"


def test_x25519_key_share_matches_rfc7748_vector() -> None:
    # RFC 7748 §6.1, Alice's key pair.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert builder.key_share_entry(NamedGroup.X25519, private) == KeyShareEntry(0x001D, public)


@pytest.mark.parametrize(
    ("group", "curve", "size"),
    [
        (NamedGroup.SECP256R1, ec.SECP256R1(), 65),
        (NamedGroup.SECP384R1, ec.SECP384R1(), 97),
        (NamedGroup.SECP521R1, ec.SECP521R1(), 133),
    ],
)
def test_nist_curve_key_share_is_a_valid_point(group: int, curve: ec.EllipticCurve, size: int) -> None:
    seed = bytes(range(7, 7 + 66))
    share = builder.key_share_entry(group, seed)
    assert share.group == group
    assert len(share.key_exchange) == size and share.key_exchange[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(curve, share.key_exchange)  # raises if off-curve
    assert builder.key_share_entry(group, seed) == share
    assert builder.key_share_entry(group, bytes(66)) != share


def test_key_share_rejects_bad_seed_and_unknown_group() -> None:
    with pytest.raises(InvalidClientHelloSpec):
        builder.key_share_entry(NamedGroup.X25519, bytes(31))
    with pytest.raises(InvalidClientHelloSpec):
        builder.key_share_entry(NamedGroup.SECP384R1, bytes(32))
    with pytest.raises(InvalidClientHelloSpec):
        builder.key_share_entry(0x0100, bytes(32))


def test_sslv3_hello_has_no_extension_block() -> None:
    suites = [0x000A, 0x0005, 0x002F]
    spec = builder.make_client_hello_spec(TlsVersion.SSL3, suites, RANDOM)
    raw = builder.build_client_hello(spec)
    assert raw[:3] == b"\x16\x03\x00"
    hello = tls_server.parse_client_hello(raw)
    assert hello.extensions is None
    assert hello.client_version == 0x0300
    assert hello.cipher_suites == (*suites, 0x00FF)  # RFC 5746 SCSV instead of the extension
    assert hello.message_length == 4 + 2 + 32 + 1 + 2 + 2 * 4 + 2
    assert len(raw) == 5 + hello.message_length


def test_sslv3_spec_refuses_extensions() -> None:
    with pytest.raises(InvalidClientHelloSpec):
        ClientHelloSpec(0x0300, 0x0300, (0x000A,), RANDOM, server_name=HOST)


def test_sslv3_hello_with_legacy_extensions_carries_ec_extensions_and_can_be_padded() -> None:
    spec = builder.make_client_hello_spec(TlsVersion.SSL3, range(1, 150), RANDOM, legacy_extensions=True)
    hello = tls_server.parse_client_hello(builder.build_client_hello(spec))
    assert hello.client_version == 0x0300 and hello.extensions is not None
    types = [t for t, _ in hello.extensions]
    assert {10, 11} <= set(types)  # supported_groups, ec_point_formats
    assert not 256 <= hello.message_length <= 511


def _tls12_spec(n_suites: int, *, avoid_f5_bug: bool = True) -> ClientHelloSpec:
    base = builder.make_client_hello_spec(TlsVersion.TLS12, range(0x1000, 0x1000 + n_suites), RANDOM, server_name=HOST)
    return ClientHelloSpec(
        record_version=base.record_version,
        client_version=base.client_version,
        cipher_suites=base.cipher_suites,
        random=base.random,
        server_name=base.server_name,
        supported_groups=base.supported_groups,
        signature_algorithms=base.signature_algorithms,
        ec_point_formats=base.ec_point_formats,
        avoid_f5_bug=avoid_f5_bug,
    )


def test_f5_padding_keeps_hellos_out_of_256_to_511() -> None:
    padded = 0
    for n in range(1, 260):
        spec = _tls12_spec(n)
        raw = builder.build_client_hello(spec)
        hello = tls_server.parse_client_hello(raw)
        assert not 256 <= hello.message_length <= 511, n
        assert hello.cipher_suites[:-1] == tuple(range(0x1000, 0x1000 + n))
        pad = hello.extension(21)
        unpadded = len(builder.encode_client_hello(_tls12_spec(n, avoid_f5_bug=False)))
        if pad is not None:
            padded += 1
            # Exactly 512, unless even an empty padding extension overshoots.
            assert hello.message_length == max(512, unpadded + 4)
            assert set(pad) <= {0}
            assert hello.extensions is not None and hello.extensions[-1][0] == 21  # padding goes last
        else:
            assert hello.message_length == unpadded
    assert padded > 50  # the range really was hit (and padded)


def test_f5_padding_can_be_disabled() -> None:
    lengths = {
        tls_server.parse_client_hello(builder.build_client_hello(_tls12_spec(n, avoid_f5_bug=False))).message_length
        for n in range(1, 260)
    }
    assert any(256 <= n <= 511 for n in lengths)


def test_f5_padding_for_bare_tls10_hello_adds_extension_block() -> None:
    spec = ClientHelloSpec(0x0301, 0x0301, tuple(range(1, 120)), RANDOM)
    hello = tls_server.parse_client_hello(builder.build_client_hello(spec))
    assert hello.message_length == 512
    assert hello.extensions is not None and [t for t, _ in hello.extensions] == [21]


def test_sslv3_in_f5_range_is_refused() -> None:
    with pytest.raises(InvalidClientHelloSpec, match="F5"):
        builder.build_client_hello(builder.make_client_hello_spec(TlsVersion.SSL3, range(1, 150), RANDOM))
    small = builder.build_client_hello(builder.make_client_hello_spec(TlsVersion.SSL3, range(1, 64), RANDOM))
    assert len(small) - 5 < 256


def test_large_hello_is_fragmented_into_records() -> None:
    spec = ClientHelloSpec(0x0301, 0x0303, (0xC02F,), RANDOM, extra_extensions=((0x7777, b"x" * 20000),))
    raw = builder.build_client_hello(spec)
    first_len = int.from_bytes(raw[3:5], "big")
    assert first_len == 2**14
    assert raw[5 + first_len] == 22
    hello = tls_server.parse_client_hello(raw)
    assert hello.extension(0x7777) == b"x" * 20000


def test_make_spec_scsvs_and_versions() -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS11, [0x002F], RANDOM, fallback_scsv=True)
    assert spec.cipher_suites == (0x002F, 0x00FF, 0x5600)
    assert spec.client_version == 0x0302
    assert spec.signature_algorithms == ()  # RFC 5246: not before TLS 1.2
    spec13 = builder.make_client_hello_spec(TlsVersion.TLS13, [0x1301], RANDOM, supported_versions=[0x0304, 0x0303])
    assert spec13.cipher_suites == (0x1301,)
    assert spec13.supported_versions == (0x0304, 0x0303)
    with pytest.raises(InvalidClientHelloSpec):
        builder.make_client_hello_spec(TlsVersion.SSL2, [1], RANDOM)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"random": bytes(31)},
        {"session_id": bytes(33)},
        {"cipher_suites": ()},
        {"cipher_suites": (0x10000,)},
        {"compression_methods": ()},
        {"server_name": "192.0.2.1"},
        {"server_name": "2001:db8::1"},
        {"server_name": "mx.example.test."},
        {"server_name": "mx.bücher.example"},
        {"server_name": "bad name"},
        {"server_name": ""},
        {"extra_extensions": ((0x7777, b""), (0x7777, b""))},
        {"extra_extensions": ((0, b""),)},
        {"supported_groups": (-1,)},
    ],
)
def test_invalid_specs_are_rejected(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "record_version": 0x0301,
        "client_version": 0x0303,
        "cipher_suites": (0xC02F,),
        "random": RANDOM,
    }
    args.update(kwargs)
    with pytest.raises(InvalidClientHelloSpec) as info:
        ClientHelloSpec(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and isinstance(info.value, TlsCodecError)


def test_spec_is_frozen_and_coerces_lists() -> None:
    spec = ClientHelloSpec(0x0301, 0x0303, [0xC02F], RANDOM, supported_groups=[29])  # type: ignore[arg-type]
    assert spec.cipher_suites == (0xC02F,) and spec.supported_groups == (29,)
    hash(spec)
    with pytest.raises(FrozenInstanceError):
        spec.random = bytes(32)  # type: ignore[misc]


def test_sslv2_client_hello_bytes() -> None:
    challenge = bytes(range(16))
    raw = builder.build_sslv2_client_hello([0x0700C0, 0x010080], challenge)
    body = b"\x01" + b"\x00\x02" + u16(6) + u16(0) + u16(16) + bytes.fromhex("0700c0010080") + challenge
    assert raw == u16(0x8000 | len(body)) + body


# --------------------------------------------------------------------------
# Parser: hand-made flights
# --------------------------------------------------------------------------


def test_tls12_flight_coalesced() -> None:
    assert parse_all(TLS12_FLIGHT) == [*expected_tls12_events(), ConnectionClosed()]


def test_tls12_flight_one_byte_at_a_time() -> None:
    assert parse_all(TLS12_FLIGHT, [1] * len(TLS12_FLIGHT)) == [*expected_tls12_events(), ConnectionClosed()]


def test_tls12_flight_one_record_per_message_and_messages_spanning_records() -> None:
    per_message = b"".join(record(22, m) for m in TLS12_FLIGHT_MESSAGES)
    assert no_close(parse_all(per_message)) == expected_tls12_events()
    payload = b"".join(TLS12_FLIGHT_MESSAGES)
    # Three-byte fragments: every message spans many records, headers too.
    tiny = b"".join(record(22, payload[i : i + 3]) for i in range(0, len(payload), 3))
    assert no_close(parse_all(tiny, [7] * len(tiny))) == expected_tls12_events()


def test_need_data_until_a_record_is_complete() -> None:
    parser = ServerResponseParser()
    parser.feed(TLS12_FLIGHT[:4])
    assert parser.next_event() is NEED_DATA
    parser.feed(TLS12_FLIGHT[4:50])
    assert parser.next_event() is NEED_DATA
    parser.feed(TLS12_FLIGHT[50:])
    assert isinstance(parser.next_event(), ServerHello)


def test_server_hello_without_extensions_block_and_unknown_code_points() -> None:
    body = server_hello_body(version=0x7F1C, suite=0xABCD, compression=7, extensions=None)
    (hello, _) = parse_all(record(22, handshake(2, body), version=0x0999))
    assert isinstance(hello, ServerHello)
    assert (hello.version, hello.cipher_suite, hello.compression, hello.record_version) == (0x7F1C, 0xABCD, 7, 0x0999)
    assert hello.extensions == {} and hello.selected_version is None
    assert hello.negotiated_version == 0x7F1C


def test_unknown_extension_kept() -> None:
    body = server_hello_body(extensions=ext(0x7777, b"abc") + ext(0xFF01, b"\x00"))
    (hello, _) = parse_all(record(22, handshake(2, body)))
    assert isinstance(hello, ServerHello)
    assert dict(hello.extensions) == {0x7777: b"abc", 0xFF01: b"\x00"}


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"DOWNGRD\x01", DowngradeSentinel.TLS12),
        (b"DOWNGRD\x00", DowngradeSentinel.TLS11),
        (b"DOWNGRD\x02", None),
        (b"12345678", None),
    ],
)
def test_downgrade_sentinel(tail: bytes, expected: DowngradeSentinel | None) -> None:
    body = server_hello_body(random=bytes(24) + tail)
    (hello, _) = parse_all(record(22, handshake(2, body)))
    assert isinstance(hello, ServerHello)
    assert hello.downgrade_sentinel == expected
    if expected is not None:
        assert hello.downgrade_sentinel == expected.value  # str-valued: "tls12"/"tls11"


def test_hello_retry_request_then_plaintext_server_hello() -> None:
    hrr = server_hello_body(
        random=messages.HELLO_RETRY_REQUEST_RANDOM,
        suite=0x1302,
        session_id=bytes(32),
        extensions=ext(43, b"\x03\x04") + ext(51, b"\x00\x17") + ext(44, u16(3) + b"ck!"),
    )
    sh = server_hello_body(
        random=SERVER_RANDOM,
        suite=0x1302,
        extensions=ext(43, b"\x03\x04") + ext(51, u16(0x17) + u16(65) + b"\x04" + b"P" * 64),
    )
    stream = record(22, handshake(2, hrr)) + record(20, b"\x01") + record(22, handshake(2, sh)) + record(23, b"secret")
    events = no_close(parse_all(stream, [5, 1, 90, 3]))
    assert [type(e) for e in events] == [ServerHello, ChangeCipherSpec, ServerHello, EncryptedRecord]
    first, _, second, enc = events
    assert isinstance(first, ServerHello) and isinstance(second, ServerHello)
    assert first.is_hello_retry_request and first.selected_group == 0x17 and first.downgrade_sentinel is None
    assert first.selected_version == 0x0304 and first.cipher_suite == 0x1302
    assert not second.is_hello_retry_request and second.selected_group == 0x17
    assert enc == EncryptedRecord(23, 0x0303, b"secret")


def test_tls13_draft_version_server_hello_protects_what_follows() -> None:
    # Draft servers put 0x7Fxx straight into ServerHello.version.
    stream = record(22, handshake(2, server_hello_body(version=0x7F12))) + record(22, b"\x01\x02\x03")
    events = no_close(parse_all(stream))
    assert [type(e) for e in events] == [ServerHello, EncryptedRecord]


def test_tls13_server_hello_must_end_its_record() -> None:
    sh = handshake(2, server_hello_body(extensions=ext(43, b"\x03\x04") + ext(51, u16(29) + u16(32) + bytes(32))))
    with pytest.raises(BadHandshake):
        parse_all(record(22, sh + handshake(8, b"\x00\x00")))


def test_tls12_records_after_change_cipher_spec_are_protected() -> None:
    stream = (
        record(22, handshake(2, server_hello_body()))
        + record(20, b"\x01")
        + record(22, b"\x8a" * 40)  # encrypted Finished
        + record(21, b"\x99" * 26)  # encrypted alert
        + record(21, b"\x02\x28")  # still a plaintext-sized alert
    )
    events = no_close(parse_all(stream))
    assert [type(e) for e in events] == [ServerHello, ChangeCipherSpec, EncryptedRecord, EncryptedRecord, Alert]
    assert events[2] == EncryptedRecord(22, 0x0303, b"\x8a" * 40)


def test_application_data_before_handshake_is_other_record() -> None:
    assert no_close(parse_all(record(23, b"hi") + record(24, b"\x01"))) == [
        OtherRecord(23, 0x0303, b"hi"),
        OtherRecord(24, 0x0303, b"\x01"),
    ]


def test_alerts_single_coalesced_and_split() -> None:
    assert no_close(parse_all(record(21, b"\x02\x46", version=0x0301))) == [Alert(2, 70, 0x0301)]
    assert no_close(parse_all(record(21, b"\x01\x00\x02\x28"))) == [Alert(1, 0, 0x0303), Alert(2, 40, 0x0303)]
    split_alert = record(21, b"\x02") + record(21, b"\x56")
    assert no_close(parse_all(split_alert, [1] * 12)) == [Alert(2, 86, 0x0303)]
    assert no_close(parse_all(record(21, b"\x07\xee"))) == [Alert(7, 0xEE, 0x0303)]  # unknown values kept


def test_alert_after_partial_handshake_is_emitted_in_stream_order() -> None:
    msg = handshake(11, certificate_body(CERTS))
    stream = record(22, msg[:10]) + record(21, b"\x02\x50") + record(22, msg[10:])
    assert parse_all(stream[:22], eof=False) == [Alert(2, 80, 0x0303)]
    assert no_close(parse_all(stream)) == [Alert(2, 80, 0x0303), Certificate(CERTS)]


def test_certificate_empty_chain() -> None:
    assert no_close(parse_all(record(22, handshake(11, b"\x00\x00\x00")))) == [Certificate(())]


def test_sslv2_server_hello_and_error() -> None:
    cert = b"\x30\x82fake-cert"
    specs = bytes.fromhex("0700c0010080")
    cid = bytes(range(16))
    body = b"\x04\x00\x01" + b"\x00\x02" + u16(len(cert)) + u16(len(specs)) + u16(len(cid)) + cert + specs + cid
    stream = u16(0x8000 | len(body)) + body + u16(0x8000 | 5) + b"ENCRY"
    events = no_close(parse_all(stream, [1] * len(stream)))
    assert events == [
        SSLv2ServerHello(0, 1, 2, cert, (0x0700C0, 0x010080), cid),
        SSLv2Record(b"ENCRY"),
    ]
    assert no_close(parse_all(bytes.fromhex("8003000001"))) == [SSLv2Error(1)]


def test_connection_closed_repeats() -> None:
    parser = ServerResponseParser()
    parser.feed_eof()
    assert parser.next_event() == ConnectionClosed()
    assert parser.next_event() == ConnectionClosed()


# --------------------------------------------------------------------------
# Parser: errors
# --------------------------------------------------------------------------


def test_smtp_text_instead_of_tls_is_not_tls() -> None:
    parser = ServerResponseParser()
    parser.feed(b"454 4.7.0 TLS not available due to local problem\r\n")
    with pytest.raises(NotTls) as info:
        parser.next_event()
    assert info.value.prefix == b"454 4.7.0 TLS no"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x16\x03\x03" + u16(2**14 + 2049), RecordTooLarge),
        (record(22, b"\x02" + u24(300_000)), HandshakeMessageTooLarge),
        (record(22, b""), BadRecord),
        (record(21, b""), BadRecord),
        (record(20, b"\x02"), BadRecord),
        (record(20, b"\x01\x01"), BadRecord),
        (record(22, handshake(14, b"\x00")), BadHandshake),
        (record(22, handshake(2, server_hello_body()[:-1])), BadHandshake),
        (record(22, handshake(2, server_hello_body(extensions=ext(1, b"") + ext(1, b"")))), BadHandshake),
        (record(22, handshake(2, server_hello_body(extensions=ext(43, b"\x03")))), BadHandshake),
        (record(22, handshake(2, server_hello_body(session_id=bytes(33)))), BadHandshake),
        (record(22, handshake(2, server_hello_body(extensions=ext(43, b"\x03\x04") + ext(51, b"\x00")))), BadHandshake),
        (record(22, handshake(11, u24(3) + u24(0))), BadHandshake),
        (record(22, handshake(11, u24(10) + u24(3) + b"abc")), BadHandshake),
        (record(22, handshake(2, server_hello_body())[:10] + b"") + record(20, b"\x01"), BadRecord),
        (b"\x19\x03\x03\x00\x01\x00", NotTls),
        (record(22, handshake(14, b"")) + b"\x80\x03\x04\x00\x00", NotTls),  # SSLv2 only at stream start
        (bytes.fromhex("8004 04 000102"), BadHandshake),  # truncated SSLv2 SERVER-HELLO
    ],
)
def test_malformed_input_raises_codec_errors(data: bytes, error: type[TlsCodecError]) -> None:
    with pytest.raises(error):
        parse_all(data)


def test_truncated_stream_at_eof() -> None:
    for cut in (3, 5, 40, len(TLS12_FLIGHT) - 1):
        with pytest.raises(TruncatedStream):
            parse_all(TLS12_FLIGHT[:cut])
    # Complete record, incomplete handshake message inside it.
    with pytest.raises(TruncatedStream):
        parse_all(record(22, handshake(11, certificate_body(CERTS))[:20]))


def test_buffer_cap() -> None:
    parser = ServerResponseParser(max_buffered=messages.MAX_RECORD_LENGTH + 5)
    parser.feed(b"\x17\x03\x03\x48\x00")  # announces a full 18432-byte record
    parser.feed(b"x" * messages.MAX_RECORD_LENGTH)
    with pytest.raises(BufferLimitExceeded):
        parser.feed(b"x")
    with pytest.raises(ParserStateError):
        parser.next_event()


def test_parser_is_dead_after_an_error_and_after_eof() -> None:
    parser = ServerResponseParser()
    parser.feed(b"HELO")
    with pytest.raises(NotTls):
        parser.next_event()
    with pytest.raises(ParserStateError):
        parser.next_event()
    with pytest.raises(ParserStateError):
        parser.feed(b"\x16")
    closed = ServerResponseParser()
    closed.feed_eof()
    with pytest.raises(ParserStateError):
        closed.feed(b"\x16")


# --------------------------------------------------------------------------
# Parser: property tests
# --------------------------------------------------------------------------

_EVENT_TYPES = (
    ServerHello,
    Certificate,
    ServerHelloDone,
    OtherHandshake,
    Alert,
    ChangeCipherSpec,
    EncryptedRecord,
    OtherRecord,
    SSLv2ServerHello,
    SSLv2Error,
    SSLv2Record,
    ConnectionClosed,
)


def run_chunked(data: bytes, cuts: list[int], *, eof: bool) -> tuple[list[Event], TlsCodecError | None]:
    """Feed ``data`` cut at ``cuts``; return events so far and the codec error, if any."""
    parser = ServerResponseParser(max_handshake_message=64 * 1024, max_buffered=256 * 1024)
    events: list[Event] = []
    try:
        for piece in split(data, cuts):
            parser.feed(piece)
            events.extend(drain(parser))
        if eof:
            parser.feed_eof()
            events.extend(drain(parser))
    except TlsCodecError as exc:
        return events, exc
    assert all(isinstance(e, _EVENT_TYPES) for e in events)
    return events, None


chunk_sizes = st.lists(st.integers(min_value=1, max_value=64), max_size=40)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cuts=chunk_sizes, eof=st.booleans())
def test_arbitrary_bytes_yield_only_events_or_codec_errors(data: bytes, cuts: list[int], eof: bool) -> None:
    run_chunked(data, cuts, eof=eof)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300),
    ctype=st.sampled_from([20, 21, 22, 23, 24]),
    msg_type=st.integers(0, 255),
    cuts=chunk_sizes,
)
def test_arbitrary_handshake_bodies(body: bytes, ctype: int, msg_type: int, cuts: list[int]) -> None:
    # Well-framed records with garbage inside reach the message parsers.
    data = record(ctype, handshake(msg_type, body)) + record(22, handshake(2, body))
    run_chunked(data, cuts, eof=True)


def _flight_strategy() -> st.SearchStrategy[bytes]:
    sh = st.builds(
        lambda v, sid, suite, sv: handshake(
            2, server_hello_body(version=v, session_id=sid, suite=suite, extensions=ext(43, u16(sv)) if sv else b"")
        ),
        st.sampled_from([0x0300, 0x0301, 0x0302, 0x0303, 0x0305, 0x0A0A]),
        st.binary(max_size=32),
        st.integers(0, 0xFFFF),
        st.sampled_from([0, 0x0303]),
    )
    cert = st.lists(st.binary(min_size=1, max_size=200), max_size=3).map(lambda cs: handshake(11, certificate_body(cs)))
    other = st.tuples(st.sampled_from([12, 13, 22]), st.binary(max_size=100)).map(lambda t: handshake(*t))
    done = st.just(handshake(14, b""))
    return st.tuples(sh, st.lists(st.one_of(cert, other), max_size=3), done, st.integers(1, 64)).map(
        lambda t: _records(t[0] + b"".join(t[1]) + t[2], t[3])
    )


def _records(payload: bytes, fragment: int) -> bytes:
    return b"".join(record(22, payload[i : i + fragment]) for i in range(0, len(payload), fragment))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flight=_flight_strategy(), cuts=chunk_sizes, data=st.data())
def test_valid_flights_chunking_invariant_and_truncation_safe(
    flight: bytes, cuts: list[int], data: st.DataObject
) -> None:
    whole, err = run_chunked(flight, [], eof=True)
    assert err is None
    assert isinstance(whole[-2], ServerHelloDone) and isinstance(whole[-1], ConnectionClosed)
    chunked, err = run_chunked(flight, cuts, eof=True)
    assert err is None and chunked == whole
    cut = data.draw(st.integers(0, len(flight) - 1), label="truncate_at")
    partial, err = run_chunked(flight[:cut], cuts, eof=False)
    assert err is None  # a prefix is never an error without EOF ...
    assert partial == whole[: len(partial)]  # ... and yields a prefix of the events
    partial_eof, err = run_chunked(flight[:cut], cuts, eof=True)
    if err is None:  # the cut fell on a message boundary
        assert partial_eof[-1] == ConnectionClosed()
        assert partial_eof[:-1] == whole[: len(partial_eof) - 1]
    else:
        assert isinstance(err, TruncatedStream)


@settings(max_examples=200, deadline=None)
@given(
    flight=_flight_strategy(),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
    cuts=chunk_sizes,
)
def test_mutated_flights_yield_only_events_or_codec_errors(
    flight: bytes, flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    mutated = bytearray(flight)
    for pos, xor in flips:
        mutated[pos % len(mutated)] ^= xor
    run_chunked(bytes(mutated), cuts, eof=True)


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([TlsVersion.SSL3, TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12, TlsVersion.TLS13]),
    suites=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300),
    random=st.binary(min_size=32, max_size=32),
    session_id=st.binary(max_size=32),
    host=st.none()
    | st.from_regex(r"([a-z0-9]{1,20}\.){0,3}[a-z][a-z0-9]{0,19}", fullmatch=True),  # never an IP literal
)
def test_client_hello_round_trip(
    version: TlsVersion, suites: list[int], random: bytes, session_id: bytes, host: str | None
) -> None:
    if version is TlsVersion.SSL3:
        host = None
        suites = suites[:100]  # keep SSLv3 hellos below the unpaddable F5 range
    spec = builder.make_client_hello_spec(version, suites, random, server_name=host, session_id=session_id)
    raw = builder.build_client_hello(spec)
    hello = tls_server.parse_client_hello(raw)
    assert (hello.record_version, hello.client_version) == (spec.record_version, spec.client_version)
    assert (hello.random, hello.session_id, hello.cipher_suites) == (random, session_id, spec.cipher_suites)
    assert not 256 <= hello.message_length <= 511
    assert (hello.extensions is None) == (version is TlsVersion.SSL3)
    if host is not None:
        assert hello.extension(0) == u16(len(host) + 3) + b"\x00" + u16(len(host)) + host.encode()


_VALID_HELLO = builder.build_client_hello(
    builder.make_client_hello_spec(TlsVersion.TLS12, [0xC02F, 0x009C], RANDOM, server_name=HOST)
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400)
    | st.tuples(st.integers(0, len(_VALID_HELLO) - 1), st.integers(1, 255), st.integers(1, len(_VALID_HELLO))).map(
        lambda t: _flip(_VALID_HELLO, t[0], t[1])[: t[2]]
    )
)
def test_parse_client_hello_garbage_raises_only_codec_errors(data: bytes) -> None:
    try:
        hello = tls_server.parse_client_hello(data)
    except TlsCodecError:
        return
    assert isinstance(hello, tls_server.ClientHello)


def _flip(data: bytes, pos: int, xor: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= xor
    return bytes(out)


# --------------------------------------------------------------------------
# Against a real TLS implementation: OpenSSL via ssl.MemoryBIO, no sockets
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_cert() -> trustme.LeafCert:
    return trustme.CA().issue_cert(HOST)


def openssl_answer(
    cert: trustme.LeafCert,
    hello: bytes,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    ciphers: str = "DEFAULT:@SECLEVEL=0",
) -> bytes:
    """Hand ``hello`` to an OpenSSL server object and return what it writes back."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ctx.set_ciphers(ciphers)
    ctx.minimum_version = minimum
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        pass  # waiting for our next flight, as expected
    except ssl.SSLError:
        pass  # it refused: the alert is in ``outgoing``
    return outgoing.read()


def openssl_tls12_suites() -> list[int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return [c["id"] & 0xFFFF for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


def test_openssl_accepts_padded_tls12_hello(server_cert: trustme.LeafCert) -> None:
    suites = openssl_tls12_suites()
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, suites, RANDOM, server_name=HOST)
    hello = builder.build_client_hello(spec)
    assert tls_server.parse_client_hello(hello).message_length == 512  # padded out of the F5 range
    answer = openssl_answer(server_cert, hello, maximum=ssl.TLSVersion.TLSv1_2)
    events = parse_all(answer, [1] * len(answer))
    assert isinstance(events[0], ServerHello)
    sh = events[0]
    assert sh.version == 0x0303 and sh.selected_version is None
    assert sh.cipher_suite in suites
    assert sh.downgrade_sentinel is None  # server maximum is 1.2
    certs = [e for e in events if isinstance(e, Certificate)]
    assert certs[0].certificates[0] == ssl.PEM_cert_to_DER_cert(server_cert.cert_chain_pems[0].bytes().decode())
    assert isinstance(events[-2], ServerHelloDone) and isinstance(events[-1], ConnectionClosed)


def test_openssl_tls13_capable_server_sets_tls12_sentinel(server_cert: trustme.LeafCert) -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, [0xC02B, 0xC02F, 0xC030], RANDOM, server_name=HOST)
    (sh, *_rest) = parse_all(openssl_answer(server_cert, builder.build_client_hello(spec)))
    assert isinstance(sh, ServerHello)
    assert sh.downgrade_sentinel is DowngradeSentinel.TLS12
    assert sh.cipher_suite in (0xC02B, 0xC02F, 0xC030)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_openssl_tls11_answer_carries_tls11_sentinel(server_cert: trustme.LeafCert) -> None:
    # trustme issues ECDSA certificates, so offer ECDHE-ECDSA CBC suites.
    spec = builder.make_client_hello_spec(TlsVersion.TLS11, [0xC009, 0xC00A], RANDOM)
    answer = openssl_answer(server_cert, builder.build_client_hello(spec), minimum=ssl.TLSVersion.TLSv1_1)
    (sh, *_rest) = parse_all(answer)
    assert isinstance(sh, ServerHello)
    assert sh.version == 0x0302 and sh.downgrade_sentinel is DowngradeSentinel.TLS11
    assert sh.cipher_suite in (0xC009, 0xC00A)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_openssl_fallback_scsv_gets_inappropriate_fallback(server_cert: trustme.LeafCert) -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS11, [0xC013, 0x002F], RANDOM, fallback_scsv=True)
    answer = openssl_answer(server_cert, builder.build_client_hello(spec), minimum=ssl.TLSVersion.TLSv1_1)
    assert no_close(parse_all(answer)) == [Alert(2, messages.AlertDescription.INAPPROPRIATE_FALLBACK, 0x0302)]


@pytest.mark.parametrize(
    ("group", "seed"), [(NamedGroup.X25519, bytes(range(1, 33))), (NamedGroup.SECP256R1, bytes(range(50, 82)))]
)
def test_openssl_accepts_tls13_hello_with_real_key_share(
    server_cert: trustme.LeafCert, group: int, seed: bytes
) -> None:
    offered = [0x1301, 0x1302, 0x1303]
    share = builder.key_share_entry(group, seed)
    spec = builder.make_client_hello_spec(TlsVersion.TLS13, offered, RANDOM, server_name=HOST, key_shares=[share])
    answer = openssl_answer(server_cert, builder.build_client_hello(spec))
    events = no_close(parse_all(answer, [3] * len(answer)))
    sh = events[0]
    assert isinstance(sh, ServerHello)
    assert sh.version == 0x0303 and sh.selected_version == 0x0304 and sh.negotiated_version == 0x0304
    assert sh.cipher_suite in offered
    assert not sh.is_hello_retry_request and sh.selected_group == group
    assert sh.session_id == spec.session_id  # echoed (RFC 8446 §4.1.3)
    assert isinstance(events[1], ChangeCipherSpec)  # compatibility mode
    assert len(events) > 2 and all(isinstance(e, EncryptedRecord) and e.content_type == 23 for e in events[2:])


def test_openssl_empty_key_share_gets_hello_retry_request(server_cert: trustme.LeafCert) -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS13, [0x1302], RANDOM, server_name=HOST)
    events = no_close(parse_all(openssl_answer(server_cert, builder.build_client_hello(spec))))
    hrr = events[0]
    assert isinstance(hrr, ServerHello)
    assert hrr.is_hello_retry_request and hrr.random == messages.HELLO_RETRY_REQUEST_RANDOM
    assert hrr.cipher_suite == 0x1302 and hrr.selected_version == 0x0304
    assert hrr.selected_group in tuple(builder.TLS13_GROUPS)
    assert events[1:] == [ChangeCipherSpec(0x0303)]  # and nothing protected yet


@pytest.mark.parametrize(
    ("version", "expected_description"),
    [
        (TlsVersion.TLS11, messages.AlertDescription.PROTOCOL_VERSION),
        # OpenSSL 3 built without SSLv3 answers handshake_failure, at record version 0x0300.
        (TlsVersion.SSL3, messages.AlertDescription.HANDSHAKE_FAILURE),
    ],
)
def test_openssl_refuses_old_versions_with_an_alert(
    server_cert: trustme.LeafCert, version: TlsVersion, expected_description: int
) -> None:
    spec = builder.make_client_hello_spec(version, [0xC013, 0x002F, 0x000A], RANDOM)
    (alert,) = no_close(parse_all(openssl_answer(server_cert, builder.build_client_hello(spec))))
    assert isinstance(alert, Alert)
    assert (alert.level, alert.description, alert.record_version) == (2, expected_description, version)


def test_openssl_no_shared_cipher_alert(server_cert: trustme.LeafCert) -> None:
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, [0x0005, 0xABCD], RANDOM)
    assert no_close(parse_all(openssl_answer(server_cert, builder.build_client_hello(spec)))) == [
        Alert(2, messages.AlertDescription.HANDSHAKE_FAILURE, 0x0303)
    ]


@pytest.fixture(scope="module")
def openssl_flight(server_cert: trustme.LeafCert) -> bytes:
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, [0xC02B, 0xC02F], RANDOM, server_name=HOST)
    return openssl_answer(server_cert, builder.build_client_hello(spec), maximum=ssl.TLSVersion.TLSv1_2)


@settings(max_examples=40, deadline=None)
@given(cuts=chunk_sizes, cut_at=st.integers(0, 10_000))
def test_openssl_flight_truncations(openssl_flight: bytes, cuts: list[int], cut_at: int) -> None:
    flight = openssl_flight
    whole, err = run_chunked(flight, [], eof=True)
    assert err is None
    cut = cut_at % len(flight)
    partial, err = run_chunked(flight[:cut], cuts, eof=False)
    assert err is None and partial == whole[: len(partial)]
