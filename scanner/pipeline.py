"""Wiring of the scan: input → DNS workers → probe workers → one writer, joined by bounded queues.

This module moves work between stages and owns their lifetimes; it parses nothing and judges
nothing (that is input, dns, smtp, certs and verdicts). Memory is bounded by the queue sizes and by
``max_domains_in_flight`` (domains resolved and waiting for their probes), never by the input size;
the per-address probe cache holds one small summary per distinct address.

Shape::

    reader ──(domain_queue)──> DNS workers ──request──> ProbeService queue ──> probe workers
       │                           │                                              │
       │                           └── finisher task per domain (awaits probes)   │
       └──────────────────────────────────(row_queue)─────────────────────────────┴──> writer
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scanner import __version__
from scanner.certs import TrustStore
from scanner.config import ScanConfig
from scanner.dns.lookup import DomainDns, DomainResolver
from scanner.dns.resolver import DnsResolver
from scanner.errors import describe_bug
from scanner.input import InputLine, InputTally, open_lines, read_domains
from scanner.monitor import Gauge, StageMonitor
from scanner.net.addresses import AddressPolicy, ExcludeList
from scanner.output.parquet import DatasetWriter
from scanner.output.rows import SCHEMA_VERSION, DomainRow, ProbeRow, RunRow
from scanner.policy.domain import DomainPolicies, PolicyChecker
from scanner.probe_cache import SummaryCache
from scanner.probing import ProbeService, ProbeSummary
from scanner.providers import psl_version
from scanner.resume import ResumeState, mark_complete
from scanner.seen import SeenDomains
from scanner.status import DomainStatus, StarttlsVerdict
from scanner.verdicts import LinkJudge, build_domain_rows, input_problem_row, mx_tls_compliance

__all__ = ["Scan", "ScanStats", "load_trust_store"]

# How many lines the reader handles before yielding to other tasks when its queue has room.
_READER_YIELD_EVERY = 256


# Cyclic-GC thresholds while a scan runs. With CPython's defaults (700, 10, 10) a scan spent about a
# third of its CPU in the collector (measured by the stage monitor: 56 s of 174 s at 200k domains),
# mostly in full collections over the long-lived caches. Nearly all of a scan's garbage is freed by
# reference counting; the collector only has to find the rare cycles (exception tracebacks, task
# graphs), so it can run far less often. The previous thresholds are restored when the scan ends.
_SCAN_GC_THRESHOLDS = (100_000, 20, 10)


@contextlib.contextmanager
def _scan_gc_thresholds() -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(*_SCAN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


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
    probe_wait_seconds: float = 0.0
    policy_seconds: float = 0.0
    verdict_seconds: float = 0.0
    writer_seconds: float = 0.0
    domains_in_flight: int = 0
    dns_busy: int = 0

    @property
    def rows_done(self) -> int:
        return self.domains_done + self.invalid + self.duplicates + self.excluded + self.resumed

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Scan:
    """One scan of one input into one output directory."""

    def __init__(
        self,
        config: ScanConfig,
        source: str | Path,
        trust: TrustStore,
        exclude: ExcludeList | None = None,
        scan_id: str | None = None,
        resume: ResumeState | None = None,
    ) -> None:
        self.config = config
        self.resume = resume
        self.source = source
        self.scan_id = scan_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
        self.stats = ScanStats()
        self._trust = trust
        self._exclude = exclude or ExcludeList()
        self._row_queue: asyncio.Queue[Sequence[Any] | None] = asyncio.Queue(maxsize=1024)
        self._domain_queue: asyncio.Queue[InputLine | None] = asyncio.Queue(maxsize=config.dns.workers * 2)
        self._in_flight = asyncio.Semaphore(config.max_domains_in_flight)
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

    async def run(self, on_tick: Callable[[ScanStats], None] | None = None) -> ScanStats:
        """Run to the end of the input (or until cancelled); the dataset is valid either way."""
        with _scan_gc_thresholds():
            return await self._run(on_tick)

    async def _run(self, on_tick: Callable[[ScanStats], None] | None) -> ScanStats:
        started_at = datetime.now(UTC)
        out = self.config.output
        first_segment = self.resume.next_segment if self.resume else 0
        writer = DatasetWriter(out.out_dir, out.rows_per_file, out.row_group_size, first_segment)
        writer_task = asyncio.create_task(self._write_rows(writer), name="writer")
        ticker = asyncio.create_task(self._tick(on_tick), name="progress") if on_tick else None
        self._install_signal_handlers()
        try:
            await self._run_stages()
            self.completed = not self.stopping
        finally:
            self._remove_signal_handlers()
            if ticker:
                ticker.cancel()
            await self._shutdown(writer, writer_task, started_at)
            if on_tick:
                on_tick(self.stats)
        return self.stats

    def request_stop(self) -> None:
        """Stop taking new input; in-flight domains get ``stop_grace`` seconds, then are abandoned.

        Abandoned domains are not written, so resuming the scan (same command) does them again.
        """
        self.stopping = True
        self._stop_event.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        self._signals_installed = False

        def on_signal() -> None:
            if self.stopping and main is not None:
                main.cancel()  # a second Ctrl-C: abandon in-flight work at once
            self.request_stop()

        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal)
            self._signals_installed = True
        except (NotImplementedError, RuntimeError):  # not the main thread (tests), or no signals here
            return

    def _remove_signal_handlers(self) -> None:
        if getattr(self, "_signals_installed", False):
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def _run_stages(self) -> None:
        work = self.config.output.out_dir / ".work"
        with SummaryCache(work / "probes.sqlite", self.config.probe.summaries_in_memory) as done:
            await self._run_stages_with(done)

    async def _run_stages_with(self, done: SummaryCache) -> None:
        self._resolver = DnsResolver(self.config.dns)
        domains = DomainResolver(self._resolver, self._exclude)
        policy = AddressPolicy(self.config.safety.allow_private, self._exclude)
        self._probe_service = ProbeService(self.config, policy, self._trust, self._emit_probe_row, self.scan_id,
                                           done)
        if self.resume:
            self._probe_service.seed(self.resume.probes)
        if self.config.policy_checks:
            self._policies = PolicyChecker(self.config, self._resolver, policy, self._probe_service.connection_slot)
        probe_workers = [asyncio.create_task(self._probe_service.worker(), name=f"probe-{i}")
                         for i in range(self.config.probe.workers)]
        dns_workers = [asyncio.create_task(self._dns_worker(domains), name=f"dns-{i}")
                       for i in range(self.config.dns.workers)]
        self._monitor = StageMonitor(self._gauges(self._resolver, self._probe_service),
                                     progress=lambda: self.stats.rows_done)
        monitor = asyncio.create_task(self._monitor.run(), name="monitor")
        try:
            await self._read_input()
            drain = asyncio.create_task(self._drain(dns_workers, probe_workers))
            stop = asyncio.create_task(self._stop_event.wait())
            await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():
                # Stop requested: in-flight domains get a bounded grace period, then are abandoned.
                await asyncio.wait({drain}, timeout=self.config.stop_grace)
            stop.cancel()
            drain.cancel()
            await asyncio.gather(drain, stop, return_exceptions=True)
        finally:
            for task in (*dns_workers, *probe_workers, *self._finishers, monitor):
                task.cancel()
            await asyncio.gather(*dns_workers, *probe_workers, *self._finishers, monitor, return_exceptions=True)

    def _gauges(self, resolver: DnsResolver, probes: ProbeService) -> list[Gauge]:
        """Each stage's occupancy, in pipeline order (see ``scanner.monitor``)."""
        config, stats = self.config, self.stats
        return [
            Gauge("input_queue", self._domain_queue.qsize, self._domain_queue.maxsize),
            Gauge("dns_workers_busy", lambda: stats.dns_busy, config.dns.workers),
            Gauge("dns_queries_in_flight", lambda: resolver.in_flight, config.dns.concurrency),
            Gauge("domains_awaiting_probes", lambda: stats.domains_in_flight, config.max_domains_in_flight),
            Gauge("probe_queue", lambda: probes.queued, probes.queue_capacity),
            Gauge("probe_workers_busy", lambda: probes.in_flight, config.probe.workers),
            Gauge("connections_open", lambda: probes.connections_open, config.probe.max_connections),
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
        done = self.resume.done_lines if self.resume else None
        with SeenDomains(self.config.output.out_dir / ".work" / "seen.sqlite") as seen:
            for count, line in enumerate(read_domains(open_lines(self.source), self.input_tally), start=1):
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
                if count % _READER_YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    async def _admit(self, line: InputLine, seen: SeenDomains) -> None:
        now = datetime.now(UTC)
        if line.domain is None:
            self.stats.invalid += 1
            await self._emit([input_problem_row(self.scan_id, line, DomainStatus.INVALID_INPUT, line.error or "", now)])
            return
        first = seen.first_seen(line.domain, line.line_no)
        if first is not None:
            self.stats.duplicates += 1
            await self._emit([input_problem_row(self.scan_id, line, DomainStatus.DUPLICATE,
                                                f"same domain as line {first}", now, duplicate_of_line=first)])
            return
        if self._exclude.excludes_name(line.domain):
            self.stats.excluded += 1
            await self._emit([input_problem_row(self.scan_id, line, DomainStatus.EXCLUDED,
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
                dns = await domains.resolve(line.domain)
                futures = await self._request_probes(dns)
            except Exception as exc:  # a bug: recorded as an internal_error row, the scan goes on
                self._release_domain()
                await self._finish_with_bug(line, exc)
                continue
            finally:
                stats.dns_busy -= 1
                stats.dns_seconds += time.monotonic() - started
            task = asyncio.create_task(self._finish_domain(line, dns, futures))
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
        self, line: InputLine, dns: DomainDns, futures: dict[str, asyncio.Future[ProbeSummary]]
    ) -> None:
        stats = self.stats
        try:
            t0 = time.monotonic()
            if all(f.done() for f in futures.values()):  # shared probes finished long ago: no gather
                summaries = {address: f.result() for address, f in futures.items()}
            else:
                summaries = dict(zip(futures, await asyncio.gather(*futures.values()), strict=True))
            t1 = time.monotonic()
            policies = await self._check_policies(dns, summaries)
            t2 = time.monotonic()
            row, mx_rows = build_domain_rows(self.scan_id, line, dns, summaries, self.config.probe.port,
                                             datetime.now(UTC), policies, self._links)
            t3 = time.monotonic()
            stats.probe_wait_seconds += t1 - t0
            stats.policy_seconds += t2 - t1
            stats.verdict_seconds += t3 - t2
            self._count(row)
            await self._emit([row, *mx_rows])
        except Exception as exc:
            await self._finish_with_bug(line, exc)
        finally:
            self._release_domain()

    def _release_domain(self) -> None:
        self.stats.domains_in_flight -= 1
        self._in_flight.release()

    async def _check_policies(self, dns: DomainDns, summaries: dict[str, ProbeSummary]) -> DomainPolicies | None:
        """MTA-STS, TLS-RPT and TLSA for a domain that has mail hosts (after its probes: see policy.domain)."""
        if self._policies is None or dns.status is not DomainStatus.OK:
            return None
        hosts = [h.name for h in dns.hosts]
        return await self._policies.check(dns.domain, hosts, mx_tls_compliance(dns, summaries, self._links))

    async def _finish_with_bug(self, line: InputLine, exc: Exception) -> None:
        self.stats.internal_errors += 1
        self.stats.domains_done += 1
        await self._emit([input_problem_row(self.scan_id, line, DomainStatus.INTERNAL_ERROR, describe_bug(exc),
                                            datetime.now(UTC))])

    def _count(self, row: DomainRow) -> None:
        stats = self.stats
        stats.domains_done += 1
        stats.verdicts[row.starttls.value] = stats.verdicts.get(row.starttls.value, 0) + 1
        if row.status.value.startswith("dns_"):
            stats.dns_failures += 1
        if row.starttls is not StarttlsVerdict.NOT_APPLICABLE:
            stats.with_mail_hosts += 1
        if row.starttls is StarttlsVerdict.ALL:
            stats.starttls_all += 1

    async def _emit_probe_row(self, row: ProbeRow) -> None:
        if not row.tls_ok:
            self.stats.probe_failures += 1
        await self._emit([row])

    async def _emit(self, rows: Sequence[Any]) -> None:
        await self._row_queue.put(rows)

    async def _write_rows(self, writer: DatasetWriter) -> None:
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

    async def _shutdown(self, writer: DatasetWriter, writer_task: asyncio.Task[None], started_at: datetime) -> None:
        """Drain the writer, add the run row, finalize every file — also after a cancellation."""
        self._sync_stats()
        if self._resolver is not None:
            await self._resolver.close()
        if not writer_task.done():
            await self._row_queue.put(None)
            await writer_task
        writer.write([self._run_row(started_at)])
        writer.close()
        if self.completed:
            mark_complete(self.config.output.out_dir)
        (self.config.output.out_dir / "run.json").write_text(
            json.dumps(self._run_json(started_at), indent=2, default=str) + "\n", encoding="utf-8"
        )

    def _run_row(self, started_at: datetime) -> RunRow:
        s = self.stats
        return RunRow(
            scan_id=self.scan_id, tool_version=__version__, schema_version=SCHEMA_VERSION,
            started_at=started_at, finished_at=datetime.now(UTC), input=str(self.source),
            config_json=json.dumps(dataclasses.asdict(self.config), default=str, sort_keys=True),
            input_lines=s.lines, domains=s.domains_queued, invalid_lines=s.invalid, duplicate_lines=s.duplicates,
            probes=s.probes_done, dns_queries=s.dns_queries, completed=self.completed,
            attempt=self.resume.attempt if self.resume else 1, resumed_lines=s.resumed,
            skipped_lines=self.input_tally.skipped, psl_version=psl_version(),
        )

    def _run_json(self, started_at: datetime) -> dict[str, Any]:
        row = self._run_row(started_at)
        data = dataclasses.asdict(row)
        data["config"] = json.loads(data.pop("config_json"))
        data["verdicts"] = dict(self.stats.verdicts)
        data["elapsed_s"] = round(self.stats.elapsed(), 3)
        data["timing"] = self._timing_json()
        return data

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
        }
        if self._monitor is not None:
            out["monitor"] = self._monitor.to_json()
        return out
