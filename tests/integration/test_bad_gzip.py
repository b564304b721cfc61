"""Corrupt gzip input (bad header, truncated stream, trailing junk) in a real scan.

It used to end in a traceback and lose the lines already read. Now the lines read before the damage
are scanned and written, run.json records the failure, and the scan exits with DATA_ERROR.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.exit_codes import ExitCode
from tests.integration.scanning import run_scan
from worlds.dns import FaultyDnsServer
from worlds.ports import free_port, pick_loopback_block

LINES = 3000


@pytest.fixture(scope="module")
def dns() -> Iterator[FaultyDnsServer]:
    address = f"{pick_loopback_block()}.1"
    with FaultyDnsServer({}, address, free_port(address)) as server:
        yield server


def text() -> bytes:
    return "".join(f"domain{i}.example.test\n" for i in range(1, LINES + 1)).encode()


def readable_lines(data: bytes) -> int:
    """How many whole lines a streaming decompressor gets out of ``data`` before it fails."""
    out = zlib.decompressobj(wbits=31).decompress(data)
    return out.count(b"\n")


@pytest.mark.parametrize("damage", ["bad_header", "truncated", "trailing_junk"])
def test_corrupt_gzip_keeps_what_was_read_and_exits_with_data_error(
    dns: FaultyDnsServer, tmp_path: Path, damage: str
) -> None:
    good = gzip.compress(text())
    data = {"bad_header": b"\x1f\x8b\x08\xff" + b"\x00" * 30,
            "truncated": good[: len(good) // 2],
            "trailing_junk": good + b"this is not gzip"}[damage]
    source = tmp_path / "domains.txt.gz"
    source.write_bytes(data)
    out = tmp_path / "out"
    done = run_scan(source, out, dns.resolver, "--allow-private", "--no-policy")
    assert done.returncode == ExitCode.DATA_ERROR, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "unreadable after line" in done.stderr, done.stderr[-3000:]
    expected = readable_lines(data) if damage == "truncated" else {"bad_header": 0, "trailing_junk": LINES}[damage]
    rows = pq.read_table(out / "domains", columns=["input_line"]).column("input_line").to_pylist()
    # Every whole line decompressed before the damage has its row (the stream may stop mid-line).
    assert sorted(rows) == list(range(1, len(rows) + 1))
    assert expected - 1 <= len(rows) <= expected
    if damage == "truncated":
        assert len(rows) > 0
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert "unreadable after line" in run["input_error"] and run["completed"] is False
