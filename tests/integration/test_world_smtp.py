"""Real-socket checks of the test-world SMTP servers (worlds.smtp, worlds.postfix).

Every server listens on a random loopback address in 127.64.0.0-127.127.255.255
so parallel runs rarely collide (a collision is retried with new addresses),
on port 25 when we are root.  A tiny asyncio-streams SMTP client talks to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import shutil
import signal
import ssl
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import trustme

from worlds.postfix import PostfixInstance, install_postfix, postfix_available
from worlds.smtp import (
    Behaviour,
    ListenerStats,
    SmtpFarm,
    SmtpFarmProcess,
    SmtpServerSpec,
    listener_key,
    load_stats,
    read_spec_file,
    write_spec_file,
)

HOSTNAME = "mx.example.test"
IDLE_TIMEOUT = 2.0
IS_ROOT = os.geteuid() == 0
RNG = random.Random()


# --- addresses and certificates ---------------------------------------------


def smtp_port() -> int:
    """25 when root (like the real thing), else a high port."""
    return 25 if IS_ROOT else RNG.randint(20000, 60000)


def random_addresses(count: int) -> list[str]:
    """``count`` consecutive addresses in a random spot of 127.64.0.0/10."""
    per_block = 254  # .1 - .254 of each /24
    blocks = -(-count // per_block)
    second = RNG.randint(64, 127)
    third = RNG.randint(0, 256 - blocks)
    return [
        f"127.{second}.{third + i // per_block}.{1 + i % per_block}" for i in range(count)
    ]


# Random addresses may collide with a parallel run: retry with new ones.
BIND_ATTEMPTS = 5


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    cert_file: Path

    def client_context(self, legacy: bool = False, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A verifying client; ``legacy`` also allows TLS 1.0/1.1 (OpenSSL 3 needs SECLEVEL 0)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        # Python deprecates the legacy versions; offering them is what a scanner does.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if legacy:
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            if max_version is not None:
                ctx.maximum_version = max_version
        return ctx


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    # Not under pytest's tmp dir: Postfix's unprivileged daemons must be able
    # to traverse to their workdir, and /tmp/pytest-of-root is 0700.
    base = Path(tempfile.mkdtemp(prefix="smtp-world-"))
    base.chmod(0o755)
    ca = trustme.CA()
    cert_file = base / "mx.pem"
    ca.issue_cert(HOSTNAME, "mx1.example.test", "mx3.example.test").private_key_and_cert_chain_pem.write_to_path(
        str(cert_file)
    )
    yield Pki(ca, cert_file)
    shutil.rmtree(base)


# --- a tiny SMTP client ------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]
    raw: tuple[bytes, ...]

    @property
    def keywords(self) -> set[str]:
        """EHLO keywords (first word of each line after the greeting line)."""
        return {line.split()[0].upper() for line in self.lines[1:] if line}


class MiniClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: str, port: int, timeout: float = 5.0) -> MiniClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
        return cls(reader, writer)

    async def read_reply(self, timeout: float = 5.0) -> Reply:
        raw: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    raise EOFError(f"connection closed mid-reply after {raw!r} + {line!r}")
                raw.append(line)
                if line[3:4] != b"-":
                    break
        codes = {int(line[:3]) for line in raw}
        assert len(codes) == 1, f"mixed codes in one reply: {raw!r}"
        return Reply(codes.pop(), tuple(r[4:].decode().rstrip("\r\n") for r in raw), tuple(raw))

    async def command(self, line: str, timeout: float = 5.0) -> Reply:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.read_reply(timeout)

    async def starttls(self, ctx: ssl.SSLContext, server_hostname: str = HOSTNAME) -> ssl.SSLObject:
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=server_hostname), 10)
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return ssl_object

    async def read_until_eof(self, timeout: float) -> bytes:
        """Everything the server sends until it closes (TimeoutError if it doesn't)."""
        async with asyncio.timeout(timeout):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, TimeoutError):
            self.writer.transport.abort()


