"""Sans-IO TLS codec for capability probes (SSLv2 server hello … TLS 1.3).

Two halves, neither doing any I/O (model: python-hyper/h11):

* builders turn a frozen :class:`ClientHelloSpec` into ClientHello bytes;
* :class:`ServerResponseParser` is fed whatever bytes arrived, in any
  chunking, and hands back events one at a time, or :data:`NEED_DATA`.

All integers on the wire are big-endian (RFC 8446 §3.3).  Unknown code points
(versions, suites, alerts, extensions, handshake types) are carried as plain
ints and never rejected; only *structurally* malformed input raises, and then
only subclasses of :class:`TlsCodecError`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final, NoReturn, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from scanner.tls.versions import TlsVersion

# --------------------------------------------------------------------------
# Code points
# --------------------------------------------------------------------------


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
DEFAULT_MAX_HANDSHAKE_MESSAGE: Final = 256 * 1024
DEFAULT_MAX_BUFFERED: Final = 1024 * 1024

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

# Defaults for probes.  Broad on purpose: a probe should not fail merely
# because our list lacked the server's only signature scheme or curve.
TLS12_GROUPS: Final = (
    NamedGroup.X25519,
    NamedGroup.SECP256R1,
    NamedGroup.SECP384R1,
    NamedGroup.SECP521R1,
    NamedGroup.X448,
)
TLS13_GROUPS: Final = (*TLS12_GROUPS, NamedGroup.FFDHE2048, NamedGroup.FFDHE3072)
TLS12_SIGNATURE_ALGORITHMS: Final = (
    0x0403, 0x0503, 0x0603,  # ecdsa + sha256/384/512
    0x0804, 0x0805, 0x0806,  # rsa_pss_rsae
    0x0401, 0x0501, 0x0601,  # rsa_pkcs1
    0x0807, 0x0808,  # ed25519, ed448
    0x0402, 0x0502, 0x0602,  # dsa + sha2 (TLS 1.2 hash/sig pairs)
    0x0303, 0x0301, 0x0302,  # sha224 + ecdsa/rsa/dsa
    0x0203, 0x0201, 0x0202,  # sha1 + ecdsa/rsa/dsa
)  # fmt: skip
TLS13_SIGNATURE_ALGORITHMS: Final = (
    0x0403, 0x0503, 0x0603,
    0x0804, 0x0805, 0x0806,
    0x0809, 0x080A, 0x080B,
    0x0807, 0x0808,
    0x0401, 0x0501, 0x0601,
)  # fmt: skip

# The F5 hang: ClientHello handshake messages (header included, record
# header excluded) of 256..511 bytes (RFC 7685 §4).
_F5_LOW: Final = 256
_F5_HIGH: Final = 511
_F5_TARGET: Final = 512

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Byte helpers
# --------------------------------------------------------------------------


def _uint(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise InvalidClientHelloSpec(f"{value} does not fit in {size} byte(s)")
    return value.to_bytes(size, "big")


def _vector(data: bytes, len_size: int) -> bytes:
    """Length-prefixed vector (RFC 8446 §3.4)."""
    return _uint(len(data), len_size) + data


def _u16_list(values: Sequence[int]) -> bytes:
    # One struct call instead of one int.to_bytes per code point: a hello carries up to 128 suites.
    try:
        return struct.pack(f">{len(values)}H", *values)
    except struct.error as exc:
        raise InvalidClientHelloSpec(f"a code point does not fit in 2 bytes: {exc}") from exc


class _Reader:
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
    return _uint(content_type, 1) + _uint(version, 2) + _vector(fragment, 2)


def encode_records(content_type: int, version: int, payload: bytes) -> bytes:
    """``payload`` split into as many ≤2^14-byte records as needed (§5.1)."""
    if not payload:
        raise InvalidClientHelloSpec("refusing to encode an empty record")
    step = MAX_PLAINTEXT_FRAGMENT
    return b"".join(encode_record(content_type, version, payload[i : i + step]) for i in range(0, len(payload), step))


def encode_handshake(msg_type: int, body: bytes) -> bytes:
    return _uint(msg_type, 1) + _vector(body, 3)


def encode_alert(level: int, description: int, version: int = TlsVersion.TLS12) -> bytes:
    return encode_record(ContentType.ALERT, version, _uint(level, 1) + _uint(description, 1))


def encode_extensions(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    return _vector(b"".join(_uint(t, 2) + _vector(d, 2) for t, d in extensions), 2)


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
    body = _uint(version, 2) + random + _vector(session_id, 1) + _uint(cipher_suite, 2) + _uint(compression, 1)
    if extensions is not None:
        body += encode_extensions(extensions)
    return encode_handshake(HandshakeType.SERVER_HELLO, body)


# --------------------------------------------------------------------------
# ClientHello
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyShareEntry:
    """One KeyShareEntry of a TLS 1.3 key_share extension (RFC 8446 §4.2.8)."""

    group: int
    key_exchange: bytes


def key_share_entry(group: int, seed: bytes) -> KeyShareEntry:
    """A real public key share for ``group`` derived from ``seed``.

    The caller supplies the randomness, so tests are deterministic; the
    matching private key is not kept because probes never finish handshakes.
    x25519 takes exactly 32 seed bytes; NIST curves take at least the curve's
    byte length and reduce it into [1, 2^(bits-1)), which is below the order.
    """
    if group == NamedGroup.X25519:
        if len(seed) != 32:
            raise InvalidClientHelloSpec("x25519 seed must be 32 bytes")
        public = x25519.X25519PrivateKey.from_private_bytes(seed).public_key()
        return KeyShareEntry(group, public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    curves: Mapping[int, ec.EllipticCurve] = {
        NamedGroup.SECP256R1: ec.SECP256R1(),
        NamedGroup.SECP384R1: ec.SECP384R1(),
        NamedGroup.SECP521R1: ec.SECP521R1(),
    }
    curve = curves.get(group)
    if curve is None:
        raise InvalidClientHelloSpec(f"no key generation for group 0x{group:04X}")
    if len(seed) < (curve.key_size + 7) // 8:
        raise InvalidClientHelloSpec(f"seed too short for {curve.name}")
    scalar = int.from_bytes(seed, "big") % ((1 << (curve.key_size - 1)) - 1) + 1
    public_ec = ec.derive_private_key(scalar, curve).public_key()
    point = public_ec.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return KeyShareEntry(group, point)


def _check_uints(name: str, values: Sequence[int], size: int) -> None:
    for v in values:
        if not isinstance(v, int) or not 0 <= v < 1 << (8 * size):
            raise InvalidClientHelloSpec(f"{name}: {v!r} is not a {size}-byte code point")


def _check_host_name(name: str) -> None:
    # RFC 6066 §3: ASCII host name, no trailing dot, never an IP literal.
    if not name or len(name) > 253 or name.endswith("."):
        raise InvalidClientHelloSpec(f"bad SNI host name {name!r}")
    if not name.isascii() or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidClientHelloSpec(f"SNI host name must be an ASCII (A-label) name: {name!r}")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return
    raise InvalidClientHelloSpec(f"SNI must not be an IP literal: {name!r}")


_MANAGED_EXTENSIONS: Final = frozenset(
    {
        ExtensionType.SERVER_NAME,
        ExtensionType.SUPPORTED_GROUPS,
        ExtensionType.EC_POINT_FORMATS,
        ExtensionType.SIGNATURE_ALGORITHMS,
        ExtensionType.PADDING,
        ExtensionType.EXTENDED_MASTER_SECRET,
        ExtensionType.SUPPORTED_VERSIONS,
        ExtensionType.KEY_SHARE,
        ExtensionType.RENEGOTIATION_INFO,
    }
)


@dataclass(frozen=True)
class ClientHelloSpec:
    """Everything that goes into one ClientHello.  Sequences become tuples.

    ``key_shares``: None omits the extension; an empty tuple sends an empty
    client_shares list, which makes a TLS 1.3 server answer with a
    HelloRetryRequest naming its group (RFC 8446 §4.1.4).
    ``avoid_f5_bug``: pad (RFC 7685) any TLS hello whose handshake message
    would be 256..511 bytes; SSLv3 hellos cannot carry the padding extension,
    so such a hello is refused and the caller must offer fewer suites.
    """

    record_version: int
    client_version: int
    cipher_suites: tuple[int, ...]
    random: bytes
    session_id: bytes = b""
    server_name: str | None = None
    supported_groups: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    ec_point_formats: tuple[int, ...] = ()
    supported_versions: tuple[int, ...] = ()
    key_shares: tuple[KeyShareEntry, ...] | None = None
    compression_methods: tuple[int, ...] = (0,)
    renegotiation_info: bool = False
    extended_master_secret: bool = False
    extra_extensions: tuple[tuple[int, bytes], ...] = ()
    avoid_f5_bug: bool = True
    legacy_extensions: bool = False  # allow extensions in an SSLv3 hello (see make_client_hello_spec)

    def __post_init__(self) -> None:
        for name in (
            "cipher_suites",
            "supported_groups",
            "signature_algorithms",
            "ec_point_formats",
            "supported_versions",
            "compression_methods",
            "extra_extensions",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.key_shares is not None:
            object.__setattr__(self, "key_shares", tuple(self.key_shares))
        self._validate()

    def _validate(self) -> None:
        _check_uints("record_version", [self.record_version], 2)
        _check_uints("client_version", [self.client_version], 2)
        if len(self.random) != 32:
            raise InvalidClientHelloSpec("random must be exactly 32 bytes")
        if len(self.session_id) > 32:
            raise InvalidClientHelloSpec("session_id is at most 32 bytes")
        if not 1 <= len(self.cipher_suites) <= 32767:
            raise InvalidClientHelloSpec("offer between 1 and 32767 cipher suites")
        if not 1 <= len(self.compression_methods) <= 255:
            raise InvalidClientHelloSpec("offer between 1 and 255 compression methods")
        _check_uints("cipher_suites", self.cipher_suites, 2)
        _check_uints("compression_methods", self.compression_methods, 1)
        _check_uints("supported_groups", self.supported_groups, 2)
        _check_uints("signature_algorithms", self.signature_algorithms, 2)
        _check_uints("ec_point_formats", self.ec_point_formats, 1)
        _check_uints("supported_versions", self.supported_versions, 2)
        if len(self.supported_versions) > 127 or len(self.ec_point_formats) > 255:
            raise InvalidClientHelloSpec("supported_versions/ec_point_formats list too long")
        if self.server_name is not None:
            _check_host_name(self.server_name)
        extra_types = [t for t, _ in self.extra_extensions]
        _check_uints("extra_extensions", extra_types, 2)
        if len(set(extra_types)) != len(extra_types) or _MANAGED_EXTENSIONS & set(extra_types):
            raise InvalidClientHelloSpec("extra_extensions repeat a type or one the spec manages")
        if self.client_version < TlsVersion.TLS10 and self.has_extensions and not self.legacy_extensions:
            raise InvalidClientHelloSpec("SSLv3 (and older) hellos carry no extensions unless legacy_extensions")

    @property
    def has_extensions(self) -> bool:
        return bool(
            self.server_name
            or self.supported_groups
            or self.signature_algorithms
            or self.ec_point_formats
            or self.supported_versions
            or self.key_shares is not None
            or self.renegotiation_info
            or self.extended_master_secret
            or self.extra_extensions
        )


def _spec_extensions(spec: ClientHelloSpec) -> list[tuple[int, bytes]]:
    exts: list[tuple[int, bytes]] = []
    if spec.server_name is not None:
        entry = b"\x00" + _vector(spec.server_name.encode("ascii"), 2)  # host_name(0)
        exts.append((ExtensionType.SERVER_NAME, _vector(entry, 2)))
    if spec.ec_point_formats:
        exts.append((ExtensionType.EC_POINT_FORMATS, _vector(bytes(spec.ec_point_formats), 1)))
    if spec.supported_groups:
        exts.append((ExtensionType.SUPPORTED_GROUPS, _vector(_u16_list(spec.supported_groups), 2)))
    if spec.signature_algorithms:
        exts.append((ExtensionType.SIGNATURE_ALGORITHMS, _vector(_u16_list(spec.signature_algorithms), 2)))
    if spec.extended_master_secret:
        exts.append((ExtensionType.EXTENDED_MASTER_SECRET, b""))
    if spec.renegotiation_info:
        # RFC 5746 §3.4: an initial hello carries an empty renegotiated_connection.
        exts.append((ExtensionType.RENEGOTIATION_INFO, b"\x00"))
    if spec.supported_versions:
        exts.append((ExtensionType.SUPPORTED_VERSIONS, _vector(_u16_list(spec.supported_versions), 1)))
    if spec.key_shares is not None:
        shares = b"".join(_uint(k.group, 2) + _vector(k.key_exchange, 2) for k in spec.key_shares)
        exts.append((ExtensionType.KEY_SHARE, _vector(shares, 2)))
    exts.extend(spec.extra_extensions)
    return exts


def _client_hello_message(spec: ClientHelloSpec, exts: list[tuple[int, bytes]] | None) -> bytes:
    body = (
        _uint(spec.client_version, 2)
        + spec.random
        + _vector(spec.session_id, 1)
        + _vector(_u16_list(spec.cipher_suites), 2)
        + _vector(bytes(spec.compression_methods), 1)
    )
    if exts is not None:
        body += encode_extensions(exts)
    return encode_handshake(HandshakeType.CLIENT_HELLO, body)


def encode_client_hello(spec: ClientHelloSpec) -> bytes:
    """The ClientHello handshake message (4-byte header + body), no record."""
    exts = _spec_extensions(spec) if spec.has_extensions else None
    message = _client_hello_message(spec, exts)
    if not spec.avoid_f5_bug or not _F5_LOW <= len(message) <= _F5_HIGH:
        return message
    if spec.client_version < TlsVersion.TLS10 and exts is None:
        raise InvalidClientHelloSpec(
            f"SSLv3 hello of {len(message)} bytes hits the 256-511 byte F5 bug and cannot be padded; offer fewer suites"
        )
    # RFC 7685: an all-zero padding extension, placed last, lifts it to 512.
    with_empty_pad = [*(exts or []), (ExtensionType.PADDING, b"")]
    pad_len = max(0, _F5_TARGET - len(_client_hello_message(spec, with_empty_pad)))
    return _client_hello_message(spec, [*(exts or []), (ExtensionType.PADDING, bytes(pad_len))])


def build_client_hello(spec: ClientHelloSpec) -> bytes:
    """The ClientHello as record(s), ready to write to the socket."""
    return encode_records(ContentType.HANDSHAKE, spec.record_version, encode_client_hello(spec))


# Extensions a hygiene hello adds (extended_master_secret is a spec field): encrypt_then_mac and
# heartbeat are empty / one mode byte (RFC 7366 §2, RFC 6520 §2: 1 = peer_allowed_to_send);
# status_request asks for OCSP (status_type 1) with empty responder and extension lists (RFC 6066 §8).
_HYGIENE_EXTENSIONS: Final = (
    (ExtensionType.ENCRYPT_THEN_MAC, b""),
    (ExtensionType.HEARTBEAT, b"\x01"),
    (ExtensionType.STATUS_REQUEST, b"\x01\x00\x00\x00\x00"),
)


def make_client_hello_spec(
    version: TlsVersion,
    cipher_suites: Sequence[int],
    random: bytes,
    *,
    server_name: str | None = None,
    session_id: bytes | None = None,
    key_shares: Sequence[KeyShareEntry] = (),
    supported_versions: Sequence[int] | None = None,
    renegotiation_scsv: bool | None = None,
    fallback_scsv: bool = False,
    legacy_extensions: bool = False,
    groups: Sequence[int] | None = None,
    hygiene: bool = False,
) -> ClientHelloSpec:
    """A sensible probe hello for one protocol version.

    * Record version 0x0301 for every TLS hello (what OpenSSL and browsers
      send; RFC 8446 §5.1 allows it for an initial hello), 0x0300 for SSLv3.
    * signature_algorithms only from TLS 1.2 on (RFC 5246 §7.4.1.4.1).
    * TLS 1.0-1.2: supported_versions only when given (the "other hello shape").
    * TLS 1.3: legacy_version 0x0303, supported_versions [0x0304] unless given,
      and a 32-byte session id (compatibility mode, RFC 8446 §D.4) derived
      from ``random`` when none is passed, so the hello stays deterministic.
      ``key_shares`` defaults to an empty list, which asks a 1.3 server for a
      HelloRetryRequest that already names its suite and group; pass real
      shares (see :func:`key_share_entry`) to get a ServerHello.
    * renegotiation SCSV (RFC 5746) appended by default below TLS 1.3;
      FALLBACK_SCSV (RFC 7507) on request.
    * ``groups`` replaces the default supported_groups list.
    * ``hygiene`` (below TLS 1.3): also offer what a server may answer in its ServerHello, so one
      hello shows it: DEFLATE compression (RFC 3749), extended_master_secret (RFC 7627),
      encrypt_then_mac (RFC 7366), heartbeat (RFC 6520) and status_request (RFC 6066 §8).
    """
    ver = TlsVersion(version)
    if ver is TlsVersion.SSL2:
        raise InvalidClientHelloSpec("use build_sslv2_client_hello for SSLv2")
    if renegotiation_scsv is None:
        renegotiation_scsv = ver < TlsVersion.TLS13
    suites = list(cipher_suites)
    if renegotiation_scsv and TLS_EMPTY_RENEGOTIATION_INFO_SCSV not in suites:
        suites.append(TLS_EMPTY_RENEGOTIATION_INFO_SCSV)
    if fallback_scsv and TLS_FALLBACK_SCSV not in suites:
        suites.append(TLS_FALLBACK_SCSV)
    extra = _HYGIENE_EXTENSIONS if hygiene and ver < TlsVersion.TLS13 else ()
    compression = (COMPRESSION_DEFLATE, 0) if hygiene and ver < TlsVersion.TLS13 else (0,)
    if ver is TlsVersion.SSL3:
        # RFC 6101 §5.6.1.2 tells servers to ignore data after the compression methods (forward
        # compatibility), so an SSLv3 hello may carry the EC extensions that ECDHE suites need, as the
        # peers' SSLv3 probes do; ``legacy_extensions`` opts in (it also makes F5 padding possible).
        return ClientHelloSpec(
            record_version=TlsVersion.SSL3,
            client_version=TlsVersion.SSL3,
            cipher_suites=tuple(suites),
            random=random,
            session_id=session_id or b"",
            supported_groups=tuple(groups or TLS12_GROUPS) if legacy_extensions else (),
            ec_point_formats=(0,) if legacy_extensions else (),
            legacy_extensions=legacy_extensions,
            compression_methods=compression,
            extended_master_secret=bool(extra) and legacy_extensions,
            extra_extensions=extra if legacy_extensions else (),
        )
    if ver is TlsVersion.TLS13:
        return ClientHelloSpec(
            record_version=TlsVersion.TLS10,
            client_version=TlsVersion.TLS12,
            cipher_suites=tuple(suites),
            random=random,
            session_id=hashlib.sha256(b"session-id" + random).digest() if session_id is None else session_id,
            server_name=server_name,
            supported_groups=tuple(groups or TLS13_GROUPS),
            signature_algorithms=TLS13_SIGNATURE_ALGORITHMS,
            supported_versions=tuple(supported_versions or (TlsVersion.TLS13,)),
            key_shares=tuple(key_shares),
        )
    return ClientHelloSpec(
        record_version=TlsVersion.TLS10,
        client_version=ver,
        cipher_suites=tuple(suites),
        random=random,
        session_id=session_id or b"",
        server_name=server_name,
        supported_groups=tuple(groups or TLS12_GROUPS),
        ec_point_formats=(0,),  # uncompressed only (RFC 8422 §5.1.2)
        signature_algorithms=TLS12_SIGNATURE_ALGORITHMS if ver >= TlsVersion.TLS12 else (),
        # Only on request: a <= 1.2 hello that also lists its version there (RFC 8446 §4.2.1), the
        # shape every modern client sends; some servers negotiate differently with it.
        supported_versions=tuple(supported_versions or ()),
        compression_methods=compression,
        extended_master_secret=bool(extra),
        extra_extensions=extra,
    )


def build_sslv2_client_hello(cipher_specs: Sequence[int], challenge: bytes, session_id: bytes = b"") -> bytes:
    """An SSLv2 CLIENT-HELLO with a 2-byte record header (version 0x0002)."""
    if not 16 <= len(challenge) <= 32:
        raise InvalidClientHelloSpec("SSLv2 challenge must be 16..32 bytes")
    if not cipher_specs:
        raise InvalidClientHelloSpec("offer at least one SSLv2 cipher spec")
    specs = b"".join(_uint(c, 3) for c in cipher_specs)
    body = (
        b"\x01"  # MSG-CLIENT-HELLO
        + _uint(TlsVersion.SSL2, 2)
        + _uint(len(specs), 2)
        + _uint(len(session_id), 2)
        + _uint(len(challenge), 2)
        + specs
        + session_id
        + challenge
    )
    if len(body) > 0x7FFF:
        raise InvalidClientHelloSpec("SSLv2 hello too long")
    return _uint(0x8000 | len(body), 2) + body


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
    rd = _Reader(data, "ClientHello records", BadRecord)
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
    msg = _Reader(bytes(payload), "ClientHello")
    if msg.uint(1) != HandshakeType.CLIENT_HELLO:
        raise BadHandshake("not a ClientHello")
    body = _Reader(msg.vector(3), "ClientHello")
    msg.end()
    client_version = body.uint(2)
    random = body.take(32)
    session_id = body.vector(1)
    suites_raw = body.vector(2)
    if len(suites_raw) % 2:
        raise BadHandshake("odd cipher_suites length")
    suites = tuple(int.from_bytes(suites_raw[i : i + 2], "big") for i in range(0, len(suites_raw), 2))
    compression = tuple(body.vector(1))
    extensions = _parse_extension_block(body, "ClientHello") if body.remaining() else None
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


def _parse_extension_block(rd: _Reader, what: str) -> tuple[tuple[int, bytes], ...]:
    """The trailing extensions<2> block; duplicates are illegal (RFC 8446 §4.2)."""
    block = _Reader(rd.vector(2), f"{what} extensions")
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


# --------------------------------------------------------------------------
# Server response events
# --------------------------------------------------------------------------


class DowngradeSentinel(str, Enum):
    """RFC 8446 §4.1.3 markers in the last 8 bytes of ServerHello.random."""

    TLS12 = "tls12"
    TLS11 = "tls11"


@dataclass(frozen=True, slots=True)
class NeedData:
    """Not an event: feed more bytes (or feed_eof()) before asking again."""


NEED_DATA: Final = NeedData()


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


def _parse_server_hello(body: bytes, record_version: int) -> ServerHello:
    rd = _Reader(body, "ServerHello")
    version = rd.uint(2)
    random = rd.take(32)
    session_id = rd.vector(1)
    if len(session_id) > 32:
        raise BadHandshake("ServerHello session_id longer than 32 bytes")
    cipher_suite = rd.uint(2)
    compression = rd.uint(1)
    # RFC 5246 §7.4.1.4: the extensions block may be absent entirely.
    ext_list = _parse_extension_block(rd, "ServerHello") if rd.remaining() else ()
    extensions = MappingProxyType(dict(ext_list))
    is_hrr = random == HELLO_RETRY_REQUEST_RANDOM
    selected_version: int | None = None
    if ExtensionType.SUPPORTED_VERSIONS in extensions:
        sv = _Reader(extensions[ExtensionType.SUPPORTED_VERSIONS], "supported_versions")
        selected_version = sv.uint(2)
        sv.end()
    selected_group: int | None = None
    if ExtensionType.KEY_SHARE in extensions and _is_tls13_family(selected_version or 0):
        ks = _Reader(extensions[ExtensionType.KEY_SHARE], "key_share")
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
    rd = _Reader(body, "Certificate")
    chain = _Reader(rd.vector(3), "certificate_list")
    rd.end()
    certs: list[bytes] = []
    while chain.remaining():
        der = chain.vector(3)
        if not der:
            raise BadHandshake("Certificate: empty ASN.1Cert")
        certs.append(der)
    return Certificate(tuple(certs))


def _parse_sslv2_first(body: bytes) -> SSLv2ServerHello | SSLv2Error:
    rd = _Reader(body, "SSLv2 message")
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


# --------------------------------------------------------------------------
# What a ≤1.2 ServerHello and ServerKeyExchange reveal about key exchange and protocol hygiene
# --------------------------------------------------------------------------


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


def parse_server_key_exchange(body: bytes, kind: KeyExchangeKind) -> DhParams | EcParams:
    """The parameters at the start of a ServerKeyExchange body; the signature after them is not read.

    Raises :class:`BadHandshake` when the parameters are truncated or empty (a zero prime, an empty
    point): a server that sends them is broken, and its group must not be recorded.
    """
    rd = _Reader(body, "ServerKeyExchange")
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
