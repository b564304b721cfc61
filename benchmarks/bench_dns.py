"""DNS client throughput: queries per second and CPU per query against nsd on loopback.

    python -m benchmarks.bench_dns [--queries 20000] [--concurrency 500]

One zone of ``--queries`` A records served by nsd on a free loopback block; every name is asked once
through ``scanner.dns.resolver.DnsResolver`` (its own UDP transport) on uvloop, ``--concurrency``
queries in flight. Prints outcomes, wall-clock queries/s and CPU microseconds per query. The figure
is the client's (nsd answers from memory far faster); on a shared machine it is noisy: say so.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

from scanner.config import DnsConfig
from scanner.dns.resolver import DnsResolver
from worlds.dns import NsdServer, Record, write_zone_file
from worlds.ports import free_port, pick_loopback_block


async def _run(resolver_address: str, queries: int, concurrency: int) -> None:
    resolver = DnsResolver(DnsConfig(servers=(resolver_address,), timeout=3, tries=2, qps=1e9,
                                     concurrency=concurrency))
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with slots:
            return (await resolver.query(f"h{i}.bench-dns.test", "A")).outcome.value

    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = Counter(await asyncio.gather(*(one(i) for i in range(queries))))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await resolver.close()
    print(f"{dict(outcomes)}: {queries / wall:,.0f} queries/s, {cpu / queries * 1e6:.0f} us CPU per query")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        workdir = Path(tmp)
        records = (Record(f"h{i}", "A", f"192.0.2.{i % 250 + 1}") for i in range(args.queries))
        zone = write_zone_file(workdir / "bench-dns.zone", "bench-dns.test", records)
        address = f"{pick_loopback_block()}.1"
        with NsdServer(workdir / "nsd", [zone], address=address, port=free_port(address)) as nsd:
            uvloop.run(_run(nsd.resolver, args.queries, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
