"""The pure planners replayed against simulated servers: results must equal the server's true posture."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scanner.tls.ciphers import KeyExchange, WeakClass, suite, suites_for
from scanner.tls.enumeration import (
    MAX_GROUP_SESSIONS,
    MAX_POSTURE_SESSIONS,
    MAX_SUITES_PER_HELLO,
    AnswerKind,
    EnumerationResult,
    HelloAnswer,
    HelloRequest,
    Plan,
    Purpose,
    VersionVerdict,
    _version_offer,
    full_plan,
    posture_plan,
    reconcile_plan,
)
from scanner.tls.groups import TLS13_GROUPS_ALL
from scanner.tls.messages import AlertDescription
from scanner.tls.probe import RETRY_DELAYS, drive_plan
from scanner.tls.versions import EnumMode, TlsVersion

V = TlsVersion


@dataclass
class FakeServer:
    """A server model: accepted suites per version, in the server's own preference order."""

    suites: dict[TlsVersion, list[int]]
    server_order: bool = True
    reject_with_alert: bool = True
    flaky: int = 0  # the first N sessions are throttled
    groups: list[int] = field(default_factory=lambda: [29, 23, 24])  # curves, in the server's order
    dh_prime: int = (1 << 2047) + 1  # any 2048-bit number (a model, not a prime)
    honours_fallback: bool = True
    sessions: list[HelloRequest] = field(default_factory=list)

    def answer(self, request: HelloRequest) -> HelloAnswer:
        self.sessions.append(request)
        if self.flaky:
            self.flaky -= 1
            return HelloAnswer(AnswerKind.UNTESTABLE, detail="throttled")
        rejected = AnswerKind.REJECTED_ALERT if self.reject_with_alert else AnswerKind.REJECTED_CLOSE
        supported = [v for v in self.suites if v <= request.version]
        if not supported:
            return HelloAnswer(rejected)
        if request.fallback_scsv and self.honours_fallback and request.version < max(self.suites):
            return HelloAnswer(AnswerKind.REJECTED_ALERT, alert=AlertDescription.INAPPROPRIATE_FALLBACK)
        version = max(supported)
        group = self._group(request.offered_groups())
        # Without a common curve the ECDHE suites cannot be picked (RFC 8422 §5.1); TLS 1.3 ones neither.
        offered = {c for c in request.suites if group is not None or not self._needs_group(c, version)}
        mine = self.suites[version]
        if self.server_order:
            pick = next((c for c in mine if c in offered), None)
        else:
            pick = next((c for c in request.suites if c in mine and c in offered), None)
        if pick is None:
            return HelloAnswer(rejected)
        kx = suite(pick).kx  # type: ignore[union-attr]
        return HelloAnswer(AnswerKind.ACCEPTED, version, pick,
                           group=group if self._needs_group(pick, version) else None,
                           dh_prime=self.dh_prime if kx is KeyExchange.DHE else None)

    def _group(self, offered: tuple[int, ...]) -> int | None:
        if self.server_order:
            return next((g for g in self.groups if g in offered), None)
        return next((g for g in offered if g in self.groups), None)

    @staticmethod
    def _needs_group(code: int, version: TlsVersion) -> bool:
        return version is V.TLS13 or suite(code).kx is KeyExchange.ECDHE  # type: ignore[union-attr]


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
    # Key exchange: one DHE-only offer (refused: no DHE suite), one fallback hello, and the curves: x25519
    # came with the version hellos, secp256r1 and secp384r1 cost one session each, then one refusal.
    key_exchange = 1 + 1 + 3
    assert result.sessions == version_sessions + elimination + 1 + key_exchange  # type: ignore[attr-defined]
    assert result.kx.groups == (29, 23, 24) and result.kx.groups_complete  # type: ignore[attr-defined]
    assert result.kx.dhe is False and result.kx.fallback_scsv is True  # type: ignore[attr-defined]


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


# --------------------------------------------------------------------------
# Agreeing with the observation handshake (version intolerance)
# --------------------------------------------------------------------------

