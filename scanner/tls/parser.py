"""Sans-IO parser of what a server sends back to a crafted ClientHello (model: python-hyper/h11).

:class:`ServerResponseParser` is fed whatever bytes arrived, in any chunking, and hands back events
(``scanner.tls.messages``) one at a time, or :data:`NEED_DATA`. Also what a TLS <= 1.2 ServerHello and
ServerKeyExchange reveal about key exchange and protocol hygiene. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final, NoReturn

from scanner.sansio import NEED_DATA, NeedData
from scanner.tls.messages import (
    DOWNGRADE_SENTINEL_TLS11,
    DOWNGRADE_SENTINEL_TLS12,
    HELLO_RETRY_REQUEST_RANDOM,
    MAX_RECORD_LENGTH,
    Alert,
    BadHandshake,
    BadRecord,
    BufferLimitExceeded,
    Certificate,
    ChangeCipherSpec,
    ConnectionClosed,
    ContentType,
    DhParams,
    DowngradeSentinel,
    EcCurveType,
    EcParams,
    EncryptedRecord,
    Event,
    ExtensionType,
    HandshakeMessageTooLarge,
    HandshakeType,
    HelloFacts,
    KeyExchangeKind,
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
    WireReader,
)
from scanner.tls.versions import TlsVersion

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_HANDSHAKE_MESSAGE",
    "ServerResponseParser",
    "hello_facts",
    "parse_extension_block",
    "parse_server_key_exchange",
]


DEFAULT_MAX_HANDSHAKE_MESSAGE: Final = 256 * 1024


DEFAULT_MAX_BUFFERED: Final = 1024 * 1024


def parse_extension_block(rd: WireReader, what: str) -> tuple[tuple[int, bytes], ...]:
    """The trailing extensions<2> block; duplicates are illegal (RFC 8446 §4.2)."""
    block = WireReader(rd.vector(2), f"{what} extensions")
    rd.end()
    seen: set[int] = set()
    out: list[tuple[int, bytes]] = []
    while block.remaining():
        ext_type = block.uint(2)
        data = block.vector(2)
        if ext_type in seen:
            raise BadHandshake(f"{what}: duplicate extension {ext_type}")
        seen.add(ext_type)
        out.append((ext_type, data))
    return tuple(out)


def _parse_server_hello(body: bytes, record_version: int) -> ServerHello:
    rd = WireReader(body, "ServerHello")
    version = rd.uint(2)
    random = rd.take(32)
    session_id = rd.vector(1)
    if len(session_id) > 32:
        raise BadHandshake("ServerHello session_id longer than 32 bytes")
    cipher_suite = rd.uint(2)
    compression = rd.uint(1)
    # RFC 5246 §7.4.1.4: the extensions block may be absent entirely.
    ext_list = parse_extension_block(rd, "ServerHello") if rd.remaining() else ()
    extensions = MappingProxyType(dict(ext_list))
    is_hrr = random == HELLO_RETRY_REQUEST_RANDOM
    selected_version: int | None = None
    if ExtensionType.SUPPORTED_VERSIONS in extensions:
        sv = WireReader(extensions[ExtensionType.SUPPORTED_VERSIONS], "supported_versions")
        selected_version = sv.uint(2)
        sv.end()
    selected_group: int | None = None
    if ExtensionType.KEY_SHARE in extensions and _is_tls13_family(selected_version or 0):
        ks = WireReader(extensions[ExtensionType.KEY_SHARE], "key_share")
        selected_group = ks.uint(2)
        if not is_hrr:  # ServerHello: KeyShareEntry; HRR: selected_group only
            ks.vector(2)
        ks.end()
    sentinel: DowngradeSentinel | None = None
    if not is_hrr:
        tail = random[-8:]
        if tail == DOWNGRADE_SENTINEL_TLS12:
            sentinel = DowngradeSentinel.TLS12
        elif tail == DOWNGRADE_SENTINEL_TLS11:
            sentinel = DowngradeSentinel.TLS11
    return ServerHello(
        version=version,
        random=random,
        session_id=session_id,
        cipher_suite=cipher_suite,
        compression=compression,
        extensions=extensions,
        selected_version=selected_version,
        selected_group=selected_group,
        is_hello_retry_request=is_hrr,
        downgrade_sentinel=sentinel,
        record_version=record_version,
    )


def _parse_certificate(body: bytes) -> Certificate:
    rd = WireReader(body, "Certificate")
    chain = WireReader(rd.vector(3), "certificate_list")
    rd.end()
    certs: list[bytes] = []
    while chain.remaining():
        der = chain.vector(3)
        if not der:
            raise BadHandshake("Certificate: empty ASN.1Cert")
        certs.append(der)
    return Certificate(tuple(certs))


def _parse_sslv2_first(body: bytes) -> SSLv2ServerHello | SSLv2Error:
    rd = WireReader(body, "SSLv2 message")
    msg_type = rd.uint(1)
    if msg_type == 0:  # MSG-ERROR
        code = rd.uint(2)
        rd.end()
        return SSLv2Error(code)
    hit = rd.uint(1)
    cert_type = rd.uint(1)
    version = rd.uint(2)
    cert_len = rd.uint(2)
    specs_len = rd.uint(2)
    cid_len = rd.uint(2)
    certificate = rd.take(cert_len)
    specs = rd.take(specs_len)
    connection_id = rd.take(cid_len)
    rd.end()
    if specs_len % 3:
        raise BadHandshake("SSLv2 cipher_specs length not a multiple of 3")
    return SSLv2ServerHello(
        session_id_hit=hit,
        certificate_type=cert_type,
        version=version,
        certificate=certificate,
        cipher_specs=tuple(int.from_bytes(specs[i : i + 3], "big") for i in range(0, specs_len, 3)),
        connection_id=connection_id,
    )


def _is_tls13_family(version: int) -> bool:
    """TLS 1.3 or one of its drafts (0x7F00 | draft number), whose handshake
    is protected after the ServerHello.  Other unknown versions are assumed
    to keep a plaintext ≤1.2-style flight."""
    return version == TlsVersion.TLS13 or 0x7F00 <= version <= 0x7FFF


@dataclass(frozen=True, slots=True)
class _Record:
    content_type: int
    version: int
    fragment: bytes


class _Framing(Enum):
    UNKNOWN = "unknown"  # nothing consumed yet
    TLS = "tls"
    SSL2 = "ssl2"


_TLS_CONTENT_TYPES: Final = frozenset(int(c) for c in ContentType)


_SSL2_FIRST_TYPES: Final = frozenset({0, 4})  # MSG-ERROR, MSG-SERVER-HELLO


class ServerResponseParser:
    """Turns the server's bytes into events.  No I/O, no clocks, no threads.

    Usage: ``feed(chunk)`` whenever bytes arrive, then call ``next_event()``
    until it returns :data:`NEED_DATA`; call ``feed_eof()`` when the peer
    closed, after which ``next_event()`` ends with :class:`ConnectionClosed`
    (or raises :class:`TruncatedStream` if the stream stopped mid-message).

    Records may be split or coalesced arbitrarily and handshake messages may
    span or share records.  Once a ≤1.2 server sends ChangeCipherSpec, or a
    TLS 1.3 ServerHello arrives, later handshake/application records are
    protected and come out as :class:`EncryptedRecord`.  After any error the
    parser is dead: every later call raises :class:`ParserStateError`.
    """

    def __init__(
        self,
        *,
        max_handshake_message: int = DEFAULT_MAX_HANDSHAKE_MESSAGE,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        if max_handshake_message < 4 or max_buffered < MAX_RECORD_LENGTH + 5:
            raise ValueError("limits too small to hold one record / one handshake header")
        self._max_handshake = max_handshake_message
        self._max_buffered = max_buffered
        self._buf = bytearray()  # unparsed record-layer bytes
        self._handshake = bytearray()  # reassembly of handshake fragments
        self._handshake_version = 0  # record version of the pending message
        self._alert = bytearray()
        self._alert_version = 0  # record version of the pending alert bytes
        self._seen_sslv2_first = False
        self._framing = _Framing.UNKNOWN
        self._eof = False
        self._failed: TlsCodecError | None = None
        self._seen_hello_version: int | None = None  # negotiated, from non-HRR SH
        self._tls13 = False  # an SH/HRR selected TLS 1.3: CCS is a dummy
        self._protected = False

    # -- public -----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) + len(self._handshake) + len(self._alert)

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` is a no-op (EOF is :meth:`feed_eof`)."""
        self._check_alive()
        if self._eof:
            raise ParserStateError("feed() after feed_eof()")
        if self.buffered + len(data) > self._max_buffered:
            self._fail(BufferLimitExceeded(f"more than {self._max_buffered} unparsed bytes"))
        self._buf += data

    def feed_eof(self) -> None:
        self._check_alive()
        self._eof = True

    def next_event(self) -> Event | NeedData:
        self._check_alive()
        try:
            return self._next_event()
        except TlsCodecError as exc:
            self._failed = exc
            raise

    # -- internals --------------------------------------------------------

    def _check_alive(self) -> None:
        if self._failed is not None:
            raise ParserStateError(f"parser failed earlier: {self._failed}") from self._failed

    def _fail(self, exc: TlsCodecError) -> NoReturn:
        self._failed = exc
        raise exc

    def _next_event(self) -> Event | NeedData:
        while True:
            event = self._pending_message()
            if event is not None:
                return event
            record = self._take_record()
            if record is None:
                if not self._eof:
                    return NEED_DATA
                if self.buffered:
                    raise TruncatedStream(f"stream ended with {self.buffered} unparsed byte(s)")
                return ConnectionClosed()
            event = self._dispatch(record)
            if event is not None:
                return event

    def _pending_message(self) -> Event | None:
        """A complete alert or handshake message already reassembled."""
        if len(self._alert) >= 2:
            level, description = self._alert[0], self._alert[1]
            del self._alert[:2]
            return Alert(level, description, self._alert_version)
        hs = self._handshake
        if len(hs) < 4:
            return None
        length = int.from_bytes(hs[1:4], "big")
        if length > self._max_handshake:
            raise HandshakeMessageTooLarge(f"handshake message of {length} bytes announced")
        if len(hs) < 4 + length:
            return None
        msg_type = hs[0]
        body = bytes(hs[4 : 4 + length])
        del hs[: 4 + length]
        return self._decode_handshake(msg_type, body)

    def _take_record(self) -> _Record | None:
        if self._framing is _Framing.SSL2:
            return self._take_sslv2_record()
        buf = self._buf
        if not buf:
            return None
        if buf[0] not in _TLS_CONTENT_TYPES:
            return self._non_tls_start()
        if len(buf) < 5:
            return None
        length = int.from_bytes(buf[3:5], "big")
        if length > MAX_RECORD_LENGTH:
            raise RecordTooLarge(f"record of {length} bytes announced")
        if len(buf) < 5 + length:
            return None
        record = _Record(buf[0], int.from_bytes(buf[1:3], "big"), bytes(buf[5 : 5 + length]))
        del buf[: 5 + length]
        self._framing = _Framing.TLS
        return record

    def _non_tls_start(self) -> _Record | None:
        buf = self._buf
        prefix = bytes(buf[:16])
        # Only the very first record may switch to SSLv2 framing: 2-byte
        # header with the top bit set, then MSG-SERVER-HELLO or MSG-ERROR.
        if self._framing is _Framing.UNKNOWN and buf[0] & 0x80:
            if len(buf) < 3:
                return None
            if buf[2] in _SSL2_FIRST_TYPES:
                self._framing = _Framing.SSL2
                return self._take_sslv2_record()
        raise NotTls(f"not a TLS record: content type {buf[0]} (first bytes {prefix!r})", prefix)

    def _take_sslv2_record(self) -> _Record | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        if buf[0] & 0x80:
            header, length = 2, ((buf[0] & 0x7F) << 8) | buf[1]
        else:  # 3-byte header (record with padding byte)
            header, length = 3, ((buf[0] & 0x3F) << 8) | buf[1]
        if len(buf) < header + length:
            return None
        body = bytes(buf[header : header + length])
        del buf[: header + length]
        if not body:
            raise BadRecord("empty SSLv2 record")
        return _Record(-1, TlsVersion.SSL2, body)

    def _dispatch(self, record: _Record) -> Event | None:
        if self._framing is _Framing.SSL2:
            return self._dispatch_sslv2(record)
        ctype, frag = record.content_type, record.fragment
        if ctype == ContentType.CHANGE_CIPHER_SPEC:
            return self._on_change_cipher_spec(record)
        if ctype == ContentType.ALERT:
            # Protected alerts are longer than 2 bytes (MAC/tag); a 2-byte
            # alert is plaintext even after keys changed (RFC 8446 §6).
            if self._protected and len(frag) != 2:
                return EncryptedRecord(ctype, record.version, frag)
            if not frag:
                raise BadRecord("empty alert record")
            if not self._alert:
                self._alert_version = record.version
            self._alert += frag
            return None
        if self._protected:
            return EncryptedRecord(ctype, record.version, frag)
        if ctype == ContentType.HANDSHAKE:
            # RFC 5246 §6.2.1 / RFC 8446 §5.1: no zero-length handshake fragments.
            if not frag:
                raise BadRecord("empty handshake record")
            if not self._handshake:
                self._handshake_version = record.version
            self._handshake += frag
            return None
        return OtherRecord(ctype, record.version, frag)

    def _on_change_cipher_spec(self, record: _Record) -> Event:
        if record.fragment != b"\x01":
            raise BadRecord(f"ChangeCipherSpec must be the single byte 01, got {record.fragment!r}")
        if self._handshake:
            raise BadRecord("ChangeCipherSpec inside a fragmented handshake message")
        # ≤1.2: everything after the server's CCS is protected (RFC 5246 §7.1).
        # 1.3: CCS is a compatibility dummy (RFC 8446 §D.4) and changes nothing.
        if self._seen_hello_version is not None and not self._tls13:
            self._protected = True
        return ChangeCipherSpec(record.version)

    def _decode_handshake(self, msg_type: int, body: bytes) -> Event:
        if msg_type == HandshakeType.SERVER_HELLO:
            hello = _parse_server_hello(body, self._handshake_version)
            self._on_server_hello(hello)
            return hello
        if msg_type == HandshakeType.CERTIFICATE:
            return _parse_certificate(body)
        if msg_type == HandshakeType.SERVER_HELLO_DONE:
            if body:
                raise BadHandshake("ServerHelloDone with a non-empty body")
            return ServerHelloDone()
        return OtherHandshake(msg_type, body)

    def _on_server_hello(self, hello: ServerHello) -> None:
        if _is_tls13_family(hello.negotiated_version):
            self._tls13 = True
        if hello.is_hello_retry_request:
            return
        self._seen_hello_version = hello.negotiated_version
        if self._tls13:
            # RFC 8446 §5.1: the ServerHello must end its record, since
            # everything after it is protected under handshake keys.
            if self._handshake:
                raise BadHandshake("data after a TLS 1.3 ServerHello in the same record")
            self._protected = True

    def _dispatch_sslv2(self, record: _Record) -> Event:
        if self._seen_sslv2_first:
            return SSLv2Record(record.fragment)
        self._seen_sslv2_first = True
        return _parse_sslv2_first(record.fragment)


