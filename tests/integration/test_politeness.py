"""Politeness measured from the server side: per-address and per-/24 concurrency, back-off on 421.

A small SMTP server of the test's own counts concurrent connections across all its listeners (twenty
addresses in one /24, each answering slowly) and records when a throttling listener (421) is contacted.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.cli import main
from worlds.dns import NsdServer, Zone
from worlds.ports import loopback_host, pick_loopback_block

pytestmark = pytest.mark.slow
SLOW_ADDRESSES = 20
PREFIX_LIMIT = 3


@dataclass
class CountingServer:
    """Listeners in one /24 that answer after a pause, plus one that always says 421."""

    block: str
    current: int = 0
    peak: int = 0
    per_address_peak: dict[str, int] = field(default_factory=dict)
    throttle_contacts: list[float] = field(default_factory=list)
    _per_address: dict[str, int] = field(default_factory=dict)

    async def slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        self.current += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self.peak = max(self.peak, self.current)
        self.per_address_peak[address] = max(self.per_address_peak.get(address, 0), self._per_address[address])
        try:
            await asyncio.sleep(0.3)  # a slow greeting keeps connections open long enough to overlap
            writer.write(b"220 slow.test ESMTP\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    break
                writer.write(b"250 slow.test\r\n")  # no STARTTLS offered
            await writer.drain()
        finally:
            self.current -= 1
            self._per_address[address] -= 1
            writer.close()

    async def throttle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.throttle_contacts.append(time.monotonic())
        writer.write(b"421 4.7.0 too many connections, slow down\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CountingServer, NsdServer, Path]]:
    block = pick_loopback_block()
    counting = CountingServer(block)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    servers: list[asyncio.Server] = []

    async def start() -> None:
        for i in range(SLOW_ADDRESSES):
            servers.append(await asyncio.start_server(counting.slow, loopback_host(block, 10 + i), 25))
        servers.append(await asyncio.start_server(counting.throttle, loopback_host(block, 100), 25))
        ready.set()

    async def close() -> None:
        for srv in servers:
            srv.close()
            await srv.wait_closed()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    zone = Zone("polite.test", [])
    lines = []
    for i in range(SLOW_ADDRESSES):
        zone.mx(f"d{i}.polite.test.", 10, f"mx{i}.polite.test.").a(f"mx{i}.polite.test.", loopback_host(block, 10 + i))
        lines.append(f"d{i}.polite.test")
    zone.mx("busy.polite.test.", 10, "mx-busy.polite.test.").a("mx-busy.polite.test.", loopback_host(block, 100))
    lines.append("busy.polite.test")
    workdir = tmp_path_factory.mktemp("polite")
    (workdir / "domains.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    nsd = NsdServer(workdir / "nsd", [zone], address=loopback_host(block, 53), port=53)
    nsd.start()
    try:
        yield counting, nsd, workdir
    finally:
        nsd.stop()
        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_per_prefix_and_per_address_limits_and_backoff(server: tuple[CountingServer, NsdServer, Path]) -> None:
    counting, nsd, workdir = server
    out = workdir / "out"
    code = main(["scan", str(workdir / "domains.txt"), "-o", str(out), "--resolver", nsd.resolver,
                 "--allow-private", "--no-progress", "--ehlo-name", "polite-scanner.test", "--no-policy",
                 "--concurrency", "50", "--per-ip-interval", "0",
                 "--per-prefix-concurrency", str(PREFIX_LIMIT), "--throttle-retry", "0.4", "0.4"])
    assert code == 0
    # Across the /24, never more than the cap at once — and the cap is used (the scan is not serial).
    assert counting.peak == PREFIX_LIMIT
    assert max(counting.per_address_peak.values()) == 1
    # The throttling server was tried three times (two back-offs), each at least the delay apart.
    contacts = counting.throttle_contacts
    assert len(contacts) == 3
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(contacts))
    probes = {r["mx_hosts"][0]: r for r in pq.read_table(out / "probes").to_pylist()}
    busy = probes["mx-busy.polite.test"]
    assert (busy["status"], busy["failure_class"], busy["attempts"]) == ("throttled", "smtp_421", 3)
    domains = {r["domain"]: r for r in pq.read_table(out / "domains").to_pylist()}
    assert domains["busy.polite.test"]["starttls"] == "incomplete"  # never "none"
    assert domains["d0.polite.test"]["starttls"] == "none"  # these really offer no STARTTLS
