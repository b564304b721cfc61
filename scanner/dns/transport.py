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

import array
import asyncio
import collections
import contextlib
import itertools
import os
import secrets
import socket
from collections.abc import Callable
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
# How early a loop timer may fire against its deadline (event loops round delays to milliseconds).
_CLOCK_SLACK = 0.001
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


class _Flight:
    """One query in flight: its question, its future and which transmission is the current one."""

    __slots__ = ("attempt", "dnssec", "first", "future", "qname", "qtype", "query", "registered", "server")

    def __init__(self, qname: str, qtype: int, query: bytes, future: asyncio.Future[Reply], first: int,
                 dnssec: bool) -> None:
        self.qname = qname
        self.qtype = qtype
        self.query = query  # the encoded query; each transmission only sets its own ID
        self.future = future
        self.attempt = 0
        self.first = first  # index of the server of the first try
        self.server: Server | None = None  # the server of the current try (TCP goes there on truncation)
        self.registered: list[tuple[_UdpSocket, int]] = []
        self.dnssec = dnssec  # DO and AD set (TCP asks the same way on truncation)


@dataclass(slots=True)
class _Stats:
    dropped: int = 0  # datagrams that answered no query in flight, or were malformed


class _QueryIds:
    """Random 16-bit query IDs (RFC 5452 §4.3: unpredictable), drawn from the OS in batches of 512:
    one ``os.urandom`` call per batch instead of one per query."""

    __slots__ = ("_batch",)

    def __init__(self) -> None:
        self._batch = array.array("H")

    def next(self) -> int:
        if not self._batch:
            self._batch.frombytes(os.urandom(1024))
        return self._batch.pop()