_ECDHE_AES128_SHA = 0xC013  # TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA


def _intolerant() -> EnumerationResult:
    """What the version hellos saw of tlslite-ng 0.8 serving SSLv3 + TLS 1.0 (plain 1.2 hello → 1.0)."""
    return EnumerationResult(
        mode=EnumMode.POSTURE, sessions=9,
        versions={V.TLS13: VersionVerdict.REJECTED_ALERT, V.TLS12: VersionVerdict.REJECTED_DOWNGRADE,
                  V.TLS11: VersionVerdict.REJECTED_DOWNGRADE, V.TLS10: VersionVerdict.ACCEPTED,
                  V.SSL3: VersionVerdict.ACCEPTED},
        weak_classes=frozenset(), weak_complete=True, nist_r1=True, nist_r2=True,
        preferred_suite=_ECDHE_AES128_SHA, preferred_version=V.TLS10, server_order=True,
    )


def _replay(plan: Plan, answers: list[HelloAnswer]) -> tuple[EnumerationResult, list[HelloRequest]]:
    asked: list[HelloRequest] = []

    async def session(request: HelloRequest) -> HelloAnswer:
        asked.append(request)
        return answers[len(asked) - 1]

    return asyncio.run(drive_plan(plan, session, retry_delays=())), asked


@pytest.mark.parametrize(
    ("answer", "quirk"),
    [
        (HelloAnswer(AnswerKind.ACCEPTED, V.TLS12, _ECDHE_AES128_SHA), "version_needs_supported_versions:TLSv1.2"),
        (HelloAnswer(AnswerKind.ACCEPTED, V.TLS10, _ECDHE_AES128_SHA), "version_seen_only_by_observation:TLSv1.2"),
    ],
)
def test_a_negotiated_version_is_accepted_and_reasked_in_the_other_shape(answer: HelloAnswer, quirk: str) -> None:
    result, asked = _replay(reconcile_plan(_intolerant(), V.TLS12, _ECDHE_AES128_SHA), [answer])
    assert [(r.version, r.supported_versions, r.purpose) for r in asked] == [(V.TLS12, True, Purpose.RECONCILE)]
    assert result.versions[V.TLS12] is VersionVerdict.ACCEPTED and result.preferred_version is V.TLS12
    assert result.quirks == (quirk,) and result.sessions == 1
    assert result.versions[V.TLS11] is VersionVerdict.REJECTED_DOWNGRADE  # only the contradicted fact changes


def test_nothing_to_reconcile_asks_nothing() -> None:
    agreed = _intolerant()
    result, asked = _replay(reconcile_plan(agreed, V.TLS10, _ECDHE_AES128_SHA), [])
    assert asked == [] and result.quirks == () and result.versions == agreed.versions


def test_an_observed_weak_suite_refutes_a_complete_weak_search() -> None:
    des_cbc3 = 0x000A  # TLS_RSA_WITH_3DES_EDE_CBC_SHA
    result, asked = _replay(reconcile_plan(_intolerant(), V.TLS10, des_cbc3),
                            [HelloAnswer(AnswerKind.REJECTED_ALERT, detail="alert 2/40")])
    assert [(r.version, r.suites) for r in asked] == [(V.TLS10, (des_cbc3,))]
    assert WeakClass.TRIPLE_DES in result.weak_classes
    assert result.quirks == ("suite_seen_only_by_observation:TLS_RSA_WITH_3DES_EDE_CBC_SHA",)
# --- key exchange and fallback ------------------------------------------------------------------------------


DHE_12 = [0x009F, 0x009E]  # DHE-RSA-AES256/128-GCM
OAKLEY2 = 0xFFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF  # noqa: E501


KX_PURPOSES = (Purpose.GROUPS, Purpose.DHE, Purpose.FALLBACK)


