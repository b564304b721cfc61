"""Enumeration against real servers, checked against peer tools on the same servers.

Servers: exim (GnuTLS: 3DES, RC4, MD5, server order), Postfix (OpenSSL 3 at SECLEVEL 0: TLS 1.0-1.3),
tlslite-ng (SSLv3 and RC4, which no OpenSSL 3 server offers) and exim limited to TLS 1.3. For each, our
full mode must find exactly the versions and suites sslyze finds; for one server testssl.sh also runs
and must agree, server order included. Posture mode must stay within 12 sessions.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.config import ProbeConfig
from scanner.tls.ciphers import WeakClass
from scanner.tls.enumeration import EnumerationResult, Plan, VersionVerdict, full_plan, posture_plan
from scanner.tls.probe import drive_plan, probe_hello
from scanner.tls.versions import VERSION_NAMES
from worlds.ca import TestCA
from worlds.exim import POSTURES, EximInstance
from worlds.peers import PeerResult, run_sslyze, run_testssl
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance
from worlds.tlslite_smtp import TlsliteSmtpServer

pytestmark = pytest.mark.slow
HOST = "mx.enum.test"


@dataclass(frozen=True)
class Target:
    name: str
    address: str


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    # Mail daemons drop privileges: their directory must be traversable by their users (not 0700).
    workdir = Path(tempfile.mkdtemp(prefix="enum-servers-"))
    workdir.chmod(0o755)
    block = pick_loopback_block()
    ca = TestCA(workdir / "ca")
    rsa = ca.issue([HOST], key="rsa2048")
    out: dict[str, Target] = {}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        for index, posture in enumerate(("legacy", "restricted", "tls13", "tls12"), start=10):
            exim = EximInstance(workdir / f"exim-{posture}", loopback_host(block, index), 25, HOST,
                                rsa.cert_file, rsa.key_file, priority=POSTURES[posture])
            exim.start()
            stack.callback(exim.stop)
            out[f"exim-{posture}"] = Target(f"exim-{posture}", exim.address)
        postfix = PostfixInstance(workdir / "postfix", loopback_host(block, 20), 25, HOST, rsa.cert_file,
                                  rsa.key_file, tls_protocols=">=TLSv1", tls_cipherlist="DEFAULT:@SECLEVEL=0")
        postfix.start()
        stack.callback(postfix.stop)
        out["postfix"] = Target("postfix", postfix.address)
        tlslite = TlsliteSmtpServer(loopback_host(block, 30), 25, HOST, rsa.cert_file, rsa.key_file,
                                    min_version=(3, 0), max_version=(3, 1), cipher_names=["aes128", "rc4", "3des"])
        tlslite.start()
        stack.callback(tlslite.stop)
        out["tlslite"] = Target("tlslite", tlslite.address)
        yield out


def enumerate_(address: str, plan: Plan) -> EnumerationResult:
    config = ProbeConfig(ehlo_name="scanner.test", per_ip_interval=0, tls_timeout=5.0)

    async def run() -> EnumerationResult:
        async def session(request):  # type: ignore[no-untyped-def]
            return await probe_hello(address, 25, HOST, config, request)

        return await drive_plan(plan, session)

    return asyncio.run(run())


def ours_as_peer(result: EnumerationResult) -> tuple[frozenset[str], dict[str, frozenset[int]]]:
    versions = frozenset(VERSION_NAMES[v] for v, verdict in result.versions.items()
                         if verdict is VersionVerdict.ACCEPTED)
    suites = {VERSION_NAMES[v]: frozenset(codes) for v, codes in result.accepted.items()}
    return versions, suites


def _same(ours: EnumerationResult, peer: PeerResult) -> None:
    versions, suites = ours_as_peer(ours)
    assert versions == peer.versions
    for version in peer.versions:
        missing = {hex(c) for c in peer.suites.get(version, frozenset()) - suites.get(version, frozenset())}
        extra = {hex(c) for c in suites.get(version, frozenset()) - peer.suites.get(version, frozenset())}
        assert not missing and not extra, (peer.tool, version, missing, extra)


@pytest.mark.parametrize("name", ["exim-legacy", "exim-restricted", "exim-tls13", "exim-tls12", "postfix"])
def test_full_mode_equals_sslyze(targets: dict[str, Target], name: str) -> None:
    target = targets[name]
    ours = enumerate_(target.address, full_plan())
    assert ours.complete
    _same(ours, run_sslyze(target.address, 25))


def test_sslv3_server_full_mode_equals_testssl(targets: dict[str, Target]) -> None:
    # Not sslyze here: its TLS 1.0 hellos get illegal_parameter from tlslite-ng, so it reports SSLv3
    # only, while openssl s_client -tls1 completes a TLS 1.0 handshake with this server.
    target = targets["tlslite"]
    ours = enumerate_(target.address, full_plan())
    assert ours.complete
    _same(ours, run_testssl(target.address, 25, server_order=False))


def test_full_mode_equals_testssl_including_server_order(targets: dict[str, Target]) -> None:
    target = targets["exim-restricted"]
    ours = enumerate_(target.address, full_plan())
    peer = run_testssl(target.address, 25, server_order=True)
    _same(ours, peer)
    assert ours.server_order is True and peer.server_order is True
    # exim's GnuTLS priority string fixes this order (worlds/exim.py POSTURES["restricted"]).
    assert ours.server_order_suites == (0xC030, 0xC02F, 0xC014)


def test_posture_mode_is_cheap_and_agrees_with_full_mode(targets: dict[str, Target]) -> None:
    for target in targets.values():
        posture = enumerate_(target.address, posture_plan())
        full = enumerate_(target.address, full_plan())
        assert posture.sessions <= 12, (target.name, posture.sessions)
        assert posture.versions == full.versions, target.name
        assert posture.nist_r1 == full.nist_r1 and posture.nist_r2 == full.nist_r2, target.name
        if posture.weak_complete:
            best_legacy = max((v for v in full.accepted if v.name != "TLS13"), default=None)
            weak_at_best = frozenset(c for code in full.accepted.get(best_legacy, ()) if best_legacy
                                     for c in _weak(code))
            assert posture.weak_classes == weak_at_best, target.name


def _weak(code: int) -> frozenset[WeakClass]:
    from scanner.tls.ciphers import suite

    known = suite(code)
    return known.weak if known else frozenset()


def test_sslv3_and_rc4_are_found_where_openssl_cannot_look(targets: dict[str, Target]) -> None:
    result = enumerate_(targets["tlslite"].address, posture_plan())
    assert result.versions[next(v for v in result.versions if v.name == "SSL3")] is VersionVerdict.ACCEPTED
    assert {WeakClass.RC4, WeakClass.TRIPLE_DES} <= result.weak_classes
