"""A bounded, scan-wide memo of asynchronous lookups that concurrent callers share.

Used for what many domains ask about the same thing: an MX host's addresses, an MX host's TLSA
records. The first caller runs the lookup; callers arriving meanwhile await the same future; later
callers get the answer at once (no task, no shield). Failures and cancellations are not remembered:
the next caller tries again. The memo is bounded so that a long tail of one-domain hosts cannot grow
it with the input; the oldest finished entries go first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SharedLookups"]

T = TypeVar("T")


class SharedLookups(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._entries: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, key: str) -> T | None:
        """The remembered answer for ``key``, or None if there is none yet (or it failed)."""
        future = self._entries.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    async def get(self, key: str, lookup: Callable[[], Awaitable[T]]) -> T:
        answer = self.known(key)
        if answer is not None:
            return answer
        future = self._entries.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._make_room()
            self._entries[key] = future
            try:
                future.set_result(await lookup())
            except BaseException as exc:
                # Do not remember a cancellation or a bug: the next caller retries, waiters see the error.
                del self._entries[key]
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # retrieved: this caller re-raises it
                raise
        return await asyncio.shield(future)

    def _make_room(self) -> None:
        while len(self._entries) >= self._capacity:
            oldest = next(iter(self._entries))  # dicts keep insertion order
            if not self._entries[oldest].done():
                return  # never drop a lookup that others may be awaiting; it finishes soon
            del self._entries[oldest]
