"""A real Ray cluster on this machine for tests and benchmarks: a head and further node processes.

Each node is a ``ray start --block`` process on its own loopback address (127.A.B.1, .2, ...; not
127.0.0.1, which Ray swaps for the machine's "reachable" address), so work between them crosses
process and node boundaries as on several machines. Token authentication is on, with a fresh token
that the caller passes to its driver (``env``). Stopping sends SIGTERM to each ``ray start`` process,
which stops the processes it started: nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worlds.ports import loopback_host

__all__ = ["RayCluster", "ray_cluster"]

# Never report usage anywhere (the machine has no Internet; the rule is loopback only).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class RayCluster:
    address: str  # the head's HOST:PORT, for --cluster
    node_ips: tuple[str, ...]
    env: dict[str, str]  # what a driver needs in its environment (token)
    pids: tuple[int, ...]  # the ``ray start`` processes (their descendants are the cluster's processes)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_started(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while b"Ray runtime started" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed or timed out; see {log}")
        time.sleep(0.2)


@contextlib.contextmanager
def ray_cluster(workdir: Path, block: str, nodes: int = 2, cpus_per_node: int = 1,
                timeout: float = 180) -> Iterator[RayCluster]:
    ips = tuple(loopback_host(block, 1 + i) for i in range(nodes))
    port = _free_port(ips[0])
    extra = {**RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **extra}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, ip in enumerate(ips):
            role = ["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(workdir)] \
                if i == 0 else ["--address", f"{ips[0]}:{port}"]
            log = workdir / f"node{i}.log"
            with log.open("wb") as fh:
                procs.append(subprocess.Popen([ray_bin, "start", "--block", "--num-cpus", str(cpus_per_node),
                                               "--node-ip-address", ip, *role], env=env, stdout=fh,
                                              stderr=subprocess.STDOUT))
            _wait_started(log, procs[-1], timeout)
        yield RayCluster(f"{ips[0]}:{port}", ips, extra, tuple(p.pid for p in procs))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
