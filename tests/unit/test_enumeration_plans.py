"""The pure planners replayed against simulated servers: results must equal the server's true posture."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.tls.ciphers import WeakClass, suite, suites_for
from scanner.tls.codec import TlsVersion
from scanner.tls.enumeration import (
    MAX_SUITES_PER_HELLO,
    AnswerKind,
    HelloAnswer,
    HelloRequest,
    Plan,
    Purpose,
    VersionVerdict,
    _version_offer,
    full_plan,
    posture_plan,
)
from scanner.tls.probe import RETRY_DELAYS, drive_plan

V = TlsVersion


@dataclass
class FakeServer:
    """A server model: accepted suites per version, in the server's own preference order."""

    suites: dict[TlsVersion, list[int]]
    server_order: bool = True
    reject_with_alert: bool = True
    flaky: int = 0  # the first N sessions are throttled
    sessions: list[HelloRequest] = field(default_factory=list)

    def answer(self, request: HelloRequest) -> HelloAnswer:
        self.sessions.append(request)
        if self.flaky:
            self.flaky -= 1
            return HelloAnswer(AnswerKind.UNTESTABLE, detail="throttled")
        rejected = AnswerKind.REJECTED_ALERT if self.reject_with_alert else AnswerKind.REJECTED_CLOSE
        offered = set(request.suites)
        supported = [v for v in self.suites if v <= request.version]
        if not supported:
            return HelloAnswer(rejected)
        version = max(supported)
        mine = self.suites[version]
        if self.server_order:
            pick = next((c for c in mine if c in offered), None)
        else:
            pick = next((c for c in request.suites if c in mine), None)
        if pick is None:
            return HelloAnswer(rejected)
        return HelloAnswer(AnswerKind.ACCEPTED, version, pick)


def run(plan: Plan, server: FakeServer) -> object:
    async def session(request: HelloRequest) -> HelloAnswer:
        return server.answer(request)

    async def no_sleep(_: float) -> None:
        return None

    return asyncio.run(drive_plan(plan, session, sleep=no_sleep))


MODERN_12 = [0xC02C, 0xC02B, 0xC030, 0xC02F, 0xCCA9, 0xCCA8]
TLS13 = [0x1302, 0x1301, 0x1303]
LEGACY = [0x002F, 0x0035, 0x000A, 0x0005]  # AES-CBC-SHA x2, 3DES-SHA, RC4-SHA


def test_modern_server_posture() -> None:
    server = FakeServer({V.TLS12: MODERN_12, V.TLS13: TLS13})
    result = run(posture_plan(), server)
    assert {v: r for v, r in result.versions.items()} == {  # type: ignore[attr-defined]
        V.TLS13: VersionVerdict.ACCEPTED, V.TLS12: VersionVerdict.ACCEPTED,
        V.TLS11: VersionVerdict.REJECTED_ALERT, V.TLS10: VersionVerdict.REJECTED_ALERT,
        V.SSL3: VersionVerdict.REJECTED_ALERT,
    }
    assert result.weak_classes == frozenset() and result.weak_complete  # type: ignore[attr-defined]
    assert result.nist_r1 is True and result.nist_r2 is True  # type: ignore[attr-defined]
    assert result.preferred_suite == 0x1302 and result.server_order is True  # type: ignore[attr-defined]
    assert result.sessions <= 12 and result.complete  # type: ignore[attr-defined]


def test_legacy_server_weak_classes_and_client_order() -> None:
    server = FakeServer({V.SSL3: LEGACY, V.TLS10: LEGACY}, server_order=False, reject_with_alert=False)
    result = run(posture_plan(), server)
    assert result.versions[V.SSL3] is VersionVerdict.ACCEPTED  # type: ignore[attr-defined]
    # A TLS 1.2 hello is answered with TLS 1.0: that is a refusal of 1.2, decided by downgrade.
    assert result.versions[V.TLS12] is VersionVerdict.REJECTED_DOWNGRADE  # type: ignore[attr-defined]
    assert result.weak_classes == {WeakClass.TRIPLE_DES, WeakClass.RC4}  # type: ignore[attr-defined]
    assert result.server_order is False  # type: ignore[attr-defined]
    assert result.sessions <= 12  # type: ignore[attr-defined]


def test_throttled_sessions_are_retried_and_never_read_as_refusal() -> None:
    server = FakeServer({V.TLS12: MODERN_12}, flaky=2)
    result = run(posture_plan(), server)
    assert result.versions[V.TLS13] is VersionVerdict.REJECTED_ALERT  # type: ignore[attr-defined]
    assert result.versions[V.TLS12] is VersionVerdict.ACCEPTED  # type: ignore[attr-defined]
    assert result.sessions == len(server.sessions)  # type: ignore[attr-defined]


def test_always_throttled_leaves_questions_open() -> None:
    server = FakeServer({V.TLS12: MODERN_12}, flaky=10_000)
    result = run(posture_plan(), server)
    assert set(result.versions.values()) == {VersionVerdict.UNTESTED}  # type: ignore[attr-defined]
    assert result.complete is False and result.nist_r1 is None  # type: ignore[attr-defined]


