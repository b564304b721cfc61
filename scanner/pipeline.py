"""Wiring of the scan: input → DNS workers → probe workers → one writer, joined by bounded queues.

This module moves work between stages and owns their lifetimes; it parses nothing and judges
nothing (that is input, dns, smtp, certs and verdicts). Memory is bounded by the queue sizes and by
``max_domains_in_flight`` (domains resolved and waiting for their probes), never by the input size;
the per-address probe cache holds one small summary per distinct address.

Shape::

    reader ──(domain_queue)──> DNS workers ──request──> ProbeService queue ──> probe workers
       │                           │                                              │
       │                           ├── policy fetch per domain (beside probes)    │
       │                           └── finisher task per domain (awaits both)     │
       └──────────────────────────────────(row_queue)─────────────────────────────┴──> writer
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scanner.certs import TrustStore
from scanner.config import ScanConfig, result_settings
from scanner.dns.lookup import DomainResolver, ServerTarget
from scanner.dns.records import DomainDns
from scanner.dns.resolver import DnsResolver
from scanner.errors import describe_bug
from scanner.exit_codes import ExitCode
from scanner.health import Breakdown, HealthWatch
from scanner.input import InputError, InputTally, read_domains_async, stream_lines
from scanner.monitor import Gauge, StageMonitor
from scanner.net.addresses import AddressPolicy, ExcludeList
from scanner.net.families import detect_families
from scanner.net.limits import PolitenessLimiter, Slots
from scanner.output.parquet import DamagedOutputError, DatasetWriter
from scanner.output.rows import DomainRow, ProbeRow, SessionRow
from scanner.output.sink import RowSink
from scanner.policy.domain import PolicyChecker
from scanner.policy.facts import DomainPolicyFacts
from scanner.preflight import resolver_label
from scanner.probe_cache import SummaryCache
from scanner.probing import ProbeService
from scanner.provenance import collect as collect_provenance
from scanner.records import InputLine, ProbeSummary
from scanner.resume import LineSet, ResumeState, mark_complete
from scanner.scan_record import Attempt, AttemptCounts, ScanRecord
from scanner.seen import SeenDomains
from scanner.status import AttemptOutcome, DomainStatus, HostStatus, StarttlsVerdict
from scanner.verdicts import LinkJudge, LinkViews, build_domain_rows, input_problem_row

__all__ = ["Scan", "ScanFailed", "ScanStats", "load_trust_store"]

_log = logging.getLogger(__name__)

# DNS outcomes that say nothing about the domain, only that our resolver did not answer well.
_RESOLVER_TROUBLE = frozenset({DomainStatus.DNS_TIMEOUT, DomainStatus.DNS_SERVFAIL, DomainStatus.DNS_REFUSED,
                               DomainStatus.DNS_ERROR})

# How many lines the reader handles before yielding to other tasks when its queue has room.
_READER_YIELD_EVERY = 256


# Cyclic-GC thresholds while a scan runs. With CPython's defaults (700, 10, 10) a scan spent about a
# third of its CPU in the collector (measured by the stage monitor: 56 s of 174 s at 200k domains),
# mostly in full collections over the long-lived caches. Nearly all of a scan's garbage is freed by
# reference counting; the collector only has to find the rare cycles (exception tracebacks, task
# graphs), so it can run far less often. The previous thresholds are restored when the scan ends.
# A young-generation pass walks every young object still alive, domains in flight among them; at
# 100,000 it ran every ~5,000 domains (0.16 s each, ~3.5% of a scan, each pass freeing tens of objects),
# at 300,000 a third as often, and more of the objects made in between are gone by then (scan log: 2.8 s
# -> 0.8-1.1 s of collection per 100,000 domains, peak RSS +7 to +10 MB).
_SCAN_GC_THRESHOLDS = (300_000, 20, 10)


@contextlib.contextmanager
def scan_collector() -> Iterator[None]:
    """The garbage collector as a scan wants it: rarer collections, and every object alive when the scan
    starts (modules, Ray's in a cluster worker, the configuration) frozen out of the collector's sight
    (``gc.freeze``), so that full collections walk only the scan's own objects. A Ray worker, whose
    imports are several times a single process's, ran 9% faster with the freeze. Undone at the end."""
    previous = gc.get_threshold()
    gc.set_threshold(*_SCAN_GC_THRESHOLDS)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)


