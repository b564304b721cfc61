"""End-to-end throughput of a scan over a synthetic loopback world.

    python -m benchmarks.bench_scan [--domains 100000] [--addresses 1000] [--peer-sample 100]

Builds the world (worlds/bench.py), starts nsd and the mail-server farm (in its own process, so the
scanner's figures are its own), runs ``python -m scanner scan`` as a child process and prints domains/s,
probes/s, DNS queries/s, CPU seconds per 1,000 domains and peak RSS of the scanner. With
``--peer-sample N`` it also runs checkdmarc (a peer tool that checks MX + STARTTLS) over the first N
domains of the same world in the same process tree, and prints the ratio of per-domain wall time.

Everything runs inside a network namespace the benchmark creates (``ip netns``; needs root): its only
interface is loopback and ``ip netns exec`` gives it its own /etc/resolv.conf pointing at the world's
nsd, so a tool that uses the system resolver (checkdmarc does, for MX host names) cannot send a packet
anywhere else. ``--no-netns`` runs in the current namespace (then the peer comparison is refused).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.junk import add_junk, physical_lines
from worlds.bench import BenchWorld, add_sni_hosting, add_wildcard_domains, build
from worlds.dns import NsdServer
from worlds.latency import LatencyFrontProcess, TcpRoute, UdpRoute
from worlds.ports import pick_loopback_block
from worlds.procs import tree_cpu_seconds
from worlds.raycluster import ray_cluster
from worlds.smtp import ListenerStats, SmtpFarmProcess

FARM_CHUNK = 12_000


@dataclass(frozen=True)
class ChildRun:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int
    tree_rss_mb: float = 0.0  # peak resident memory of the whole process tree (sampled)


def run_child(command: list[str], log: Path, env: dict[str, str] | None = None,
              also: tuple[int, ...] = ()) -> ChildRun:
    """Run a child to completion; CPU and peak RSS come from getrusage(RUSAGE_CHILDREN) deltas.

    ru_maxrss of RUSAGE_CHILDREN is the largest of the children reaped so far; nsd and the farm are
    still running, so the only child reaped here is this one.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    tree_cpu = tree_rss = 0.0
    also_before = sum(tree_cpu_seconds(pid) for pid in also)  # a cluster's node processes (--ray-nodes)
    with log.open("wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        # A scan on Ray (--workers) runs in processes that are not this one's children (Ray's own and its
        # workers, under the driver): their CPU and memory are sampled from /proc while they live.
        while child.poll() is None:
            tree_cpu = max(tree_cpu, sum(tree_cpu_seconds(pid) for pid in (child.pid, *also)) - also_before)
            tree_rss = max(tree_rss, sum(tree_rss_mb(pid) for pid in (child.pid, *also)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.5)
        code = child.returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ChildRun(wall, max(cpu, tree_cpu), after.ru_maxrss / 1024, code, tree_rss)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its living descendants, in MB (/proc/PID/statm, field 2)."""
    total, stack, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/statm", encoding="ascii") as fh:
                total += int(fh.read().split()[1]) * page
            with open(f"/proc/{current}/task/{current}/children", encoding="ascii") as fh:
                stack.extend(int(p) for p in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 2**20


def scan_command(world: BenchWorld, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "scanner", "scan", str(world.domains_file), "-o", str(out), "--overwrite",
        "--resolver", f"{world.dns_address}:53", "--ca-file", str(world.ca_file), "--allow-private",
        "--ehlo-name", "bench-scanner.bench.test", "--per-ip-interval", "0", "--no-progress",
        "--concurrency", str(args.concurrency), "--dns-qps", str(args.dns_qps),
        "--dns-concurrency", str(args.dns_concurrency), "--dns-workers", str(args.dns_workers),
        "--banner-timeout", "5", "--command-timeout", "5", "--tls-timeout", "5", "--throttle-retry", "1",
        "--per-prefix-concurrency", str(args.per_prefix),
        *(["--workers", str(args.workers)] if args.workers else []), *shlex.split(args.scan_args),
    ]


def peer_command(venv: Path, domains: list[str], resolver: str) -> list[str]:
    return [str(venv / "bin" / "checkdmarc"), "--nameserver", resolver, "--timeout", "5", "--check-mx-tls",
            "-f", "json", *domains]


def ensure_peer(venv: Path) -> bool:
    """checkdmarc lives in its own virtualenv so its dependencies never touch the project's."""
    if (venv / "bin" / "checkdmarc").exists():
        return True
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "checkdmarc"], check=False)
    return result.returncode == 0


