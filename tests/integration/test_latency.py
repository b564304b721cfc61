"""Real-socket checks of the latency front (worlds.latency), on random loopback addresses only.

The servers behind the front are tiny asyncio echo servers in the test's own
loop.  The in-process checks ("scenarios") run the front in that loop, once
under asyncio and once under uvloop; the process-wrapper tests run it in a
child process (on uvloop, as benchmarks do).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from worlds.latency import LatencyFront, LatencyFrontProcess, TcpRoute, UdpRoute, read_spec_file, write_spec_file
from worlds.ports import free_port
from worlds.procs import alive
from worlds.smtp import listener_key

pytestmark = pytest.mark.timeout(60)

DELAY = 0.025
RTT = 2 * DELAY
RNG = random.Random()

Address = tuple[str, int]


# --- addresses and servers ----------------------------------------------------------------------


def free_address() -> Address:
    """A random address in 127.64.0.0/10 (clear of localhost services) with a port free for TCP and UDP."""
    host = f"127.{RNG.randint(64, 127)}.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
    return (host, free_port(host))


async def echo_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every byte; on the client's EOF say ``EOF:<bytes seen>`` and close (a half-close check)."""
    total = 0
    try:
        while chunk := await reader.read(65536):
            total += len(chunk)
            writer.write(chunk)
            await writer.drain()
        writer.write(b"EOF:%d" % total)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def reset_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read one chunk, then reset the connection (SO_LINGER 0 + close sends RST)."""
    await reader.read(100)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def tcp_server(handler: Any = echo_session) -> AsyncIterator[Address]:
    address = free_address()
    # A large backlog: the concurrency test makes the front open 200 connections at once.
    server = await asyncio.start_server(handler, *address, backlog=1024)
    try:
        yield address
    finally:
        server.close()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo:" + data, addr)


@contextlib.asynccontextmanager
async def udp_server() -> AsyncIterator[Address]:
    address = free_address()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=address)
    try:
        yield address
    finally:
        transport.close()


class UdpClient(asyncio.DatagramProtocol):
    """A client socket whose received datagrams land in a queue."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_client(target: Address) -> AsyncIterator[tuple[asyncio.DatagramTransport, UdpClient]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(UdpClient, remote_addr=target)
    try:
        yield transport, protocol
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def front(
    tcp: list[TcpRoute] | None = None, udp: list[UdpRoute] | None = None, delay: float = DELAY, **kw: Any
) -> AsyncIterator[LatencyFront]:
    async with LatencyFront(tcp or [], udp or [], delay, **kw) as f:
        yield f


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


async def tcp_round_trip(address: Address, payload: bytes = b"ping") -> float:
    """Connect, time one request/response, then half-close and expect the server's goodbye."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        began = time.monotonic()
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
        elapsed = time.monotonic() - began
        writer.write_eof()
        assert await read_all(reader) == b"EOF:%d" % len(payload)
        return elapsed
    finally:
        writer.close()


async def settle(predicate: Any, timeout: float = 3.0) -> None:
    """Counters move when close callbacks run, a delay after the client is done."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)


# --- scenarios, each run under asyncio and under uvloop -----------------------------------------

Scenario = Callable[[], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(func: Scenario) -> Scenario:
    """Register an in-process check; the front must behave the same on both event loops."""
    SCENARIOS[func.__name__] = func
    return func


async def test_on_asyncio(name: str) -> None:
    await SCENARIOS[name]()


def test_on_uvloop(name: str) -> None:
    # uvloop differs in ways that matter here (when reading starts, timer
    # resolution, transport classes), and the child process runs on it.
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(SCENARIOS[name](), 30))
    finally:
        loop.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", list(SCENARIOS))


