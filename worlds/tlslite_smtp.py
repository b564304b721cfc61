"""A STARTTLS SMTP server on tlslite-ng, for postures no OpenSSL server can serve.

Debian 12's OpenSSL 3 has no SSLv3 and no RC4 at all, and GnuTLS (exim) has no
SSLv3 either; tlslite-ng (pure Python, PyPI ``tlslite-ng``) still negotiates
SSL 3.0 (RFC 6101), RC4 (prohibited by RFC 7465) and 3DES.  This module wraps
it in just enough SMTP for a STARTTLS survey (RFC 5321 + RFC 3207): a 220
banner, EHLO/HELO listing STARTTLS, STARTTLS -> 220 and the TLS handshake,
then EHLO/NOOP/RSET/QUIT over TLS.  Nothing is ever accepted for delivery.

The accepted suites are tlslite's product of ``cipher_names`` x
``mac_names`` x ``key_exchange_names`` at each version, filtered by the RSA
certificate (tlslite's ECDSA support is not needed here).  tlslite itself
always picks the first suite of *its own* list that the client offered
(server order); ``server_order=False`` reorders its list by the client's
preference before that choice, giving a client-order server.

tlslite negotiates ECDHE suites at SSLv3 when the client's hello carries a
supported_groups extension (testssl.sh's and sslyze's SSLv3 hellos do; a
strict RFC 6101 hello has no extensions and gets only RSA/DHE suites), and it
rejects an IP literal in SNI with illegal_parameter (RFC 6066 §3), which
sslyze sends unless given ``--sni``.

One thread per connection; only loopback addresses are accepted.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import socket
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from worlds.procs import ServerLifecycle

with warnings.catch_warnings():
    # tlslite/__init__ imports asyncore (deprecated since 3.6, gone in 3.12)
    # for an integration we do not use; keep that out of -W error runs.
    warnings.simplefilter("ignore", DeprecationWarning)
    from tlslite.api import (  # type: ignore[import-untyped]
        HandshakeSettings,
        TLSConnection,
        X509CertChain,
        parsePEMKey,
    )
    from tlslite.errors import BaseTLSException  # type: ignore[import-untyped]

__all__ = [
    "TLSLITE_DEFAULT_VERSIONS",
    "HandshakeRecord",
    "TlsliteSmtpServer",
    "TlsliteStats",
]

# RFC 5321 §4.5.3.1.4/§4.5.3.1.5: command lines are at most 512 octets, reply
# lines 512; accept a generous 4 KiB before giving up on a client.
_LINE_LIMIT = 4096
_IDLE_TIMEOUT = 30.0
_JOIN_TIMEOUT = 5.0

# tlslite's names for the MACs and key exchanges; "md5" enables the
# RC4-MD5 suite (0x0004), which tlslite leaves off by default.
DEFAULT_MAC_NAMES: tuple[str, ...] = ("sha", "sha256", "sha384", "aead", "md5")
DEFAULT_KEY_EXCHANGES: tuple[str, ...] = ("ecdhe_rsa", "dhe_rsa", "rsa")

_VERSION_NAMES = {
    (3, 0): "SSLv3",
    (3, 1): "TLSv1.0",
    (3, 2): "TLSv1.1",
    (3, 3): "TLSv1.2",
    (3, 4): "TLSv1.3",
}


# tlslite-ng's own default HandshakeSettings.versions (TLS 1.3 down to TLS 1.0).
TLSLITE_DEFAULT_VERSIONS: tuple[tuple[int, int], ...] = ((3, 4), (3, 3), (3, 2), (3, 1))


@dataclass(frozen=True)
class HandshakeRecord:
    """One finished TLS handshake: protocol name ("TLSv1.2") and IANA code point."""

    version: str
    cipher_suite: int


@dataclass(frozen=True)
class TlsliteStats:
    """Counters since start(): TCP connections, STARTTLS commands, handshakes.

    ``sessions_aborted`` counts sessions that ended on a socket or TLS error
    (a failed handshake included) instead of QUIT or a clean close.
    """

    connections: int
    starttls: int
    handshakes_ok: int
    handshakes_failed: int
    sessions_aborted: int
    negotiated: tuple[HandshakeRecord, ...]
    # Why handshakes failed ("TLSLocalAlert: illegal_parameter ..."), with counts.
    failure_reasons: Mapping[str, int]


class _ClientOrderConnection(TLSConnection):  # type: ignore[misc]
    """TLSConnection that honours the client's suite order, not its own.

    tlslite chooses the first suite of the server list that the client
    offered (``_server_select_certificate``); sorting the server list by the
    client's order first makes the result the client's most preferred
    mutually supported suite, as a server without "server preference" does.
    """

    def _server_select_certificate(
        self,
        settings: Any,
        client_hello: Any,
        cipher_suites: list[int],
        cert_chain: Any,
        private_key: Any,
        version: tuple[int, int],
    ) -> Any:
        offered: list[int] = list(client_hello.cipher_suites)
        rank = {suite: index for index, suite in reversed(list(enumerate(offered)))}
        reordered = sorted(cipher_suites, key=lambda s: rank.get(s, len(offered)))
        return super()._server_select_certificate(settings, client_hello, reordered, cert_chain, private_key, version)


if not hasattr(TLSConnection, "_server_select_certificate"):  # pragma: no cover - version guard
    raise ImportError("this tlslite-ng has no TLSConnection._server_select_certificate; server_order=False needs it")


def _check_loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"test servers bind loopback addresses only, not {address}")


class _Counters:
    """Thread-safe counters behind :class:`TlsliteStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0
        self.starttls = 0
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self.sessions_aborted = 0
        self.negotiated: list[HandshakeRecord] = []
        self.failure_reasons: collections.Counter[str] = collections.Counter()

    def add(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def handshake_failed(self, exc: BaseException) -> None:
        with self._lock:
            self.handshakes_failed += 1
            self.failure_reasons[f"{type(exc).__name__}: {exc}"] += 1

    def handshake_done(self, record: HandshakeRecord) -> None:
        with self._lock:
            self.handshakes_ok += 1
            self.negotiated.append(record)

    def snapshot(self) -> TlsliteStats:
        with self._lock:
            return TlsliteStats(
                connections=self.connections,
                starttls=self.starttls,
                handshakes_ok=self.handshakes_ok,
                handshakes_failed=self.handshakes_failed,
                sessions_aborted=self.sessions_aborted,
                negotiated=tuple(self.negotiated),
                failure_reasons=MappingProxyType(dict(self.failure_reasons)),
            )


class TlsliteSmtpServer(ServerLifecycle):
    """STARTTLS SMTP on ``address:port`` with a tlslite-ng TLS stack.

    ``min_version``/``max_version`` are tlslite tuples ((3, 0) = SSLv3 ...
    (3, 4) = TLS 1.3).  ``cipher_names`` are tlslite names ("aes128",
    "aes256", "aes128gcm", "aes256gcm", "chacha20-poly1305", "3des", "rc4",
    ...); ``mac_names`` and ``key_exchange_names`` narrow the suites further.
    ``cert_file`` must hold an RSA leaf (then its chain), ``key_file`` its key.
    ``port=0`` binds an ephemeral port; read :attr:`port` after start().
    ``supported_versions`` overrides tlslite's answer to the supported_versions extension (default: kept
    consistent with the version range); ``TLSLITE_DEFAULT_VERSIONS`` gives a version-intolerant server.
    """

    def __init__(
        self,
        address: str,
        port: int,
        hostname: str,
        cert_file: Path,
        key_file: Path,
        *,
        min_version: tuple[int, int],
        max_version: tuple[int, int],
        cipher_names: Sequence[str],
        server_order: bool = True,
        mac_names: Sequence[str] = DEFAULT_MAC_NAMES,
        key_exchange_names: Sequence[str] = DEFAULT_KEY_EXCHANGES,
        supported_versions: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        _check_loopback(address)
        self.address = address
        self.port = port
        self.hostname = hostname
        self.server_order = server_order
        self._cert_chain = X509CertChain()
        self._cert_chain.parsePemList(Path(cert_file).read_text(encoding="ascii"))
        self._private_key = parsePEMKey(Path(key_file).read_text(encoding="ascii"), private=True)
        self.settings = self._make_settings(min_version, max_version, cipher_names, mac_names, key_exchange_names)
        if supported_versions is not None:
            # What tlslite-ng 0.8 answers to a hello's supported_versions extension, apart from
            # min/max_version. Left at its default ((3, 4) ... (3, 1)) on a server whose max_version is
            # lower, it is version-intolerant: a plain TLS 1.2 hello gets TLS 1.0, a hello listing
            # 1.2 in supported_versions (as OpenSSL's do) gets TLS 1.2.
            self.settings.versions = list(supported_versions)
        self._counters = _Counters()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._next_id = 0

    @staticmethod
    def _make_settings(
        min_version: tuple[int, int],
        max_version: tuple[int, int],
        cipher_names: Sequence[str],
        mac_names: Sequence[str],
        key_exchange_names: Sequence[str],
    ) -> Any:
        settings = HandshakeSettings()
        settings.minVersion = tuple(min_version)
        settings.maxVersion = tuple(max_version)
        # ``versions`` drives the TLS 1.3 supported_versions choice (RFC 8446
        # §4.2.1); keep it consistent with min/max so a 1.2-only server never
        # selects 1.3 and vice versa.
        settings.versions = [v for v in sorted(_VERSION_NAMES, reverse=True) if min_version <= v <= max_version]
        settings.cipherNames = list(cipher_names)
        settings.macNames = list(mac_names)
        settings.keyExchangeNames = list(key_exchange_names)
        # Let validate() reject unknown names now rather than per connection.
        return settings.validate()

    # --- lifecycle ------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and serve in background threads."""
        if self._listener is not None:
            raise RuntimeError("already started")
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.address, self.port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"tlslite-smtp-{self.address}:{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop accepting, cut every open connection and join all threads."""
        listener = self._listener
        if listener is None:
            return
        self._stopping.set()
        # shutdown() wakes the thread blocked in accept(); close() alone may not.
        with contextlib.suppress(OSError):  # ENOTCONN: close() below still wakes accept()
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(_JOIN_TIMEOUT)
        with self._lock:
            conns = list(self._conns.values())
        for sock, _ in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in conns:
            thread.join(_JOIN_TIMEOUT)
        self._listener = None
        alive = [t.name for _, t in conns if t.is_alive()]
        if self._accept_thread is not None and self._accept_thread.is_alive():
            alive.append(self._accept_thread.name)
        if alive:
            raise RuntimeError(f"threads still running after stop(): {alive}")

    def stats(self) -> TlsliteStats:
        return self._counters.snapshot()

    # --- serving --------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _peer = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            self._counters.add("connections")
            with self._lock:
                conn_id = self._next_id
                self._next_id += 1
                thread = threading.Thread(
                    target=self._serve, args=(conn_id, sock), name=f"tlslite-smtp-conn-{conn_id}", daemon=True
                )
                self._conns[conn_id] = (sock, thread)
            thread.start()

    def _serve(self, conn_id: int, sock: socket.socket) -> None:
        try:
            sock.settimeout(_IDLE_TIMEOUT)
            _SmtpSession(self, sock).run()
        except (OSError, BaseTLSException):
            # The client went away or broke TLS mid-session: routine for a
            # scanner that drops the connection right after the ServerHello.
            self._counters.add("sessions_aborted")
        finally:
            sock.close()
            with self._lock:
                self._conns.pop(conn_id, None)

    def _handshake(self, sock: socket.socket) -> Any:
        """STARTTLS accepted: run the server handshake, return the TLSConnection.

        A failed handshake is counted and re-raised; the session ends.
        """
        self._counters.add("starttls")
        conn_cls = TLSConnection if self.server_order else _ClientOrderConnection
        conn = conn_cls(sock)
        try:
            conn.handshakeServer(certChain=self._cert_chain, privateKey=self._private_key, settings=self.settings)
        except (OSError, BaseTLSException) as exc:
            self._counters.handshake_failed(exc)
            raise
        version = _VERSION_NAMES.get(tuple(conn.version), f"unknown{conn.version}")
        self._counters.handshake_done(HandshakeRecord(version, int(conn.session.cipherSuite)))
        return conn


class _LineIO:
    """CRLF line reader/writer over a socket or a TLSConnection."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._buf = b""

    def readline(self) -> bytes | None:
        """Next line without CRLF; None on EOF or an over-long line."""
        while b"\n" not in self._buf:
            if len(self._buf) > _LINE_LIMIT:
                return None
            chunk = self.stream.recv(4096)
            if not chunk:
                return None
            self._buf += bytes(chunk)
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r")

    def has_pending(self) -> bool:
        return bool(self._buf)

    def send(self, text: str) -> None:
        self.stream.sendall(text.encode("ascii"))


class _SmtpSession:
    """The SMTP dialog of one connection (RFC 5321 §4.1, RFC 3207 §4)."""

    def __init__(self, server: TlsliteSmtpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.io = _LineIO(sock)
        self.tls: Any = None

    def run(self) -> None:
        name = self.server.hostname
        self.io.send(f"220 {name} ESMTP tlslite-ng test server\r\n")
        while (line := self.io.readline()) is not None:
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                # RFC 3207 §4.2: STARTTLS is not advertised after TLS started.
                extensions = ["PIPELINING", "8BITMIME"] + ([] if self.tls else ["STARTTLS"])
                lines = [name, *extensions]
                self.io.send("".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n")
            elif verb == b"HELO":
                self.io.send(f"250 {name}\r\n")
            elif verb == b"STARTTLS":
                if not self._starttls(line):
                    return
            elif verb in (b"NOOP", b"RSET"):
                self.io.send("250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                self.io.send("221 2.0.0 Bye\r\n")
                self._close_tls()
                return
            elif verb in (b"MAIL", b"RCPT", b"DATA"):
                self.io.send("554 5.7.1 test server accepts no mail\r\n")
            else:
                self.io.send("502 5.5.2 command not recognized\r\n")

    def _starttls(self, line: bytes) -> bool:
        """Handle STARTTLS; False when the connection must end."""
        if self.tls is not None:
            self.io.send("503 5.5.1 TLS already active\r\n")
            return True
        if line.strip().upper() != b"STARTTLS":
            self.io.send("501 5.5.4 syntax: STARTTLS\r\n")  # RFC 3207 §4: no parameters
            return True
        if self.io.has_pending():
            # RFC 3207 §5 / CVE-2011-0411: data pipelined after STARTTLS must
            # not be carried into the TLS session.
            self.io.send("554 5.5.1 pipelining after STARTTLS\r\n")
            return False
        self.io.send("220 2.0.0 Ready to start TLS\r\n")
        self.tls = self.server._handshake(self.sock)
        self.io = _LineIO(self.tls)
        return True

    def _close_tls(self) -> None:
        if self.tls is not None:
            # The client may already have gone; there is nothing left to tell it.
            with contextlib.suppress(OSError, BaseTLSException):
                self.tls.close()