def run_in_netns(argv: list[str], second_octet: int) -> int:
    """Re-run this script inside a fresh network namespace whose resolv.conf points at the world's nsd."""
    name = f"sts-bench-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver 127.{second_octet}.255.53\n", encoding="utf-8")
        inner = [sys.executable, "-m", "benchmarks.bench_scan", *argv, "--inside-netns", "--second-octet",
                 str(second_octet)]
        return subprocess.run(["ip", "netns", "exec", name, *inner], check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--addresses", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--dns-qps", type=float, default=50_000)
    parser.add_argument("--dns-concurrency", type=int, default=1000)
    parser.add_argument("--dns-workers", type=int, default=1000)
    parser.add_argument("--per-prefix", type=int, default=64, help="connections per /24 (loopback farm: generous)")
    parser.add_argument("--peer-sample", type=int, default=0, help="domains for the checkdmarc comparison")
    parser.add_argument("--peer-venv", type=Path, default=Path(tempfile.gettempdir()) / "smtp-tls-survey-peer-venv")
    parser.add_argument("--wildcard-domains", type=int, default=0,
                        help="extra input domains answered by wildcard MX records (input grows, zone does not)")
    parser.add_argument("--sni-share", type=float, default=0.0,
                        help="share of the addresses that are shared hosts choosing certificates by SNI")
    parser.add_argument("--sni-names", type=int, default=50, help="MX names (domains) per shared-hosting address")
    parser.add_argument("--workers", type=int, default=0,
                        help="scan on Ray with N worker processes (scanner.cluster); 0: one process, no Ray")
    parser.add_argument("--ray-nodes", type=int, default=0,
                        help="start a Ray cluster of N node processes on this machine (one CPU each, "
                             "worlds/raycluster.py) and scan on it with --cluster")
    parser.add_argument("--scan-args", default="", help="extra scanner options, e.g. '--enumerate off --no-policy'")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="emulate this round-trip time to every mail server and to DNS (latency fronts)")
    parser.add_argument("--junk-share", type=float, default=0.0,
                        help="mix this share of junk lines (garbage, IDN, binary, blank, duplicates...) into the input")
    parser.add_argument("--profile", type=Path, help="record the scanner with py-spy into this collapsed-stack file")
    parser.add_argument("--keep", type=Path, help="keep the world and dataset in this directory")
    parser.add_argument("--no-netns", action="store_true", help="run in the current network namespace")
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--second-octet", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    second_octet = args.second_octet or random.Random().randrange(160, 250)
    if not args.no_netns and not args.inside_netns:
        return run_in_netns(sys.argv[1:], second_octet)
    if args.peer_sample and not args.inside_netns:
        parser.error("the peer comparison needs the network namespace (checkdmarc uses the system resolver)")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="smtp-tls-bench-"))
    t0 = time.perf_counter()
    world = prepare_world(args, workdir, second_octet)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(world.kinds.items()))
    print(f"world: {world.domain_count:,} domains, {world.address_count:,} MX addresses on "
          f"127.{second_octet}.0.0/16 ({kinds}); built in {time.perf_counter() - t0:.1f}s")
    stats: dict[str, ListenerStats] = {}
    wall: list[float] = []
    try:
        code = run_world_and_scan(world, workdir, args, stats, wall)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if code != 0:
        return code
    accepted = sum(s.accepted for s in stats.values())
    handshakes = sum(s.starttls_handshakes for s in stats.values())
    print(f"farm: {accepted:,} connections accepted ({accepted / wall[0]:,.0f}/s over the scan: the probe and "
          f"every enumeration session is one), {handshakes:,} completed STARTTLS handshakes; max concurrent "
          f"per address {max((s.max_concurrent for s in stats.values()), default=0)}")
    return 0


def prepare_world(args: argparse.Namespace, workdir: Path, second_octet: int) -> BenchWorld:
    world = build(workdir, args.domains, args.addresses, second_octet)
    if args.wildcard_domains:
        add_wildcard_domains(world, args.wildcard_domains)
    if args.sni_share:
        hosts = add_sni_hosting(world, workdir, args.sni_share, args.sni_names)
        print(f"shared hosting: {hosts:,} addresses with {args.sni_names} SNI names each")
    if args.junk_share:
        junk = add_junk(world.domains_file, args.junk_share)
        listing = ", ".join(f"{k} {v:,}" for k, v in junk.items())
        print(f"junk lines mixed into the input: {sum(junk.values()):,} ({listing})")
    return world