def test_full_mode_finds_every_suite_and_the_server_order() -> None:
    server = FakeServer({V.TLS12: MODERN_12 + LEGACY[:2], V.TLS13: TLS13, V.TLS10: LEGACY})
    result = run(full_plan(), server)
    assert result.accepted[V.TLS12] == tuple(MODERN_12 + LEGACY[:2])  # type: ignore[attr-defined]
    assert result.accepted[V.TLS13] == tuple(TLS13)  # type: ignore[attr-defined]
    assert set(result.accepted[V.TLS10]) == set(LEGACY)  # type: ignore[attr-defined]
    assert result.server_order is True and result.server_order_suites == tuple(TLS13)  # type: ignore[attr-defined]
    def bundles(v: TlsVersion) -> int:
        return -(-len([s for s in suites_for(v) if s.is_tls13 == (v is V.TLS13)]) // MAX_SUITES_PER_HELLO)

    accepted = len(MODERN_12) + 2 + len(TLS13) + len(LEGACY)
    # Accepted versions cost one hello each; refused ones (1.1, SSLv3) one per bundle. Then per accepted
    # version: one session per accepted suite plus one refusal per bundle; then one preference check.
    version_sessions = 3 + bundles(V.TLS11) + bundles(V.SSL3)
    elimination = accepted + bundles(V.TLS12) + bundles(V.TLS13) + bundles(V.TLS10)
    assert result.sessions == version_sessions + elimination + 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("purpose_cap", [MAX_SUITES_PER_HELLO])
def test_no_hello_offers_more_than_the_cap(purpose_cap: int) -> None:
    server = FakeServer({V.TLS12: MODERN_12, V.TLS10: LEGACY})
    run(full_plan(), server)
    assert max(len(r.suites) for r in server.sessions) <= purpose_cap
    assert {r.purpose for r in server.sessions} >= {Purpose.VERSION, Purpose.SUITES, Purpose.PREFERENCE}


VERSIONS = [V.SSL3, V.TLS10, V.TLS11, V.TLS12, V.TLS13]


@st.composite
def servers(draw: st.DrawFn, common_only: bool = False) -> FakeServer:
    chosen = draw(st.lists(st.sampled_from(VERSIONS), min_size=1, max_size=5, unique=True))
    table: dict[TlsVersion, list[int]] = {}
    for version in chosen:
        pool = [s.code for s in suites_for(version) if s.is_tls13 == (version is V.TLS13)]
        if common_only:  # posture mode's contract: the version offer holds the suites real stacks implement
            pool = [c for c in pool if c in _version_offer(version)]
        table[version] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=12, unique=True))
    return FakeServer(table, server_order=draw(st.booleans()), reject_with_alert=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(servers())
def test_full_mode_equals_the_model(server: FakeServer) -> None:
    result = run(full_plan(), server)
    expected_versions = set(server.suites)
    got = {v for v, verdict in result.versions.items() if verdict is VersionVerdict.ACCEPTED}  # type: ignore[attr-defined]
    assert got == expected_versions
    for version in expected_versions:
        assert set(result.accepted[version]) == set(server.suites[version])  # type: ignore[attr-defined]
    weak = {c for codes in server.suites.values() for code in codes for c in suite(code).weak}  # type: ignore[union-attr]
    assert result.weak_classes == weak  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(servers(common_only=True))
def test_posture_mode_versions_and_weak_classes_equal_the_model(server: FakeServer) -> None:
    result = run(posture_plan(), server)
    got = {v for v, verdict in result.versions.items() if verdict is VersionVerdict.ACCEPTED}  # type: ignore[attr-defined]
    assert got == set(server.suites)
    assert result.sessions <= 12  # type: ignore[attr-defined]
    legacy = [v for v in (V.TLS12, V.TLS11, V.TLS10, V.SSL3) if v in server.suites]
    if legacy and result.weak_complete:  # type: ignore[attr-defined]
        best = legacy[0]
        weak = {c for code in server.suites[best] for c in suite(code).weak}  # type: ignore[union-attr]
        assert result.weak_classes == weak  # type: ignore[attr-defined]


def test_full_sample_is_a_stable_share_of_addresses() -> None:
    from scanner.probing import enumeration_mode

    addresses = [f"192.0.{i // 256}.{i % 256}" for i in range(4000)]
    chosen = [a for a in addresses if enumeration_mode("posture", 0.1, a) == "full"]
    assert 300 < len(chosen) < 500  # about a tenth
    assert chosen == [a for a in addresses if enumeration_mode("posture", 0.1, a) == "full"]  # stable
    assert all(enumeration_mode("posture", 0.0, a) == "posture" for a in addresses[:50])
    assert all(enumeration_mode("posture", 1.0, a) == "full" for a in addresses[:50])
    assert enumeration_mode("off", 0.5, "192.0.2.1") == "off" and enumeration_mode("full", 0.0, "192.0.2.1") == "full"


def test_an_address_untestable_through_its_retries_is_not_retried_again() -> None:
    """A server that resets every session costs one back-off sequence, not one per question."""
    async def no_sleep(_: float) -> None:
        return None

    unretried = FakeServer({V.TLS12: MODERN_12}, flaky=10_000)
    asyncio.run(drive_plan(posture_plan(), _answering(unretried), sleep=no_sleep, retry_delays=()))
    server = FakeServer({V.TLS12: MODERN_12}, flaky=10_000)
    result = run(posture_plan(), server)
    assert len(unretried.sessions) >= 5  # every version was asked
    assert len(server.sessions) == len(unretried.sessions) + len(RETRY_DELAYS)
    assert result.sessions == len(server.sessions)  # type: ignore[attr-defined]
    assert not result.complete  # type: ignore[attr-defined]


def _answering(server: FakeServer) -> Callable[[HelloRequest], Awaitable[HelloAnswer]]:
    async def session(request: HelloRequest) -> HelloAnswer:
        return server.answer(request)

    return session
