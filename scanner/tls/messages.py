"""TLS wire vocabulary shared by the ClientHello builder and the server-response parser: code points,
size limits, the codec's errors, big-endian byte helpers, record/handshake framing, and the events the
parser hands back (model: python-hyper/h11's events). No I/O.

All integers on the wire are big-endian (RFC 8446 §3.3). Unknown code points (versions, suites, alerts,
extensions, handshake types) are carried as plain ints and never rejected; only *structurally* malformed
input raises, and then only subclasses of :class:`TlsCodecError`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, TypeAlias

__all__ = [
    "COMPRESSION_DEFLATE",
    "DOWNGRADE_SENTINEL_TLS11",
    "DOWNGRADE_SENTINEL_TLS12",
    "HELLO_RETRY_REQUEST_RANDOM",
    "MAX_PLAINTEXT_FRAGMENT",
    "MAX_RECORD_LENGTH",
    "SSL2_CIPHER_SPECS",
    "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    "TLS_FALLBACK_SCSV",
    "Alert",
    "AlertDescription",
    "AlertLevel",
    "BadHandshake",
    "BadRecord",
    "BufferLimitExceeded",
    "Certificate",
    "ChangeCipherSpec",
    "ConnectionClosed",
    "ContentType",
    "DecodeError",
    "DhParams",
    "DowngradeSentinel",
    "EcCurveType",
    "EcParams",
    "EncryptedRecord",
    "Event",
    "ExtensionType",
    "HandshakeMessageTooLarge",
    "HandshakeType",
    "HelloFacts",
    "InvalidClientHelloSpec",
    "KeyExchangeKind",
    "NamedGroup",
    "NotTls",
    "OtherHandshake",
    "OtherRecord",
    "ParserStateError",
    "RecordTooLarge",
    "SSLv2Error",
    "SSLv2Record",
    "SSLv2ServerHello",
    "ServerHello",
    "ServerHelloDone",
    "TlsCodecError",
    "TruncatedStream",
    "WireReader",
    "encode_extensions",
    "encode_handshake",
    "encode_record",
    "encode_records",
    "put_u16_list",
    "put_uint",
    "put_vector",
]


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24


class HandshakeType(IntEnum):
    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20
    CERTIFICATE_STATUS = 22


class ExtensionType(IntEnum):
    SERVER_NAME = 0
    STATUS_REQUEST = 5
    SUPPORTED_GROUPS = 10
    EC_POINT_FORMATS = 11
    SIGNATURE_ALGORITHMS = 13
    HEARTBEAT = 15
    ALPN = 16
    PADDING = 21
    ENCRYPT_THEN_MAC = 22
    EXTENDED_MASTER_SECRET = 23
    SESSION_TICKET = 35
    SUPPORTED_VERSIONS = 43
    COOKIE = 44
    PSK_KEY_EXCHANGE_MODES = 45
    KEY_SHARE = 51
    RENEGOTIATION_INFO = 0xFF01


class NamedGroup(IntEnum):
    SECP256R1 = 0x0017
    SECP384R1 = 0x0018
    SECP521R1 = 0x0019
    X25519 = 0x001D
    X448 = 0x001E
    FFDHE2048 = 0x0100
    FFDHE3072 = 0x0101
    FFDHE4096 = 0x0102


class AlertLevel(IntEnum):
    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    """Common alert descriptions (RFC 5246 §7.2, RFC 8446 §6, RFC 7507 §2); others stay ints."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    RECORD_OVERFLOW = 22
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    ILLEGAL_PARAMETER = 47
    DECODE_ERROR = 50
    PROTOCOL_VERSION = 70
    INSUFFICIENT_SECURITY = 71
    INTERNAL_ERROR = 80
    INAPPROPRIATE_FALLBACK = 86
    USER_CANCELED = 90
    MISSING_EXTENSION = 109
    UNSUPPORTED_EXTENSION = 110
    UNRECOGNIZED_NAME = 112


TLS_EMPTY_RENEGOTIATION_INFO_SCSV: Final = 0x00FF  # RFC 5746 §3.3


COMPRESSION_DEFLATE: Final = 1  # RFC 3749 §2


TLS_FALLBACK_SCSV: Final = 0x5600  # RFC 7507


# RFC 8446 §4.1.3: SHA-256("HelloRetryRequest") marks an HRR.
HELLO_RETRY_REQUEST_RANDOM: Final = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


DOWNGRADE_SENTINEL_TLS12: Final = b"DOWNGRD\x01"


DOWNGRADE_SENTINEL_TLS11: Final = b"DOWNGRD\x00"


MAX_PLAINTEXT_FRAGMENT: Final = 2**14  # RFC 8446 §5.1


