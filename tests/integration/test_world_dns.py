"""Integration tests for the loopback DNS worlds (worlds.dns, worlds.ports).

They start real servers (NSD and the dnslib FaultyDnsServer) on a randomly
picked 127.A.B block and query them with aiodns, the resolver the scanner
itself uses, so they also pin down how aiodns 4 / pycares 5 report each DNS
outcome.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiodns
import pycares
import pytest
from dnslib import DNSRecord

from worlds.dns import (
    Behaviour,
    BehaviourSpec,
    FaultyDnsServer,
    NsdServer,
    NsdStartError,
    Record,
    Zone,
    tcp_query,
    txt_rdata,
    write_zone_file,
)
from worlds.ports import free_port, loopback_host, pick_loopback_block

pytestmark = pytest.mark.timeout(120)

LONG_TXT = "v=TLSRPTv1; rua=mailto:" + "r" * 300 + "@example.test"
TLSA_DATA = bytes(range(32))
ODD_TXT = 'say "hi" \\ café; a=b'


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


async def lookup(resolver: str, name: str, qtype: str, *, timeout: float = 2.0) -> pycares.DNSResult:
    async with aiodns.DNSResolver(nameservers=[resolver], timeout=timeout, tries=1) as res:
        return await res.query_dns(name, qtype)


async def lookup_errno(resolver: str, name: str, qtype: str, *, timeout: float = 2.0) -> int:
    with pytest.raises(aiodns.error.DNSError) as info:
        await lookup(resolver, name, qtype, timeout=timeout)
    errno: int = info.value.args[0]
    return errno


def answer_data(result: pycares.DNSResult, rtype: int) -> list[Any]:
    return [rr.data for rr in result.answer if rr.type == rtype]


def live_group_members(pgid: int) -> list[int]:
    """Non-zombie processes of group ``pgid``, read independently via ps."""
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid, stat in (line.split() for line in out.splitlines()) if not stat.startswith("Z")]


# --------------------------------------------------------------------------
# fixtures: every server is stopped in a finally, even when a test fails
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def block() -> str:
    return pick_loopback_block()


def example_zone(block: str) -> Zone:
    return (
        Zone("example.test")
        .mx("@", 10, "mx1")
        .mx("@", 20, "mx2.example.test.")
        .a("mx1", loopback_host(block, 25))
        .aaaa("mx1", "::1")
        .a("mx2", loopback_host(block, 26))
        .cname("alias", "mx1")
        .txt("_smtp._tls", LONG_TXT)
        .txt("quoted", ODD_TXT)
        .tlsa("_25._tcp.mx1", 3, 1, 1, TLSA_DATA)
    )


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory, block: str) -> Iterator[NsdServer]:
    server = NsdServer(
        tmp_path_factory.mktemp("nsd"),
        [example_zone(block), Zone("nullmx.test").mx("@", 0, ".")],
        address=loopback_host(block, 1),
        port=53,
        broken_zones=["broken.test"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


FAULTY_MAP: dict[str, BehaviourSpec] = {
    "servfail.test": Behaviour.SERVFAIL,
    "timeout.test": "timeout",
    "refused.test": "refused",
    "nodata.test": "nodata",
    "records.test": [
        Record("@", "MX", "5 mx.records.test."),
        Record("mx", "A", "127.0.0.7"),
        Record("@", "A", "127.0.0.8"),
    ],
    "alias.records.test": [Record("@", "CNAME", "mx.records.test.")],
    # 8 x 250-octet TXT strings: ~2 KB, above c-ares' EDNS size, so the UDP
    # answer is truncated and the resolver must retry over TCP.
    "big.test": [Record("@", "TXT", txt_rdata(f"{i}" * 250)) for i in range(8)],
}


@pytest.fixture(scope="module")
def faulty(block: str) -> Iterator[FaultyDnsServer]:
    host = loopback_host(block, 2)
    # A non-53 port on purpose: this also proves aiodns honours "ip:port".
    server = FaultyDnsServer(FAULTY_MAP, address=host, port=free_port(host))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------


def test_pick_loopback_block_is_reproducible_and_free() -> None:
    first = pick_loopback_block(seed=1234)
    assert first == pick_loopback_block(seed=1234)
    a, b = (int(x) for x in first.split(".")[1:])
    assert first.startswith("127.") and 64 <= a <= 127 and 0 <= b <= 255
    host = loopback_host(first, 1)
    for kind, port in ((socket.SOCK_STREAM, 25), (socket.SOCK_STREAM, 53), (socket.SOCK_DGRAM, 53)):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((host, port))


def test_pick_loopback_block_skips_a_busy_block() -> None:
    busy = pick_loopback_block(seed=99)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((loopback_host(busy, 1), 53))
        assert pick_loopback_block(seed=99) != busy


def test_free_port_is_free_for_tcp_and_udp(block: str) -> None:
    host = loopback_host(block, 3)
    port = free_port(host)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind((host, port))
        udp.bind((host, port))


# --------------------------------------------------------------------------
# NSD
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_mx_a_aaaa(nsd: NsdServer, block: str) -> None:
    result = await lookup(nsd.resolver, "example.test", "MX")
    mx = sorted((d.priority, d.exchange) for d in answer_data(result, pycares.QUERY_TYPE_MX))
    assert mx == [(10, "mx1.example.test"), (20, "mx2.example.test")]

    result = await lookup(nsd.resolver, "mx1.example.test", "A")
    assert [d.addr for d in answer_data(result, pycares.QUERY_TYPE_A)] == [loopback_host(block, 25)]
    result = await lookup(nsd.resolver, "mx1.example.test", "AAAA")
    assert [d.addr for d in answer_data(result, pycares.QUERY_TYPE_AAAA)] == ["::1"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_cname_is_followed_in_the_answer(nsd: NsdServer, block: str) -> None:
    result = await lookup(nsd.resolver, "alias.example.test", "A")
    cnames = [d.cname for d in answer_data(result, pycares.QUERY_TYPE_CNAME)]
    addrs = [d.addr for d in answer_data(result, pycares.QUERY_TYPE_A)]
    assert cnames == ["mx1.example.test"]
    assert addrs == [loopback_host(block, 25)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_long_txt_and_tlsa(nsd: NsdServer) -> None:
    result = await lookup(nsd.resolver, "_smtp._tls.example.test", "TXT")
    # A >255-octet TXT is several character-strings in one RR; pycares
    # hands them back concatenated.
    assert [d.data for d in answer_data(result, pycares.QUERY_TYPE_TXT)] == [LONG_TXT.encode()]
    # Quotes, backslashes and UTF-8 octets survive txt_rdata's escaping.
    result = await lookup(nsd.resolver, "quoted.example.test", "TXT")
    assert [d.data for d in answer_data(result, pycares.QUERY_TYPE_TXT)] == [ODD_TXT.encode()]

    # aiodns 4.0.4's query_dns() has no "TLSA" (pycares has the type), so
    # the TLSA record is checked with a plain TCP query.
    reply = tcp_query(nsd.address, nsd.port, "_25._tcp.mx1.example.test", "TLSA")
    assert [
        (rr.rdata.cert_usage, rr.rdata.selector, rr.rdata.matching_type, rr.rdata.cert_data) for rr in reply.rr
    ] == [(3, 1, 1, TLSA_DATA)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_nxdomain_nodata_refused(nsd: NsdServer) -> None:
    assert await lookup_errno(nsd.resolver, "nope.example.test", "MX") == pycares.errno.ARES_ENOTFOUND
    # The name exists (it has A/AAAA) but has no MX: NODATA (RFC 2308 2.2).
    assert await lookup_errno(nsd.resolver, "mx1.example.test", "MX") == pycares.errno.ARES_ENODATA
    # NSD is authoritative only: a name outside its zones is refused.
    assert await lookup_errno(nsd.resolver, "example.invalid", "A") == pycares.errno.ARES_EREFUSED


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_null_mx(nsd: NsdServer) -> None:
    result = await lookup(nsd.resolver, "nullmx.test", "MX")
    # RFC 7505: "MX 0 ." -- pycares renders the root exchange as "".
    assert [(d.priority, d.exchange) for d in answer_data(result, pycares.QUERY_TYPE_MX)] == [(0, "")]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_nsd_broken_zone_servfails(nsd: NsdServer) -> None:
    for name, qtype in (("broken.test", "MX"), ("mx.broken.test", "A"), ("deep.x.broken.test", "TXT")):
        assert await lookup_errno(nsd.resolver, name, qtype) == pycares.errno.ARES_ESERVFAIL
    # ...while the healthy zone on the same server keeps answering.
    assert (await lookup(nsd.resolver, "example.test", "MX")).answer


@pytest.mark.slow
def test_nsd_answers_over_tcp(nsd: NsdServer) -> None:
    reply = tcp_query(nsd.address, nsd.port, "example.test", "MX")
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["10 mx1.example.test.", "20 mx2.example.test."]


@pytest.mark.slow
def test_nsd_large_streamed_zone_starts_and_answers(tmp_path: Path, block: str) -> None:
    count = 100_000

    def generated() -> Iterator[Record]:
        for i in range(count):
            yield Record(f"d{i}", "MX", f"10 mx{i % 100}")
        for j in range(100):
            yield Record(f"mx{j}", "A", loopback_host(block, 100 + j))

    began = time.perf_counter()
    zone_file = write_zone_file(tmp_path / "big.zone", "big.test", generated())
    write_seconds = time.perf_counter() - began
    with zone_file.path.open() as lines:
        assert sum(1 for _ in lines) == count + 100 + 4  # + $ORIGIN, $TTL, SOA, NS

    with NsdServer(tmp_path / "nsd", [zone_file], address=loopback_host(block, 3), port=53) as server:
        reply = tcp_query(server.address, server.port, f"d{count - 1}.big.test", "MX")
        assert [str(rr.rdata) for rr in reply.rr] == ["10 mx99.big.test."]
        assert server.startup_seconds is not None
        print(f"\n100k-name zone: write {write_seconds:.2f}s, nsd start-up {server.startup_seconds:.2f}s")


@pytest.mark.slow
def test_nsd_stop_leaves_no_process(tmp_path: Path, block: str) -> None:
    server = NsdServer(tmp_path, [Zone("a.test").a("@", "127.0.0.1")], address=loopback_host(block, 4))
    with server:
        pgid = server.pid
        assert pgid is not None
        # NSD forks: the main process plus its server (and xfrd) children.
        assert len(live_group_members(pgid)) >= 2
    assert live_group_members(pgid) == []
    assert server.pid is None
    server.stop()  # idempotent
    # The sockets are released: the same address and port can serve again.
    with NsdServer(tmp_path / "again", [Zone("a.test")], address=loopback_host(block, 4)) as again:
        assert again.running


@pytest.mark.slow
def test_nsd_start_failure_reports_nsd_output(tmp_path: Path, block: str) -> None:
    host = loopback_host(block, 5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((host, 53))
        server = NsdServer(tmp_path / "busy", [Zone("a.test")], address=host)
        with pytest.raises(NsdStartError, match="Address already in use"):
            server.start()
        assert server.pid is None


@pytest.mark.slow
def test_nsd_zone_with_errors_is_not_silently_served(tmp_path: Path, block: str) -> None:
    # NSD starts anyway and SERVFAILs the zone; start() must refuse that.
    bad = Zone("a.test").add("x", "MX", "not-a-number mx")
    server = NsdServer(tmp_path, [bad], address=loopback_host(block, 6))
    with pytest.raises(NsdStartError, match=r"zone a\.test\. did not load"):
        server.start()
    assert server.pid is None


def test_nsd_rejects_zone_both_good_and_broken(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both served and broken"):
        NsdServer(tmp_path, [Zone("a.test")], broken_zones=["A.test."])


# --------------------------------------------------------------------------
# FaultyDnsServer
# --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aiodns_honours_ip_port_nameserver(faulty: FaultyDnsServer) -> None:
    assert faulty.port != 53
    before = len(faulty.queries)
    result = await lookup(faulty.resolver, "records.test", "MX")
    assert [(d.priority, d.exchange) for d in answer_data(result, pycares.QUERY_TYPE_MX)] == [(5, "mx.records.test")]
    assert faulty.queries[before:][0].name == "records.test."


@pytest.mark.asyncio
async def test_faulty_rcodes(faulty: FaultyDnsServer) -> None:
    assert await lookup_errno(faulty.resolver, "servfail.test", "MX") == pycares.errno.ARES_ESERVFAIL
    assert await lookup_errno(faulty.resolver, "refused.test", "MX") == pycares.errno.ARES_EREFUSED
    assert await lookup_errno(faulty.resolver, "nodata.test", "MX") == pycares.errno.ARES_ENODATA
    # Names not in the map get the default behaviour, NXDOMAIN.
    assert await lookup_errno(faulty.resolver, "unknown.test", "MX") == pycares.errno.ARES_ENOTFOUND


@pytest.mark.asyncio
async def test_faulty_timeout_never_answers(faulty: FaultyDnsServer) -> None:
    before = len(faulty.queries)
    began = time.monotonic()
    errno = await lookup_errno(faulty.resolver, "timeout.test", "A", timeout=0.3)
    assert errno == pycares.errno.ARES_ETIMEOUT
    assert time.monotonic() - began >= 0.25
    # The query did arrive: the silence is the server's doing.
    assert any(q.name == "timeout.test." for q in faulty.queries[before:])


def test_faulty_timeout_over_tcp(faulty: FaultyDnsServer) -> None:
    with socket.create_connection((faulty.address, faulty.port), timeout=0.5) as sock:
        payload = DNSRecord.question("timeout.test", "A").pack()
        sock.sendall(struct.pack("!H", len(payload)) + payload)
        with pytest.raises(TimeoutError):
            sock.recv(2)


@pytest.mark.asyncio
async def test_faulty_records_filter_by_type(faulty: FaultyDnsServer) -> None:
    result = await lookup(faulty.resolver, "records.test", "A")
    assert [d.addr for d in answer_data(result, pycares.QUERY_TYPE_A)] == ["127.0.0.8"]
    assert answer_data(result, pycares.QUERY_TYPE_MX) == []
    # A listed name without records of the asked type: NODATA.
    assert await lookup_errno(faulty.resolver, "records.test", "AAAA") == pycares.errno.ARES_ENODATA
    # Records below the key answer for their own names.
    result = await lookup(faulty.resolver, "mx.records.test", "A")
    assert [d.addr for d in answer_data(result, pycares.QUERY_TYPE_A)] == ["127.0.0.7"]
    result = await lookup(faulty.resolver, "alias.records.test", "MX")
    assert [d.cname for d in answer_data(result, pycares.QUERY_TYPE_CNAME)] == ["mx.records.test"]


@pytest.mark.asyncio
async def test_faulty_truncates_large_udp_answer_and_serves_tcp(faulty: FaultyDnsServer) -> None:
    before = len(faulty.queries)
    result = await lookup(faulty.resolver, "big.test", "TXT")
    assert sorted(d.data for d in answer_data(result, pycares.QUERY_TYPE_TXT)) == [
        f"{i}".encode() * 250 for i in range(8)
    ]
    transports = [q.transport for q in faulty.queries[before:] if q.name == "big.test."]
    assert transports == ["udp", "tcp"]


def test_faulty_rejects_bad_records_at_construction() -> None:
    with pytest.raises(ValueError, match="tuple with 4 elements"):
        FaultyDnsServer({"x.test": [Record("@", "A", "1.2.3")]}, address="127.0.0.1", port=1)
    with pytest.raises(ValueError, match="both records and behaviour"):
        FaultyDnsServer(
            {"x.test": [Record("mx", "A", "127.0.0.1")], "mx.x.test": "servfail"},
            address="127.0.0.1",
            port=1,
        )


def test_faulty_stop_releases_ports(block: str) -> None:
    host = loopback_host(block, 7)
    port = free_port(host)
    server = FaultyDnsServer({"timeout.test": "timeout"}, address=host, port=port)
    server.start()
    try:
        with socket.create_connection((host, port), timeout=2.0) as client:
            payload = DNSRecord.question("timeout.test", "A").pack()
            client.sendall(struct.pack("!H", len(payload)) + payload)
            time.sleep(0.05)
            # A client still waiting on an unanswered TCP query must not keep
            # the server from stopping; it sees the connection close instead.
            server.stop()
            assert client.recv(2) == b""
    finally:
        server.stop()
    # Both sockets are closed: the port can be bound again at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, port))
    again = FaultyDnsServer({}, address=host, port=port)
    again.start()
    again.stop()
    again.stop()  # idempotent


def test_faulty_start_fails_cleanly_when_port_busy(block: str) -> None:
    host = loopback_host(block, 8)
    port = free_port(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((host, port))
        server = FaultyDnsServer({}, address=host, port=port)
        with pytest.raises(OSError, match="in use"):
            server.start()
    server.stop()  # nothing left running; still safe