def test_posture_restricted_curve_and_a_common_1024_bit_prime() -> None:
    server = FakeServer({V.TLS12: MODERN_12 + DHE_12, V.TLS13: TLS13}, groups=[24], dh_prime=OAKLEY2)
    result = run(posture_plan(), server)
    kx = result.kx  # type: ignore[attr-defined]
    # A TLS 1.3 server cannot have only deprecated curves: posture mode lists what it saw, flagged partial.
    assert kx.groups == (24,) and kx.groups_complete is False and kx.preferred_group == 24
    # The weak-class hello also offered the DHE suites: the server picked one and showed its prime.
    assert kx.dhe is True and kx.dh_bits == 1024 and kx.dh_group == "rfc2409-oakley2"
    assert kx.fallback_scsv is None  # TLS 1.3 and nothing below 1.2: not asked in posture mode
    assert not [r for r in server.sessions if r.purpose in KX_PURPOSES]
    assert result.sessions == 5 + 2 + 1  # type: ignore[attr-defined]  # versions, weak (the DHE pick, refusal), order
    full = run(full_plan(), FakeServer({V.TLS12: MODERN_12 + DHE_12, V.TLS13: TLS13}, groups=[24], dh_prime=OAKLEY2))
    assert full.kx.groups == (24,) and full.kx.groups_complete is True  # type: ignore[attr-defined]
    assert full.kx.fallback_scsv is True  # type: ignore[attr-defined]


def test_posture_eliminates_curves_only_while_the_grade_can_change() -> None:
    rsa_only = [0xC030, 0xC02F]
    # A deprecated curve first: elimination until a curve RFC 8422 does not deprecate settles
    # only_deprecated_curves, then it stops (list flagged partial).
    server = FakeServer({V.TLS12: rsa_only}, groups=[19, 23, 21])
    kx = run(posture_plan(), server).kx  # type: ignore[attr-defined]
    assert kx.groups == (19, 23) and kx.groups_complete is False and kx.preferred_group == 19
    assert sum(r.purpose is Purpose.GROUPS for r in server.sessions) == 1
    # A recommended curve first: nothing to eliminate.
    server = FakeServer({V.TLS12: rsa_only}, groups=[29, 19])
    kx = run(posture_plan(), server).kx  # type: ignore[attr-defined]
    assert kx.groups == (29,) and kx.groups_complete is False
    assert not any(r.purpose is Purpose.GROUPS for r in server.sessions)


def test_posture_asks_fallback_only_where_nist_requires_the_scsv() -> None:
    # NIST SP 800-52r2 §3.4 (TLS extension support): servers with a version below TLS 1.2 and no TLS 1.3.
    for versions, asked in (((V.TLS13, V.TLS12, V.TLS10), False), ((V.TLS13, V.TLS12), False),
                            ((V.TLS12, V.TLS10), True), ((V.TLS11, V.TLS10), True)):
        server = FakeServer({v: MODERN_12 if v is V.TLS12 else TLS13 if v is V.TLS13 else LEGACY for v in versions})
        kx = run(posture_plan(), server).kx  # type: ignore[attr-defined]
        assert any(r.purpose is Purpose.FALLBACK for r in server.sessions) is asked, versions
        assert kx.fallback_scsv is (True if asked else None), versions
        full = run(full_plan(), FakeServer({v: MODERN_12 if v is V.TLS12 else TLS13 if v is V.TLS13 else LEGACY
                                            for v in versions}))
        assert full.kx.fallback_scsv is True, versions  # type: ignore[attr-defined]


def test_posture_asks_dhe_inside_the_weak_class_hellos() -> None:
    # No DHE suite: the final weak-class refusal also carried the DHE suites, so no DHE-only hello is needed.
    server = FakeServer({V.TLS12: MODERN_12, V.TLS13: TLS13})
    result = run(posture_plan(), server)
    assert result.kx.dhe is False and result.weak_complete  # type: ignore[attr-defined]
    assert not any(r.purpose is Purpose.DHE for r in server.sessions)
    assert max(len(r.suites) for r in server.sessions) <= MAX_SUITES_PER_HELLO
    # DHE below ECDHE in the server's order: the weak-class hello shows it (one session, not a weak one).
    server = FakeServer({V.TLS12: MODERN_12 + DHE_12 + LEGACY}, dh_prime=OAKLEY2)
    result = run(posture_plan(), server)
    assert result.kx.dhe is True and result.kx.dh_group == "rfc2409-oakley2"  # type: ignore[attr-defined]
    assert result.weak_classes == {WeakClass.TRIPLE_DES, WeakClass.RC4} and result.weak_complete  # type: ignore[attr-defined]
    assert not any(r.purpose is Purpose.DHE for r in server.sessions)