# --- routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        (("8.8.8.8", 53), ("127.0.0.1", 53)),  # listen off loopback
        (("127.0.0.1", 53), ("192.0.2.1", 53)),  # target off loopback
        (("localhost", 53), ("127.0.0.1", 54)),  # names are not resolved
        (("127.0.0.1", 0), ("127.0.0.1", 53)),
        (("127.0.0.1", 53), ("127.0.0.1", 65536)),
        (("127.0.0.1", 53), ("127.0.0.1", 53)),  # a loop
    ],
)
def test_routes_refuse_bad_addresses(listen: Any, target: Any) -> None:
    for cls in (TcpRoute, UdpRoute):
        with pytest.raises(ValueError):
            cls(listen, target)


def test_routes_accept_lists_and_ipv6_loopback() -> None:
    route = TcpRoute(["127.0.0.1", 25], ["::1", 2525])  # type: ignore[arg-type]
    assert route.listen == ("127.0.0.1", 25)
    assert route.target == ("::1", 2525)


def test_front_refuses_bad_delay_and_duplicate_listeners() -> None:
    with pytest.raises(ValueError):
        LatencyFront([], [], -0.1)
    with pytest.raises(ValueError):
        LatencyFront([], [], float("nan"))
    route = TcpRoute(("127.0.0.1", 2525), ("127.0.0.1", 25))
    with pytest.raises(ValueError):
        LatencyFront([route, route], [], DELAY)


# --- TCP ----------------------------------------------------------------------------------------


@scenario
async def tcp_round_trip_costs_two_one_way_delays() -> None:
    listen = free_address()
    async with tcp_server() as target, front([TcpRoute(listen, target)]) as f:
        elapsed = await tcp_round_trip(listen)
        assert RTT <= elapsed < 0.5
        await tcp_round_trip(listen)
        assert f.accepted[listen] == 2
        await settle(lambda: f.current_connections == 0)
        assert f.current_connections == 0
        assert f.peak_connections == 1
        assert f.stats()["tcp"]["routes"][listener_key(*listen)]["accepted"] == 2


@scenario
async def tcp_zero_delay_is_plain_forwarding() -> None:
    listen = free_address()
    async with tcp_server() as target, front([TcpRoute(listen, target)], delay=0.0) as f:
        assert await tcp_round_trip(listen) < RTT
        assert f.accepted[listen] == 1


@scenario
async def tcp_large_payload_arrives_intact_and_in_order() -> None:
    """3 MB each way crosses the 1 MB write-buffer and delay-line limits, so flow control must work."""
    listen = free_address()
    payload = os.urandom(3 << 20)
    async with tcp_server() as target, front([TcpRoute(listen, target)]):
        reader, writer = await asyncio.open_connection(*listen)

        async def send() -> None:
            # Pieces that do not match the 64 KiB reads, so chunk boundaries differ on every hop.
            view = memoryview(payload)
            for start in range(0, len(payload), 50_000):
                writer.write(view[start : start + 50_000])
                await writer.drain()
            writer.write_eof()

        try:
            _, received = await asyncio.gather(send(), asyncio.wait_for(reader.read(), 20))
        finally:
            writer.close()
        assert len(received) == len(payload) + len(b"EOF:%d" % len(payload))
        assert received == payload + b"EOF:%d" % len(payload)


@scenario
async def tcp_half_close_is_forwarded_both_ways() -> None:
    """Client EOF reaches the server; the server's reply and its close come back, in that order."""
    listen = free_address()
    async with tcp_server() as target, front([TcpRoute(listen, target)]) as f:
        reader, writer = await asyncio.open_connection(*listen)
        try:
            writer.write(b"hello")
            began = time.monotonic()
            writer.write_eof()
            assert await read_all(reader) == b"helloEOF:5"
            assert time.monotonic() - began >= RTT
            assert reader.at_eof()
        finally:
            writer.close()
        await settle(lambda: f.current_connections == 0)
        assert f.current_connections == 0


@scenario
async def tcp_reset_stays_a_reset() -> None:
    listen = free_address()
    async with tcp_server(reset_session) as target, front([TcpRoute(listen, target)]):
        reader, writer = await asyncio.open_connection(*listen)
        try:
            writer.write(b"boom")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()


