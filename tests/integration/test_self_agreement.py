"""Answers that agree with themselves: the probe row never contradicts its own observation handshake.

Real servers on loopback, scanned through the CLI:

* tlslite-ng serving SSLv3 + TLS 1.0 while answering supported_versions with its default list: a plain
  TLS 1.2 hello gets TLS 1.0, OpenSSL's hello (which lists 1.2 in supported_versions) gets TLS 1.2.
  The observation handshake negotiates TLS 1.2, so TLS 1.2 is accepted, and the quirk is recorded.
* Postfix with every TLS version disabled: it refuses the handshake with a fatal protocol_version
  alert, which is what the row's failure class and detail say (not "closed").
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.integration.scanning import scan
from worlds.ca import TestCA
from worlds.dns import NsdServer, Zone
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance
from worlds.scenario import ScanWorld
from worlds.tlslite_smtp import TLSLITE_DEFAULT_VERSIONS, TlsliteSmtpServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ZONE = "agree.test"
NO_TLS_VERSION = "!SSLv2,!SSLv3,!TLSv1,!TLSv1.1,!TLSv1.2,!TLSv1.3"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScanWorld]:
    workdir = Path(tempfile.mkdtemp(prefix="agree-world-"))
    workdir.chmod(0o755)  # Postfix drops privileges and must traverse it
    block = pick_loopback_block()
    ca = TestCA(workdir / "ca")
    zone = Zone(ZONE)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        intolerant = ca.issue([f"mx-intolerant.{ZONE}"], key="rsa2048")
        tlslite = TlsliteSmtpServer(loopback_host(block, 10), 25, f"mx-intolerant.{ZONE}", intolerant.cert_file,
                                    intolerant.key_file, min_version=(3, 0), max_version=(3, 1),
                                    cipher_names=["aes128", "3des"], supported_versions=TLSLITE_DEFAULT_VERSIONS)
        stack.enter_context(tlslite)
        zone.a("mx-intolerant", tlslite.address).mx("intolerant", 10, "mx-intolerant")
        refusing = ca.issue([f"mx-noversion.{ZONE}"])
        postfix = PostfixInstance(workdir / "postfix", loopback_host(block, 11), 25, f"mx-noversion.{ZONE}",
                                  refusing.cert_file, refusing.key_file, tls_protocols=NO_TLS_VERSION)
        stack.enter_context(postfix)
        zone.a("mx-noversion", postfix.address).mx("noversion", 10, "mx-noversion")
        nsd = stack.enter_context(NsdServer(workdir / "nsd", [zone], address=loopback_host(block, 53), port=53))
        domains = workdir / "domains.txt"
        domains.write_text(f"intolerant.{ZONE}\nnoversion.{ZONE}\n", encoding="utf-8")
        yield ScanWorld(nsd.resolver, ca.ca_file, domains)


@pytest.fixture(scope="module")
def probes(world: ScanWorld, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("scan")
    dataset = scan(world, out, "--ehlo-name", "scanner.test", "--no-policy", "--no-uvloop")
    rows: list[dict[str, Any]] = dataset.probes.to_pylist()
    return {row["mx_hosts"][0].split(".")[0]: row for row in rows}


def test_a_negotiated_version_is_an_accepted_version(probes: dict[str, dict[str, Any]]) -> None:
    row = probes["mx-intolerant"]
    assert row["tls_version"] == "TLSv1.2"
    assert row["ver_tls1_2"] == "accepted" and "TLSv1.2" in row["versions_accepted"]
    assert row["preferred_version"] == "TLSv1.2"
    assert "version_needs_supported_versions:TLSv1.2" in row["hello_quirks"]
    # The negotiated suite is among what the enumeration reports (posture: its classes and NIST flags).
    assert row["tls_cipher"] and row["nist_r1"] is not False


def test_protocol_version_alert_is_a_tls_alert(probes: dict[str, dict[str, Any]]) -> None:
    row = probes["mx-noversion"]
    assert (row["status"], row["failure_class"]) == ("tls_handshake_failed", "tls_alert"), row["failure_detail"]
    assert "protocol_version" in row["failure_detail"].lower().replace(" ", "_")
    # The alert is the TLS layer answering, not unprotected SMTP: no injection flag.
    assert row["plaintext_after_starttls"] is False
    # The enumeration's hellos get the same answer.
    assert {row[f"ver_{v}"] for v in ("ssl3", "tls1_0", "tls1_1", "tls1_2", "tls1_3")} == {"rejected_alert"}
