"""A valid MX host name of 247+ characters: its TLSA name ``_25._tcp.<host>`` cannot exist.

The domain used to become ``internal_error`` (the TLSA query was built outside the error handling);
now the TLSA lookup has its own verdict (``name_too_long``) and the domain row is a normal one.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tests.integration.scanning import run_scan
from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port, pick_loopback_block

LABELS = ["a" * 60, "b" * 60, "c" * 60, "d" * 56]
HOST = ".".join([*LABELS, "long.test"])


def test_a_247_character_mx_host_gets_its_own_tlsa_verdict(tmp_path: Path) -> None:
    assert 247 <= len(HOST) <= 253
    block = pick_loopback_block()
    zone = {"long.test": [Record("@", "MX", f"10 {HOST}."), Record(".".join(LABELS), "A", f"{block}.25")]}
    source = tmp_path / "domains.txt"
    source.write_text("long.test\n", encoding="utf-8")
    out = tmp_path / "out"
    address = f"{block}.1"
    with FaultyDnsServer(zone, address, free_port(address)) as server:
        done = run_scan(source, out, server.resolver, "--allow-private", "--enumerate", "off",
                        "--connect-timeout", "1", "--throttle-retry")
    assert done.returncode == 0, done.stderr[-3000:]
    domain = pq.read_table(out / "domains").to_pylist()[0]
    assert domain["status"] == "ok", domain["status_detail"]
    mx = pq.read_table(out / "mx").to_pylist()
    assert [(row["mx_host"], row["dane_verdict"]) for row in mx] == [(HOST, "name_too_long")]
