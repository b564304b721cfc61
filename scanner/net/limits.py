"""Rate and concurrency limits: a token bucket, per-key slots with a minimum interval, and the scan's
politeness limiter built from them (global cap, per address, per network prefix).

No state is module-level: each scan owns its limiters. Per-key state is dropped as soon as a key is
idle, so memory follows the number of addresses *in flight*, not the number ever probed.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["KeyedLimiter", "PolitenessLimiter", "Slots", "TokenBucket", "prefix_of"]

# How often (in slot requests) idle per-key state is swept; amortised O(1) per request.
_SWEEP_EVERY = 1024


class Slots:
    """``value`` slots taken in FIFO order; a release hands its slot straight to the longest waiter.

    Does what ``asyncio.Semaphore`` does for the scan's hot limits (DNS queries in flight, domains in
    flight, the global connection cap) in O(1) per acquire and release. The standard one (Python 3.11)
    wakes a waiter by scanning its queue past the waiters already woken but not yet run; with a thousand
    queries waiting for a slot, that scan was about 3% of a scan's CPU. Here a woken waiter owns its
    slot from the moment it is handed over, so nothing is scanned twice.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"need at least one slot, not {value}")
        self._free = value
        # Invariant: a waiter that is not done only waits while no slot is free.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        return self._free

    def try_acquire(self) -> bool:
        """Take a slot if one is free now, without waiting (no coroutine: the hot paths try this first)."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Cancelled after a release handed us the slot (its result set, our task not yet run):
            # pass the slot on. A waiter cancelled before that stays queued, done, and is skipped.
            if waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it: ``_free`` does not change
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class TokenBucket:
    """Allows ``rate`` acquisitions per second on average, with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    def try_acquire(self) -> bool:
        """Take a token if one is there and nobody queues for one (the usual case below the rate cap),
        without waiting (no coroutine: the hot paths try this first)."""
        return not self._lock.locked() and self._take()

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        # The lock makes waiters queue FIFO instead of all waking and racing for the same token.
        async with self._lock:
            while True:
                if self._take():
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)  # until the next token is due

    def _take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(slots=True)
class _KeyState:
    semaphore: asyncio.Semaphore
    users: int = 0  # tasks holding or waiting for a slot
    next_start: float = 0.0  # earliest monotonic time the next connection may start
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KeyedLimiter:
    """At most ``concurrency`` holders per key, and starts at least ``interval`` seconds apart."""

    def __init__(self, concurrency: int, interval: float, clock: Callable[[], float] = time.monotonic):
        self._concurrency = concurrency
        self._interval = interval
        self._clock = clock
        self._states: dict[Hashable, _KeyState] = {}
        self._calls = 0

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep()
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState(asyncio.Semaphore(self._concurrency))
        state.users += 1
        try:
            async with state.semaphore:
                async with state.lock:  # spacing is decided one start at a time
                    delay = state.next_start - self._clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    state.next_start = self._clock() + self._interval
                yield
        finally:
            state.users -= 1

    def _sweep(self) -> None:
        """Drop keys nobody uses whose interval has elapsed: they carry no information any more."""
        now = self._clock()
        idle = [k for k, s in self._states.items() if s.users == 0 and s.next_start <= now]
        for key in idle:
            del self._states[key]


def prefix_of(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to: the unit of the per-network politeness cap."""
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False))


class PolitenessLimiter:
    """The one set of politeness limits of a scan, taken by every connection it opens to a server:
    SMTP probes, their extra handshake sessions and the MTA-STS policy fetches alike.

    ``slot(address)`` holds, in this order, the address's own slot (``per_address`` at once, starts at
    least ``interval`` seconds apart), its network prefix's slot (``per_prefix`` at once into one /24 or
    /48, see ``prefix_of``: many MX addresses of one provider share a prefix) and one of
    ``max_connections`` global slots. The address's slot comes first: waiting out its interval must not
    hold a global slot. Self-contained (no configuration, no scan state), so whoever owns a set of
    addresses, or of prefixes, can own the limiter for them.
    """

    def __init__(self, max_connections: int, per_address: int, interval: float, per_prefix: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connections = Slots(max_connections)
        self._per_address = KeyedLimiter(per_address, interval, clock)
        self._per_prefix = KeyedLimiter(per_prefix, 0.0, clock)
        self.max_connections = max_connections
        self.open = 0  # connections holding a global slot now

    @asynccontextmanager
    async def slot(self, address: str) -> AsyncIterator[None]:
        """One connection to ``address`` under every limit (``async with limiter.slot(address): ...``)."""
        async with self._per_address.slot(address), self._per_prefix.slot(prefix_of(address)), self._connections:
            self.open += 1
            try:
                yield
            finally:
                self.open -= 1
