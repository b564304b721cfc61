"""MTA-STS policy fetches against a policy host with hundreds of addresses where nothing listens on 443.

Real DNS (a loopback server answering 200 A records, over TCP after truncation) and real connection
attempts, counted on the wire by a packet socket on ``lo`` (``worlds.sniff``).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from scanner.config import DnsConfig
from scanner.dns.resolver import DnsResolver
from scanner.net.addresses import AddressPolicy
from scanner.policy.mta_sts import StsError
from scanner.policy.sts_fetch import MAX_FETCH_ADDRESSES, StsFetch, fetch_policy
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, pick_loopback_block
from worlds.sniff import SynCounter

HOSTS = 200


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[FaultyDnsServer, str]]:
    dns_block, web_block = pick_loopback_block(), pick_loopback_block()
    records = [Record("mta-sts", "A", f"{web_block}.{i}") for i in range(1, HOSTS + 1)]
    address = f"{dns_block}.1"
    with FaultyDnsServer({"many.test": records}, address, free_port(address)) as server:
        yield server, web_block


async def test_a_fetch_tries_few_addresses_once_each_under_their_own_slots(world: tuple[FaultyDnsServer, str]) -> None:
    server, web_block = world
    slots: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def slot(address: str) -> AsyncIterator[None]:
        slots[address] += 1
        yield

    resolver = DnsResolver(DnsConfig(servers=(server.resolver,), timeout=2, tries=2))
    try:
        with SynCounter(web_block, 443) as syns:
            result = await fetch_policy("many.test", StsFetch(resolver=resolver,
                                                              policy=AddressPolicy(allow_private=True), timeout=20,
                                                              slot=slot))
    finally:
        await resolver.close()
    attempts = syns.counts
    # Before the fix: 20,100 attempts (address N tried N times) and one slot, for the first address only.
    assert result.error is StsError.FETCH_CONNECT, result
    assert sum(attempts.values()) == MAX_FETCH_ADDRESSES, attempts
    assert set(attempts.values()) == {1}
    assert dict(slots) == dict(attempts)
    assert result.addresses == tuple(attempts)
