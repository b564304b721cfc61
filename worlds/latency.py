"""A user-space delay line in front of loopback servers, to emulate Internet round-trip time.

The kernel here has no netem, so ``tc qdisc ... delay 25ms`` is not available.
:class:`LatencyFront` listens on loopback addresses, relays every TCP session
and UDP datagram to a target address, and holds each chunk of bytes, each
EOF, each close and each datagram for ``one_way_delay`` seconds before passing
it on.  A request/response exchange therefore costs ``2 * one_way_delay`` more
than it would without the front.  A TCP route with alternates is also a
round-robin front (session n to target n mod k: a load balancer whose backends
disagree), and the per-route session counts tell how many connections a tool
(ours or a peer) opened against a server, whatever its own logs say.

What is *not* emulated: the TCP handshake.  The kernel completes the client's
``connect()`` at once (the front accepts locally) and the front connects to
the target straight away, so a server greeting (an SMTP banner) reaches the
client one ``one_way_delay`` after ``connect()`` was called; on a real path
it takes two round trips (handshake, then the banner), i.e. 4 x one_way_delay.

It has to stay cheap, because a benchmark pushes ~150,000 TCP sessions and
~3,000,000 DNS datagrams through it: it is written with asyncio Protocols (no
StreamReader/StreamWriter, no task per chunk) and one FIFO delay line per
front.  As the delay is the same for everything in a front, items leave the
line in the order they entered it, so one timer serves all of them, order is
preserved (a half-close never overtakes the data before it), and no
per-packet TimerHandle is allocated.

It runs in the caller's event loop (``async with LatencyFront(...)``) or in a
child process, :class:`LatencyFrontProcess` /
``python -m worlds.latency --spec-file spec.json --stats-file stats.json``,
which prints ``READY <tcp routes> <udp routes>`` once listening and writes its
counters as JSON on SIGTERM/SIGINT (and on SIGUSR1 without stopping).

Descriptor budget: every TCP listener costs one descriptor, every TCP
session two (client side and target side) and every UDP client address one
(its upstream socket, closed after 30 s idle, capped by
``max_udp_upstreams``).  The child raises its soft RLIMIT_NOFILE to the hard
limit, which is 20,000 on the benchmark machine and cannot be raised, so keep
a process well under it: e.g. at most ~8,000 TCP listeners, leaving room for
the concurrent sessions; spread larger farms over several processes.

Only loopback addresses are accepted, to listen on and to relay to: this
exists to shape traffic between processes of this machine, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import resource
import socket
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from worlds.procs import LoopThread, ReadyChild, serve_until_terminated
from worlds.smtp import _ensure_fd_limit, _new_loop, listener_key

__all__ = [
    "LatencyFront",
    "LatencyFrontProcess",
    "TcpRoute",
    "UdpRoute",
    "main",
    "read_spec_file",
    "write_spec_file",
]

LOG = logging.getLogger(__name__)

Address = tuple[str, int]

DEFAULT_BACKLOG = 4096
# A transport whose write buffer passes this pauses reading on the other side
# of the session; the same cap bounds the bytes a direction holds in the delay
# line (bandwidth x delay), so a fast sender cannot make the front buffer without bound.
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
# DNS clients normally reuse a socket; 30 s without a query means it is gone.
UDP_IDLE_TIMEOUT = 30.0
UDP_SWEEP_INTERVAL = 5.0
# One descriptor each; see the module docstring for the budget.
MAX_UDP_UPSTREAMS = 10_000
# Datagrams held for an upstream socket whose transport is still being set up.
_MAX_PENDING_DATAGRAMS = 64
# Bigger kernel receive buffers absorb bursts: the delay line releases
# everything due in the same timer tick at once (best effort: Linux caps these
# at net.core.rmem_max; they are limits, not allocations).
_UDP_RCVBUF = 4 << 20
# The delay line releases items due within this much of "now": uvloop's timers
# have millisecond resolution and may fire a fraction of a millisecond early.
_EARLY_SLACK = 0.0002
# Smallest re-arm of the delay line's timer; shorter would round to "call soon"
# under uvloop and spin until the item is due.
_MIN_REARM = 0.001


# --- routes -------------------------------------------------------------------------------------


def _check_address(address: Address, what: str) -> Address:
    """Return ``address`` as a ``(host, port)`` tuple after the loopback and port checks."""
    try:
        host, port = address
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (host, port), got {address!r}") from None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # Names are refused too: resolving one could lead anywhere.
        raise ValueError(f"{what} host must be a literal IP address, got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"{what} {host}: the latency front works on loopback only")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"{what} port must be in 1..65535, got {port!r}")
    return (str(host), port)


@dataclass(frozen=True)
class _Route:
    listen: Address
    target: Address

    def __post_init__(self) -> None:
        # Lists (from JSON) become tuples, so routes hash and compare as expected.
        object.__setattr__(self, "listen", _check_address(self.listen, "listen"))
        object.__setattr__(self, "target", _check_address(self.target, "target"))
        if self.listen == self.target:
            raise ValueError(f"route {listener_key(*self.listen)} would relay to itself")


@dataclass(frozen=True)
class TcpRoute(_Route):
    """Accept TCP on ``listen`` and relay each session to ``target`` (both loopback ``(host, port)``).

    With ``alternates`` the route is a round-robin front: session n goes to ``(target, *alternates)[n mod
    k]``, so one address answers from servers configured differently (a load balancer whose backends
    disagree).
    """

    alternates: tuple[Address, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alternates", tuple(_check_address(a, "alternate") for a in self.alternates))


@dataclass(frozen=True)
class UdpRoute(_Route):
    """Receive datagrams on ``listen`` and relay them to ``target``, replies back to their sender."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- the delay line -----------------------------------------------------------------------------


