"""TLS postures of the exim and tlslite-ng test servers, and the peer tools' view of them.

Every posture is checked with clients that do not share code with the server
under test: our raw ClientHello codec (scanner/tls/builder.py and parser.py: elimination,
one STARTTLS session per accepted suite plus one per version), GnuTLS's
gnutls-cli (3DES, RC4, TLS 1.0 -- which OpenSSL 3 cannot offer) and OpenSSL's
s_client.  Then testssl.sh and sslyze scan one exim and one postfix posture
and must agree with each other and with the codec.

Requires root (exim's daemon, port 25, network namespaces for the peers),
Debian's gnutls-bin and testssl.sh, network access to the Debian mirror on
the first run (exim is fetched with apt-get download) and to PyPI (sslyze's
own virtualenv).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

from scanner.sansio import NEED_DATA
from scanner.tls.builder import build_client_hello, key_share_entry, make_client_hello_spec
from scanner.tls.ciphers import suites_for
from scanner.tls.messages import Alert, ConnectionClosed, NamedGroup, ServerHello
from scanner.tls.parser import ServerResponseParser
from scanner.tls.versions import TlsVersion
from worlds.ca import CertFiles, TestCA
from worlds.exim import POSTURES, EximInstance, ensure_exim
from worlds.peers import PeerError, PeerResult, parse_sslyze_json, parse_testssl_json, run_sslyze, run_testssl
from worlds.ports import loopback_host, pick_loopback_block
from worlds.postfix import PostfixInstance, install_postfix
from worlds.tlslite_smtp import TlsliteSmtpServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="exim, port 25 and network namespaces need root"),
]

HOSTNAME = "mx.example.test"
SMTP_PORT = 25
IO_TIMEOUT = 10.0

VERSION_NAMES: Mapping[TlsVersion, str] = {
    TlsVersion.SSL3: "SSLv3",
    TlsVersion.TLS10: "TLSv1.0",
    TlsVersion.TLS11: "TLSv1.1",
    TlsVersion.TLS12: "TLSv1.2",
    TlsVersion.TLS13: "TLSv1.3",
}
VERSION_NAMES_ORDER = list(VERSION_NAMES.values())

# --- expected postures (IANA code points) --------------------------------------
#
# exim/GnuTLS with an RSA certificate.  GnuTLS's NORMAL has no CBC-SHA256/384
# MACs, so TLS 1.2 gets the SHA-1 CBC suites plus GCM/CCM/ChaCha20.
_GNUTLS_CBC_SHA1 = frozenset({0xC014, 0xC013, 0x0039, 0x0033, 0x0035, 0x002F})
_GNUTLS_TLS12_AEAD = frozenset(
    {
        0xC030, 0xC02F, 0xCCA8,  # ECDHE-RSA GCM, ChaCha20
        0x009F, 0x009E, 0xCCAA, 0xC09F, 0xC09E,  # DHE-RSA GCM, ChaCha20, CCM
        0x009D, 0x009C, 0xC09D, 0xC09C,  # RSA GCM, CCM
    }
)  # fmt: skip
_LEGACY_EXTRA = frozenset({0xC012, 0x0016, 0x000A, 0xC011, 0x0005, 0x0004})  # 3DES, RC4-SHA, RC4-MD5
_TLS13_GNUTLS = frozenset({0x1301, 0x1302, 0x1303, 0x1304})

EXIM_EXPECTED: Mapping[str, Mapping[str, frozenset[int]]] = {
    "legacy": {
        "TLSv1.0": _GNUTLS_CBC_SHA1 | _LEGACY_EXTRA,
        "TLSv1.1": _GNUTLS_CBC_SHA1 | _LEGACY_EXTRA,
        "TLSv1.2": _GNUTLS_CBC_SHA1 | _LEGACY_EXTRA | _GNUTLS_TLS12_AEAD,
    },
    "tls12": {"TLSv1.2": _GNUTLS_CBC_SHA1 | _GNUTLS_TLS12_AEAD},
    "tls13": {"TLSv1.3": _TLS13_GNUTLS},
    "restricted": {"TLSv1.2": frozenset({0xC030, 0xC02F, 0xC014})},
}
# Server order as our elimination sees it (first pick first).
EXIM_RESTRICTED_ORDER = (0xC030, 0xC02F, 0xC014)
EXIM_SERVER_ORDER = {"legacy": True, "tls12": False, "tls13": False, "restricted": True}


@dataclass(frozen=True)
class TlslitePosture:
    min_version: tuple[int, int]
    max_version: tuple[int, int]
    cipher_names: tuple[str, ...]
    expected: Mapping[str, frozenset[int]]


_SSL3_TLS10_SUITES = frozenset(
    {
        0x0004, 0x0005,  # RSA RC4-MD5, RC4-SHA
        0x002F, 0x0035,  # RSA AES-CBC
        0x0033, 0x0039,  # DHE-RSA AES-CBC
    }
)  # fmt: skip
TLSLITE_POSTURES: Mapping[str, TlslitePosture] = {
    # SSLv3 hellos carry no supported_groups, so tlslite offers no ECDHE there.
    "ssl3_tls10_rc4": TlslitePosture(
        (3, 0),
        (3, 1),
        ("rc4", "aes128", "aes256"),
        {
            "SSLv3": _SSL3_TLS10_SUITES,
            "TLSv1.0": _SSL3_TLS10_SUITES | {0xC011, 0xC013, 0xC014},
        },
    ),
    "tls12_restricted": TlslitePosture(
        (3, 3),
        (3, 3),
        ("aes256gcm", "chacha20-poly1305"),
        {"TLSv1.2": frozenset({0xC030, 0xCCA8, 0x009F, 0xCCAA, 0x009D})},
    ),
}


# --- an independent client: raw ClientHellos over STARTTLS ---------------------


def _smtp_reply(sock: socket.socket, buf: bytearray) -> tuple[int, list[str]]:
    """Read one (possibly multi-line) SMTP reply; RFC 5321 §4.2.1."""
    lines: list[str] = []
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"server closed during reply, got {bytes(buf)!r}")
            buf += chunk
        raw, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        line = raw.decode("ascii", "replace")
        lines.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), lines


def starttls(address: str, port: int) -> socket.socket:
    """Connect, EHLO, require STARTTLS in the reply, STARTTLS -> 220; return the socket."""
    sock = socket.create_connection((address, port), timeout=IO_TIMEOUT)
    try:
        buf = bytearray()
        code, _ = _smtp_reply(sock, buf)
        assert code == 220, f"banner {code}"
        sock.sendall(b"EHLO probe.example.test\r\n")
        code, lines = _smtp_reply(sock, buf)
        assert code == 250 and any(x.upper() == "STARTTLS" for x in lines), lines
        sock.sendall(b"STARTTLS\r\n")
        code, _ = _smtp_reply(sock, buf)
        assert code == 220 and not buf, f"STARTTLS answered {code}"
    except BaseException:
        sock.close()
        raise
    return sock


def probe(address: str, port: int, version: TlsVersion, offered: Sequence[int]) -> int | None:
    """The suite the server picks from ``offered`` at ``version``, or None if it refuses.

    A ServerHello (or TLS 1.3 HelloRetryRequest) for another version than
    the one asked for counts as a refusal of ``version``.
    """
    random = os.urandom(32)
    shares = [key_share_entry(NamedGroup.X25519, os.urandom(32))] if version is TlsVersion.TLS13 else []
    spec = make_client_hello_spec(version, offered, random, key_shares=shares)
    with starttls(address, port) as sock:
        sock.sendall(build_client_hello(spec))
        parser = ServerResponseParser()
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    return None
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
                continue
            if isinstance(event, ServerHello):
                if event.negotiated_version != version:
                    return None
                assert event.cipher_suite in offered, f"server picked 0x{event.cipher_suite:04X}, not offered"
                return event.cipher_suite
            if isinstance(event, Alert | ConnectionClosed):
                return None


def enumerate_suites(address: str, port: int, version: TlsVersion) -> list[int]:
    """Accepted suites at ``version`` in the order the server picks them.

    Offer every registry suite usable at ``version``, drop the pick, repeat
    until the server refuses: accepted + 1 STARTTLS sessions.
    """
    remaining = [s.code for s in suites_for(version)]
    picks: list[int] = []
    while remaining:
        pick = probe(address, port, version, remaining)
        if pick is None:
            break
        picks.append(pick)
        remaining.remove(pick)
    return picks


def enumerate_all(address: str, port: int) -> dict[str, list[int]]:
    """Version name -> accepted suites (server pick order) for every accepted version."""
    found = {VERSION_NAMES[v]: enumerate_suites(address, port, v) for v in VERSION_NAMES}
    return {name: picks for name, picks in found.items() if picks}


def prefers_server_order(address: str, port: int, version: TlsVersion, a: int, b: int) -> bool:
    """Offer (a, b) then (b, a): the same pick both times means server order."""
    return probe(address, port, version, [a, b]) == probe(address, port, version, [b, a])


# --- other independent clients ------------------------------------------------------

_GNUTLS_VERSIONS = {v: "VERS-TLS" + v.removeprefix("TLSv") for v in ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")}


def gnutls_connect(address: str, port: int, version: str, cipher: str, kx: str, mac: str) -> str | None:
    """gnutls-cli STARTTLS handshake limited to one version/cipher/kx/MAC.

    Returns gnutls-cli's session description without the signature part,
    e.g. "(TLS1.0-X.509)-(RSA)-(3DES-CBC)-(SHA1)", or None if it failed.
    """
    priority = f"NORMAL:-VERS-ALL:+{_GNUTLS_VERSIONS[version]}:-CIPHER-ALL:+{cipher}:-KX-ALL:+{kx}:-MAC-ALL:+{mac}"
    proc = subprocess.run(
        ["gnutls-cli", "--starttls-proto=smtp", "--insecure", f"--priority={priority}", "-p", str(port), address],
        # QUIT ends the session at once; on a bare EOF gnutls-cli waits ~2 s.
        input="QUIT\r\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("- Description:"):
            # Drop the signature scheme: it depends on the client's list, not on the posture.
            return re.sub(r"-\((RSA|ECDSA|EdDSA)-[^)]*\)", "", line.removeprefix("- Description:").strip())
    return None


def openssl_connect(address: str, port: int, version_flag: str, cipher_args: Sequence[str]) -> tuple[str, str] | None:
    """openssl s_client STARTTLS handshake; (protocol, cipher) or None when it failed."""
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-brief",
            "-starttls",
            "smtp",
            "-connect",
            f"{address}:{port}",
            version_flag,
            *cipher_args,
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # -brief prints the negotiated protocol and suite once the handshake is
    # done (the "New, X, Cipher is" line names the suite's minimum version).
    protocol = re.search(r"^Protocol version: (\S+)$", proc.stderr, re.MULTILINE)
    cipher = re.search(r"^Ciphersuite: (\S+)$", proc.stderr, re.MULTILINE)
    if protocol is None or cipher is None:
        return None
    return protocol.group(1), cipher.group(1)


# --- world ------------------------------------------------------------------------------


@dataclass
class World:
    workdir: Path
    block: str
    rsa: CertFiles
    hosts: Iterator[int]

    def address(self) -> str:
        return loopback_host(self.block, next(self.hosts))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # World-traversable: exim's and postfix's unprivileged processes read from it.
    workdir = Path(tempfile.mkdtemp(prefix="tls-servers-"))
    workdir.chmod(0o755)
    try:
        ca = TestCA(workdir / "ca")
        # RSA: tlslite needs it, and it gives exim RSA, DHE-RSA and ECDHE-RSA suites.
        yield World(workdir, pick_loopback_block(), ca.issue([HOSTNAME], key="rsa2048"), count(1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start_exim(world: World, posture: str) -> EximInstance:
    instance = EximInstance(
        world.workdir / f"exim-{posture}",
        world.address(),
        SMTP_PORT,
        HOSTNAME,
        world.rsa.cert_file,
        world.rsa.key_file,
        priority=POSTURES[posture],
        binary=ensure_exim(),
    )
    instance.start()
    return instance


def _tlslite(world: World, name: str, *, server_order: bool = True) -> TlsliteSmtpServer:
    """An unstarted tlslite server with posture ``name`` (use it as a context manager)."""
    posture = TLSLITE_POSTURES[name]
    return TlsliteSmtpServer(
        world.address(),
        SMTP_PORT,
        HOSTNAME,
        world.rsa.cert_file,
        world.rsa.key_file,
        min_version=posture.min_version,
        max_version=posture.max_version,
        cipher_names=posture.cipher_names,
        server_order=server_order,
    )


def _as_sets(found: Mapping[str, Sequence[int]]) -> dict[str, frozenset[int]]:
    return {version: frozenset(picks) for version, picks in found.items()}


def _hex(suites: Mapping[str, frozenset[int]]) -> dict[str, list[str]]:
    """Readable form for assertion messages."""
    return {v: sorted(f"0x{s:04X}" for s in codes) for v, codes in sorted(suites.items())}


# --- exim postures -------------------------------------------------------------------

# (client, arguments, expected Description/(protocol, cipher), or None for "refused")
GnutlsCheck = tuple[str, str, str, str, str | None]
OpensslCheck = tuple[str, tuple[str, ...], tuple[str, str] | None]

EXIM_GNUTLS_CHECKS: Mapping[str, Sequence[GnutlsCheck]] = {
    "legacy": [
        ("TLSv1.0", "3DES-CBC", "RSA", "SHA1", "(TLS1.0-X.509)-(RSA)-(3DES-CBC)-(SHA1)"),
        ("TLSv1.0", "ARCFOUR-128", "RSA", "MD5", "(TLS1.0-X.509)-(RSA)-(ARCFOUR-128)-(MD5)"),
        ("TLSv1.1", "ARCFOUR-128", "ECDHE-RSA", "SHA1", "(TLS1.1-X.509)-(ECDHE-SECP256R1)-(ARCFOUR-128)-(SHA1)"),
        ("TLSv1.2", "3DES-CBC", "DHE-RSA", "SHA1", "(TLS1.2-X.509)-(DHE-FFDHE2048)-(3DES-CBC)-(SHA1)"),
        ("TLSv1.3", "AES-128-GCM", "ECDHE-RSA", "AEAD", None),
    ],
    "tls12": [
        ("TLSv1.1", "AES-128-CBC", "RSA", "SHA1", None),
        ("TLSv1.2", "3DES-CBC", "RSA", "SHA1", None),
    ],
    "tls13": [("TLSv1.2", "AES-128-GCM", "ECDHE-RSA", "AEAD", None)],
    "restricted": [("TLSv1.2", "AES-128-CBC", "ECDHE-RSA", "SHA1", None)],
}
EXIM_OPENSSL_CHECKS: Mapping[str, Sequence[OpensslCheck]] = {
    "legacy": [
        ("-tls1_2", ("-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")),
        ("-tls1", ("-cipher", "DEFAULT:@SECLEVEL=0"), ("TLSv1", "ECDHE-RSA-AES256-SHA")),
        ("-tls1_3", (), None),
    ],
    "tls12": [
        ("-tls1_2", ("-cipher", "AES128-SHA"), ("TLSv1.2", "AES128-SHA")),
        ("-tls1", ("-cipher", "DEFAULT:@SECLEVEL=0"), None),
        ("-tls1_3", (), None),
    ],
    "tls13": [
        ("-tls1_3", ("-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"), ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")),
        ("-tls1_2", (), None),
    ],
    "restricted": [
        ("-tls1_2", ("-cipher", "ECDHE-RSA-AES256-SHA"), ("TLSv1.2", "ECDHE-RSA-AES256-SHA")),
        ("-tls1_2", ("-cipher", "ECDHE-RSA-CHACHA20-POLY1305"), None),
    ],
}


@pytest.mark.parametrize("posture", sorted(POSTURES))
def test_exim_posture(world: World, posture: str) -> None:
    exim = _start_exim(world, posture)
    try:
        found = enumerate_all(exim.address, exim.port)
        assert _hex(_as_sets(found)) == _hex(EXIM_EXPECTED[posture])
        version = TlsVersion.TLS13 if posture == "tls13" else TlsVersion.TLS12
        first, second = sorted(EXIM_EXPECTED[posture][VERSION_NAMES[version]])[:2]
        assert prefers_server_order(exim.address, exim.port, version, first, second) is EXIM_SERVER_ORDER[posture]
        if posture == "restricted":
            assert tuple(found["TLSv1.2"]) == EXIM_RESTRICTED_ORDER
        for v, cipher, kx, mac, want in EXIM_GNUTLS_CHECKS[posture]:
            assert gnutls_connect(exim.address, exim.port, v, cipher, kx, mac) == want, (v, cipher, kx, mac)
        for flag, args, expected in EXIM_OPENSSL_CHECKS[posture]:
            assert openssl_connect(exim.address, exim.port, flag, args) == expected, (flag, args)
        # One "SMTP connection" log line per session we opened, banner check included.
        assert exim.connection_count() >= sum(len(p) + 1 for p in found.values())
    except BaseException:
        print(exim.log_tail())
        raise
    finally:
        exim.stop()
    assert exim.pid is None


def test_exim_without_tls_does_not_offer_starttls(world: World) -> None:
    exim = EximInstance(
        world.workdir / "exim-notls",
        world.address(),
        SMTP_PORT,
        HOSTNAME,
        world.rsa.cert_file,
        world.rsa.key_file,
        tls=False,
        binary=ensure_exim(),
    )
    with exim, pytest.raises(AssertionError, match=r"STARTTLS|250"):
        starttls(exim.address, exim.port).close()


def test_exim_start_fails_fast_when_port_taken(world: World) -> None:
    address = world.address()
    with socket.socket() as squatter:
        squatter.bind((address, SMTP_PORT))
        squatter.listen(1)
        exim = EximInstance(
            world.workdir / "exim-busy",
            address,
            SMTP_PORT,
            HOSTNAME,
            world.rsa.cert_file,
            world.rsa.key_file,
            binary=ensure_exim(),
        )
        began = time.monotonic()
        with pytest.raises(Exception, match="bind"):
            exim.start(timeout=10)
        assert time.monotonic() - began < 5
    assert exim.pid is None


# --- tlslite postures ---------------------------------------------------------------

TLSLITE_GNUTLS_CHECKS: Mapping[str, Sequence[GnutlsCheck]] = {
    "ssl3_tls10_rc4": [
        ("TLSv1.0", "ARCFOUR-128", "RSA", "MD5", "(TLS1.0-X.509)-(RSA)-(ARCFOUR-128)-(MD5)"),
        ("TLSv1.0", "ARCFOUR-128", "ECDHE-RSA", "SHA1", "(TLS1.0-X.509)-(ECDHE-SECP256R1)-(ARCFOUR-128)-(SHA1)"),
        ("TLSv1.0", "3DES-CBC", "RSA", "SHA1", None),
        ("TLSv1.1", "AES-128-CBC", "RSA", "SHA1", None),
    ],
    "tls12_restricted": [
        (
            "TLSv1.2",
            "CHACHA20-POLY1305",
            "DHE-RSA",
            "AEAD",
            "(TLS1.2-X.509)-(DHE-FFDHE2048)-(CHACHA20-POLY1305)",
        ),
        ("TLSv1.2", "AES-128-GCM", "ECDHE-RSA", "AEAD", None),
        ("TLSv1.0", "AES-256-CBC", "RSA", "SHA1", None),
    ],
}
TLSLITE_OPENSSL_CHECKS: Mapping[str, Sequence[OpensslCheck]] = {
    "ssl3_tls10_rc4": [
        ("-tls1", ("-cipher", "DEFAULT:@SECLEVEL=0"), ("TLSv1", "ECDHE-RSA-AES256-SHA")),
        ("-tls1_2", (), None),
    ],
    "tls12_restricted": [
        ("-tls1_2", ("-cipher", "AES256-GCM-SHA384"), ("TLSv1.2", "AES256-GCM-SHA384")),
        ("-tls1_3", (), None),
    ],
}


@pytest.mark.parametrize("posture", sorted(TLSLITE_POSTURES))
def test_tlslite_posture(world: World, posture: str) -> None:
    with _tlslite(world, posture) as server:
        found = enumerate_all(server.address, server.port)
        assert _hex(_as_sets(found)) == _hex(TLSLITE_POSTURES[posture].expected)
        top = max(found, key=VERSION_NAMES_ORDER.index)
        version = next(v for v, n in VERSION_NAMES.items() if n == top)
        first, second = sorted(found[top])[:2]
        assert prefers_server_order(server.address, server.port, version, first, second)
        before = len(server.stats().negotiated)
        for v, cipher, kx, mac, want in TLSLITE_GNUTLS_CHECKS[posture]:
            assert gnutls_connect(server.address, server.port, v, cipher, kx, mac) == want, (v, cipher, kx, mac)
        for flag, args, expected in TLSLITE_OPENSSL_CHECKS[posture]:
            assert openssl_connect(server.address, server.port, flag, args) == expected, (flag, args)
        completed = server.stats().negotiated[before:]
        wanted = sum(w is not None for *_, w in TLSLITE_GNUTLS_CHECKS[posture]) + sum(
            e is not None for *_, e in TLSLITE_OPENSSL_CHECKS[posture]
        )
        assert len(completed) == wanted
        assert all(r.cipher_suite in TLSLITE_POSTURES[posture].expected[r.version] for r in completed)
    stats = server.stats()
    assert stats.connections >= sum(len(p) + 1 for p in found.values())
    # Each elimination ends with a refusal the server logs as such.
    assert any("No mutual ciphersuite" in reason for reason in stats.failure_reasons), stats.failure_reasons


def test_tlslite_client_order(world: World) -> None:
    with _tlslite(world, "tls12_restricted", server_order=False) as server:
        for pair in ((0x009D, 0xCCA8), (0xCCA8, 0x009D), (0xC030, 0x009F)):
            assert probe(server.address, server.port, TlsVersion.TLS12, pair) == pair[0]


# --- peers ------------------------------------------------------------------------------


def _agree(name: str, codec: Mapping[str, frozenset[int]], *peers: PeerResult) -> None:
    for peer in peers:
        assert peer.exit_status == 0, (name, peer.tool)
        assert peer.versions == frozenset(codec), (name, peer.tool, sorted(peer.versions))
        assert _hex(dict(peer.suites)) == _hex(dict(codec)), (name, peer.tool)


def _report(name: str, peer: PeerResult) -> str:
    return f"{name}: {peer.tool} {peer.tool_version} {peer.wall_s:.1f}s {peer.sessions} sessions"


def test_peers_agree_on_exim_and_postfix(world: World, record_property: Callable[[str, object], None]) -> None:
    """testssl.sh, sslyze and our codec find the same versions and suites.

    testssl.sh costs 15-45 s per server, so this is the only peer test; -P
    (server order) runs on exim only.
    """
    install_postfix()
    exim = _start_exim(world, "legacy")
    postfix = PostfixInstance(
        world.workdir / "postfix",
        world.address(),
        SMTP_PORT,
        HOSTNAME,
        world.rsa.cert_file,
        world.rsa.key_file,
        tls_protocols=">=TLSv1",
        tls_cipherlist="DEFAULT:@SECLEVEL=0",
    )
    report: list[str] = []
    try:
        postfix.start()

        codec = _as_sets(enumerate_all(exim.address, exim.port))
        assert _hex(codec) == _hex(EXIM_EXPECTED["legacy"])
        logged_before = exim.connection_count()
        testssl = run_testssl(exim.address, exim.port, server_order=True)
        sslyze = run_sslyze(exim.address, exim.port)
        _agree("exim", codec, testssl, sslyze)
        assert testssl.server_order is True
        assert sslyze.server_order is None  # sslyze has no cipher-order test
        # The relay's count is exactly what exim logged for the two tools.
        assert testssl.sessions is not None and sslyze.sessions is not None
        assert exim.connection_count() - logged_before == testssl.sessions + sslyze.sessions
        # One suite per connection (sslyze) costs more than elimination (testssl).
        assert sslyze.sessions > testssl.sessions > 0
        report += [_report("exim-legacy", testssl), _report("exim-legacy", sslyze)]

        codec = _as_sets(enumerate_all(postfix.address, postfix.port))
        assert set(codec) == {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
        testssl = run_testssl(postfix.address, postfix.port)
        sslyze = run_sslyze(postfix.address, postfix.port)
        _agree("postfix", codec, testssl, sslyze)
        assert testssl.server_order is None  # -P not run
        assert sslyze.sessions is not None and testssl.sessions is not None
        assert sslyze.sessions > testssl.sessions > 0
        report += [_report("postfix", testssl), _report("postfix", sslyze)]
    finally:
        for line in report:
            record_property(line.split(":")[0] + "/" + line.split()[1], line)
        print("\n".join(report))
        postfix.stop()
        exim.stop()


def test_peers_on_tlslite_sslv3(world: World) -> None:
    """The peers agree with each other on SSLv3/TLS 1.0 + RC4 (tlslite), and differ from the codec knowingly.

    Their SSLv3 hellos carry TLS extensions (supported_groups), so tlslite
    also negotiates ECDHE suites at SSLv3 for them; our SSLv3 hello has no
    extensions (RFC 6101 has none) and gets no ECDHE.  Everything else matches.
    """
    with _tlslite(world, "ssl3_tls10_rc4") as server:
        codec = _as_sets(enumerate_all(server.address, server.port))
        sslyze = run_sslyze(server.address, server.port, sni=HOSTNAME)
        testssl = run_testssl(server.address, server.port)
    assert testssl.exit_status == 0 and sslyze.exit_status == 0
    assert testssl.versions == sslyze.versions == frozenset(codec) == {"SSLv3", "TLSv1.0"}
    assert _hex(dict(testssl.suites)) == _hex(dict(sslyze.suites))
    assert testssl.suites["TLSv1.0"] == codec["TLSv1.0"]
    ecdhe_rsa = frozenset({0xC011, 0xC013, 0xC014})
    assert testssl.suites["SSLv3"] == codec["SSLv3"] | ecdhe_rsa
    assert not codec["SSLv3"] & ecdhe_rsa


# --- peer output parsers ------------------------------------------------------------------


def test_parse_testssl_json() -> None:
    where = {"ip": "127.0.0.1/127.0.0.1", "port": "25", "severity": "INFO"}
    findings = [
        {**where, "id": "SSLv3", "finding": "not offered"},
        {**where, "id": "TLS1", "finding": "offered (deprecated)"},
        {**where, "id": "TLS1_1", "finding": "TLSv1.1 is not offered, and downgraded to a weaker protocol"},
        {**where, "id": "TLS1_2", "finding": "likely not offered"},
        {**where, "id": "TLS1_3", "finding": "offered with final"},
        {**where, "id": "cipher-tls1_x0a", "finding": "TLS 1 x0a DES-CBC3-SHA RSA 3DES 168 TLS_RSA_WITH_3DES"},
        {**where, "id": "cipher-tls1_3_x1302", "finding": "TLS 1.3 x1302 TLS_AES_256_GCM_SHA384"},
        {**where, "id": "cipher_order", "finding": "NOT a cipher order configured"},
    ]
    assert parse_testssl_json(findings) == (
        frozenset({"TLSv1.0", "TLSv1.3"}),
        {"TLSv1.0": frozenset({0x000A}), "TLSv1.3": frozenset({0x1302})},
        False,
    )
    with pytest.raises(PeerError, match="TLS1_2"):
        parse_testssl_json([{**where, "id": "TLS1_2", "finding": "received 4xx/5xx after STARTTLS handshake"}])
    with pytest.raises(PeerError, match="fatal"):
        parse_testssl_json([{**where, "id": "scanProblem", "severity": "FATAL", "finding": "no STARTTLS"}])


def _sslyze_document(result: Mapping[str, object]) -> dict[str, object]:
    return {
        "sslyze_version": "6.3.1",
        "server_scan_results": [
            {"connectivity_status": "COMPLETED", "scan_result": {"tls_1_2_cipher_suites": result}},
        ],
    }


def test_parse_sslyze_json() -> None:
    accepted = {"cipher_suite": {"name": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}}
    ok = {"status": "COMPLETED", "result": {"is_tls_version_supported": True, "accepted_cipher_suites": [accepted]}}
    assert parse_sslyze_json(_sslyze_document(ok)) == (
        frozenset({"TLSv1.2"}),
        {"TLSv1.2": frozenset({0xC02F})},
        "6.3.1",
    )
    with pytest.raises(PeerError, match="BUG_IN_SSLYZE"):
        parse_sslyze_json(_sslyze_document({"status": "ERROR", "error_reason": "BUG_IN_SSLYZE", "result": None}))
    unknown = {"cipher_suite": {"name": "TLS_NOT_A_SUITE"}}
    bad = {"status": "COMPLETED", "result": {"is_tls_version_supported": True, "accepted_cipher_suites": [unknown]}}
    with pytest.raises(PeerError, match="TLS_NOT_A_SUITE"):
        parse_sslyze_json(_sslyze_document(bad))
