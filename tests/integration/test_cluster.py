"""A scan on a Ray cluster (scanner.cluster) against real servers: the same dataset as one process,
one probe per address for the whole cluster, politeness held by the owners, exactly-once after kill -9.

Ray is started for real: ``--workers 2`` starts it on this machine; the ``--cluster`` test starts a head
and a second node process (``ray start --block``, on two loopback addresses) so that work crosses process
and node boundaries. scripts/test.sh installs Ray and sets SMTP_TLS_SURVEY_REQUIRE_RAY, so there a
missing Ray fails these tests; elsewhere they skip, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from scanner.cli import main
from scanner.cluster.shard import owner_of_address
from scanner.exit_codes import ExitCode
from tests.integration.scanning import STANDARD_OPTIONS, scan, scan_command
from tests.integration.test_politeness import PREFIX_LIMIT, CountingServer, server  # noqa: F401 (a fixture)
from worlds.dns import NsdServer, Zone
from worlds.ports import loopback_host, pick_loopback_block
from worlds.raycluster import RAY_ENV, RayCluster, ray_cluster
from worlds.scenario import World, standard_world

pytestmark = pytest.mark.slow

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("SMTP_TLS_SURVEY_REQUIRE_RAY"):
        raise
    pytest.skip("Ray is not installed: pip install -e '.[test,ray]' (scripts/setup.sh does)", allow_module_level=True)

# Columns that differ between two scans of the same world by construction (when, which attempt, how long).
_VOLATILE = {"scan_id", "attempt"}


# An address that is the MX of several names is probed under the name that asked first, its row lists
# the names that asked while it ran, and the other names get their own SNI session or not (scanner.sni):
# all of that follows the order the requests arrive, in one process (DNS timing) as on a cluster (which
# worker asks first). Those columns are left out; the verdicts, grades and certificate fields of every
# probe and every link are compared whole.
# enum_sessions of the server that fails every handshake (mx-tlsfail) is 5 or 6 from one single-process
# scan of this world to the next (seen both ways on this machine): a count of connections, not a result.
_ARRIVAL_ORDER = {"probes": {"sni", "mx_hosts", "enum_sessions"}, "mx": {"cert_source"}, "sessions": set(),
                  "domains": set()}


def _stable(row: dict[str, Any], table: str) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _VOLATILE | _ARRIVAL_ORDER[table]
           and not k.endswith(("_at", "_ms", "_s"))}
    return out


def _rows_of(out: Path, table: str) -> list[str]:
    rows = _table(out, table)
    if table == "sessions":  # SNI sessions exist for the names that did not ask first (see above)
        rows = [r for r in rows if r["kind"] != "sni"]
    return sorted(repr(sorted(_stable(r, table).items())) for r in rows)


def _table(out: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(out / table).to_pylist()  # type: ignore[no-any-return]


def _same_dataset(expected: Path, found: Path) -> None:
    for table in ("domains", "mx", "probes", "sessions"):
        want, got = _rows_of(expected, table), _rows_of(found, table)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        assert want == got, f"{table} differs: only single-process {missing[:2]}; only cluster {extra[:2]}"


def _exactly_once(out: Path, input_lines: int) -> None:
    """Every input line once, every probe once, no link to a missing probe, one scan id."""
    domains = _table(out, "domains")
    lines = Counter(r["input_line"] for r in domains)
    assert len(lines) == input_lines and set(lines.values()) == {1}
    probes = Counter(r["probe_id"] for r in _table(out, "probes"))
    assert set(probes.values()) == {1}
    linked = {r["probe_id"] for r in _table(out, "mx") if r["probe_id"] is not None}
    assert linked <= set(probes)
    assert len({r["scan_id"] for t in ("domains", "mx", "probes", "run") for r in _table(out, t)}) == 1


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with standard_world(tmp_path_factory.mktemp("world"), pick_loopback_block()) as w:
        yield w


@pytest.fixture(scope="module")
def single(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    scan(world, out, *STANDARD_OPTIONS)
    return out


@pytest.fixture(scope="module")
def single_peaks(world: World, single: Path) -> dict[str, int]:
    """Per listener, the most connections at once the farm saw during the single-process scan. (A server
    that made the probe time out still holds its connection when the retry opens the next one: 2.)"""
    assert world.farm is not None
    return {key: stats.max_concurrent for key, stats in world.farm.stats().items()}


def test_workers_scan_equals_single_process_scan(world: World, single: Path, single_peaks: dict[str, int],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "w2"
    scan(world, out, *STANDARD_OPTIONS, "--workers", "2")
    _same_dataset(single, out)
    # Domains behind the same mail hosts share one judgement of them (scanner.verdicts), in each worker:
    # the counters reach run.json summed over the workers.
    reused = [json.loads((o / "run.json").read_text())["timing"]["mail_sets_reused"] for o in (single, out)]
    assert all(n > 0 for n in reused), reused
    _exactly_once(out, len(_table(single, "domains")))
    journals = sorted(p.name for p in (out / ".state").glob("segments*"))
    assert journals == ["segments", "segments-w000", "segments-w001"]
    # Server side: per address, never more connections at once than the single process made (the farm's
    # counters only grow: a larger peak would be this scan's). Most addresses: the default cap, one.
    assert world.farm is not None
    peaks = {key: stats.max_concurrent for key, stats in world.farm.stats().items()}
    assert peaks == single_peaks
    assert sorted(peaks.values())[len(peaks) // 2] == 1


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A Ray head and a second node process on this machine (one CPU each), on two loopback addresses."""
    with ray_cluster(tmp_path_factory.mktemp("ray"), pick_loopback_block()) as cluster:
        yield cluster


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_node_cluster_scan_equals_single_process_scan(world: World, single: Path, two_nodes: RayCluster,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    # A process of its own: Ray keeps one connection (and auth token) per process.
    command = [*scan_command(world.domains_file, out, world.resolver, "--ca-file", str(world.ca_file),
                             "--per-ip-interval", "0", "--allow-private", *STANDARD_OPTIONS),
               "--cluster", two_nodes.address, "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **two_nodes.env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _same_dataset(single, out)
    _exactly_once(out, len(_table(single, "domains")))
    # One CPU per node and per worker: the two workers ran on the two nodes.
    nodes = {(out / ".work" / "workers" / f"{w}.pid").read_text().split()[1] for w in ("w000", "w001")}
    assert nodes == set(two_nodes.node_ips)


def test_politeness_holds_across_workers(server: tuple[CountingServer, NsdServer, Path]) -> None:  # noqa: F811
    """Domains of both workers ask for addresses of one /24: its owner alone connects, within the caps."""
    counting, nsd, workdir = server
    out = workdir / "out-workers"
    code = main(["scan", str(workdir / "domains.txt"), "-o", str(out), "--resolver", nsd.resolver,
                 "--allow-private", "--no-progress", "--ehlo-name", "polite-scanner.test", "--no-policy",
                 "--concurrency", "50", "--per-ip-interval", "0", "--workers", "2",
                 "--per-prefix-concurrency", str(PREFIX_LIMIT), "--throttle-retry", "0.4", "0.4"])
    assert code == 0
    assert counting.peak == PREFIX_LIMIT
    assert max(counting.per_address_peak.values()) == 1
    assert len({r["probe_id"] for r in _table(out, "probes")}) == len(_table(out, "probes"))


# A world slow enough to kill a process mid-scan: 20 addresses in two /24s, each taking a second per
# connection, at most two connections per /24; 120 domains (six per address), a duplicate and a bad line.
_SLOW_DELAY = 1.0
_SLOW_PER_BLOCK = 10


@pytest.fixture(scope="module")
def slow_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    blocks = [pick_loopback_block()]
    while True:  # one /24 per worker: each worker owns ten of the addresses and asks the other for ten
        blocks.append(pick_loopback_block())
        if owner_of_address(f"{blocks[0]}.10", 2) != owner_of_address(f"{blocks[1]}.10", 2):
            break
        blocks.pop()
    addresses = [loopback_host(b, 10 + i) for b in blocks for i in range(_SLOW_PER_BLOCK)]
    counting = CountingServer(blocks[0])
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[asyncio.Server] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(_SLOW_DELAY - 0.3)
        await counting.slow(reader, writer)

    async def start() -> None:
        for address in addresses:
            servers.append(await asyncio.start_server(slow, address, 25))
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    zone = Zone("slow.test", [])
    lines = []
    for i, address in enumerate(addresses):
        zone.a(f"mx{i}.slow.test.", address)
    for d in range(120):
        zone.mx(f"d{d}.slow.test.", 10, f"mx{d % len(addresses)}.slow.test.")
        lines.append(f"d{d}.slow.test")
    lines[60:60] = ["d3.slow.test", "not a domain!"]
    workdir = tmp_path_factory.mktemp("slow")
    (workdir / "domains.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    nsd = NsdServer(workdir / "nsd", [zone], address=loopback_host(blocks[0], 53), port=53)
    nsd.start()
    try:
        yield workdir / "domains.txt", nsd.resolver, len(lines)
    finally:
        nsd.stop()

        async def close() -> None:
            for srv in servers:
                srv.close()
                await srv.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _slow_command(domains: Path, resolver: str, out: Path) -> list[str]:
    return scan_command(domains, out, resolver, "--allow-private", "--no-policy", "--per-ip-interval", "0",
                        "--per-prefix-concurrency", "2", "--commit-interval", "0.3", "--throttle-retry", "0.1",
                        "--workers", "2")


def _committed(out: Path, worker: str, table: str = "domains") -> bool:
    journal = out / ".state" / f"segments-{worker}"
    return journal.exists() and f"{table}=".encode() in journal.read_bytes()


def _descendants(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def _stop_tree(driver: subprocess.Popen[bytes]) -> None:
    """The driver, if still running, and whatever of Ray it started (this test's processes only)."""
    children = _descendants(driver.pid)
    if driver.poll() is None:
        driver.kill()
    _kill_all(children)


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_answers_between_workers_do_not_multiply_commits(slow_world: tuple[Path, str, int],
                                                       tmp_path: Path) -> None:
    """Each worker asks the other for ten addresses, over several calls; with a commit interval longer than
    the scan, each journal holds the few commits of the scan's end, not one per answer (an owner that
    committed before every answer wrote a segment per call), and still every line and probe once."""
    domains, resolver, count = slow_world
    out = tmp_path / "out"
    # DNS at 30 queries/s spreads the domains (and so the first asks for each address) over ~15 s.
    command = [*_slow_command(domains, resolver, out), "--commit-interval", "600", "--dns-qps", "30"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _exactly_once(out, count)
    run = json.loads((out / "run.json").read_text())
    calls = [w["remote_calls"] for w in run["cluster"]["workers"]]
    assert min(calls) >= 3, calls  # answers crossed both ways, in several calls
    for worker in ("w000", "w001"):
        segments = (out / ".state" / f"segments-{worker}").read_text().splitlines()
        assert len(segments) <= 3, (worker, calls, segments)


def test_kill_9_of_a_worker_mid_scan_loses_and_repeats_nothing(slow_world: tuple[Path, str, int],
                                                                tmp_path: Path) -> None:
    domains, resolver, count = slow_world
    out = tmp_path / "out"
    env = {**os.environ, **RAY_ENV}
    driver = subprocess.Popen(_slow_command(domains, resolver, out), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        # w000 has committed probes (it owns addresses that w001's domains wait for) and has more to do.
        _wait_for(lambda: _committed(out, "w000", "probes") or driver.poll() is not None, 240, "w000's probes")
        assert driver.poll() is None, driver.communicate()[0].decode()[-3000:]
        victim = int((out / ".work" / "workers" / "w000.pid").read_text().split()[0])
        os.kill(victim, signal.SIGKILL)
        output = driver.communicate(timeout=300)[0].decode()
    finally:
        _stop_tree(driver)
    assert driver.returncode == 0, output[-3000:]
    assert "worker 0 died" in output
    _exactly_once(out, count)
    journal = (out / ".state" / "segments-w000").read_text()
    assert journal.count("probes=") >= 2  # the restarted owner probed after the kill


def test_kill_9_of_the_driver_then_resume(slow_world: tuple[Path, str, int], tmp_path: Path) -> None:
    domains, resolver, count = slow_world
    out = tmp_path / "out"
    command = _slow_command(domains, resolver, out)
    env = {**os.environ, **RAY_ENV}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        _wait_for(lambda: any(_committed(out, w) for w in ("w000", "w001")) or driver.poll() is not None,
                  240, "a worker's commit")
        assert driver.poll() is None
        children = _descendants(driver.pid)
        driver.kill()  # SIGKILL: no handler, no clean-up
        driver.wait(30)
        time.sleep(2)
    finally:
        _kill_all(children)  # whatever of Ray outlived its driver: started by this test, stopped by it
    assert not (out / ".state" / "complete").exists()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _exactly_once(out, count)
    assert sorted(r["attempt"] for r in _table(out, "run")) == [1, 2]


def test_ctrl_c_stops_every_worker_and_the_same_command_resumes(slow_world: tuple[Path, str, int],
                                                                tmp_path: Path) -> None:
    """SIGINT to the driver: the workers stop taking lines, in-flight ones get the grace period, the
    attempt is recorded interrupted; the same command then finishes the scan, every line once."""
    domains, resolver, count = slow_world
    out = tmp_path / "out"
    command = _slow_command(domains, resolver, out)
    env = {**os.environ, **RAY_ENV}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _committed(out, "w000") or _committed(out, "w001") or driver.poll() is not None, 240,
                  "a worker's commit")
        assert driver.poll() is None
        driver.send_signal(signal.SIGINT)
        output = driver.communicate(timeout=180)[0].decode()
    finally:
        _stop_tree(driver)
    assert driver.returncode == ExitCode.INTERRUPTED, output[-3000:]
    assert not (out / ".state" / "complete").exists()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _exactly_once(out, count)
    outcomes = {r["attempt"]: r["outcome"] for r in _table(out, "run")}
    assert outcomes == {1: "interrupted", 2: "completed"}
