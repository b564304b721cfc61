"""ClientHello builders: a frozen :class:`ClientHelloSpec` in, record bytes out (TLS 1.0-1.3, SSLv3,
and the SSLv2-compatible hello). No I/O; the probes send what this builds (``scanner.tls.probe``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from scanner.tls.messages import (
    COMPRESSION_DEFLATE,
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
    TLS_FALLBACK_SCSV,
    ContentType,
    ExtensionType,
    HandshakeType,
    InvalidClientHelloSpec,
    NamedGroup,
    encode_extensions,
    encode_handshake,
    encode_records,
    put_u16_list,
    put_uint,
    put_vector,
)
from scanner.tls.versions import TlsVersion

__all__ = [
    "TLS12_GROUPS",
    "TLS12_SIGNATURE_ALGORITHMS",
    "TLS13_GROUPS",
    "TLS13_SIGNATURE_ALGORITHMS",
    "ClientHelloSpec",
    "KeyShareEntry",
    "build_client_hello",
    "build_sslv2_client_hello",
    "encode_client_hello",
    "key_share_entry",
    "make_client_hello_spec",
]


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
        entry = b"\x00" + put_vector(spec.server_name.encode("ascii"), 2)  # host_name(0)
        exts.append((ExtensionType.SERVER_NAME, put_vector(entry, 2)))
    if spec.ec_point_formats:
        exts.append((ExtensionType.EC_POINT_FORMATS, put_vector(bytes(spec.ec_point_formats), 1)))
    if spec.supported_groups:
        exts.append((ExtensionType.SUPPORTED_GROUPS, put_vector(put_u16_list(spec.supported_groups), 2)))
    if spec.signature_algorithms:
        exts.append((ExtensionType.SIGNATURE_ALGORITHMS, put_vector(put_u16_list(spec.signature_algorithms), 2)))
    if spec.extended_master_secret:
        exts.append((ExtensionType.EXTENDED_MASTER_SECRET, b""))
    if spec.renegotiation_info:
        # RFC 5746 §3.4: an initial hello carries an empty renegotiated_connection.
        exts.append((ExtensionType.RENEGOTIATION_INFO, b"\x00"))
    if spec.supported_versions:
        exts.append((ExtensionType.SUPPORTED_VERSIONS, put_vector(put_u16_list(spec.supported_versions), 1)))
    if spec.key_shares is not None:
        shares = b"".join(put_uint(k.group, 2) + put_vector(k.key_exchange, 2) for k in spec.key_shares)
        exts.append((ExtensionType.KEY_SHARE, put_vector(shares, 2)))
    exts.extend(spec.extra_extensions)
    return exts


def _client_hello_message(spec: ClientHelloSpec, exts: list[tuple[int, bytes]] | None) -> bytes:
    body = (
        put_uint(spec.client_version, 2)
        + spec.random
        + put_vector(spec.session_id, 1)
        + put_vector(put_u16_list(spec.cipher_suites), 2)
        + put_vector(bytes(spec.compression_methods), 1)
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
    specs = b"".join(put_uint(c, 3) for c in cipher_specs)
    body = (
        b"\x01"  # MSG-CLIENT-HELLO
        + put_uint(TlsVersion.SSL2, 2)
        + put_uint(len(specs), 2)
        + put_uint(len(session_id), 2)
        + put_uint(len(challenge), 2)
        + specs
        + session_id
        + challenge
    )
    if len(body) > 0x7FFF:
        raise InvalidClientHelloSpec("SSLv2 hello too long")
    return put_uint(0x8000 | len(body), 2) + body