def hello_facts(hello: ServerHello) -> HelloFacts:
    ext = hello.extensions
    return HelloFacts(
        secure_renegotiation=ExtensionType.RENEGOTIATION_INFO in ext,
        compression=hello.compression,
        extended_master_secret=ExtensionType.EXTENDED_MASTER_SECRET in ext,
        encrypt_then_mac=ExtensionType.ENCRYPT_THEN_MAC in ext,
        heartbeat=ExtensionType.HEARTBEAT in ext,
        status_request=ExtensionType.STATUS_REQUEST in ext,
    )


def parse_server_key_exchange(body: bytes, kind: KeyExchangeKind) -> DhParams | EcParams:
    """The parameters at the start of a ServerKeyExchange body; the signature after them is not read.

    Raises :class:`BadHandshake` when the parameters are truncated or empty (a zero prime, an empty
    point): a server that sends them is broken, and its group must not be recorded.
    """
    rd = WireReader(body, "ServerKeyExchange")
    if kind is KeyExchangeKind.DHE:
        prime = int.from_bytes(rd.vector(2), "big")
        generator = int.from_bytes(rd.vector(2), "big")
        public = rd.vector(2)
        if prime < 3 or not generator or not public:
            raise BadHandshake("ServerKeyExchange: empty or degenerate DH parameters")
        return DhParams(prime, generator, int.from_bytes(public, "big").bit_length())
    curve_type = rd.uint(1)
    if curve_type != EcCurveType.NAMED_CURVE:
        if curve_type not in (EcCurveType.EXPLICIT_PRIME, EcCurveType.EXPLICIT_CHAR2):
            raise BadHandshake(f"ServerKeyExchange: unknown ECCurveType {curve_type}")
        return EcParams(curve_type, None)
    named_curve = rd.uint(2)
    if not rd.vector(1):
        raise BadHandshake("ServerKeyExchange: empty EC point")
    return EcParams(curve_type, named_curve)
