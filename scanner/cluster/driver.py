"""The driver of a scan on several workers (``scan --workers N`` / ``--cluster ADDRESS``).

It is a ``Scan`` whose stages are remote: the driver keeps everything that is one per scan (the input,
read once in any form; the scan record with its one scan id and attempt; the run rows; signals and the
progress display) and sends the input lines, in batches, to the worker owning each line's domain
(scanner.cluster.shard). A batch stays in the driver's hands until the worker says all its rows are
committed; when a worker dies (kill -9, a lost node) Ray restarts its actor, the driver starts it
again and resubmits the unacknowledged batches in order, and the worker skips every line already
committed: every line is written exactly once. When the driver itself dies its actors die with it, and
the same command resumes from all the journals (scanner.resume, scanner.cluster.state).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from scanner.certs import TrustStore
from scanner.cluster import ClusterUnavailable
from scanner.cluster.journal import next_segment_in
from scanner.cluster.shard import SEGMENT_STRIDE, worker_config, worker_of_line
from scanner.cluster.worker import ScanWorker
from scanner.config import ScanConfig
from scanner.input import InputError, read_domains_async, stream_lines
from scanner.net.addresses import ExcludeList
from scanner.output.parquet import read_journal
from scanner.pipeline import Scan, ScanStats
from scanner.records import InputLine
from scanner.resume import ResumeState
from scanner.scan_record import committed_counts

__all__ = ["BATCH_LINES", "LOCAL_NODE_IP", "ClusterScan"]

_log = logging.getLogger(__name__)

# A one-machine cluster listens on loopback only. Not 127.0.0.1 itself: Ray swaps that one for the
# machine's "remotely reachable" address (ray._private.services.resolve_ip_for_localhost).
LOCAL_NODE_IP = "127.0.0.2"
BATCH_LINES = 512  # input lines per call to a worker
_QUEUED_BATCHES = 4  # batches waiting per worker in the driver (the worker queues a few more)
_POLL_SECONDS = 0.25
_REVIVE_SECONDS = 300.0  # how long a restarting worker may take before the scan gives up on it
# Counters of ScanStats that are the driver's own (it reads the input), not summed over workers.
_DRIVER_FIELDS = frozenset({"started", "lines", "resumed", "verdicts"})


def _connect(workers: int, address: str | None) -> int:
    """Start Ray on this machine (``address`` None) or join a running cluster; the number of workers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to anyone
    try:
        if address is None:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address=LOCAL_NODE_IP,
                     configure_logging=False, log_to_driver=True)
        else:
            ray.init(address=address, configure_logging=False, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot start or join the Ray cluster ({address or 'local'}): {exc}") from exc
    if workers > 0:
        return workers
    return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]


@dataclasses.dataclass(slots=True)
class _Worker:
    handle: Any
    queue: asyncio.Queue[list[InputLine] | None]
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    generation: int = 0  # lives seen (a restart makes a new one)
    unacked: dict[int, list[InputLine]] = dataclasses.field(default_factory=dict)
    input_finished: bool = False
    stats: ScanStats | None = None
    earlier: list[ScanStats] = dataclasses.field(default_factory=list)  # last counters of dead lives
    remote: tuple[int, int] = (0, 0)
    pid: int = 0
    node: str = ""
    usage: dict[str, float] = dataclasses.field(default_factory=dict)  # the worker's process, at its close


