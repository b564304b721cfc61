"""Certificates chosen by SNI, and backends that disagree behind one address, against real Postfix.

World (nsd for DNS, everything on one random 127.A.B block):
- one Postfix serving three MX names on one address: mx1's certificate by default, mx2's and mx3's
  through ``tls_server_sni_maps`` (what a shared host does for its customers);
- a round-robin front alternating between two Postfix backends for the same MX name, one with a
  CA-issued certificate and one with a self-signed certificate (another certificate for the same SNI);
- a front alternating between a Postfix with STARTTLS and one without (STARTTLS advertised in one
  session, missing in the next);
- a front sending two connections in three to a Postfix with TLS 1.3 and the third to one limited to
  TLS 1.2 (a version accepted, then refused).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.integration.scanning import run_scan
from worlds.ca import TestCA, self_signed
from worlds.dns import NsdServer, Record, write_zone_file
from worlds.latency import LatencyFront, TcpRoute
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance, install_postfix, postfix_available

pytestmark = pytest.mark.slow
ZONE = "sni.test"


@dataclass(frozen=True)
class World:
    domains_file: Path
    dns: str
    ca_file: Path
    sha: dict[str, str]  # certificate label → leaf SHA-256

    @property
    def resolver(self) -> str:
        return f"{self.dns}:53"


def _sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if not postfix_available():
        install_postfix()
    workdir = Path(tempfile.mkdtemp(prefix="sni-world-"))
    workdir.chmod(0o755)  # Postfix's unprivileged daemons must traverse it
    block = pick_loopback_block()
    ca = TestCA(workdir / "ca")
    certs = {name: ca.issue([f"{name}.{ZONE}"]) for name in ("mx1", "mx2", "mx3", "lb-mx", "lb2-mx")}
    rogue = self_signed(workdir / "rogue", [f"lb-mx.{ZONE}"])
    shared, lb_a, lb_b, lb2_plain, lb3_tls12 = (loopback_host(block, i) for i in (10, 20, 21, 23, 25))
    lb_front, lb2_front, lb3_front = loopback_host(block, 22), loopback_host(block, 24), loopback_host(block, 26)
    with ExitStack() as stack:
        stack.callback(lambda: subprocess.run(["rm", "-rf", str(workdir)], check=False))
        servers = [
            PostfixInstance(workdir / "shared", shared, 25, f"mx1.{ZONE}", certs["mx1"].cert_file,
                            certs["mx1"].key_file,
                            sni_certs={f"mx2.{ZONE}": (certs["mx2"].cert_file, certs["mx2"].key_file),
                                       f"mx3.{ZONE}": (certs["mx3"].cert_file, certs["mx3"].key_file)}),
            PostfixInstance(workdir / "lb-a", lb_a, 25, f"lb-mx.{ZONE}", certs["lb-mx"].cert_file,
                            certs["lb-mx"].key_file),
            PostfixInstance(workdir / "lb-b", lb_b, 25, f"lb-mx.{ZONE}", rogue.cert_file, rogue.key_file),
            PostfixInstance(workdir / "lb2-plain", lb2_plain, 25, f"lb2-mx.{ZONE}", tls=False),
            PostfixInstance(workdir / "lb3-tls12", lb3_tls12, 25, f"lb-mx.{ZONE}", certs["lb-mx"].cert_file,
                            certs["lb-mx"].key_file, tls_protocols="<=TLSv1.2"),
        ]
        for server in servers:
            server.start()
            stack.callback(server.stop)
        stack.enter_context(LatencyFront([TcpRoute((lb_front, 25), (lb_a, 25), ((lb_b, 25),)),
                                          TcpRoute((lb2_front, 25), (lb_a, 25), ((lb2_plain, 25),)),
                                          TcpRoute((lb3_front, 25), (lb_a, 25), ((lb_a, 25), (lb3_tls12, 25)))]))
        records = [Record(f"{name}.{ZONE}.", "A", shared) for name in ("mx1", "mx2", "mx3")]
        records += [Record(f"lb-mx.{ZONE}.", "A", lb_front), Record(f"lb2-mx.{ZONE}.", "A", lb2_front),
                    Record(f"lb3-mx.{ZONE}.", "A", lb3_front)]
        busy = tuple((f"b{i}", "mx3") for i in (1, 2, 3))  # three domains behind one name (test_busy_...)
        for domain, host in (("d1", "mx1"), ("d2", "mx2"), ("d3", "mx3"), ("lb", "lb-mx"), ("lb2", "lb2-mx"),
                             ("lb3", "lb3-mx"), *busy):
            records.append(Record(f"{domain}.{ZONE}.", "MX", f"10 {host}.{ZONE}."))
        zone = write_zone_file(workdir / "zones" / f"{ZONE}.zone", ZONE, records)
        dns = loopback_host(block, 53)
        nsd = NsdServer(workdir / "nsd", [zone], address=dns, port=53)
        nsd.start()
        stack.callback(nsd.stop)
        # d2 first: the probe of the shared address then sends mx2 as SNI (not the default certificate).
        domains = workdir / "domains.txt"
        domains.write_text("".join(f"{d}.{ZONE}\n" for d in ("d2", "d1", "d3", "lb", "lb2")), encoding="utf-8")
        (workdir / "versions.txt").write_text(f"lb3.{ZONE}\n", encoding="utf-8")
        sha = {name: _sha(c.leaf_der) for name, c in certs.items()} | {"rogue": _sha(rogue.leaf_der)}
        yield World(domains, dns, ca.ca_file, sha)


def scan_tables(world: World, out: Path, *extra: str, domains: Path | None = None,
                enumerate_: str = "off") -> dict[str, list[dict[str, Any]]]:
    # A child process, as a user runs it: the first domain's probe must be requested first (see above).
    done = run_scan(domains or world.domains_file, out, world.resolver, "--ca-file", str(world.ca_file),
                    "--allow-private", "--ehlo-name", "sni-test.test", "--per-ip-interval", "0", "--enumerate",
                    enumerate_, "--no-policy", "--throttle-retry", *extra, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {t: pq.read_table(out / t).to_pylist() for t in ("domains", "mx", "probes", "sessions")}


@pytest.fixture(scope="module")
def default_scan(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    # One DNS worker: domains ask for their probes in input order, so d2's name is the probe's SNI (with
    # many workers, whichever domain's DNS answers first asks first, and the assertions below race).
    return scan_tables(world, tmp_path_factory.mktemp("sni-scan") / "out", "--dns-workers", "1")


def by_domain(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["domain"].split(".")[0]: r for r in rows}


def test_each_name_is_judged_on_the_certificate_for_its_own_sni(
        world: World, default_scan: dict[str, list[dict[str, Any]]]) -> None:
    tables = default_scan
    mx, domains = by_domain(tables["mx"]), by_domain(tables["domains"])
    for name in ("d1", "d2", "d3"):
        assert mx[name]["cert_name_match"] == "san", mx[name]
        assert mx[name]["cert_valid"] is True
        assert domains[name]["certs_valid_all"] is True
        assert domains[name]["grade"] == "A"
    host = {"d1": "mx1", "d2": "mx2", "d3": "mx3"}
    for name, cert in host.items():
        assert mx[name]["cert_sha256"] == world.sha[cert]  # the row says which certificate was judged
    assert mx["d2"]["cert_source"] == "probe"
    assert {mx["d1"]["cert_source"], mx["d3"]["cert_source"]} == {"own_sni"}
    probe = next(p for p in tables["probes"] if p["probe_id"] == mx["d1"]["probe_id"])
    assert probe["sni"] == f"mx2.{ZONE}"
    assert probe["cert_no_sni_sha256"] == world.sha["mx1"]  # the default chain, for senders sending no SNI
    assert probe["sni_selects_certificate"] is True
    assert probe["inconsistent_facts"] == []
    sessions = [s for s in tables["sessions"] if s["probe_id"] == probe["probe_id"]]
    kinds = sorted((s["kind"], s["sni"] or "") for s in sessions)
    # One full probe, then: no SNI, the re-asks that tell SNI selection from alternating backends, and
    # one handshake-only session per further name.
    assert kinds == [("no_sni", ""), ("recheck", ""), ("recheck", f"mx2.{ZONE}"),
                     ("sni", f"mx1.{ZONE}"), ("sni", f"mx3.{ZONE}")]


def test_cap_on_sni_sessions_leaves_names_not_checked_never_mismatch(world: World, tmp_path: Path) -> None:
    tables = scan_tables(world, tmp_path / "out", "--sni-cap", "1")
    mx, domains = by_domain(tables["mx"]), by_domain(tables["domains"])
    checked, unchecked = sorted((mx["d1"], mx["d3"]), key=lambda r: r["cert_source"] == "not_checked")
    assert checked["cert_source"] == "own_sni" and checked["cert_valid"] is True
    assert unchecked["cert_source"] == "not_checked"
    assert unchecked["cert_name_match"] == "not_checked" and unchecked["cert_valid"] is None
    assert "cert_name_mismatch" not in unchecked["grade_rules"]
    assert domains[unchecked["domain"].split(".")[0]]["certs_valid_all"] is None  # unknown, not "all valid"


def test_a_name_asked_again_takes_the_kept_part_of_the_cap(world: World, tmp_path: Path) -> None:
    """--sni-cap 2: one session for the first further name to ask (mx1), the other kept for a name a
    second domain asks for (mx3, behind b1, b2 and b3): b1's link reads not_checked, b2's and b3's are
    judged on mx3's own certificate, and mx3 is asked once."""
    domains = tmp_path / "busy.txt"
    domains.write_text("".join(f"{d}.{ZONE}\n" for d in ("d2", "d1", "b1", "b2", "b3")), encoding="utf-8")
    # One DNS worker: the domains ask in input order.
    tables = scan_tables(world, tmp_path / "out", "--sni-cap", "2", "--dns-workers", "1", domains=domains)
    mx, rows = by_domain(tables["mx"]), by_domain(tables["domains"])
    assert [mx[d]["cert_source"] for d in ("d2", "d1", "b1", "b2", "b3")] == \
        ["probe", "own_sni", "not_checked", "own_sni", "own_sni"]
    assert mx["b1"]["cert_valid"] is None and rows["b1"]["certs_valid_all"] is None
    for name in ("b2", "b3"):
        assert mx[name]["cert_sha256"] == world.sha["mx3"] and mx[name]["cert_valid"] is True
        assert rows[name]["certs_valid_all"] is True
    sni = sorted(s["sni"] for s in tables["sessions"] if s["kind"] == "sni")
    assert sni == [f"mx1.{ZONE}", f"mx3.{ZONE}"]  # within the cap, each name once


