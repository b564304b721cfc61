"""No route from our host: the probe window stops the scan, unfinished and resumable (scanner.health).

The scan runs in a network namespace of its own (``unshare -rn``, only loopback up), so every probe to a
mail host fails at connect() with "network unreachable" and no packet leaves the namespace.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.exit_codes import ExitCode

ROOT = Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs unprivileged network namespaces (unshare -rn)")


def test_no_route_stops_the_scan_and_names_our_network(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = ["unshare", "-rn", sys.executable, "-m", "worlds.no_route", str(tmp_path), "200", "--",
               "-o", str(out), "--allow-private", "--no-policy", "--enumerate", "off", "--per-ip-interval", "0",
               "--throttle-retry", "--no-progress", "--probe-failure-window", "20", "--probe-failure-threshold", "0.9"]
    # A lab scan (--allow-private) on a host without any route: every address is tried (lab targets may
    # need no route), each fails with "no route", and the probe window stops the scan.
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    message = " ".join(done.stderr.split())
    assert done.returncode == ExitCode.UNAVAILABLE, message[-2000:]
    assert "found no route" in message and "this host's network" in message and "same command" in message
    assert not (out / ".state" / "complete").exists()
    (run,) = pq.read_table(out / "run").to_pylist()
    assert run["outcome"] == "unavailable" and not run["completed"]
    assert len(pq.read_table(out / "domains")) < 200  # work in flight at the stop was dropped: a resume redoes it


def test_no_route_at_all_refuses_a_public_scan_at_start(tmp_path: Path) -> None:
    """A public scan (no --allow-private) on a host where no family has a route: nothing is scanned and
    nothing is recorded as the Internet's state (exit 69, before any input is read)."""
    out = tmp_path / "out"
    command = ["unshare", "-rn", sys.executable, "-m", "worlds.no_route", str(tmp_path), "20", "--",
               "-o", str(out), "--no-policy", "--enumerate", "off", "--no-progress", "--ehlo-name", "scanner.example"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    message = " ".join(done.stderr.split())
    assert done.returncode == ExitCode.UNAVAILABLE, message[-2000:]
    assert "no route for IPv4 or IPv6" in message and "same command" in message
    assert not (out / "domains").exists() or not list((out / "domains").glob("*.parquet"))
