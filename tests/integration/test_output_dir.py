"""The output directory under stress: a full disk (a real, small tmpfs) and two scans into one directory.

Both run the real command line in a subprocess against a loopback DNS server (every domain is
NXDOMAIN, so no probes are needed and rows come fast).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.exit_codes import ExitCode
from tests.integration import scanning
from worlds.dns import Behaviour, FaultyDnsServer
from worlds.ports import free_port, loopback_host, pick_loopback_block

pytestmark = pytest.mark.slow


# Names under slow.test never get an answer: a scan of them lasts about one DNS timeout per name.
SLOW = {"slow.test": Behaviour.TIMEOUT, **{f"s{i}.slow.test": Behaviour.TIMEOUT for i in range(12)}}


@pytest.fixture(scope="module")
def dns() -> Iterator[FaultyDnsServer]:
    address = loopback_host(pick_loopback_block(), 53)
    with FaultyDnsServer(SLOW, address, free_port(address)) as server:
        yield server


def long_domains(path: Path, count: int, seed: int = 11) -> list[str]:
    """Long random names (they compress badly, so a small disk fills with few rows)."""
    rng = random.Random(seed)
    names = []
    for i in range(count):
        labels = ["".join(rng.choices(string.ascii_lowercase, k=60)) for _ in range(3)]
        names.append(f"d{i}.{'.'.join(labels)}.test")
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return names


def scan_command(dns: FaultyDnsServer, source: Path, out: Path, *extra: str) -> list[str]:
    return scanning.scan_command(source, out, dns.resolver, "--allow-private", "--no-policy",
                                 "--commit-interval", "0.2", "--rows-per-file", "300", *extra)


def domain_lines(out: Path) -> list[int]:
    return [int(n) for n in pq.read_table(out / "domains", columns=["input_line"]).column("input_line").to_pylist()]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=768k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_stops_the_scan_with_a_clear_error_and_resumes(
    dns: FaultyDnsServer, tmpfs: Path, tmp_path: Path
) -> None:
    source = tmp_path / "domains.txt"
    names = long_domains(source, 12_000)
    out = tmpfs / "out"
    started = time.monotonic()
    # Before the fix the writer died unnoticed and the scan hung for ever on its full row queue.
    done = subprocess.run(scan_command(dns, source, out), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == ExitCode.CANT_CREATE, done.stderr[-3000:]
    assert "No space left on device" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "resume" in done.stderr
    assert time.monotonic() - started < 180
    assert not (out / ".state" / "complete").exists()
    # Give the disk room and run the same command again: every line comes out exactly once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    again = subprocess.run(scan_command(dns, source, out), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == ExitCode.OK, again.stderr[-3000:]
    assert "resuming" in again.stderr
    lines = domain_lines(out)
    assert sorted(lines) == list(range(1, len(names) + 1))


def test_any_writer_failure_is_a_failed_scan_not_a_complete_one(dns: FaultyDnsServer, tmp_path: Path) -> None:
    """``--commit-interval nan`` killed the writer task; the scan said ``completed`` with zero rows, exit 0."""
    source = tmp_path / "domains.txt"
    long_domains(source, 50)
    out = tmp_path / "out"
    command = scan_command(dns, source, out)
    command[command.index("--commit-interval") + 1] = "nan"
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != ExitCode.OK, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not (out / ".state" / "complete").exists()


def wait_for_lock_holder(out: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first scan ended before the test could race it"
        try:
            text = (out / ".lock").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    raise AssertionError("the first scan never took the output directory's lock")


def test_a_second_scan_into_a_locked_directory_refuses_and_kill_9_releases_the_lock(
    dns: FaultyDnsServer, tmp_path: Path
) -> None:
    source = tmp_path / "slow.txt"
    source.write_text("".join(f"s{i}.slow.test\n" for i in range(12)), encoding="utf-8")
    out = tmp_path / "out"
    slow = ("--dns-timeout", "1", "--dns-tries", "1", "--dns-workers", "1")
    first = subprocess.Popen(scan_command(dns, source, out, *slow), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        holder = wait_for_lock_holder(out, first)
        assert f"pid {first.pid} on {socket.gethostname()}" in holder
        # Before the fix both scans ran, both said "complete", and every row came out twice.
        second = subprocess.run(scan_command(dns, source, out, *slow), capture_output=True, text=True,
                                timeout=60, check=False)
        assert second.returncode == ExitCode.TEMP_FAIL, second.stderr
        message = second.stderr.strip()
        assert "\n" not in message, message
        assert f"pid {first.pid}" in message and socket.gethostname() in message and "started " in message
        assert first.poll() is None  # the holder was not disturbed
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    # The kernel released the lock of the killed scan: the same command resumes and completes.
    third = subprocess.run(scan_command(dns, source, out, *slow), capture_output=True, text=True, timeout=120,
                           check=False)
    assert third.returncode == ExitCode.OK, third.stderr[-3000:]
    assert sorted(domain_lines(out)) == list(range(1, 13))


def test_a_second_ctrl_c_is_an_interruption_not_a_traceback(dns: FaultyDnsServer, tmp_path: Path) -> None:
    source = tmp_path / "slow.txt"
    source.write_text("".join(f"s{i}.slow.test\n" for i in range(12)), encoding="utf-8")
    out = tmp_path / "out"
    slow = ("--dns-timeout", "1", "--dns-tries", "1", "--dns-workers", "1")
    asked = len(dns.queries)
    scan = subprocess.Popen(scan_command(dns, source, out, *slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while len(dns.queries) == asked and time.monotonic() < deadline:  # the scan is running
        time.sleep(0.05)
    scan.send_signal(signal.SIGINT)
    time.sleep(0.3)
    scan.send_signal(signal.SIGINT)
    _, stderr = scan.communicate(timeout=60)
    # Before the fix the second Ctrl-C ended in an asyncio CancelledError traceback.
    assert scan.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "resume" in stderr, stderr[-3000:]
    again = subprocess.run(scan_command(dns, source, out, *slow), capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == ExitCode.OK, again.stderr[-3000:]
    assert sorted(domain_lines(out)) == list(range(1, 13))


def test_ctrl_c_during_the_resolver_check_ends_the_command_before_a_scan(tmp_path: Path) -> None:
    """The signal owner covers the set-up too: before, a Ctrl-C there was a KeyboardInterrupt traceback."""
    address = loopback_host(pick_loopback_block(), 53)
    source = tmp_path / "one.txt"
    source.write_text("s0.slow.test\n", encoding="utf-8")
    out = tmp_path / "out"
    # The resolver check asks for the root's NS: held back 4 s, so the Ctrl-C lands while it waits.
    with FaultyDnsServer(SLOW, address, free_port(address), delays={".": 4.0}) as dns:
        scan = subprocess.Popen(scan_command(dns, source, out, "--dns-timeout", "8"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not dns.queries and time.monotonic() < deadline:  # the resolver check is waiting
            time.sleep(0.05)
        scan.send_signal(signal.SIGINT)
        _, stderr = scan.communicate(timeout=60)
    assert scan.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr[-3000:]
    assert not (out / "run.json").exists()  # no scan started
