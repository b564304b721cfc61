"""Who does what in a scan on several workers: pure functions of a name, an address and the worker count.

Every process of the cluster must agree on these without asking anyone, so they use a stable hash
(BLAKE2b), never Python's ``hash`` (salted per process).

- A domain goes to ``worker_of_domain``: every line of one domain lands on one worker, whose
  ``SeenDomains`` then sees its duplicates. An invalid line (no domain) goes by its line number.
- An address is owned by ``owner_of_address``, chosen by its /24 (IPv4) or /48 (IPv6): the owner runs
  every connection to it, so the per-address and per-prefix politeness limits stay in one process.
- Worker ``w`` numbers its output segments from ``segment_base(w)`` (one range per worker, disjoint
  from the single-process range that the driver's own run rows use), so part file names never collide.
"""

from __future__ import annotations

import dataclasses
import hashlib

from scanner.config import ScanConfig
from scanner.net.limits import prefix_of
from scanner.records import InputLine

__all__ = [
    "SEGMENT_STRIDE",
    "owner_of_address",
    "segment_base",
    "segment_range",
    "split_count",
    "worker_config",
    "worker_of_domain",
    "worker_of_line",
]

# Segments per worker range: at 200,000 rows per segment, far more rows than any scan writes.
SEGMENT_STRIDE = 100_000_000


def _bucket(text: str, workers: int) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


def worker_of_domain(domain: str, workers: int) -> int:
    return _bucket(domain, workers)


def worker_of_line(line: InputLine, workers: int) -> int:
    """The worker of an input line: by its domain, or by its line number when it has none."""
    return _bucket(line.domain, workers) if line.domain is not None else line.line_no % workers


def owner_of_address(address: str, workers: int) -> int:
    """The worker that runs every connection to ``address``: by its /24 or /48 (``probing.prefix_of``)."""
    return _bucket(prefix_of(address), workers)


def segment_base(worker: int) -> int:
    return (worker + 1) * SEGMENT_STRIDE


def segment_range(worker: int) -> range:
    return range(segment_base(worker), segment_base(worker) + SEGMENT_STRIDE)


def split_count(total: int, workers: int, worker: int) -> int:
    """Worker ``worker``'s share of ``total``: the shares of all workers sum to ``total`` exactly."""
    return total // workers + (1 if worker < total % workers else 0)


def worker_config(config: ScanConfig, workers: int, worker: int) -> ScanConfig:
    """The config one worker runs with: the global connection cap, the DNS rate and the DNS queries and
    domains in flight split so that the sums over all workers equal the configured values (per-address
    and per-prefix limits need no split: each address has one owner)."""
    probe = dataclasses.replace(
        config.probe,
        max_connections=split_count(config.probe.max_connections, workers, worker),
        workers=max(1, split_count(config.probe.workers, workers, worker)),
    )
    # Queries in flight too: the resolver carries the sum (two workers with the full concurrency each
    # doubled the load on the benchmark's nsd, and DNS timeouts followed).
    dns = dataclasses.replace(config.dns, qps=config.dns.qps / workers,
                              concurrency=max(1, split_count(config.dns.concurrency, workers, worker)),
                              workers=max(1, split_count(config.dns.workers, workers, worker)))
    return dataclasses.replace(config, probe=probe, dns=dns)
