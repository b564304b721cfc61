"""Key exchange and protocol hygiene against real servers, checked against testssl.sh on the same servers.

Servers: Postfix with a 1024-bit DH parameter file holding RFC 2409's Oakley group 2 (the Logjam case)
at @SECLEVEL=0; Postfix restricted to secp384r1 (tls_eecdh_auto_curves); exim/GnuTLS "legacy" (RFC 7919
ffdhe negotiation, its own curve list); and the Python/OpenSSL "modern" server (ECDSA, TLS 1.2-1.3, no
DHE suite, RFC 7919 groups in TLS 1.3). testssl.sh runs once per server with only ``-f -R``
("Elliptic curves offered", "DH group offered"/"Finite field group", "Secure Renegotiation"); our full
mode must find the same curves, the same DH size and the same renegotiation answer, and posture mode
must agree within its session cap.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.tls.enumeration import (
    MAX_POSTURE_SESSIONS,
    EnumerationResult,
    HelloAnswer,
    Plan,
    Purpose,
    full_plan,
    posture_plan,
)
from scanner.tls.groups import GroupClass, group_class, group_name, well_known_primes
from tests.integration.test_enumeration import enumerate_
from worlds.ca import TestCA
from worlds.exim import POSTURES, EximInstance
from worlds.peers import KxPeerResult, run_testssl_kx
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance, write_dh_params
from worlds.smtp import SmtpFarm, SmtpServerSpec

pytestmark = pytest.mark.slow
HOST = "mx.kx.test"
OAKLEY2 = next(p for p, name in well_known_primes().items() if name == "rfc2409-oakley2")  # RFC 2409 §6.2


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    peer: KxPeerResult


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    # Mail daemons drop privileges: their directory must be traversable by their users (not 0700).
    workdir = Path(tempfile.mkdtemp(prefix="kx-servers-"))
    workdir.chmod(0o755)
    block = pick_loopback_block()
    ca = TestCA(workdir / "ca")
    rsa = ca.issue([HOST], key="rsa2048")
    ecdsa = ca.issue([HOST])
    dh_file = write_dh_params(workdir / "dh1024.pem", OAKLEY2)
    addresses: dict[str, str] = {}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        dh1024 = PostfixInstance(workdir / "postfix-dh1024", loopback_host(block, 20), 25, HOST, rsa.cert_file,
                                 rsa.key_file, tls_protocols=">=TLSv1", tls_cipherlist="DEFAULT:@SECLEVEL=0",
                                 extra_main_cf={"smtpd_tls_dh1024_param_file": str(dh_file)})
        p384 = PostfixInstance(workdir / "postfix-p384", loopback_host(block, 21), 25, HOST, rsa.cert_file,
                               rsa.key_file, extra_main_cf={"tls_eecdh_auto_curves": "secp384r1"})
        exim = EximInstance(workdir / "exim-legacy", loopback_host(block, 10), 25, HOST, rsa.cert_file,
                            rsa.key_file, priority=POSTURES["legacy"])
        for name, daemon in (("postfix-dh1024", dh1024), ("postfix-p384", p384), ("exim-legacy", exim)):
            daemon.start()
            stack.callback(daemon.stop)
            addresses[name] = daemon.address
        farm = SmtpFarm([SmtpServerSpec(loopback_host(block, 30), 25, HOST, cert_file=ecdsa.cert_file,
                                        key_file=ecdsa.key_file, tls_min="TLSv1.2")])
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        addresses["modern"] = loopback_host(block, 30)
        # testssl.sh takes 30-80 s per server: once per server for the whole module.
        yield {name: Server(name, address, run_testssl_kx(address, 25)) for name, address in addresses.items()}


def _curves(result: EnumerationResult) -> frozenset[str]:
    """Elliptic curves only: testssl.sh lists RFC 7919 groups under "Finite field group" instead."""
    return frozenset(group_name(g) for g in result.kx.groups if group_class(g) is not GroupClass.FFDHE)


NAMES = ["postfix-dh1024", "postfix-p384", "exim-legacy", "modern"]


@pytest.mark.parametrize("name", NAMES)
def test_full_mode_equals_testssl(servers: dict[str, Server], name: str) -> None:
    server = servers[name]
    ours = enumerate_(server.address, full_plan())
    peer = server.peer
    assert ours.kx.groups_complete is True, ours.kx
    assert _curves(ours) == peer.curves, (name, ours.kx.groups, peer.curves)
    assert ours.kx.dh_bits == peer.dh_bits, (name, ours.kx, peer.dh_group)
    assert ours.kx.secure_renegotiation == peer.secure_renegotiation, (name, ours.kx, peer.findings)
    assert ours.kx.fallback_scsv is True, (name, ours.kx)  # full mode asks every server with two versions


def test_the_servers_are_what_they_claim(servers: dict[str, Server]) -> None:
    # Guards the fixture itself: the cases the issue names really are on the wire (per testssl.sh).
    assert servers["postfix-dh1024"].peer.dh_group == "RFC2409/Oakley Group 2"
    assert servers["postfix-p384"].peer.curves == {"secp384r1"}
    # The ECDSA server has no DHE suite below TLS 1.3 but takes RFC 7919 groups in TLS 1.3.
    assert (servers["modern"].peer.dh_group or "").startswith("ffdhe2048")


def _recording(plan: Plan, purposes: list[Purpose]) -> Plan:
    """The same plan, noting each request's purpose (the plan stays pure; this only watches it)."""
    request = next(plan)
    try:
        while True:
            purposes.append(request.purpose)
            answer: HelloAnswer = yield request
            request = plan.send(answer)
    except StopIteration as stop:
        result: EnumerationResult = stop.value
        return result