# A domain (or MX host) whose resolution failed this way may have failed on our side (scanner.health).
_DNS_FAILED_DOMAIN = frozenset({DomainStatus.DNS_SERVFAIL, DomainStatus.DNS_TIMEOUT, DomainStatus.DNS_REFUSED,
                                DomainStatus.DNS_ERROR})
_DNS_FAILED_HOST = frozenset({HostStatus.SERVFAIL, HostStatus.TIMEOUT, HostStatus.REFUSED, HostStatus.ERROR})


def _dns_failed(rows: Sequence[Any]) -> bool:
    """Whether a domain's rows ([DomainRow, *MxRow]) record a DNS failure of the domain or a host."""
    domain, *links = rows
    return domain.status in _DNS_FAILED_DOMAIN or any(r.host_status in _DNS_FAILED_HOST for r in links)


def _config_json(config: ScanConfig) -> dict[str, Any]:
    """The effective configuration as JSON values (paths and tuples as strings and lists)."""
    return {k: _jsonable(v) for k, v in dataclasses.asdict(config).items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


class ScanFailed(Exception):
    """One of the scan's own long-lived tasks failed (the writer, a worker): the scan stopped at once.

    Everything committed before the failure is kept and the same command resumes the scan.
    ``exit_code`` is ``CANT_CREATE`` when the output could not be written (disk full, I/O error,
    permissions; any failure of the writer), ``DATA_ERROR`` when a committed file read back is damaged,
    ``FAILED`` for a bug elsewhere.
    """

    def __init__(self, task: str, cause: BaseException) -> None:
        # The writer's failures and the work files' (SQLite in OUT/.work) are the output's.
        self.output = task == "writer" or isinstance(cause, OSError | sqlite3.OperationalError)
        self.exit_code = ExitCode.CANT_CREATE if self.output else ExitCode.FAILED
        if isinstance(cause, DamagedOutputError):  # a committed probe file read back at start (scanner.resume)
            self.exit_code, message = ExitCode.DATA_ERROR, str(cause)
        elif self.output:
            message = f"the output cannot be written: {type(cause).__name__}: {cause}"
        else:
            message = f"the scan's {task} task failed (a bug): {describe_bug(cause)}"
        super().__init__(message)
        self.task = task
        self.cause = cause


def load_trust_store(config: ScanConfig) -> TrustStore:
    return TrustStore.from_pem_file(config.ca_file) if config.ca_file else TrustStore.from_certifi()


@dataclass(slots=True)
class ScanStats:
    """Live counters, read by the progress display. Owned and updated by one ``Scan``."""

    started: float = field(default_factory=time.monotonic)
    lines: int = 0
    domains_queued: int = 0
    domains_done: int = 0
    invalid: int = 0
    duplicates: int = 0
    resumed: int = 0  # lines already in the dataset from an earlier attempt
    excluded: int = 0
    internal_errors: int = 0
    dns_failures: int = 0
    probes_requested: int = 0
    probes_done: int = 0
    probes_in_flight: int = 0
    probe_failures: int = 0
    dns_queries: int = 0
    starttls_all: int = 0
    with_mail_hosts: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    # Seconds summed over domains, per phase of a domain's life (divide by domains_done for a mean),
    # and the writer's own time on the event loop.
    dns_seconds: float = 0.0
    probe_wait_seconds: float = 0.0  # waiting for the probes (and link views) once the policy facts are in
    policy_seconds: float = 0.0  # fetching the policy facts (while the domain's probes run)
    verdict_seconds: float = 0.0
    writer_seconds: float = 0.0
    # Domains whose mail hosts were judged already for another domain (scanner.verdicts.LinkJudge).
    mail_sets_reused: int = 0
    domains_in_flight: int = 0
    dns_busy: int = 0

    @property
    def rows_done(self) -> int:
        return self.domains_done + self.invalid + self.duplicates + self.excluded + self.resumed

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Scan:
    """One attempt of one scan of one input into one output directory.

    A resumed scan keeps the scan id of its record (``scanner.scan_record``); every row this attempt
    writes carries that id and ``self.attempt``.
    """

    def __init__(
        self,
        config: ScanConfig,
        source: str | Path,
        trust: TrustStore,
        exclude: ExcludeList | None = None,
        resume: ResumeState | None = None,
        vantage: str | None = None,
        server: ServerTarget | None = None,
        sink: RowSink | None = None,
    ) -> None:
        self.config = config
        self._sink = sink  # where rows go; None: the Parquet dataset in config.output.out_dir
        self.server = server  # one server given directly (check HOST:PORT): no MX lookup
        self.resume = resume
        self.source = source
        record = resume.record if resume else None
        self.scan_id = record.scan_id if record else (
            datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3))
        self.record = record or ScanRecord(self.scan_id)
        self.attempt = resume.attempt if resume else 1
        self.vantage = vantage
        self.written = AttemptCounts()  # rows this attempt wrote, counted by the writer
        self.health = HealthWatch(config.health, self._on_breakdown)
        self.breakdown: Breakdown | None = None  # set when our side looked broken (scanner.health)
        self.abandoned = False  # a second Ctrl-C: in-flight work was dropped at once
        self._held: collections.deque[tuple[int, list[Any]]] = collections.deque()  # see _emit_domain
        self.stats = ScanStats()
        self._trust = trust
        self._exclude = exclude or ExcludeList()
        self._row_queue: asyncio.Queue[Sequence[Any] | None] = asyncio.Queue(maxsize=1024)
        self._domain_queue: asyncio.Queue[InputLine | None] = asyncio.Queue(maxsize=config.dns.workers * 2)
        self._in_flight = Slots(config.max_domains_in_flight)
        self._finishers: set[asyncio.Task[None]] = set()
        self._probe_service: ProbeService | None = None
        self._policies: PolicyChecker | None = None
        self._resolver: DnsResolver | None = None
        self._links = LinkJudge()
        self.input_tally = InputTally()
        self._monitor: StageMonitor | None = None
        self.completed = False
        self.stopping = False  # set by request_stop(): intake stops, in-flight work gets a grace period
        self._stop_event = asyncio.Event()
        # A route lookup per family (no packet), once: which addresses this vantage can probe at all.
        self.families = detect_families(config.probe.ipv4, config.probe.ipv6, lab=config.safety.allow_private)
        self._trouble = 0  # domains whose lookups failed on the resolver (timeout, SERVFAIL, REFUSED, error)
        self._next_trouble_warning = 1
        # The first failure of a supervised task (see _supervise) and the task's name; it stops the scan.
        self._fatal: tuple[str, BaseException] | None = None
        self._stages: asyncio.Task[None] | None = None
        # The input became unreadable part-way (corrupt gzip, I/O error): lines before it are scanned
        # and written, the scan is not complete, and the error is raised once everything is committed.
        self.input_error: InputError | None = None

    async def run(self, on_tick: Callable[[ScanStats], None] | None = None) -> ScanStats:
        """Run to the end of the input (or until cancelled); the dataset is valid either way."""
        with scan_collector():
            return await self._run(on_tick)

    async def _run(self, on_tick: Callable[[ScanStats], None] | None) -> ScanStats:
        sink = self._sink or self._dataset_writer()
        attempt = self._begin_attempt(sink)
        writer_task = self._supervise(asyncio.create_task(self._write_rows(sink), name="writer"))
        ticker = self._supervise(asyncio.create_task(self._tick(on_tick), name="progress")) if on_tick else None
        self._stages = stages = asyncio.create_task(self._run_stages(), name="stages")
        if self.abandoned:  # abandoned before it started
            stages.cancel()
        try:
            # asyncio.wait, not await: a supervised task's failure or ``abandon`` cancels ``stages``, which
            # must not look like a cancellation of this task.
            await asyncio.wait({stages})
            if not stages.cancelled() and (exc := stages.exception()) is not None:
                self._note_fatal("stages", exc)
            self.completed = not self.stopping and self._fatal is None and self.input_error is None
        finally:
            if ticker:
                ticker.cancel()
            if not stages.done():  # this task was cancelled: abandon the stages
                stages.cancel()
                await asyncio.gather(stages, return_exceptions=True)
            await self._shutdown(sink, writer_task, attempt)
            if on_tick:
                on_tick(self.stats)
        self._raise_fatal()
        if self.input_error is not None:
            raise self.input_error
        return self.stats

    def _dataset_writer(self) -> DatasetWriter:
        out = self.config.output
        first_segment = self.resume.next_segment if self.resume else 0
        return DatasetWriter(out.out_dir, out.rows_per_file, out.row_group, first_segment)

    def _begin_attempt(self, writer: RowSink) -> Attempt:
        """Record this attempt (provenance, settings, ``running``) before any row; settle earlier attempts.

        An earlier attempt still ``running`` was killed: it is marked so and counted from its committed
        rows. Every earlier attempt without a committed run row gets one now, so the run table holds one
        row per attempt whatever ended them.
        """
        committed = self.resume.committed if self.resume and self.resume.committed is not None else {}
        have_row = self.resume.run_rows if self.resume else frozenset()
        for earlier in self.record.without_run_row(have_row, committed):
            writer.write([earlier.run_row(self.scan_id, str(self.source))])
        attempt = Attempt(
            attempt=self.attempt, started_at=datetime.now(UTC), finished_at=None, outcome=AttemptOutcome.RUNNING,
            message="", config=_config_json(self.config), result_settings=result_settings(self.config),
            provenance=collect_provenance(self.config, self.source, self.vantage),
            families={"ipv4": self.families.ipv4, "ipv6": self.families.ipv6, "detail": self.families.detail},
        )
        self.record.attempts.append(attempt)
        self.record.save(self.config.output.out_dir)
        return attempt

    def _on_breakdown(self, breakdown: Breakdown) -> None:
        """Our side is broken: stop intake now and drop in-flight work (it would record our failure)."""
        self.breakdown = breakdown
        self.request_stop()

    @property
    def stop_message(self) -> str:
        """Why this attempt stopped early, in one line (empty when it completed)."""
        if self.completed:
            return ""
        if self.breakdown is not None:
            return self.breakdown.describe(resolver_label(self.config.dns))
        if self.failure is not None:
            return f"failed: {self.failure}"
        if self.input_error is not None:
            return f"the input became unreadable: {self.input_error}"
        if self.abandoned:
            return "stopped at once (second Ctrl-C): in-flight domains were dropped, everything committed is kept"
        return "interrupted: everything committed so far is kept"

    @property
    def failure(self) -> str | None:
        """What failed when one of the scan's own tasks failed (the attempt's run row says so), else None."""
        if self._fatal is None:
            return None
        task, exc = self._fatal
        return f"{task}: {type(exc).__name__}: {exc}"

    def _supervise(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Make ``task``'s failure stop the scan: a dead writer or worker must never go unnoticed.

        Without this a writer that hit a full disk died silently and every producer then blocked for
        ever on the full row queue.
        """
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._note_fatal(task.get_name(), exc)

    def _note_fatal(self, task: str, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = (task, exc)
        if self._stages is not None and not self._stages.done():
            self._stages.cancel()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            task, exc = self._fatal
            raise ScanFailed(task, exc) from exc

    def request_stop(self) -> None:
        """Stop taking new input; in-flight domains get ``stop_grace`` seconds, then are abandoned.

        Abandoned domains are not written, so resuming the scan (same command) does them again.
        """
        self.stopping = True
        self._stop_event.set()

    def abandon(self) -> None:
        """Stop at once (a second Ctrl-C): in-flight domains are dropped, what is queued is still written.

        Callable before ``run`` starts too. The front end that owns the signals calls it (``scanner.interrupts``);
        the scan itself installs no signal handler.
        """
        if self.abandoned:
            return
        self.abandoned = True
        self.request_stop()
        if self._stages is not None and not self._stages.done():
            self._stages.cancel()

    async def _run_stages(self) -> None:
        work = self.config.output.out_dir / ".work"
        with SummaryCache(work / "probes.sqlite", self.config.probe.summaries_in_memory) as done:
            await self._run_stages_with(done)

    async def _run_stages_with(self, done: SummaryCache) -> None:
        self._resolver = DnsResolver(self.config.dns, observe=self.health.dns)
        domains = DomainResolver(self._resolver, self._exclude, max_hosts=self.config.dns.max_mx_hosts,
                                 max_addresses=self.config.dns.max_mx_addresses)
        policy = AddressPolicy(self.config.safety.allow_private, self._exclude)
        probe = self.config.probe
        # One politeness limiter per scan, for every connection to a server: probes and policy fetches.
        self._limits = PolitenessLimiter(probe.max_connections, probe.per_ip_concurrency, probe.per_ip_interval,
                                         probe.per_prefix_concurrency)
        self._probe_service = ProbeService(self.config, policy, self._trust, self._emit_probe_rows, self.scan_id,
                                           self.attempt, done, self.families, limits=self._limits)
        if self.resume:
            self._probe_service.seed(self.resume.probes.summaries(done.get))
        if self.config.policy_checks:
            self._policies = PolicyChecker(self.config, self._resolver, policy, self._connection_slot)
        probe_workers = [self._supervise(asyncio.create_task(self._probe_service.worker(), name=f"probe-{i}"))
                         for i in range(self.config.probe.workers)]
        dns_workers = [self._supervise(asyncio.create_task(self._dns_worker(domains), name=f"dns-{i}"))
                       for i in range(self.config.dns.workers)]
        self._monitor = StageMonitor(self._gauges(self._resolver, self._probe_service),
                                     progress=lambda: self.stats.rows_done)
        monitor = self._supervise(asyncio.create_task(self._monitor.run(), name="monitor"))
        stop = asyncio.create_task(self._stop_event.wait())
        try:
            # The reader may wait on a slow stream (stdin, a pipe) for ever: a stop request ends the wait.
            reader = asyncio.create_task(self._read_input(), name="reader")
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            else:
                reader.result()  # an input error ends the scan here
            drain = asyncio.create_task(self._drain(dns_workers, probe_workers))
            await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done() and self.breakdown is None:
                # Stop requested: in-flight domains get a bounded grace period, then are abandoned. Not
                # after a breakdown: what finishes now would record our side's failure as the Internet's.
                await asyncio.wait({drain}, timeout=self.config.stop_grace)
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        finally:
            stop.cancel()
            for task in (*dns_workers, *probe_workers, *self._finishers, monitor):
                task.cancel()
            await asyncio.gather(*dns_workers, *probe_workers, *self._finishers, monitor, stop,
                                 return_exceptions=True)

    def _connection_slot(self, address: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The politeness slot of one policy fetch from ``address`` (a cluster worker asks the address's owner)."""
        return self._limits.slot(address)

    def _gauges(self, resolver: DnsResolver, probes: ProbeService) -> list[Gauge]:
        """Each stage's occupancy, in pipeline order (see ``scanner.monitor``)."""
        config, stats, limits = self.config, self.stats, self._limits
        return [
            Gauge("input_queue", self._domain_queue.qsize, self._domain_queue.maxsize),
            Gauge("dns_workers_busy", lambda: stats.dns_busy, config.dns.workers),
            Gauge("dns_queries_in_flight", lambda: resolver.in_flight, config.dns.concurrency),
            Gauge("domains_awaiting_probes", lambda: stats.domains_in_flight, config.max_domains_in_flight),
            Gauge("probe_queue", lambda: probes.queued, probes.queue_capacity),
            Gauge("probe_workers_busy", lambda: probes.in_flight, config.probe.workers),
            Gauge("connections_open", lambda: limits.open, limits.max_connections),
            Gauge("row_queue", self._row_queue.qsize, self._row_queue.maxsize),
        ]

    async def _drain(self, dns_workers: list[asyncio.Task[None]], probe_workers: list[asyncio.Task[None]]) -> None:
        """After the input ends: let every queued and in-flight domain finish, then stop the workers."""
        assert self._probe_service is not None
        for _ in dns_workers:
            await self._domain_queue.put(None)
        await asyncio.gather(*dns_workers)
        while self._finishers:  # finishers may still be awaiting probes
            await asyncio.gather(*list(self._finishers))
        await self._probe_service.stop_workers(len(probe_workers))
        await asyncio.gather(*probe_workers)

    async def _read_input(self) -> None:
        if self.server is not None:  # an IP address is not a valid input line: admitted as is
            self.stats.lines += 1
            self.stats.domains_queued += 1
            await self._domain_queue.put(InputLine(1, self.server.name, self.server.name, None))
            return
        done = self.resume.done_lines if self.resume else None
        with SeenDomains(self.config.output.out_dir / ".work" / "seen.sqlite") as seen:
            try:
                await self._read_lines(seen, done)
            except InputError as exc:
                self.input_error = exc  # stop taking input; what was read is finished and written

    async def _read_lines(self, seen: SeenDomains, done: LineSet | None) -> None:
        async for batch in read_domains_async(stream_lines(self.source, _READER_YIELD_EVERY), self.input_tally):
            for line in batch:
                if self.stopping:
                    return
                self.stats.lines += 1
                if done is not None and line.line_no in done:
                    # Written by an earlier attempt. Still "seen", so a later repeat stays a duplicate.
                    if line.domain is not None:
                        seen.first_seen(line.domain, line.line_no)
                    self.stats.resumed += 1
                    continue
                await self._admit(line, seen)
            await asyncio.sleep(0)  # one loop turn per batch: DNS and probe tasks run between batches

    async def _admit(self, line: InputLine, seen: SeenDomains) -> None:
        now = datetime.now(UTC)
        if line.domain is None:
            self.stats.invalid += 1
            await self._emit([input_problem_row(self.scan_id, self.attempt, line, DomainStatus.INVALID_INPUT,
                                                line.error or "", now)])
            return
        first = seen.first_seen(line.domain, line.line_no)
        if first is not None:
            self.stats.duplicates += 1
            await self._emit([input_problem_row(self.scan_id, self.attempt, line, DomainStatus.DUPLICATE,
                                                f"same domain as line {first}", now, duplicate_of_line=first)])
            return
        if self._exclude.excludes_name(line.domain):
            self.stats.excluded += 1
            await self._emit([input_problem_row(self.scan_id, self.attempt, line, DomainStatus.EXCLUDED,
                                                "domain is on the exclude list", now)])
            return
        self.stats.domains_queued += 1
        await self._domain_queue.put(line)

    async def _dns_worker(self, domains: DomainResolver) -> None:
        stats = self.stats
        while (line := await self._domain_queue.get()) is not None:
            await self._in_flight.acquire()
            stats.domains_in_flight += 1
            stats.dns_busy += 1
            started = time.monotonic()
            try:
                assert line.domain is not None
                dns = await (domains.server(self.server) if self.server else domains.resolve(line.domain))
                futures = await self._request_probes(dns)
            except Exception as exc:  # a bug: recorded as an internal_error row, the scan goes on
                self._release_domain()
                await self._finish_with_bug(line, exc)
                continue
            finally:
                stats.dns_busy -= 1
                stats.dns_seconds += time.monotonic() - started
            task = self._supervise(asyncio.create_task(self._finish_domain(line, dns, futures), name="finisher"))
            self._finishers.add(task)
            task.add_done_callback(self._finishers.discard)

    async def _request_probes(self, dns: DomainDns) -> dict[str, asyncio.Future[ProbeSummary]]:
        assert self._probe_service is not None
        futures: dict[str, asyncio.Future[ProbeSummary]] = {}
        for host in dns.hosts:
            for address in host.resolution.addresses:
                if address not in futures:
                    futures[address] = await self._probe_service.request(address, host.name)
        return futures

    async def _finish_domain(
        self, line: InputLine, dns: DomainDns, futures: dict[str, asyncio.Future[ProbeSummary]],
    ) -> None:
        """The domain's policy facts, fetched while its probes run (they need nothing from them; their
        judgement does: scanner.policy.judge), then its probes and links, its verdict and its rows."""
        stats = self.stats
        try:
            t0 = time.monotonic()
            policies = await self._fetch_policies(dns)
            t1 = time.monotonic()
            if all(f.done() for f in futures.values()):  # shared probes finished long ago: no gather
                summaries = {address: f.result() for address, f in futures.items()}
            else:
                summaries = dict(zip(futures, await asyncio.gather(*futures.values()), strict=True))
            views = await self._link_views(dns, summaries)
            t2 = time.monotonic()
            row, mx_rows = build_domain_rows(self.scan_id, self.attempt, line, dns, summaries, self.config.probe.port,
                                             datetime.now(UTC), policies, self._links, views)
            t3 = time.monotonic()
            stats.policy_seconds += t1 - t0
            stats.probe_wait_seconds += t2 - t1
            stats.verdict_seconds += t3 - t2
            self._count(row)
            await self._emit_domain([row, *mx_rows])
        except Exception as exc:
            await self._finish_with_bug(line, exc)
        finally:
            self._release_domain()

    def _release_domain(self) -> None:
        self.stats.domains_in_flight -= 1
        self._in_flight.release()

    async def _link_views(self, dns: DomainDns, summaries: dict[str, ProbeSummary]) -> LinkViews:
        """Each (MX host, address) link as a sender sending SNI = that host sees it (scanner.sni)."""
        assert self._probe_service is not None
        views: dict[tuple[str, str], ProbeSummary] = {}
        for host in dns.hosts:
            for address in host.resolution.addresses:
                views[(host.name, address)] = await self._probe_service.link(address, host.name, summaries[address])
        return views

    async def _fetch_policies(self, dns: DomainDns) -> DomainPolicyFacts | None:
        """The MTA-STS, TLS-RPT and TLSA facts of a domain that has mail hosts (None: not checked)."""
        if self._policies is None or dns.status is not DomainStatus.OK:
            return None
        return await self._policies.fetch(dns.domain, [h.name for h in dns.hosts])

    async def _finish_with_bug(self, line: InputLine, exc: Exception) -> None:
        self.stats.internal_errors += 1
        self.stats.domains_done += 1
        await self._emit([input_problem_row(self.scan_id, self.attempt, line, DomainStatus.INTERNAL_ERROR,
                                            describe_bug(exc), datetime.now(UTC))])

    def _resolver_trouble(self, row: DomainRow) -> None:
        """A warning at the 1st, 10th, 100th, ... lookup that failed on our side of DNS: a dying or
        rate-limiting resolver shows in the log early, without a line per domain."""
        self._trouble += 1
        if self._trouble >= self._next_trouble_warning:
            self._next_trouble_warning *= 10
            _log.warning("DNS trouble: %d domains failed on the resolver so far (latest %s: %s %s); check "
                         "--resolver, --dns-qps and --dns-timeout", self._trouble, row.domain, row.status.value,
                         row.status_detail)

    def _count(self, row: DomainRow) -> None:
        stats = self.stats
        stats.domains_done += 1
        stats.verdicts[row.starttls.value] = stats.verdicts.get(row.starttls.value, 0) + 1
        if row.status.value.startswith("dns_"):
            stats.dns_failures += 1
        if row.status in _RESOLVER_TROUBLE:
            self._resolver_trouble(row)
        if row.starttls is not StarttlsVerdict.NOT_APPLICABLE:
            stats.with_mail_hosts += 1
        if row.starttls is StarttlsVerdict.ALL:
            stats.starttls_all += 1

    async def _emit_probe_rows(self, rows: Sequence[ProbeRow | SessionRow]) -> None:
        for row in rows:
            if isinstance(row, ProbeRow):
                self.health.probe(row.failure_class, row.failure_detail)
                if not row.tls_ok:
                    self.stats.probe_failures += 1
        await self._emit(rows)

    async def _emit_domain(self, rows: list[Any]) -> None:
        """A domain's rows. Rows carrying a DNS failure wait until the DNS window has moved past them.

        If the window trips meanwhile (our resolver died), they are dropped instead of written: the
        failure was ours, and the resumed scan does those domains again (scanner.health).
        """
        if _dns_failed(rows):
            self._held.append((self.health.dns_seen, rows))
        else:
            await self._emit(rows)
        await self._release_held()

    async def _release_held(self, everything: bool = False) -> None:
        window = self.health.dns_window
        while self._held and (everything or self._held[0][0] + window <= self.health.dns_seen):
            await self._emit(self._held.popleft()[1])

    async def _emit(self, rows: Sequence[Any]) -> None:
        if self.breakdown is not None:
            return  # our side is broken: rows finished now would record that as the Internet's state
        await self._row_queue.put(rows)

    async def _write_rows(self, writer: RowSink) -> None:
        interval = self.config.output.flush_interval
        last_flush = time.monotonic()
        queue = self._row_queue
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=interval)
            except TimeoutError:
                first = ()
            # Take everything already queued: the writer is one task among thousands and gets one turn
            # per loop iteration, so one item per turn would let the queue fill up behind it.
            batches = [first]
            while batches[-1] is not None and not queue.empty():
                batches.append(queue.get_nowait())
            started = time.monotonic()
            for rows in batches:
                if rows is not None:
                    writer.write(rows)
                    for row in rows:
                        self.written.count_row(row)
            if started - last_flush >= interval:
                writer.commit()  # bounds what a crash can lose to about one interval of work
                last_flush = time.monotonic()
            self.stats.writer_seconds += time.monotonic() - started
            if batches[-1] is None:
                return

    async def _tick(self, on_tick: Callable[[ScanStats], None]) -> None:
        while True:
            self._sync_stats()
            on_tick(self.stats)
            await asyncio.sleep(0.25)

    def _sync_stats(self) -> None:
        if self._probe_service is not None:
            self.stats.probes_requested = self._probe_service.requested
            self.stats.probes_done = self._probe_service.completed
            self.stats.probes_in_flight = self._probe_service.in_flight
        if self._resolver is not None:
            self.stats.dns_queries = self._resolver.queries_sent
        self.stats.mail_sets_reused = self._links.mail_set_hits

    async def _shutdown(self, writer: RowSink, writer_task: asyncio.Task[None], attempt: Attempt) -> None:
        """Drain the writer, add the run row, finalize every file — also after a cancellation.

        The record is saved before the final commit and again after it: whichever moment a kill lands,
        the next attempt finds this one either finished or ``running`` (then counted from its rows).
        After a failure of the writer itself nothing more is written (the disk may be full): the open
        segment is abandoned, so the dataset holds exactly the committed segments and resumes from them.
        """
        self._sync_stats()
        if self._resolver is not None:
            await self._resolver.close()
        if not writer_task.done():
            await self._release_held(everything=True)  # dropped by _emit after a breakdown
            await self._row_queue.put(None)
            await asyncio.wait({writer_task})
        out_dir = self.config.output.out_dir
        if writer_task.cancelled() or writer_task.exception() is not None:
            self.completed = False  # computed before the drain; the writer died while draining
            writer.abandon()
            self._finish_attempt(attempt)
            with contextlib.suppress(OSError):  # the disk may be full: the next attempt then counts it killed
                self.record.save(out_dir)
            return
        try:
            self._finish_attempt(attempt)
            self.record.save(out_dir)
            writer.write([attempt.run_row(self.scan_id, str(self.source))])
            writer.close()
            self.record.save(out_dir, self._run_extra())
            if self.completed:
                mark_complete(out_dir)  # last: "complete" only once everything else is on disk
        except Exception as exc:  # disk full at the last commit: still the writer's failure, reported as such
            self.completed = False
            self._note_fatal("writer", exc)
            writer.abandon()
            self._finish_attempt(attempt)  # now failed, with the writer's message
            with contextlib.suppress(OSError):
                self.record.save(out_dir)

    def _finish_attempt(self, attempt: Attempt) -> None:
        s = self.stats
        attempt.finished_at = datetime.now(UTC)
        if self.completed:
            attempt.outcome = AttemptOutcome.COMPLETED
        elif self.breakdown is not None:
            attempt.outcome = AttemptOutcome.UNAVAILABLE
        elif self.failure is not None or self.input_error is not None:
            attempt.outcome = AttemptOutcome.FAILED
        else:
            attempt.outcome = AttemptOutcome.INTERRUPTED
        attempt.message = self.stop_message
        counts = self.written
        counts.input_lines, counts.dns_queries = s.lines, s.dns_queries
        counts.resumed_lines, counts.skipped_lines = s.resumed, self.input_tally.skipped
        attempt.counts = counts

    def _run_extra(self) -> dict[str, Any]:
        """What run.json says beside the scan record: time, where it went, input and DNS trouble."""
        extra: dict[str, Any] = {"elapsed_s": round(self.stats.elapsed(), 3), "timing": self._timing_json()}
        if self.input_error is not None:
            extra["input_error"] = str(self.input_error)
        if self._resolver is not None:  # malformed or unsolicited DNS datagrams, dropped (dns.transport)
            extra["dns_dropped_datagrams"] = self._resolver.dropped_datagrams
        return extra

    def _timing_json(self) -> dict[str, Any]:
        """Where the time went: per-domain phase means, the writer's share, and the stage monitor."""
        s = self.stats
        done = max(1, s.domains_done)
        elapsed = max(1e-9, s.elapsed())
        out: dict[str, Any] = {
            "domain_mean_ms": {"dns": round(1000 * s.dns_seconds / done, 2),
                               "probe_wait": round(1000 * s.probe_wait_seconds / done, 2),
                               "policies": round(1000 * s.policy_seconds / done, 2),
                               "verdicts": round(1000 * s.verdict_seconds / done, 3)},
            "writer_share": round(s.writer_seconds / elapsed, 4),
            "cpu_s": round(time.process_time(), 2),
            "mail_sets_reused": s.mail_sets_reused,
        }
        if self._monitor is not None:
            out["monitor"] = self._monitor.to_json()
        return out