FRONT_CHUNK = 8_000  # TCP listeners per latency-front process (descriptor limit, see worlds/latency.py)
INNER_SMTP_PORT = 2525  # with emulated RTT the farm listens here and the fronts take port 25
INNER_DNS_PORT = 5353


@dataclass
class WorldProcesses:
    """Everything the world runs while a scan is measured (nsd, farm, latency fronts)."""

    nsd: NsdServer | None = None
    farms: list[SmtpFarmProcess] = field(default_factory=list)
    fronts: list[LatencyFrontProcess] = field(default_factory=list)

    def pids(self) -> list[int]:
        nsd = self.nsd.pid if self.nsd else None
        return [p for p in (nsd, *(f.pid for f in self.farms), *(f.pid for f in self.fronts)) if p]


def start_world(world: BenchWorld, workdir: Path, rtt_ms: float, running: WorldProcesses) -> None:
    """nsd, the farm in FARM_CHUNK processes and, with ``rtt_ms``, latency fronts before both.

    With emulated round-trip time the servers move to inner ports on the same addresses and fronts
    listening where DNS points (port 25, the resolver's port 53) hold every chunk half the RTT each way.
    """
    delayed = rtt_ms > 0
    dns_port = INNER_DNS_PORT if delayed else 53
    specs = [dataclasses.replace(s, port=INNER_SMTP_PORT) for s in world.specs] if delayed else world.specs
    nsd = NsdServer(workdir / "nsd", [world.zone_file], address=world.dns_address, port=dns_port)
    nsd.start()
    running.nsd = nsd
    for i in range(0, len(specs), FARM_CHUNK):
        farm = SmtpFarmProcess(specs[i:i + FARM_CHUNK], workdir / f"farm-{i // FARM_CHUNK}")
        farm.start()
        running.farms.append(farm)
    if not delayed:
        return
    one_way = rtt_ms / 2000
    dns = (world.dns_address, 53)
    inner_dns = (world.dns_address, INNER_DNS_PORT)
    fronts = [LatencyFrontProcess([TcpRoute(dns, inner_dns)], [UdpRoute(dns, inner_dns)], one_way,
                                  workdir / "front-dns")]
    routes = [TcpRoute((s.address, 25), (s.address, INNER_SMTP_PORT)) for s in world.specs]
    for i in range(0, len(routes), FRONT_CHUNK):
        fronts.append(LatencyFrontProcess(routes[i:i + FRONT_CHUNK], [], one_way, workdir / f"front-{i}"))
    for front in fronts:
        front.start()
        running.fronts.append(front)


def stop_world(running: WorldProcesses, stats: dict[str, ListenerStats]) -> None:
    for front in running.fronts:
        front.stop()
    for farm in running.farms:
        stats.update(farm.stop())
    if running.nsd is not None:
        running.nsd.stop()


def run_world_and_scan(world: BenchWorld, workdir: Path, args: argparse.Namespace,
                       stats: dict[str, ListenerStats], wall: list[float]) -> int:
    """Start the world, scan, report; the farm's counters land in ``stats``, the scan's seconds in ``wall``."""
    running = WorldProcesses()
    try:
        start_world(world, workdir, args.rtt_ms, running)
        assert running.nsd is not None
        rtt = f"; {args.rtt_ms:g} ms emulated RTT ({len(running.fronts)} latency fronts)" if args.rtt_ms else ""
        print(f"nsd up in {running.nsd.startup_seconds:.2f}s; {len(world.specs):,} listeners in "
              f"{len(running.farms)} farm process(es){rtt}")
        out = workdir / "out"
        command = scan_command(world, out, args)
        if args.profile:
            # py-spy samples the scanner from outside (no instrumentation in the scanner itself); its own
            # CPU lands in the child figures, so a profiled run's numbers are indicative only.
            command = [str(Path(sys.executable).with_name("py-spy")), "record", "--rate", "50", "--format", "raw",
                       "--nonblocking", "-o", str(args.profile), "--", *command]
        with contextlib.ExitStack() as stack:
            env, ray_pids = None, []
            if args.ray_nodes:
                cluster = stack.enter_context(ray_cluster(workdir / "ray", pick_loopback_block(), args.ray_nodes))
                command += ["--cluster", cluster.address]
                env, ray_pids = {**os.environ, **cluster.env}, list(cluster.pids)
            world_cpu_before = world_cpu(running.pids())
            # The nodes' processes (raylets, workers) are not the driver's: sampled with it.
            run = run_child(command, workdir / "scan.log", env, tuple(ray_pids))
        wall.append(run.wall_s)
        world_cpu_used = world_cpu(running.pids()) - world_cpu_before
        print(f"world (nsd + farm + fronts) CPU during the scan: {world_cpu_used:.1f}s; scanner + world = "
              f"{(run.cpu_s + world_cpu_used) / run.wall_s:.2f} of {os.cpu_count()} cores busy")
        if run.returncode != 0:
            print((workdir / "scan.log").read_text()[-3000:])
            return run.returncode
        report(world, out, run)
        if args.peer_sample:
            compare_with_peer(world, out, run, args)
        return 0
    finally:
        stop_world(running, stats)


