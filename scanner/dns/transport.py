"""A stub resolver's transport: queries over UDP with our own timeouts and retries, TCP on truncation.

Why not c-ares' own: c-ares (1.32 and later, bundled by pycares 5) uses the configured timeout only
for the first queries to a server; after three answers it waits five times the server's average
latency (at least 250 ms), doubling per retry. With many fast answers that shrank ``--dns-timeout
3`` to about 0.25-0.5 s per try, and an answer taking 1.2-2.4 s (a recursive resolver with a cold
cache) came out ``dns_timeout`` after under a second. c-ares has no option to turn this off, and it
drops an answer to an earlier transmission once it re-sends. Here every try waits exactly
``timeout`` seconds, and an answer to any transmission of a query is accepted.

Also unlike c-ares, a datagram that is not a well-formed reply to a query in flight is dropped and
the query keeps waiting (RFC 5452 §9.1); c-ares failed every query on the socket as "Misformatted DNS
reply". Replies must come from the server's address (connected sockets), carry a random 16-bit ID of
a query in flight and repeat its question (RFC 5452 §4.1-4.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from scanner.dns.wire import Reply, WireError, build_query, parse_reply, reply_id

__all__ = ["DnsTimeout", "Server", "StubTransport", "system_nameservers"]

# Answers wait in the UDP socket while the event loop is busy with other work (hundreds of ms at full
# speed), and with a thousand queries in flight the kernel's default buffer (208 KiB, ~250 datagrams)
# overflows: answers are dropped and come back as timeouts. The kernel caps the request at
# net.core.rmem_max (4 MiB on this machine, 208 KiB on a stock kernel: see the README's tuning notes).
UDP_RECEIVE_BUFFER = 4 << 20
# UDP sockets per server: queries are spread over them, each with its own random source port.
SOCKETS_PER_SERVER = 4
# RFC 1035 §4.2.2: a TCP message is preceded by its two-byte length.
_TCP_LENGTH = 2


class DnsTimeout(Exception):
    """No answer within ``timeout`` seconds on any of ``tries`` transmissions."""


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int = 53


def system_nameservers(path: Path = Path("/etc/resolv.conf")) -> list[Server]:
    """The ``nameserver`` lines of resolv.conf (resolv.conf(5)), for a scan given no ``--resolver``."""
    servers = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(Server(fields[1].split("%", 1)[0]))
    return servers or [Server("127.0.0.1")]


@dataclass(slots=True)
class _Pending:
    qname: str
    qtype: int
    future: asyncio.Future[Reply]


@dataclass(slots=True)
class _Stats:
    dropped: int = 0  # datagrams that answered no query in flight, or were malformed


class _UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket to one server: the kernel drops datagrams from any other source."""

    def __init__(self, stats: _Stats) -> None:
        self.pending: dict[int, _Pending] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Not allowed here: the default buffer still works, it only drops sooner.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)

    def register(self, pending: _Pending) -> int:
        while (qid := secrets.randbits(16)) in self.pending:
            continue
        self.pending[qid] = pending
        return qid

    def datagram_received(self, data: bytes, addr: object) -> None:
        qid = reply_id(data)
        pending = self.pending.get(qid) if qid is not None else None
        if pending is None or pending.future.done():
            self._stats.dropped += 1
            return
        try:
            reply = parse_reply(data)
        except WireError:
            self._stats.dropped += 1  # junk with a live ID: drop it, the real answer may still come
            return
        if reply.qname != pending.qname or reply.qtype != pending.qtype:
            self._stats.dropped += 1
            return
        pending.future.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable: nothing listens at the server's address) fails the queries
        # waiting on this socket now instead of after their timeouts; the next try may use another server.
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)


@dataclass(slots=True)
class _ServerSockets:
    sockets: list[_UdpSocket] = field(default_factory=list)
    turn: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(SOCKETS_PER_SERVER)))