async def full_starttls_session(
    address: str, port: int, ctx: ssl.SSLContext, server_hostname: str = HOSTNAME
) -> tuple[Reply, Reply, ssl.SSLObject, Reply]:
    """banner, EHLO, STARTTLS+handshake, EHLO, QUIT. Returns (banner, ehlo, tls, ehlo2)."""
    client = await MiniClient.connect(address, port)
    try:
        banner = await client.read_reply()
        ehlo = await client.command("EHLO scanner.example.test")
        assert "STARTTLS" in ehlo.keywords, ehlo
        go = await client.command("STARTTLS")
        assert go.code == 220, go
        tls = await client.starttls(ctx, server_hostname)
        ehlo2 = await client.command("EHLO scanner.example.test")
        bye = await client.command("QUIT")
        assert bye.code == 221, bye
        return banner, ehlo, tls, ehlo2
    finally:
        await client.close()


# --- the scriptable farm: one listener per behaviour --------------------------

# name -> spec factory arguments (behaviour and posture); the address is filled in.
VARIANTS: dict[str, dict[str, object]] = {
    "normal": {"behaviour": Behaviour.NORMAL},
    "tls12_max": {"behaviour": Behaviour.NORMAL, "tls_max": "TLSv1.2"},
    "tls13_only": {"behaviour": Behaviour.NORMAL, "tls_min": "TLSv1.3"},
    "tls10_only": {"behaviour": Behaviour.NORMAL, "tls_min": "TLSv1", "tls_max": "TLSv1"},
    "tls11_only": {"behaviour": Behaviour.NORMAL, "tls_min": "TLSv1.1", "tls_max": "TLSv1.1"},
    "one_cipher": {
        "behaviour": Behaviour.NORMAL,
        "tls_max": "TLSv1.2",
        "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305",
    },
    "rtt": {"behaviour": Behaviour.NORMAL, "reply_delay": 0.2},
    "no_starttls": {"behaviour": Behaviour.NO_STARTTLS},
    "banner_554": {"behaviour": Behaviour.BANNER_554},
    "banner_421": {"behaviour": Behaviour.BANNER_421},
    "slow_banner": {"behaviour": Behaviour.SLOW_BANNER, "banner_delay": 0.6},
    "multiline_banner": {"behaviour": Behaviour.MULTILINE_BANNER},
    "tls_fail_after_220": {"behaviour": Behaviour.TLS_FAIL_AFTER_220},
    "starttls_454": {"behaviour": Behaviour.STARTTLS_454},
    "ehlo_5xx_then_helo": {"behaviour": Behaviour.EHLO_5XX_THEN_HELO},
    "silent": {"behaviour": Behaviour.SILENT},
    "reset_after_ehlo": {"behaviour": Behaviour.RESET_AFTER_EHLO},
}

TLS_CAPABLE = {Behaviour.NORMAL, Behaviour.SLOW_BANNER, Behaviour.MULTILINE_BANNER}


def make_specs(addresses: Sequence[str], port: int, cert_file: Path) -> dict[str, SmtpServerSpec]:
    specs = {}
    for address, (name, kwargs) in zip(addresses, VARIANTS.items(), strict=False):
        behaviour = kwargs["behaviour"]
        assert isinstance(behaviour, Behaviour)
        cert = cert_file if behaviour in TLS_CAPABLE else None
        specs[name] = SmtpServerSpec(
            address=address, port=port, hostname=HOSTNAME, cert_file=cert, **kwargs  # type: ignore[arg-type]
        )
    return specs


@dataclass(frozen=True)
class World:
    farm: SmtpFarm
    specs: dict[str, SmtpServerSpec]

    def where(self, name: str) -> tuple[str, int]:
        spec = self.specs[name]
        return spec.address, spec.port

    def stats(self, name: str) -> ListenerStats:
        spec = self.specs[name]
        return self.farm.stats()[listener_key(spec.address, spec.port)]


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def world(request: pytest.FixtureRequest, pki: Pki) -> Iterator[World]:
    """Every behaviour on its own address, served from a background thread."""
    use_uvloop = request.param == "uvloop"
    for _ in range(BIND_ATTEMPTS):
        specs = make_specs(random_addresses(len(VARIANTS)), smtp_port(), pki.cert_file)
        farm = SmtpFarm(specs.values(), idle_timeout=IDLE_TIMEOUT)
        try:
            farm.start_in_thread(use_uvloop=use_uvloop)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        break
    else:
        pytest.fail("no free loopback addresses after 5 tries")
    try:
        yield World(farm, specs)
    finally:
        farm.stop_in_thread()


