"""A worker's view of the addresses other workers own: their probe summaries, asked in batches.

A domain's DNS names (MX host, address) pairs; for an address owned by another worker the pair goes
into that owner's next batch, sent after ``GATHER_SECONDS`` or at ``MAX_BATCH`` pairs (an actor call
costs about half a millisecond: one per pair would cost more than the domain). The owner answers each
pair with the address's probe summary and the host's view of it (its SNI session, scanner.sni) as soon
as they exist, and stamps the call's answers with its life and a sequence number (``Stamp``): the rows
behind them are queued in its journal but perhaps not committed yet. The asking worker writes a domain's
rows only once each owner it used says its commits have reached the stamp (scanner.cluster.worker), so
a domain row committed here never refers to a probe that a crash of the owner could still lose, and no
owner commits more often because others ask. Answers are cached (bounded, scanner.probe_cache): a
provider's address asked by thousands of domains costs one request per worker.

The connection slots of other owners (an MTA-STS fetch to an address owned elsewhere) are leased from
the owner for the fetch's duration, so every connection to an address counts against one limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from scanner.probe_cache import SummaryCache
from scanner.records import ProbeSummary, link_key, probe_id

__all__ = ["GATHER_SECONDS", "MAX_BATCH", "Answers", "Ask", "RemoteProbes", "Stamp", "Triple"]

_log = logging.getLogger(__name__)

GATHER_SECONDS = 0.005
MAX_BATCH = 512

# (address, host the domain asked the probe for, host whose view is wanted)
Triple = tuple[str, str, str]
Answer = tuple[ProbeSummary, ProbeSummary]  # (the address's probe summary, the host's view of it)
# (the owner's life, its barrier number): the answers are committed once the owner's commits reach it
Stamp = tuple[str, int]
Answers = tuple[list[Answer], Stamp]
Ask = Callable[[int, list[Triple]], Awaitable[Answers]]
Lease = Callable[[int, str], Awaitable[int]]
Release = Callable[[int, int], None]


@dataclass(slots=True)
class _Batch:
    triples: list[Triple] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class RemoteProbes:
    """Probe summaries of addresses owned by other workers (see the module's docstring)."""

    def __init__(self, ask: Ask, lease: Lease, release: Release, owner_of: Callable[[str], int], port: int) -> None:
        self._ask = ask
        self._lease = lease
        self._release = release
        self._owner_of = owner_of
        self._port = port
        self._cache: SummaryCache | None = None
        self._summaries: dict[str, asyncio.Future[ProbeSummary]] = {}  # by probe id, while asked
        self._views: dict[str, asyncio.Future[ProbeSummary]] = {}  # by link key, while asked
        self._batches: dict[int, _Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # actor calls made
        self.pairs = 0  # (address, host) pairs asked
        self.stamps: dict[int, Stamp] = {}  # owner -> the stamp of its latest answer
        self.confirmed: dict[int, Stamp] = {}  # owner -> the latest stamp it confirmed committed
        self.on_owner_restart: Callable[[int], None] = lambda owner: None

    def attach(self, cache: SummaryCache) -> None:
        self._cache = cache

    def request(self, address: str, first_host: str, host: str) -> asyncio.Future[ProbeSummary]:
        """The probe summary of ``address`` (asked under ``first_host``, the domain's first name for it);
        the view of ``host`` is fetched in the same answer (``view``)."""
        assert self._cache is not None
        pid = probe_id(address, self._port)
        key = link_key(pid, host)
        loop = asyncio.get_running_loop()
        summary = self._cache.get(pid)
        view = self._cache.get(key)
        # An unsettled view (a not_checked that the owner may turn into a session at the name's next
        # ask, scanner.sni.decide_name) serves the one domain it was asked for; every later ask goes to
        # the owner, which counts the asks.
        if summary is not None and view is not None and view.view_settled:
            done = loop.create_future()
            done.set_result(summary)
            return done
        pending = self._summaries.get(pid)
        if key in self._views:
            # This view is on its way (its answer brings the summary too). Its future must stay the one
            # in ``_views``: a domain may be awaiting it already (``view``), and a new one in its place
            # would leave that domain waiting forever.
            if pending is not None:
                return pending
            if summary is not None:  # an answer for another name of the address brought it
                done = loop.create_future()
                done.set_result(summary)
                return done
            pending = self._summaries[pid] = loop.create_future()  # not kept (cache): ask again
        else:
            if pending is None:
                pending = self._summaries[pid] = loop.create_future()
            self._views[key] = loop.create_future()
        self._add(self._owner_of(address), (address, first_host, host))
        return pending

    async def view(self, address: str, host: str) -> ProbeSummary:
        """``host``'s view of ``address``, asked by ``request`` before."""
        assert self._cache is not None
        key = link_key(probe_id(address, self._port), host)
        pending = self._views.get(key)
        if pending is not None:
            return await pending
        cached = self._cache.get(key)
        if cached is None:  # evicted between request and view: ask again
            await self.request(address, host, host)
            return await self.view(address, host)
        return cached

    def _add(self, owner: int, triple: Triple) -> None:
        batch = self._batches.setdefault(owner, _Batch())
        batch.triples.append(triple)
        if len(batch.triples) >= MAX_BATCH:
            self._send(owner)
        elif batch.flusher is None:
            batch.flusher = self._spawn(self._flush_later(owner))

    async def _flush_later(self, owner: int) -> None:
        await asyncio.sleep(GATHER_SECONDS)
        batch = self._batches.get(owner)
        if batch is not None:
            batch.flusher = None
            self._send(owner)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, owner: int) -> None:
        batch = self._batches.pop(owner)
        if batch.flusher is not None:
            batch.flusher.cancel()
        self._spawn(self._call(owner, batch.triples))

    async def _call(self, owner: int, triples: list[Triple]) -> None:
        self.calls += 1
        self.pairs += len(triples)
        try:
            answers, stamp = await self._ask(owner, triples)
        except Exception as exc:  # the owner failed for good: the domains waiting record it (internal_error)
            self._fail(triples, exc)
            return
        self._take_stamp(owner, stamp)  # before the answers wake anyone: a domain's rows wait for the stamp
        self._answer(triples, answers)

    def _take_stamp(self, owner: int, stamp: Stamp) -> None:
        previous = self.stamps.get(owner)
        if previous is not None and previous[0] != stamp[0] and self.confirmed.get(owner) != previous:
            # The owner died and restarted, and not all it answered in its earlier life is known to be
            # committed: such answers may be in the cache and in rows not written yet, so this worker
            # starts afresh (scanner.cluster.worker).
            self.on_owner_restart(owner)
        if previous is None or previous[0] != stamp[0] or stamp[1] > previous[1]:
            self.stamps[owner] = stamp

    def _answer(self, triples: Sequence[Triple], answers: Sequence[Answer]) -> None:
        assert self._cache is not None
        for (address, _first, host), (summary, view) in zip(triples, answers, strict=True):
            pid = probe_id(address, self._port)
            key = link_key(pid, host)
            self._cache.put(pid, summary)
            self._cache.put(key, view)
            pending = self._summaries.pop(pid, None)
            if pending is not None and not pending.done():
                pending.set_result(summary)
            waiting = self._views.pop(key, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(view)

    def _fail(self, triples: Sequence[Triple], exc: Exception) -> None:
        _log.error("probe owner unreachable for %d requests: %s", len(triples), exc)
        for address, _first, host in triples:
            pid = probe_id(address, self._port)
            for future in (self._summaries.pop(pid, None), self._views.pop(link_key(pid, host), None)):
                if future is not None and not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the domains awaiting it re-raise it themselves

    @asynccontextmanager
    async def slot(self, address: str) -> AsyncIterator[None]:
        """A connection slot of ``address``, leased from its owner for the duration of the block."""
        owner = self._owner_of(address)
        lease = await self._lease(owner, address)
        try:
            yield
        finally:
            self._release(owner, lease)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
