"""Server-side TLS helpers for the test worlds only (fake servers, hostile servers, codec tests): encode a
ServerHello or an alert, parse the ClientHello a probe sent. Built on the scanner's own wire helpers
(``scanner.tls.messages``); the shipped package never needs them, so they live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scanner.tls.messages import (
    BadHandshake,
    BadRecord,
    ContentType,
    HandshakeType,
    InvalidClientHelloSpec,
    WireReader,
    encode_extensions,
    encode_handshake,
    encode_record,
    put_uint,
    put_vector,
)
from scanner.tls.parser import parse_extension_block
from scanner.tls.versions import TlsVersion

__all__ = ["ClientHello", "encode_alert", "encode_server_hello", "parse_client_hello"]


def encode_alert(level: int, description: int, version: int = TlsVersion.TLS12) -> bytes:
    return encode_record(ContentType.ALERT, version, put_uint(level, 1) + put_uint(description, 1))


def encode_server_hello(
    *,
    version: int,
    random: bytes,
    cipher_suite: int,
    session_id: bytes = b"",
    compression: int = 0,
    extensions: Sequence[tuple[int, bytes]] | None = None,
) -> bytes:
    """A ServerHello handshake message (for fake servers and tests)."""
    if len(random) != 32:
        raise InvalidClientHelloSpec("random must be 32 bytes")
    body = put_uint(version, 2) + random + put_vector(session_id, 1)
    body += put_uint(cipher_suite, 2) + put_uint(compression, 1)
    if extensions is not None:
        body += encode_extensions(extensions)
    return encode_handshake(HandshakeType.SERVER_HELLO, body)


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A decoded ClientHello (for fake servers and for checking our builder)."""

    record_version: int
    client_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[tuple[int, bytes], ...] | None  # None: block absent
    message_length: int  # handshake header included

    def extension(self, ext_type: int) -> bytes | None:
        for t, data in self.extensions or ():
            if t == ext_type:
                return data
        return None


def parse_client_hello(data: bytes) -> ClientHello:
    """Decode one ClientHello from its record(s); ``data`` must hold exactly it."""
    payload = bytearray()
    record_version: int | None = None
    rd = WireReader(data, "ClientHello records", BadRecord)
    while rd.remaining():
        content_type = rd.uint(1)
        version = rd.uint(2)
        fragment = rd.vector(2)
        if content_type != ContentType.HANDSHAKE or not fragment:
            raise BadRecord(f"expected non-empty handshake records, got type {content_type}")
        record_version = version if record_version is None else record_version
        payload += fragment
    if record_version is None:
        raise BadRecord("no records")
    msg = WireReader(bytes(payload), "ClientHello")
    if msg.uint(1) != HandshakeType.CLIENT_HELLO:
        raise BadHandshake("not a ClientHello")
    body = WireReader(msg.vector(3), "ClientHello")
    msg.end()
    client_version = body.uint(2)
    random = body.take(32)
    session_id = body.vector(1)
    suites_raw = body.vector(2)
    if len(suites_raw) % 2:
        raise BadHandshake("odd cipher_suites length")
    suites = tuple(int.from_bytes(suites_raw[i : i + 2], "big") for i in range(0, len(suites_raw), 2))
    compression = tuple(body.vector(1))
    extensions = parse_extension_block(body, "ClientHello") if body.remaining() else None
    return ClientHello(
        record_version=record_version,
        client_version=client_version,
        random=random,
        session_id=session_id,
        cipher_suites=suites,
        compression_methods=compression,
        extensions=extensions,
        message_length=len(payload),
    )
