"""Sessions and wall time per server: our posture and full modes against sslyze and testssl.sh.

    python -m benchmarks.bench_enum [--rtt-ms 0 50] [--no-testssl]
    python -m benchmarks.bench_enum --key-exchange [--no-testssl]

``--key-exchange`` (issue 12) prints, per server, the posture sessions in all, how many of them asked a
key-exchange question only (a DHE-only, fallback-SCSV or curve-elimination hello; the DHE suites also ride
on the weak-class hellos, so a DHE pick there counts as a weak-class session), the full-mode sessions, and
the connections testssl.sh ``-f -R`` and sslyze ``--elliptic_curves --reneg --compression --fallback``
need for the same facts. Earlier counts (before issue 12, and its first cut) are in benchmarks/README.md.

Each server sits behind a latency front (worlds/latency.py) that adds the requested round-trip time
and counts connections, so every tool's session count is measured the same way, on the server side.
Peers run through worlds/peers.py (inside a loopback-only network namespace). All tools are run in
this one process tree, one after the other, against the same servers.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from scanner.config import ProbeConfig
from scanner.tls.enumeration import (
    EnumerationResult,
    HelloAnswer,
    HelloRequest,
    Plan,
    Purpose,
    full_plan,
    posture_plan,
)
from scanner.tls.probe import drive_plan, probe_hello
from worlds.ca import TestCA
from worlds.latency import LatencyFront, TcpRoute
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance
from worlds.smtp import SmtpFarm, SmtpServerSpec


@dataclass(frozen=True)
class Server:
    name: str
    address: str  # where the real server listens
    relay: str  # where the relay listens (what the tools are pointed at)


@dataclass(frozen=True)
class Measure:
    tool: str
    server: str
    sessions: int
    wall_s: float
    versions: tuple[str, ...]


@contextmanager
def servers(workdir: Path, block: str) -> Iterator[list[Server]]:
    ca = TestCA(workdir / "ca")
    modern = ca.issue(["mx.modern.test"])
    legacy = ca.issue(["mx.legacy.test"], key="rsa2048")
    postfix_dir = Path(tempfile.mkdtemp(prefix="bench-postfix-"))
    postfix_dir.chmod(0o755)
    with ExitStack() as stack:
        farm = SmtpFarm([SmtpServerSpec(loopback_host(block, 10), 25, "mx.modern.test",
                                        cert_file=modern.cert_file, key_file=modern.key_file)])
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        postfix = PostfixInstance(postfix_dir / "legacy", loopback_host(block, 11), 25, "mx.legacy.test",
                                  legacy.cert_file, legacy.key_file, tls_protocols=">=TLSv1",
                                  tls_cipherlist="DEFAULT:@SECLEVEL=0")
        postfix.start()
        stack.callback(postfix.stop)
        yield [
            Server("modern (OpenSSL, TLS 1.2-1.3, ECDSA)", loopback_host(block, 10), loopback_host(block, 20)),
            Server("postfix (TLS 1.0-1.3, RSA, SECLEVEL 0)", loopback_host(block, 11), loopback_host(block, 21)),
        ]


def ours(plan_factory: Callable[[], Plan], address: str) -> EnumerationResult:
    config = ProbeConfig(ehlo_name="bench.test", per_ip_interval=0)

    async def run() -> EnumerationResult:
        async def session(request):  # type: ignore[no-untyped-def]
            return await probe_hello(address, 25, "mx.bench.test", config, request)

        return await drive_plan(plan_factory(), session)

    return asyncio.run(run())


def measure(relay: LatencyFront, server: Server, tool: str, run: Callable[[], tuple[str, ...]]) -> Measure:
    before = relay.accepted[(server.relay, 25)]
    started = time.perf_counter()
    versions = run()
    wall = time.perf_counter() - started
    return Measure(tool, server.name, relay.accepted[(server.relay, 25)] - before, wall, versions)


def run_tools(relay: LatencyFront, server: Server, with_testssl: bool) -> list[Measure]:
    from worlds.peers import run_sslyze, run_testssl

    def our(plan: Callable[[], Plan]) -> Callable[[], tuple[str, ...]]:
        def go() -> tuple[str, ...]:
            result = ours(plan, server.relay)
            return tuple(sorted(v.name for v, verdict in result.versions.items() if verdict.value == "accepted"))
        return go

    out = [
        measure(relay, server, "ours posture", our(posture_plan)),
        measure(relay, server, "ours full", our(full_plan)),
        measure(relay, server, "sslyze", lambda: tuple(sorted(run_sslyze(server.relay, 25).versions))),
    ]
    if with_testssl:
        out.append(measure(relay, server, "testssl.sh",
                           lambda: tuple(sorted(run_testssl(server.relay, 25, server_order=True).versions))))
    return out


def report(rtt_ms: float, rows: list[Measure]) -> None:
    print(f"\n## round-trip time {rtt_ms:g} ms")
    print(f"{'server':40} {'tool':14} {'sessions':>8} {'wall s':>8} {'x posture sessions':>19} {'x posture time':>15}")
    base = {r.server: r for r in rows if r.tool == "ours posture"}
    for r in rows:
        b = base[r.server]
        print(f"{r.server:40} {r.tool:14} {r.sessions:8d} {r.wall_s:8.2f} {r.sessions / max(b.sessions, 1):19.1f} "
              f"{r.wall_s / max(b.wall_s, 1e-9):15.1f}")


_KX_PURPOSES = frozenset({Purpose.GROUPS, Purpose.DHE, Purpose.FALLBACK})


def key_exchange_sessions(address: str, plan: Callable[[], Plan]) -> tuple[int, int, EnumerationResult]:
    """(key-exchange-only sessions, sessions in all, result) of one run of ``plan``."""
    config = ProbeConfig(ehlo_name="bench.test", per_ip_interval=0)
    purposes: list[Purpose] = []

    async def run() -> EnumerationResult:
        async def session(request: HelloRequest) -> HelloAnswer:
            purposes.append(request.purpose)
            return await probe_hello(address, 25, "mx.bench.test", config, request)

        return await drive_plan(plan(), session)

    result = asyncio.run(run())
    return sum(1 for p in purposes if p in _KX_PURPOSES), len(purposes), result


def report_key_exchange(targets: list[Server], with_testssl: bool) -> None:
    from worlds.peers import run_sslyze_kx, run_testssl_kx

    print("\n## key exchange and hygiene (issue 12): STARTTLS sessions per server")
    print(f"{'server':40} {'posture':>7} {'kx-only':>7} {'full':>5} {'testssl -f -R':>14} {'sslyze kx':>10}  "
          "posture facts")
    totals = []
    for server in targets:
        kx_only, total, result = key_exchange_sessions(server.address, posture_plan)
        _, full, _ = key_exchange_sessions(server.address, full_plan)
        totals.append(total)
        testssl = run_testssl_kx(server.address, 25).sessions if with_testssl else None
        sslyze = run_sslyze_kx(server.address, 25)
        kx = result.kx
        facts = (f"groups={len(kx.groups)}{'' if kx.groups_complete else '+'} dhe={kx.dhe} dh={kx.dh_bits} "
                 f"reneg={kx.secure_renegotiation} fallback={kx.fallback_scsv}")
        print(f"{server.name:40} {total:7d} {kx_only:7d} {full:5d} {testssl if testssl is not None else '-':>14} "
              f"{sslyze:10d}  {facts}")
    print(f"posture: median {statistics.median(totals):g}, max {max(totals)} sessions "
          "(loaded 2-core machine; counts do not depend on load)")


@contextmanager
def kx_servers(workdir: Path, block: str) -> Iterator[list[Server]]:
    """The issue-12 servers: Postfix with Oakley group 2 as its DH file, Postfix with secp384r1 only,
    exim/GnuTLS legacy, and the OpenSSL modern one (see tests/integration/test_key_exchange.py)."""
    from scanner.tls.groups import well_known_primes
    from worlds.exim import POSTURES, EximInstance
    from worlds.postfix import write_dh_params

    ca = TestCA(workdir / "ca")
    rsa = ca.issue(["mx.bench.test"], key="rsa2048")
    ecdsa = ca.issue(["mx.bench.test"])
    oakley2 = next(p for p, name in well_known_primes().items() if name == "rfc2409-oakley2")
    dh_file = write_dh_params(workdir / "dh1024.pem", oakley2)
    with ExitStack() as stack:
        daemons = {
            "postfix, Oakley group 2 DH file": PostfixInstance(
                workdir / "pf-dh", loopback_host(block, 20), 25, "mx.bench.test", rsa.cert_file, rsa.key_file,
                tls_protocols=">=TLSv1", tls_cipherlist="DEFAULT:@SECLEVEL=0",
                extra_main_cf={"smtpd_tls_dh1024_param_file": str(dh_file)}),
            "postfix, secp384r1 only": PostfixInstance(
                workdir / "pf-p384", loopback_host(block, 21), 25, "mx.bench.test", rsa.cert_file, rsa.key_file,
                extra_main_cf={"tls_eecdh_auto_curves": "secp384r1"}),
            "exim/GnuTLS legacy": EximInstance(
                workdir / "exim", loopback_host(block, 22), 25, "mx.bench.test", rsa.cert_file, rsa.key_file,
                priority=POSTURES["legacy"]),
        }
        out = []
        for name, daemon in daemons.items():
            daemon.start()
            stack.callback(daemon.stop)
            out.append(Server(name, daemon.address, daemon.address))
        farm = SmtpFarm([SmtpServerSpec(loopback_host(block, 23), 25, "mx.bench.test", cert_file=ecdsa.cert_file,
                                        key_file=ecdsa.key_file, tls_min="TLSv1.2")])
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        out.append(Server("modern (OpenSSL, ECDSA, TLS 1.2-1.3)", loopback_host(block, 23), loopback_host(block, 23)))
        yield out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--no-testssl", action="store_true", help="skip testssl.sh (about a minute per server)")
    parser.add_argument("--key-exchange", action="store_true", help="issue 12: key-exchange sessions only")
    args = parser.parse_args()
    block = pick_loopback_block()
    if args.key_exchange:
        workdir = Path(tempfile.mkdtemp(prefix="bench-kx-"))
        workdir.chmod(0o755)  # mail daemons drop privileges
        try:
            with kx_servers(workdir, block) as targets:
                report_key_exchange(targets, not args.no_testssl)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-enum-") as tmp, servers(Path(tmp), block) as targets:
        for rtt in args.rtt_ms:
            routes = [TcpRoute((s.relay, 25), (s.address, 25)) for s in targets]
            with LatencyFront(routes, one_way_delay=rtt / 2000) as relay:
                rows = [m for s in targets for m in run_tools(relay, s, not args.no_testssl)]
            report(rtt, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