def test_posture_curve_elimination_is_bounded_full_mode_is_not() -> None:
    many = [29, 23, 24, 25, 30, 26, 27, 28, 22, 19]
    posture = run(posture_plan(), FakeServer({V.TLS12: MODERN_12, V.TLS13: TLS13}, groups=many))
    assert posture.sessions <= MAX_POSTURE_SESSIONS  # type: ignore[attr-defined]
    assert posture.kx.groups_complete is False and set(posture.kx.groups) < set(many)  # type: ignore[attr-defined]
    # Full mode: every TLS 1.3 group by HelloRetryRequests; a TLS 1.2 server shows every curve (deprecated too).
    full = run(full_plan(), FakeServer({V.TLS12: MODERN_12, V.TLS13: TLS13}, groups=many))
    assert full.kx.groups_complete is True and set(full.kx.groups) == {29, 23, 24, 25, 30}  # type: ignore[attr-defined]
    rsa_only = [0xC030, 0xC02F]
    full12 = run(full_plan(), FakeServer({V.TLS12: rsa_only}, groups=many))
    assert full12.kx.groups_complete is True and set(full12.kx.groups) == set(many)  # type: ignore[attr-defined]
    # With an ECDSA certificate, leaving its curve out disables the ECDSA suites (RFC 8422 §5.1): the final
    # refusal proves nothing, so the list is reported incomplete.
    ecdsa = run(full_plan(), FakeServer({V.TLS12: MODERN_12}, groups=many))
    assert ecdsa.kx.groups_complete is False and set(ecdsa.kx.groups) == set(many)  # type: ignore[attr-defined]


def test_only_deprecated_curves_are_found_and_preferred() -> None:
    server = FakeServer({V.TLS12: [0xC030, 0xC02F]}, groups=[19, 21])  # RSA certificate; secp192r1, secp224r1
    kx = run(posture_plan(), server).kx  # type: ignore[attr-defined]
    assert set(kx.groups) == {19, 21} and kx.groups_complete and kx.preferred_group == 19
    assert kx.fallback_scsv is None  # one version: nothing to fall back to


def test_fallback_scsv_ignored_and_dhe_learnt_for_free_from_a_dhe_pick() -> None:
    server = FakeServer({V.TLS12: DHE_12, V.TLS11: [0x0033]}, honours_fallback=False)
    result = run(posture_plan(), server)
    assert result.kx.fallback_scsv is False and result.kx.dhe is True  # type: ignore[attr-defined]
    assert not any(r.purpose is Purpose.DHE for r in server.sessions)  # the version hello's SKE told it


@settings(max_examples=60, deadline=None)
@given(servers(common_only=True), st.lists(st.sampled_from([29, 23, 24, 25, 30]), min_size=1, unique=True),
       st.lists(st.sampled_from([26, 19, 22]), unique=True))