@scenario
async def tcp_target_down_closes_the_client_promptly() -> None:
    listen, nobody = free_address(), free_address()
    async with front([TcpRoute(listen, nobody)]) as f:
        reader, writer = await asyncio.open_connection(*listen)
        try:
            began = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 2) == b""
            assert time.monotonic() - began < 1
        finally:
            writer.close()
        assert f.accepted[listen] == 1
        assert f.connect_failures[listen] == 1


@scenario
async def many_concurrent_sessions_hide_latency() -> None:
    sessions = 200
    listen = free_address()
    async with tcp_server() as target, front([TcpRoute(listen, target)]) as f:
        began = time.monotonic()
        results = await asyncio.gather(*(tcp_round_trip(listen, b"n%d" % i) for i in range(sessions)))
        elapsed = time.monotonic() - began
        assert all(r >= RTT for r in results)
        # Serially this would take sessions x 2 round trips = 20 s.
        assert elapsed < 3.0
        assert f.accepted[listen] == sessions
        assert f.peak_connections > sessions // 2
        await settle(lambda: f.current_connections == 0)
        assert f.current_connections == 0


# --- UDP ----------------------------------------------------------------------------------------


@scenario
async def udp_is_delayed_and_replies_go_to_their_own_client() -> None:
    listen = free_address()
    async with udp_server() as target, front(udp=[UdpRoute(listen, target)]) as f:
        async with udp_client(listen) as (a_tx, a), udp_client(listen) as (b_tx, b):
            began = time.monotonic()
            for i in range(3):
                a_tx.sendto(b"a%d" % i)
                b_tx.sendto(b"b%d" % i)
            got_a = [await asyncio.wait_for(a.received.get(), 2) for _ in range(3)]
            elapsed = time.monotonic() - began
            got_b = [await asyncio.wait_for(b.received.get(), 2) for _ in range(3)]
            assert RTT <= elapsed < 0.5
            assert sorted(got_a) == [b"echo:a0", b"echo:a1", b"echo:a2"]
            assert sorted(got_b) == [b"echo:b0", b"echo:b1", b"echo:b2"]
            await asyncio.sleep(RTT)
            assert a.received.empty() and b.received.empty()
        assert f.udp_to_target[listen] == 6
        assert f.udp_to_client[listen] == 6
        stats = f.stats()["udp"]
        assert stats["upstreams_opened"] == 2
        assert stats["dropped"] == 0


@scenario
async def udp_zero_delay_is_plain_forwarding() -> None:
    listen = free_address()
    async with udp_server() as target, front(udp=[UdpRoute(listen, target)], delay=0.0) as f:
        async with udp_client(listen) as (tx, client):
            began = time.monotonic()
            tx.sendto(b"q")
            assert await asyncio.wait_for(client.received.get(), 2) == b"echo:q"
            assert time.monotonic() - began < RTT
        assert f.udp_to_client[listen] == 1


@scenario
async def udp_upstreams_are_capped_and_swept() -> None:
    listen = free_address()
    kw: dict[str, Any] = {"max_udp_upstreams": 2, "udp_idle_timeout": 0.1, "udp_sweep_interval": 0.05}
    async with udp_server() as target, front(udp=[UdpRoute(listen, target)], delay=0.0, **kw) as f:
        async with udp_client(listen) as (t1, c1), udp_client(listen) as (t2, c2), udp_client(listen) as (t3, c3):
            for tx, client in ((t1, c1), (t2, c2), (t3, c3)):
                tx.sendto(b"x")
                assert await asyncio.wait_for(client.received.get(), 2) == b"echo:x"
        stats = f.stats()["udp"]
        assert stats["upstreams_evicted"] == 1
        assert stats["peak_upstreams"] == 2
        await settle(lambda: f.stats()["udp"]["upstreams_open"] == 0)
        assert f.stats()["udp"]["upstreams_open"] == 0