def world_cpu(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(pid) for pid in pids)


def report(world: BenchWorld, out: Path, run: ChildRun) -> None:
    record = json.loads((out / "run.json").read_text())
    info = record["totals"]  # over every attempt of the scan (scanner.scan_record)
    domains = info["domains"] + info["invalid_lines"] + info["duplicate_lines"]
    print(f"scanner: {domains:,} domains in {run.wall_s:.1f}s = {domains / run.wall_s:,.0f} domains/s")
    print(f"  probes: {info['probes']:,} ({info['probes'] / run.wall_s:,.1f}/s over the scan)")
    print(f"  DNS queries: {info['dns_queries']:,} ({info['dns_queries'] / run.wall_s:,.0f}/s)")
    print(f"  CPU: {run.cpu_s:.1f}s = {1000 * run.cpu_s / domains:.2f} CPU-s per 1,000 domains; "
          f"peak RSS {run.max_rss_mb:,.0f} MB")
    print(f"  verdicts: {info['verdicts']}")
    if "cluster" in record:
        report_cluster(record["cluster"], run, domains)
    print_timing(record.get("timing", {}))
    check_accounting(world, out)
    report_sessions(out)


def report_cluster(cluster: dict[str, Any], run: ChildRun, domains: int) -> None:
    """A scan on Ray workers: each worker's process, the whole tree, and the requests between workers."""
    workers = cluster["workers"]
    for i, w in enumerate(workers):
        print(f"  worker {i} on {w['node']}: CPU {w['cpu_s']:.1f}s, peak RSS {w['max_rss_mb']:,.0f} MB, "
              f"{w['remote_calls']:,} calls to other owners for {w['remote_pairs']:,} (address, name) pairs")
    calls = sum(w["remote_calls"] for w in workers)
    pairs = sum(w["remote_pairs"] for w in workers)
    print(f"  between workers: {calls / domains:.4f} calls and {pairs / domains:.4f} pairs per domain; "
          f"restarts {cluster['restarts']}")
    print(f"  whole process tree (driver, Ray, workers): peak RSS {run.tree_rss_mb:,.0f} MB; workers' RSS "
          f"{sum(w['max_rss_mb'] for w in workers):,.0f} MB")


def report_sessions(out: Path) -> None:
    """Handshake-only sessions beyond the probes (scanner.sni): per address, and how links were judged."""
    con = duckdb.connect()
    probes = con.execute(f"SELECT count(*), count(*) FILTER (WHERE tls_ok), count(*) FILTER "
                         f"(WHERE sni_selects_certificate) FROM '{out}/probes/*.parquet'").fetchall()[0]
    files = list((out / "sessions").glob("*.parquet"))
    kinds = dict(con.execute(f"SELECT kind, count(*) FROM read_parquet({[str(f) for f in files]}) GROUP BY 1")
                 .fetchall()) if files else {}
    total = sum(kinds.values())
    sources = con.execute(f"SELECT coalesce(cert_source, 'null'), count(*), count(*) FILTER (WHERE cert_name_match = "
                          f"'mismatch') FROM '{out}/mx/*.parquet' GROUP BY 1 ORDER BY 2 DESC").fetchall()
    selecting = probes[2] or 0
    per_sni_host = kinds.get("sni", 0) / selecting if selecting else 0.0
    print(f"  extra sessions: {total:,} ({kinds}) = {total / max(1, probes[0]):.2f} per address probed, "
          f"{total / max(1, probes[1]):.2f} per TLS address; {selecting:,} addresses select by SNI, "
          f"{per_sni_host:.1f} SNI sessions each")
    print("  mx links by certificate source (links, of which name mismatch): "
          + ", ".join(f"{s} {n:,} ({m:,})" for s, n, m in sources))