# Largest record any TLS version may send (TLSCiphertext, RFC 5246 §6.2.3).
MAX_RECORD_LENGTH: Final = 2**14 + 2048


# SSLv2 cipher specs (3-byte codes, draft-hickman-netscape-ssl-00).
SSL2_CIPHER_SPECS: Final = (
    0x010080,  # SSL_CK_RC4_128_WITH_MD5
    0x020080,  # SSL_CK_RC4_128_EXPORT40_WITH_MD5
    0x030080,  # SSL_CK_RC2_128_CBC_WITH_MD5
    0x040080,  # SSL_CK_RC2_128_CBC_EXPORT40_WITH_MD5
    0x050080,  # SSL_CK_IDEA_128_CBC_WITH_MD5
    0x060040,  # SSL_CK_DES_64_CBC_WITH_MD5
    0x0700C0,  # SSL_CK_DES_192_EDE3_CBC_WITH_MD5
)


class TlsCodecError(Exception):
    """Base class of everything this module raises on bad input."""


class DecodeError(TlsCodecError):
    """Structurally malformed input."""


class BadRecord(DecodeError):
    """A record-layer violation (empty handshake record, bad CCS, ...)."""


class BadHandshake(DecodeError):
    """A handshake message whose body does not parse."""


class NotTls(TlsCodecError):
    """The peer's bytes do not start a TLS (or SSLv2) record.

    Typical after STARTTLS: the server answers with SMTP text instead.
    """

    def __init__(self, message: str, prefix: bytes) -> None:
        super().__init__(message)
        self.prefix = prefix


class RecordTooLarge(TlsCodecError):
    """A record header announces more than 2^14 + 2048 bytes."""


class HandshakeMessageTooLarge(TlsCodecError):
    """A handshake message announces more than the configured cap."""


class BufferLimitExceeded(TlsCodecError):
    """More unparsed bytes would be buffered than the configured cap."""


class TruncatedStream(TlsCodecError):
    """End of stream inside a record or handshake message."""


class ParserStateError(TlsCodecError):
    """The parser was used after it failed or after feed_eof()."""


class InvalidClientHelloSpec(TlsCodecError, ValueError):
    """A ClientHelloSpec that cannot be encoded as asked."""


