"""How an integration test scans a world: the real CLI, the world's resolver, loopback only.

``scan`` runs ``smtp-tls-survey scan`` in process with ``--resolver`` at the world's DNS, its trust
store and ``--allow-private`` (the worlds live on 127.0.0.0/8), asserts the exit code and returns the
dataset. ``STANDARD_OPTIONS`` are the settings the standard world (worlds/scenario.py) is scanned with.
``scan_command`` / ``run_scan`` run it in a child process instead, for tests that read its stderr,
signal it or kill it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Protocol

from scanner.cli import main
from scanner.dataset import Dataset
from scanner.exit_codes import ExitCode
from worlds.scenario import SLOW_BANNER_DELAY

__all__ = ["STANDARD_OPTIONS", "ScanTarget", "run_scan", "scan", "scan_command"]

# A banner timeout shorter than the slow server's delay (it must time out), short DNS timeouts for the
# broken zone, and quick throttle retries.
STANDARD_OPTIONS = ("--ehlo-name", "scanner.test", "--banner-timeout", str(SLOW_BANNER_DELAY / 3),
                    "--dns-timeout", "1", "--throttle-retry", "0.1")


class ScanTarget(Protocol):
    """A world a scan can be pointed at (``worlds.scenario.World``, ``ScanWorld``, ...)."""

    @property
    def resolver(self) -> str: ...

    @property
    def ca_file(self) -> Path: ...

    @property
    def domains_file(self) -> Path: ...


def scan(world: ScanTarget, out: Path, *options: str, domains: Path | None = None, allow_private: bool = True,
         expect: int = ExitCode.OK) -> Dataset:
    """Scan ``domains`` (default: the world's list) into ``out``; the exit code must be ``expect``."""
    command = ["scan", str(domains or world.domains_file), "-o", str(out), "--resolver", world.resolver,
               "--ca-file", str(world.ca_file), "--per-ip-interval", "0", "--no-progress"]
    code = main([*command, *(["--allow-private"] if allow_private else []), *options])
    assert code == expect, f"scan exited {code}, expected {expect}"
    return Dataset(out)


def scan_command(source: str | Path, out: Path, resolver: str, *options: str) -> list[str]:
    """``scan SOURCE -o OUT`` at ``resolver`` (a loopback DNS server) in a child process, no progress bar,
    a test EHLO name (pass ``--allow-private`` to probe the world; a later ``--ehlo-name`` wins)."""
    return [sys.executable, "-m", "scanner", "scan", str(source), "-o", str(out), "--resolver", resolver,
            "--no-progress", "--ehlo-name", "scan.test", *options]


def run_scan(
    source: Path, out: Path, resolver: str, *options: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(scan_command(source, out, resolver, *options), capture_output=True, text=True,
                          timeout=timeout, check=False)
