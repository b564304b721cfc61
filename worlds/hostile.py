"""Hostile and broken mail servers on loopback, one listener per misbehaviour.

The survey meets servers that are slow on purpose (tarpits, greeting delays), overloaded (421),
misconfigured (an HTTP proxy on port 25, a port forward that echoes) or simply buggy (TLS stacks
that lie about lengths, pick suites nobody offered, or send megabytes of certificates). Peers'
trackers are full of them (sslyze #385/#589/#606, testssl.sh
#2089/#2098, Internet.nl #153/#339/#1183, EFF starttls-everywhere #69). Each behaviour here is one
small coroutine; :class:`HostileServer` binds one listener per behaviour on ``127.A.B.<10+i>:25`` and
serves them all from one event loop, in the caller's loop, a background thread, or a child process
(:class:`HostileServerProcess`, ``python -m worlds.hostile``) so that a test measuring the scanner's
memory does not count the server's buffers.

TLS-level misbehaviour is built with the project's own codec (``scanner.tls.messages``,
``worlds.tls_server``): the server reads the scanner's ClientHello, then answers with crafted records.
Behaviours that must complete a real handshake use the standard library's server side (OpenSSL) with
certificates generated at start-up.

Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scanner.tls.messages import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertLevel,
    ContentType,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    TlsCodecError,
    encode_handshake,
    encode_record,
    encode_records,
)
from scanner.tls.versions import TlsVersion
from worlds.ports import loopback_host
from worlds.procs import LoopThread
from worlds.tls_server import ClientHello, encode_alert, encode_server_hello, parse_client_hello

__all__ = [
    "FIRST_INDEX",
    "HOSTNAME",
    "Hostile",
    "HostileConfig",
    "HostileServer",
    "HostileServerProcess",
    "TlsMaterial",
    "address_of",
    "main",
    "make_tls_material",
]

LOG = logging.getLogger(__name__)

HOSTNAME = "mx.hostile.test"
FIRST_INDEX = 10  # behaviour i listens on 127.A.B.(FIRST_INDEX + i)
# A client line longer than this is not one our scanner would send; the session ends.
_CLIENT_LINE_LIMIT = 8192
_MAX_HRR_ROUNDS = 64
_INJECTION_BYTES = 8192  # BIG_INJECTION: more than the scanner reads in one go (4 KiB)
_BIG_CHAIN_CERTS = 150  # small filler certificates: the whole chain stays under OpenSSL's 100 KB cap
_HUGE_CHAIN_CERTS = 200  # padded filler certificates, ~16 KB each: ~3.3 MB in one Certificate message
_HUGE_CERT_PADDING = 16000
_PADDING_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")  # a private, unrecognised extension
_POSTSCREEN_PAUSE = 0.4  # between "220-" and "220 " (Postfix postscreen's pregreet test waits 6 s)
_HTTP_REQUEST_WAIT = 0.3  # HAProxy-style "timeout http-request" before it answers 408


class Hostile(str, Enum):
    """One misbehaviour per listener. The docstrings say what the server does, not what we expect."""

    NORMAL = "normal"
    """Control: banner, EHLO with STARTTLS, 220, a real TLS handshake, EHLO/QUIT over TLS."""
    ENDLESS_BANNER_LINES = "endless_banner_lines"
    """``220-`` continuation lines forever, as fast as the client reads."""
    MEGABYTE_LINE = "megabyte_line"
    """A single 1 MiB banner line, then silence."""
    BANNER_NO_NEWLINE = "banner_no_newline"
    """``220 `` followed by an endless stream of bytes that never contains a line feed."""
    DRIBBLE = "dribble"
    """A valid banner, one byte per ``dribble_interval`` seconds (a spamd-style tarpit)."""
    GREETING_UNDER = "greeting_under"
    """NORMAL, but the banner comes after 0.6 x the client's banner timeout (greet_pause)."""
    GREETING_OVER = "greeting_over"
    """NORMAL, but the banner comes after 1.4 x the client's banner timeout."""
    RST_ON_ACCEPT = "rst_on_accept"
    """Accepts the TCP connection and resets it at once (SO_LINGER 0)."""
    FIN_ON_ACCEPT = "fin_on_accept"
    """Accepts the TCP connection and closes it at once (FIN)."""
    HTTP_SERVER = "http_server"
    """An HTTP proxy on port 25: no banner; after a short wait, ``HTTP/1.1 408`` and close."""
    NON_UTF8 = "non_utf8"
    """Latin-1 and invalid UTF-8 bytes in the banner and EHLO reply; otherwise NORMAL (real TLS)."""
    EHLO_421 = "ehlo_421"
    """Banner, then 421 to EHLO ("too many connections from your IP") and close."""
    EHLO_5XX_THEN_HELO = "ehlo_5xx_then_helo"
    """EHLO answered 502 (an RFC 821 server), HELO answered 250."""
    EHLO_AND_HELO_5XX = "ehlo_and_helo_5xx"
    """EHLO and HELO both answered 554 (a blocklisting server)."""
    EHLO_NEVER_CLOSES = "ehlo_never_closes"
    """EHLO answered with ``250-`` lines and no final line, then silence."""
    EHLO_ENDLESS_LINES = "ehlo_endless_lines"
    """EHLO answered with ``250-`` continuation lines forever."""
    EHLO_CODE_CHANGES = "ehlo_code_changes"
    """A multi-line EHLO reply whose code changes on its last line (250- ... 220)."""
    STARTTLS_STRIPPED = "starttls_stripped"
    """EHLO lists ``XXXXXXXA`` where STARTTLS was (a middlebox stripping it, EFF's fingerprint)."""
    STARTTLS_454 = "starttls_454"
    """STARTTLS advertised, answered 454 4.7.0."""
    STARTTLS_421 = "starttls_421"
    """STARTTLS advertised, answered 421 (too many TLS sessions) and the connection closed."""
    POSTSCREEN_PREGREET = "postscreen_pregreet"
    """``220-`` first, the final ``220 `` a moment later; a client talking early gets 550 (postscreen)."""
    ECHO = "echo"
    """A port forward that echoes every byte it receives, and never says anything first."""
    BANNER_THEN_ECHO = "banner_then_echo"
    """A valid banner, then every received byte is echoed back."""
    GARBAGE_AFTER_220 = "garbage_after_220"
    """220 to STARTTLS; the ClientHello is answered with a plaintext line instead of TLS, then silence."""
    PLAINTEXT_INJECTION = "plaintext_injection"
    """``220`` and a ``250`` line in one write after STARTTLS (RFC 3207 §4.2), then a real handshake."""
    BIG_INJECTION = "big_injection"
    """220 plus 8 KiB of plaintext lines in one write after STARTTLS, then a real handshake."""
    STALL_AFTER_220 = "stall_after_220"
    """220 to STARTTLS, reads the ClientHello, never answers."""
    FIN_AFTER_220 = "fin_after_220"
    """220 to STARTTLS, reads the ClientHello, closes (FIN)."""
    LYING_LENGTH_CLOSE = "lying_length_close"
    """Answers the ClientHello with a record header claiming 16 KiB, three bytes of it, then FIN."""
    LYING_LENGTH_STALL = "lying_length_stall"
    """Same record header, three bytes of it, then silence."""
    RECORD_TOO_LARGE = "record_too_large"
    """Answers with a handshake record header announcing 65535 bytes (over the 2^14+2048 limit)."""
    SUITE_NOT_OFFERED = "suite_not_offered"
    """A TLS 1.2 ServerHello naming a cipher suite the client did not offer."""
    VERSION_ABOVE_OFFER = "version_above_offer"
    """A TLS 1.2 ServerHello, Certificate and ServerHelloDone to every ClientHello, whatever version it
    offered (a version-intolerant middlebox)."""
    HRR_LOOP = "hrr_loop"
    """A TLS 1.3 HelloRetryRequest to every ClientHello of the connection, forever."""
    HUGE_CHAIN_RAW = "huge_chain_raw"
    """TLS 1.2 ServerHello, a plaintext Certificate of 200 certificates (~3.3 MB), ServerHelloDone."""
    GARBAGE_CERT = "garbage_cert"
    """TLS 1.2 ServerHello, then a well-formed Certificate message whose one certificate is not DER."""
    CERT_BEFORE_HELLO = "cert_before_hello"
    """The ~3.3 MB Certificate message first, the ServerHello after it."""
    RESET_MID_HANDSHAKE = "reset_mid_handshake"
    """Reads the ClientHello and resets the connection."""
    SSLV2_HELLO = "sslv2_hello"
    """An SSLv2 SERVER-HELLO in reply to a TLS ClientHello, then silence."""
    UNKNOWN_ALERT = "unknown_alert"
    """A fatal alert with description 238 (not defined by any RFC), then silence."""
    ENDLESS_RECORDS = "endless_records"
    """application_data records forever, never a handshake message."""
    WARNING_ALERT_THEN_HELLO = "warning_alert_then_hello"
    """A real TLS 1.2 server that sends a warning unrecognized_name alert before its ServerHello
    (old Apache with a missing ServerName)."""
    BIG_CHAIN_TLS = "big_chain_tls"
    """A real TLS server presenting its leaf and 150 more certificates (~60 KB, under OpenSSL's cap)."""
    HUGE_CHAIN_TLS = "huge_chain_tls"
    """A real TLS server presenting its leaf and 200 padded certificates (~3.3 MB)."""


