"""Bad and unusual input, end to end: the real CLI in a child process, real files, pipes and FIFOs,
a real DNS server on loopback (issue 11, Low).

* a domain publishing many MX hosts with many addresses costs at most the configured number of probes,
  and its row says the cap applied;

* a stream input (a FIFO, ``<(zcat list.gz)``) is scanned, not refused; a slow stdin producer does not
  stall the scan or Ctrl-C;
* a resumed scan refuses an input edited anywhere (even keeping its size), and a damaged or deleted
  committed part file, naming the file, instead of duplicating rows or crashing;
* ``report`` on a damaged dataset, a directory of foreign tables, or ``--dest`` a file: one line and
  the documented exit code.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scanner.exit_codes import ExitCode
from tests.integration import scanning
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, loopback_host, pick_loopback_block

MX_DOMAINS = 6  # domains whose MX host has an address (nothing listens there: probes are refused)
MANY_HOSTS, MANY_ADDRESSES = 12, 5


@pytest.fixture(scope="module")
def dns() -> Iterator[FaultyDnsServer]:
    block = pick_loopback_block()
    address = loopback_host(block, 1)
    target = loopback_host(block, 9)
    zone: dict[str, list[Record]] = {
        f"m{i}.test": [Record("@", "MX", f"10 mx.m{i}.test."), Record("mx", "A", target)] for i in range(MX_DOMAINS)
    }
    # MANY_HOSTS MX hosts of MANY_ADDRESSES addresses each, all distinct (nothing listens on them).
    zone["many.test"] = [Record("@", "MX", f"{10 + h} mx{h}.many.test.") for h in range(MANY_HOSTS)] + [
        Record(f"mx{h}", "A", loopback_host(block, 20 + h * MANY_ADDRESSES + a))
        for h in range(MANY_HOSTS) for a in range(MANY_ADDRESSES)
    ]
    with FaultyDnsServer(zone, address, free_port(address)) as server:  # other names: NXDOMAIN
        yield server


def scan_command(dns: FaultyDnsServer, source: str, out: Path, *extra: str) -> list[str]:
    return scanning.scan_command(source, out, dns.resolver, "--allow-private", "--no-policy", "--enumerate", "off",
                                 "--throttle-retry", "--per-ip-interval", "0", "--connect-timeout", "1", "--port",
                                 str(free_port("127.0.0.1")), "--ehlo-name", "streams.test", *extra)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def rows(out: Path, table: str) -> list[dict[str, object]]:
    files = sorted((out / table).glob("part-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def wait_until(condition: Callable[[], bool], limit: float = 60.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def domains_text(count: int, prefix: str = "d") -> str:
    return "".join(f"{prefix}{i}.test\n" for i in range(count))


# --- caps per domain ------------------------------------------------------------------------------


CAPS = [((), 4, 20), (("--max-mx-hosts", "2", "--max-mx-addresses", "3"), 1, 3)]


@pytest.mark.parametrize(("options", "hosts", "probes"), CAPS)
def test_mx_hosts_and_addresses_per_domain_are_capped(
    dns: FaultyDnsServer, tmp_path: Path, options: tuple[str, ...], hosts: int, probes: int
) -> None:
    # Issue 11: two input lines produced 1,600 probes. Default caps: 10 hosts, 20 addresses per domain.
    source = tmp_path / "list.txt"
    source.write_text("many.test\nm0.test\n", encoding="ascii")
    result = run(scan_command(dns, str(source), tmp_path / "out", *options))
    assert result.returncode == ExitCode.OK, result.stderr
    domains = {r["domain"]: r for r in rows(tmp_path / "out", "domains")}
    many = domains["many.test"]
    assert many["mx_capped"] is True and not domains["m0.test"]["mx_capped"]
    assert many["address_count"] == probes
    assert many["mx_hosts"] == [f"mx{h}.many.test" for h in range(hosts)]  # the first, in preference order
    assert len(rows(tmp_path / "out", "probes")) == probes + 1


# --- stream inputs -------------------------------------------------------------------------------


def test_fifo_input_is_scanned(dns: FaultyDnsServer, tmp_path: Path) -> None:
    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(domains_text(5), encoding="ascii"), daemon=True)
    writer.start()
    result = run(scan_command(dns, str(fifo), tmp_path / "out"))
    writer.join(timeout=10)
    assert result.returncode == ExitCode.OK, result.stderr
    assert sorted(r["input_line"] for r in rows(tmp_path / "out", "domains")) == [1, 2, 3, 4, 5]


def test_process_substitution_of_a_gzip_list_is_scanned(dns: FaultyDnsServer, tmp_path: Path) -> None:
    listing = tmp_path / "list.gz"
    listing.write_bytes(gzip.compress(domains_text(4).encode()))
    command = " ".join(f"'{part}'" for part in scan_command(dns, "SOURCE", tmp_path / "out"))
    result = run(["bash", "-c", command.replace("'SOURCE'", f"<(zcat '{listing}')")])
    assert result.returncode == ExitCode.OK, result.stderr
    assert len(rows(tmp_path / "out", "domains")) == 4
    # A stream cannot be read twice: resuming it is refused with one line, never a partial re-read.
    (tmp_path / "out" / ".state" / "complete").unlink()
    again = run(["bash", "-c", command.replace("'SOURCE'", f"<(zcat '{listing}')")])
    assert again.returncode != ExitCode.OK
    assert "cannot resume" in again.stderr and "Traceback" not in again.stderr


def test_stdin_from_a_file_and_dev_null_are_read_like_files(dns: FaultyDnsServer, tmp_path: Path) -> None:
    # Neither can be waited on by the event loop (epoll refuses them): they must not reach the pipe
    # reader (uvloop aborts the process), and need not, since their reads never wait.
    source = tmp_path / "list.txt"
    source.write_text(domains_text(3), encoding="ascii")
    with source.open("rb") as stdin:
        result = run(scan_command(dns, "-", tmp_path / "out"), stdin=stdin)
    assert result.returncode == ExitCode.OK, result.stderr
    assert len(rows(tmp_path / "out", "domains")) == 3
    empty = run(scan_command(dns, "/dev/null", tmp_path / "null"))
    assert empty.returncode == ExitCode.OK, empty.stderr


def test_slow_stdin_producer_does_not_block_the_scan_or_ctrl_c(dns: FaultyDnsServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(scan_command(dns, "-", out, "--commit-interval", "0.2"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"first.test\nm0.test\n")
        proc.stdin.flush()
        # The producer is slow, not finished: stdin stays open, and the lines already sent are scanned.
        assert wait_until(lambda: len(rows(out, "domains")) == 2), "the scan stalled on its open stdin"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)  # closes stdin: the scan was already asked to stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr


# --- resume: the input and the committed parts ----------------------------------------------------


def _interrupted_scan(dns: FaultyDnsServer, tmp_path: Path, text: str, *extra: str) -> tuple[Path, list[str]]:
    """A finished scan whose completion mark is removed: what a kill after the last commit leaves."""
    source = tmp_path / "list.txt"
    source.write_text(text, encoding="ascii")
    out = tmp_path / "out"
    command = scan_command(dns, str(source), out, *extra)
    first = run(command)
    assert first.returncode == ExitCode.OK, first.stderr
    (out / ".state" / "complete").unlink()
    return out, command


def test_resume_refuses_a_same_size_edit_past_the_first_mebibyte(dns: FaultyDnsServer, tmp_path: Path) -> None:
    head = "# " + "x" * (1 << 20) + "\n"  # a comment line longer than 1 MiB, then the domains
    out, command = _interrupted_scan(dns, tmp_path, head + "a1.test\nb1.test\n")
    source = tmp_path / "list.txt"
    source.write_text(head + "a1.test\nc1.test\n", encoding="ascii")  # same size, changed after 1 MiB
    again = run(command)
    assert again.returncode != ExitCode.OK, "an edited input was accepted as the same scan"
    assert "input_sha256" in again.stderr
    assert sorted(r["input_line"] for r in rows(out, "domains")) == [2, 3]


def test_resume_refuses_a_damaged_fingerprint(dns: FaultyDnsServer, tmp_path: Path) -> None:
    out, command = _interrupted_scan(dns, tmp_path, "a1.test\nb1.test\n")
    fingerprint = out / ".state" / "scan.json"
    fingerprint.write_bytes(fingerprint.read_bytes()[:20])  # torn
    again = run(command)
    assert again.returncode == ExitCode.DATA_ERROR, again.stderr
    assert "scan.json" in again.stderr and "Traceback" not in again.stderr


def _mx_scan(dns: FaultyDnsServer, tmp_path: Path) -> tuple[Path, list[str]]:
    text = "".join(f"m{i}.test\n" for i in range(MX_DOMAINS))
    return _interrupted_scan(dns, tmp_path, text, "--rows-per-file", "3", "--commit-interval", "0.1")


def test_resume_refuses_a_deleted_committed_part(dns: FaultyDnsServer, tmp_path: Path) -> None:
    out, command = _mx_scan(dns, tmp_path)
    mx_before = len(rows(out, "mx"))
    victim = sorted((out / "domains").glob("part-*.parquet"))[0]
    victim.unlink()
    again = run(command)
    assert again.returncode == ExitCode.DATA_ERROR, again.stderr
    assert victim.name in again.stderr and "Traceback" not in again.stderr
    assert len(rows(out, "mx")) == mx_before  # nothing re-scanned, no MX row written twice


def test_resume_refuses_a_corrupt_committed_part(dns: FaultyDnsServer, tmp_path: Path) -> None:
    out, command = _mx_scan(dns, tmp_path)
    victim = sorted((out / "probes").glob("part-*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\x7f"  # the footer length: same size, unreadable
    victim.write_bytes(bytes(data))
    again = run(command)
    assert again.returncode == ExitCode.DATA_ERROR, again.stderr
    assert victim.name in again.stderr and "Traceback" not in again.stderr


# --- report on bad datasets -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(dns: FaultyDnsServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("report-dataset")
    source = workdir / "list.txt"
    source.write_text("m0.test\nm1.test\nnx.test\n", encoding="ascii")
    result = run(scan_command(dns, str(source), workdir / "out"))
    assert result.returncode == ExitCode.OK, result.stderr
    return workdir / "out"


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "scanner", "report", *args])


def _one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_report_on_a_corrupt_part_is_a_data_error(dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    victim = sorted((copy / "domains").glob("part-*.parquet"))[0]
    victim.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    result = report(str(copy))
    assert result.returncode == ExitCode.DATA_ERROR
    assert victim.name in result.stderr
    _one_line_error(result)


def test_report_on_foreign_tables_is_a_data_error(tmp_path: Path) -> None:
    for table in ("domains", "mx", "probes", "run"):
        (tmp_path / "foreign" / table).mkdir(parents=True)
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "foreign" / table / "part-00000.parquet")
    result = report(str(tmp_path / "foreign"))
    assert result.returncode == ExitCode.DATA_ERROR, result.stderr  # was: an empty report, exit 0
    assert "part-00000.parquet" in result.stderr
    _one_line_error(result)


def test_report_on_a_missing_directory_is_no_input(tmp_path: Path) -> None:
    result = report(str(tmp_path / "nothing"))
    assert result.returncode == ExitCode.NO_INPUT
    _one_line_error(result)


def test_report_dest_that_is_a_file_cannot_be_created(dataset: Path, tmp_path: Path) -> None:
    dest = tmp_path / "a-file"
    dest.write_text("x", encoding="ascii")
    result = report(str(dataset), "--dest", str(dest))
    assert result.returncode == ExitCode.CANT_CREATE
    assert str(dest) in result.stderr
    _one_line_error(result)