class _DelayLine:
    """FIFO of ``action(arg)`` calls, each run ``delay`` seconds after it was queued.

    Every item waits the same time, so the queue is sorted by due time and a
    single timer (armed for the head) is enough.  A delay of 0 runs the action
    at once: plain forwarding, with no extra loop iteration.
    """

    __slots__ = ("_clock", "_delay", "_loop", "_queue", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._loop = loop
        self._delay = delay
        self._queue: deque[tuple[float, Callable[[Any], None], Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        # time.monotonic, not loop.time(): uvloop's clock is the loop's cached
        # millisecond tick, which would let items leave up to ~1 ms early.
        self._clock = time.monotonic

    def put(self, action: Callable[[Any], None], arg: Any) -> None:
        if self._delay <= 0:
            action(arg)
            return
        self._queue.append((self._clock() + self._delay, action, arg))
        if self._timer is None:
            self._timer = self._loop.call_later(self._delay, self._run)

    def _run(self) -> None:
        self._timer = None
        queue = self._queue
        now = self._clock()
        horizon = now + _EARLY_SLACK
        while queue and queue[0][0] <= horizon:
            _, action, arg = queue.popleft()
            try:
                action(arg)
            except Exception:
                # One broken session must not stall every other item in the line.
                LOG.exception("delayed action %r failed", action)
        # An action may have queued (and armed the timer) itself.
        if queue and self._timer is None:
            self._timer = self._loop.call_later(max(queue[0][0] - now, _MIN_REARM), self._run)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


# --- TCP ----------------------------------------------------------------------------------------

# Non-data items of the delay line, for _TcpEnd.apply (data items are bytes).
_EOF = 0
_CLOSE = 1
_ABORT = 2

# Reasons an end stops reading its socket (bits of _TcpEnd.read_blocks).
_CONNECTING = 1  # the client's data has nowhere to go until the target answers
_PEER_FULL = 2  # the other end's transport buffer is over HIGH_WATER
_LINE_FULL = 4  # this end's bytes waiting in the delay line are over HIGH_WATER

_LINGER_RST = struct.pack("ii", 1, 0)


class _TcpEnd(asyncio.Protocol):
    """One socket of a relayed session: the client's (accepted) or ours to the target.

    What this socket reads is put in the delay line for ``peer``; what the
    line releases for this end (``apply``) is written into this socket.
    """

    __slots__ = (
        "early", "eof_in", "eof_out", "front", "is_client", "lost", "peer", "queued", "read_blocks", "route_key",
        "transport",
    )

    def __init__(self, front: LatencyFront, route_key: Address | None, peer: _TcpEnd | None = None) -> None:
        self.front = front
        # Set on the client end only: which route accepted it.
        self.route_key = route_key
        self.is_client = route_key is not None
        self.transport: asyncio.Transport | None = None
        # The two ends of a session are linked as soon as both objects exist
        # (before the target connection is up), so nothing read is ever orphaned.
        self.peer = peer
        # Client bytes read while the target connection is not up yet (see data_received).
        self.early: list[bytes] | None = None
        self.read_blocks = 0
        self.queued = 0  # bytes this end has read that still sit in the delay line
        self.eof_in = False  # this socket sent EOF
        self.eof_out = False  # we wrote EOF into this socket
        self.lost = False

    # --- events from this end's socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's classes.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.front._ends.add(self)
        if self.is_client:
            self.block(_CONNECTING)
            self.front._client_accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.read_blocks & _CONNECTING:
            # uvloop starts reading only after connection_made returns, so the
            # pause there may not have held: keep the bytes for the target and pause now.
            if self.early is None:
                self.early = []
            self.early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.forward(data)

    def forward(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.lost:
            return  # the other side is gone; its close is on the way to us
        self.queued += len(data)
        if self.queued > HIGH_WATER:
            self.block(_LINE_FULL)
        self.front._line.put(peer.apply, data)

    def eof_received(self) -> bool:
        if self.eof_in:
            return True
        self.eof_in = True
        peer = self.peer
        # While connecting, _connect() passes the EOF on after the early bytes.
        if peer is not None and not peer.lost and not self.read_blocks & _CONNECTING:
            self.front._line.put(peer.apply, _EOF)
        self._close_if_done()
        # True keeps the transport open: the other direction may still carry data.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        front = self.front
        front._ends.discard(self)
        if self.is_client:
            front.current_connections -= 1
        peer = self.peer
        if peer is not None and not peer.lost and not front._stopping:
            # An error (reset, broken pipe) is passed on as an abort, which the
            # other end turns into an RST; a clean close as a close (FIN).
            front._line.put(peer.apply, _CLOSE if exc is None else _ABORT)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.block(_PEER_FULL)

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.unblock(_PEER_FULL)

    # --- items the delay line releases to this end

    def apply(self, item: bytes | int) -> None:
        peer = self.peer
        if isinstance(item, bytes) and peer is not None:
            peer.queued -= len(item)
            if peer.read_blocks & _LINE_FULL and peer.queued <= LOW_WATER:
                peer.unblock(_LINE_FULL)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if isinstance(item, bytes):
            transport.write(item)
        elif item == _EOF:
            self.eof_out = True
            if transport.can_write_eof():
                transport.write_eof()
                self._close_if_done()
            else:
                transport.close()
        elif item == _CLOSE:
            transport.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the connection with an RST (SO_LINGER 0), as the other side's was."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def _close_if_done(self) -> None:
        # EOF both ways: nothing can flow on this socket any more.
        if self.eof_in and self.eof_out and self.transport is not None:
            self.transport.close()

    # --- flow control

    def block(self, reason: int) -> None:
        transport = self.transport
        # After EOF the transport no longer reads; pausing and resuming it would
        # re-arm the reader and report the EOF a second time.
        if not self.read_blocks and transport is not None and not self.eof_in and not transport.is_closing():
            transport.pause_reading()
        self.read_blocks |= reason

    def resume_after_connect(self) -> None:
        """Resume reading once the target is up (``_CONNECTING`` was already cleared, early bytes sent)."""
        transport = self.transport
        if not self.read_blocks and transport is not None and not self.eof_in and not transport.is_closing():
            transport.resume_reading()

    def unblock(self, reason: int) -> None:
        if not self.read_blocks & reason:
            return
        self.read_blocks &= ~reason
        transport = self.transport
        if not self.read_blocks and transport is not None and not self.eof_in and not transport.is_closing():
            transport.resume_reading()


# --- UDP ----------------------------------------------------------------------------------------


class _UdpRelay(asyncio.DatagramProtocol):
    """The listening socket of one UDP route; one ``_UdpUpstream`` per client address."""

    def __init__(self, front: LatencyFront, route: UdpRoute) -> None:
        self.front = front
        self.route = route
        self.key = route.listen
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[Any, _UdpUpstream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        front = self.front
        up = self.upstreams.get(addr)
        if up is None:
            up = front._open_upstream(self, addr)
            if up is None:
                front.udp_dropped += 1
                return
        else:
            front._udp_lru.move_to_end(up)
        up.last_used = time.monotonic()
        front._line.put(up.send, data)

    def error_received(self, exc: Exception) -> None:
        # E.g. ICMP port unreachable for a reply to a client that has gone: UDP is lossy.
        self.front.udp_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def reply(self, data: bytes, client: Any) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.front.udp_dropped += 1
            return
        transport.sendto(data, client)
        self.front.udp_to_client[self.key] += 1


class _UdpUpstream(asyncio.DatagramProtocol):
    """Our socket, connected to the route's target, that carries one client's datagrams."""

    __slots__ = ("client", "closed", "last_used", "pending", "relay", "transport")

    def __init__(self, relay: _UdpRelay, client: Any) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_used = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:  # evicted while its transport was being set up
            transport.close()
            return
        self.transport = cast(asyncio.DatagramTransport, transport)
        pending, self.pending = self.pending, []
        for data in pending:
            self.send(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.front._line.put(self.reply, data)

    def error_received(self, exc: Exception) -> None:
        # ECONNREFUSED when the target is down: the client's resolver times out, as it would.
        self.relay.front.udp_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed = True

    def send(self, data: bytes) -> None:
        front = self.relay.front
        if self.closed:
            front.udp_dropped += 1
        elif self.transport is None:
            if len(self.pending) < _MAX_PENDING_DATAGRAMS:
                self.pending.append(data)
            else:
                front.udp_dropped += 1
        else:
            self.transport.sendto(data)
            front.udp_to_target[self.relay.key] += 1

    def reply(self, data: bytes) -> None:
        self.relay.reply(data, self.client)

    def close(self) -> None:
        self.closed = True
        self.pending = []
        if self.transport is not None:
            self.transport.close()


# --- the front ----------------------------------------------------------------------------------


class LatencyFront:
    """Relay TCP sessions and UDP datagrams on loopback, each way ``one_way_delay`` seconds late.

    Runs in the current event loop: ``await front.start()`` / ``await front.stop()``
    or ``async with front:``; or on its own thread for synchronous callers: ``with front:``
    (``start_in_thread`` / ``stop_in_thread``).  Counters are plain attributes, read them any time:
    ``accepted[listen]`` (TCP sessions per route), ``connect_failures[listen]``,
    ``current_connections`` / ``peak_connections`` (all routes), ``udp_to_target[listen]``,
    ``udp_to_client[listen]``, ``udp_dropped``; :meth:`stats` collects them all.
    """

    def __init__(
        self,
        tcp_routes: Iterable[TcpRoute] = (),
        udp_routes: Iterable[UdpRoute] = (),
        one_way_delay: float = 0.0,
        *,
        backlog: int = DEFAULT_BACKLOG,
        max_udp_upstreams: int = MAX_UDP_UPSTREAMS,
        udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
        udp_sweep_interval: float = UDP_SWEEP_INTERVAL,
    ) -> None:
        if not math.isfinite(one_way_delay) or one_way_delay < 0:
            raise ValueError(f"one_way_delay must be a finite number >= 0, got {one_way_delay!r}")
        if max_udp_upstreams < 1:
            raise ValueError("max_udp_upstreams must be >= 1")
        self.tcp_routes = tuple(tcp_routes)
        self.udp_routes = tuple(udp_routes)
        _refuse_duplicates(self.tcp_routes, "TCP")
        _refuse_duplicates(self.udp_routes, "UDP")
        self.one_way_delay = float(one_way_delay)
        self.backlog = backlog
        self.max_udp_upstreams = max_udp_upstreams
        self.udp_idle_timeout = udp_idle_timeout
        self.udp_sweep_interval = udp_sweep_interval

        self._tcp_targets: dict[Address, tuple[Address, ...]] = {
            r.listen: (r.target, *r.alternates) for r in self.tcp_routes}
        self.accepted: dict[Address, int] = {r.listen: 0 for r in self.tcp_routes}
        self.connect_failures: dict[Address, int] = {r.listen: 0 for r in self.tcp_routes}
        self.current_connections = 0
        self.peak_connections = 0
        self.udp_to_target: dict[Address, int] = {r.listen: 0 for r in self.udp_routes}
        self.udp_to_client: dict[Address, int] = {r.listen: 0 for r in self.udp_routes}
        self.udp_dropped = 0
        self.udp_errors = 0
        self.udp_upstreams_opened = 0
        self.udp_upstreams_evicted = 0
        self.peak_udp_upstreams = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._line: _DelayLine
        self._servers: list[asyncio.AbstractServer] = []
        self._relays: list[_UdpRelay] = []
        self._ends: set[_TcpEnd] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Upstream sockets, least recently queried first: both the idle sweep
        # and the cap evict from the front.
        self._udp_lru: OrderedDict[_UdpUpstream, None] = OrderedDict()
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False
        self._in_thread = LoopThread("latency-front")

    # --- lifecycle

    async def start(self) -> None:
        """Bind every listener; raises OSError naming the address that failed (nothing stays bound)."""
        if self._loop is not None:
            raise RuntimeError("front already started")
        loop = self._loop = asyncio.get_running_loop()
        self._line = _DelayLine(loop, self.one_way_delay)
        self._stopping = False
        try:
            for route in self.tcp_routes:
                await self._listen_tcp(route)
            for udp_route in self.udp_routes:
                await self._listen_udp(udp_route)
        except BaseException:
            await self.stop()
            raise
        if self.udp_routes:
            self._sweeper = loop.call_later(self.udp_sweep_interval, self._sweep)

    async def _listen_tcp(self, route: TcpRoute) -> None:
        assert self._loop is not None
        sock = _bound_socket(route.listen, socket.SOCK_STREAM)
        key = route.listen

        def factory() -> _TcpEnd:
            return _TcpEnd(self, key)

        # create_server calls listen(backlog) itself.
        self._servers.append(await self._loop.create_server(factory, sock=sock, backlog=self.backlog))

    async def _listen_udp(self, route: UdpRoute) -> None:
        assert self._loop is not None
        sock = _bound_socket(route.listen, socket.SOCK_DGRAM)
        relay = _UdpRelay(self, route)
        self._relays.append(relay)
        await self._loop.create_datagram_endpoint(lambda: relay, sock=sock)

    async def stop(self) -> None:
        """Close the listeners, drop everything in flight and abort every open session."""
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        if self._loop is not None:
            self._line.close()
        for task in list(self._tasks):
            task.cancel()
        for end in list(self._ends):
            if end.transport is not None:
                end.transport.abort()
        for up in list(self._udp_lru):
            up.close()
        self._udp_lru.clear()
        for relay in self._relays:
            relay.upstreams.clear()
            if relay.transport is not None:
                relay.transport.close()
        self._relays = []
        await asyncio.gather(*(s.wait_closed() for s in servers), *self._tasks, return_exceptions=True)
        # Let the transports deliver connection_lost, so the counters settle.
        await asyncio.sleep(0)
        self._loop = None

    def start_in_thread(self, timeout: float = 30.0) -> None:
        """Run the front in its own event loop on a daemon thread (for synchronous callers); returns once bound."""
        self._in_thread.start(asyncio.new_event_loop(), self.start, timeout)

    def stop_in_thread(self, timeout: float = 30.0) -> None:
        """Stop a front started with :meth:`start_in_thread` and join its thread."""
        self._in_thread.stop(self.stop, timeout)

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_in_thread()

    async def __aenter__(self) -> LatencyFront:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- TCP

    def _client_accepted(self, client: _TcpEnd) -> None:
        assert client.route_key is not None and self._loop is not None
        turn = self.accepted[client.route_key]  # the session's number: its target (round robin)
        self.accepted[client.route_key] += 1
        self.current_connections += 1
        self.peak_connections = max(self.peak_connections, self.current_connections)
        task = self._loop.create_task(self._connect(client, turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, client: _TcpEnd, turn: int) -> None:
        """Open the target side of ``client``'s session (number ``turn``), then let the client's bytes flow."""
        assert client.route_key is not None and self._loop is not None
        loop = self._loop
        targets = self._tcp_targets[client.route_key]
        target = targets[turn % len(targets)]
        upstream = client.peer = _TcpEnd(self, None, peer=client)
        sock: socket.socket | None = None
        try:
            # Our own socket: a literal address needs no resolver, and connect
            # errors arrive here rather than inside create_connection's retries.
            sock = socket.socket(_family(target[0]), socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, target)
            await loop.create_connection(lambda: upstream, sock=sock)
        except BaseException as exc:
            if sock is not None:
                sock.close()
            upstream.lost = True
            if not isinstance(exc, OSError):
                raise  # cancelled by stop()
            self._connect_failed(client)
            return
        if client.lost:
            # The client left while we were connecting (only an RST is noticed then).
            upstream.abort()
            return
        client.read_blocks &= ~_CONNECTING  # so forward() below goes to the line, not to early
        early, client.early = client.early, None
        for data in early or ():
            client.forward(data)
        if client.eof_in:
            self._line.put(upstream.apply, _EOF)
        client.resume_after_connect()

    def _connect_failed(self, client: _TcpEnd) -> None:
        assert client.route_key is not None
        self.connect_failures[client.route_key] += 1
        if client.transport is not None:
            client.transport.close()

    # --- UDP

    def _open_upstream(self, relay: _UdpRelay, client: Any) -> _UdpUpstream | None:
        """A new upstream socket for ``client``; evicts the least recently used one at the cap."""
        assert self._loop is not None
        if len(self._udp_lru) >= self.max_udp_upstreams:
            self._evict_oldest()
        target = relay.route.target
        try:
            sock = socket.socket(_family(target[0]), socket.SOCK_DGRAM)
        except OSError as exc:
            # EMFILE/ENFILE: give the oldest descriptor back and drop this datagram.
            LOG.warning("no socket for a UDP upstream (%s); evicting the oldest", exc)
            if self._udp_lru:
                self._evict_oldest()
            return None
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
            # A connected UDP socket only accepts datagrams from the target, and
            # connect() on UDP sends nothing, so this cannot block.
            sock.connect(target)
        except OSError:
            sock.close()
            return None
        up = _UdpUpstream(relay, client)
        relay.upstreams[client] = up
        self._udp_lru[up] = None
        self.udp_upstreams_opened += 1
        self.peak_udp_upstreams = max(self.peak_udp_upstreams, len(self._udp_lru))
        task = self._loop.create_task(self._attach(up, sock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return up

    async def _attach(self, up: _UdpUpstream, sock: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.create_datagram_endpoint(lambda: up, sock=sock)
        except OSError:
            sock.close()
            self._forget(up)
        except BaseException:
            sock.close()
            raise

    def _forget(self, up: _UdpUpstream) -> None:
        up.close()
        self._udp_lru.pop(up, None)
        if up.relay.upstreams.get(up.client) is up:
            del up.relay.upstreams[up.client]

    def _evict_oldest(self) -> None:
        up, _ = self._udp_lru.popitem(last=False)
        self.udp_upstreams_evicted += 1
        self._forget(up)

    def _sweep(self) -> None:
        """Close upstream sockets not queried for ``udp_idle_timeout`` (the LRU's head is the oldest)."""
        cutoff = time.monotonic() - self.udp_idle_timeout
        lru = self._udp_lru
        while lru:
            up = next(iter(lru))
            if up.last_used > cutoff:
                break
            self._forget(up)
        if self._loop is not None and not self._stopping:
            self._sweeper = self._loop.call_later(self.udp_sweep_interval, self._sweep)

    # --- statistics

    def stats(self) -> dict[str, Any]:
        """The counters as plain JSON-able data (layout: see :class:`LatencyFrontProcess`)."""
        return {
            "written_at": time.time(),
            "one_way_delay": self.one_way_delay,
            "tcp": {
                "accepted": sum(self.accepted.values()),
                "connect_failures": sum(self.connect_failures.values()),
                "current_connections": self.current_connections,
                "peak_connections": self.peak_connections,
                "routes": {
                    listener_key(*r.listen): {
                        "target": listener_key(*r.target),
                        "accepted": self.accepted[r.listen],
                        "connect_failures": self.connect_failures[r.listen],
                    }
                    for r in self.tcp_routes
                },
            },
            "udp": {
                "to_target": sum(self.udp_to_target.values()),
                "to_client": sum(self.udp_to_client.values()),
                "dropped": self.udp_dropped,
                "errors": self.udp_errors,
                "upstreams_open": len(self._udp_lru),
                "upstreams_opened": self.udp_upstreams_opened,
                "upstreams_evicted": self.udp_upstreams_evicted,
                "peak_upstreams": self.peak_udp_upstreams,
                "routes": {
                    listener_key(*r.listen): {
                        "target": listener_key(*r.target),
                        "to_target": self.udp_to_target[r.listen],
                        "to_client": self.udp_to_client[r.listen],
                    }
                    for r in self.udp_routes
                },
            },
        }

    def write_stats(self, path: Path) -> None:
        """Dump :meth:`stats` as JSON, atomically (a reader never sees half a file)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.stats()), encoding="utf-8")
        tmp.replace(path)


def _refuse_duplicates(routes: Sequence[TcpRoute] | Sequence[UdpRoute], kind: str) -> None:
    seen: set[Address] = set()
    for route in routes:
        if route.listen in seen:
            raise ValueError(f"two {kind} routes listen on {listener_key(*route.listen)}")
        seen.add(route.listen)


def _bound_socket(address: Address, kind: socket.SocketKind) -> socket.socket:
    """Bound non-blocking socket (no getaddrinfo: there may be thousands of these)."""
    sock = socket.socket(_family(address[0]), kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Restarting a front must not wait for TIME_WAIT of the previous run.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # Not SO_REUSEADDR on UDP: on Linux it lets two sockets share the
            # port, which would hide a clash with a live server.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {listener_key(*address)}: {exc.strerror}") from exc
    return sock


# --- spec files and the child process -----------------------------------------------------------


def write_spec_file(
    path: Path, tcp_routes: Iterable[TcpRoute], udp_routes: Iterable[UdpRoute], one_way_delay: float
) -> None:
    """``{"one_way_delay": d, "tcp": [{"listen": [h, p], "target": [h, p]}, ...], "udp": [...]}``."""
    payload = {
        "one_way_delay": one_way_delay,
        "tcp": [{"listen": list(r.listen), "target": list(r.target), "alternates": [list(a) for a in r.alternates]}
                for r in tcp_routes],
        "udp": [{"listen": list(r.listen), "target": list(r.target)} for r in udp_routes],
    }
    path.write_text(json.dumps(payload), encoding="utf-8")


def read_spec_file(path: Path) -> tuple[list[TcpRoute], list[UdpRoute], float]:
    """Inverse of :func:`write_spec_file`; every route is validated again."""
    payload: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    tcp = [TcpRoute(_pair(r["listen"]), _pair(r["target"]), tuple(_pair(a) for a in r.get("alternates", [])))
           for r in payload.get("tcp", [])]
    udp = [UdpRoute(_pair(r["listen"]), _pair(r["target"])) for r in payload.get("udp", [])]
    return tcp, udp, float(payload["one_way_delay"])


def _pair(value: Sequence[Any]) -> Address:
    """JSON has no tuples; the route's own check validates the two values."""
    host, port = value
    return (host, port)


class LatencyFrontProcess:
    """Run a :class:`LatencyFront` in a child process (``python -m worlds.latency``).

    Its own process keeps the relaying CPU off the scanner being measured.
    ``start()`` writes ``workdir/latency-spec.json``, spawns the child and waits
    for its ``READY`` line; ``stop()`` sends SIGTERM, waits for exit and returns
    the counters the child wrote to ``workdir/latency-stats.json``::

        {"written_at": 1700000000.0, "one_way_delay": 0.025,
         "tcp": {"accepted": 3, "connect_failures": 0, "current_connections": 0, "peak_connections": 2,
                 "routes": {"127.64.0.1:25": {"target": "127.64.0.2:2525", "accepted": 3, "connect_failures": 0}}},
         "udp": {"to_target": 10, "to_client": 10, "dropped": 0, "errors": 0, "upstreams_open": 1,
                 "upstreams_opened": 1, "upstreams_evicted": 0, "peak_upstreams": 1,
                 "routes": {"127.64.0.1:53": {"target": "127.64.0.3:5353", "to_target": 10, "to_client": 10}}}}

    The child's stderr goes to ``workdir/latency.stderr``.  Keep each process
    well under the 20,000-descriptor hard limit (module docstring).

    ``with LatencyFrontProcess(...) as front:`` starts and always stops it.  It
    does not derive from ``worlds.procs.ServerLifecycle`` only because its
    ``stop()`` returns the counters.
    """

    def __init__(
        self,
        tcp_routes: Iterable[TcpRoute],
        udp_routes: Iterable[UdpRoute],
        one_way_delay: float,
        workdir: Path,
        *,
        use_uvloop: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.tcp_routes = tuple(tcp_routes)
        self.udp_routes = tuple(udp_routes)
        # Validate here, in the parent, where a mistake is easier to read than in a child's stderr.
        LatencyFront(self.tcp_routes, self.udp_routes, one_way_delay)
        self.one_way_delay = one_way_delay
        self.workdir = workdir
        self.use_uvloop = use_uvloop
        self.python = python
        self.spec_file = workdir / "latency-spec.json"
        self.stats_file = workdir / "latency-stats.json"
        self.stderr_file = workdir / "latency.stderr"
        self._child = ReadyChild("latency front", self.stderr_file)
        self._last_stats: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self._child.pid

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_spec_file(self.spec_file, self.tcp_routes, self.udp_routes, self.one_way_delay)
        self.stats_file.unlink(missing_ok=True)
        cmd = [self.python, "-m", "worlds.latency", "--spec-file", str(self.spec_file),
               "--stats-file", str(self.stats_file)]
        if not self.use_uvloop:
            cmd.append("--no-uvloop")
        self._child.start(cmd, timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM the child, wait for it, return its counters (again, if already stopped)."""
        if not self._child.running:
            if self._last_stats is not None:
                return self._last_stats
            raise RuntimeError("not started")
        self._child.stop(timeout)
        stats: dict[str, Any] = json.loads(self.stats_file.read_text(encoding="utf-8"))
        self._last_stats = stats
        return stats

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # stop() may already have been called inside the ``with`` block to read the stats.
        if self._child.running:
            self.stop()


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: every session costs two descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still stops at the kernel's nr_open (2**20 by default).
    _ensure_fd_limit(1 << 20 if hard == resource.RLIM_INFINITY else hard)


async def _serve(args: argparse.Namespace) -> None:
    tcp, udp, delay = read_spec_file(args.spec_file)
    _raise_fd_limit()
    front = LatencyFront(tcp, udp, delay)
    await serve_until_terminated(front, f"READY {len(tcp)} {len(udp)}", args.stats_file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worlds.latency", description="Relay loopback TCP/UDP with a fixed one-way delay."
    )
    parser.add_argument("--spec-file", type=Path, required=True, help="JSON written by write_spec_file")
    parser.add_argument("--stats-file", type=Path, help="counters JSON written on SIGTERM/SIGINT/SIGUSR1")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    use_uvloop = args.uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    loop = _new_loop(use_uvloop)
    try:
        loop.run_until_complete(_serve(args))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