class ClusterScan(Scan):
    """One attempt of a scan whose stages run on Ray workers (see the module's docstring)."""

    def __init__(self, config: ScanConfig, source: str | Path, trust: TrustStore, exclude: ExcludeList | None,
                 resume: ResumeState | None, vantage: str | None, workers: int, address: str | None) -> None:
        super().__init__(config, source, trust, exclude, resume=resume, vantage=vantage)
        if resume is not None:  # the driver's own segments (run rows) are numbered below every worker's range
            resume.next_segment = next_segment_in(read_journal(config.output.out_dir), range(SEGMENT_STRIDE))
        self.requested_workers = workers
        self.address = address
        self._workers: list[_Worker] = []
        self._batch_ids = 0
        self.restarts = 0
        self._worker_count = 0  # workers, once connected

    @property
    def remote_requests(self) -> tuple[int, int]:
        """(actor calls, (address, host) pairs) between workers for probes, over all workers."""
        return (sum(w.remote[0] for w in self._workers), sum(w.remote[1] for w in self._workers))

    def connect(self) -> None:
        """Start Ray here or join the cluster (before the attempt is recorded); ``ClusterUnavailable``."""
        self._worker_count = _connect(self.requested_workers, self.address)

    async def _run_stages(self) -> None:
        if not self._worker_count:
            self.connect()
        try:
            await self._run_workers(ray.remote(ScanWorker), self._worker_count)
        finally:
            for worker in self._workers:
                ray.kill(worker.handle)
            ray.shutdown()  # stops a cluster of our own; leaves one we joined running

    async def _run_workers(self, actor: Any, count: int) -> None:
        options = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 10_000, "num_cpus": 1,
                   "scheduling_strategy": "SPREAD"}
        exclude = self._exclude
        for index in range(count):
            handle = actor.options(**options).remote(index, count, worker_config(self.config, count, index),
                                                     str(self.source), self.scan_id, self.attempt, exclude)
            self._workers.append(_Worker(handle, asyncio.Queue(maxsize=_QUEUED_BATCHES)))
        handles = [w.handle for w in self._workers]
        started = await asyncio.gather(*(w.handle.start.remote(handles) for w in self._workers))
        for worker, (pid, node) in zip(self._workers, started, strict=True):
            worker.pid, worker.node = pid, node
        self._write_pids()
        pollers = [asyncio.create_task(self._poll(w)) for w in self._workers]
        feeders = [asyncio.create_task(self._feed(w)) for w in self._workers]
        try:
            await self._read_and_route()
            await asyncio.gather(*feeders)
            for worker in self._workers:
                await self._poll_once(worker)
            await asyncio.gather(*(self._close(w) for w in self._workers))
        finally:
            for task in (*pollers, *feeders):
                task.cancel()
            await asyncio.gather(*pollers, *feeders, return_exceptions=True)
        self._sync_stats()
        self.written.take_rows(committed_counts(self.config.output.out_dir).get(self.attempt, self.written))
        lost = sum(len(w.unacked) for w in self._workers)
        if lost and not self.stopping:
            raise RuntimeError(f"{lost} batches of input lines were not committed by their workers")

    def _write_pids(self) -> None:
        """Each worker's process id in OUT/.work/workers (for operators, and tests that kill one)."""
        directory = self.config.output.out_dir / ".work" / "workers"
        directory.mkdir(parents=True, exist_ok=True)
        for index, worker in enumerate(self._workers):
            (directory / f"w{index:03d}.pid").write_text(f"{worker.pid} {worker.node}\n", encoding="ascii")

    async def _read_and_route(self) -> None:
        done = self.resume.done_lines if self.resume else None
        count = len(self._workers)
        pending: list[list[InputLine]] = [[] for _ in range(count)]
        try:
            async for batch in read_domains_async(stream_lines(self.source, 256), self.input_tally):
                for line in batch:
                    if self.stopping:
                        return
                    self.stats.lines += 1
                    if done is not None and line.line_no in done:
                        self.stats.resumed += 1
                        continue
                    index = worker_of_line(line, count)
                    pending[index].append(line)
                    if len(pending[index]) >= BATCH_LINES:
                        await self._workers[index].queue.put(pending[index])
                        pending[index] = []
        except InputError as exc:
            self.input_error = exc
        finally:
            for index, worker in enumerate(self._workers):
                if pending[index] and not self.stopping:
                    await worker.queue.put(pending[index])
                await worker.queue.put(None)

    async def _feed(self, worker: _Worker) -> None:
        while (lines := await worker.queue.get()) is not None:
            if self.stopping:  # Ctrl-C or a worker's failure: what is not sent yet is left to the resume
                continue
            batch = self._batch_ids
            self._batch_ids += 1
            async with worker.lock:
                worker.unacked[batch] = lines
                await self._call(worker, lambda b=batch, ls=lines: worker.handle.admit.remote(b, ls))
        async with worker.lock:
            worker.input_finished = True
        await self._call_unlocked(worker, worker.handle.finish_input.remote)

    async def _call(self, worker: _Worker, call: Any) -> Any:
        """A call to a worker, with ``worker.lock`` held: after a restart the batches go again, in order."""
        try:
            return await call()
        except RayActorError:
            await self._revive(worker)  # which resent every unacknowledged batch, this one included
            return None

    async def _call_unlocked(self, worker: _Worker, call: Any) -> Any:
        while True:
            generation = worker.generation
            try:
                return await call()
            except RayActorError:
                async with worker.lock:
                    if worker.generation == generation:
                        await self._revive(worker)

    async def _revive(self, worker: _Worker) -> None:
        """The worker's actor died: wait for Ray to restart it, start it, resubmit its batches (lock held)."""
        index = self._workers.index(worker)
        _log.warning("worker %d died: restarting it and resubmitting %d batches", index, len(worker.unacked))
        self.restarts += 1
        if worker.stats is not None:
            worker.earlier.append(worker.stats)
            worker.stats = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REVIVE_SECONDS
        while True:
            try:
                worker.pid, worker.node = await worker.handle.start.remote([w.handle for w in self._workers])
                self._write_pids()
                for batch, lines in sorted(worker.unacked.items()):
                    await worker.handle.admit.remote(batch, lines)
                if worker.input_finished:
                    worker.handle.finish_input.remote()  # its reader ends again; the feeder's call waits
                break
            except RayActorError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)
        worker.generation += 1

    async def _poll(self, worker: _Worker) -> None:
        stop_sent = False
        while True:
            await asyncio.sleep(_POLL_SECONDS)
            if self.stopping and not stop_sent:  # in-flight domains get the grace period, in every worker
                worker.handle.stop.remote()
                stop_sent = True
            await self._poll_once(worker)

    async def _poll_once(self, worker: _Worker) -> None:
        generation = worker.generation
        try:
            stats, acked, problem, remote = await worker.handle.progress.remote()
        except RayActorError:
            async with worker.lock:
                if worker.generation == generation:
                    await self._revive(worker)
            return
        worker.stats, worker.remote = stats, remote
        for batch in acked:
            worker.unacked.pop(batch, None)
        if problem is not None and self._fatal is None:
            self._note_fatal(f"worker {self._workers.index(worker)}", RuntimeError(problem))

    async def _close(self, worker: _Worker) -> None:
        worker.stats, worker.usage = await self._call_unlocked(worker, worker.handle.close.remote)

    def _run_extra(self) -> dict[str, Any]:
        """run.json: also each worker's process (node, CPU, peak RSS, requests to other owners) and restarts."""
        extra = super()._run_extra()
        extra["cluster"] = {"address": self.address or "local", "restarts": self.restarts,
                            "workers": [{"node": w.node, **w.usage} for w in self._workers]}
        return extra

    def _sync_stats(self) -> None:
        """The display's counters: the driver's own, plus every worker's (and its earlier lives')."""
        total = self.stats
        for f in dataclasses.fields(ScanStats):
            if f.name not in _DRIVER_FIELDS:
                setattr(total, f.name, type(getattr(total, f.name))())
        total.verdicts = {}
        for worker in self._workers:
            for part in (*worker.earlier, *([worker.stats] if worker.stats is not None else [])):
                for f in dataclasses.fields(ScanStats):
                    if f.name not in _DRIVER_FIELDS:
                        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
                for verdict, n in part.verdicts.items():
                    total.verdicts[verdict] = total.verdicts.get(verdict, 0) + n