async def wait_for_counter(world: World, name: str, field: str, at_least: int) -> int:
    """Counters are bumped by the server thread; give it a moment after the client returns."""
    deadline = time.monotonic() + 3
    while True:
        value = getattr(world.stats(name), field)
        assert isinstance(value, int)
        if value >= at_least or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_normal_starttls_verifies_against_ca(world: World, pki: Pki) -> None:
    before = world.stats("normal")
    banner, ehlo, tls, ehlo2 = await full_starttls_session(*world.where("normal"), pki.client_context())
    assert banner.code == 220 and banner.lines[0].startswith(HOSTNAME)
    assert ehlo.code == 250 and ehlo.lines[0] == HOSTNAME
    assert {"PIPELINING", "8BITMIME"} <= ehlo.keywords
    assert tls.version() == "TLSv1.3"
    peer = tls.getpeercert()
    assert peer is not None and ("DNS", HOSTNAME) in peer["subjectAltName"]
    # RFC 3207 §4.2: no STARTTLS in the EHLO response once TLS is active.
    assert ehlo2.code == 250 and "STARTTLS" not in ehlo2.keywords
    assert await wait_for_counter(world, "normal", "starttls_handshakes", before.starttls_handshakes + 1) == (
        before.starttls_handshakes + 1
    )
    assert world.stats("normal").accepted == before.accepted + 1


@pytest.mark.asyncio
async def test_normal_refuses_second_starttls_and_starttls_before_ehlo(world: World, pki: Pki) -> None:
    client = await MiniClient.connect(*world.where("normal"))
    try:
        assert (await client.read_reply()).code == 220
        assert (await client.command("STARTTLS")).code == 503  # no EHLO yet
        assert (await client.command("EHLO x")).code == 250
        assert (await client.command("STARTTLS extra")).code == 501  # RFC 3207 §4: no parameters
        assert (await client.command("STARTTLS")).code == 220
        await client.starttls(pki.client_context())
        assert (await client.command("EHLO x")).code == 250
        assert (await client.command("STARTTLS")).code == 554
        assert (await client.command("MAIL FROM:<a@example.test>")).code == 554
        assert (await client.command("QUIT")).code == 221
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_normal_discards_plaintext_pipelined_after_starttls(world: World, pki: Pki) -> None:
    # CVE-2011-0411 pattern: "STARTTLS\r\nNOOP\r\n" in one segment; the NOOP
    # must not be answered inside the TLS session.
    client = await MiniClient.connect(*world.where("normal"))
    try:
        await client.read_reply()
        await client.command("EHLO x")
        client.writer.write(b"STARTTLS\r\nNOOP\r\n")
        assert (await client.read_reply()).code == 220
        await client.starttls(pki.client_context())
        reply = await client.command("EHLO after-tls")
        assert reply.code == 250 and reply.lines[0] == HOSTNAME, reply
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("variant", "legacy_client", "expected_version"),
    [
        ("tls12_max", False, "TLSv1.2"),
        ("tls13_only", False, "TLSv1.3"),
        ("tls10_only", True, "TLSv1"),
        ("tls11_only", True, "TLSv1.1"),
    ],
)
@pytest.mark.asyncio
async def test_tls_version_posture(
    world: World, pki: Pki, variant: str, legacy_client: bool, expected_version: str
) -> None:
    _, _, tls, _ = await full_starttls_session(*world.where(variant), pki.client_context(legacy_client))
    assert tls.version() == expected_version


