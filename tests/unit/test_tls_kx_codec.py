"""ServerKeyExchange parsing, ServerHello hygiene facts and hygiene hellos: pure codec, byte-level tests.

Fixtures are built with plain byte arithmetic (RFC 5246 §7.4.3, RFC 8422 §5.4), not with the codec.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.tls.builder import build_client_hello, make_client_hello_spec
from scanner.tls.messages import (
    BadHandshake,
    DhParams,
    EcParams,
    ExtensionType,
    KeyExchangeKind,
    OtherHandshake,
    ServerHello,
)
from scanner.tls.parser import ServerResponseParser, hello_facts, parse_server_key_exchange
from scanner.tls.versions import TlsVersion
from worlds.tls_server import parse_client_hello


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def vec2(data: bytes) -> bytes:
    return u16(len(data)) + data


SIGNATURE = b"\x04\x01" + vec2(b"S" * 64)  # rsa_pkcs1_sha256 and a signature, never read
PRIME_1024 = (1 << 1023) | 0x1234567  # any 1024-bit number: the codec does not test primality
DHE_BODY = vec2(PRIME_1024.to_bytes(128, "big")) + vec2(b"\x02") + vec2(b"\x7f" * 128) + SIGNATURE
ECDHE_BODY = b"\x03" + u16(24) + bytes([97]) + b"\x04" + b"P" * 96 + SIGNATURE  # secp384r1, uncompressed


def records(message: bytes, sizes: list[int]) -> bytes:
    """``message`` cut into handshake records of the given sizes (the rest in a last record)."""
    out, pos = b"", 0
    for size in [*sizes, len(message)]:
        piece = message[pos:pos + size]
        if piece:
            out += b"\x16\x03\x03" + u16(len(piece)) + piece
        pos += len(piece)
    return out


def test_dhe_parameters() -> None:
    params = parse_server_key_exchange(DHE_BODY, KeyExchangeKind.DHE)
    assert params == DhParams(PRIME_1024, 2, 1023) and params.bits == 1024


def test_ecdhe_named_curve() -> None:
    assert parse_server_key_exchange(ECDHE_BODY, KeyExchangeKind.ECDHE) == EcParams(3, 24)


@pytest.mark.parametrize("curve_type", [1, 2])
def test_explicit_curves_have_no_name(curve_type: int) -> None:
    # RFC 8422 §5.4 deprecates them; the parameters that follow are not needed to say so.
    assert parse_server_key_exchange(bytes([curve_type]) + b"\xff" * 20, KeyExchangeKind.ECDHE) == EcParams(
        curve_type, None)


@pytest.mark.parametrize("body", [
    b"\x00" + b"\x00" * 5,  # unknown ECCurveType
    b"\x03\x00\x17\x00",  # empty point
])
def test_bad_ecdhe_parameters(body: bytes) -> None:
    with pytest.raises(BadHandshake):
        parse_server_key_exchange(body, KeyExchangeKind.ECDHE)


@pytest.mark.parametrize("body", [
    vec2(b"") + vec2(b"\x02") + vec2(b"\x01"),  # empty prime
    vec2(b"\x17") + vec2(b"") + vec2(b"\x01"),  # empty generator
    vec2(b"\x17") + vec2(b"\x02") + vec2(b""),  # empty public value
])
def test_degenerate_dh_parameters(body: bytes) -> None:
    with pytest.raises(BadHandshake):
        parse_server_key_exchange(body, KeyExchangeKind.DHE)


@pytest.mark.parametrize(("body", "kind"), [(DHE_BODY, KeyExchangeKind.DHE), (ECDHE_BODY, KeyExchangeKind.ECDHE)])
def test_every_truncation_is_a_clean_error(body: bytes, kind: KeyExchangeKind) -> None:
    # The parameters end before the signature: cuts inside them must raise BadHandshake, cuts after
    # them still parse (the signature is not read).
    end_of_params = len(body) - len(SIGNATURE)
    for cut in range(len(body)):
        if cut < end_of_params:
            with pytest.raises(BadHandshake):
                parse_server_key_exchange(body[:cut], kind)
        else:
            assert parse_server_key_exchange(body[:cut], kind) == parse_server_key_exchange(body, kind)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(list(KeyExchangeKind)))
def test_arbitrary_bytes_parse_or_raise_bad_handshake(body: bytes, kind: KeyExchangeKind) -> None:
    try:
        params = parse_server_key_exchange(body, kind)
    except BadHandshake:
        return
    if isinstance(params, DhParams):
        # Lengths were honoured: the prime fits in what its length field announced.
        assert params.prime >= 3 and params.bits <= 8 * (len(body) - 2)
    else:
        assert params.curve_type in (1, 2, 3)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=65535))
def test_lying_dh_prime_length_never_reads_past_the_body(shift: int, announced: int) -> None:
    body = u16(announced) + DHE_BODY[2:2 + shift]
    try:
        params = parse_server_key_exchange(body, KeyExchangeKind.DHE)
    except BadHandshake:
        return
    assert isinstance(params, DhParams) and params.bits <= 8 * announced


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=12))
def test_server_key_exchange_split_over_records_reassembles(sizes: list[int]) -> None:
    message = b"\x0c" + len(ECDHE_BODY).to_bytes(3, "big") + ECDHE_BODY
    parser = ServerResponseParser()
    parser.feed(records(message, sizes))
    event = parser.next_event()
    assert isinstance(event, OtherHandshake) and event.msg_type == 12
    assert parse_server_key_exchange(event.body, KeyExchangeKind.ECDHE) == EcParams(3, 24)


def _server_hello(extensions: dict[int, bytes], compression: int = 0) -> ServerHello:
    from types import MappingProxyType

    return ServerHello(version=0x0303, random=b"\x00" * 32, session_id=b"", cipher_suite=0xC02F,
                       compression=compression, extensions=MappingProxyType(extensions), selected_version=None,
                       selected_group=None, is_hello_retry_request=False, downgrade_sentinel=None,
                       record_version=0x0303)


def test_hello_facts_read_what_the_server_agreed_to() -> None:
    facts = hello_facts(_server_hello({ExtensionType.RENEGOTIATION_INFO: b"\x00",
                                       ExtensionType.EXTENDED_MASTER_SECRET: b"",
                                       ExtensionType.ENCRYPT_THEN_MAC: b"", ExtensionType.HEARTBEAT: b"\x01",
                                       ExtensionType.STATUS_REQUEST: b""}, compression=1))
    assert facts.secure_renegotiation and facts.extended_master_secret and facts.encrypt_then_mac
    assert facts.heartbeat and facts.status_request and facts.compression == 1
    bare = hello_facts(_server_hello({}))
    assert not (bare.secure_renegotiation or bare.extended_master_secret or bare.encrypt_then_mac
                or bare.heartbeat or bare.status_request or bare.compression)


def test_hygiene_hello_offers_the_extensions_and_deflate_below_tls13_only() -> None:
    spec = make_client_hello_spec(TlsVersion.TLS12, [0xC02F], b"\x01" * 32, hygiene=True, groups=[24, 19])
    hello = parse_client_hello(build_client_hello(spec))
    assert hello.compression_methods == (1, 0)
    assert hello.extension(ExtensionType.EXTENDED_MASTER_SECRET) == b""
    assert hello.extension(ExtensionType.ENCRYPT_THEN_MAC) == b""
    assert hello.extension(ExtensionType.HEARTBEAT) == b"\x01"
    assert hello.extension(ExtensionType.STATUS_REQUEST) == b"\x01\x00\x00\x00\x00"
    assert hello.extension(ExtensionType.SUPPORTED_GROUPS) == b"\x00\x04\x00\x18\x00\x13"
    # RFC 8446 §4.1.2: a TLS 1.3 hello offers only the null compression method.
    hello13 = parse_client_hello(build_client_hello(
        make_client_hello_spec(TlsVersion.TLS13, [0x1301], b"\x01" * 32, hygiene=True)))
    assert hello13.compression_methods == (0,) and hello13.extension(ExtensionType.HEARTBEAT) is None
    plain = parse_client_hello(build_client_hello(make_client_hello_spec(TlsVersion.TLS12, [0xC02F], b"\x01" * 32)))
    assert plain.compression_methods == (0,) and plain.extension(ExtensionType.ENCRYPT_THEN_MAC) is None


def test_fallback_scsv_hello() -> None:
    spec = make_client_hello_spec(TlsVersion.TLS11, [0x002F], b"\x01" * 32, fallback_scsv=True)
    assert parse_client_hello(build_client_hello(spec)).cipher_suites[-1] == 0x5600  # RFC 7507 §6