class StubTransport:
    """Send one question, get one reply: ``tries`` UDP transmissions ``timeout`` seconds apart, then
    TCP if the reply was truncated (RFC 1035 §4.2.1, RFC 7766 §5). Create inside a running loop."""

    def __init__(self, servers: list[Server], timeout: float, tries: int) -> None:
        self._servers = servers
        self._timeout = timeout
        self._tries = tries
        self._sockets: dict[Server, _ServerSockets] = {s: _ServerSockets() for s in servers}
        self._opening: dict[tuple[Server, int], asyncio.Future[_UdpSocket]] = {}
        self._stats = _Stats()
        self._server_turn = itertools.cycle(range(len(servers)))

    @property
    def dropped_datagrams(self) -> int:
        return self._stats.dropped

    async def _socket(self, server: Server) -> _UdpSocket:
        entry = self._sockets[server]
        index = next(entry.turn)
        if index < len(entry.sockets):
            return entry.sockets[index]
        key = (server, index)
        if key in self._opening:  # being opened by a concurrent query
            return await asyncio.shield(self._opening[key])
        loop = asyncio.get_running_loop()
        opening: asyncio.Future[_UdpSocket] = loop.create_future()
        self._opening[key] = opening
        try:
            family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
            _, protocol = await loop.create_datagram_endpoint(lambda: _UdpSocket(self._stats),
                                                              remote_addr=(server.host, server.port), family=family)
        except OSError as exc:
            opening.set_exception(exc)
            opening.exception()  # retrieved: concurrent waiters re-raise it themselves
            del self._opening[key]
            raise
        entry.sockets.append(protocol)
        opening.set_result(protocol)
        del self._opening[key]
        return protocol

    async def exchange(self, name: str, qtype: int) -> Reply:
        """The reply to ``name``/``qtype``; raises ``DnsTimeout``, ``OSError`` or ``WireError``."""
        qname = name.rstrip(".").lower()
        wire_name = name.rstrip(".")
        # Built once (a name that cannot be encoded fails here, before any packet); each try only
        # changes the 16-bit ID in the first two octets (RFC 1035 §4.1.1).
        query = bytearray(build_query(0, wire_name, qtype))
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        pending = _Pending(qname, qtype, future)
        registered: list[tuple[_UdpSocket, int]] = []
        first = next(self._server_turn)
        try:
            for attempt in range(self._tries):
                server = self._servers[(first + attempt) % len(self._servers)]
                udp = await self._socket(server)
                qid = udp.register(pending)
                registered.append((udp, qid))
                assert udp.transport is not None
                query[0:2] = qid.to_bytes(2, "big")
                udp.transport.sendto(bytes(query))
                # Every try waits the full configured timeout; an answer to an earlier transmission
                # still counts (all of this query's IDs stay registered until it ends).
                done, _ = await asyncio.wait((future,), timeout=self._timeout)
                if done:
                    reply = future.result()
                    if reply.truncated:
                        return await self._tcp(server, wire_name, qname, qtype)
                    return reply
            raise DnsTimeout(f"no answer within {self._timeout:g}s on any of {self._tries} tries")
        finally:
            for udp, qid in registered:
                udp.pending.pop(qid, None)
            if not future.done():
                future.cancel()

    async def _tcp(self, server: Server, wire_name: str, qname: str, qtype: int) -> Reply:
        async with asyncio.timeout(self._timeout):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                qid = secrets.randbits(16)
                query = build_query(qid, wire_name, qtype)
                writer.write(len(query).to_bytes(_TCP_LENGTH, "big") + query)
                await writer.drain()
                while True:
                    size = int.from_bytes(await reader.readexactly(_TCP_LENGTH), "big")
                    reply = parse_reply(await reader.readexactly(size))
                    if reply.qid == qid and reply.qname == qname and reply.qtype == qtype:
                        return reply
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError("the server closed the TCP connection before answering") from exc
            finally:
                writer.close()

    async def close(self) -> None:
        for entry in self._sockets.values():
            for udp in entry.sockets:
                if udp.transport is not None:
                    udp.transport.close()
            entry.sockets.clear()