@pytest.mark.asyncio
async def test_tls_min_is_enforced(world: World, pki: Pki) -> None:
    before = world.stats("tls13_only").tls_handshake_failures
    ctx = pki.client_context(max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await full_starttls_session(*world.where("tls13_only"), ctx)
    assert await wait_for_counter(world, "tls13_only", "tls_handshake_failures", before + 1) == before + 1


@pytest.mark.asyncio
async def test_modern_only_server_refuses_legacy_only_client(world: World, pki: Pki) -> None:
    ctx = pki.client_context(legacy=True, max_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await full_starttls_session(*world.where("normal"), ctx)


@pytest.mark.asyncio
async def test_cipher_string_is_applied(world: World, pki: Pki) -> None:
    _, _, tls, _ = await full_starttls_session(*world.where("one_cipher"), pki.client_context())
    cipher = tls.cipher()
    assert cipher is not None and cipher[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert tls.version() == "TLSv1.2"


@pytest.mark.asyncio
async def test_reply_delay_emulates_round_trip(world: World) -> None:
    client = await MiniClient.connect(*world.where("rtt"))
    try:
        await client.read_reply()
        began = time.monotonic()
        assert (await client.command("NOOP")).code == 250
        assert time.monotonic() - began >= 0.18
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_no_starttls(world: World) -> None:
    client = await MiniClient.connect(*world.where("no_starttls"))
    try:
        assert (await client.read_reply()).code == 220
        ehlo = await client.command("EHLO x")
        assert ehlo.code == 250 and "STARTTLS" not in ehlo.keywords and "PIPELINING" in ehlo.keywords
        assert (await client.command("STARTTLS")).code == 502
        assert (await client.command("QUIT")).code == 221
        assert await client.read_until_eof(2) == b""
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_banner_554_waits_for_quit(world: World) -> None:
    client = await MiniClient.connect(*world.where("banner_554"))
    try:
        banner = await client.read_reply()
        assert banner.code == 554 and "no service" in banner.lines[0]
        assert (await client.command("EHLO x")).code == 503  # RFC 5321 §3.1
        assert (await client.command("QUIT")).code == 221
        assert await client.read_until_eof(2) == b""
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_banner_421_then_close(world: World) -> None:
    client = await MiniClient.connect(*world.where("banner_421"))
    try:
        banner = await client.read_reply()
        assert banner.code == 421 and "too busy" in banner.lines[0]
        assert await client.read_until_eof(2) == b""
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_slow_banner(world: World, pki: Pki) -> None:
    began = time.monotonic()
    client = await MiniClient.connect(*world.where("slow_banner"))
    try:
        with pytest.raises(TimeoutError):
            await client.read_reply(timeout=0.3)
        banner = await client.read_reply()
        assert banner.code == 220
        assert time.monotonic() - began >= 0.55
    finally:
        await client.close()
    # Apart from the delay it is a NORMAL server.
    _, _, tls, _ = await full_starttls_session(*world.where("slow_banner"), pki.client_context())
    assert tls.version() == "TLSv1.3"


@pytest.mark.asyncio
async def test_multiline_banner(world: World, pki: Pki) -> None:
    banner, _, tls, _ = await full_starttls_session(*world.where("multiline_banner"), pki.client_context())
    assert banner.code == 220
    assert len(banner.raw) == 3
    assert [r[:4] for r in banner.raw] == [b"220-", b"220-", b"220 "]
    assert tls.version() == "TLSv1.3"


@pytest.mark.asyncio
async def test_tls_fail_after_220(world: World, pki: Pki) -> None:
    client = await MiniClient.connect(*world.where("tls_fail_after_220"))
    try:
        await client.read_reply()
        assert "STARTTLS" in (await client.command("EHLO x")).keywords
        assert (await client.command("STARTTLS")).code == 220
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await client.starttls(pki.client_context())
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_starttls_454(world: World) -> None:
    client = await MiniClient.connect(*world.where("starttls_454"))
    try:
        await client.read_reply()
        assert "STARTTLS" in (await client.command("EHLO x")).keywords
        refused = await client.command("STARTTLS")
        assert refused.code == 454 and refused.lines[0].startswith("4.7.0")
        # The session goes on in plaintext (RFC 3207 §4).
        assert (await client.command("NOOP")).code == 250
        assert (await client.command("QUIT")).code == 221
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_ehlo_5xx_then_helo(world: World) -> None:
    client = await MiniClient.connect(*world.where("ehlo_5xx_then_helo"))
    try:
        assert (await client.read_reply()).code == 220
        assert (await client.command("EHLO x")).code == 502
        helo = await client.command("HELO x")
        assert helo.code == 250 and helo.lines == (HOSTNAME,)
        assert (await client.command("STARTTLS")).code == 502
        assert (await client.command("QUIT")).code == 221
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_silent_never_speaks_and_closes_on_idle(world: World) -> None:
    before = world.stats("silent").idle_timeouts
    client = await MiniClient.connect(*world.where("silent"))
    try:
        with pytest.raises(TimeoutError):
            await client.read_reply(timeout=0.5)
        client.writer.write(b"EHLO x\r\n")
        # Nothing is ever said; the idle timeout closes the connection silently.
        assert await client.read_until_eof(IDLE_TIMEOUT + 3) == b""
    finally:
        await client.close()
    assert await wait_for_counter(world, "silent", "idle_timeouts", before + 1) == before + 1


@pytest.mark.asyncio
async def test_reset_after_ehlo(world: World) -> None:
    before = world.stats("reset_after_ehlo").resets_sent
    client = await MiniClient.connect(*world.where("reset_after_ehlo"))
    try:
        assert (await client.read_reply()).code == 220
        client.writer.write(b"EHLO x\r\n")
        with pytest.raises(ConnectionResetError):
            await client.read_until_eof(3)
    finally:
        client.writer.transport.abort()
    assert await wait_for_counter(world, "reset_after_ehlo", "resets_sent", before + 1) == before + 1


@pytest.mark.asyncio
async def test_idle_client_gets_421(world: World) -> None:
    client = await MiniClient.connect(*world.where("no_starttls"))
    try:
        assert (await client.read_reply()).code == 220
        reply = await client.read_reply(timeout=IDLE_TIMEOUT + 3)
        assert reply.code == 421
        assert await client.read_until_eof(2) == b""
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_overlong_line_is_refused(world: World) -> None:
    before = world.stats("no_starttls").oversized_lines
    client = await MiniClient.connect(*world.where("no_starttls"))
    try:
        await client.read_reply()
        client.writer.write(b"NOOP " + b"x" * 20000)
        reply = await client.read_reply()
        assert reply.code == 500
    finally:
        client.writer.transport.abort()
    assert await wait_for_counter(world, "no_starttls", "oversized_lines", before + 1) == before + 1


@pytest.mark.asyncio
async def test_max_concurrent_is_counted(world: World) -> None:
    clients = [await MiniClient.connect(*world.where("multiline_banner")) for _ in range(7)]
    try:
        for client in clients:
            await client.read_reply()
        assert world.stats("multiline_banner").max_concurrent >= 7
        assert world.stats("multiline_banner").current >= 7
    finally:
        for client in clients:
            await client.close()


def test_spec_validation(pki: Pki) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpServerSpec("192.0.2.1", 25, HOSTNAME, cert_file=pki.cert_file)
    with pytest.raises(ValueError, match="cert_file"):
        SmtpServerSpec("127.64.0.1", 25, HOSTNAME)
    with pytest.raises(ValueError, match="banner_delay"):
        SmtpServerSpec("127.64.0.1", 25, HOSTNAME, Behaviour.SLOW_BANNER)
    with pytest.raises(ValueError, match="tls_min"):
        SmtpServerSpec("127.64.0.1", 25, HOSTNAME, cert_file=pki.cert_file, tls_min="TLSv9")
    with pytest.raises(ValueError, match="two specs"):
        SmtpFarm([SmtpServerSpec("127.64.0.1", 25, HOSTNAME, Behaviour.SILENT)] * 2)


def test_spec_file_round_trip(tmp_path: Path, pki: Pki) -> None:
    specs = list(make_specs(random_addresses(len(VARIANTS)), 2525, pki.cert_file).values())
    path = tmp_path / "specs.jsonl"
    write_spec_file(path, specs)
    assert read_spec_file(path) == specs


# --- scale: hundreds of addresses in one process -------------------------------


async def scan_one(spec: SmtpServerSpec, ctx: ssl.SSLContext) -> str:
    """What a scanner does; returns the negotiated TLS version or 'no-tls'."""
    client = await MiniClient.connect(spec.address, spec.port, timeout=20)
    try:
        assert (await client.read_reply(20)).code == 220
        ehlo = await client.command("EHLO scanner.example.test", 20)
        if "STARTTLS" not in ehlo.keywords:
            await client.command("QUIT", 20)
            return "no-tls"
        assert (await client.command("STARTTLS", 20)).code == 220
        version = (await client.starttls(ctx)).version()
        assert version is not None
        await client.command("EHLO scanner.example.test", 20)
        await client.command("QUIT", 20)
        return version
    finally:
        await client.close()


async def scan_all(specs: Sequence[SmtpServerSpec], ctx: ssl.SSLContext, concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded(spec: SmtpServerSpec) -> str:
        async with gate:
            return await scan_one(spec, ctx)

    return await asyncio.gather(*(bounded(s) for s in specs))


def farm_specs(count: int, pki: Pki) -> list[SmtpServerSpec]:
    port = smtp_port()
    specs = []
    for i, address in enumerate(random_addresses(count)):
        if i % 3 == 2:
            specs.append(SmtpServerSpec(address, port, HOSTNAME, Behaviour.NO_STARTTLS))
        else:
            tls_max = "TLSv1.2" if i % 3 == 1 else None
            specs.append(SmtpServerSpec(address, port, HOSTNAME, cert_file=pki.cert_file, tls_max=tls_max))
    return specs


@pytest_asyncio.fixture
async def big_farm(pki: Pki) -> AsyncIterator[SmtpFarm]:
    for _ in range(BIND_ATTEMPTS):
        farm = SmtpFarm(farm_specs(600, pki), idle_timeout=10)
        try:
            await farm.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        break
    else:
        pytest.fail("no free loopback addresses after 5 tries")
    try:
        yield farm
    finally:
        await farm.stop()


def expected_version(spec: SmtpServerSpec) -> str:
    if spec.behaviour is Behaviour.NO_STARTTLS:
        return "no-tls"
    return "TLSv1.2" if spec.tls_max == "TLSv1.2" else "TLSv1.3"


@pytest.mark.asyncio
async def test_farm_serves_600_addresses_in_one_loop(big_farm: SmtpFarm, pki: Pki) -> None:
    # Two postures (default, tls_max 1.2) share one certificate -> two contexts.
    assert big_farm.context_count == 2
    began = time.monotonic()
    results = await scan_all(big_farm.specs, pki.client_context(), concurrency=100)
    elapsed = time.monotonic() - began
    assert results == [expected_version(s) for s in big_farm.specs]
    stats = big_farm.stats()
    for spec in big_farm.specs:
        st = stats[listener_key(spec.address, spec.port)]
        assert st.accepted == 1 and st.max_concurrent == 1
        assert st.starttls_handshakes == (0 if spec.behaviour is Behaviour.NO_STARTTLS else 1)
    print(f"600 listeners: full scan in {elapsed:.2f}s")


@pytest.mark.asyncio
async def test_farm_bind_conflict_names_the_address(pki: Pki) -> None:
    spec = farm_specs(1, pki)[0]
    async with SmtpFarm([spec]):
        with pytest.raises(OSError, match=re.escape(listener_key(spec.address, spec.port))):
            await SmtpFarm([spec]).start()


@pytest.mark.asyncio
async def test_stop_aborts_open_sessions_promptly(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    addresses = random_addresses(3)
    port = smtp_port()
    specs = [
        SmtpServerSpec(addresses[0], port, HOSTNAME, Behaviour.SILENT),
        SmtpServerSpec(addresses[1], port, HOSTNAME, Behaviour.SLOW_BANNER, pki.cert_file, banner_delay=30),
        SmtpServerSpec(addresses[2], port, HOSTNAME, cert_file=pki.cert_file),
    ]
    farm = SmtpFarm(specs, idle_timeout=60)
    await farm.start()
    clients = [await MiniClient.connect(s.address, s.port) for s in specs]
    try:
        await clients[2].read_reply()
        await clients[2].command("EHLO x")
        await clients[2].command("STARTTLS")
        await clients[2].starttls(pki.client_context())
        began = time.monotonic()
        await farm.stop()
        assert time.monotonic() - began < 1.0
        for client in clients:
            # Whatever was pending, the connection is gone within 2 s: EOF or
            # reset (a TimeoutError here fails the test). Nothing is sent.
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await client.read_until_eof(2) == b""
        assert farm.stats()[listener_key(specs[2].address, port)].current == 0
    finally:
        for client in clients:
            client.writer.transport.abort()
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


# --- subprocess mode -------------------------------------------------------------


def test_farm_in_subprocess(tmp_path: Path, pki: Pki) -> None:
    for _ in range(BIND_ATTEMPTS):
        specs = farm_specs(120, pki)
        proc = SmtpFarmProcess(specs, tmp_path / "farm", idle_timeout=10)
        try:
            proc.start()
        except RuntimeError as exc:
            if "Address already in use" in str(exc):
                continue
            raise
        break
    else:
        pytest.fail("no free loopback addresses after 5 tries")
    pid = proc.pid
    try:
        scanned = specs[:30]
        results = asyncio.run(scan_all(scanned, pki.client_context(), concurrency=10))
        assert results == [expected_version(s) for s in scanned]
        # SIGUSR1 dumps the counters without stopping the farm.
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not proc.stats_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        midway = load_stats(proc.stats_file)
        assert sum(st.accepted for st in midway.values()) == 30
    finally:
        stats = proc.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert set(stats) == {listener_key(s.address, s.port) for s in specs}
    for i, spec in enumerate(specs):
        st = stats[listener_key(spec.address, spec.port)]
        assert st.accepted == (1 if i < 30 else 0)
        assert st.starttls_handshakes == (1 if i < 30 and spec.behaviour is Behaviour.NORMAL else 0)


def test_subprocess_reports_startup_failure(tmp_path: Path, pki: Pki) -> None:
    spec = SmtpServerSpec("127.64.0.1", 25, HOSTNAME, cert_file=tmp_path / "missing.pem")
    with pytest.raises(RuntimeError, match=r"missing\.pem"):
        SmtpFarmProcess([spec], tmp_path / "farm").start(timeout=30)


# --- real Postfix -----------------------------------------------------------------


@pytest.fixture(scope="module")
def postfix_ready() -> None:
    if not IS_ROOT:
        pytest.skip("Postfix's master must run as root")
    if not postfix_available():
        install_postfix()


@dataclass(frozen=True)
class PostfixSet:
    tls: PostfixInstance
    plain: PostfixInstance
    tls12: PostfixInstance
    legacy: PostfixInstance

    def all(self) -> tuple[PostfixInstance, ...]:
        return (self.tls, self.plain, self.tls12, self.legacy)


@pytest.fixture(scope="module")
def postfixes(postfix_ready: None, pki: Pki) -> Iterator[PostfixSet]:
    work = Path(tempfile.mkdtemp(prefix="postfix-world-"))
    work.chmod(0o755)
    started: list[PostfixInstance] = []
    try:
        for _ in range(BIND_ATTEMPTS):
            a, b, c, d = random_addresses(4)
            port = smtp_port()
            pair = PostfixSet(
                tls=PostfixInstance(work / "tls", a, port, "mx1.example.test", pki.cert_file),
                plain=PostfixInstance(work / "plain", b, port, "mx2.example.test", tls=False),
                tls12=PostfixInstance(
                    work / "tls12", c, port, "mx3.example.test", pki.cert_file, tls_protocols="<=TLSv1.2"
                ),
                legacy=PostfixInstance(
                    work / "legacy", d, port, "mx3.example.test", pki.cert_file, tls_protocols="<=TLSv1.1"
                ),
            )
            try:
                for instance in pair.all():
                    instance.start()
                    started.append(instance)
            except Exception as exc:
                for instance in started:
                    instance.stop()
                started.clear()
                if "Address already in use" in str(exc):
                    continue
                raise
            break
        else:
            pytest.fail("no free loopback addresses after 5 tries")
        for instance in started:
            print(f"postfix {instance.address}: started in {instance.timings.start_seconds:.3f}s")
        yield pair
    finally:
        for instance in started:
            instance.stop()
            assert instance.instance_pids() == []
            print(f"postfix {instance.address}: stopped in {instance.timings.stop_seconds:.3f}s")
        shutil.rmtree(work)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_postfix_with_starttls(postfixes: PostfixSet, pki: Pki) -> None:
    pf = postfixes.tls
    banner, ehlo, tls, ehlo2 = await full_starttls_session(
        pf.address, pf.port, pki.client_context(), "mx1.example.test"
    )
    assert banner.code == 220 and banner.lines[0] == "mx1.example.test ESMTP"
    assert ehlo.lines[0] == "mx1.example.test"
    assert tls.version() == "TLSv1.3"
    assert ehlo2.code == 250 and "STARTTLS" not in ehlo2.keywords
    assert "STARTTLS" in pf.log_tail() or "TLS connection established" in pf.log_tail()


@pytest.mark.slow
@pytest.mark.parametrize(("which", "expected"), [("tls12", "TLSv1.2"), ("legacy", "TLSv1.1")])
@pytest.mark.asyncio
async def test_postfix_tls_protocols_cap(postfixes: PostfixSet, pki: Pki, which: str, expected: str) -> None:
    pf = getattr(postfixes, which)
    assert isinstance(pf, PostfixInstance)
    _, _, tls, _ = await full_starttls_session(
        pf.address, pf.port, pki.client_context(legacy=True), "mx3.example.test"
    )
    assert tls.version() == expected


@pytest.mark.slow
@pytest.mark.asyncio
async def test_postfix_without_tls(postfixes: PostfixSet) -> None:
    pf = postfixes.plain
    client = await MiniClient.connect(pf.address, pf.port)
    try:
        banner = await client.read_reply()
        assert banner.code == 220 and banner.lines[0].startswith("mx2.example.test")
        ehlo = await client.command("EHLO scanner.example.test")
        assert ehlo.code == 250 and "STARTTLS" not in ehlo.keywords and "PIPELINING" in ehlo.keywords
        assert (await client.command("STARTTLS")).code == 502
        assert (await client.command("QUIT")).code == 221
    finally:
        await client.close()


@pytest.mark.slow
def test_postfix_stop_only_stops_that_instance(postfixes: PostfixSet, pki: Pki, tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="postfix-extra-"))
    work.chmod(0o755)
    try:
        address = random_addresses(1)[0]
        extra = PostfixInstance(work / "x", address, smtp_port(), "mx9.example.test", tls=False, banner="custom banner")
        with extra:
            pids = extra.instance_pids()
            assert len(pids) >= 2  # master plus at least qmgr/postlogd
            assert extra.read_banner() == b"220 custom banner\r\n"
        assert not any(Path(f"/proc/{p}/status").exists() and _not_zombie(p) for p in pids)
        # The module's instances are untouched.
        assert postfixes.tls.read_banner().startswith(b"220 mx1.example.test")
        assert postfixes.plain.read_banner().startswith(b"220 mx2.example.test")
    finally:
        shutil.rmtree(work)


@pytest.mark.slow
def test_postfix_start_failure_reports_log(postfix_ready: None, pki: Pki) -> None:
    work = Path(tempfile.mkdtemp(prefix="postfix-bad-"))
    work.chmod(0o755)
    try:
        bad = PostfixInstance(
            work / "bad", random_addresses(1)[0], smtp_port(), "mx.example.test", pki.cert_file,
            extra_main_cf={"smtpd_tls_security_level": "bogus"},
        )
        with pytest.raises(RuntimeError) as info:
            bad.start(timeout=3)
        assert "maillog" in str(info.value)
        assert bad.instance_pids() == []
    finally:
        shutil.rmtree(work)


def _not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"