def test_without_sni_checks_other_names_read_as_mismatch(world: World, tmp_path: Path) -> None:
    """The measurement defect the checks remove (and the benchmark's baseline)."""
    tables = scan_tables(world, tmp_path / "out", "--no-sni-checks")
    mx = by_domain(tables["mx"])
    assert mx["d1"]["cert_name_match"] == "mismatch" and mx["d2"]["cert_name_match"] == "san"
    assert not tables["sessions"]


def test_backends_with_different_certificates_are_inconsistent_and_graded_on_the_worst(
        world: World, default_scan: dict[str, list[dict[str, Any]]]) -> None:
    tables = default_scan
    mx = by_domain(tables["mx"])["lb"]
    probe = next(p for p in tables["probes"] if p["probe_id"] == mx["probe_id"])
    assert probe["inconsistent_facts"] == ["certificate"]
    assert probe["sni_selects_certificate"] is None  # alternating backends are not SNI selection
    assert probe["consistency_sessions"] >= 2
    assert mx["cert_sha256"] == world.sha["rogue"]  # the worst certificate seen for the name
    assert mx["cert_valid"] is False
    assert {"inconsistent_answers", "cert_self_signed"} <= set(mx["grade_rules"])
    contradicting = [s for s in tables["sessions"] if s["probe_id"] == mx["probe_id"] and s["contradicts"]]
    assert contradicting and all(s["contradicts"] == ["certificate"] for s in contradicting)