# Posture mode asks RFC 7507 only where NIST SP 800-52r2 requires the SCSV: a version below TLS 1.2 and no
# TLS 1.3 (of these servers, exim only).
FALLBACK_ASKED = {"postfix-dh1024": False, "postfix-p384": False, "exim-legacy": True, "modern": False}


@pytest.mark.parametrize("name", NAMES)
def test_posture_mode_agrees_within_its_cap(servers: dict[str, Server], name: str) -> None:
    server = servers[name]
    purposes: list[Purpose] = []
    posture = enumerate_(server.address, _recording(posture_plan(), purposes))
    assert posture.sessions == len(purposes) <= MAX_POSTURE_SESSIONS, (name, posture.sessions)
    assert _curves(posture) <= server.peer.curves
    if posture.kx.groups_complete:
        assert _curves(posture) == server.peer.curves
    # Posture mode eliminates curves only while only_deprecated_curves could still fire: never here (every
    # server's first curve is a recommended one), so each list is partial and says so.
    assert Purpose.GROUPS not in purposes and posture.kx.groups_complete is False, (name, purposes)
    assert posture.kx.preferred_group is not None and _curves(posture) <= server.peer.curves
    # The DHE question rides on the weak-class hellos: no DHE-only hello, and the DH size equals the peer's
    # wherever there is a DHE suite (the ECDSA server has none below TLS 1.3: dhe False).
    assert Purpose.DHE not in purposes, (name, purposes)
    if posture.kx.dhe:
        assert posture.kx.dh_bits == server.peer.dh_bits, (name, posture.kx)
    else:
        assert posture.kx.dhe is False and name == "modern", (name, posture.kx)
    # Every one of these servers speaks two versions or more and refuses a fallback (the Python/asyncio one
    # closes without flushing its inappropriate_fallback alert); posture mode asks only where NIST requires.
    assert (Purpose.FALLBACK in purposes) is FALLBACK_ASKED[name], (name, purposes)
    assert posture.kx.fallback_scsv is (True if FALLBACK_ASKED[name] else None), (name, posture.kx)
    assert posture.kx.secure_renegotiation == server.peer.secure_renegotiation


def test_logjam_server_named_and_graded(servers: dict[str, Server]) -> None:
    from scanner.grading import MxFacts, grade_mx

    kx = enumerate_(servers["postfix-dh1024"].address, posture_plan()).kx
    assert (kx.dh_bits, kx.dh_group) == (1024, "rfc2409-oakley2")
    assert kx.fallback_scsv is None and kx.compression is False and kx.extended_master_secret is True
    facts = MxFacts(mx_host=HOST, address="192.0.2.1", tested=True, starttls=True,
                    tls_versions=frozenset({"TLSv1.2", "TLSv1.3"}), versions_known=True, weak_classes=frozenset(),
                    nist_r1=True, nist_r2=True, cert_trusted=True, cert_expired=False, cert_name_valid=True,
                    cert_self_signed=False, cert_key_bits=2048, cert_key_type="rsa",
                    cert_signature_algorithm="sha256WithRSAEncryption", plaintext_after_starttls=False,
                    dh_bits=kx.dh_bits, dh_group=kx.dh_group)
    hits = {h.code for h in grade_mx(facts).hits}
    assert {"dh_group_below_2048", "dh_common_1024_prime"} <= hits


def test_restricted_curve_server_posture_partial_full_complete(servers: dict[str, Server]) -> None:
    posture = enumerate_(servers["postfix-p384"].address, posture_plan())
    assert posture.kx.groups == (24,) and posture.kx.groups_complete is False and posture.kx.preferred_group == 24
    full = enumerate_(servers["postfix-p384"].address, full_plan())
    assert full.kx.groups == (24,) and full.kx.groups_complete is True
