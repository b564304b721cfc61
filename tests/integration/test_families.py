"""Address-family coverage, scanned from inside network namespaces (root, as in CI).

A dual-stack MX host (A 127.0.0.10, AAAA ::1) scanned from a namespace with only IPv4 on loopback must
read "all" over IPv4 with IPv6 "not covered" (its IPv6 address not probed, with its own status), not
"incomplete"; from a namespace where ::1 is reachable both families are probed. ``--ipv4``/``--ipv6``
force a family on or off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from scanner.report import build_report
from scanner.report.render import render_markdown
from worlds.families import namespace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]
ROOT = Path(__file__).resolve().parents[2]


def _in(ns: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "worlds.families", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _scan_in(ns: str, out: Path, *scan_args: str) -> dict[str, list[dict[str, Any]]]:
    _in(ns, str(out), *scan_args)
    return {table: pq.read_table(out / table).to_pylist() for table in ("domains", "probes", "run")}


def _domain(data: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    return next(r for r in data["domains"] if r["domain"] == name)


def test_ipv4_only_vantage_covers_ipv4_and_says_so(tmp_path: Path) -> None:
    with namespace(ipv6=False) as ns:
        data = _scan_in(ns, tmp_path / "out")
        checked = " ".join(_in(ns, "check", "dual.family.test").split())
    run = data["run"][0]
    assert (run["ipv4_reachable"], run["ipv6_reachable"]) == (True, False), run["families_detail"]
    statuses = {p["address"]: p["status"] for p in data["probes"]}
    assert statuses == {"127.0.0.10": "starttls_ok", "::1": "skipped_family_unreachable"}
    dual = _domain(data, "dual.family.test")
    assert (dual["starttls"], dual["starttls_ipv4"], dual["starttls_ipv6"]) == ("all", "all", "not_covered")
    assert (dual["starttls_all"], dual["families_covered"], dual["not_covered_count"]) == (True, ["ipv4"], 1)
    assert dual["untested_count"] == 0 and dual["forced_tls_safe"] is not None
    assert not any(r.startswith("not_tested") for r in dual["forced_tls_reasons"])
    v4 = _domain(data, "v4only.family.test")
    assert (v4["starttls"], v4["starttls_ipv6"], v4["not_covered_count"]) == ("all", "not_applicable", 0)
    # The report states the coverage beside each figure; check shows the per-family verdicts.
    report = build_report(tmp_path / "out")
    assert report.scan.coverage.startswith("IPv4 only (IPv6 not reachable")
    starttls = next(t for t in report.tables() if t.key == "starttls.domains")
    assert (starttls.get("all").numerator, starttls.get("partly_covered").numerator) == (2, 1)
    markdown = render_markdown(report)
    assert markdown.count("coverage: IPv4 only") >= len(list(report.tables()))
    assert "STARTTLS on MX: all (IPv4: all, IPv6: not_covered)" in checked


def test_ipv6_vantage_probes_both_families(tmp_path: Path) -> None:
    with namespace(ipv6=True) as ns:
        data = _scan_in(ns, tmp_path / "out")
    run = data["run"][0]
    assert (run["ipv4_reachable"], run["ipv6_reachable"]) == (True, True), run["families_detail"]
    dual = _domain(data, "dual.family.test")
    assert (dual["starttls"], dual["starttls_ipv4"], dual["starttls_ipv6"]) == ("all", "all", "all")
    assert (dual["families_covered"], dual["not_covered_count"]) == (["ipv4", "ipv6"], 0)


def test_a_family_can_be_forced(tmp_path: Path) -> None:
    with namespace(ipv6=True) as ns:
        off = _scan_in(ns, tmp_path / "off", "--ipv6", "off")
    assert off["run"][0]["families_detail"].endswith("IPv6: off (forced)")
    assert _domain(off, "dual.family.test")["starttls_ipv6"] == "not_covered"
    with namespace(ipv6=False) as ns:
        on = _scan_in(ns, tmp_path / "on", "--ipv6", "on")
    # Forced on where no route exists: the address is probed and fails as a network failure.
    probe = next(p for p in on["probes"] if p["address"] == "::1")
    assert (probe["status"], probe["failure_class"]) == ("unreachable", "no_route")
    assert _domain(on, "dual.family.test")["starttls"] == "incomplete"
