"""The scanner against hostile and broken mail servers (worlds/hostile.py), over real sockets.

For every misbehaviour, both probe paths run against the live server:
* ``probe_smtp`` (banner, EHLO, STARTTLS, the stdlib handshake): its status, failure phase and class;
* ``probe_hello`` (one crafted posture-style ClientHello after STARTTLS): its answer kind.
Each must return a result (never raise), the one written in ``EXPECTED`` below, within the time the
configured deadlines allow (measured), with a bounded Python heap (tracemalloc peak per probe).
Then one full ``scan`` over an nsd zone pointing a domain at every listener must give exactly one row
per domain, no internal error, the same probe statuses, and finish in bounded time.

Shared outcomes (said once here, the table repeats them):
* ENDLESS_BANNER_LINES / EHLO_ENDLESS_LINES vs MEGABYTE_LINE / BANNER_NO_NEWLINE: the scanner stops
  reading at its caps (100 lines, 2048 bytes per line), so a 1 MB line and an endless line are the
  same bytes up to the point where it stops: both ``oversized_reply``, told apart only by the phase
  and the detail ("lines" vs "bytes").
* DRIBBLE, GREETING_OVER, ECHO: nothing complete arrived before the banner deadline; on the wire a
  tarpit, a late greeting and a silent echo are indistinguishable (``timeout`` at ``banner``).
* STALL_AFTER_220 and LYING_LENGTH_STALL: the server fell silent during the handshake (``timeout``
  at ``tls_handshake``); the raw path tells them apart only by what it had buffered.
* Every SMTP-level failure makes the raw path ``untestable`` (no ClientHello was ever sent); its
  detail carries the observation status, asserted below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from scanner.certs import TrustStore
from scanner.cli import main
from scanner.config import OutputConfig, ProbeConfig, SafetyConfig, ScanConfig
from scanner.net.addresses import AddressPolicy
from scanner.net.limits import PolitenessLimiter
from scanner.output.rows import ProbeRow, SessionRow
from scanner.probe_cache import SummaryCache
from scanner.probing import ProbeService
from scanner.smtp.session import SmtpProbeResult, make_probe_context, probe_smtp
from scanner.status import FailureClass, Phase, ProbeStatus
from scanner.tls.enumeration import AnswerKind, HelloAnswer, HelloRequest, posture_plan
from scanner.tls.probe import probe_hello
from scanner.tls.versions import TlsVersion
from worlds.dns import NsdServer, Zone
from worlds.hostile import HOSTNAME, Hostile, HostileConfig, HostileServer, HostileServerProcess
from worlds.ports import loopback_host, pick_loopback_block

BANNER_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
TLS_TIMEOUT = 2.0
PROBE_DEADLINE = 5.0
CONFIG = ProbeConfig(ehlo_name="scanner.test", connect_timeout=1.0, banner_timeout=BANNER_TIMEOUT,
                     command_timeout=COMMAND_TIMEOUT, tls_timeout=TLS_TIMEOUT, probe_deadline=PROBE_DEADLINE)
# A raw hello session has no overall deadline of its own; its phases bound it.
RAW_BUDGET = CONFIG.connect_timeout + BANNER_TIMEOUT + 2 * COMMAND_TIMEOUT + TLS_TIMEOUT
MEMORY_CAP = 4 * 1024 * 1024  # bytes of Python heap per probe, even against 1 MB lines and 3.3 MB chains
SLACK = 0.75  # seconds of scheduling noise allowed above an expected wait on a 2-core machine


def _posture_requests() -> dict[TlsVersion, HelloRequest]:
    """The version hellos of the real posture plan, in the order the plan asks for them."""
    plan = posture_plan()
    requests = {}
    request = next(plan)
    while request.version not in requests:
        requests[request.version] = request
        try:
            request = plan.send(HelloAnswer(AnswerKind.REJECTED_ALERT))
        except StopIteration:
            break
    return requests


REQUESTS = _posture_requests()


@dataclass(frozen=True, slots=True)
class Expect:
    status: ProbeStatus
    phase: Phase  # DONE when the probe went to the end
    failure: FailureClass | None
    raw: AnswerKind
    wait: float = 0.0  # seconds the observation probe should take (its deadline, or the server's delay)
    detail: str = ""  # substring of the observation detail
    raw_detail: str = ""  # substring of the raw answer's detail
    raw_wait: float | None = None  # the raw probe's expected duration when it differs from ``wait``
    raw_version: TlsVersion = TlsVersion.TLS12  # which posture hello the raw probe sends


S, P, F, A = ProbeStatus, Phase, FailureClass, AnswerKind
B, C, T = BANNER_TIMEOUT, COMMAND_TIMEOUT, TLS_TIMEOUT
HANDSHAKE = P.TLS_HANDSHAKE
FAILED = S.TLS_HANDSHAKE_FAILED

EXPECTED: dict[Hostile, Expect] = {
    Hostile.NORMAL: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    # --- SMTP level: the raw path never gets to send a hello -----------------------------------
    Hostile.ENDLESS_BANNER_LINES: Expect(S.PROTOCOL_ERROR, P.BANNER, F.OVERSIZED_REPLY, A.UNTESTABLE,
                                         detail="100 lines", raw_detail="protocol_error"),
    Hostile.MEGABYTE_LINE: Expect(S.PROTOCOL_ERROR, P.BANNER, F.OVERSIZED_REPLY, A.UNTESTABLE,
                                  detail="2048 bytes", raw_detail="protocol_error"),
    Hostile.BANNER_NO_NEWLINE: Expect(S.PROTOCOL_ERROR, P.BANNER, F.OVERSIZED_REPLY, A.UNTESTABLE,
                                      detail="2048 bytes", raw_detail="protocol_error"),
    Hostile.DRIBBLE: Expect(S.TIMEOUT, P.BANNER, F.TIMEOUT, A.UNTESTABLE, wait=B, raw_detail="timeout"),
    Hostile.GREETING_UNDER: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED, wait=0.6 * B),
    Hostile.GREETING_OVER: Expect(S.TIMEOUT, P.BANNER, F.TIMEOUT, A.UNTESTABLE, wait=B, raw_detail="timeout"),
    Hostile.RST_ON_ACCEPT: Expect(S.THROTTLED, P.BANNER, F.RESET, A.UNTESTABLE, raw_detail="throttled"),
    Hostile.FIN_ON_ACCEPT: Expect(S.THROTTLED, P.BANNER, F.CLOSED, A.UNTESTABLE, raw_detail="throttled"),
    Hostile.HTTP_SERVER: Expect(S.PROTOCOL_ERROR, P.BANNER, F.SMTP_PROTOCOL_ERROR, A.UNTESTABLE, wait=0.3,
                                detail="HTTP/1.1 408", raw_detail="protocol_error"),
    Hostile.NON_UTF8: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    Hostile.EHLO_421: Expect(S.THROTTLED, P.EHLO, F.SMTP_421, A.UNTESTABLE, detail="421 4.7.0",
                             raw_detail="throttled"),
    Hostile.EHLO_5XX_THEN_HELO: Expect(S.NO_STARTTLS, P.DONE, None, A.UNTESTABLE, raw_detail="no_starttls"),
    Hostile.EHLO_AND_HELO_5XX: Expect(S.SMTP_REJECTED, P.HELO, F.SMTP_5XX, A.UNTESTABLE, detail="554",
                                      raw_detail="smtp_rejected"),
    Hostile.EHLO_NEVER_CLOSES: Expect(S.TIMEOUT, P.EHLO, F.TIMEOUT, A.UNTESTABLE, wait=C, raw_detail="timeout"),
    Hostile.EHLO_ENDLESS_LINES: Expect(S.PROTOCOL_ERROR, P.EHLO, F.OVERSIZED_REPLY, A.UNTESTABLE,
                                       detail="100 lines", raw_detail="protocol_error"),
    Hostile.EHLO_CODE_CHANGES: Expect(S.PROTOCOL_ERROR, P.EHLO, F.SMTP_PROTOCOL_ERROR, A.UNTESTABLE,
                                      detail="code changed", raw_detail="protocol_error"),
    Hostile.STARTTLS_STRIPPED: Expect(S.NO_STARTTLS, P.DONE, None, A.UNTESTABLE, raw_detail="no_starttls"),
    Hostile.STARTTLS_454: Expect(S.STARTTLS_REJECTED, P.STARTTLS, F.SMTP_4XX, A.UNTESTABLE, detail="454",
                                 raw_detail="starttls_rejected"),
    Hostile.STARTTLS_421: Expect(S.THROTTLED, P.STARTTLS, F.SMTP_421, A.UNTESTABLE, detail="421",
                                 raw_detail="throttled"),
    Hostile.POSTSCREEN_PREGREET: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED, wait=0.4),
    Hostile.ECHO: Expect(S.TIMEOUT, P.BANNER, F.TIMEOUT, A.UNTESTABLE, wait=B, raw_detail="timeout"),
    Hostile.BANNER_THEN_ECHO: Expect(S.PROTOCOL_ERROR, P.EHLO, F.SMTP_PROTOCOL_ERROR, A.UNTESTABLE,
                                     detail="EHLO scanner.test", raw_detail="protocol_error"),
    # --- after the 220 to STARTTLS ------------------------------------------------------------
    Hostile.GARBAGE_AFTER_220: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                      detail="WRONG_VERSION_NUMBER", raw_detail="NotTls"),
    Hostile.PLAINTEXT_INJECTION: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    Hostile.BIG_INJECTION: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    Hostile.STALL_AFTER_220: Expect(S.TIMEOUT, HANDSHAKE, F.TIMEOUT, A.UNTESTABLE, wait=T, raw_detail="timeout"),
    Hostile.FIN_AFTER_220: Expect(FAILED, HANDSHAKE, F.TLS_CLOSED, A.REJECTED_CLOSE),
    # --- crafted TLS answers ------------------------------------------------------------------
    Hostile.LYING_LENGTH_CLOSE: Expect(FAILED, HANDSHAKE, F.TLS_CLOSED, A.PROTOCOL_ERROR,
                                       raw_detail="TruncatedStream"),
    Hostile.LYING_LENGTH_STALL: Expect(S.TIMEOUT, HANDSHAKE, F.TIMEOUT, A.UNTESTABLE, wait=T,
                                       raw_detail="timeout"),
    Hostile.RECORD_TOO_LARGE: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                     detail="PACKET_LENGTH_TOO_LONG", raw_detail="RecordTooLarge"),
    Hostile.SUITE_NOT_OFFERED: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                      detail="CIPHER_RETURNED", raw_detail="not offered"),
    # A TLS 1.2 answer to our TLS 1.0 hello: not evidence that TLS 1.0 is accepted.
    Hostile.VERSION_ABOVE_OFFER: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                        raw_detail="above the 0x0301 offered", raw_version=TlsVersion.TLS10),
    # A HelloRetryRequest answers our 1.3 hello (it names suite and group, RFC 8446 §4.1.4); OpenSSL
    # aborts on the second one, as §4.1.4 requires. (The 1.2 hello is checked separately below.)
    Hostile.HRR_LOOP: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.ACCEPTED, detail="UNEXPECTED_MESSAGE",
                             raw_version=TlsVersion.TLS13),
    # OpenSSL caps a Certificate message at 100 KB (max_cert_list); the raw probe stops at ServerHello.
    Hostile.HUGE_CHAIN_RAW: Expect(FAILED, HANDSHAKE, F.TLS_ERROR, A.ACCEPTED, detail="EXCESSIVE_MESSAGE_SIZE"),
    Hostile.GARBAGE_CERT: Expect(FAILED, HANDSHAKE, F.TLS_ERROR, A.ACCEPTED, detail="ASN1"),
    Hostile.CERT_BEFORE_HELLO: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                      detail="UNEXPECTED_MESSAGE", raw_detail="HandshakeMessageTooLarge"),
    # A reset answers nothing about the offer: untestable (retried by enumeration), not a refusal.
    Hostile.RESET_MID_HANDSHAKE: Expect(FAILED, HANDSHAKE, F.RESET, A.UNTESTABLE, raw_detail="reset"),
    Hostile.SSLV2_HELLO: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                detail="WRONG_VERSION_NUMBER", raw_detail="SSLv2"),
    # OpenSSL has no name for alert 238 and Python cannot say it was an alert ("unknown error"), so
    # the stdlib path can only call it tls_error; the raw path reads the alert itself.
    Hostile.UNKNOWN_ALERT: Expect(FAILED, HANDSHAKE, F.TLS_ERROR, A.REJECTED_ALERT, detail="unknown error",
                                  raw_detail="alert 2/238"),
    Hostile.ENDLESS_RECORDS: Expect(FAILED, HANDSHAKE, F.TLS_PROTOCOL_ERROR, A.PROTOCOL_ERROR,
                                    detail="UNEXPECTED_MESSAGE", raw_detail="without a ServerHello"),
    Hostile.WARNING_ALERT_THEN_HELLO: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    Hostile.BIG_CHAIN_TLS: Expect(S.STARTTLS_OK, P.DONE, None, A.ACCEPTED),
    Hostile.HUGE_CHAIN_TLS: Expect(FAILED, HANDSHAKE, F.TLS_ERROR, A.ACCEPTED, detail="EXCESSIVE_MESSAGE_SIZE"),
}
BEHAVIOURS = list(Hostile)


def test_every_behaviour_has_an_expectation() -> None:
    assert set(EXPECTED) == set(Hostile)
    assert len(Hostile) >= 25


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServerProcess]:
    # A child process: the server's megabyte buffers must not count in our tracemalloc peaks, and its
    # CPU must not steal the GIL from the timings measured here.
    server = HostileServerProcess(pick_loopback_block(), tmp_path_factory.mktemp("hostile"),
                                  HostileConfig(banner_timeout=BANNER_TIMEOUT))
    with server:
        yield server


async def _measured_smtp(address: str) -> tuple[SmtpProbeResult, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = await probe_smtp(address, 25, HOSTNAME, CONFIG, make_probe_context())
        return result, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def _measured_hello(address: str, request: HelloRequest) -> tuple[HelloAnswer, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        answer = await probe_hello(address, 25, HOSTNAME, CONFIG, request)
        return answer, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _check_wait(elapsed: float, wait: float, budget: float) -> None:
    assert elapsed <= budget, f"took {elapsed:.2f}s, over the {budget:.1f}s the deadlines allow"
    assert wait * 0.9 - 0.05 <= elapsed <= wait + SLACK, f"took {elapsed:.2f}s, expected about {wait:.2f}s"


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=[b.value for b in BEHAVIOURS])
async def test_observation_probe(hostile: HostileServerProcess, behaviour: Hostile) -> None:
    expect = EXPECTED[behaviour]
    result, elapsed, peak = await _measured_smtp(hostile.addresses[behaviour])
    assert (result.status, result.phase, result.failure_class) == (expect.status, expect.phase, expect.failure), \
        result.detail
    assert expect.detail in result.detail
    _check_wait(elapsed, expect.wait, PROBE_DEADLINE)
    assert peak < MEMORY_CAP, f"Python heap peaked at {peak / 1e6:.1f} MB"
    if result.status is ProbeStatus.STARTTLS_OK:
        assert result.tls is not None and result.tls.chain
    assert result.plaintext_after_starttls is (behaviour in (Hostile.PLAINTEXT_INJECTION, Hostile.BIG_INJECTION))


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=[b.value for b in BEHAVIOURS])
async def test_raw_hello_probe(hostile: HostileServerProcess, behaviour: Hostile) -> None:
    expect = EXPECTED[behaviour]
    request = REQUESTS[expect.raw_version]
    answer, elapsed, peak = await _measured_hello(hostile.addresses[behaviour], request)
    assert answer.kind is expect.raw, answer.detail
    assert expect.raw_detail in answer.detail
    smtp_level = expect.status is not ProbeStatus.TIMEOUT and expect.phase is not HANDSHAKE
    if expect.raw is AnswerKind.UNTESTABLE and smtp_level:
        assert answer.detail.startswith(expect.status.value)  # the SMTP-level reason is kept
    if answer.kind is AnswerKind.ACCEPTED:
        assert answer.suite in request.suites and answer.version is not None
        assert answer.version <= request.version
    _check_wait(elapsed, expect.wait if expect.raw_wait is None else expect.raw_wait, RAW_BUDGET)
    assert peak < MEMORY_CAP, f"Python heap peaked at {peak / 1e6:.1f} MB"


async def test_hello_retry_request_to_a_tls12_hello_is_a_protocol_error(hostile: HostileServerProcess) -> None:
    answer = await probe_hello(hostile.addresses[Hostile.HRR_LOOP], 25, HOSTNAME, CONFIG,
                               REQUESTS[TlsVersion.TLS12])
    assert answer.kind is AnswerKind.PROTOCOL_ERROR and "above the 0x0303 offered" in answer.detail


async def test_reset_on_accept_is_one_outcome_whatever_the_race(hostile: HostileServerProcess) -> None:
    # The RST reaches either connect() (as its pending socket error) or the first read; both paths
    # must give the same row, or the statistics would split one kind of server in two at random.
    address = hostile.addresses[Hostile.RST_ON_ACCEPT]
    outcomes = set()
    for _ in range(20):
        result = await probe_smtp(address, 25, HOSTNAME, CONFIG, make_probe_context())
        outcomes.add((result.status, result.phase, result.failure_class))
        answer = await probe_hello(address, 25, HOSTNAME, CONFIG, REQUESTS[TlsVersion.TLS12])
        assert answer.kind is AnswerKind.UNTESTABLE and answer.detail.startswith("throttled"), answer.detail
    assert outcomes == {(ProbeStatus.THROTTLED, Phase.BANNER, FailureClass.RESET)}


async def test_observation_details(hostile: HostileServerProcess) -> None:
    """What the rows keep from the odd but successful servers."""
    addresses = hostile.addresses
    latin = await probe_smtp(addresses[Hostile.NON_UTF8], 25, HOSTNAME, CONFIG, make_probe_context())
    assert latin.banner is not None and "\ufffd" in latin.banner and "bienvenue" in latin.banner
    assert "STARTTLS" in latin.ehlo_extensions and latin.ehlo_greeting and "\ufffd" in latin.ehlo_greeting
    stripped = await probe_smtp(addresses[Hostile.STARTTLS_STRIPPED], 25, HOSTNAME, CONFIG, make_probe_context())
    assert stripped.starttls_advertised is False and "XXXXXXXA" in stripped.ehlo_extensions
    helo = await probe_smtp(addresses[Hostile.EHLO_5XX_THEN_HELO], 25, HOSTNAME, CONFIG, make_probe_context())
    assert helo.used_helo and helo.ehlo_code == 502
    big = await probe_smtp(addresses[Hostile.BIG_CHAIN_TLS], 25, HOSTNAME, CONFIG, make_probe_context())
    assert big.tls is not None and len(big.tls.chain) == 151  # the leaf and 150 more, all kept
    alert = await probe_smtp(addresses[Hostile.WARNING_ALERT_THEN_HELLO], 25, HOSTNAME, CONFIG, make_probe_context())
    assert alert.tls is not None and alert.tls.version == "TLSv1.2"


async def test_in_thread_mode_serves_the_same(tmp_path: Path) -> None:
    """The same behaviours from a thread of this process (how a quick experiment would run them)."""
    chosen = [Hostile.NORMAL, Hostile.EHLO_421, Hostile.SUITE_NOT_OFFERED]
    server = HostileServer(pick_loopback_block(), tmp_path, HostileConfig(banner_timeout=BANNER_TIMEOUT), chosen)
    with server.running_in_thread():
        for behaviour, address in server.addresses.items():
            result = await probe_smtp(address, 25, HOSTNAME, CONFIG, make_probe_context())
            expect = EXPECTED[behaviour]
            assert (result.status, result.phase, result.failure_class) == (expect.status, expect.phase, expect.failure)


# --------------------------------------------------------------------------
# The whole scan
# --------------------------------------------------------------------------


def _label(behaviour: Hostile) -> str:
    return behaviour.value.replace("_", "-")


@pytest.fixture(scope="module")
def scan_world(hostile: HostileServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """nsd serving ``<behaviour>.hostile.test MX 10 mx-<behaviour>.hostile.test`` for every listener."""
    workdir = tmp_path_factory.mktemp("hostile-dns")
    zone = Zone("hostile.test")
    for behaviour, address in hostile.addresses.items():
        zone.mx(_label(behaviour), 10, f"mx-{_label(behaviour)}")
        zone.a(f"mx-{_label(behaviour)}", address)
    domains = workdir / "domains.txt"
    domains.write_text("".join(f"{_label(b)}.hostile.test\n" for b in Hostile), encoding="utf-8")
    nsd = NsdServer(workdir / "nsd", [zone], address=loopback_host(hostile.block, 53), port=53)
    nsd.start()
    try:
        yield nsd.resolver, domains
    finally:
        nsd.stop()


def _rows(out: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(out / table).to_pylist()  # type: ignore[no-any-return]


# Seconds. The slowest server holds a probe 2 s, a throttling one is retried once after 0.5 s, and
# enumeration adds 5 to 10 short sessions per server that accepted STARTTLS: about 6 s here.
SCAN_BUDGET = 30.0


@pytest.mark.slow  # starts nsd
def test_full_scan_of_the_hostile_world(scan_world: tuple[str, Path], tmp_path: Path) -> None:
    resolver, domains = scan_world
    out = tmp_path / "scan"
    started = time.perf_counter()
    code = main([
        "scan", str(domains), "-o", str(out), "--resolver", resolver, "--allow-private",
        "--ehlo-name", "scanner.test", "--connect-timeout", "1", "--banner-timeout", str(BANNER_TIMEOUT),
        "--command-timeout", str(COMMAND_TIMEOUT), "--tls-timeout", str(TLS_TIMEOUT),
        "--probe-deadline", str(PROBE_DEADLINE), "--per-ip-interval", "0", "--dns-timeout", "1", "--no-progress",
        "--throttle-retry", "0.5",  # the retry path runs too, without the production 10 s / 60 s back-off
    ])
    elapsed = time.perf_counter() - started
    assert code == 0
    assert elapsed < SCAN_BUDGET, f"scan took {elapsed:.1f}s"
    domain_rows = _rows(out, "domains")
    names = [r["domain"] for r in domain_rows]
    assert sorted(names) == sorted(f"{_label(b)}.hostile.test" for b in Hostile)  # exactly one row each
    assert not [r for r in domain_rows if r["status"] == "internal_error"]
    probes = _rows(out, "probes")
    assert not [(r["mx_hosts"], r["failure_detail"]) for r in probes if r["status"] == "internal_error"]
    by_host = {r["mx_hosts"][0].split(".")[0].removeprefix("mx-"): r for r in probes}
    mismatches = {}
    for behaviour, expect in EXPECTED.items():
        row = by_host[_label(behaviour)]
        wanted = (expect.status.value, expect.phase.value, expect.failure.value if expect.failure else None)
        if (row["status"], row["failure_phase"] or "done", row["failure_class"]) != wanted:
            mismatches[behaviour] = (row["status"], row["failure_phase"], row["failure_class"], row["failure_detail"])
    assert not mismatches
    assert by_host["plaintext-injection"]["plaintext_after_starttls"] is True
    assert by_host["big-injection"]["plaintext_after_starttls"] is True
    # Throttled and timed-out addresses were tried again; the others exactly once.
    retryable = {ProbeStatus.THROTTLED, ProbeStatus.TIMEOUT}
    assert {label: row["attempts"] for label, row in by_host.items()} == {
        _label(b): 2 if EXPECTED[b].status in retryable else 1 for b in Hostile}


# --------------------------------------------------------------------------
# The probe deadline covers enumeration (issue 11)
# --------------------------------------------------------------------------


async def test_probe_deadline_bounds_the_enumeration(hostile: HostileServerProcess, tmp_path: Path) -> None:
    """GREETING_UNDER greets each session after 0.6 s: a posture enumeration (7-12 sessions) took 4-7 s
    more after the probe, whatever --probe-deadline said. Now the deadline covers the probe and its
    enumeration: questions past it are untestable and the row says the enumeration is incomplete."""
    deadline = 2.0
    probe = dataclasses.replace(CONFIG, probe_deadline=deadline, per_ip_interval=0.0, throttle_retry_delays=(),
                                enumeration="posture")
    config = ScanConfig(output=OutputConfig(tmp_path / "out"), probe=probe,
                        safety=SafetyConfig(allow_private=True))
    rows: list[ProbeRow] = []

    async def emit(batch: Sequence[ProbeRow | SessionRow]) -> None:  # the probe row and its sessions' rows
        rows.extend(r for r in batch if isinstance(r, ProbeRow))

    with SummaryCache(tmp_path / "probes.sqlite", 100) as done:
        limits = PolitenessLimiter(probe.max_connections, probe.per_ip_concurrency, probe.per_ip_interval,
                                   probe.per_prefix_concurrency)
        service = ProbeService(config, AddressPolicy(allow_private=True), TrustStore.from_certifi(), emit, "s", 1, done,
                               limits=limits)
        worker = asyncio.create_task(service.worker())
        future = await service.request(hostile.addresses[Hostile.GREETING_UNDER], HOSTNAME)
        summary = await future
        await service.stop_workers(1)
        await worker
    assert summary.status is ProbeStatus.STARTTLS_OK
    assert summary.enumeration is not None and summary.enumeration.complete is False
    (row,) = rows
    assert row.enum_complete is False
    # Sessions the server saw: those that started within the deadline (each takes at least 0.6 s).
    assert row.enum_sessions is not None and row.enum_sessions <= deadline / 0.6
