"""DNS that is slow but in time, and datagrams that are not answers, against a real loopback server.

A recursive resolver with a cold cache answers some names in one to a few seconds while most come
back in milliseconds. With ``--dns-timeout 3 --dns-tries 2`` every such answer must count: c-ares'
adaptive timeouts used to shrink the wait to about 0.25-0.5 s per try once fast answers had come in,
turning them into ``dns_timeout`` (see ``scanner.dns.transport``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.config import DnsConfig
from scanner.dns.resolver import DnsResolver
from scanner.policy.tlsa_lookup import lookup_tlsa
from scanner.status import DnsOutcome
from tests.integration.scanning import run_scan
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, pick_loopback_block

FAST = {f"f{i}.test": [Record("@", "A", "192.0.2.1"), Record("@", "MX", "10 f.mail.test.")] for i in range(300)}
DELAYS = {"s12.test": 1.2, "s18.test": 1.8, "s24.test": 2.4, "s35.test": 3.5}
SLOW = {name: [Record("@", "A", "192.0.2.2"), Record("@", "MX", "10 s.mail.test.")] for name in DELAYS}


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyDnsServer]:
    address = f"{pick_loopback_block()}.1"
    zone = {**FAST, **SLOW, "junk.test": [Record("@", "A", "192.0.2.3")], "f.mail.test": "nodata",
            "s.mail.test": "nodata"}
    junk = ["junk.test", "_25._tcp.mx.junk.test"]
    with FaultyDnsServer(zone, address, free_port(address), delays=DELAYS, junk_for=junk) as srv:
        yield srv


def sends(server: FaultyDnsServer, name: str) -> int:
    return Counter(q.name for q in server.queries)[f"{name}."]


async def test_slow_answers_within_the_configured_timeout_count(server: FaultyDnsServer) -> None:
    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=3, tries=2))
    try:
        fast = await asyncio.gather(*(resolver.query(name, "A") for name in FAST))
        assert {r.outcome for r in fast} == {DnsOutcome.ANSWER}
        slow = dict(zip(DELAYS, await asyncio.gather(*(resolver.query(name, "A") for name in DELAYS)), strict=True))
    finally:
        await resolver.close()
    # Before the fix all four were dns_timeout after about a second, each sent twice 0.5 s apart.
    assert {name: r.outcome for name, r in slow.items()} == dict.fromkeys(DELAYS, DnsOutcome.ANSWER)
    for name in ("s12.test", "s18.test", "s24.test"):
        assert sends(server, name) == 1, name  # answered within the first try: never re-sent
    # 3.5 s: re-sent after 3 s, and the answer to the first transmission (at 3.5 s) is taken.
    assert sends(server, "s35.test") == 2
    assert slow["s35.test"].elapsed_ms < 6000


async def test_a_garbage_datagram_does_not_fail_the_queries_in_flight(server: FaultyDnsServer) -> None:
    """Malformed datagrams (random bytes; random bytes under a live query ID) arrive while queries wait.

    c-ares failed every query on the socket ("Misformatted DNS reply"); they must keep waiting.
    """
    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=3, tries=1))
    try:
        waiting = [asyncio.ensure_future(resolver.query(name, "A")) for name in ("s12.test", "s18.test")]
        await asyncio.sleep(0.2)
        junk = await resolver.query("junk.test", "A")
        results = await asyncio.gather(*waiting)
    finally:
        await resolver.close()
    assert junk.outcome is DnsOutcome.ANSWER
    assert [r.outcome for r in results] == [DnsOutcome.ANSWER, DnsOutcome.ANSWER]
    assert resolver.dropped_datagrams >= 2


def test_a_scan_with_a_slow_resolver_keeps_the_configured_timeout(server: FaultyDnsServer, tmp_path: Path) -> None:
    source = tmp_path / "domains.txt"
    source.write_text("".join(f"{name}\n" for name in [*FAST, *DELAYS]), encoding="utf-8")
    out = tmp_path / "out"
    done = run_scan(source, out, server.resolver, "--allow-private", "--no-policy", "--dns-timeout", "3",
                    "--dns-tries", "2", "--enumerate", "off", "--connect-timeout", "0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(out / "domains", columns=["domain", "status"]).to_pylist()
    statuses = {row["domain"]: row["status"] for row in rows}
    # Their MX hosts have no address (NODATA), like the fast ones': the same status, never dns_timeout.
    assert {statuses[name] for name in [*DELAYS, *FAST]} == {"mx_no_address"}, statuses


async def test_a_garbage_datagram_does_not_fail_a_tlsa_lookup(server: FaultyDnsServer) -> None:
    """TLSA lookups (through the same transport, reading the AD bit) also drop junk and keep waiting."""
    lookup = await lookup_tlsa("mx.junk.test", DnsConfig(servers=(server.resolver,), timeout=3, tries=1))
    assert lookup.outcome is DnsOutcome.NXDOMAIN, lookup.detail


async def test_unanswered_queries_are_sent_tries_times_round_the_servers(tmp_path: Path) -> None:
    """Every try waits the full timeout and then goes to the next server (opening its sockets on the
    way); after the last try the query is a timeout. Many queries at once share one deadline queue."""
    names = [f"q{i}.test" for i in range(40)]
    first_address, second_address = f"{pick_loopback_block()}.1", f"{pick_loopback_block()}.1"
    silent = dict.fromkeys(names, "timeout")
    with FaultyDnsServer(silent, first_address, free_port(first_address)) as first, \
            FaultyDnsServer(silent, second_address, free_port(second_address)) as second:
        resolver = DnsResolver(DnsConfig(servers=(first.resolver, second.resolver), timeout=0.3, tries=3))
        try:
            results = await asyncio.gather(*(resolver.query(name, "A") for name in names))
        finally:
            await resolver.close()
        assert {r.outcome for r in results} == {DnsOutcome.TIMEOUT}
        assert all(r.elapsed_ms >= 900 for r in results)  # three full waits of 0.3 s each
        # Queries start on the servers in turn; each try moves to the next server.
        per_server = [Counter(q.name for q in server.queries) for server in (first, second)]
        assert [sum(c.values()) for c in per_server] == [60, 60]
        for i, name in enumerate(names):
            assert (per_server[0][f"{name}."], per_server[1][f"{name}."]) == ((2, 1) if i % 2 == 0 else (1, 2))


async def test_closing_the_resolver_ends_the_queries_in_flight(tmp_path: Path) -> None:
    """Closing while a query waits (a silent server, a long timeout) ends it as a timeout at once: its
    sockets are gone, so no answer can come and no try may be sent any more."""
    address = f"{pick_loopback_block()}.1"
    with FaultyDnsServer({"silent.test": "timeout"}, address, free_port(address)) as silent:
        resolver = DnsResolver(DnsConfig(servers=(silent.resolver,), timeout=60, tries=2))
        waiting = asyncio.ensure_future(resolver.query("silent.test", "A"))
        for _ in range(3000):  # until the server has the query
            if silent.queries:
                break
            await asyncio.sleep(0.01)
        await resolver.close()
        result = await asyncio.wait_for(waiting, 30)  # a liveness bound, far below the 120 s of the tries
    assert result.outcome is DnsOutcome.TIMEOUT
    assert len(silent.queries) == 1