def test_starttls_missing_in_one_session_is_inconsistent_and_graded_as_missing(
        default_scan: dict[str, list[dict[str, Any]]]) -> None:
    tables = default_scan
    mx = by_domain(tables["mx"])["lb2"]
    probe = next(p for p in tables["probes"] if p["probe_id"] == mx["probe_id"])
    assert probe["inconsistent_facts"] == ["starttls"]
    assert mx["grade"] == "F"
    assert mx["grade_rules"] == ["no_starttls", "inconsistent_answers"]


def test_a_version_accepted_then_refused_is_inconsistent_and_counts_as_negotiated(world: World,
                                                                                   tmp_path: Path) -> None:
    # Connections 1, 2, 4, 5, ... reach the TLS 1.3 backend, 3, 6, ... the TLS 1.2 one: the probe negotiates
    # TLS 1.3, the enumeration's TLS 1.3 hello (third connection) is refused, the re-ask is accepted.
    tables = scan_tables(world, tmp_path / "out", domains=world.domains_file.with_name("versions.txt"),
                  enumerate_="posture")
    mx = by_domain(tables["mx"])["lb3"]
    probe = next(p for p in tables["probes"] if p["probe_id"] == mx["probe_id"])
    assert probe["tls_version"] == "TLSv1.3"
    assert probe["inconsistent_facts"] == ["version"]  # the sessions disagreed, and the row says so
    # A version a session negotiated is accepted: the row never contradicts its own tls_version, and the
    # same hello accepted on a re-ask needs no other hello shape (no quirk).
    assert probe["ver_tls1_3"] == "accepted"
    assert not probe["hello_quirks"]
    assert "inconsistent_answers" in mx["grade_rules"]