def check_accounting(world: BenchWorld, out: Path) -> None:
    """Every physical line of the input is a row or a counted blank/comment line, exactly once."""
    con = duckdb.connect()
    rows, lines = con.execute(f"SELECT count(*), count(DISTINCT input_line) FROM '{out}/domains/*.parquet'").fetchone()
    skipped = con.execute(f"SELECT max(skipped_lines) FROM '{out}/run/*.parquet'").fetchone()[0]
    physical = physical_lines(world.domains_file)
    by_status = con.execute(
        f"SELECT status, count(*) FROM '{out}/domains/*.parquet' GROUP BY 1 ORDER BY 2 DESC").fetchall()
    verdict = "OK" if rows == lines and rows + skipped == physical else "MISMATCH"
    print(f"  input accounting {verdict}: {physical:,} physical lines = {rows:,} rows ({lines:,} distinct lines) + "
          f"{skipped:,} blank/comment; rows by status: {', '.join(f'{k} {v:,}' for k, v in by_status)}")


def print_timing(timing: dict[str, Any]) -> None:
    """Where the time went, from the scanner's own stage monitor (run.json)."""
    if not timing:
        return
    means = timing["domain_mean_ms"]
    print(f"  per domain (mean ms): DNS {means['dns']}, waiting for probes {means['probe_wait']}, "
          f"policies {means['policies']}, verdicts {means['verdicts']}; writer busy "
          f"{100 * timing['writer_share']:.1f}% of the time")
    if "mail_sets_reused" in timing:
        print(f"  verdict memo: {timing['mail_sets_reused']:,} domains reused the judgement of their mail hosts "
              f"(scanner.verdicts.LinkJudge.mail_set)")
    monitor = timing.get("monitor")
    if not monitor:
        return
    lag = monitor["loop_lag_ms"]
    print(f"  event loop lag: mean {lag['mean']} ms, max {lag['max']} ms "
          f"(a busy loop is late; ~0 means the scanner waits on limits or peers)")
    gc_info = monitor.get("gc")
    if gc_info:
        print(f"  garbage collector: {sum(gc_info['seconds']):.1f}s in {sum(gc_info['collections']):,} collections "
              f"(by generation: {gc_info['seconds']} s, {gc_info['collections']} runs)")
    print("  stage fill (mean share of capacity, share of samples >= 90% full, peak/capacity):")
    for name, stage in monitor["stages"].items():
        print(f"    {name:<26} {100 * stage['mean_fill']:5.1f}%  full {100 * stage['full_share']:5.1f}%  "
              f"peak {stage['peak']:,}/{stage['capacity']:,}")
    print_rss_series(monitor.get("rss_series", []))


def print_rss_series(series: list[list[float]], points: int = 12) -> None:
    """Resident memory against rows done, at evenly spaced moments: flat means memory does not grow."""
    if len(series) < 2:
        return
    step = max(1, len(series) // points)
    picked = series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
    print("  RSS over the scan (rows done → MiB): "
          + ", ".join(f"{int(rows):,} → {rss:.0f}" for _, rows, rss in picked))


def compare_with_peer(world: BenchWorld, out: Path, run: ChildRun, args: argparse.Namespace) -> None:
    if not ensure_peer(args.peer_venv):
        print("peer: checkdmarc could not be installed; no comparison")
        return
    sample = world.domains_file.read_text().split()[: args.peer_sample]
    # checkdmarc verifies certificates with Python's default store: give it the world's CA, as we do.
    env = dict(os.environ, SSL_CERT_FILE=str(world.ca_file))
    peer = run_child(peer_command(args.peer_venv, sample, world.dns_address), out.parent / "peer.json", env)
    ours_per_domain = run.wall_s / world.domain_count
    peer_per_domain = peer.wall_s / len(sample)
    text = (out.parent / "peer.json").read_text(errors="replace")
    print(f"peer checkdmarc: {len(sample)} domains in {peer.wall_s:.1f}s = {len(sample) / peer.wall_s:.1f} domains/s "
          f"(exit {peer.returncode}); CPU {1000 * peer.cpu_s / len(sample):.1f} CPU-s per 1,000 domains; "
          f'its MX host verdicts: {text.count(chr(34) + "starttls" + chr(34) + ": true")} STARTTLS true, '
          f'{text.count(chr(34) + "starttls" + chr(34) + ": false")} false')
    print(f"  ratio: smtp-tls-survey is {peer_per_domain / ours_per_domain:,.0f}x faster per domain "
          f"and uses {peer.cpu_s / len(sample) / (run.cpu_s / world.domain_count):,.0f}x less CPU per domain")


if __name__ == "__main__":
    sys.exit(main())