def test_posture_never_exceeds_its_budget_and_never_invents_a_group(
    server: FakeServer, modern: list[int], legacy: list[int]
) -> None:
    groups = modern + legacy  # a real server has a TLS 1.3-capable group when it has TLS 1.3 (RFC 8446 §9.1)
    server.groups = groups
    result = run(posture_plan(), server)
    assert result.sessions <= MAX_POSTURE_SESSIONS  # type: ignore[attr-defined]
    assert set(result.kx.groups) <= set(groups)  # type: ignore[attr-defined]
    # The key-exchange budget: curve elimination only without TLS 1.3 and while every curve seen is
    # deprecated (a recommended first curve costs nothing), at most MAX_GROUP_SESSIONS; the fallback hello
    # only with a version below 1.2 and no 1.3; a DHE-only hello only when the weak-class hellos (which
    # carry the DHE suites) stopped before a refusal.
    kx_sessions = [r.purpose for r in server.sessions if r.purpose in KX_PURPOSES]
    tls13 = V.TLS13 in server.suites
    below_12 = any(v in server.suites for v in (V.TLS11, V.TLS10, V.SSL3))
    fallback_due = below_12 and not tls13 and len(server.suites) > 1
    assert kx_sessions.count(Purpose.FALLBACK) <= fallback_due
    if fallback_due and result.sessions < MAX_POSTURE_SESSIONS:  # type: ignore[attr-defined]
        assert kx_sessions.count(Purpose.FALLBACK) == 1  # asked whenever the cap left room
    assert kx_sessions.count(Purpose.GROUPS) <= (0 if tls13 else MAX_GROUP_SESSIONS)
    assert kx_sessions.count(Purpose.DHE) <= (0 if result.weak_complete else 1)  # type: ignore[attr-defined]
    if tls13:
        assert len(kx_sessions) <= 1
    # The curves only count where a suite uses them: ECDHE below TLS 1.3 (every curve), any suite in 1.3
    # (TLS 1.3 groups only). Servers with ECDHE at some legacy versions only are left out: there the
    # elimination speaks for the version it ran at, which the model does not track.
    legacy = [codes for v, codes in server.suites.items() if v is not V.TLS13]
    with_ecdhe = [any(suite(c).kx is KeyExchange.ECDHE for c in codes) for codes in legacy]  # type: ignore[union-attr]
    assume(all(with_ecdhe) or not any(with_ecdhe))
    ecdhe = any(with_ecdhe)
    usable = set(groups) & set(TLS13_GROUPS_ALL) if V.TLS13 in server.suites else set(groups) if ecdhe else set()
    if result.kx.groups_complete:  # type: ignore[attr-defined]
        assert set(result.kx.groups) == usable  # type: ignore[attr-defined]


def test_anonymous_dh_primes_do_not_count() -> None:
    # OpenSSL gives ADH-AES128 suites RFC 2409's 1024-bit prime while DHE-RSA gets 2048 bits: the anonymous
    # suite is already the weak class "anon"; the DH size is what an authenticated DHE offer shows.
    class TwoPrimes(FakeServer):
        def answer(self, request: HelloRequest) -> HelloAnswer:
            answer = super().answer(request)
            if answer.suite == 0x0034:  # TLS_DH_anon_WITH_AES_128_CBC_SHA
                return HelloAnswer(answer.kind, answer.version, answer.suite, dh_prime=OAKLEY2)
            return answer

    server = TwoPrimes({V.TLS12: [0x0034, *DHE_12]}, dh_prime=(1 << 2047) + 1)
    result = run(full_plan(), server)
    assert WeakClass.ANON in result.weak_classes  # type: ignore[attr-defined]
    assert result.kx.dh_bits == 2048 and result.kx.dh_group is None  # type: ignore[attr-defined]


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


def test_encrypt_then_mac_is_unknown_when_the_server_picked_an_aead_suite() -> None:
    """RFC 7366 §3: no echo after an AEAD or stream pick is no answer, not a "no"."""
    from scanner.tls.enumeration import _encrypt_then_mac
    from scanner.tls.messages import HelloFacts

    def facts(etm: bool) -> HelloFacts:
        return HelloFacts(secure_renegotiation=True, compression=0, extended_master_secret=True,
                          encrypt_then_mac=etm, heartbeat=False, status_request=False)

    assert _encrypt_then_mac(facts(False), 0xC02F) is None  # ECDHE-RSA-AES128-GCM-SHA256
    assert _encrypt_then_mac(facts(False), 0xCCA8) is None  # ChaCha20-Poly1305
    assert _encrypt_then_mac(facts(False), 0xC013) is False  # a CBC pick without the echo: a real "no"
    assert _encrypt_then_mac(facts(True), 0xC013) is True
    assert _encrypt_then_mac(None, 0xC013) is None