def address_of(block: str, behaviour: Hostile) -> str:
    """Where ``behaviour`` listens in ``block``."""
    return loopback_host(block, FIRST_INDEX + list(Hostile).index(behaviour))


@dataclass(frozen=True, slots=True)
class HostileConfig:
    """Timing of the misbehaviours, relative to the client's own deadlines."""

    banner_timeout: float = 1.0  # the client's; GREETING_UNDER/OVER are set against it
    dribble_interval: float = 1.0
    idle_timeout: float = 30.0  # the server drops any session older than this

    def __post_init__(self) -> None:
        if min(self.banner_timeout, self.dribble_interval, self.idle_timeout) <= 0:
            raise ValueError("timings must be > 0")


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM files for the real-TLS behaviours and DER blobs for the crafted ones."""

    leaf_pem: Path  # key + leaf certificate
    big_chain_pem: Path  # key + leaf + _BIG_CHAIN_CERTS small certificates
    huge_chain_pem: Path  # key + leaf + _HUGE_CHAIN_CERTS padded certificates
    leaf_der: bytes
    huge_chain_der: tuple[bytes, ...]


def _certificate(key: ec.EllipticCurvePrivateKey, name: str, serial: int, padding: int = 0) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    if padding:
        builder = builder.add_extension(x509.UnrecognizedExtension(_PADDING_OID, b"\x00" * padding), critical=False)
    return builder.sign(key, hashes.SHA256())


def make_tls_material(workdir: Path) -> TlsMaterial:
    """Generate one key, the leaf and the filler certificates under ``workdir`` (about a second)."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    leaf = _certificate(key, HOSTNAME, 1)
    small = [_certificate(key, f"filler-{i}.hostile.test", 1000 + i) for i in range(_BIG_CHAIN_CERTS)]
    padded = [_certificate(key, f"padded-{i}.hostile.test", 5000 + i, _HUGE_CERT_PADDING)
              for i in range(_HUGE_CHAIN_CERTS)]

    def write(name: str, certs: Sequence[x509.Certificate]) -> Path:
        path = workdir / name
        path.write_bytes(key_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return path

    der = serialization.Encoding.DER
    return TlsMaterial(
        leaf_pem=write("leaf.pem", [leaf]),
        big_chain_pem=write("big-chain.pem", [leaf, *small]),
        huge_chain_pem=write("huge-chain.pem", [leaf, *padded]),
        leaf_der=leaf.public_bytes(der),
        huge_chain_der=tuple(c.public_bytes(der) for c in [leaf, *padded]),
    )


def _server_context(pem: Path, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_TICKET
    ctx.load_cert_chain(pem)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


# --------------------------------------------------------------------------
# Crafted TLS messages
# --------------------------------------------------------------------------

_TLS12_PREFERRED = (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC009, 0xC013, 0x009C, 0x002F)
_SIGNALLING = frozenset({0x00FF, 0x5600})  # renegotiation and fallback SCSVs are not suites


def _u24_vector(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def _pick_tls12_suite(hello: ClientHello) -> int:
    """A suite the client offered, preferring ECDHE-ECDSA (our key is EC): what a real server would pick."""
    for code in _TLS12_PREFERRED:
        if code in hello.cipher_suites:
            return code
    usable = [c for c in hello.cipher_suites if c not in _SIGNALLING and c >> 8 != 0x13 and c & 0x0F0F != 0x0A0A]
    return usable[0] if usable else hello.cipher_suites[0]


def _server_hello_12(hello: ClientHello, suite: int | None = None) -> bytes:
    # Empty session id: echoing the client's (a TLS 1.3 "compatibility" id) would claim a resumption.
    message = encode_server_hello(
        version=TlsVersion.TLS12, random=os.urandom(32),
        cipher_suite=_pick_tls12_suite(hello) if suite is None else suite,
        extensions=[(ExtensionType.RENEGOTIATION_INFO, b"\x00")],  # RFC 5746 §3.6
    )
    return encode_record(ContentType.HANDSHAKE, TlsVersion.TLS12, message)


def _certificate_message(ders: Sequence[bytes]) -> bytes:
    """A TLS 1.2 Certificate handshake message as records (RFC 5246 §7.4.2)."""
    body = _u24_vector(b"".join(_u24_vector(d) for d in ders))
    return encode_records(ContentType.HANDSHAKE, TlsVersion.TLS12, encode_handshake(HandshakeType.CERTIFICATE, body))


_SERVER_HELLO_DONE = encode_record(ContentType.HANDSHAKE, TlsVersion.TLS12,
                                   encode_handshake(HandshakeType.SERVER_HELLO_DONE, b""))


def _unoffered_suite(hello: ClientHello) -> int:
    for candidate in (0xFEFE, 0xFEFD, 0x0A0B):
        if candidate not in hello.cipher_suites:
            return candidate
    raise ValueError("the client offered every candidate suite")


def _hello_retry_request(hello: ClientHello) -> bytes:
    """RFC 8446 §4.1.4: asks for a key share in a group the client listed but did not send."""
    offered = [c for c in hello.cipher_suites if c >> 8 == 0x13]
    groups_raw = hello.extension(ExtensionType.SUPPORTED_GROUPS) or b"\x00\x02\x00\x17"
    groups = [int.from_bytes(groups_raw[i : i + 2], "big") for i in range(2, len(groups_raw) - 1, 2)]
    shared = _key_share_groups(hello.extension(ExtensionType.KEY_SHARE) or b"")
    group = next((g for g in groups if g not in shared), NamedGroup.SECP384R1)
    message = encode_server_hello(
        version=TlsVersion.TLS12, random=HELLO_RETRY_REQUEST_RANDOM,
        cipher_suite=offered[0] if offered else 0x1301, session_id=hello.session_id,
        extensions=[(ExtensionType.SUPPORTED_VERSIONS, TlsVersion.TLS13.to_bytes(2, "big")),
                    (ExtensionType.KEY_SHARE, group.to_bytes(2, "big"))],
    )
    return encode_record(ContentType.HANDSHAKE, TlsVersion.TLS12, message)


def _key_share_groups(data: bytes) -> set[int]:
    groups: set[int] = set()
    pos = 2  # client_shares<2>
    while pos + 4 <= len(data):
        groups.add(int.from_bytes(data[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return groups


def _sslv2_server_hello(certificate: bytes) -> bytes:
    """SSLv2 SERVER-HELLO (draft-hickman-netscape-ssl-00 §C), 2-byte record header."""
    specs = bytes.fromhex("010080" "0700c0")
    connection_id = os.urandom(16)
    body = (
        b"\x04\x00\x01"  # MSG-SERVER-HELLO, no session-id hit, X.509 certificate
        + TlsVersion.SSL2.to_bytes(2, "big")
        + struct.pack("!HHH", len(certificate), len(specs), len(connection_id))
        + certificate + specs + connection_id
    )
    return (0x8000 | len(body)).to_bytes(2, "big") + body


# --------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------


class _Gone(Exception):
    """The client went away (EOF, reset) or sent something no scanner would: end the session."""


_EHLO_LINES = (HOSTNAME, "PIPELINING", "SIZE 10240000", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME")


class _Conn:
    """The server side of one connection: SMTP helpers, ClientHello reading, resets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shared: _Shared) -> None:
        self.reader = reader
        self.writer = writer
        self.shared = shared

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, code: int, *lines: str) -> None:
        text = [f"{code}-{line}\r\n" for line in lines[:-1]] + [f"{code} {lines[-1]}\r\n"]
        await self.send("".join(text).encode())

    async def line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise _Gone(repr(exc)) from exc

    async def command(self) -> str:
        return (await self.line()).decode("ascii", "replace").strip().split(" ", 1)[0].upper()

    async def smtp_until_starttls(self, *, banner: bytes | None = None, ehlo: bytes | None = None) -> None:
        """Banner, then EHLO/HELO/NOOP until STARTTLS arrives; QUIT ends the session (``_Gone``)."""
        await self.send(banner if banner is not None else f"220 {HOSTNAME} ESMTP hostile world\r\n".encode())
        await self.commands_until_starttls(ehlo)

    async def commands_until_starttls(self, ehlo: bytes | None = None) -> None:
        while True:
            verb = await self.command()
            if verb == "STARTTLS":
                return
            if verb == "EHLO":
                await (self.send(ehlo) if ehlo is not None else self.reply(250, *_EHLO_LINES))
            elif verb == "QUIT":
                await self.reply(221, "2.0.0 Bye")
                raise _Gone("QUIT")
            else:
                await self.reply(250, "2.0.0 Ok")

    async def client_hello(self) -> ClientHello:
        """Read records up to the end of the first ClientHello (skipping a compatibility CCS)."""
        raw = bytearray()
        payload = bytearray()
        try:
            while len(payload) < 4 or len(payload) < 4 + int.from_bytes(payload[1:4], "big"):
                header = await self.reader.readexactly(5)
                fragment = await self.reader.readexactly(int.from_bytes(header[3:5], "big"))
                if header[0] == ContentType.HANDSHAKE:
                    raw += header + fragment
                    payload += fragment
        except asyncio.IncompleteReadError as exc:
            raise _Gone("closed before a complete ClientHello") from exc
        try:
            return parse_client_hello(bytes(raw))
        except TlsCodecError as exc:
            raise _Gone(f"not a ClientHello: {exc}") from exc

    async def starttls_then_hello(self) -> ClientHello:
        await self.smtp_until_starttls()
        await self.reply(220, "2.0.0 Ready to start TLS")
        return await self.client_hello()

    async def until_closed(self) -> None:
        """Read and drop until the client closes (or the session's idle limit ends it)."""
        while await self.reader.read(65536):
            pass

    async def forever(self, data: bytes) -> None:
        """Send ``data`` again and again until the client goes away."""
        while True:
            await self.send(data)

    def reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def real_tls(self, ctx: ssl.SSLContext) -> None:
        """Complete the handshake with OpenSSL's server side, then answer EHLO/QUIT over TLS."""
        await self.writer.start_tls(ctx)
        await self.after_tls()

    async def after_tls(self) -> None:
        while True:
            verb = await self.command()
            if verb == "QUIT":
                await self.reply(221, "2.0.0 Bye")
                return
            await (self.reply(250, HOSTNAME, "PIPELINING") if verb == "EHLO" else self.reply(250, "2.0.0 Ok"))


@dataclass(frozen=True, slots=True)
class _Shared:
    """What behaviours share: timings, certificates, contexts and pre-built big payloads."""

    config: HostileConfig
    material: TlsMaterial
    leaf_ctx: ssl.SSLContext
    tls12_ctx: ssl.SSLContext
    big_chain_ctx: ssl.SSLContext
    huge_chain_ctx: ssl.SSLContext
    huge_certificate: bytes  # Certificate message records, ~3.3 MB


# --------------------------------------------------------------------------
# The behaviours: SMTP level
# --------------------------------------------------------------------------


async def _normal(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.reply(220, "2.0.0 Ready to start TLS")
    await c.real_tls(c.shared.leaf_ctx)


async def _endless_banner_lines(c: _Conn) -> None:
    await c.forever(b"".join(b"220-%s tarpit line %d\r\n" % (HOSTNAME.encode(), i) for i in range(200)))


async def _megabyte_line(c: _Conn) -> None:
    await c.send(b"220 " + b"x" * (1 << 20) + b"\r\n")
    await c.until_closed()


async def _banner_no_newline(c: _Conn) -> None:
    await c.send(b"220 ")
    await c.forever(b"A" * 4096)


async def _dribble(c: _Conn) -> None:
    for byte in f"220 {HOSTNAME} ESMTP\r\n".encode():
        await c.send(bytes([byte]))
        await asyncio.sleep(c.shared.config.dribble_interval)
    await c.until_closed()


async def _delayed_normal(c: _Conn, factor: float) -> None:
    await asyncio.sleep(c.shared.config.banner_timeout * factor)
    await _normal(c)


async def _greeting_under(c: _Conn) -> None:
    await _delayed_normal(c, 0.6)


async def _greeting_over(c: _Conn) -> None:
    await _delayed_normal(c, 1.4)


async def _rst_on_accept(c: _Conn) -> None:
    c.reset()


async def _fin_on_accept(c: _Conn) -> None:
    c.writer.close()


async def _http_server(c: _Conn) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_HTTP_REQUEST_WAIT):
            await c.reader.read(65536)
    page = b"<html><body><h1>408 Request Time-out</h1></body></html>\n"
    await c.send(b"HTTP/1.1 408 Request Time-out\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(page), page))
    c.writer.close()


async def _non_utf8(c: _Conn) -> None:
    banner = b"220 " + HOSTNAME.encode() + b" ESMTP caf\xe9 \xff\xfe\xc3\x28 bienvenue\r\n"
    ehlo = (b"250-" + HOSTNAME.encode() + b" g\xe9n\xe9ral \xf0\x28\x8c\x28\r\n"
            b"250-PIPELINING\r\n250-X-\xff\xfe\xfd\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
    await c.smtp_until_starttls(banner=banner, ehlo=ehlo)
    await c.reply(220, "2.0.0 Ready to start TLS")
    await c.real_tls(c.shared.leaf_ctx)


async def _ehlo_then(c: _Conn, answer: bytes) -> None:
    await c.send(f"220 {HOSTNAME} ESMTP\r\n".encode())
    await c.command()
    await c.send(answer)


async def _ehlo_421(c: _Conn) -> None:
    await _ehlo_then(c, b"421 4.7.0 " + HOSTNAME.encode() + b" too many connections from your IP\r\n")
    c.writer.close()


async def _ehlo_5xx_then_helo(c: _Conn) -> None:
    await _ehlo_then(c, b"502 5.5.2 Error: command not recognized\r\n")
    await c.commands_until_starttls()  # HELO -> 250; STARTTLS is never advertised
    await c.reply(502, "5.5.1 Error: command not implemented")
    await c.until_closed()


async def _ehlo_and_helo_5xx(c: _Conn) -> None:
    await _ehlo_then(c, b"554 5.7.1 you are on our blocklist\r\n")
    await c.command()
    await c.reply(554, "5.7.1 still on our blocklist")
    await c.until_closed()


async def _ehlo_never_closes(c: _Conn) -> None:
    await _ehlo_then(c, b"250-" + HOSTNAME.encode() + b"\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n")
    await c.until_closed()


async def _ehlo_endless_lines(c: _Conn) -> None:
    await _ehlo_then(c, b"250-" + HOSTNAME.encode() + b"\r\n")
    await c.forever(b"".join(b"250-X-TARPIT-%d\r\n" % i for i in range(200)))


async def _ehlo_code_changes(c: _Conn) -> None:
    await _ehlo_then(c, b"250-" + HOSTNAME.encode() + b"\r\n250-PIPELINING\r\n220 STARTTLS\r\n")
    await c.until_closed()


async def _starttls_stripped(c: _Conn) -> None:
    ehlo = f"250-{HOSTNAME}\r\n250-PIPELINING\r\n250-XXXXXXXA\r\n250 8BITMIME\r\n".encode()
    await c.smtp_until_starttls(ehlo=ehlo)
    await c.reply(500, "5.5.1 command unrecognized")
    await c.until_closed()


async def _starttls_454(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.reply(454, "4.7.0 TLS not available due to temporary reason")
    await c.commands_until_starttls()


async def _starttls_421(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.reply(421, "4.7.0 too many TLS sessions, try again later")
    c.writer.close()


async def _postscreen_pregreet(c: _Conn) -> None:
    await c.send(f"220-{HOSTNAME} ESMTP\r\n".encode())
    try:
        async with asyncio.timeout(_POSTSCREEN_PAUSE):
            early = await c.reader.read(1)
    except TimeoutError:
        early = b""
    if early:  # the client spoke before the greeting ended: postscreen's PREGREET verdict
        await c.reply(550, "5.5.1 Protocol error")
        c.writer.close()
        return
    await c.send(f"220 {HOSTNAME} ESMTP\r\n".encode())
    await c.commands_until_starttls()
    await c.reply(220, "2.0.0 Ready to start TLS")
    await c.real_tls(c.shared.leaf_ctx)


async def _echo(c: _Conn) -> None:
    while data := await c.reader.read(65536):
        await c.send(data)


async def _banner_then_echo(c: _Conn) -> None:
    await c.send(f"220 {HOSTNAME} ESMTP\r\n".encode())
    await _echo(c)


# --------------------------------------------------------------------------
# The behaviours: after the 220 to STARTTLS
# --------------------------------------------------------------------------


async def _garbage_after_220(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(b"this is not TLS, sorry\r\n")
    await c.until_closed()


async def _plaintext_injection(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.send(b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected before TLS\r\n")
    await c.real_tls(c.shared.leaf_ctx)


async def _big_injection(c: _Conn) -> None:
    await c.smtp_until_starttls()
    line = b"250-injected plaintext that a client must discard, RFC 3207 section 4.2\r\n"
    await c.send(b"220 2.0.0 Ready to start TLS\r\n" + line * (_INJECTION_BYTES // len(line) + 1))
    await c.real_tls(c.shared.leaf_ctx)


async def _stall_after_220(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.until_closed()


async def _fin_after_220(c: _Conn) -> None:
    await c.starttls_then_hello()
    c.writer.close()


# --------------------------------------------------------------------------
# The behaviours: crafted TLS answers
# --------------------------------------------------------------------------

_LYING_HEADER = bytes([ContentType.HANDSHAKE, 3, 3, 0x40, 0x00]) + b"\x02\x00\x00"


async def _lying_length_close(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(_LYING_HEADER)
    c.writer.close()


async def _lying_length_stall(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(_LYING_HEADER)
    await c.until_closed()


async def _record_too_large(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(bytes([ContentType.HANDSHAKE, 3, 3, 0xFF, 0xFF]) + b"\x02" * 64)
    await c.until_closed()


async def _suite_not_offered(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    await c.send(_server_hello_12(hello, _unoffered_suite(hello)))
    await c.until_closed()


async def _version_above_offer(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    leaf = _certificate_message([c.shared.material.leaf_der])
    await c.send(_server_hello_12(hello) + leaf + _SERVER_HELLO_DONE)
    await c.until_closed()


async def _hrr_loop(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    for _ in range(_MAX_HRR_ROUNDS):
        await c.send(_hello_retry_request(hello))
        hello = await c.client_hello()


async def _huge_chain_raw(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    await c.send(_server_hello_12(hello) + c.shared.huge_certificate + _SERVER_HELLO_DONE)
    await c.until_closed()


async def _garbage_cert(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    garbage = b"\x30\x82\x01\x00" + b"this is not a certificate" * 10  # a SEQUENCE header, then junk
    await c.send(_server_hello_12(hello) + _certificate_message([garbage]) + _SERVER_HELLO_DONE)
    await c.until_closed()


async def _cert_before_hello(c: _Conn) -> None:
    hello = await c.starttls_then_hello()
    await c.send(c.shared.huge_certificate + _server_hello_12(hello) + _SERVER_HELLO_DONE)
    await c.until_closed()


async def _reset_mid_handshake(c: _Conn) -> None:
    await c.starttls_then_hello()
    c.reset()


async def _sslv2_hello(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(_sslv2_server_hello(c.shared.material.leaf_der))
    await c.until_closed()


async def _unknown_alert(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.send(encode_alert(AlertLevel.FATAL, 238))
    await c.until_closed()


async def _endless_records(c: _Conn) -> None:
    await c.starttls_then_hello()
    await c.forever(encode_record(ContentType.APPLICATION_DATA, TlsVersion.TLS12, b"\x17" * 1024) * 16)


async def _warning_alert_then_hello(c: _Conn) -> None:
    """OpenSSL's server side over memory BIOs, so that a record can be slipped before its first flight."""
    await c.smtp_until_starttls()
    await c.reply(220, "2.0.0 Ready to start TLS")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = c.shared.tls12_ctx.wrap_bio(incoming, outgoing, server_side=True)
    prefix = encode_alert(AlertLevel.WARNING, 112)  # unrecognized_name (RFC 6066 §3)
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if out := outgoing.read():
            await c.send(prefix + out)
            prefix = b""
        if done:
            break
        if not (data := await c.reader.read(65536)):
            return
        incoming.write(data)
    await _bio_smtp(c, tls, incoming, outgoing)


async def _bio_smtp(c: _Conn, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
    """EHLO/QUIT over the memory-BIO TLS session."""
    pending = b""
    while data := await c.reader.read(65536):
        incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            while chunk := tls.read(65536):
                pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            verb = line.strip().split(b" ", 1)[0].upper()
            tls.write(b"221 2.0.0 Bye\r\n" if verb == b"QUIT" else b"250 2.0.0 Ok\r\n")
            await c.send(outgoing.read())
            if verb == b"QUIT":
                return


async def _big_chain_tls(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.reply(220, "2.0.0 Ready to start TLS")
    await c.real_tls(c.shared.big_chain_ctx)


async def _huge_chain_tls(c: _Conn) -> None:
    await c.smtp_until_starttls()
    await c.reply(220, "2.0.0 Ready to start TLS")
    await c.real_tls(c.shared.huge_chain_ctx)


_Handler = Callable[[_Conn], Awaitable[None]]

BEHAVIOURS: Mapping[Hostile, _Handler] = MappingProxyType({
    Hostile.NORMAL: _normal,
    Hostile.ENDLESS_BANNER_LINES: _endless_banner_lines,
    Hostile.MEGABYTE_LINE: _megabyte_line,
    Hostile.BANNER_NO_NEWLINE: _banner_no_newline,
    Hostile.DRIBBLE: _dribble,
    Hostile.GREETING_UNDER: _greeting_under,
    Hostile.GREETING_OVER: _greeting_over,
    Hostile.RST_ON_ACCEPT: _rst_on_accept,
    Hostile.FIN_ON_ACCEPT: _fin_on_accept,
    Hostile.HTTP_SERVER: _http_server,
    Hostile.NON_UTF8: _non_utf8,
    Hostile.EHLO_421: _ehlo_421,
    Hostile.EHLO_5XX_THEN_HELO: _ehlo_5xx_then_helo,
    Hostile.EHLO_AND_HELO_5XX: _ehlo_and_helo_5xx,
    Hostile.EHLO_NEVER_CLOSES: _ehlo_never_closes,
    Hostile.EHLO_ENDLESS_LINES: _ehlo_endless_lines,
    Hostile.EHLO_CODE_CHANGES: _ehlo_code_changes,
    Hostile.STARTTLS_STRIPPED: _starttls_stripped,
    Hostile.STARTTLS_454: _starttls_454,
    Hostile.STARTTLS_421: _starttls_421,
    Hostile.POSTSCREEN_PREGREET: _postscreen_pregreet,
    Hostile.ECHO: _echo,
    Hostile.BANNER_THEN_ECHO: _banner_then_echo,
    Hostile.GARBAGE_AFTER_220: _garbage_after_220,
    Hostile.PLAINTEXT_INJECTION: _plaintext_injection,
    Hostile.BIG_INJECTION: _big_injection,
    Hostile.STALL_AFTER_220: _stall_after_220,
    Hostile.FIN_AFTER_220: _fin_after_220,
    Hostile.LYING_LENGTH_CLOSE: _lying_length_close,
    Hostile.LYING_LENGTH_STALL: _lying_length_stall,
    Hostile.RECORD_TOO_LARGE: _record_too_large,
    Hostile.SUITE_NOT_OFFERED: _suite_not_offered,
    Hostile.VERSION_ABOVE_OFFER: _version_above_offer,
    Hostile.HRR_LOOP: _hrr_loop,
    Hostile.HUGE_CHAIN_RAW: _huge_chain_raw,
    Hostile.GARBAGE_CERT: _garbage_cert,
    Hostile.CERT_BEFORE_HELLO: _cert_before_hello,
    Hostile.RESET_MID_HANDSHAKE: _reset_mid_handshake,
    Hostile.SSLV2_HELLO: _sslv2_hello,
    Hostile.UNKNOWN_ALERT: _unknown_alert,
    Hostile.ENDLESS_RECORDS: _endless_records,
    Hostile.WARNING_ALERT_THEN_HELLO: _warning_alert_then_hello,
    Hostile.BIG_CHAIN_TLS: _big_chain_tls,
    Hostile.HUGE_CHAIN_TLS: _huge_chain_tls,
})
assert set(BEHAVIOURS) == set(Hostile), "every behaviour needs a coroutine"


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


def _listening_socket(address: str, port: int) -> socket.socket:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"{address}: hostile servers listen on loopback only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HostileServer:
    """Every behaviour of :class:`Hostile` (or the ones given) on its own address of ``block``."""

    def __init__(
        self,
        block: str,
        workdir: Path,
        config: HostileConfig | None = None,
        behaviours: Sequence[Hostile] | None = None,
        port: int = 25,
    ) -> None:
        self.block = block
        self.workdir = workdir
        self.config = config or HostileConfig()
        self.behaviours = tuple(behaviours or Hostile)
        self.port = port
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._in_thread = LoopThread("hostile-server")

    @property
    def addresses(self) -> dict[Hostile, str]:
        return {b: address_of(self.block, b) for b in self.behaviours}

    def _shared(self) -> _Shared:
        material = make_tls_material(self.workdir)
        return _Shared(
            config=self.config,
            material=material,
            leaf_ctx=_server_context(material.leaf_pem),
            tls12_ctx=_server_context(material.leaf_pem, ssl.TLSVersion.TLSv1_2),
            big_chain_ctx=_server_context(material.big_chain_pem),
            huge_chain_ctx=_server_context(material.huge_chain_pem),
            huge_certificate=_certificate_message(material.huge_chain_der),
        )

    async def start(self) -> None:
        shared = self._shared()
        try:
            for behaviour, address in self.addresses.items():
                sock = _listening_socket(address, self.port)
                server = await asyncio.start_server(self._handler(BEHAVIOURS[behaviour], shared), sock=sock,
                                                    limit=_CLIENT_LINE_LIMIT)
                self._servers.append(server)
        except BaseException:
            await self.stop()
            raise

    def _handler(self, behaviour: _Handler, shared: _Shared) -> Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._sessions.add(task)
            try:
                async with asyncio.timeout(self.config.idle_timeout):
                    await behaviour(_Conn(reader, writer, shared))
            except (_Gone, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                LOG.debug("session ended: %r", exc)  # the client left or we gave up: both are expected
            except asyncio.CancelledError:
                pass  # stop(): the transport is aborted below
            finally:
                self._sessions.discard(task)
                writer.transport.abort()

        return handle

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        sessions = list(self._sessions)
        for task in sessions:
            task.cancel()
        await asyncio.gather(*(s.wait_closed() for s in servers), *sessions, return_exceptions=True)

    async def __aenter__(self) -> HostileServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 60.0) -> None:
        """Serve from a daemon thread's own event loop; returns once every listener is bound."""
        self._in_thread.start(asyncio.new_event_loop(), self.start, timeout)

    def stop_in_thread(self, timeout: float = 30.0) -> None:
        self._in_thread.stop(self.stop, timeout)

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[HostileServer]:
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_in_thread()


class HostileServerProcess:
    """:class:`HostileServer` in a child process (``python -m worlds.hostile``), ready on return."""

    def __init__(self, block: str, workdir: Path, config: HostileConfig | None = None, port: int = 25) -> None:
        self.block = block
        self.workdir = workdir
        self.config = config or HostileConfig()
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def addresses(self) -> dict[Hostile, str]:
        return {b: address_of(self.block, b) for b in Hostile}

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "worlds.hostile", "--block", self.block, "--workdir", str(self.workdir),
               "--port", str(self.port), "--banner-timeout", str(self.config.banner_timeout),
               "--dribble-interval", str(self.config.dribble_interval),
               "--idle-timeout", str(self.config.idle_timeout)]
        stderr = (self.workdir / "server.stderr").open("wb")
        with stderr:
            self._proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent,
                                          stdout=subprocess.PIPE, stderr=stderr)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"hostile server not ready after {timeout}s")
        line = proc.stdout.readline()
        if not line.startswith(b"READY"):
            err = (self.workdir / "server.stderr").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"hostile server failed to start: {line!r} {err}")

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> HostileServerProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def _serve(server: HostileServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        sys.stdout.write(f"READY {len(server.behaviours)}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worlds.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--block", required=True, help="loopback block 127.A.B (see worlds.ports)")
    parser.add_argument("--workdir", type=Path, required=True, help="where certificates are written")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--banner-timeout", type=float, default=1.0, help="the client's banner timeout")
    parser.add_argument("--dribble-interval", type=float, default=1.0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--list", action="store_true", help="print behaviour and address, one a line, and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    config = HostileConfig(args.banner_timeout, args.dribble_interval, args.idle_timeout)
    server = HostileServer(args.block, args.workdir, config, port=args.port)
    if args.list:
        for behaviour, address in server.addresses.items():
            print(f"{behaviour.value}\t{address}")
        return 0
    asyncio.run(_serve(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
