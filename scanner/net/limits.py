"""Rate and concurrency limits: a token bucket, and per-key (per-address) slots with a minimum interval.

No state is module-level: each scan owns its limiters. Per-key state is dropped as soon as a key is
idle, so memory follows the number of addresses *in flight*, not the number ever probed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["KeyedLimiter", "TokenBucket"]

# How often (in slot requests) idle per-key state is swept; amortised O(1) per request.
_SWEEP_EVERY = 1024


class TokenBucket:
    """Allows ``rate`` acquisitions per second on average, with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        # Fast path: a token is there and nobody queues for one (the usual case below the rate cap).
        if not self._lock.locked() and self._take():
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

    def __len__(self) -> int:
        return len(self._states)

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
