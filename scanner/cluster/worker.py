"""One worker of a scan on a cluster: the whole pipeline on its share of the input, and the owner of
the addresses whose prefix hashes to it (scanner.cluster.shard).

``WorkerScan`` is the single-process ``Scan`` with four seams changed: lines come from the driver
(``intake``) instead of a file; addresses owned elsewhere are asked of their owner
(scanner.cluster.remote); its files carry the worker's number (segments, journal, work files); and its
probe workers keep serving other workers after its own input is done, until the driver closes it.

``ScanWorker`` is the Ray actor around it (the driver wraps it with ``ray.remote``; this module does not
import Ray). Exactly-once across processes rests on two rules: a batch of lines is acknowledged to the
driver only when all its rows are committed, and a domain's rows that rest on another worker's answers
are written only once that owner has committed the rows behind them. An owner answers at once and
stamps its answers with a barrier in its own journal (``TrackedWriter``); the asking worker parks such
rows and asks the owner to confirm the stamp (``wait_committed``), which the owner does at its next
commit, made anyway (segment full, commit interval) or sooner when rows pile up or the scan is ending.
So no owner commits more often because others ask (answering only after a commit made a cluster scan
write several small segments a second). When an owner died before committing what it answered, the
asking worker cannot know which of its rows rest on lost probes: it ends its own process, Ray restarts
it, and the driver gives it its unacknowledged lines again (the path of a kill -9).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from ray.exceptions import RayActorError
from ray.util import get_node_ip_address

from scanner.certs import TrustStore
from scanner.cluster.journal import Barrier, TrackedWriter, next_segment_in
from scanner.cluster.remote import Answer, Answers, RemoteProbes, Stamp, Triple
from scanner.cluster.shard import owner_of_address, segment_range
from scanner.cluster.state import load_worker_state
from scanner.config import ScanConfig
from scanner.dns.records import DomainDns
from scanner.net.addresses import ExcludeList
from scanner.output.parquet import read_journal, recover
from scanner.output.rows import DomainRow
from scanner.pipeline import Scan, ScanStats, load_trust_store, scan_collector
from scanner.probe_cache import SummaryCache
from scanner.records import InputLine, ProbeSummary
from scanner.resume import ResumeState
from scanner.scan_record import ScanRecord
from scanner.seen import SeenDomains
from scanner.verdicts import LinkViews

__all__ = ["COMMIT_DELAY", "ScanWorker", "WorkerScan"]

_log = logging.getLogger(__name__)

# How long a worker gathers further rows before a commit someone waits for (its input is done, or other
# workers hurry their parked rows): each commit is a segment (a file per table and an fsync).
COMMIT_DELAY = 0.1
# The longest an MTA-STS fetch may hold a slot leased from another worker (a requester that died).
LEASE_SECONDS = 120.0
# Addresses whose owner is remembered (a hash of the prefix per link per domain was 2% of a worker's CPU).
_OWNER_MEMO = 1 << 16
# Domains whose rows may wait for other owners' next commits before those are asked to commit sooner
# (the parked rows are held in memory).
PARK_URGENT = 5_000
# Exit status of a worker that ends itself because an owner lost answers it had given (Ray restarts it).
_LOST_OWNER_EXIT = 70
Confirm = Callable[[int, Stamp, bool], Awaitable[bool]]


class _FirstSeen(SeenDomains):
    """Seeded with the first line of each domain already committed: that line itself is still the first."""

    def first_seen(self, domain: str, line_no: int) -> int | None:
        first = super().first_seen(domain, line_no)
        return None if first == line_no else first


class WorkerScan(Scan):
    """The pipeline of one worker (see the module's docstring)."""

    def __init__(self, config: ScanConfig, source: str, trust: TrustStore, exclude: ExcludeList,
                 resume: ResumeState, index: int, workers: int, remote: RemoteProbes,
                 first_lines: Sequence[tuple[str, int]], confirm: Confirm) -> None:
        super().__init__(config, source, trust, exclude, resume=resume)
        self.index = index
        self.workers = workers
        self.remote = remote
        self.intake: asyncio.Queue[list[InputLine] | None] = asyncio.Queue(maxsize=4)
        self.input_done = asyncio.Event()  # every admitted line is finished and its rows queued
        self.closing = asyncio.Event()  # the driver's word that no worker will ask for probes any more
        self._first_lines = first_lines
        self._tag = f"w{index:03d}"
        self.writer: TrackedWriter | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self.on_lines_committed: Callable[[list[int]], None] = lambda lines: None
        self._owners: dict[str, int] = {}  # address -> its owner (asked per link of every domain)
        # The owner's side of answers: this life's token, the barriers numbered, the highest committed.
        self.life = uuid.uuid4().hex
        self._answered = 0
        self._answers_committed = 0
        self._commit_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # The asking side: rows resting on other owners' answers, until those owners confirm their commit.
        self._confirm = confirm
        self._domain_owners: dict[str, set[int]] = {}  # domain -> owners its links' answers came from
        self._parked: deque[tuple[dict[int, Stamp], list[Any]]] = deque()
        self._parked_more = asyncio.Event()
        self._parked_none = asyncio.Event()
        self._parked_none.set()
        self._finishing = False
        self._hurry = asyncio.Event()  # ask the owners to commit now, not at their next commit
        remote.on_owner_restart = self._owner_restarted

    def _lines_committed(self, lines: list[int]) -> None:
        self.on_lines_committed(lines)

    async def take(self, lines: list[InputLine] | None) -> None:
        """Queue a batch (None: the end) for the reader, unless the scan is stopping (then it is dropped:
        its lines are not committed, and the resumed scan does them)."""
        put = asyncio.ensure_future(self.intake.put(lines))
        stop = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (put, stop):
            task.cancel()

    def owner(self, address: str) -> int:
        owner = self._owners.get(address)
        if owner is None:
            if len(self._owners) >= _OWNER_MEMO:  # bounded: a zone's MX addresses are millions
                self._owners.clear()
            owner = self._owners[address] = owner_of_address(address, self.workers)
        return owner

    def owns(self, address: str) -> bool:
        return self.owner(address) == self.index

    async def run_share(self) -> None:
        out = self.config.output
        assert self.resume is not None
        self.writer = writer = TrackedWriter(out.out_dir, out.rows_per_file, out.row_group_size,
                                             self.resume.next_segment, f"segments-{self._tag}",
                                             self._lines_committed)
        self._writer_task = writer_task = self._supervise(asyncio.create_task(self._write_rows(writer),
                                                                              name="writer"))
        committer = asyncio.create_task(self._commit_when_asked(writer))
        releaser = self._supervise(asyncio.create_task(self._release_parked(), name="parked rows"))
        self._stages = stages = asyncio.create_task(self._run_stages(), name="stages")
        try:
            await asyncio.wait({stages})
            if not stages.cancelled() and (exc := stages.exception()) is not None:
                self._note_fatal("stages", exc)
        finally:
            self.input_done.set()
            if not stages.done():
                stages.cancel()
                await asyncio.gather(stages, return_exceptions=True)
            committer.cancel()
            releaser.cancel()
            await self.remote.close()
            await self._close_writer(writer, writer_task)
        self._raise_fatal()

    async def _close_writer(self, writer: TrackedWriter, writer_task: asyncio.Task[None]) -> None:
        self._sync_stats()
        if self._resolver is not None:
            await self._resolver.close()
        if not writer_task.done():
            await self._release_held(everything=True)
            await self._row_queue.put(None)
            await asyncio.wait({writer_task})
        if writer_task.cancelled() or writer_task.exception() is not None:
            writer.abandon()
            return
        try:
            writer.close()
        except Exception as exc:
            self._note_fatal("writer", exc)
            writer.abandon()

    async def _commit_when_asked(self, writer: TrackedWriter) -> None:
        while True:
            await writer.asked.wait()
            await asyncio.sleep(COMMIT_DELAY)
            writer.commit()

    async def committed(self) -> None:
        """Return once every row queued so far is committed (a barrier through the writer)."""
        done = Barrier()
        await self._row_queue.put(done)
        assert self._writer_task is not None
        await asyncio.wait({done.future, self._writer_task}, return_when=asyncio.FIRST_COMPLETED)
        if not done.future.done():
            raise RuntimeError(f"worker {self.index}: the writer stopped before committing")

    async def _run_stages(self) -> None:
        work = self.config.output.out_dir / ".work"
        capacity = self.config.probe.summaries_in_memory
        with SummaryCache(work / f"probes-{self._tag}.sqlite", capacity) as done, \
                SummaryCache(work / f"remote-{self._tag}.sqlite", capacity) as asked:
            self.remote.attach(asked)
            await self._run_stages_with(done)

    async def _read_input(self) -> None:
        assert self.resume is not None
        done = self.resume.done_lines
        with _FirstSeen(self.config.output.out_dir / ".work" / f"seen-{self._tag}.sqlite") as seen:
            for domain, line_no in self._first_lines:
                seen.first_seen(domain, line_no)
            while (batch := await self.intake.get()) is not None:
                for line in batch:
                    if self.stopping:
                        return
                    self.stats.lines += 1
                    if line.line_no in done:  # committed by an earlier life of this worker
                        self.stats.resumed += 1
                        continue
                    await self._admit(line, seen)
                await asyncio.sleep(0)

    async def _request_probes(self, dns: DomainDns) -> dict[str, asyncio.Future[ProbeSummary]]:
        assert self._probe_service is not None
        futures: dict[str, asyncio.Future[ProbeSummary]] = {}
        first: dict[str, str] = {}
        for host in dns.hosts:
            for address in host.resolution.addresses:
                if self.owns(address):
                    if address not in futures:
                        futures[address] = await self._probe_service.request(address, host.name)
                else:
                    asked = self.remote.request(address, first.setdefault(address, host.name), host.name)
                    futures.setdefault(address, asked)
        return futures

    async def _link_views(self, dns: DomainDns, summaries: dict[str, ProbeSummary]) -> LinkViews:
        assert self._probe_service is not None
        views: dict[tuple[str, str], ProbeSummary] = {}
        owners: set[int] = set()
        for host in dns.hosts:
            for address in host.resolution.addresses:
                owner = self.owner(address)
                if owner == self.index:
                    views[(host.name, address)] = await self._probe_service.link(address, host.name,
                                                                                  summaries[address])
                else:
                    views[(host.name, address)] = await self.remote.view(address, host.name)
                    owners.add(owner)
        if owners:
            self._domain_owners[dns.domain] = owners
        return views

    async def _emit_domain(self, rows: list[Any]) -> None:
        """A domain's rows; parked while they rest on answers their owners may not have committed yet."""
        head = rows[0] if rows else None
        owners = None
        if isinstance(head, DomainRow) and head.domain is not None:
            owners = self._domain_owners.pop(head.domain, None)
        if not owners:
            await super()._emit_domain(rows)
            return
        self._parked.append(({owner: self.remote.stamps[owner] for owner in owners}, rows))
        self._parked_none.clear()
        self._parked_more.set()
        if len(self._parked) >= PARK_URGENT:
            self._hurry.set()

    async def _release_parked(self) -> None:
        """Write parked rows once the owners they rest on confirm their commits (one task, in rounds)."""
        while True:
            await self._parked_more.wait()
            self._parked_more.clear()
            while self._parked:
                count = len(self._parked)
                needed: dict[int, Stamp] = {}
                for deps, _rows in itertools.islice(self._parked, count):
                    for owner, stamp in deps.items():
                        if owner not in needed or stamp[1] > needed[owner][1]:
                            needed[owner] = stamp
                await self._confirmed(needed)
                if self.stopping:  # what is parked is not written: the resumed scan does those lines again
                    self._parked.clear()
                    break
                for _ in range(count):
                    await super()._emit_domain(self._parked.popleft()[1])
                if not self._finishing and len(self._parked) < PARK_URGENT:
                    self._hurry.clear()
            self._parked_none.set()

    async def _confirmed(self, needed: dict[int, Stamp]) -> None:
        """Return once every owner in ``needed`` has committed up to its stamp. Asked to confirm at its next
        commit, or at once when hurried (many rows parked, or this worker's input is done): a hurry
        during a patient round asks again."""
        while True:
            urgent = self._hurry.is_set()
            asks = asyncio.ensure_future(asyncio.gather(
                *(self._confirm(owner, stamp, urgent) for owner, stamp in needed.items()), return_exceptions=True))
            if not urgent:
                hurried = asyncio.ensure_future(self._hurry.wait())
                racing: set[asyncio.Future[Any]] = {asks, hurried}
                await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                hurried.cancel()
                if not asks.done():
                    asks.cancel()
                    await asyncio.gather(asks, return_exceptions=True)
                    continue
            results = await asks
            if self.stopping:
                return
            for (owner, stamp), ok in zip(needed.items(), results, strict=True):
                if ok is not True:
                    self._lost_owner(owner, ok)
                known = self.remote.confirmed.get(owner)
                if known is None or known[0] != stamp[0] or known[1] < stamp[1]:
                    self.remote.confirmed[owner] = stamp
            return

    def _owner_restarted(self, owner: int) -> None:
        if not self.stopping:
            self._lost_owner(owner, "it restarted")

    def _lost_owner(self, owner: int, why: object) -> NoReturn:
        """An owner lost (or may have lost) answers this worker's uncommitted rows rest on: start afresh."""
        _log.error("worker %d: owner %d cannot confirm the probes it answered (%s): restarting this worker, "
                   "whose uncommitted lines the driver sends again", self.index, owner, why)
        logging.shutdown()
        os._exit(_LOST_OWNER_EXIT)

    def _connection_slot(self, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        return super()._connection_slot(address) if self.owns(address) else self.remote.slot(address)

    async def _drain(self, dns_workers: list[asyncio.Task[None]], probe_workers: list[asyncio.Task[None]]) -> None:
        """Finish this worker's domains, then keep the probe workers for other workers until closed."""
        assert self._probe_service is not None
        for _ in dns_workers:
            await self._domain_queue.put(None)
        await asyncio.gather(*dns_workers)
        while self._finishers:
            await asyncio.gather(*list(self._finishers))
        self._finishing = True  # the owners are asked to commit now, not at their next interval
        self._hurry.set()
        self._parked_more.set()
        await self._parked_none.wait()
        await self._release_held(everything=True)
        self.input_done.set()
        await self.closing.wait()
        await self._probe_service.stop_workers(len(probe_workers))
        await asyncio.gather(*probe_workers)

    async def serve(self, triples: Sequence[Triple]) -> Answers:
        """Summaries and views of owned addresses for another worker, stamped with a barrier behind their
        rows (committed with this worker's next commit: ``wait_committed``)."""
        await self.probes_ready()
        answers = await asyncio.gather(*(self._serve_one(*triple) for triple in triples))
        # The rows behind the answers are queued (a probe's rows go to the writer before its summary
        # exists): a barrier queued now is committed after them.
        self._answered += 1
        number = self._answered
        barrier = Barrier(urgent=False)
        barrier.future.add_done_callback(lambda _done: self._answer_committed(number))
        await self._row_queue.put(barrier)
        return list(answers), (self.life, number)

    def _answer_committed(self, number: int) -> None:
        self._answers_committed = max(self._answers_committed, number)
        waiting = []
        for needed, future in self._commit_waiters:
            if needed <= self._answers_committed:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((needed, future))
        self._commit_waiters = waiting

    async def wait_committed(self, life: str, number: int, urgent: bool) -> bool:
        """True once the answers stamped ``(life, number)`` are committed here; False when they were given
        by an earlier life of this worker (lost unless committed before it died) or the writer stopped."""
        if life != self.life:
            return False
        if self._answers_committed >= number:
            return True
        if urgent:
            await self.committed()
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commit_waiters.append((number, future))
        assert self._writer_task is not None
        await asyncio.wait({future, self._writer_task}, return_when=asyncio.FIRST_COMPLETED)
        return future.done()

    async def probes_ready(self) -> None:
        """Return once the probe service exists (its stages start on the worker's first loop turns)."""
        # The pipeline's own _run_stages_with creates it; a poll keeps that method untouched.
        while self._probe_service is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def _serve_one(self, address: str, first_host: str, host: str) -> Answer:
        assert self._probe_service is not None
        summary = await (await self._probe_service.request(address, first_host))
        return summary, await self._probe_service.link(address, host, summary)

    def problem(self) -> str | None:
        """What stops this worker: a breakdown of our side, or a failed task (None while all is well)."""
        if self.breakdown is not None:
            return self.stop_message
        return self.failure


class ScanWorker:
    """The Ray actor of one worker. The driver calls ``start`` (again after a restart), then feeds
    batches with ``admit``, polls ``progress``, and ends with ``finish_input`` and ``close``."""

    def __init__(self, index: int, workers: int, config: ScanConfig, source: str, scan_id: str, attempt: int,
                 exclude: ExcludeList) -> None:
        self._index = index
        self._workers = workers
        self._config = config
        self._source = source
        self._scan_id = scan_id
        self._attempt = attempt
        self._exclude = exclude
        self._peers: list[Any] = []
        self._scan: WorkerScan | None = None
        self._run: asyncio.Task[None] | None = None
        self._started: asyncio.Event | None = None
        self._batches: dict[int, int] = {}  # batch id -> lines not yet committed
        self._line_batch: dict[int, int] = {}
        self._acked: list[int] = []
        self._admitted: set[int] = set()
        self._leases: dict[int, asyncio.Event] = {}
        self._lease_ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector = contextlib.ExitStack()

    def _ready(self) -> asyncio.Event:
        if self._started is None:
            self._started = asyncio.Event()
        return self._started

    async def start(self, peers: list[Any]) -> tuple[int, str]:
        """Recover this worker's files, read what is committed, start the pipeline. Returns the process id
        and the node's address."""
        if self._scan is None:
            self._peers = peers
            self._scan = self._build()
            self._collector.enter_context(scan_collector())  # for the actor's life (its process's)
            self._scan.on_lines_committed = self._lines_committed
            self._run = asyncio.create_task(self._scan.run_share())
            self._ready().set()
        return os.getpid(), str(get_node_ip_address())  # type: ignore[no-untyped-call]

    def _build(self) -> WorkerScan:
        config, out = self._config, self._config.output.out_dir
        trust: TrustStore = load_trust_store(config)
        mine = segment_range(self._index)
        removed = recover(out, mine).removed_files
        state = load_worker_state(out, self._index, self._workers, trust, config.probe.sni_checks)
        resume = ResumeState(self._attempt, state.done_lines, state.probes,
                             next_segment_in(read_journal(out), mine), removed, ScanRecord(self._scan_id))
        remote = RemoteProbes(self._ask, self._lease_from, self._release_at,
                              lambda address: owner_of_address(address, self._workers), config.probe.port)
        return WorkerScan(config, self._source, trust, self._exclude, resume, self._index, self._workers,
                          remote, state.first_lines, self._confirm)

    # The driver's side.

    async def admit(self, batch: int, lines: list[InputLine]) -> None:
        await self._ready().wait()
        scan = self._scan
        assert scan is not None
        assert scan.resume is not None
        if batch in self._admitted:  # resent after a call failed on a worker that did not die after all
            return
        self._admitted.add(batch)
        pending = [line.line_no for line in lines if line.line_no not in scan.resume.done_lines]
        for line_no in pending:
            self._line_batch[line_no] = batch
        if pending:
            self._batches[batch] = len(pending)
        else:
            self._acked.append(batch)
        await scan.take(lines)

    def _lines_committed(self, lines: list[int]) -> None:
        for line_no in lines:
            batch = self._line_batch.pop(line_no, None)
            if batch is None:
                continue
            self._batches[batch] -= 1
            if not self._batches[batch]:
                del self._batches[batch]
                self._acked.append(batch)

    async def progress(self) -> tuple[ScanStats, list[int], str | None, tuple[int, int]]:
        """(live counters, batches committed since the last call, what stops the worker, (remote calls,
        remote pairs))."""
        await self._ready().wait()
        scan = self._scan
        assert scan is not None
        scan._sync_stats()
        acked, self._acked = self._acked, []
        return scan.stats, acked, scan.problem(), (scan.remote.calls, scan.remote.pairs)

    def stop(self) -> None:
        if self._scan is not None:
            self._scan.request_stop()

    async def finish_input(self) -> None:
        """End of this worker's input: returns once all its lines are finished and committed."""
        await self._ready().wait()
        scan = self._scan
        assert scan is not None
        await scan.take(None)
        await scan.input_done.wait()
        if scan.problem() is None:
            await scan.committed()

    async def close(self) -> tuple[ScanStats, dict[str, float]]:
        """No worker asks for probes any more: stop the probe workers, close the writer. Returns the
        counters and this process's resources (CPU seconds, peak RSS in MB, requests to other owners)."""
        await self._ready().wait()
        scan = self._scan
        assert scan is not None
        assert self._run is not None
        scan.closing.set()
        await self._run
        self._collector.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return scan.stats, {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
                            "remote_calls": scan.remote.calls, "remote_pairs": scan.remote.pairs}

    # Other workers' side.

    async def serve(self, triples: list[Triple]) -> Answers:
        await self._ready().wait()
        assert self._scan is not None
        return await self._scan.serve(triples)

    async def wait_committed(self, life: str, number: int, urgent: bool) -> bool:
        await self._ready().wait()
        assert self._scan is not None
        return await self._scan.wait_committed(life, number, urgent)

    async def lease(self, address: str) -> int:
        """Hold one connection slot of ``address`` (owned here) for another worker until ``release``."""
        await self._ready().wait()
        scan = self._scan
        assert scan is not None
        lease = next(self._lease_ids)
        acquired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        release = self._leases[lease] = asyncio.Event()
        await scan.probes_ready()

        async def hold() -> None:
            async with scan._connection_slot(address):
                acquired.set_result(None)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEASE_SECONDS):
                        await release.wait()
            self._leases.pop(lease, None)

        task = asyncio.create_task(hold())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await acquired
        return lease

    def release(self, lease: int) -> None:
        event = self._leases.pop(lease, None)
        if event is not None:
            event.set()

    # Calls to peers (handles of the other workers' actors).

    async def _ask(self, owner: int, triples: list[Triple]) -> Answers:
        return await _retrying(lambda: self._peers[owner].serve.remote(triples))  # type: ignore[no-any-return]

    async def _confirm(self, owner: int, stamp: Stamp, urgent: bool) -> bool:
        return await _retrying(  # type: ignore[no-any-return]
            lambda: self._peers[owner].wait_committed.remote(stamp[0], stamp[1], urgent))

    async def _lease_from(self, owner: int, address: str) -> int:
        return await _retrying(lambda: self._peers[owner].lease.remote(address))  # type: ignore[no-any-return]

    def _release_at(self, owner: int, lease: int) -> None:
        self._peers[owner].release.remote(lease)


# How long a call to a peer is retried while the peer restarts (Ray restarts a dead actor; the driver
# then starts it again and resubmits its lines).
_RETRY_SECONDS = 300.0


async def _retrying(call: Callable[[], Any]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return await call()
        except RayActorError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
