"""How long a person waits for ``check``: a healthy three-MX domain vs sslyze on one of its servers.

    python -m benchmarks.bench_check [--runs 5] [--no-sslyze]

The world: nsd serving ``modern.test`` with three MX hosts, each an OpenSSL server of the asyncio farm
(TLS 1.2-1.3, a certificate from the test CA), on one random 127.A.B block. Timed from the outside, as
a person would, process start included:

* ``check modern.test`` (MX lookup, three addresses probed and enumerated in posture mode, MTA-STS,
  TLS-RPT and TLSA lookups, grading) with check's defaults;
* the same with the survey's 1 s per-address interval (what ``check`` cost before it had its own);
* ``check ADDRESS:25 --sni mx1.modern.test`` (one server, no DNS);
* sslyze (``worlds/peers.py``: its five protocol scan commands, in a loopback-only namespace) on the
  first MX server alone.

Median and minimum of ``--runs`` runs each. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from worlds.ca import TestCA
from worlds.dns import NsdServer, Zone
from worlds.ports import loopback_host, pick_loopback_block
from worlds.smtp import SmtpFarm, SmtpServerSpec

DOMAIN = "modern.test"
MX = ("mx1.modern.test", "mx2.modern.test", "mx3.modern.test")


@dataclass(frozen=True)
class CheckWorld:
    resolver: str
    ca_file: Path
    addresses: tuple[str, ...]  # of MX, in order


@contextmanager
def world(workdir: Path, block: str) -> Iterator[CheckWorld]:
    ca = TestCA(workdir / "ca")
    zone = Zone(DOMAIN, [])
    specs = []
    for index, name in enumerate(MX, start=10):
        address = loopback_host(block, index)
        zone.mx(f"{DOMAIN}.", 10 * (index - 9), f"{name}.")
        zone.a(f"{name}.", address)
        cert = ca.issue([name])
        specs.append(SmtpServerSpec(address, 25, name, cert_file=cert.cert_file, key_file=cert.key_file))
    with ExitStack() as stack:
        nsd = NsdServer(workdir / "nsd", [zone], address=loopback_host(block, 53), port=53)
        nsd.start()
        stack.callback(nsd.stop)
        farm = SmtpFarm(specs)
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        yield CheckWorld(nsd.resolver, ca.ca_file, tuple(s.address for s in specs))


def _cli(w: CheckWorld, *args: str) -> Callable[[], None]:
    argv = [sys.executable, "-m", "scanner", "check", *args, "--resolver", w.resolver, "--ca-file",
            str(w.ca_file), "--allow-private", "--ehlo-name", "bench.modern.test", "--json"]

    def run() -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"check exited {done.returncode}: {done.stderr[-2000:]}")

    return run


def _sslyze(address: str, sni: str) -> Callable[[], None]:
    from worlds.peers import run_sslyze  # needs root (its namespace) and sslyze's own venv

    def run() -> None:
        run_sslyze(address, 25, sni=sni)

    return run


def timed(run: Callable[[], None], runs: int) -> tuple[float, float]:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        walls.append(time.perf_counter() - started)
    return statistics.median(walls), min(walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case")
    parser.add_argument("--no-sslyze", action="store_true", help="skip sslyze (needs root for its namespace)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp, world(Path(tmp), pick_loopback_block()) as w:
        cases: list[tuple[str, Callable[[], None]]] = [
            (f"check {DOMAIN} (3 MX, defaults)", _cli(w, DOMAIN)),
            (f"check {DOMAIN} --per-ip-interval 1 (survey's)", _cli(w, DOMAIN, "--per-ip-interval", "1")),
            (f"check {w.addresses[0]}:25 --sni {MX[0]}", _cli(w, f"{w.addresses[0]}:25", "--sni", MX[0])),
        ]
        if not args.no_sslyze:
            cases.append((f"sslyze {w.addresses[0]}:25 (one server)", _sslyze(w.addresses[0], MX[0])))
        print(f"{'case':58} {'median s':>9} {'min s':>7}")
        for name, run in cases:
            median, best = timed(run, args.runs)
            print(f"{name:58} {median:9.2f} {best:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
