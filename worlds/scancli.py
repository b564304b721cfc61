"""Run the real ``scan`` command line in a subprocess against a loopback world (tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["run_scan", "scan_command"]


def scan_command(source: Path, out: Path, resolver: str, *options: str) -> list[str]:
    """``scan SOURCE -o OUT`` at ``resolver`` (a loopback DNS server), no progress bar, a test EHLO name."""
    return [sys.executable, "-m", "scanner", "scan", str(source), "-o", str(out), "--resolver", resolver,
            "--no-progress", "--ehlo-name", "scan.test", *options]


def run_scan(
    source: Path, out: Path, resolver: str, *options: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(scan_command(source, out, resolver, *options), capture_output=True, text=True,
                          timeout=timeout, check=False)