class _UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket to one server: the kernel drops datagrams from any other source."""

    def __init__(self, stats: _Stats, ids: _QueryIds) -> None:
        self.pending: dict[int, _Flight] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._stats = stats
        self._ids = ids

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Not allowed here: the default buffer still works, it only drops sooner.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)

    def register(self, flight: _Flight) -> int:
        while (qid := self._ids.next()) in self.pending:
            continue
        self.pending[qid] = flight
        return qid

    def datagram_received(self, data: bytes, addr: object) -> None:
        qid = reply_id(data)
        flight = self.pending.get(qid) if qid is not None else None
        if flight is None or flight.future.done():
            self._stats.dropped += 1
            return
        try:
            reply = parse_reply(data)
        except WireError:
            self._stats.dropped += 1  # junk with a live ID: drop it, the real answer may still come
            return
        if reply.qname != flight.qname or reply.qtype != flight.qtype:
            self._stats.dropped += 1
            return
        flight.future.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable: nothing listens at the server's address) fails the queries
        # waiting on this socket now instead of after their timeouts; the next try may use another server.
        for flight in self.pending.values():
            if not flight.future.done():
                flight.future.set_exception(exc)


@dataclass(slots=True)
class _ServerSockets:
    sockets: list[_UdpSocket] = field(default_factory=list)
    turn: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(SOCKETS_PER_SERVER)))


class _Deadlines:
    """When each transmission's ``timeout`` runs out, for every query in flight, on one timer.

    Every try waits the same ``timeout``, so deadlines come in the order the transmissions were sent:
    a FIFO queue whose head is the next to expire, and one loop timer armed for that head, replace a
    timer (and an ``asyncio.wait``) per query. An entry whose query was answered, or moved on to its
    next try, is skipped when it comes up.
    """

    def __init__(self, timeout: float, expired: Callable[[_Flight], None]) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop's, from the first start
        self._timeout = timeout
        self._expired = expired
        self._queue: collections.deque[tuple[float, _Flight, int]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, flight: _Flight) -> None:
        """The current transmission of ``flight`` was just sent: its wait starts now."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        deadline = self._loop.time() + self._timeout
        self._queue.append((deadline, flight, flight.attempt))
        if self._timer is None:  # armed for the head: a retry sent while ``_fire`` runs is not the next due
            self._timer = self._loop.call_at(self._queue[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        queue = self._queue
        assert self._loop is not None
        # The loop's clock has a resolution; a timer may run a hair before its deadline.
        now = self._loop.time() + _CLOCK_SLACK
        while queue and queue[0][0] <= now:
            _, flight, attempt = queue.popleft()
            if attempt == flight.attempt and not flight.future.done():
                self._expired(flight)
        if queue and self._timer is None:
            self._timer = self._loop.call_at(queue[0][0], self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


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
        self._ids = _QueryIds()
        self._server_turn = itertools.cycle(range(len(servers)))
        self._deadlines = _Deadlines(timeout, self._next_try)
        # Retries whose socket had to be opened first (another server's, not used before).
        self._retries: set[asyncio.Task[None]] = set()

    @property
    def dropped_datagrams(self) -> int:
        return self._stats.dropped

    def _open_socket(self, server: Server) -> _UdpSocket | None:
        """The next of ``server``'s sockets in turn if it is open, else None (``_socket`` opens it)."""
        entry = self._sockets[server]
        index = next(entry.turn)
        return entry.sockets[index] if index < len(entry.sockets) else None

    async def _socket(self, server: Server) -> _UdpSocket:
        entry = self._sockets[server]
        index = len(entry.sockets)
        key = (server, index)
        if key in self._opening:  # being opened by a concurrent query
            return await asyncio.shield(self._opening[key])
        loop = asyncio.get_running_loop()
        opening: asyncio.Future[_UdpSocket] = loop.create_future()
        self._opening[key] = opening
        try:
            family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
            _, protocol = await loop.create_datagram_endpoint(lambda: _UdpSocket(self._stats, self._ids),
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

    def _send(self, flight: _Flight, udp: _UdpSocket) -> None:
        """Transmit ``flight``'s current try on ``udp`` under a fresh ID and start its wait."""
        qid = udp.register(flight)
        flight.registered.append((udp, qid))
        assert udp.transport is not None
        # Each try only changes the 16-bit ID in the first two octets (RFC 1035 §4.1.1).
        udp.transport.sendto(qid.to_bytes(2, "big") + flight.query[2:])
        self._deadlines.start(flight)

    def _server_of(self, flight: _Flight) -> Server:
        return self._servers[(flight.first + flight.attempt) % len(self._servers)]

    def _next_try(self, flight: _Flight) -> None:
        """The current try's wait ran out: send the next one, or fail the query after the last."""
        if flight.attempt + 1 >= self._tries:
            flight.future.set_exception(
                DnsTimeout(f"no answer within {self._timeout:g}s on any of {self._tries} tries"))
            return
        flight.attempt += 1
        server = flight.server = self._server_of(flight)
        udp = self._open_socket(server)
        if udp is not None:
            self._send(flight, udp)
            return
        task = asyncio.get_running_loop().create_task(self._send_when_open(flight, server))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _send_when_open(self, flight: _Flight, server: Server) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                udp = await self._socket(server)
        except (OSError, TimeoutError) as exc:
            if not flight.future.done():
                flight.future.set_exception(exc)
            return
        if not flight.future.done():
            self._send(flight, udp)

    async def exchange(self, name: str, qtype: int, *, dnssec: bool = False) -> tuple[Reply, Server]:
        """The reply to ``name``/``qtype`` and the server asked last (with one server, or an answer to
        the latest try, the one that answered); raises ``DnsTimeout``, ``OSError`` or ``WireError``.
        ``dnssec`` asks with DO and AD set (``scanner.dns.wire.build_query``)."""
        wire_name = name.rstrip(".")
        # Built once (a name that cannot be encoded fails here, before any packet).
        query = build_query(0, wire_name, qtype, dnssec=dnssec)
        flight = _Flight(wire_name.lower(), qtype, query, asyncio.get_running_loop().create_future(),
                         next(self._server_turn), dnssec)
        try:
            server = flight.server = self._server_of(flight)
            udp = self._open_socket(server)
            if udp is None:  # the first queries to a server open its sockets
                async with asyncio.timeout(self._timeout):
                    udp = await self._socket(server)
            self._send(flight, udp)
            # Every try waits the full configured timeout (``_Deadlines``, then ``_next_try``); an answer
            # to an earlier transmission still counts (all of this query's IDs stay registered until it ends).
            reply = await flight.future
            asked = flight.server
            assert asked is not None
            if reply.truncated:
                return await self._tcp(asked, flight, wire_name), asked
            return reply, asked
        finally:
            for sock, qid in flight.registered:
                sock.pending.pop(qid, None)
            if not flight.future.done():
                flight.future.cancel()

    async def _tcp(self, server: Server, flight: _Flight, wire_name: str) -> Reply:
        qname, qtype = flight.qname, flight.qtype
        async with asyncio.timeout(self._timeout):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                qid = secrets.randbits(16)
                query = build_query(qid, wire_name, qtype, dnssec=flight.dnssec)
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
        """Close the sockets. A query still in flight cannot be answered any more: it ends now, as a
        timeout, instead of waiting on a timer that is gone."""
        self._deadlines.close()
        for task in list(self._retries):
            task.cancel()
        for entry in self._sockets.values():
            for udp in entry.sockets:
                for flight in udp.pending.values():  # every query in flight is registered on a socket
                    if not flight.future.done():
                        flight.future.set_exception(DnsTimeout("the resolver was closed before an answer came"))
        for entry in self._sockets.values():
            for udp in entry.sockets:
                if udp.transport is not None:
                    udp.transport.close()
            entry.sockets.clear()