def put_uint(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise InvalidClientHelloSpec(f"{value} does not fit in {size} byte(s)")
    return value.to_bytes(size, "big")


def put_vector(data: bytes, len_size: int) -> bytes:
    """Length-prefixed vector (RFC 8446 §3.4)."""
    return put_uint(len(data), len_size) + data


def put_u16_list(values: Sequence[int]) -> bytes:
    # One struct call instead of one int.to_bytes per code point: a hello carries up to 128 suites.
    try:
        return struct.pack(f">{len(values)}H", *values)
    except struct.error as exc:
        raise InvalidClientHelloSpec(f"a code point does not fit in 2 bytes: {exc}") from exc


class WireReader:
    """Bounds-checked cursor; every short read raises ``error``."""

    __slots__ = ("_data", "_error", "_pos", "_what")

    def __init__(self, data: bytes, what: str, error: type[DecodeError] = BadHandshake) -> None:
        self._data = data
        self._pos = 0
        self._what = what
        self._error = error

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n > self.remaining():
            raise self._error(f"{self._what}: need {n} byte(s) at offset {self._pos}, have {self.remaining()}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, len_size: int) -> bytes:
        return self.take(self.uint(len_size))

    def end(self) -> None:
        if self.remaining():
            raise self._error(f"{self._what}: {self.remaining()} trailing byte(s)")


def encode_record(content_type: int, version: int, fragment: bytes) -> bytes:
    """One TLSPlaintext record; ``fragment`` must fit a single record."""
    if len(fragment) > MAX_PLAINTEXT_FRAGMENT:
        raise InvalidClientHelloSpec("record fragment exceeds 2^14 bytes")
    return put_uint(content_type, 1) + put_uint(version, 2) + put_vector(fragment, 2)


def encode_records(content_type: int, version: int, payload: bytes) -> bytes:
    """``payload`` split into as many ≤2^14-byte records as needed (§5.1)."""
    if not payload:
        raise InvalidClientHelloSpec("refusing to encode an empty record")
    step = MAX_PLAINTEXT_FRAGMENT
    return b"".join(encode_record(content_type, version, payload[i : i + step]) for i in range(0, len(payload), step))


def encode_handshake(msg_type: int, body: bytes) -> bytes:
    return put_uint(msg_type, 1) + put_vector(body, 3)


def encode_extensions(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    return put_vector(b"".join(put_uint(t, 2) + put_vector(d, 2) for t, d in extensions), 2)


class DowngradeSentinel(str, Enum):
    """RFC 8446 §4.1.3 markers in the last 8 bytes of ServerHello.random."""

    TLS12 = "tls12"
    TLS11 = "tls11"


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A ServerHello or HelloRetryRequest.

    ``version`` is legacy_version; ``selected_version`` comes from the
    supported_versions extension when present (RFC 8446 §4.2.1).
    ``selected_group`` is the key_share group (ServerHello) or the
    selected_group (HRR), only when TLS 1.3 was selected.
    """

    version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression: int
    extensions: Mapping[int, bytes] = field(hash=False)
    selected_version: int | None
    selected_group: int | None
    is_hello_retry_request: bool
    downgrade_sentinel: DowngradeSentinel | None
    record_version: int

    @property
    def negotiated_version(self) -> int:
        return self.version if self.selected_version is None else self.selected_version


@dataclass(frozen=True, slots=True)
class Certificate:
    """TLS ≤1.2 Certificate (RFC 5246 §7.4.2): DER certificates, leaf first."""

    certificates: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ServerHelloDone:
    pass


@dataclass(frozen=True, slots=True)
class OtherHandshake:
    """Any other plaintext handshake message, undecoded."""

    msg_type: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Alert:
    """A plaintext alert; ``record_version`` may reveal the server's version."""

    level: int
    description: int
    record_version: int


@dataclass(frozen=True, slots=True)
class ChangeCipherSpec:
    record_version: int


@dataclass(frozen=True, slots=True)
class EncryptedRecord:
    """A record after the server switched to protected records (1.2 CCS, 1.3 SH)."""

    content_type: int
    record_version: int
    fragment: bytes


@dataclass(frozen=True, slots=True)
class OtherRecord:
    """Plaintext application_data/heartbeat record before any key change."""

    content_type: int
    record_version: int
    fragment: bytes


@dataclass(frozen=True, slots=True)
class SSLv2ServerHello:
    """SSLv2 SERVER-HELLO: the server speaks SSLv2 (RFC 6176 prohibits it)."""

    session_id_hit: int
    certificate_type: int
    version: int
    certificate: bytes
    cipher_specs: tuple[int, ...]
    connection_id: bytes


@dataclass(frozen=True, slots=True)
class SSLv2Error:
    error_code: int


@dataclass(frozen=True, slots=True)
class SSLv2Record:
    """A later SSLv2 record (encrypted, undecoded)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """feed_eof() was called and every complete event has been returned."""


Event: TypeAlias = (
    ServerHello
    | Certificate
    | ServerHelloDone
    | OtherHandshake
    | Alert
    | ChangeCipherSpec
    | EncryptedRecord
    | OtherRecord
    | SSLv2ServerHello
    | SSLv2Error
    | SSLv2Record
    | ConnectionClosed
)


@dataclass(frozen=True, slots=True)
class HelloFacts:
    """Protocol-hygiene facts of one ServerHello (answering a hygiene hello, see make_client_hello_spec).

    An extension counts only when it is in the ServerHello: a server echoes each of these only when it
    agrees to it (RFC 5746 §3.6, RFC 7627 §5.1, RFC 7366 §2, RFC 6520 §2, RFC 6066 §8).
    """

    secure_renegotiation: bool  # renegotiation_info present (answer to the extension or the SCSV)
    compression: int  # the compression method chosen (0 = null)
    extended_master_secret: bool
    encrypt_then_mac: bool
    heartbeat: bool
    status_request: bool  # the server will staple an OCSP response (CertificateStatus follows)


class KeyExchangeKind(str, Enum):
    """Which ServerKeyExchange layout a suite implies (RFC 5246 §7.4.3, RFC 8422 §5.4)."""

    DHE = "dhe"
    ECDHE = "ecdhe"


@dataclass(frozen=True, slots=True)
class DhParams:
    """ServerDHParams (RFC 5246 §7.4.3): the prime, the generator and the server's public value."""

    prime: int
    generator: int
    public_bits: int

    @property
    def bits(self) -> int:
        return self.prime.bit_length()


class EcCurveType(IntEnum):
    """RFC 8422 §5.4 ECCurveType; the explicit ones are deprecated but may still be met."""

    EXPLICIT_PRIME = 1
    EXPLICIT_CHAR2 = 2
    NAMED_CURVE = 3


@dataclass(frozen=True, slots=True)
class EcParams:
    """ServerECDHParams (RFC 8422 §5.4): the curve; ``named_curve`` is None for explicit curves."""

    curve_type: int
    named_curve: int | None