# --- the child process --------------------------------------------------------------------------


async def test_process_wrapper_relays_tcp_and_udp(tmp_path: Path) -> None:
    tcp_listen, udp_listen = free_address(), free_address()
    async with tcp_server() as tcp_target, udp_server() as udp_target:
        proc = LatencyFrontProcess(
            [TcpRoute(tcp_listen, tcp_target)], [UdpRoute(udp_listen, udp_target)], DELAY, tmp_path
        )
        # start()/stop() block on the child; a thread keeps this loop (and the echo servers) running.
        await asyncio.to_thread(proc.start)
        try:
            assert alive(proc.pid)
            assert RTT <= await tcp_round_trip(tcp_listen) < 0.5
            async with udp_client(udp_listen) as (tx, client):
                began = time.monotonic()
                tx.sendto(b"q")
                assert await asyncio.wait_for(client.received.get(), 2) == b"echo:q"
                assert RTT <= time.monotonic() - began < 0.5
        finally:
            stats = await asyncio.to_thread(proc.stop)
    assert stats["one_way_delay"] == DELAY
    assert stats["tcp"]["accepted"] == 1
    assert stats["tcp"]["routes"][listener_key(*tcp_listen)] == {
        "target": listener_key(*tcp_target), "accepted": 1, "connect_failures": 0,
    }
    assert stats["udp"]["routes"][listener_key(*udp_listen)] == {
        "target": listener_key(*udp_target), "to_target": 1, "to_client": 1,
    }
    assert proc.stop() == stats  # a second stop (as __exit__ does) returns the same counters


def test_process_wrapper_as_context_manager(tmp_path: Path) -> None:
    """``with`` starts and stops the child; the child runs with its descriptor limit raised."""
    listen = free_address()
    with LatencyFrontProcess([], [UdpRoute(listen, free_address())], 0.0, tmp_path) as proc:
        pid = proc.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        soft, hard = next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))
        assert soft == hard
    assert not alive(pid)
    assert proc.stop()["udp"]["to_target"] == 0


def test_process_wrapper_reports_a_failed_bind(tmp_path: Path) -> None:
    listen = free_address()
    with socket.socket() as squatter:
        squatter.bind(listen)
        squatter.listen()
        proc = LatencyFrontProcess([TcpRoute(listen, free_address())], [], DELAY, tmp_path)
        with pytest.raises(RuntimeError, match="cannot bind"):
            proc.start()


def test_round_robin_front_in_a_thread_alternates_targets_and_counts_sessions(tmp_path: Path) -> None:
    """A TCP route with alternates (the load balancer of worlds' SNI tests, once worlds/relay.py): session n
    reaches target n mod k; ``with front`` runs it on its own thread; ``accepted`` counts the sessions."""
    greeters = [free_address() for _ in range(3)]

    def greeter(name: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(name)
            await writer.drain()
            writer.close()
        return greet

    async def main() -> list[bytes]:
        servers = [await asyncio.start_server(greeter(b"%d" % i), *address)
                   for i, address in enumerate(greeters)]
        listen = free_address()
        route = TcpRoute(listen, greeters[0], (greeters[1], greeters[2]))
        spec = tmp_path / "spec.json"
        write_spec_file(spec, [route], [], 0.0)
        assert read_spec_file(spec)[0] == [route]  # alternates survive the child's spec file
        front = LatencyFront([route])
        await asyncio.to_thread(front.start_in_thread)
        try:
            heard = []
            for _ in range(5):
                reader, writer = await asyncio.open_connection(*listen)
                heard.append(await reader.read())
                writer.close()
            assert front.accepted[listen] == 5
        finally:
            await asyncio.to_thread(front.stop_in_thread)
            for server in servers:
                server.close()
        return heard

    assert asyncio.run(main()) == [b"0", b"1", b"2", b"0", b"1"]
