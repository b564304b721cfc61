"""Scriptable SMTP servers on loopback, for tests, the demo and benchmarks.

One :class:`SmtpFarm` serves many :class:`SmtpServerSpec` listeners (thousands
of ``127.A.x.y:25`` addresses) from a single event loop.  Each listener speaks
just enough SMTP for a STARTTLS survey -- banner, EHLO/HELO, STARTTLS, QUIT --
and can be told to misbehave in the ways real mail servers do (see
:class:`Behaviour`).  aiosmtpd is deliberately not used: it is a correct
server, and we need incorrect ones.

The farm can run three ways:

* inside the caller's event loop: ``async with SmtpFarm(specs): ...``;
* in a background thread of the caller's process: ``with farm.running_in_thread(): ...``;
* in a child process, so a benchmark keeps the farm's CPU off the scanner's
  process: :class:`SmtpFarmProcess`, or by hand
  ``python -m worlds.smtp --spec-file specs.jsonl --stats-file stats.json``
  which prints ``READY <n>`` once every listener is bound and writes the
  per-listener counters as JSON on SIGTERM/SIGINT (and on SIGUSR1 without
  stopping).

Only loopback addresses are accepted: these servers exist for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import resource
import socket
import ssl
import struct
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from worlds.procs import LoopThread, ReadyChild, serve_until_terminated

__all__ = [
    "Behaviour",
    "ListenerStats",
    "SmtpFarm",
    "SmtpFarmProcess",
    "SmtpServerSpec",
    "build_server_context",
    "listener_key",
    "load_stats",
    "main",
    "read_spec_file",
    "write_spec_file",
]

LOG = logging.getLogger(__name__)

# RFC 5321 §4.5.3.1.5 sets 1000 octets as the minimum a server must accept for
# a reply line / command line; we accept 8 KiB and refuse anything longer so a
# misbehaving client cannot make the farm buffer without bound.
DEFAULT_LINE_LIMIT = 8192
# RFC 5321 §4.5.3.2.7 suggests a 5 minute server timeout; tests and benchmarks
# want idle clients gone much sooner.
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_BACKLOG = 1024
# How long a graceful close (TLS close_notify exchange) may take before the
# transport is aborted.
CLOSE_TIMEOUT = 2.0

# Bytes sent instead of a TLS ServerHello by Behaviour.TLS_FAIL_AFTER_220: an
# SMTP-looking line, which a TLS client parses as a record with an unknown
# content type / version and aborts the handshake on.
TLS_GARBAGE = b"this is not TLS, sorry\r\n"

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {
        "TLSv1": ssl.TLSVersion.TLSv1,
        "TLSv1.0": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }
)
# Versions below TLS 1.2 are refused by OpenSSL 3 at its default security
# level 1+ (and Debian's openssl.cnf asks for level 2), whatever the protocol
# range says; see SSL_CTX_set_security_level(3).
_LEGACY_VERSIONS = frozenset({ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1})
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"

# ESMTP extensions advertised by the well-behaved variants, in the order
# Postfix lists them; STARTTLS is inserted where offered (RFC 3207 §4).
_EXTENSIONS_BEFORE_TLS = ("PIPELINING", "SIZE 10240000", "VRFY", "ETRN")
_EXTENSIONS_AFTER_TLS = ("ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING")


class Behaviour(str, Enum):
    """How a listener behaves; values are the JSON spelling in spec files."""

    NORMAL = "normal"
    """220 banner, EHLO lists STARTTLS, STARTTLS→220 + TLS, EHLO again, QUIT→221."""
    NO_STARTTLS = "no_starttls"
    """Like NORMAL but STARTTLS is neither advertised nor accepted (502)."""
    BANNER_554 = "banner_554"
    """554 greeting; then 503 to everything until QUIT (RFC 5321 §3.1)."""
    BANNER_421 = "banner_421"
    """421 greeting, then the server closes the connection (RFC 5321 §3.8)."""
    SLOW_BANNER = "slow_banner"
    """NORMAL, but the banner comes after ``banner_delay`` seconds (must be > 0)."""
    MULTILINE_BANNER = "multiline_banner"
    """NORMAL with a three-line 220 greeting (RFC 5321 §4.2.1 multiline reply)."""
    TLS_FAIL_AFTER_220 = "tls_fail_after_220"
    """Advertises STARTTLS, answers it with 220, then sends plaintext garbage and closes."""
    STARTTLS_454 = "starttls_454"
    """Advertises STARTTLS and refuses it with 454 4.7.0 (RFC 3207 §4)."""
    EHLO_5XX_THEN_HELO = "ehlo_5xx_then_helo"
    """EHLO→502 like an RFC 821-only server; HELO→250; STARTTLS unknown (502)."""
    SILENT = "silent"
    """Accepts the TCP connection and never says anything (until idle timeout)."""
    RESET_AFTER_EHLO = "reset_after_ehlo"
    """Banner as NORMAL; on EHLO/HELO the connection is reset (SO_LINGER 0 + close → RST)."""
    RESET_EVERY_OTHER_TLS = "reset_every_other_tls"
    """NORMAL, but every second STARTTLS on the listener reads the ClientHello and resets (an overloaded
    server or a flaky middlebox: the reset says nothing about the TLS versions or suites offered)."""


# Behaviours that answer STARTTLS with a real handshake when a certificate is set.
_TLS_CAPABLE = frozenset({Behaviour.NORMAL, Behaviour.SLOW_BANNER, Behaviour.MULTILINE_BANNER,
                          Behaviour.RESET_EVERY_OTHER_TLS})
# Behaviours that advertise STARTTLS without being able to complete it.
_FAKE_TLS = frozenset({Behaviour.TLS_FAIL_AFTER_220, Behaviour.STARTTLS_454})


@dataclass(frozen=True)
class SmtpServerSpec:
    """One listening SMTP server: where it listens, how it behaves, its TLS posture.

    ``key_file`` may be omitted when ``cert_file`` holds key and chain in one
    PEM (as trustme's ``private_key_and_cert_chain_pem`` does).  ``tls_min`` and
    ``tls_max`` take ``TLSv1``, ``TLSv1.1``, ``TLSv1.2`` or ``TLSv1.3``;
    ``ciphers`` is an OpenSSL cipher string for TLS <= 1.2 (TLS 1.3 suites are
    not affected).  When the range reaches below TLS 1.2 and no cipher string
    is given, ``DEFAULT:@SECLEVEL=0`` is used, since OpenSSL 3 would otherwise
    refuse those versions.  ``reply_delay`` is slept before every reply
    (banner included) to emulate round-trip time; ``banner_delay`` is slept
    once more before the banner.
    """

    address: str
    port: int
    hostname: str
    behaviour: Behaviour = Behaviour.NORMAL
    cert_file: Path | None = None
    key_file: Path | None = None
    banner_delay: float = 0.0
    tls_min: str | None = None
    tls_max: str | None = None
    ciphers: str | None = None
    reply_delay: float = 0.0
    # Certificates chosen by SNI: (server name, cert_file, key_file); a name starting with "." matches
    # every name under it. Other clients, and clients sending no SNI, get cert_file.
    sni_certs: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.address).is_loopback:
            raise ValueError(f"{self.address}: test SMTP servers listen on loopback only")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if not isinstance(self.behaviour, Behaviour):
            raise TypeError(f"behaviour must be a Behaviour, not {self.behaviour!r}")
        for name in ("tls_min", "tls_max"):
            value = getattr(self, name)
            if value is not None and value not in TLS_VERSIONS:
                raise ValueError(f"{name}={value!r}; expected one of {sorted(TLS_VERSIONS)}")
        if self.banner_delay < 0 or self.reply_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.behaviour is Behaviour.SLOW_BANNER and self.banner_delay <= 0:
            raise ValueError("SLOW_BANNER needs banner_delay > 0")
        if self.behaviour is Behaviour.NORMAL and self.cert_file is None:
            raise ValueError("NORMAL offers STARTTLS and so needs cert_file")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file given without cert_file")

    @property
    def offers_starttls(self) -> bool:
        """Whether EHLO lists STARTTLS (true also for the fake-TLS behaviours)."""
        if self.behaviour in _FAKE_TLS:
            return True
        return self.behaviour in _TLS_CAPABLE and self.cert_file is not None

    @property
    def tls_posture(self) -> TlsPosture | None:
        """Key of the SSLContext this listener needs (None: no real TLS)."""
        if self.cert_file is None or self.behaviour not in _TLS_CAPABLE:
            return None
        key = self.key_file if self.key_file is not None else self.cert_file
        return (str(self.cert_file), str(key), self.tls_min, self.tls_max, self.ciphers, self.sni_certs)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain-JSON form (one line of a spec file)."""
        out: dict[str, Any] = dataclasses.asdict(self)
        out["behaviour"] = self.behaviour.value
        for name in ("cert_file", "key_file"):
            if out[name] is not None:
                out[name] = str(out[name])
        return out

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SmtpServerSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown spec fields: {sorted(unknown)}")
        kwargs = dict(data)
        if "behaviour" in kwargs:
            kwargs["behaviour"] = Behaviour(kwargs["behaviour"])
        for name in ("cert_file", "key_file"):
            if kwargs.get(name) is not None:
                kwargs[name] = Path(kwargs[name])
        kwargs["sni_certs"] = tuple(tuple(entry) for entry in kwargs.get("sni_certs", ()))
        return cls(**kwargs)


def listener_key(address: str, port: int) -> str:
    """``"127.64.1.2:25"`` / ``"[::1]:25"``: the key of a listener in stats."""
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def write_spec_file(path: Path, specs: Iterable[SmtpServerSpec]) -> None:
    """Write specs as JSON lines, the format ``python -m worlds.smtp`` reads."""
    with path.open("w", encoding="utf-8") as fh:
        for spec in specs:
            fh.write(json.dumps(spec.to_json_dict(), separators=(",", ":")) + "\n")


def read_spec_file(path: Path) -> list[SmtpServerSpec]:
    """Read a JSON-lines spec file; blank lines and ``#`` comments are skipped."""
    specs: list[SmtpServerSpec] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                specs.append(SmtpServerSpec.from_json_dict(json.loads(text)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from exc
    return specs


TlsPosture = tuple[str, str, str | None, str | None, str | None, tuple[tuple[str, str, str], ...]]


def build_server_context(spec: SmtpServerSpec) -> ssl.SSLContext:
    """Server-side SSLContext for the spec's certificate and TLS posture (and its SNI certificates)."""
    ctx = _posture_context(spec)
    if spec.sni_certs:
        chosen = [(name.lower(), _posture_context(dataclasses.replace(spec, cert_file=Path(cert),
                                                                      key_file=Path(key), sni_certs=())))
                  for name, cert, key in spec.sni_certs]

        def select(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            name = (server_name or "").lower()
            for pattern, context in chosen:
                if name == pattern or (pattern.startswith(".") and name.endswith(pattern)):
                    sock.context = context
                    return

        ctx.sni_callback = select
    return ctx


def _posture_context(spec: SmtpServerSpec) -> ssl.SSLContext:
    if spec.cert_file is None:
        raise ValueError(f"{listener_key(spec.address, spec.port)} has no certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # No session tickets/cache reuse across listeners: every scan is a full
    # handshake, as it would be against distinct real servers.
    ctx.options |= ssl.OP_NO_TICKET
    try:
        ctx.load_cert_chain(spec.cert_file, spec.key_file)
    except OSError as exc:  # includes ssl.SSLError for unparsable PEM
        raise ValueError(
            f"{listener_key(spec.address, spec.port)}: cannot load certificate "
            f"{spec.cert_file} / key {spec.key_file or spec.cert_file}: {exc}"
        ) from exc
    # Python deprecates TLS 1.0/1.1; serving them is the point of a legacy posture.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if spec.tls_min is not None:
            ctx.minimum_version = TLS_VERSIONS[spec.tls_min]
        if spec.tls_max is not None:
            ctx.maximum_version = TLS_VERSIONS[spec.tls_max]
    ciphers = spec.ciphers
    if ciphers is None and _reaches_legacy(spec):
        ciphers = LEGACY_CIPHERS
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def _reaches_legacy(spec: SmtpServerSpec) -> bool:
    low = TLS_VERSIONS[spec.tls_min] if spec.tls_min else None
    high = TLS_VERSIONS[spec.tls_max] if spec.tls_max else None
    return (low in _LEGACY_VERSIONS) or (high in _LEGACY_VERSIONS)


@dataclass
class ListenerStats:
    """Counters for one listening address (mutated only by the farm's loop)."""

    address: str
    port: int
    accepted: int = 0
    current: int = 0
    max_concurrent: int = 0
    starttls_handshakes: int = 0
    starttls_accepted: int = 0  # STARTTLS commands answered 220
    tls_handshake_failures: int = 0
    resets_sent: int = 0
    idle_timeouts: int = 0
    oversized_lines: int = 0
    connection_errors: int = 0

    def copy(self) -> ListenerStats:
        return dataclasses.replace(self)

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ListenerStats:
        return cls(**data)


class _ClientClosed(Exception):
    """The client closed its side of the connection."""


class _LineTooLong(Exception):
    """The client sent more than the line limit without a line ending."""


class _LineReader:
    """CRLF line reader with a hard per-line cap over an asyncio StreamReader.

    Kept separate from StreamReader.readline so that plaintext pipelined after
    STARTTLS can be thrown away (RFC 3207 §5 / CVE-2011-0411 command
    injection): it sits in our buffer, not in the stream's.
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buf = bytearray()

    async def readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                if end + 1 > self._limit:
                    raise _LineTooLong
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line
            if len(self._buf) > self._limit:
                raise _LineTooLong
            chunk = await self._reader.read(65536)
            if not chunk:
                raise _ClientClosed
            self._buf += chunk

    def discard_buffered(self) -> int:
        dropped = len(self._buf)
        self._buf.clear()
        return dropped


class _Session:
    """One client connection to one listener."""

    def __init__(
        self,
        spec: SmtpServerSpec,
        ctx: ssl.SSLContext | None,
        stats: ListenerStats,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        idle_timeout: float,
        line_limit: int,
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.stats = stats
        self.writer = writer
        self.reader = reader
        self.lines = _LineReader(reader, line_limit)
        self.idle_timeout = idle_timeout
        self.greeted = False
        self.tls_active = False

    async def run(self) -> None:
        stats = self.stats
        stats.accepted += 1
        stats.current += 1
        stats.max_concurrent = max(stats.max_concurrent, stats.current)
        graceful = False
        try:
            await self._converse()
            graceful = True
        except _ClientClosed:
            graceful = True
        except _LineTooLong:
            stats.oversized_lines += 1
            await self._try_reply(500, "5.5.0 Error: line too long")
        except TimeoutError:
            # Idle client (RFC 5321 §4.5.3.2.7): 421 then close -- except from
            # a SILENT server, which must never say anything.
            stats.idle_timeouts += 1
            if self.spec.behaviour is not Behaviour.SILENT:
                await self._try_reply(421, f"4.4.2 {self.spec.hostname} Error: timeout exceeded")
        except OSError as exc:  # ConnectionError, ssl.SSLError
            stats.connection_errors += 1
            LOG.debug("%s: %r", listener_key(self.spec.address, self.spec.port), exc)
        finally:
            stats.current -= 1
            await self._close(graceful)

    async def _try_reply(self, code: int, text: str) -> None:
        """Best-effort parting reply: the connection may already be gone."""
        if self.writer.is_closing():
            return
        try:
            self.writer.write(f"{code} {text}\r\n".encode())
            await asyncio.wait_for(self.writer.drain(), CLOSE_TIMEOUT)
        except OSError as exc:
            LOG.debug("parting reply not sent: %r", exc)

    async def _close(self, graceful: bool) -> None:
        writer = self.writer
        if not graceful or writer.is_closing():
            writer.transport.abort()
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except OSError as exc:  # includes TimeoutError: peer never answered close_notify
            LOG.debug("unclean close: %r", exc)
            writer.transport.abort()

    async def reply(self, code: int, *lines: str) -> None:
        """Send a (possibly multiline, RFC 5321 §4.2.1) reply."""
        if self.spec.reply_delay:
            await asyncio.sleep(self.spec.reply_delay)
        out = [f"{code}-{text}\r\n" for text in lines[:-1]]
        out.append(f"{code} {lines[-1]}\r\n")
        self.writer.write("".join(out).encode())
        await self.writer.drain()

    async def read_command(self) -> tuple[str, str]:
        async with asyncio.timeout(self.idle_timeout):
            raw = await self.lines.readline()
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        verb, _, arg = text.partition(" ")
        return verb.upper(), arg.strip()

    async def _converse(self) -> None:
        spec = self.spec
        behaviour = spec.behaviour
        if behaviour is Behaviour.SILENT:
            await self._listen_silently()
            return
        if spec.banner_delay:
            await asyncio.sleep(spec.banner_delay)
        if behaviour is Behaviour.BANNER_421:
            await self.reply(421, f"4.3.2 {spec.hostname} too busy, try again later")
            return
        if behaviour is Behaviour.BANNER_554:
            await self.reply(554, f"5.3.2 {spec.hostname} no service")
            await self._refuse_until_quit()
            return
        if behaviour is Behaviour.MULTILINE_BANNER:
            await self.reply(
                220,
                f"{spec.hostname} ESMTP smtp-tls-survey test world",
                "this greeting spans several lines",
                "as RFC 5321 section 4.2.1 allows",
            )
        else:
            await self.reply(220, f"{spec.hostname} ESMTP smtp-tls-survey test world")
        await self._command_loop()

    async def _listen_silently(self) -> None:
        # Read and drop whatever arrives, never answer; ends on EOF or idle timeout.
        while True:
            async with asyncio.timeout(self.idle_timeout):
                await self.lines.readline()

    async def _refuse_until_quit(self) -> None:
        # RFC 5321 §3.1: after a 554 greeting the server MUST wait for QUIT and
        # SHOULD answer any other command with 503.
        while True:
            verb, _ = await self.read_command()
            if verb == "QUIT":
                await self.reply(221, "2.0.0 Bye")
                return
            await self.reply(503, "5.5.1 Error: no service, only QUIT")

    async def _command_loop(self) -> None:
        handlers: dict[str, Callable[[str], Awaitable[bool]]] = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "STARTTLS": self._starttls,
            "QUIT": self._quit,
            "NOOP": self._ok,
            "RSET": self._ok,
        }
        while True:
            verb, arg = await self.read_command()
            handler = handlers.get(verb)
            if handler is not None:
                if not await handler(arg):
                    return
            elif verb in {"MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "ETRN"}:
                await self.reply(554, "5.7.1 Error: this test world accepts no mail")
            else:
                await self.reply(500, "5.5.2 Error: command not recognized")

    # Each handler returns False when the session is over.

    async def _ok(self, _arg: str) -> bool:
        await self.reply(250, "2.0.0 Ok")
        return True

    async def _quit(self, _arg: str) -> bool:
        await self.reply(221, "2.0.0 Bye")
        return False

    async def _ehlo(self, arg: str) -> bool:
        spec = self.spec
        if spec.behaviour is Behaviour.RESET_AFTER_EHLO:
            self._reset()
            return False
        if spec.behaviour is Behaviour.EHLO_5XX_THEN_HELO:
            # RFC 5321 §4.1.4: a server without EHLO answers 502 (or 500).
            await self.reply(502, "5.5.2 Error: command not recognized")
            return True
        if not arg:
            await self.reply(501, "5.5.4 Syntax: EHLO hostname")
            return True
        self.greeted = True
        keywords = list(_EXTENSIONS_BEFORE_TLS)
        # RFC 3207 §4.2: STARTTLS must not be advertised once TLS is active.
        if spec.offers_starttls and not self.tls_active:
            keywords.append("STARTTLS")
        keywords.extend(_EXTENSIONS_AFTER_TLS)
        await self.reply(250, spec.hostname, *keywords)
        return True

    async def _helo(self, arg: str) -> bool:
        if self.spec.behaviour is Behaviour.RESET_AFTER_EHLO:
            self._reset()
            return False
        if not arg:
            await self.reply(501, "Syntax: HELO hostname")
            return True
        self.greeted = True
        await self.reply(250, self.spec.hostname)
        return True

    async def _starttls(self, arg: str) -> bool:
        spec = self.spec
        if not spec.offers_starttls:
            await self.reply(502, "5.5.1 Error: command not implemented")
            return True
        if arg:
            # RFC 3207 §4: STARTTLS takes no parameters; 501 on syntax error.
            await self.reply(501, "5.5.4 Syntax: STARTTLS")
            return True
        if self.tls_active:
            await self.reply(554, "5.5.1 Error: TLS already active")
            return True
        if not self.greeted:
            await self.reply(503, "5.5.1 Error: send HELO/EHLO first")
            return True
        if spec.behaviour is Behaviour.STARTTLS_454:
            await self.reply(454, "4.7.0 TLS not available due to temporary reason")
            return True
        dropped = self.lines.discard_buffered()
        if dropped:
            LOG.debug("dropped %d bytes pipelined after STARTTLS", dropped)
        if spec.behaviour is Behaviour.TLS_FAIL_AFTER_220:
            # The 220 and the garbage in one write, so every session finds the garbage right behind the
            # reply whatever the scheduling (two writes reached the client in one or two reads, and the
            # hello's answer then read as a close or as a protocol error from one scan to the next).
            self.writer.write(b"220 2.0.0 Ready to start TLS\r\n" + TLS_GARBAGE)
            await self.writer.drain()
            return False
        await self.reply(220, "2.0.0 Ready to start TLS")
        self.stats.starttls_accepted += 1
        if spec.behaviour is Behaviour.RESET_EVERY_OTHER_TLS and self.stats.starttls_accepted % 2 == 0:
            await self.reader.read(1)  # the ClientHello has started to arrive
            self._reset()
            return False
        if self.ctx is None:
            raise RuntimeError(f"{listener_key(spec.address, spec.port)}: no SSLContext")
        try:
            await self.writer.start_tls(self.ctx, ssl_handshake_timeout=self.idle_timeout)
        except OSError as exc:  # ssl.SSLError, reset, handshake timeout
            self.stats.tls_handshake_failures += 1
            LOG.debug("%s: TLS handshake failed: %r", listener_key(spec.address, spec.port), exc)
            self.writer.transport.abort()
            return False
        self.stats.starttls_handshakes += 1
        # RFC 3207 §4.2: forget everything learnt before TLS; client must EHLO again.
        self.tls_active = True
        self.greeted = False
        return True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.stats.resets_sent += 1
        self.writer.transport.abort()


def _listening_socket(address: str, port: int, backlog: int) -> socket.socket:
    """Bound, listening, non-blocking socket (no getaddrinfo: thousands of these)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Restarting a farm must not wait for TIME_WAIT of the previous run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {listener_key(address, port)}: {exc.strerror}") from exc
    return sock


def _ensure_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (never lowers it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet_failed_handshakes)
    return loop


def _quiet_failed_handshakes(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """uvloop's ``start_tls`` leaves a second future holding a failed handshake's error (a client that
    resets mid-handshake, as scanners do on purpose); ``_starttls`` already handled that error, so the
    loop's "exception was never retrieved" about it is noise. Anything else is reported as usual."""
    if context.get("message") == "Future exception was never retrieved" and isinstance(
            context.get("exception"), OSError):
        return
    loop.default_exception_handler(context)


class SmtpFarm:
    """Many SMTP listeners in one event loop.

    ``specs`` must have distinct ``(address, port)`` pairs.  One SSLContext is
    built per distinct TLS posture (certificate, key, version range, ciphers),
    so thousands of listeners sharing a certificate share one context.
    """

    def __init__(
        self,
        specs: Iterable[SmtpServerSpec],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        backlog: int = DEFAULT_BACKLOG,
        line_limit: int = DEFAULT_LINE_LIMIT,
    ) -> None:
        self._specs = tuple(specs)
        self._stats: dict[str, ListenerStats] = {}
        for spec in self._specs:
            key = listener_key(spec.address, spec.port)
            if key in self._stats:
                raise ValueError(f"two specs for {key}")
            self._stats[key] = ListenerStats(spec.address, spec.port)
        self.idle_timeout = idle_timeout
        self.backlog = backlog
        self.line_limit = line_limit
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task[Any]] = set()
        self._contexts: dict[TlsPosture, ssl.SSLContext] = {}
        self._stopping = False
        self._in_thread = LoopThread("smtp-farm")

    @property
    def specs(self) -> tuple[SmtpServerSpec, ...]:
        return self._specs

    @property
    def context_count(self) -> int:
        """Number of distinct SSLContexts built (one per TLS posture)."""
        return len(self._contexts)

    def _context_for(self, spec: SmtpServerSpec) -> ssl.SSLContext | None:
        posture = spec.tls_posture
        if posture is None:
            return None
        ctx = self._contexts.get(posture)
        if ctx is None:
            ctx = self._contexts[posture] = build_server_context(spec)
        return ctx

    async def start(self) -> None:
        """Bind every listener; raises OSError naming the address that failed."""
        if self._servers:
            raise RuntimeError("farm already started")
        # Contexts first: a bad certificate should fail before any bind.
        contexts = [self._context_for(spec) for spec in self._specs]
        _ensure_fd_limit(len(self._specs) + 4096)
        try:
            for spec, ctx in zip(self._specs, contexts, strict=True):
                sock = _listening_socket(spec.address, spec.port, self.backlog)
                stats = self._stats[listener_key(spec.address, spec.port)]
                server = await asyncio.start_server(
                    self._handler(spec, ctx, stats), sock=sock, limit=self.line_limit
                )
                self._servers.append(server)
        except BaseException:
            await self.stop()
            raise

    def _handler(
        self, spec: SmtpServerSpec, ctx: ssl.SSLContext | None, stats: ListenerStats
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._sessions.add(task)
            try:
                session = _Session(
                    spec, ctx, stats, reader, writer,
                    idle_timeout=self.idle_timeout, line_limit=self.line_limit,
                )
                await session.run()
            except asyncio.CancelledError:
                # stop() cancelled us and the session has aborted its transport.
                # Ending quietly keeps asyncio's stream callback from logging
                # the cancellation as an error; any other cancellation propagates.
                if not self._stopping:
                    raise
            finally:
                if task is not None:
                    self._sessions.discard(task)

        return handle

    async def stop(self) -> None:
        """Close every listener and abort every open client connection."""
        self._stopping = True
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        sessions = list(self._sessions)
        for task in sessions:
            task.cancel()
        try:
            await asyncio.gather(*(s.wait_closed() for s in servers), *sessions, return_exceptions=True)
        finally:
            self._stopping = False

    async def __aenter__(self) -> SmtpFarm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- statistics -----------------------------------------------------

    def stats(self) -> dict[str, ListenerStats]:
        """Copies of the per-listener counters, keyed by :func:`listener_key`.

        Safe to call from another thread than the farm's (counters are plain
        ints; a copy may be a few events stale).
        """
        return {key: value.copy() for key, value in self._stats.items()}

    def write_stats(self, path: Path) -> None:
        """Dump counters as ``{"listeners": {key: {...}}}`` JSON (atomically)."""
        payload = {
            "written_at": time.time(),
            "listeners": {key: st.to_json_dict() for key, st in self.stats().items()},
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        tmp.replace(path)

    # --- background-thread mode -----------------------------------------

    def start_in_thread(self, *, use_uvloop: bool = True, timeout: float = 120.0) -> None:
        """Run the farm in its own event loop on a daemon thread; returns once bound."""
        self._in_thread.start(_new_loop(use_uvloop), self.start, timeout)

    def stop_in_thread(self, timeout: float = 60.0) -> None:
        """Stop a farm started with :meth:`start_in_thread` and join its thread."""
        self._in_thread.stop(self.stop, timeout)

    @contextlib.contextmanager
    def running_in_thread(self, *, use_uvloop: bool = True) -> Iterator[SmtpFarm]:
        self.start_in_thread(use_uvloop=use_uvloop)
        try:
            yield self
        finally:
            self.stop_in_thread()


class SmtpFarmProcess:
    """Run an :class:`SmtpFarm` in a child process (``python -m worlds.smtp``).

    ``start()`` writes ``workdir/specs.jsonl``, spawns the child and waits for
    its ``READY`` line; ``stop()`` sends SIGTERM, waits for exit and returns the
    counters the child dumped to ``workdir/stats.json``.  The child's stderr
    goes to ``workdir/farm.stderr``.
    """

    def __init__(
        self,
        specs: Iterable[SmtpServerSpec],
        workdir: Path,
        *,
        use_uvloop: bool = True,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        backlog: int = DEFAULT_BACKLOG,
        python: str = sys.executable,
    ) -> None:
        self.specs = tuple(specs)
        self.workdir = workdir
        self.use_uvloop = use_uvloop
        self.idle_timeout = idle_timeout
        self.backlog = backlog
        self.python = python
        self.spec_file = workdir / "specs.jsonl"
        self.stats_file = workdir / "stats.json"
        self.stderr_file = workdir / "farm.stderr"
        self._child = ReadyChild("farm", self.stderr_file)

    @property
    def pid(self) -> int:
        return self._child.pid

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_spec_file(self.spec_file, self.specs)
        self.stats_file.unlink(missing_ok=True)
        cmd = [
            self.python, "-m", "worlds.smtp",
            "--spec-file", str(self.spec_file),
            "--stats-file", str(self.stats_file),
            "--idle-timeout", str(self.idle_timeout),
            "--backlog", str(self.backlog),
        ]
        if not self.use_uvloop:
            cmd.append("--no-uvloop")
        self._child.start(cmd, timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, ListenerStats]:
        """SIGTERM the child, wait for it, return its dumped counters."""
        self._child.stop(timeout)
        return load_stats(self.stats_file)

    def __enter__(self) -> SmtpFarmProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child.running:
            self.stop()


def load_stats(path: Path) -> dict[str, ListenerStats]:
    """Read a stats file written by :meth:`SmtpFarm.write_stats`."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    return {key: ListenerStats.from_json_dict(v) for key, v in payload["listeners"].items()}


async def _serve(args: argparse.Namespace) -> None:
    farm = SmtpFarm(
        read_spec_file(args.spec_file), idle_timeout=args.idle_timeout, backlog=args.backlog
    )
    await serve_until_terminated(farm, f"READY {len(farm.specs)}", args.stats_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worlds.smtp", description="Serve SmtpServerSpec JSON lines on loopback."
    )
    parser.add_argument("--spec-file", type=Path, required=True, help="JSON lines, one SmtpServerSpec each")
    parser.add_argument("--stats-file", type=Path, help="counters JSON written on SIGTERM/SIGINT/SIGUSR1")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    loop = _new_loop(args.uvloop)
    try:
        loop.run_until_complete(_serve(args))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
