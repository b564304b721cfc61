"""DANE as a DANE sender sees it: a DNSSEC-signed zone (ldns-signzone, served by nsd) behind a validating
unbound, whose AD bit is what the scan trusts, and mail servers on loopback.

Each domain is built for one DANE behaviour (RFC 7672): TLSA that matches, TLSA that matches nothing,
an RRset without a usable record, TLSA on an MX whose STARTTLS is off, a TLSA RRset whose signature
was broken after signing (bogus), a bogus MX RRset, and TLSA in an unsigned zone. The real CLI scans
the world; the test compares the dataset with what each domain was built to produce.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.cli import main
from scanner.report import build_report
from tests.integration.scanning import scan
from worlds.ca import TestCA
from worlds.dns import NsdServer, Zone
from worlds.dnssec import UnboundServer, sign_zone
from worlds.ports import loopback_host, pick_loopback_block
from worlds.scenario import ScanWorld
from worlds.smtp import Behaviour, SmtpFarm, SmtpServerSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIGNED = "dane.test"
UNSIGNED = "plain.test"
STALE = "5a" * 32  # a TLSA digest of no key at all (an old certificate's, say)
BROKEN_FROM, BROKEN_TO = "b0" * 32, "b1" * 32  # changed after signing: the RRSIG no longer verifies


@dataclass(frozen=True)
class Expect:
    status: str
    delivery: str
    rules: frozenset[str] = frozenset()  # DANE rule codes expected among the grade rules
    dnssec: str | None = None  # mx.dane_dnssec of the domain's MX address
    forced_tls_safe: bool | None = None


# domain label → (MX host label, host index, farm behaviour, TLSA kind)
LAYOUT: dict[str, tuple[str, int, Behaviour, str]] = {
    "match": ("mx-match", 10, Behaviour.NORMAL, "match"),
    "nomatch": ("mx-nomatch", 11, Behaviour.NORMAL, "stale"),
    "unusable": ("mx-unusable", 12, Behaviour.NORMAL, "pkix"),
    "notls": ("mx-notls", 13, Behaviour.NO_STARTTLS, "match"),
    "tlsabogus": ("mx-bogus", 14, Behaviour.NORMAL, "broken"),
}
EXPECTED: dict[str, Expect] = {
    f"match.{SIGNED}": Expect("ok", "yes", frozenset(), "authenticated", True),
    f"nomatch.{SIGNED}": Expect("ok", "no", frozenset({"dane_tlsa_no_match"}), "authenticated", False),
    f"unusable.{SIGNED}": Expect("ok", "yes", frozenset({"dane_tlsa_unusable"}), "authenticated", True),
    f"notls.{SIGNED}": Expect("ok", "no", frozenset({"dane_starttls_failed"}), "authenticated", False),
    f"tlsabogus.{SIGNED}": Expect("ok", "no", frozenset({"dane_tlsa_bogus"}), "bogus", False),
    f"mxbogus.{SIGNED}": Expect("dns_bogus", "no"),
    f"unsigned.{UNSIGNED}": Expect("ok", "not_dane", frozenset({"dane_tlsa_unsigned"}), "not_authenticated", True),
}


def _spki_sha256(leaf_der: bytes) -> str:
    spki = x509.load_der_x509_certificate(leaf_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScanWorld]:
    workdir = tmp_path_factory.mktemp("dane")
    block = pick_loopback_block()
    ca = TestCA(workdir / "ca")
    signed, specs = Zone(SIGNED), []
    for label, (mx, index, behaviour, kind) in LAYOUT.items():
        host = f"{mx}.{SIGNED}"
        cert = ca.issue([host])
        specs.append(SmtpServerSpec(loopback_host(block, index), 25, host, behaviour, cert.cert_file, cert.key_file))
        signed.a(mx, loopback_host(block, index)).mx(label, 10, mx)
        digest = {"match": _spki_sha256(cert.leaf_der), "stale": STALE, "broken": BROKEN_FROM,
                  "pkix": _spki_sha256(cert.leaf_der)}[kind]
        usage = 1 if kind == "pkix" else 3  # PKIX-EE: unusable for SMTP (RFC 7672 §3.1.3)
        signed.add(f"_25._tcp.{mx}", "TLSA", f"{usage} 1 1 {digest}")
    signed.mx("mxbogus", 10, "mx-tampered")  # the MX RRset is altered after signing
    plain_cert = ca.issue([f"mx.{UNSIGNED}"])
    specs.append(SmtpServerSpec(loopback_host(block, 20), 25, f"mx.{UNSIGNED}", Behaviour.NORMAL,
                                plain_cert.cert_file, plain_cert.key_file))
    plain = (Zone(UNSIGNED).a("mx", loopback_host(block, 20)).mx("unsigned", 10, "mx")
             .add("_25._tcp.mx", "TLSA", f"3 1 1 {_spki_sha256(plain_cert.leaf_der)}"))
    zone_file = signed.write(workdir / "dane.zone")
    signed_zone = sign_zone(zone_file.path, SIGNED, workdir / "keys",
                            tamper={BROKEN_FROM: BROKEN_TO, "mx-tampered": "mx-tamperex"})
    domains = workdir / "domains.txt"
    domains.write_text("\n".join(EXPECTED) + "\n", encoding="utf-8")
    with ExitStack() as stack:
        nsd = stack.enter_context(NsdServer(workdir / "nsd", [signed_zone.zone_file, plain],
                                            address=loopback_host(block, 53), port=53))
        stub = f"{nsd.address}@{nsd.port}"
        unbound = stack.enter_context(UnboundServer(workdir / "unbound", loopback_host(block, 54), 53,
                                                    {SIGNED: stub, UNSIGNED: stub}, [signed_zone.trust_anchor]))
        farm = SmtpFarm(specs)
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        yield ScanWorld(unbound.resolver, ca.ca_file, domains)


@pytest.fixture(scope="module")
def dataset(world: ScanWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan")
    return scan(world, out, "--ehlo-name", "scanner.test", "--dns-timeout", "2").path


def _rows(out: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(out / table).to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("domain", sorted(EXPECTED))
def test_dane_sender_verdict_and_rules(dataset: Path, domain: str) -> None:
    row = next(r for r in _rows(dataset, "domains") if r["domain"] == domain)
    exp = EXPECTED[domain]
    assert (row["status"], row["dane_delivery"]) == (exp.status, exp.delivery), row["dane_delivery_reasons"]
    dane_rules = {code for code in row["grade_rules"] if code.startswith("dane_")}
    assert dane_rules == exp.rules, row["dane_delivery_reasons"]
    assert row["forced_tls_safe"] is exp.forced_tls_safe, row["forced_tls_reasons"]
    links = [r for r in _rows(dataset, "mx") if r["domain"] == domain and r["address"] is not None]
    assert [r["dane_dnssec"] for r in links] == ([exp.dnssec] if exp.dnssec else [])
    if exp.delivery == "no":
        # A DANE sender refuses the MX: worse than an expired certificate (cap C) when graded at all.
        assert row["grade"] in (None, "D", "E", "F")
        assert row["dane_delivery_reasons"]
    if domain.startswith("match."):
        assert row["dane_valid"] is True and row["grade"] in ("A", "A+")


def test_bogus_mx_has_its_own_status_and_detail(dataset: Path) -> None:
    row = next(r for r in _rows(dataset, "domains") if r["domain"] == f"mxbogus.{SIGNED}")
    assert "bogus" in row["status_detail"] and row["dane_delivery_reasons"][0].startswith("mx_bogus:")


def test_report_counts_dane_delivery(dataset: Path) -> None:
    table = build_report(dataset).dane_domains
    got = {k: (table.get(k).numerator, table.get(k).denominator)
           for k in ("dane_applies", "delivery_yes", "delivery_no", "delivery_partial", "tlsa_unsigned")}
    # 7 domains have the verdict; 6 are DANE domains (unsigned is not): match and unusable deliver.
    assert got == {"dane_applies": (6, 7), "delivery_yes": (2, 6), "delivery_no": (4, 6),
                   "delivery_partial": (0, 6), "tlsa_unsigned": (1, 6)}


def test_check_shows_the_dane_sender_verdict(world: ScanWorld, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", f"nomatch.{SIGNED}", "--resolver", world.resolver, "--ca-file", str(world.ca_file),
                 "--allow-private", "--per-ip-interval", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Would a DANE sender deliver: no (tlsa_no_match: mx-nomatch.dane.test" in " ".join(out.split())
    assert "forced TLS: NOT safe" in out and "fix_tlsa_records" in out
